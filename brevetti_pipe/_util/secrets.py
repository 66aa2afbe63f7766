"""Keeps secrets (API keys, cloud credentials) out of every output, log line and message."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from typing import IO, Any

__all__ = [
    "add_secret", "api_key", "collect_secrets", "hold", "install_log_redaction", "is_secret_key", "redact",
    "redact_config_text", "redact_obj", "redacting_streams", "restore", "set_api_key", "SECRET_KEYS",
]

_lock = threading.Lock()
_secrets: set[str] = set()
_api_key: str | None = None
MASK = "***"

#: Config/JSON keys whose values are secrets wherever they appear.
SECRET_KEYS = re.compile(
    r"(api[_-]?key|secret|token|password|passwd|credential|access[_-]?key|session[_-]?key|private[_-]?key"
    r"|account[_-]?key|connection[_-]?string|^key$)",
    re.I,
)
# user[:password]@ after a scheme; a password may hold '/' (AWS secret keys do), a user may not
_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<cred>(?P<user>[^/@\s:]+)(?::(?P<password>[^@\s]*))?)@"
)
#: Command-line secrets replaced by MASK before Hydra sees them: dotted path -> real value. Launchers
#: that run jobs in child processes (joblib, submitit, ray) hand them on through this variable.
HELD_ENV = "BREVETTI_PIPE_HELD_SECRETS"
_held: dict[str, Any] = {}
_QUERY_SECRETS = re.compile(r"(?P<key>[?&](?:api[_-]?key|token|key|signature|x-amz-signature)=)[^&\s]+", re.I)


def add_secret(value: str | None) -> None:
    """Remember ``value`` so that :func:`redact` masks it everywhere from now on."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(str(value))


def set_api_key(value: str | None) -> None:
    """Set the platform API key for this process (from ``--api_key`` or the environment)."""
    global _api_key
    _api_key = value or None
    add_secret(value)


def api_key() -> str | None:
    """The platform API key: ``--api_key`` if given, else ``$BREVETTI_PIPE_API_KEY``."""
    if _api_key:
        return _api_key
    env = os.environ.get("BREVETTI_PIPE_API_KEY") or os.environ.get("BREVETTI_API_KEY")
    add_secret(env)
    return env or None


def _env_secrets() -> list[str]:
    names = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "BREVETTI_PIPE_API_KEY", "BREVETTI_API_KEY")
    return [os.environ[n] for n in names if os.environ.get(n) and len(os.environ[n]) >= 4]


def is_secret_key(key: object) -> bool:
    """True for config keys whose values are secrets (``secret``, ``token``, ``private_key``, ...)."""
    return bool(SECRET_KEYS.search(str(key)))


def _url_credentials(text: str) -> None:
    for m in _URL_CREDENTIALS.finditer(text):
        add_secret(m.group("user"))
        # a path-style parser (s3fs) splits "user:pass/word@bucket" at '/', so mask the pieces too
        for piece in [m.group("password"), *(m.group("password") or "").split("/")]:
            add_secret(piece)


def redact_url(text: str) -> str:
    """``text`` with the credentials of ``scheme://user:password@`` URLs masked."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)


def redact(text: str) -> str:
    """Mask known secrets, credentials in URLs, and secret-looking query parameters."""
    if not text:
        return text
    with _lock:
        values = sorted(_secrets.union(_env_secrets()), key=len, reverse=True)
    for value in values:
        text = text.replace(value, MASK)
    text = redact_url(text)
    return _QUERY_SECRETS.sub(lambda m: f"{m.group('key')}{MASK}", text)


def redact_obj(obj: Any) -> Any:
    """Deep copy of a JSON-like object with secret keys masked and strings redacted."""
    if isinstance(obj, dict):
        return {
            k: (MASK if v not in (None, "", {}) and is_secret_key(k) else redact_obj(v))
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v) for v in obj]
    if isinstance(obj, str):
        return redact(obj)
    return obj


def collect_secrets(obj: Any) -> None:
    """Remember every string value stored under a secret-looking key anywhere in ``obj``, and the
    credentials of every ``scheme://user:password@`` URL in it."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, str) and is_secret_key(k):
                add_secret(v)
            collect_secrets(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            collect_secrets(v)
    elif isinstance(obj, str) and "@" in obj:
        _url_credentials(obj)


def hold(path: str, value: str, shown: str = MASK) -> None:
    """Keep the real ``value`` of a config ``path`` whose text was replaced by ``shown`` (see :func:`restore`)."""
    _held[path] = [shown, value]
    _remember(value, shown)
    os.environ[HELD_ENV] = json.dumps(_held)


def restore(data: dict[str, Any], prefix: str = "") -> None:
    """Put the held real values back into a resolved config wherever it still shows the masked text.

    Args:
        data: the resolved config, or the part of it at ``prefix`` (e.g. ``platform``).
    """
    held = _held or json.loads(os.environ.get(HELD_ENV) or "{}")
    start = prefix + "." if prefix else ""
    for path, (shown, value) in held.items():
        if not path.startswith(start):
            continue
        *parents, leaf = path[len(start):].split(".")
        node: Any = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(leaf) == shown:
            node[leaf] = value
            _remember(value, shown)


def _remember(value: str, shown: str) -> None:
    if shown == MASK:
        add_secret(value)
    else:
        _url_credentials(value)


_YAML_SECRET_LINE = re.compile(r"^(?P<head>\s*-?\s*(?P<key>[\w.\-]+)\s*[:=]\s*)(?P<value>\S.*)$")


def redact_config_text(text: str) -> str:
    """Redact a YAML file or an override list: values of secret-looking keys and known secrets."""
    lines = []
    for line in text.splitlines(keepends=True):
        m = _YAML_SECRET_LINE.match(line.rstrip("\n"))
        if m and is_secret_key(m.group("key").split(".")[-1]) and m.group("value") not in ("null", "''", '""', "{}"):
            line = f"{m.group('head')}{MASK}\n" if line.endswith("\n") else f"{m.group('head')}{MASK}"
        lines.append(line)
    return redact("".join(lines))


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is logging's problem, not ours
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_filter = _RedactingFilter()


def install_log_redaction() -> None:
    """Attach the redacting filter to every handler of the root logger (idempotent)."""
    for handler in logging.getLogger().handlers:
        if _filter not in handler.filters:
            handler.addFilter(_filter)


class _RedactingStream:
    """A text stream that masks secrets in everything written through it."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def redacting_streams() -> Iterator[None]:
    """Mask secrets in everything printed on stdout/stderr inside the block (usage errors, --cfg, logs)."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _RedactingStream(sys.stdout), _RedactingStream(sys.stderr)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
