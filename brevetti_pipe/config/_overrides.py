"""Command-line overrides: Hydra's override grammar, and the checks they pass before Hydra sees them.

argv (translated by ``cli``) -> guard_overrides: foreign ``_target_`` refused, secrets masked -> Hydra.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from brevetti_pipe._util import secrets as _secrets
from brevetti_pipe.config._load import target_error
from brevetti_pipe.errors import ConfigError

__all__ = ["guard_overrides", "hydra_literal"]

_PLAIN = re.compile(r"^[A-Za-z0-9_./:\-+]*$")


def hydra_literal(value: Any) -> str:
    """Render a Python value in Hydra's override grammar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ",".join(hydra_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(k)):
                raise ConfigError(f"Dict keys in flag values must be identifiers; got {k!r}")
            items.append(f"{k}:{hydra_literal(v)}")
        return "{" + ",".join(items) + "}"
    text = str(value)
    if text and _PLAIN.match(text) and text.lower() not in ("null", "true", "false") and not _is_number(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _mask_value(value: Any, path: str, tag: str = "") -> Any:
    """``value`` with secrets (any value of a secret-looking key, URL credentials) masked as ``***`` + ``tag``,
    at any depth; the real ones are held for :func:`brevetti_pipe._util.secrets.restore`."""
    if isinstance(value, dict):
        return {k: _mask_value(v, f"{path}.{k}", tag) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_value(v, f"{path}.{i}", tag) for i, v in enumerate(value)]
    if value is None or isinstance(value, bool) or (isinstance(value, str) and (not value or "${" in value)):
        return value
    if _secrets.is_secret_key(path.rsplit(".", 1)[-1]):
        shown = _secrets.MASK + tag
    else:
        shown = _secrets.redact_url(value, tag) if isinstance(value, str) else value
    if shown != value:
        _secrets.hold(path, value, shown)
    return shown


def guard_overrides(overrides: Sequence[str]) -> list[str]:
    """Check and mask command-line overrides before Hydra sees (and saves, logs, prints) them.

    A ``_target_`` outside the allowlist is refused; secret values (``+datasets.X.storage_options.secret=S``,
    a token dict's ``private_key``, ``s3://KEY:SECRET@bucket`` URLs) are replaced by ``***`` and
    their real values handed to the job through :func:`brevetti_pipe._util.secrets.restore`.

    Raises:
        ConfigError: naming the override with a forbidden ``_target_``.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out = []
    for arg in overrides:
        head, eq, raw = arg.partition("=")
        if not eq or arg.startswith("-"):
            out.append(arg)
            continue
        try:
            ov = parser.parse_override(arg)
            values = list(ov.sweep_iterator()) if ov.is_sweep_override() else [ov.value()]
        except Exception:  # Hydra reports the syntax error; keep its text free of the value
            if _secrets.is_secret_key(head.rsplit(".", 1)[-1]):
                _secrets.add_secret(raw)
            _secrets.collect_secrets(raw)
            out.append(arg)
            continue
        key = ov.key_or_group
        for value in values:
            error = target_error(key, value)
            if error:
                raise error
        if ov.package is not None or ov.is_delete() or key.startswith("hydra"):
            out.append(arg)
        elif ov.is_sweep_override():
            # each element gets its own mask (***0, ***1) so that the runs still differ and get their own value
            masked = [_mask_value(v, key, str(i)) for i, v in enumerate(values)]
            out.append(arg if masked == values else f"{head}={','.join(hydra_literal(v) for v in masked)}")
        else:
            masked = _mask_value(values[0], key)
            out.append(arg if masked == values[0] else f"{head}={hydra_literal(masked)}")
    return out

