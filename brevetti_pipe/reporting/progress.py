"""Progress reporting: one JSON line per epoch in progress.jsonl, optionally POSTed to a URL."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import re
import socket
import threading
import urllib.parse
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from brevetti_pipe._util import secrets as _secrets
from brevetti_pipe._util.paths import check_relative
from brevetti_pipe.reporting._callback import JobCallback
from brevetti_pipe.config._schema import StrictModel
from brevetti_pipe.errors import ConfigError, StorageError

if TYPE_CHECKING:
    from brevetti_pipe.reporting._callback import JobView

__all__ = ["Progress"]

log = logging.getLogger(__name__)


def _post_once(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST ``body`` to ``url`` and return the HTTP status, within ``timeout`` seconds in total.

    Redirects are not followed (the API key must never reach another host), and a server that
    trickles its answer byte by byte is cut at the deadline: the socket is shut down then.
    """
    parts = urllib.parse.urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname or "", parts.port, timeout=timeout)
    expired = threading.Event()

    def cut() -> None:
        expired.set()
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):  # closed meanwhile
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(timeout, cut)
    timer.daemon = True
    timer.start()
    try:
        conn.connect()
        if expired.is_set():
            raise TimeoutError
        conn.request("POST", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        if expired.is_set():
            raise TimeoutError(f"no answer within {timeout:g}s") from None
        raise
    finally:
        timer.cancel()
        conn.close()


class Progress(JobCallback, name="progress"):
    """Appends ``{"epoch": n, ...metrics}`` to artifacts/progress.jsonl after every epoch.

    The file is rewritten atomically each time, so a reader (or a crash) never sees a half
    line. With ``url`` set, the same JSON is POSTed there from a background thread, so a slow or
    hung endpoint never holds training: one POST is in flight, a newer epoch replaces one still
    waiting (or being retried), and the job's end waits at most ``timeout`` seconds for the last.
    The API key travels in the ``Authorization`` header only, never across a redirect (redirects
    are not followed), and each attempt ends within ``timeout`` seconds in total. A store or
    server that is down is warned about once; the job goes on.
    """

    class Params(StrictModel):
        file: str = Field("progress.jsonl", description="Artifact file receiving one JSON line per epoch")
        url: str | None = Field(None, description="HTTP endpoint receiving each progress line as a POST")
        timeout: float = Field(5.0, gt=0, description="Seconds per POST attempt, in total (connect, send and answer)")
        retries: int = Field(2, ge=0, description="Extra attempts per POST on connection errors and 5xx")
        backoff: float = Field(0.5, ge=0, description="Seconds before the first retry (doubles each time)")

        @field_validator("url")
        @classmethod
        def _http_url(cls, url: str | None) -> str | None:
            if url is not None and (urllib.parse.urlsplit(url).scheme not in ("http", "https") or "://" not in url):
                raise ConfigError("expected an http:// or https:// URL")
            return url

    def __init__(self, params: Any = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._lines: list[str] = []
        self._warned: set[str] = set()
        self._cond = threading.Condition()
        self._pending: bytes | None = None  # the newest body not yet taken by the sender
        self._busy = False
        self._closed = False
        self._sender: threading.Thread | None = None

    def _warn_once(self, what: str, message: str, *args: Any) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning(message + "; training goes on, further failures are not logged.", *args)

    def owns(self, path: str) -> bool:
        """The progress file and the earlier attempts' copies (``<stem>.attempt-N.<ext>``)."""
        stem, dot, ext = check_relative([self.params.file], "file").rpartition(".")
        aside = rf"{re.escape(stem)}\.attempt-\d+\.{re.escape(ext)}" if dot else rf"{re.escape(ext)}\.attempt-\d+"
        return super().owns(path) or re.fullmatch(aside, path) is not None

    def on_job_start(self, *, job: JobView, **kwargs: Any) -> None:
        # A rerun of the same job id continues its progress file.
        url = job.artifact_path(self.params.file)
        try:
            io = job.io.best_effort()
            if io.exists(url):
                text = io.read_file(url).decode("utf-8", "replace")
                self._lines = [ln for ln in text.splitlines() if ln.strip()]
        except StorageError as exc:
            self._warn_once("read", "Could not read the earlier progress (%s)", exc)

    def on_resume(self, *, job: JobView, epoch: int, progress: list[dict[str, Any]], **kwargs: Any) -> None:
        # the file shows every epoch of the trained model: the finished ones of the earlier run first
        # (the earlier run's own file, with any epoch it had begun again, is kept aside as attempt-N)
        self._lines = [json.dumps(r) for r in progress]
        if not self._lines:
            return
        try:
            job.io.best_effort().write_file(job.artifact_path(self.params.file), "\n".join(self._lines) + "\n")
        except StorageError as exc:
            self._warn_once("write", "Progress write failed (%s)", exc)

    def on_epoch_end(self, *, job: JobView, epoch: int, metrics: dict[str, float], **kwargs: Any) -> None:
        record = {"epoch": int(epoch), **{k: None if v is None else float(v) for k, v in metrics.items()}}  # None: NaN
        line = json.dumps(record, sort_keys=False)
        self._lines.append(line)
        try:  # progress is not worth the storage retry budget of every epoch: one backoff, then on
            job.io.best_effort().write_file(job.artifact_path(self.params.file), "\n".join(self._lines) + "\n")
        except StorageError as exc:
            self._warn_once("write", "Progress write failed (%s)", exc)
        if self.params.url:
            self._post(job, record)

    def _post(self, job: JobView, record: dict[str, Any]) -> None:
        """Hand the newest record to the sender thread (started on first use); never waits for the network."""
        body = json.dumps({"job_id": job.id, **record}).encode()
        with self._cond:
            self._pending, self._closed = body, False
            self._cond.notify_all()
            if self._sender is None:
                self._sender = threading.Thread(target=self._send_loop, name="brevetti-pipe-progress", daemon=True)
                self._sender.start()

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._pending is None:
                    self._sender = None
                    return
                body, self._pending, self._busy = self._pending, None, True
            try:
                self._send(body)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _send(self, body: bytes) -> None:
        """POST ``body`` with retries; a newer record (or the job's end) cuts the retries short."""
        headers = {"Content-Type": "application/json"}
        key = _secrets.api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        delay = self.params.backoff
        error: str = ""
        for attempt in range(self.params.retries + 1):
            try:
                status = _post_once(self.params.url or "", body, headers, self.params.timeout)
                if 200 <= status < 300:
                    return
                error = f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
                if status < 500 and status != 429:
                    break
            except (OSError, http.client.HTTPException) as exc:
                error = str(exc) or type(exc).__name__
            with self._cond:
                if attempt < self.params.retries:
                    self._cond.wait_for(lambda: self._pending is not None or self._closed, timeout=delay)
                if self._pending is not None or self._closed:
                    break
            delay *= 2
        self._warn_once("post", "Progress POST to %s failed (%s)", _secrets.redact(self.params.url or ""),
                        _secrets.redact(error))

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the POSTs handed over so far are done (with their retries); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending is None and not self._busy, timeout=timeout)

    def on_job_end(self, *, job: JobView, status: str, **kwargs: Any) -> None:
        """Wait at most ``timeout`` seconds for the last POST (no more retries); a hung endpoint does not hold the job's end."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if not self.wait(self.params.timeout):
            self._warn_once("post", "The last progress POST to %s did not finish within %gs at the end of the job",
                            _secrets.redact(self.params.url or ""), self.params.timeout)
