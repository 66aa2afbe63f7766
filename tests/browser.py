"""Headless Chromium driven over the DevTools protocol, for tests that open the pages the job writes.

The page's own requests are read from the DevTools protocol (``--remote-debugging-pipe``), so
Chromium's background services (clock sync, updater, sign-in; Debian's build sends some even with
``--disable-background-networking``) do not count: they are the browser's requests, not the page's.
A loopback proxy still catches them so that nothing leaves the machine. One Chromium serves the
whole session (the ``browser`` fixture in conftest.py).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import select
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
]


def find_chromium() -> str:
    """Debian's chromium (``make test`` installs it; installed here with apt-get when missing and root)."""
    path = shutil.which("chromium")
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, capture_output=True, timeout=900)
        path = shutil.which("chromium")
    if path is None:
        pytest.fail("Debian's chromium is needed for the report test and could not be installed (apt-get install chromium)")
    return path


class _Catcher(BaseHTTPRequestHandler):
    def _any(self) -> None:
        self.send_response(503)
        self.end_headers()

    do_GET = do_POST = do_CONNECT = do_HEAD = _any

    def log_message(self, *args: object) -> None:
        pass


def start_proxy() -> HTTPServer:
    """A loopback HTTP proxy answering 503 to everything (Chromium's own background requests end here)."""
    server = HTTPServer(("127.0.0.1", 0), _Catcher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class DevTools:
    """One headless Chromium driven over the DevTools protocol on fds 3/4 (NUL-terminated JSON)."""

    def __init__(self, chromium: str, profile: Path, proxy: str) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire() -> None:  # runs in the child: the protocol wants exactly fds 3 and 4
            a, b = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [chromium, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile}",
             f"--proxy-server=http://{proxy}", "--proxy-bypass-list=<-loopback>"],
            preexec_fn=wire, close_fds=False,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Network", "Page", "Runtime"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=1200, height=1800,
                  deviceScaleFactor=1, mobile=False)

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self._from_browser, 1 << 16) if ready else b""
            if not chunk:
                raise TimeoutError("Chromium's DevTools pipe gave no answer")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 60
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._id:
                assert "error" not in answer, answer
                return answer["result"]
            self.events.append(answer)

    def open(self, url: str) -> list[dict[str, Any]]:
        """Load ``url``, wait for its load event and a quiet network; return the page's network events."""
        first = len(self.events)
        self.call("Page.navigate", session=True, url=url)
        deadline = time.monotonic() + 60
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events[first:]):
            self.events.append(self._receive(deadline))
        # An evaluation round trip after the load event flushes the events queued before it.
        self.call("Runtime.evaluate", session=True, expression="document.readyState")
        return [e for e in self.events[first:] if e.get("method", "").startswith("Network.")
                and e.get("sessionId") == self.session]

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)["result"]["value"]

    def screenshot(self) -> np.ndarray:
        data = base64.b64decode(self.call("Page.captureScreenshot", session=True, format="png")["data"])
        return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32)

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (OSError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


def requested(events: list[dict[str, Any]]) -> list[str]:
    return [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]


SHOTS = Path("/tmp/report_shots")


def save_screenshot(browser: DevTools, name: str) -> np.ndarray:
    """The first screen of the open page, kept as /tmp/report_shots/<name>.png for a person to look at."""
    data = base64.b64decode(browser.call("Page.captureScreenshot", session=True, format="png")["data"])
    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS / f"{name}.png").write_bytes(data)
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32)


def open_offline(browser: DevTools, page: Path) -> str:
    """Open ``page``; assert it requested nothing but itself and data: URIs, under the report's CSP; return its DOM."""
    text = page.read_text()
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", text), "no remote resources in the page"
    events = browser.open(page.as_uri())
    assert [u for u in requested(events) if not u.startswith("data:")] == [page.as_uri()], \
        "the page itself requested nothing but its own file (and its inline data: images)"
    assert browser.evaluate("document.querySelector('meta[http-equiv=\"Content-Security-Policy\"]')?.content ?? null") == CSP
    assert browser.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)"), "an image did not load"
    return browser.evaluate("document.documentElement.outerHTML")


def x_ticks(browser: DevTools, chart: int = 0) -> list[str]:
    """The rendered x-axis tick labels of the ``chart``-th training curve."""
    return browser.evaluate(
        f"[...document.querySelectorAll('#curves svg')[{chart}].querySelectorAll('g[id^=xtick] text')]"
        ".map(t => t.textContent.trim())")
