"""Progress POSTs to a real local HTTP server, and failures that lose nothing."""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tests.conftest import TINY_ARGS, only_job_dir, read_output, run_cli
from tests.servers import free_port


class _Recorder(BaseHTTPRequestHandler):
    received: list[tuple[dict, dict]] = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append((dict(self.headers), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture()
def progress_server():
    _Recorder.received = []
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/progress", _Recorder.received
    server.shutdown()
    server.server_close()


def test_one_progress_post_per_epoch_with_key_in_header(tmp_path, tiny_vials, progress_server):
    url, received = progress_server
    proc = run_cli(*TINY_ARGS, "settings.epochs=2", f"platform.root={tmp_path / 'p'}", f"datasets.vials.url={tiny_vials}",
                   f"callbacks.progress.url={url}", "--api_key", "key-in-header-only", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [body["epoch"] for _, body in received] == [1, 2]
    headers, body = received[0]
    assert headers["Authorization"] == "Bearer key-in-header-only"
    assert "train_loss" in body and body["job_id"] == only_job_dir(tmp_path / "p").name
    assert all("key-in-header-only" not in json.dumps(b) for _, b in received)


def test_progress_server_down_warns_once_and_job_completes(tmp_path, tiny_vials):
    url = f"http://127.0.0.1:{free_port()}/progress"
    proc = run_cli(*TINY_ARGS, "settings.epochs=2", f"platform.root={tmp_path / 'p'}", f"datasets.vials.url={tiny_vials}",
                   f"callbacks.progress.url={url}", "callbacks.progress.retries=1", "callbacks.progress.backoff=0.01",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("Progress POST to") == 1
    job_dir = only_job_dir(tmp_path / "p")
    assert read_output(job_dir)["status"] == "completed"
    assert len((job_dir / "artifacts" / "progress.jsonl").read_text().splitlines()) == 2


def test_failing_run_keeps_what_was_written(tmp_path, tiny_vials):
    data = tmp_path / "data"
    shutil.copytree(tiny_vials, data)
    (data / "good" / "zz_corrupt.bmp").write_bytes(b"BM not really a bitmap")
    proc = run_cli(*TINY_ARGS, f"platform.root={tmp_path / 'p'}", f"datasets.vials.url={data}",
                   "split.fractions={train:1.0,devel:0.0,test:0.0}", "data.check_samples=false", cwd=tmp_path)
    assert proc.returncode == 1
    assert len([ln for ln in proc.stderr.splitlines() if ln.startswith("brevetti-pipe: error:")]) == 1
    job_dir = only_job_dir(tmp_path / "p")
    out = read_output(job_dir)
    assert out["status"] == "failed" and out["error"]
    split = (job_dir / "artifacts" / "sample_identification.csv").read_text()
    assert "zz_corrupt.bmp" in split and len(split.splitlines()) == 32
    assert (job_dir / "artifacts" / "report.html").exists(), "the report also covers failed jobs"
