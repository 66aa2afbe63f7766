"""Turns pydantic validation errors into one readable ConfigError naming the dotted key."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from brevetti_pipe.errors import ConfigError, did_you_mean

__all__ = ["accepts_extra_keys", "config_error_from_validation", "fields_at", "validate_model"]

M = typing.TypeVar("M", bound=BaseModel)


def _unwrap(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) for a in _unwrap(arg)]
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    return [annotation]


def _annotations_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[Any]:
    current: list[Any] = [model]
    for part in loc:
        nxt: list[Any] = []
        for ann in current:
            for cand in _unwrap(ann):
                origin = typing.get_origin(cand)
                if isinstance(cand, type) and issubclass(cand, BaseModel):
                    field = cand.model_fields.get(str(part))
                    if field is not None:
                        nxt.append(field.annotation)
                elif origin in (dict, typing.Mapping, list, tuple):
                    args = typing.get_args(cand)
                    if args:
                        nxt.append(args[-1] if origin is not tuple else args[0])
        current = nxt
    return current


def accepts_extra_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> bool:
    """Whether the value at ``loc`` inside ``model`` is a mapping or a model that allows extra keys."""
    for ann in _annotations_at(model, loc):
        for cand in _unwrap(ann):
            # a component's extra keys are its parameters, validated strictly by the component itself
            if typing.get_origin(cand) in (dict, typing.Mapping) or cand in (dict, Any):
                return True
    return False


def fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names allowed at ``loc`` inside ``model`` (best effort; [] when unknown, or when a model there
    takes extra keys, such as a component's parameters)."""
    current = _annotations_at(model, loc)
    names: list[str] = []
    for ann in current:
        for cand in _unwrap(ann):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                if cand.model_config.get("extra") == "allow":
                    return []
                names.extend(cand.model_fields)
    return names


def _dotted(prefix: str, loc: tuple[Any, ...]) -> str:
    parts = [prefix] if prefix else []
    for part in loc:
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
        else:
            parts.append(str(part))
    return ".".join(parts)


def config_error_from_validation(
    exc: ValidationError, model: type[BaseModel], prefix: str = "", source: str | None = None
) -> ConfigError:
    """Build a ConfigError listing every problem as ``key: message. Received: key=value``.

    Args:
        exc: the pydantic error.
        model: the model that was validated (used to suggest field names).
        prefix: dotted path of the model in the whole config, e.g. ``pipeline.image``.
        source: where the values came from (a file name), appended when given.
    """
    lines = []
    for err in exc.errors(include_url=False):
        loc = tuple(err.get("loc", ()))
        key = _dotted(prefix, loc)
        kind = err.get("type", "")
        received = err.get("input")
        if kind == "extra_forbidden":
            allowed = fields_at(model, loc[:-1])
            hint = did_you_mean(str(loc[-1]), allowed)
            allowed_txt = f" Allowed keys here: {', '.join(allowed)}." if allowed else ""
            declare = (" Settings are strict: to add a key, declare it in your JobSettings subclass "
                       f"({loc[-1]}: int = 0) and type the job's settings with it."
                       if key.startswith("settings.") and not hint else "")
            lines.append(f"Unknown key '{key}'.{hint}{allowed_txt}{declare}")
        elif kind == "missing":
            lines.append(f"Missing required key '{key}'.")
        else:
            msg = err.get("msg", "invalid value")
            lines.append(f"Invalid value for '{key}': {msg}. Received: {key}={received!r}")
    where = f" (in {source})" if source else ""
    if len(lines) == 1:
        return ConfigError(lines[0] + where)
    return ConfigError(f"{len(lines)} config errors{where}: " + " | ".join(lines))


def validate_model(model: type[M], data: Any, prefix: str = "", source: str | None = None) -> M:
    """``model.model_validate(data)`` that raises a ConfigError with dotted keys instead."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise config_error_from_validation(exc, model, prefix, source) from None
