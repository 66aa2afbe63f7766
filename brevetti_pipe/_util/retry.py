"""Retries for storage calls: transient faults back off and retry within a bounded total wall time."""

from __future__ import annotations

import contextvars
import errno
import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import tenacity

__all__ = ["RetryPolicy", "is_transient", "retry_call", "call_with_deadline", "unresolvable_host"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Exception types (matched by class name anywhere in the MRO, so botocore, aiohttp and urllib3
# need not be importable) that mean "the connection or the server failed, try again"; the
# botocore ones include those s3fs itself retries (``s3fs.core.S3_RETRYABLE_ERRORS``).
_TRANSIENT_TYPES = {
    "ConnectionError", "TimeoutError", "FSTimeoutError", "EndpointConnectionError", "ConnectTimeoutError",
    "ReadTimeoutError", "ConnectionClosedError", "ProxyConnectionError", "HTTPClientError", "ResponseParserError",
    "ClientConnectorError", "ClientOSError", "ServerDisconnectedError", "ServerTimeoutError", "ClientPayloadError",
    "IncompleteRead", "ResponseStreamingError", "ChecksumError", "FlexibleChecksumError",
    "RemoteDisconnected",
}
# botocore error codes that are worth retrying (the ones botocore's own retry handlers use)
_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                    "InternalError", "ServiceUnavailable", "RequestLimitExceeded", "BandwidthLimitExceeded"}
_TRANSIENT_ERRNOS = {errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EPIPE,
                     errno.EAGAIN, errno.EHOSTUNREACH, errno.ENETUNREACH}
# Types that carry an HTTP status in ``code``/``status`` (urllib, gcsfs, aiohttp): only these are
# asked, so an unrelated ``code`` attribute never makes an error transient.
_HTTP_ERROR_TYPES = {"HTTPError", "HttpError", "ClientResponseError"}
# getaddrinfo answers that a host name does not exist (or never will resolve): no retry changes them.
# EAI_AGAIN ("temporary failure in name resolution") is not among them: that one is retried.
_UNRESOLVABLE = {socket.EAI_NONAME, socket.EAI_FAIL, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
# A private generator: jitter must not draw from (and so shift) the global `random` stream,
# which Keras uses for default initializer seeds (tenacity's own random waits use it).
_jitter = random.Random()


class RetryPolicy:
    """How long and how often to retry transient storage faults.

    Args:
        total_seconds: wall-time budget of the whole call, attempts and backoff included; an
            attempt still running at the deadline is abandoned and the call fails.
        initial_delay: first backoff delay (doubles each retry, with jitter).
        max_delay: cap of one backoff delay.
        attempts: at most this many attempts (``None``: as many as fit in ``total_seconds``).
        store_retries: let the store client retry single requests inside an attempt (botocore's
            retries, which a batch of many requests needs to get through lost requests).
    """

    def __init__(self, total_seconds: float = 60.0, initial_delay: float = 0.2, max_delay: float = 5.0,
                 attempts: int | None = None, store_retries: bool = True) -> None:
        self.total_seconds = total_seconds
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.attempts = attempts
        self.store_retries = store_retries

    def best_effort(self) -> RetryPolicy:
        """The policy of a write the job can live without (progress, report): two single requests
        with one backoff between them, within at most 5 seconds."""
        return RetryPolicy(min(self.total_seconds, 5.0), self.initial_delay, self.max_delay, attempts=2,
                           store_retries=False)

    def __repr__(self) -> str:
        return f"RetryPolicy(total_seconds={self.total_seconds}, attempts={self.attempts})"


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes and contexts, each once."""
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not f for f in found):
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def unresolvable_host(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is a DNS answer that the host name does not exist."""
    return any(isinstance(e, socket.gaierror) and e.errno in _UNRESOLVABLE for e in _chain(exc))


def is_transient(exc: BaseException) -> bool:
    """True for faults worth retrying, judged by exception type, errno, HTTP status and botocore
    error code (never by message text): resets, timeouts, throttling and 5xx answers. A host name
    that does not resolve is permanent, whatever client error wraps it."""
    if unresolvable_host(exc):
        return False
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
            return False
        names = _names(current)
        if names & _TRANSIENT_TYPES:
            return True
        if isinstance(current, OSError) and current.errno in _TRANSIENT_ERRNOS:
            return True
        if names & _HTTP_ERROR_TYPES:
            status = getattr(current, "code", None) or getattr(current, "status", None)
            if isinstance(status, int) and (status >= 500 or status == 429):
                return True
        response = getattr(current, "response", None)
        if "ClientError" in names and isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if response.get("Error", {}).get("Code") in _TRANSIENT_CODES or (isinstance(status, int) and status >= 500):
                return True
        current = current.__cause__ or current.__context__
    return False


def call_with_deadline(fn: Callable[[], T], seconds: float, what: str = "call") -> T:
    """Run ``fn`` and return its result, or raise :class:`TimeoutError` after ``seconds`` of wall time.

    The call runs in a daemon thread that is abandoned at the deadline (a blocking socket read
    cannot be interrupted from outside); it ends on its own at the store's read timeout.
    """
    box: dict[str, Any] = {}
    done = threading.Event()
    context = contextvars.copy_context()

    def run() -> None:
        try:
            box["value"] = context.run(fn)
        except BaseException as exc:  # handed to the caller
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="brevetti-pipe-io", daemon=True).start()
    if not done.wait(max(seconds, 0.0)):
        raise TimeoutError(f"{what}: no answer within {seconds:.1f}s")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def retry_call(fn: Callable[[], T], what: str, policy: RetryPolicy | None = None) -> T:
    """Call ``fn`` and retry transient faults with jittered exponential backoff.

    The whole call, each attempt included, ends within ``policy.total_seconds``: an attempt
    still running at the deadline is cut, and a backoff that would end past it is not slept.
    Raises the last error then (or at once when the fault is not transient). ``what`` names
    the operation and URL in the log.
    """
    policy = policy or RetryPolicy()
    deadline = time.monotonic() + policy.total_seconds
    stop: Any = tenacity.stop_before_delay(policy.total_seconds)
    if policy.attempts:
        stop = stop | tenacity.stop_after_attempt(policy.attempts)

    def wait(state: tenacity.RetryCallState) -> float:
        delay = min(policy.initial_delay * 2 ** (state.attempt_number - 1), policy.max_delay)
        return delay * (0.5 + _jitter.random() / 2)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("Transient storage fault on %s (attempt %d): %s; retrying in %.1fs",
                    what, state.attempt_number, exc, state.upcoming_sleep)

    retrying = tenacity.Retrying(stop=stop, wait=wait, retry=tenacity.retry_if_exception(is_transient),
                                 before_sleep=before_sleep, reraise=True)
    last: list[BaseException] = []

    def attempt() -> T:
        remaining = deadline - time.monotonic()
        try:
            return call_with_deadline(fn, remaining, what)
        except TimeoutError:
            # an attempt started on the last scraps of the budget says nothing new: report the fault
            # that used the budget up rather than "no answer within 0.0s"
            if last and remaining < min(1.0, policy.total_seconds / 10):
                raise last[-1] from None
            raise
        except Exception as exc:
            last.append(exc)
            raise

    return retrying(attempt)
