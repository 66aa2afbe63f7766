"""Storage and progress faults from real components: a store that is down or hangs, a full or
read-only disk, and a progress server that redirects or trickles its answer."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import subprocess
import threading
import time
import urllib.error
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from brevetti_pipe._util import secrets as _secrets
from brevetti_pipe._util.retry import RetryPolicy, is_transient, retry_call
from brevetti_pipe.reporting.progress import Progress
from brevetti_pipe.errors import StorageError
from brevetti_pipe.storage import IoTools, join_url
from tests.conftest import TINY_ARGS, run_cli
from tests.servers import FaultProxy


def _job(io: IoTools, artifacts: str) -> SimpleNamespace:
    """The part of a Job the progress callback sees: its id, io and artifact paths."""
    return SimpleNamespace(id="job-1", io=io, artifact_path=lambda name: join_url(artifacts, name))


# -- 2. storage down mid-run ------------------------------------------------------------------

def test_progress_write_on_a_down_store_costs_one_backoff_per_epoch(s3, caplog):
    with FaultProxy(s3.endpoint, fail_rate=1.0) as proxy:
        io = IoTools({"s3": {"endpoint_url": proxy.endpoint}}, retry=RetryPolicy(total_seconds=10))
        progress, job = Progress(), _job(io, "s3://bucket/jobs/j/artifacts")
        with caplog.at_level(logging.WARNING):
            for epoch in range(3):
                start = time.monotonic()
                progress.on_epoch_end(job=job, epoch=epoch, metrics={"loss": 1.0})
                assert time.monotonic() - start < 2.5, f"epoch {epoch} waited {time.monotonic() - start:.1f}s"
        requests = proxy.stats["failed"]
    # two attempts per epoch (the HTTP client re-sends once on a dropped connection), no nested retries
    assert 6 <= requests <= 12, proxy.stats
    warnings = [r.getMessage() for r in caplog.records if "Progress write failed" in r.getMessage()]
    assert len(warnings) == 1 and "s3://bucket/jobs/j/artifacts/progress.jsonl" in warnings[0]
    # essential writes keep the full budget: the same store fails them only after retrying
    with FaultProxy(s3.endpoint, fail_rate=1.0) as proxy:
        io = IoTools({"s3": {"endpoint_url": proxy.endpoint}}, retry=RetryPolicy(total_seconds=4, initial_delay=0.05))
        start = time.monotonic()
        with pytest.raises(StorageError, match="gave up after retrying transient faults"):
            io.write_file("s3://bucket/out.json", "{}")
        assert 3.0 <= time.monotonic() - start < 5.0 and proxy.stats["failed"] >= 3, proxy.stats


def test_essential_write_ends_within_retry_seconds_when_the_store_hangs(s3):
    with FaultProxy(s3.endpoint, fail_rate=0.0, delay=100) as proxy:
        io = IoTools({"s3": {"endpoint_url": proxy.endpoint}}, retry=RetryPolicy(total_seconds=3))
        for call in (lambda: io.write_file("s3://bucket/out.json", "{}"), lambda: io.read_file("s3://bucket/x")):
            start = time.monotonic()
            with pytest.raises(StorageError, match=r"s3://bucket/.* gave up after retrying transient faults"):
                call()
            elapsed = time.monotonic() - start
            assert 2.9 <= elapsed < 4.5, f"took {elapsed:.1f}s with retry_seconds=3"


# -- 5. clear errors --------------------------------------------------------------------------

def test_is_transient_judges_types_not_message_text():
    from botocore.exceptions import ClientError

    assert not is_transient(ValueError("cannot decode s3://b/lot_503/x.png"))
    assert not is_transient(KeyError("Connection reset"))
    assert not is_transient(RuntimeError("503 Service Unavailable: SlowDown"))
    calls = []

    def decode() -> None:
        calls.append(1)
        raise ValueError("cannot decode s3://b/lot_503/x.png")

    start = time.monotonic()
    with pytest.raises(ValueError):
        retry_call(decode, "s3://b/lot_503/x.png", RetryPolicy(total_seconds=60))
    assert calls == [1] and time.monotonic() - start < 0.5
    # the stores' real errors still are transient, by type, HTTP status or botocore code
    slow = ClientError({"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutObject")
    assert is_transient(slow) and is_transient(OSError(16, "busy")) is False
    wrapped = OSError(16, "Please reduce your request rate")
    wrapped.__cause__ = slow  # how s3fs translates SlowDown
    assert is_transient(wrapped)
    denied = ClientError({"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "GetObject")
    assert not is_transient(denied)
    assert is_transient(urllib.error.HTTPError("http://x", 503, "busy", {}, None))  # type: ignore[arg-type]
    assert not is_transient(urllib.error.HTTPError("http://x", 404, "gone", {}, None))  # type: ignore[arg-type]
    from botocore.exceptions import FlexibleChecksumError

    assert is_transient(FlexibleChecksumError(error_msg="crc32 mismatch"))  # a damaged body from any S3 read
    assert is_transient(ConnectionResetError()) and is_transient(TimeoutError())


@contextlib.contextmanager
def _tmpfs(path: Path, options: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.mark.parametrize(("options", "reason"), [("size=256k", "no space left on device"),
                                                 ("size=256k,ro", "read-only file system")])
def test_full_or_read_only_disk_names_the_file(tmp_path, options, reason):
    source = tmp_path / "model.tar.gz"
    source.write_bytes(os.urandom(512 * 1024))
    with _tmpfs(tmp_path / "disk", options) as disk:
        io = IoTools()
        for action, call, target in [
            ("Writing", lambda t: io.write_file(t, source.read_bytes()), disk / "a" / "output.json"),
            ("Writing", lambda t: io.upload(str(source), t), disk / "b" / "model.tar.gz"),
        ]:
            with pytest.raises(StorageError) as info:
                call(str(target))
            message = str(info.value)
            assert message.startswith(f"{action} {target} failed: {reason}"), message
            assert "\n" not in message
        assert not [p for p in disk.rglob("*") if p.is_file()]  # no temporary files left behind


def test_job_on_a_full_disk_fails_naming_the_file(tmp_path, tiny_vials):
    with _tmpfs(tmp_path / "disk", "size=1m") as disk:
        (disk / "filler").write_bytes(b"\0" * 940_000)
        proc = run_cli(*TINY_ARGS, f"platform.root={disk}", f"datasets.vials.url={tiny_vials}", cwd=tmp_path)
    error = [ln for ln in proc.stderr.splitlines() if ln.startswith("brevetti-pipe: error:")]
    assert proc.returncode != 0 and len(error) == 1, proc.stderr[-2000:]
    assert f"{disk}/jobs/" in error[0] and "no space left on device" in error[0], error[0]


# -- 6. shared reading ------------------------------------------------------------------------

@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_artifacts_get_the_process_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        io = IoTools()
        written = [io.write_file(str(tmp_path / "art" / "output.json"), "{}")]
        (tmp_path / "src.bin").write_bytes(b"x")
        written.append(io.upload(str(tmp_path / "src.bin"), str(tmp_path / "art" / "model.tar.gz")))
        io.write_file(written[0], "{}")  # replacing a file keeps the mode
    finally:
        os.umask(old)
    assert {oct(stat.S_IMODE(os.stat(p).st_mode)) for p in written} == {oct(mode)}


# -- 3. the progress POST ---------------------------------------------------------------------

@contextlib.contextmanager
def _http(host: str, respond) -> Iterator[tuple[str, list[dict[str, str]]]]:  # noqa: ANN001
    """A real HTTP server on ``host``; ``respond(handler)`` answers each POST; headers are recorded."""
    received: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append({k.lower(): v for k, v in self.headers.items()})
            respond(self)

        do_POST = do_GET = _serve  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{host}:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def _answer(status: int, headers: dict[str, str] | None = None):  # noqa: ANN202
    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return respond


@pytest.fixture()
def api_key() -> Iterator[str]:
    _secrets.set_api_key("trust-key-never-leaves")
    yield "trust-key-never-leaves"
    _secrets.set_api_key(None)


@pytest.mark.parametrize("status", [302, 307])
def test_progress_post_never_sends_the_key_across_a_redirect(tmp_path, api_key, status, caplog):
    with _http("localhost", _answer(200)) as (other, stolen), \
            _http("127.0.0.1", _answer(status, {"Location": f"{other}/collect"})) as (url, received):
        progress = Progress(url=f"{url}/progress", retries=0)
        with caplog.at_level(logging.WARNING):
            progress.on_epoch_end(job=_job(IoTools(), str(tmp_path)), epoch=0, metrics={"loss": 1.0})
            assert progress.wait(10)  # the POST runs in the background
    assert received and received[0]["authorization"] == f"Bearer {api_key}"
    assert not stolen, f"the other host got {stolen}"
    assert any(f"HTTP {status}" in r.getMessage() for r in caplog.records)


def test_a_trickling_progress_server_cannot_hold_a_post_past_its_timeout(tmp_path):
    def trickle(handler: BaseHTTPRequestHandler) -> None:
        with contextlib.suppress(OSError):
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 40:  # one byte per 0.1 s: ~5 s in all
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(0.1)

    with _http("127.0.0.1", trickle) as (url, received):
        progress = Progress(url=f"{url}/progress", timeout=1.0, retries=1, backoff=0.0)
        start = time.monotonic()
        progress.on_epoch_end(job=_job(IoTools(), str(tmp_path)), epoch=0, metrics={"loss": 1.0})
        progress.wait(10)  # the POST runs in the background
        elapsed = time.monotonic() - start
    assert len(received) == 2 and elapsed < 3.0, f"two 1 s attempts took {elapsed:.1f}s"


def test_progress_url_must_be_http():
    from brevetti_pipe.errors import ConfigError

    with pytest.raises(ConfigError, match=r"callbacks\.progress\.url.*http:// or https://"):
        Progress(url="file:///etc/passwd")
