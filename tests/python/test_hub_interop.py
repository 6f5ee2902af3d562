"""The C++ Hub client (through the `dual-attention download` CLI) and Python's huggingface_hub share one
cache: what one downloads the other uses without a request. Both talk to the stand-in Hub
(tests/hub/hub_server.py) on loopback through HF_ENDPOINT; the stand-in's counters say how many
requests arrived. Also: concurrent downloads by both, the progress bar, and the CLI's usage errors.
"""

import hashlib
import json
import os
import pty
import random
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CLI = os.path.join(ROOT, os.environ.get("BUILD_DIR", "build"), "tools", "dual-attention")
SERVER = os.path.join(ROOT, "tests", "hub", "hub_server.py")
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "hub", "tiny-dat-lm")
COMMIT = "0123456789abcdef0123456789abcdef01234567"
FILES = ["config.json", "model.safetensors"]
BIG_SIZE = 6 * 1000 * 1000  # over the progress bar's 4 MiB threshold


class StandIn:
    def __init__(self, repos_json):
        self.process = subprocess.Popen(
            [sys.executable, SERVER, "--repos", repos_json],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ports = json.loads(self.process.stdout.readline())
        self.endpoint = f"http://127.0.0.1:{ports['port']}"

    def get(self, path):
        with urllib.request.urlopen(self.endpoint + path) as response:
            return json.load(response)

    def control(self, query):
        return self.get("/_control?" + query)

    def requests(self, method=None, fragment=""):
        """Logged /resolve/ and /cdn/ requests (huggingface_hub also asks for /api/agent-harnesses)."""
        return [
            e
            for e in self.get("/_counters")["log"]
            if ("/resolve" in e["path"] or e["path"].startswith("/cdn/"))
            and (method is None or e["method"] == method)
            and fragment in e["path"]
        ]

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    if not os.access(CLI, os.X_OK):
        pytest.fail(f"{CLI} is missing: build the project first (scripts/setup.sh)")
    repos = tmp_path_factory.mktemp("repos")
    (repos / "big.bin").write_bytes(random.Random(7).randbytes(BIG_SIZE))
    files = {
        "config.json": {"path": os.path.join(FIXTURE, "config.json")},
        "model.safetensors": {"path": os.path.join(FIXTURE, "model.safetensors"), "lfs": True},
    }
    spec = {
        "repos": {
            "org/tiny-dat": {"commits": {COMMIT: {"files": files}}, "branches": {"main": COMMIT}},
            "org/big": {
                "commits": {COMMIT: {"files": {"model.safetensors": {"path": "big.bin", "lfs": True}}}},
                "branches": {"main": COMMIT},
            },
        }
    }
    (repos / "repos.json").write_text(json.dumps(spec))
    server = StandIn(str(repos / "repos.json"))
    yield server
    server.stop()


@pytest.fixture
def env(hub, tmp_path):
    """A clean environment pointing both clients at the stand-in and at a fresh cache."""
    hub.control("reset=1")
    e = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    e.pop("TRANSFORMERS_OFFLINE", None)
    e.update(HF_HOME=str(tmp_path / "home"), HF_HUB_CACHE=str(tmp_path / "cache"),
             HF_ENDPOINT=hub.endpoint, HF_HUB_DISABLE_TELEMETRY="1")
    return e


def python_hub(code, env, **extra):
    """Runs `code` with huggingface_hub in a fresh interpreter (it reads the environment at import)."""
    out = subprocess.run([sys.executable, "-c", "from huggingface_hub import *\n" + code],
                         env={**env, **extra}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def cli(args, env, **extra):
    return subprocess.run([CLI, *args], env={**env, **extra}, capture_output=True, text=True,
                          timeout=120)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_files_cached_by_python_are_used_by_cpp_without_a_request(hub, env):
    paths = json.loads(python_hub(
        f"import json; print(json.dumps([hf_hub_download('org/tiny-dat', f) for f in {FILES!r}]))", env))
    folder = os.path.dirname(paths[0])
    assert folder == os.path.join(env["HF_HUB_CACHE"], "models--org--tiny-dat", "snapshots", COMMIT)

    hub.control("reset=1")
    offline = cli(["download", "org/tiny-dat", "--quiet"], env, HF_HUB_OFFLINE="1")
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.strip() == folder
    pinned = cli(["download", "org/tiny-dat", "--revision", COMMIT], env)
    assert pinned.stdout.strip() == folder
    assert hub.requests() == []  # offline, and a cached commit: no request at all

    online = cli(["download", "org/tiny-dat"], env)
    assert online.stdout.strip() == folder
    assert len(hub.requests("HEAD")) == 1  # the branch is checked once; nothing is fetched
    assert hub.requests("GET") == []


def test_files_cached_by_cpp_are_found_by_python_offline(hub, env):
    result = cli(["download", "org/tiny-dat"], env)
    assert result.returncode == 0, result.stderr
    folder = result.stdout.strip()
    hub.control("reset=1")

    found = json.loads(python_hub(
        "import json\n"
        f"files = {FILES!r}\n"
        "local = [hf_hub_download('org/tiny-dat', f, local_files_only=True) for f in files]\n"
        "cached = [try_to_load_from_cache('org/tiny-dat', f) for f in files]\n"
        "info = scan_cache_dir()\n"
        "repo = next(iter(info.repos))\n"
        "print(json.dumps({'local': local, 'cached': cached, 'warnings': [str(w) for w in info.warnings],\n"
        "                  'commits': [r.commit_hash for r in repo.revisions],\n"
        "                  'refs': sorted(r for rev in repo.revisions for r in rev.refs),\n"
        "                  'files': sorted(f.file_name for rev in repo.revisions for f in rev.files)}))",
        env, HF_HUB_OFFLINE="1"))
    expected = [os.path.join(folder, f) for f in FILES]
    assert found["local"] == expected
    assert found["cached"] == expected
    assert found["warnings"] == []
    assert found["commits"] == [COMMIT]
    assert found["refs"] == ["main"]
    assert found["files"] == sorted(FILES)
    assert hub.requests() == []

    # The checkpoint reads back byte-identical, and as tensors.
    from safetensors.numpy import load_file

    for name in FILES:
        with open(os.path.join(folder, name), "rb") as a, open(os.path.join(FIXTURE, name), "rb") as b:
            assert a.read() == b.read()
    ours, reference = load_file(expected[1]), load_file(os.path.join(FIXTURE, "model.safetensors"))
    assert ours.keys() == reference.keys()


def test_python_and_cpp_downloading_at_once_share_one_download(hub, env):
    hub.control("throttle=3000000")  # ~2 s for the file, so both start before either ends
    python = subprocess.Popen(
        [sys.executable, "-c",
         "from huggingface_hub import hf_hub_download; print(hf_hub_download('org/big', 'model.safetensors'))"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ours = subprocess.Popen([CLI, "download", "org/big", "model.safetensors", "--quiet"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    py_out, py_err = python.communicate(timeout=120)
    our_out, our_err = ours.communicate(timeout=120)
    assert python.returncode == 0, py_err
    assert ours.returncode == 0, our_err
    assert os.path.dirname(py_out.strip()) == our_out.strip()
    assert len(hub.requests("HEAD")) == 2
    assert len(hub.requests("GET", "/cdn/")) == 1  # whoever came second waited on the shared lock
    blob = os.path.realpath(py_out.strip())
    assert os.path.basename(blob) == sha256(blob)
    leftovers = [f for f in os.listdir(os.path.dirname(blob)) if "incomplete" in f]
    assert leftovers == []


def run_on_terminal(args, env):
    """Runs the CLI with stderr on a pseudo-terminal; returns (exit status, what the terminal got)."""
    master, slave = pty.openpty()
    process = subprocess.Popen([CLI, *args], env=env, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks = []

    def drain():
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO once the last writer is gone
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain)
    reader.start()
    process.wait(timeout=120)
    reader.join(timeout=10)
    os.close(master)
    return process.returncode, b"".join(chunks).decode(errors="replace")


def test_progress_bar_is_drawn_on_a_terminal_only(hub, env):
    hub.control("throttle=12000000")  # half a second: a few redraws
    status, terminal = run_on_terminal(["download", "org/big", "model.safetensors"], env)
    assert status == 0
    assert "model.safetensors: 100%|####################| 6.0MB/6.0MB" in terminal
    assert "MB/s]" in terminal

    piped = cli(["download", "org/big", "model.safetensors", "--force-download"], env)
    assert piped.returncode == 0
    assert piped.stderr == ""

    status, terminal = run_on_terminal(
        ["download", "org/big", "model.safetensors", "--force-download", "--quiet"], env)
    assert status == 0
    assert terminal == ""
    assert len(hub.requests("GET", "/cdn/")) == 3


def test_cli_help_and_usage_errors(env):
    top = cli(["--help"], env)
    assert top.returncode == 0 and "download" in top.stdout
    sub = cli(["download", "--help"], env)
    assert sub.returncode == 0 and "--revision R" in sub.stdout and "REPO_ID" in sub.stdout

    for args, message in [
        ([], "usage: dual-attention <command>"),
        (["frobnicate"], "unknown command 'frobnicate'"),
        (["download"], "missing argument REPO_ID"),
        (["download", "org/x", "--nope"], "unknown option '--nope'"),
        (["download", "org/x", "--revision"], "option '--revision' needs a value"),
        (["download", "org/x", "--quiet=1"], "option '--quiet' takes no value"),
    ]:
        result = cli(args, env)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)


def test_cli_failures_exit_1_and_name_repo_file_and_revision(hub, env):
    missing = cli(["download", "org/nope"], env)
    assert missing.returncode == 1
    assert "'config.json' of 'org/nope' at revision 'main': repository not found" in missing.stderr

    offline = cli(["download", "org/tiny-dat", "--revision", "v2"], env, HF_HUB_OFFLINE="1")
    assert offline.returncode == 1
    assert "'config.json' of 'org/tiny-dat' at revision 'v2'" in offline.stderr
    assert "HF_HUB_OFFLINE" in offline.stderr


@pytest.fixture
def in_process_env(env, monkeypatch):
    """The `env` settings applied to this process, for the package's own from_pretrained."""
    for key in list(os.environ):
        if key.startswith(("HF_", "HUGGING")):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("HF_"):
            monkeypatch.setenv(key, value)
    return env


def test_python_from_pretrained_takes_a_repo_id_like_the_mixin(hub, in_process_env, tmp_path):
    import torch
    import dual_attention_cpp as dac
    from dual_attention.hf import DualAttnTransformerLM_HFHub as Reference

    ours = dac.hf.DualAttnTransformerLM_HFHub.from_pretrained("org/tiny-dat")
    assert not ours.training
    assert hub.requests("GET", "/resolve/main/config.json")  # a regular file: from the Hub
    assert hub.requests("GET", "/cdn/")  # the LFS weights: from the CDN it redirects to
    snapshot = os.path.join(in_process_env["HF_HUB_CACHE"], "models--org--tiny-dat", "snapshots",
                            COMMIT)
    assert sorted(os.listdir(snapshot)) == FILES
    reference = Reference.from_pretrained(FIXTURE).eval()
    tokens = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens)[0], reference(tokens)[0], rtol=1e-5, atol=1e-6)

    # Cached: offline (local_files_only) and by commit hash, nothing is requested.
    hub.control("reset=1")
    again = dac.DualAttnTransformerLM.from_pretrained("org/tiny-dat", local_files_only=True,
                                                     revision=COMMIT)
    assert hub.requests() == []
    torch.testing.assert_close(again(tokens)[0], ours(tokens)[0], rtol=0, atol=0)

    # cache_dir and force_download as huggingface_hub takes them; token=False sends no token.
    other = tmp_path / "other-cache"
    dac.DualAttnTransformerLM.from_pretrained("org/tiny-dat", cache_dir=other, token=False)
    assert (other / "models--org--tiny-dat" / "snapshots" / COMMIT / "model.safetensors").exists()
    assert all(e["authorization"] is None for e in hub.requests())
    hub.control("reset=1")
    dac.DualAttnTransformerLM.from_pretrained("org/tiny-dat", cache_dir=other, force_download=True)
    assert len(hub.requests("GET")) >= len(FILES)


def test_python_from_pretrained_errors_name_the_repo_and_revision(hub, in_process_env):
    import dual_attention_cpp as dac

    with pytest.raises(dac.hf.RevisionNotFoundError, match="no-such-branch") as error:
        dac.DualAttnTransformerLM.from_pretrained("org/tiny-dat", revision="no-such-branch")
    assert (error.value.repo_id, error.value.revision) == ("org/tiny-dat", "no-such-branch")
    with pytest.raises(dac.hf.RepositoryNotFoundError, match="org/missing") as error:
        dac.DualAttnTransformerLM.from_pretrained("org/missing")
    assert isinstance(error.value, OSError) and error.value.repo_id == "org/missing"
    # Offline and not cached: huggingface_hub's LocalEntryNotFoundError, here too.
    with pytest.raises(dac.hf.LocalEntryNotFoundError, match="org/missing"):
        dac.DualAttnTransformerLM.from_pretrained("org/missing", local_files_only=True)
    with pytest.raises(TypeError, match="token must be a str, a bool or None, got int"):
        dac.DualAttnTransformerLM.from_pretrained("org/tiny-dat", token=1)
