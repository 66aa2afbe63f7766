"""Retries for storage calls: transient faults back off and retry within a bounded total time."""

from __future__ import annotations

import errno
import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["RetryPolicy", "is_transient", "retry_call"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_TRANSIENT_NAMES = {
    "ConnectionError", "ConnectionResetError", "ConnectionAbortedError", "ConnectionRefusedError",
    "BrokenPipeError", "TimeoutError", "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
    "ConnectionClosedError", "ProxyConnectionError", "ClientConnectorError", "ClientOSError",
    "ServerDisconnectedError", "ServerTimeoutError", "ClientPayloadError", "IncompleteRead",
    "ResponseStreamingError", "ChecksumError",
}
_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                    "InternalError", "ServiceUnavailable", "503", "500", "502", "504", "429"}
# A private generator: jitter must not draw from (and so shift) the global `random` stream,
# which Keras uses for default initializer seeds.
_jitter = random.Random()

_TRANSIENT_ERRNOS = {errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EPIPE, errno.EAGAIN}


class RetryPolicy:
    """How long and how often to retry transient storage faults.

    Args:
        total_seconds: give up once this much time has passed since the first attempt.
        initial_delay: first backoff delay (doubles each retry, with jitter).
        max_delay: cap of one backoff delay.
    """

    def __init__(self, total_seconds: float = 60.0, initial_delay: float = 0.2, max_delay: float = 5.0) -> None:
        self.total_seconds = total_seconds
        self.initial_delay = initial_delay
        self.max_delay = max_delay


def is_transient(exc: BaseException) -> bool:
    """True for faults worth retrying: resets, timeouts, throttling and 5xx answers."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
            return False
        if type(current).__name__ in _TRANSIENT_NAMES:
            return True
        if isinstance(current, OSError) and current.errno in _TRANSIENT_ERRNOS:
            return True
        code = getattr(current, "code", None) or getattr(current, "status", None)
        if isinstance(code, int) and (code >= 500 or code == 429):
            return True
        response = getattr(current, "response", None)
        if isinstance(response, dict):
            err = response.get("Error", {}).get("Code", "")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if err in _TRANSIENT_CODES or (isinstance(status, int) and status >= 500):
                return True
        text = str(current)
        if any(marker in text for marker in ("503", "Service Unavailable", "SlowDown", "Reduce your request rate", "Connection reset")):
            return True
        current = current.__cause__ or current.__context__
    return False


def retry_call(fn: Callable[[], T], what: str, policy: RetryPolicy | None = None) -> T:
    """Call ``fn`` and retry transient faults with jittered exponential backoff.

    Raises the last error once ``policy.total_seconds`` have passed (or at once when the fault
    is not transient). ``what`` names the operation and URL in the log.
    """
    policy = policy or RetryPolicy()
    start = time.monotonic()
    delay = policy.initial_delay
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as exc:
            elapsed = time.monotonic() - start
            if not is_transient(exc) or elapsed + delay > policy.total_seconds:
                raise
            log.warning("Transient storage fault on %s (attempt %d): %s; retrying in %.1fs", what, attempt, exc, delay)
            time.sleep(delay * (0.5 + _jitter.random() / 2))
            delay = min(delay * 2, policy.max_delay)
