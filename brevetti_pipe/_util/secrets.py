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
#: Ordinary keys that merely end in ``key`` (``unique_key``, ``path_key``) are not matched.
SECRET_KEYS = re.compile(
    r"(api[_-]?key|secret|token|password|passwd|pwd|passphrase|credential|authori[sz]ation|cookie|signature"
    r"|access[_-]?key|session[_-]?key|private[_-]?key|account[_-]?key|connection[_-]?string|sas[_-]?(token|url)"
    r"|(^|[_-])auth($|[_-])|^(key|sas|sig)$)",
    re.I,
)
# user[:password]@ after a scheme; a password may hold '/' and '@' (it runs to the last '@' before the host)
_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<cred>(?P<user>[^/@\s:'\"]+)(?::(?P<password>[^\s'\"]*?))?)"
    r"@(?=[^@\s/'\"]*(?:[/\s?#'\"]|$))"
)
#: Command-line secrets replaced by MASK before Hydra sees them: dotted path -> real value. Launchers
#: that run jobs in child processes (joblib, submitit, ray) hand them on through this variable.
HELD_ENV = "BREVETTI_PIPE_HELD_SECRETS"
_held: dict[str, Any] = {}
_QUERY = re.compile(r"(?P<key>[?&](?P<name>[^=&\s#'\"]+)=)(?P<value>[^&\s#'\"]+)")


def _query_secret(m: re.Match[str]) -> bool:
    name = m.group("name")
    return is_secret_key(name) or name.lower().startswith("x-amz-")


def add_secret(value: Any) -> None:
    """Remember ``value`` (a string or a number) so that :func:`redact` masks it everywhere from now on; each
    line of a multi-line secret (a PEM key) too, as YAML and logs may show it line by line."""
    if value is None or isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return
    text = str(value)
    pieces = [text, *(line.strip() for line in text.splitlines())] if "\n" in text else [text]
    with _lock:
        _secrets.update(p for p in pieces if len(p) >= 4)


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
        for piece in [m.group("password"), *re.split(r"[/@]", m.group("password") or "")]:
            add_secret(piece)
    for m in _QUERY.finditer(text):
        if _query_secret(m):
            add_secret(m.group("value"))


def redact_url(text: str, tag: str = "") -> str:
    """``text`` with the credentials of ``scheme://user:password@`` URLs and secret query parameters
    (``?access_token=``, ``&sig=``, ``X-Amz-Credential=``) masked as ``***`` + ``tag``."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{MASK}{tag}@", text)
    return _QUERY.sub(lambda m: f"{m.group('key')}{MASK}{tag}" if _query_secret(m) else m.group(0), text)


def redact(text: str) -> str:
    """Mask known secrets, credentials in URLs, and secret-looking query parameters."""
    if not text:
        return text
    with _lock:
        values = sorted(_secrets.union(_env_secrets()), key=len, reverse=True)
    for value in values:
        text = text.replace(value, MASK)
    return redact_url(text)


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
            if is_secret_key(k):
                add_secret(v)
            collect_secrets(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            collect_secrets(v)
    elif isinstance(obj, str) and ("@" in obj or "=" in obj):
        _url_credentials(obj)


def hold(path: str, value: Any, shown: str = MASK) -> None:
    """Keep the real ``value`` of a config ``path`` whose text was replaced by ``shown`` (see :func:`restore`).
    A sweep holds one value per element, each under its own ``shown`` text (``***0``, ``***1``)."""
    _held.setdefault(path, {})[shown] = value
    _remember(value, shown)
    os.environ[HELD_ENV] = json.dumps(_held)


def restore(data: dict[str, Any], prefix: str = "") -> None:
    """Put the held real values back into a resolved config wherever it still shows the masked text.

    Args:
        data: the resolved config, or the part of it at ``prefix`` (e.g. ``platform``).
    """
    held = _held or json.loads(os.environ.get(HELD_ENV) or "{}")
    start = prefix + "." if prefix else ""
    for path, values in held.items():
        if not path.startswith(start):
            continue
        *parents, leaf = path[len(start):].split(".")
        node: Any = data
        parent: Any = None
        for part in [*parents, leaf]:
            parent = node
            node = _child(node, part)
        shown = node if isinstance(node, str) else None
        if shown is not None and shown in values:
            parent[int(leaf) if isinstance(parent, list) else leaf] = values[shown]
            _remember(values[shown], shown)


def _child(node: Any, part: str) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    return None


def _remember(value: Any, shown: str) -> None:
    if re.fullmatch(r"\*\*\*\d*", shown):
        add_secret(value)
    else:
        _url_credentials(value)


_YAML_SECRET_LINE = re.compile(r"^(?P<indent>\s*)(?P<head>-?\s*\+{0,2}(?P<key>[\w.\-]+)\s*[:=]\s*)(?P<value>\S.*)$")
#: ``key: value`` / ``key=value`` inside one line: flow mappings, override lists, ``override_dirname``
_INLINE_KEY = re.compile(r"(?<![\w-])(?P<key>[\w-]+)\s*[:=]\s*")
_INLINE_VALUE = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s,\[\]{}&'\"][^,\]}&'\"\n]*")
#: values that hold nothing to hide: empty, or already masked (``***``, a sweep element's ``'***1'``)
_EMPTY = re.compile(r"null|''|\"\"|\{\}|\[\]|'?\*\*\*\d*'?")


def _mask_inline(line: str) -> str:
    out, pos = [], 0
    for m in _INLINE_KEY.finditer(line):
        value = _INLINE_VALUE.match(line, m.end()) if m.start() >= pos and is_secret_key(m.group("key")) else None
        if value and not _EMPTY.fullmatch(value.group(0).rstrip()):
            out += [line[pos:m.end()], f"'{MASK}'"]
            pos = m.end() + len(value.group(0).rstrip())
    return "".join(out) + line[pos:]


def redact_config_text(text: str) -> str:
    """Redact a YAML file or an override list: values of secret-looking keys (with the continuation
    lines of a multi-line value), ``key: value`` pairs inside a line, and known secrets."""
    lines: list[str] = []
    skip_deeper_than: int | None = None
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\n")
        indent = len(body) - len(body.lstrip())
        if skip_deeper_than is not None and (not body.strip() or indent > skip_deeper_than):
            continue  # the rest of a masked multi-line value
        skip_deeper_than = None
        m = _YAML_SECRET_LINE.match(body)
        if m and is_secret_key(m.group("key").split(".")[-1]) and not _EMPTY.fullmatch(m.group("value").strip()):
            line = f"{m.group('indent')}{m.group('head')}'{MASK}'" + line[len(body):]
            skip_deeper_than = m.start("key")
        else:
            line = _mask_inline(line)
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
    """A text stream that masks secrets in everything written through it, including values under secret
    keys of a printed config (``--cfg job`` shows config files whose secrets no one has registered)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact_config_text(text))
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
