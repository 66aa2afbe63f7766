"""Real storage servers on 127.0.0.1 for tests: moto's S3 server, gcp-storage-emulator and a plain
HTTP server of a local folder."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http import server as http_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Store:
    """A running store: its endpoint, the env a subprocess needs, and fsspec options."""

    protocol: str
    endpoint: str
    env: dict[str, str] = field(default_factory=dict)
    options: dict[str, object] = field(default_factory=dict)

    def fs(self):  # noqa: ANN201
        import fsspec

        return fsspec.filesystem(self.protocol, skip_instance_cache=True, **self.options)

    def overrides(self, prefix: str) -> list[str]:
        """Hydra overrides passing this store's options to ``prefix`` (e.g. platform.storage_options)."""
        return [f"+{prefix}.{k}={v}" for k, v in self.options.items()]


@contextlib.contextmanager
def _patched_env(env: dict[str, str]) -> Iterator[None]:
    """Set ``env`` in os.environ for the block, then restore what was there."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@contextlib.contextmanager
def s3_server() -> Iterator[Store]:
    """moto's S3 server in a thread (in-process ``mock_aws`` does not work with s3fs), started empty."""
    with moto_server() as endpoint, s3_store(endpoint) as store:
        yield store


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A running moto server; yields its endpoint. Start it once and hand out stores with :func:`s3_store`."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def s3_store(endpoint: str) -> Iterator[Store]:
    """The moto server at ``endpoint`` emptied, as a store with the S3 env set for the block.

    Filesystems cached by fsspec for an earlier store on the same endpoint are dropped, so nothing
    (a directory listing) outlives the objects it describes.
    """
    import urllib.request

    import fsspec

    fsspec.AbstractFileSystem.clear_instance_cache()
    # moto keeps its backends per process: every store starts empty
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10).close()
    with _patched_env(S3_ENV):
        yield Store("s3", endpoint, dict(S3_ENV), {"endpoint_url": endpoint})


class _BacklogHTTPServer(http_server.HTTPServer):
    # The emulator's default backlog (5) refuses gcsfs's concurrent connections; requests are
    # still served one at a time, as by the emulator itself.
    request_queue_size = 256


@contextlib.contextmanager
def gcs_server() -> Iterator[Store]:
    """gcp-storage-emulator (in memory) serving the JSON API on 127.0.0.1."""
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    from gcp_storage_emulator.server import RequestHandler
    from gcp_storage_emulator.storage import Storage

    storage = Storage(use_memory_fs=True)
    httpd = _BacklogHTTPServer(("127.0.0.1", 0), partial(RequestHandler, storage))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{httpd.server_address[1]}"
    env = {"STORAGE_EMULATOR_HOST": endpoint, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    try:
        with _patched_env(env):
            yield Store("gs", endpoint, env, {"endpoint_url": endpoint, "token": "anon", "project": "test"})
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextlib.contextmanager
def http_folder_server(folder: str | os.PathLike[str]) -> Iterator[str]:
    """Python's ``http.server`` serving ``folder`` (with its HTML directory listings) on 127.0.0.1;
    yields the base URL (``http://127.0.0.1:PORT``)."""

    class Quiet(http_server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the stdlib's name)
            pass

    httpd = http_server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=os.fspath(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


class FaultProxy:
    """A reverse proxy on 127.0.0.1 that forwards to ``upstream`` and fails a fraction of requests.

    Failures alternate between an S3-style ``503 SlowDown`` answer and a dropped connection.
    Seeded, so a test run is repeatable; ``stats`` counts forwarded, failed and truncated requests.
    With ``fail_put_key`` (settable while running), every PUT of a key ending with it answers
    ``500 InternalError`` instead. With ``truncate_rate``, that fraction of successful object GETs
    (not listings) answer with the first half of the body and a matching ``Content-Length``: a
    short read HTTP cannot see.
    """

    def __init__(self, upstream: str, fail_rate: float, seed: int = 0, delay: float = 0.0,
                 fail_put_key: str | None = None, truncate_rate: float = 0.0) -> None:
        import random
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlparse

        self.fail_rate = fail_rate
        self.delay = delay
        self.fail_put_key = fail_put_key
        self.truncate_rate = truncate_rate
        self.stats = {"forwarded": 0, "failed": 0, "truncated": 0}
        rng = random.Random(seed)
        lock = threading.Lock()
        target = urlparse(upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as separate writes

            def _error(self, status: int, code: str, message: str) -> None:
                payload = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":  # a HEAD answer has headers only
                    self.wfile.write(payload)

            def _handle(self) -> None:
                import http.client

                if proxy.delay:
                    time.sleep(proxy.delay)  # injected per-request latency
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                key = self.path.split("?", 1)[0]
                if self.command == "PUT" and proxy.fail_put_key and key.endswith(proxy.fail_put_key):
                    with lock:
                        proxy.stats["failed"] += 1
                    self._error(500, "InternalError", "We encountered an internal error.")
                    return
                with lock:
                    fail = rng.random() < proxy.fail_rate
                    drop = fail and proxy.stats["failed"] % 2 == 1
                    proxy.stats["failed" if fail else "forwarded"] += 1
                if drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fail:
                    self._error(503, "SlowDown", "Reduce your request rate.")
                    return
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                path, _, query = self.path.partition("?")
                if (proxy.truncate_rate and self.command == "GET" and resp.status == 200 and len(data) > 1
                        and path.strip("/").count("/") >= 1 and "list-type" not in query):
                    with lock:
                        cut = rng.random() < proxy.truncate_rate
                        proxy.stats["truncated"] += cut
                    data = data[: len(data) // 2] if cut else data
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(k, v)
                head_length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", head_length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # accept concurrent clients (the default backlog is 5)

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
