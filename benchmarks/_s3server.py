"""moto's S3 backend in its own process, served by a small asyncio HTTP/1.1 front, with an
injected per-request latency.

moto ships werkzeug's development server (a thread per connection). On a 2-core machine that
server, not the S3 logic, is the bottleneck: about 330 requests/s for the S3 app alone and
~240/s with moto's all-services dispatcher, while moto's S3 app itself needs ~0.4 ms per GET.
This front runs the same WSGI app on one event loop and sleeps the latency without a thread,
so a benchmark measures the client rather than the test server.

``python -m benchmarks._s3server PORT LATENCY_SECONDS``; ``set_latency`` changes it while running,
``server_cpu`` reads the server's CPU time.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readline()
    return await reader.readexactly(int(headers.get("content-length") or 0))


def _environ(method: str, target: str, version: str, headers: list[tuple[str, str]], body: bytes, port: int) -> dict[str, Any]:
    path, _, query = target.partition("?")
    env: dict[str, Any] = {
        "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query,
        "RAW_URI": target, "REQUEST_URI": target, "SERVER_NAME": "127.0.0.1", "SERVER_PORT": str(port),
        "SERVER_PROTOCOL": version, "CONTENT_LENGTH": str(len(body)), "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
        "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False,
    }
    for name, value in headers:
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            env[key] = value
        elif key != "CONTENT_LENGTH":
            env["HTTP_" + key] = value
    return env


def _populate(bucket: str, prefix: str, count: int, classes: int = 3) -> None:
    """Create ``count`` small objects ``<prefix>/class<k>/<i>.png`` straight in moto's backend
    (100k objects over HTTP would take minutes; listing them is what is measured)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    if bucket not in backend.buckets:
        backend.create_bucket(bucket, "us-east-1")
    for i in range(count):
        backend.put_object(bucket, f"{prefix}/class{i % classes}/{i}.png", i.to_bytes(8, "little"))


def serve(app: Any, port: int, latency: float) -> None:
    """Serve ``app``; ``PUT /_latency`` (body: seconds) changes the latency, ``PUT /_populate``
    (body: JSON arguments of :func:`_populate`) creates objects without HTTP uploads, ``GET /_cpu``
    answers the server's CPU seconds."""
    delay = [latency]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                method, target, version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
                headers = []
                while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, value = raw.decode("latin-1").split(":", 1)
                    headers.append((name.strip(), value.strip()))
                lower = {k.lower(): v for k, v in headers}
                if lower.get("expect", "").lower() == "100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = await _read_body(reader, lower)
                if target in ("/_latency", "/_populate"):
                    if target == "/_latency":
                        delay[0] = float(body)
                    else:
                        _populate(**json.loads(body))
                    writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                    continue
                if target == "/_cpu":  # this process's CPU seconds, to tell the client's share from the server's
                    cpu = repr(time.process_time()).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(cpu), cpu))
                    continue
                if delay[0]:
                    await asyncio.sleep(delay[0])
                answer: list[Any] = []
                result = app(_environ(method, target, version, headers, body, port), lambda s, h, e=None: answer.extend((s, h)))
                try:
                    payload = b"".join(result)
                finally:
                    getattr(result, "close", lambda: None)()
                status, response_headers = answer
                length = str(len(payload))
                out = [f"HTTP/1.1 {status}\r\n"]
                for name, value in response_headers:
                    if name.lower() == "content-length":
                        length = value if method == "HEAD" else length
                    elif name.lower() not in ("transfer-encoding", "connection"):
                        out.append(f"{name}: {value}\r\n")
                out.append(f"Content-Length: {length}\r\n\r\n")
                writer.write("".join(out).encode("latin-1") + (b"" if method == "HEAD" else payload))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def set_latency(endpoint: str, seconds: float) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/_latency", data=str(seconds).encode(), method="PUT"), timeout=10).close()


def server_cpu(endpoint: str) -> float:
    """CPU seconds the server process has used so far."""
    with urllib.request.urlopen(f"{endpoint}/_cpu", timeout=10) as response:
        return float(response.read())


def populate(endpoint: str, bucket: str, prefix: str, count: int) -> None:
    body = json.dumps({"bucket": bucket, "prefix": prefix, "count": count}).encode()
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/_populate", data=body, method="PUT"), timeout=1800).close()


@contextlib.contextmanager
def s3_process(latency: float = 0.0) -> Iterator[str]:
    """Start the server in a subprocess; yield its endpoint URL."""
    from tests.servers import S3_ENV, free_port

    port = free_port()
    env = {**os.environ, **S3_ENV}
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks._s3server", str(port), str(latency)],
                            cwd=Path(__file__).resolve().parent.parent, env=env)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(endpoint + "/", timeout=2).close()
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("the S3 server process exited") from None
                time.sleep(0.05)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    from moto.moto_server.werkzeug_app import create_backend_app

    serve(create_backend_app("s3"), int(sys.argv[1]), float(sys.argv[2]))
