"""report.html in real headless Chromium: sections present and visible, no network request at all."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
from PIL import Image

from brevetti_pipe import Job

BROWSER_SERVICES = ("clients2.google.com/time/", "update.googleapis.com", "accounts.google.com")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; installed here with apt-get when missing (the machine is root)."""
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
    requests: list[str] = []

    def _any(self):
        type(self).requests.append(f"{self.command} {self.path}")
        self.send_response(503)
        self.end_headers()

    do_GET = do_POST = do_CONNECT = do_HEAD = _any

    def log_message(self, *args):
        pass


@pytest.fixture()
def proxy():
    _Catcher.requests = []
    server = HTTPServer(("127.0.0.1", 0), _Catcher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}", _Catcher.requests
    server.shutdown()
    server.server_close()


def test_report_renders_offline_with_all_sections(tmp_path, tiny_vials, chromium, proxy):
    job = Job.init(job_id="rep", overrides=[
        "recipe=vials_classification", "settings.epochs=2", "settings.batch_size=8", "pipeline.image.target_size=[32,32]",
        f"platform.root={tmp_path}", f"datasets.vials.url={tiny_vials}",
    ])
    (tmp_path / "jobs" / "rep" / "artifacts").mkdir(parents=True)
    (tmp_path / "jobs" / "rep" / "artifacts" / "extra.html").write_text("<p>custom page</p>")
    job.start()
    report = tmp_path / "jobs" / "rep" / "artifacts" / "report.html"
    address, requests = proxy
    common = [chromium, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--proxy-server=http://{address}",
              "--proxy-bypass-list=<-loopback>", "--window-size=1200,1800"]
    dom = subprocess.run([*common, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120).stdout
    for section in ("id=\"curves\"", "id=\"split\"", "id=\"pivot\"", "id=\"facets\"", "id=\"confusion_devel\"", "id=\"metrics\""):
        assert section in dom, section
    assert dom.count("<polyline") >= 4, "train and devel curves for loss and accuracy"
    assert "href=\"extra.html\"" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([*common, f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.std() > 10, "the screenshot is blank"
    dark_rows = (pixels < 100).any(axis=1).mean()
    assert dark_rows > 0.2, "text, charts and atlas should cover much of the first screen"
    # Chromium's own services (clock sync, updater, sign-in) are not the page's requests.
    page_requests = [r for r in requests if not any(host in r for host in BROWSER_SERVICES)]
    assert page_requests == [], f"the report made network requests: {page_requests}"
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", report.read_text()), "no remote resources in the page"
