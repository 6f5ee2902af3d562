"""The pages in a real browser: headless Debian chromium, driven over the DevTools protocol. Loads
`dual-attention serve`'s app, runs a generation and a visualization, checks the DOM, and does the
same with a page written by `dual-attention viz` opened from a file (offline). Screenshots go to
$DUAL_ATTENTION_SCREENSHOT_DIR (default <build>/screenshots) for a person to look at."""

import base64
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from model_analysis_support import require_apps, BUILD, Server, make_dat, run_cli

require_apps()

import websocket  # websocket-client (scripts/requirements-dev.txt)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(os.environ.get("DUAL_ATTENTION_SCREENSHOT_DIR", BUILD / "screenshots"))
N_LAYERS, N_HEADS = 2, 2


class Browser:
    """A headless chromium and one page of it, over the DevTools protocol (a websocket)."""

    def __init__(self, profile: Path):
        assert CHROMIUM, "chromium is not installed (scripts/setup.sh installs it)"
        args = [CHROMIUM, "--headless=new", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--remote-debugging-port=0",
                f"--user-data-dir={profile}", "--window-size=1400,1000", "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.stderr = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()
        port_file = profile / "DevToolsActivePort"
        deadline = time.time() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium did not start:\n" + "".join(self.stderr))
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=30) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=60,
                                              suppress_origin=True)
        self.next_id = 0
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.console = []

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("method") == "Runtime.exceptionThrown":
                self.console.append(json.dumps(message["params"]["exceptionDetails"])[:500])
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def js(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                           returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, condition, timeout=60, what=None):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.js(condition):
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what or condition}; page errors: {self.console}"
                             f"\nbrowser stderr:\n{''.join(self.stderr)[-2000:]}")

    def open(self, url):
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", what=f"{url} to load")

    def screenshot(self, name):
        SHOTS.mkdir(parents=True, exist_ok=True)
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=False)["data"]
        (SHOTS / name).write_bytes(base64.b64decode(data))

    def close(self):
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser-dat")
    make_dat(folder, vocab_size=50304, d_model=32, n_layers=N_LAYERS, n_heads_sa=N_HEADS,
             n_heads_ra=N_HEADS, n_symbols=16, max_block_size=64)
    return folder


@pytest.fixture()
def browser(tmp_path):
    b = Browser(tmp_path / "profile")
    yield b
    b.close()


def select(browser, element, value):
    browser.js(f"(() => {{ const s = document.getElementById('{element}'); s.value = '{value}';"
               " s.dispatchEvent(new Event('change')); })()")


def check_views(browser, n_tokens, prefix):
    """The views of a loaded payload: head view, model view, relations, symbols."""
    browser.wait_for("document.body.dataset.ready === '1'", what="the visualization")
    assert browser.js("document.getElementById('viz').hidden") is False
    assert browser.js("document.getElementById('what').options.length") == 4
    assert browser.js("document.getElementById('layer').options.length") == N_LAYERS
    assert browser.js("document.querySelectorAll('#heads .head-chip').length") == N_HEADS
    assert browser.js("!!document.getElementById('head-view-canvas')")
    browser.screenshot(f"{prefix}-head-view.png")

    select(browser, "view", "model")
    assert browser.js("document.querySelectorAll('#model-grid canvas').length") == N_LAYERS * N_HEADS
    browser.js("document.querySelector('#model-grid canvas').dispatchEvent(new MouseEvent('click'))")
    assert browser.js("document.querySelectorAll('#detail canvas').length") == 1
    browser.screenshot(f"{prefix}-model-view.png")

    select(browser, "what", "rel")
    assert browser.js("document.getElementById('rel-box').hidden") is False
    assert browser.js("document.querySelectorAll('#processors input').length") == 4
    browser.js("document.querySelector('#processors input[value=\"Softmax-Normalize\"]').click()")
    assert browser.js("window.datviz.state.processor") == "Softmax-Normalize"
    browser.screenshot(f"{prefix}-relations-model-view.png")

    select(browser, "what", "relscaled")
    assert browser.js("document.getElementById('rel-head-box').hidden") is False
    select(browser, "view", "head")
    browser.screenshot(f"{prefix}-scaled-relations-head-view.png")

    select(browser, "view", "symbols")
    assert browser.js("document.querySelectorAll('#symbol-table tr').length") == n_tokens + 1
    # Hover values: moving over a cell shows its symbols.
    browser.js("document.querySelector('#symbol-table td.sym').dispatchEvent("
               "new MouseEvent('mousemove', {clientX: 300, clientY: 300}))")
    assert "symbol" in browser.js("document.getElementById('tooltip').textContent")
    browser.screenshot(f"{prefix}-symbols.png")
    assert not browser.console, browser.console


def test_app_generates_and_visualizes(model_dir, browser):
    with Server(model_dir) as server:
        browser.open(server.url + "/")
        assert browser.js("document.getElementById('app').hidden") is False
        _, health = server.json("GET", "/health")
        tokenized = health["tokenizer"] != "token ids"
        prompt = "To be, or not to be" if tokenized else "464 3290 318"
        browser.js(f"document.getElementById('prompt').value = {json.dumps(prompt)};"
                   "document.getElementById('max-tokens').value = 12;"
                   "document.getElementById('temperature').value = 0;")
        browser.js("document.getElementById('generate').click()")
        browser.wait_for("document.getElementById('status').textContent.startsWith('done')",
                         what="the generation")
        shown = browser.js("document.getElementById('generated-text').textContent")
        _, expected = server.json("POST", "/v1/completions",
                                  {"prompt": prompt, "max_tokens": 12, "temperature": 0})
        assert shown == expected["choices"][0]["text"] and shown
        browser.screenshot("app-generation.png")

        browser.js("document.getElementById('visualize').click()")
        _, payload = server.json("POST", "/v1/visualize", {"prompt": prompt + shown})
        check_views(browser, len(payload["tokens"]), "app")
        assert browser.js("window.datviz.state.view") == "symbols"


def test_viz_file_opens_offline(model_dir, browser, tmp_path):
    out = tmp_path / "viz.html"
    result = run_cli("viz", model_dir, "--tokens", "464,3290,318,257,1332,11,290,340", "-o", out)
    assert result.returncode == 0, result.stderr
    browser.open(out.as_uri())
    check_views(browser, 8, "viz-file")
