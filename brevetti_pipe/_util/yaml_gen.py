"""Config files generated from pydantic models: each parameter with its default, its description as a comment.

The models are the one source of defaults; ``configs/pipeline/*.yaml`` and ``configs/callbacks/*.yaml``
are this module's output, checked by a test (``BREVETTI_PIPE_REGEN_CONFIGS=1 make test`` rewrites them).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

__all__ = ["GENERATED_MARK", "component_yaml"]

GENERATED_MARK = "# Generated from the component's Params model: edit the model, then BREVETTI_PIPE_REGEN_CONFIGS=1 make test."


def _scalar(value: Any) -> str:
    """A YAML flow scalar/sequence/mapping for ``value`` (JSON is valid YAML flow style)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value != "???":
        return json.dumps(value) if _needs_quotes(value) else value
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _needs_quotes(text: str) -> bool:
    import yaml

    try:
        return yaml.safe_load(text) != text or text.strip() != text or not text
    except yaml.YAMLError:
        return True


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``annotation`` (``Model`` or ``Model | None``), else None."""
    import typing

    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _fields(model: type[BaseModel], values: dict[str, Any], indent: str) -> list[str]:
    lines = []
    for name, field in model.model_fields.items():
        if field.description:
            lines.append(f"{indent}# {field.description}")
        value = values.get(name)
        sub = _model_of(field.annotation)
        if isinstance(value, dict) and sub is not None:
            lines.append(f"{indent}{name}:")
            lines.extend(_fields(sub, value, indent + "  "))
        else:
            lines.append(f"{indent}{name}: {_scalar(value)}")
    return lines


def component_yaml(type_name: str, params: type[BaseModel], header: str = "",
                   fillers: dict[str, Any] | None = None) -> str:
    """The config file of a registered component: ``type`` plus every parameter with its default
    (required ones as ``???``), each under a comment with its description.

    Args:
        type_name: the registry key (``type:`` value).
        params: the component's ``Params`` model.
        header: comment lines kept above the generated mark (without the mark itself).
        fillers: placeholder values for required fields (written as ``???``).
    """
    required = {k for k, f in params.model_fields.items() if f.is_required()}
    fill = {k: (fillers or {}).get(k, ["x"]) for k in required}
    values = params(**fill).model_dump(mode="json")
    values.update({k: "???" for k in required})
    lines = [line for line in header.splitlines() if line.strip()] + [GENERATED_MARK, f"type: {type_name}"]
    lines += _fields(params, values, "")
    return "\n".join(lines) + "\n"
