#!/usr/bin/env python3
"""A stand-in for the Hugging Face Hub's file-resolution endpoints, for tests on loopback.

Standard library only. It answers like huggingface.co does for downloads:

  HEAD/GET /{repo_id}/resolve/{revision}/{filename}
      revision: a branch, a tag or a full commit hash (percent-encoded, so "refs/pr/1" is one segment).
      Regular file: 200 with X-Repo-Commit, ETag "<git blob sha1>", Content-Length, Accept-Ranges.
      With "resolve_cache": true on the repo, the Hub's current behaviour for regular files instead:
      307 to the relative path /api/resolve-cache/models/{repo_id}/{commit}/{filename}, which answers
      as above.
      LFS file: 302 to a CDN-like origin (a second port): http://127.0.0.1:{cdn_port}/cdn/{sha256}, the
      redirect itself carrying X-Repo-Commit, X-Linked-Etag "<sha256>", X-Linked-Size and ETag.
  Errors, as the Hub: 404 with X-Error-Code RepoNotFound | RevisionNotFound | EntryNotFound (the last
  with X-Repo-Commit); a private repo without a valid `Authorization: Bearer` token: 401 (with
  X-Error-Message "Invalid credentials in Authorization header" when a wrong token was sent); a gated
  repo: X-Error-Code GatedRepo, 401 without a token and 403 with one that has no access. A repo with
  "renamed_to" answers 307 with a relative Location under the new name.
  The CDN: GET/HEAD /cdn/{sha256}, Range requests (206 / 416), and, like a presigned S3 URL, a 400
  when an Authorization header comes along.

Control (not counted):
  GET /_control?drops=N&drop_after=K   the next N GET bodies are cut after K bytes (connection dropped)
  GET /_control?throttle=B             send GET bodies at about B bytes per second (0: full speed)
  GET /_control?ignore_range=1         answer 200 with the whole file to Range requests
  GET /_control?reset=1                zero the counters, clear the log and every fault
  GET /_counters                       {"HEAD": n, "GET": n, "log": [{server, method, path, range,
                                       authorization, status}, ...]}
  GET /_files                          {repo_id: {commit: {filename: {sha256, git_oid, size}}}}: what
                                       the tests expect, computed here with hashlib

Repos come from a JSON file (--repos):
  {"repos": {"org/name": {
      "private": false, "gated": false, "tokens": ["hf_..."], "resolve_cache": false,
      "renamed_to": null,
      "commits": {"<40 hex>": {"files": {
          "config.json": {"text": "..."},
          "model.safetensors": {"path": "relative/to/the/json/file", "lfs": true,
                                "linked_size": 123,     # optional: announce a wrong size
                                "corrupt": true}}}},    # optional: the CDN serves altered bytes
      "branches": {"main": "<40 hex>"}, "tags": {"v1.0": "<40 hex>"}}}}

Prints one line {"port": P, "cdn_port": Q} on stdout once it listens, then serves until SIGTERM or
until its stdin reaches end-of-file (so it never outlives the test process that started it).
"""

import argparse
import hashlib
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

COMMIT_RE = re.compile(r"[0-9a-f]{40}")
CHUNK = 64 * 1024


class State:
    """Repos, counters and faults, shared by both servers' handler threads."""

    def __init__(self, repos, cdn_port_holder):
        self.repos = repos
        self.blobs = {}  # sha256 -> bytes served by the CDN
        self.lock = threading.Lock()
        self.cdn_port = cdn_port_holder
        for repo in repos.values():
            for commit in repo.get("commits", {}).values():
                for entry in commit["files"].values():
                    if entry.get("lfs"):
                        data = entry["data"]
                        if entry.get("corrupt"):
                            data = bytes([data[0] ^ 0xFF]) + data[1:] if data else b"x"
                        self.blobs[entry["sha256"]] = data
        self.reset()

    def reset(self):
        with self.lock:
            self.counts = {"HEAD": 0, "GET": 0}
            self.log = []
            self.drops = 0
            self.drop_after = 0
            self.throttle = 0
            self.ignore_range = False

    def record(self, server, handler, status):
        with self.lock:
            self.counts[handler.command] = self.counts.get(handler.command, 0) + 1
            self.log.append(
                {
                    "server": server,
                    "method": handler.command,
                    "path": handler.path,
                    "range": handler.headers.get("Range"),
                    "authorization": handler.headers.get("Authorization"),
                    "status": status,
                }
            )

    def take_drop(self):
        """Whether this GET body is to be cut, and after how many bytes."""
        with self.lock:
            if self.drops > 0:
                self.drops -= 1
                return self.drop_after
            return None


def load_repos(path):
    with open(path) as f:
        spec = json.load(f)
    base = os.path.dirname(os.path.abspath(path))
    repos = spec["repos"]
    for repo in repos.values():
        for commit in repo.get("commits", {}).values():
            for entry in commit["files"].values():
                if "text" in entry:
                    data = entry["text"].encode()
                else:
                    with open(os.path.join(base, entry["path"]), "rb") as f:
                        data = f.read()
                entry["data"] = data
                entry["sha256"] = hashlib.sha256(data).hexdigest()
                entry["git_oid"] = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    return repos


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_name_tag = "hub"

    def log_message(self, format, *args):  # quiet: the tests read the counters instead
        pass

    @property
    def state(self):
        return self.server.state

    # ---- responses ---------------------------------------------------------------------------
    def reply(self, status, headers=None, body=b"", count=True):
        if count:
            self.state.record(self.server_name_tag, self, status)
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def error(self, status, code=None, message=None, extra=None):
        headers = dict(extra or {})
        if code:
            headers["X-Error-Code"] = code
        if message:
            headers["X-Error-Message"] = message
        headers["Content-Type"] = "application/json"
        self.reply(status, headers, json.dumps({"error": message or code or ""}).encode())

    def send_content(self, data, headers):
        """A file body, honouring Range, throttling and the drop fault."""
        size = len(data)
        start, end, status = 0, size - 1, 200
        range_header = self.headers.get("Range")
        if range_header and not self.state.ignore_range:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip())
            if not m or (not m.group(1) and not m.group(2)):
                self.error(400, message=f"bad range {range_header}")
                return
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:  # suffix range: the last N bytes
                start, end = max(size - int(m.group(2)), 0), size - 1
            if start >= size or start > end:
                self.reply(416, {**headers, "Content-Range": f"bytes */{size}"})
                return
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{end}/{size}"}
        self.state.record(self.server_name_tag, self, status)
        body = data[start : end + 1]
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, str(value))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        cut = self.state.take_drop()
        limit = len(body) if cut is None else min(cut, len(body))
        sent = 0
        while sent < limit:
            piece = body[sent : min(sent + CHUNK, limit)]
            self.wfile.write(piece)
            sent += len(piece)
            if self.state.throttle:
                self.wfile.flush()
                time.sleep(len(piece) / self.state.throttle)
        if cut is not None:
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ---- routing -----------------------------------------------------------------------------
    def do_HEAD(self):
        self.route()

    def do_GET(self):
        self.route()

    def route(self):
        url = urlsplit(self.path)
        if url.path == "/_control":
            self.control(parse_qs(url.query))
        elif url.path == "/_counters":
            with self.state.lock:
                body = json.dumps({**self.state.counts, "log": self.state.log}).encode()
            self.reply(200, {"Content-Type": "application/json"}, body, count=False)
        elif url.path == "/_files":
            files = {
                repo_id: {
                    commit: {
                        name: {"sha256": e["sha256"], "git_oid": e["git_oid"], "size": len(e["data"])}
                        for name, e in spec["files"].items()
                    }
                    for commit, spec in repo.get("commits", {}).items()
                }
                for repo_id, repo in self.state.repos.items()
            }
            self.reply(200, {"Content-Type": "application/json"}, json.dumps(files).encode(), count=False)
        elif self.server_name_tag == "cdn":
            self.cdn(url.path)
        elif url.path.startswith("/api/resolve-cache/models/"):
            self.resolve_cache(url.path[len("/api/resolve-cache/models/") :])
        elif "/resolve/" in url.path:
            self.resolve(url.path)
        else:
            self.error(404, message="not found")

    def control(self, query):
        state = self.state
        if "reset" in query:
            state.reset()
        with state.lock:
            if "drops" in query:
                state.drops = int(query["drops"][0])
            if "drop_after" in query:
                state.drop_after = int(query["drop_after"][0])
            if "throttle" in query:
                state.throttle = int(query["throttle"][0])
            if "ignore_range" in query:
                state.ignore_range = query["ignore_range"][0] not in ("0", "")
            body = {
                "drops": state.drops,
                "drop_after": state.drop_after,
                "throttle": state.throttle,
                "ignore_range": state.ignore_range,
            }
        self.reply(200, {"Content-Type": "application/json"}, json.dumps(body).encode(), count=False)

    def check_access(self, repo_id, repo):
        """Whether the request may read the repo; when not, the error has been sent."""
        if not (repo.get("private") or repo.get("gated")):
            return True
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        if token is not None and token in repo.get("tokens", []):
            return True
        if repo.get("gated"):
            status = 401 if token is None else 403
            self.error(status, "GatedRepo", f"Access to model {repo_id} is restricted.")
        elif token is None:
            self.error(401, message="Unauthorized: authentication is required for this repository")
        else:
            self.error(401, message="Invalid credentials in Authorization header")
        return False

    def resolve(self, path):
        repo_part, rest = path.split("/resolve/", 1)
        repo_id = repo_part.lstrip("/")
        revision_quoted, _, file_quoted = rest.partition("/")
        repo = self.state.repos.get(repo_id)
        if repo is None:
            self.error(404, "RepoNotFound", "Repository not found")
            return
        if repo.get("renamed_to"):
            self.reply(307, {"Location": f"/{repo['renamed_to']}/resolve/{rest}"})
            return
        if not self.check_access(repo_id, repo):
            return
        revision = unquote(revision_quoted)
        commit = self.resolve_revision(repo, revision)
        if commit is None:
            self.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        filename = unquote(file_quoted)
        entry = repo["commits"][commit]["files"].get(filename)
        if entry is None:
            self.error(404, "EntryNotFound", f"{filename} does not exist on \"{revision}\"",
                       {"X-Repo-Commit": commit})
            return
        if entry.get("lfs"):
            cdn = f"http://127.0.0.1:{self.state.cdn_port[0]}/cdn/{entry['sha256']}"
            self.reply(
                302,
                {
                    "Location": cdn,
                    "X-Repo-Commit": commit,
                    "X-Linked-Etag": f'"{entry["sha256"]}"',
                    "X-Linked-Size": entry.get("linked_size", len(entry["data"])),
                    "ETag": f'"{entry["git_oid"]}"',
                },
            )
        elif repo.get("resolve_cache"):
            location = f"/api/resolve-cache/models/{repo_id}/{commit}/{quote(filename)}"
            self.reply(307, {"Location": location, "X-Repo-Commit": commit})
        else:
            self.send_regular(commit, entry)

    def resolve_cache(self, rest):
        for repo_id, repo in self.state.repos.items():
            if rest.startswith(repo_id + "/"):
                commit, _, file_quoted = rest[len(repo_id) + 1 :].partition("/")
                if not self.check_access(repo_id, repo):
                    return
                entry = repo.get("commits", {}).get(commit, {}).get("files", {}).get(unquote(file_quoted))
                if entry is not None:
                    self.send_regular(commit, entry)
                    return
        self.error(404, "EntryNotFound", "not found")

    def send_regular(self, commit, entry):
        headers = {"X-Repo-Commit": commit, "ETag": f'"{entry["git_oid"]}"',
                   "Content-Type": "application/octet-stream"}
        if "linked_size" in entry:  # a lie about the size, for the consistency checks
            headers["X-Linked-Size"] = entry["linked_size"]
        self.send_content(entry["data"], headers)

    @staticmethod
    def resolve_revision(repo, revision):
        if revision in repo.get("branches", {}):
            return repo["branches"][revision]
        if revision in repo.get("tags", {}):
            return repo["tags"][revision]
        if COMMIT_RE.fullmatch(revision) and revision in repo.get("commits", {}):
            return revision
        return None

    def cdn(self, path):
        if self.headers.get("Authorization"):
            self.error(400, message="Only one auth mechanism allowed (presigned URL)")
            return
        sha = path[len("/cdn/") :] if path.startswith("/cdn/") else ""
        data = self.state.blobs.get(sha)
        if data is None:
            self.error(404, message="NoSuchKey")
            return
        self.send_content(data, {"ETag": f'"{sha}"', "Content-Type": "application/octet-stream",
                                 "Content-Disposition": f'attachment; filename="{sha}";'})


class CdnHandler(Handler):
    server_name_tag = "cdn"


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that hangs up mid-transfer (the tests make them) is not an error worth a trace.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", required=True, help="JSON file describing the repositories")
    args = parser.parse_args()

    cdn_port = [0]
    state = State(load_repos(args.repos), cdn_port)
    hub = Server(("127.0.0.1", 0), Handler)
    cdn = Server(("127.0.0.1", 0), CdnHandler)
    for server in (hub, cdn):
        server.state = state
    cdn_port[0] = cdn.server_address[1]
    for server in (hub, cdn):
        threading.Thread(target=server.serve_forever, daemon=True).start()

    print(json.dumps({"port": hub.server_address[1], "cdn_port": cdn_port[0]}), flush=True)

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    try:
        while sys.stdin.buffer.read(4096):  # returns b"" at end-of-file: our parent is gone
            pass
    except (OSError, ValueError):
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
