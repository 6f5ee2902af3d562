"""What the model_analysis tests share: small language models saved to folders, the
`dual-attention` program (<build>/tools/dual-attention, the build directory being
$DUAL_ATTENTION_BUILD_DIR, default <repo>/build), a `dual-attention serve` started on a free
loopback port, and the data of a viz page."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch

from dual_attention_cpp.language_models import DualAttnTransformerLM

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("DUAL_ATTENTION_BUILD_DIR", ROOT / "build"))
CLI = BUILD / "tools" / "dual-attention"


def make_dat(folder, *, vocab_size=64, d_model=16, n_layers=2, n_heads_sa=2, n_heads_ra=2,
             n_symbols=8, symbol_heads=2, max_block_size=32, seed=0, **extra):
    """A DualAttnTransformerLM with random weights (scaled up so that attention is not uniform),
    saved with save_pretrained into `folder`; returns the model."""
    torch.manual_seed(seed)
    model = DualAttnTransformerLM(
        vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, n_heads_sa=n_heads_sa,
        n_heads_ra=n_heads_ra,
        symbol_retrieval_kwargs=dict(d_model=d_model, n_heads=symbol_heads, n_symbols=n_symbols),
        dff=2 * d_model, dropout_rate=0.0, activation="gelu", norm_first=True,
        max_block_size=max_block_size, **extra)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and p.std() < 0.05:
                p.mul_(25)
    model.eval()
    model.save_pretrained(str(folder))
    return model


def run_cli(*args, timeout=300):
    """Runs `dual-attention ARGS`; returns the CompletedProcess (stdout, stderr as text)."""
    return subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def page_payload(html: str) -> dict:
    """The payload embedded in a viz page."""
    match = re.search(r"const DATVIZ_PAYLOAD = (.*?);\nconst DATVIZ_APP", html, re.S)
    assert match, "the page holds no DATVIZ_PAYLOAD"
    return json.loads(match.group(1))


def payload_bytes(payload: dict) -> bytes:
    data = base64.b64decode(payload["blob"])
    return zlib.decompress(data) if payload["encoding"] == "deflate" else data


def payload_matrix(payload: dict, blob: bytes, kind: str, layer: int, head: int) -> np.ndarray:
    """The dequantised [n, n] matrix of (kind, layer, head), zero above the diagonal."""
    offset, lo, hi = payload["matrices"][kind][layer][head]
    n = len(payload["tokens"])
    out = np.zeros((n, n))
    rows, cols = np.tril_indices(n) if payload["triangular"] else np.indices((n, n)).reshape(2, -1)
    q = np.frombuffer(blob, dtype=np.uint8, count=len(rows), offset=offset)
    out[rows, cols] = lo + q * (hi - lo) / (payload["levels"][kind] - 1)
    return out


class Server:
    """`dual-attention serve MODEL --port 0` (a free port), stopped on exit; its stderr is kept for
    failure messages."""

    def __init__(self, model_dir, *extra_args):
        self.proc = subprocess.Popen([str(CLI), "serve", str(model_dir), "--port", "0", "--quiet",
                                      *map(str, extra_args)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stderr = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()
        line = self._read_line(timeout=120)
        match = re.search(r"at (http://127\.0\.0\.1:\d+)/", line)
        assert match, f"server did not start: {line!r}\n{''.join(self.stderr)}"
        self.url = match.group(1)

    def _read_line(self, timeout):
        result = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        return result[0] if result else ""

    def request(self, method, path, body=None, *, raw=None, timeout=120):
        """(status, headers, body bytes) of a request; body is JSON-encoded, raw sent as is."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def json(self, method, path, body=None, **kw):
        status, headers, data = self.request(method, path, body, **kw)
        return status, json.loads(data)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def sse_events(data: bytes):
    """The `data:` payloads of a Server-Sent Events body."""
    events = []
    for block in data.decode().split("\n\n"):
        if block.startswith("data: "):
            events.append(block[len("data: "):])
        else:
            assert block == "", f"not an SSE event: {block!r}"
    return events


@contextlib.contextmanager
def timer():
    start = time.perf_counter()
    yield lambda: time.perf_counter() - start


def require_apps():
    """Fails the calling test module when this build has no `viz`/`serve` (configured with
    -DDUAL_ATTENTION_BUILD_APPS=OFF): these tests are run on purpose (they live outside
    tests/python, which the default suite collects), so a build without the apps is an error."""
    import pytest

    if not CLI.exists():
        pytest.fail(f"{CLI} does not exist: build the target dual_attention_cli (with "
                    "-DDUAL_ATTENTION_BUILD_APPS=ON) to run tests/apps", pytrace=False)
    help_text = subprocess.run([str(CLI), "--help"], capture_output=True, text=True).stdout
    if "viz" not in help_text:
        pytest.fail(f"{CLI} has no viz/serve subcommands: configure the build with "
                    "-DDUAL_ATTENTION_BUILD_APPS=ON to run tests/apps", pytrace=False)
