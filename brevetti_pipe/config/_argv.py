"""Seed-style flags (``--job_id``, ``--api_key``, ``--a.b VALUE``): argv -> Hydra overrides.

Shared by the command line (``cli.translate_argv``) and ``Job.init`` (which reads ``sys.argv`` as
brevettiai's ``Job.init`` did).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterator, Sequence

from brevetti_pipe.config._overrides import hydra_literal

__all__ = ["flag_value", "init_arguments", "init_overrides", "seed_flags"]

log = logging.getLogger("brevetti_pipe")

JOB_ID_FLAGS = ("job_id", "job-id")
API_KEY_FLAGS = ("api_key", "api-key")


def flag_value(raw: str) -> str:
    """A flag's text as a Hydra override value: JSON lists/dicts become Hydra literals, numbers,
    booleans and null stay as they are, anything else is a quoted string."""
    try:
        parsed = json.loads(raw)
    except (json.JSONDecodeError, ValueError):
        return hydra_literal(raw)
    if isinstance(parsed, (dict, list)):
        return hydra_literal(parsed)
    return raw if isinstance(parsed, (int, float, bool)) or parsed is None else hydra_literal(parsed)


def seed_flags(argv: Sequence[str]) -> Iterator[tuple[str, str | None, int]]:
    """``(key, value, position)`` for every ``--key VALUE`` / ``--key=VALUE`` in ``argv``; value None
    when a flag has no value. Arguments that are not ``--`` flags (``-f kernel.json``) are skipped."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and len(arg) > 2:
            name, eq, inline = arg.partition("=")
            if eq:
                yield name[2:], inline, i
            elif i + 1 < len(argv) and not (argv[i + 1].startswith("--") and len(argv[i + 1]) > 2):
                yield name[2:], argv[i + 1], i
                i += 1
            else:
                yield name[2:], None, i
        i += 1


def _override_key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def init_overrides(
    argv: Sequence[str], settings_fields: Collection[str], sections: Collection[str], explicit: Sequence[str] = (),
    settings_class: str = "JobSettings",
) -> tuple[list[str], str | None, str | None]:
    """The seed-style flags of ``argv`` that ``Job.init`` takes: ``(overrides, job_id, api_key)``.

    ``--job_id``/``--api_key``; ``--a.b VALUE`` where ``a`` is a field of the job's settings
    (``++settings.a.b=VALUE``: validated by the settings model, which refuses unknown keys) or a
    top-level section (``--job.seed 3``). Other arguments are not ours (a notebook kernel's
    ``-f file.json``, a test runner's flags) and are left alone; an unknown ``--name`` is logged
    with how to declare it. Keys that ``explicit`` overrides set are skipped: explicit arguments win.
    """
    taken = {_override_key(o) for o in explicit}
    out: list[str] = []
    job_id = api_key = None
    for key, value, _ in seed_flags(argv):
        if value is None:
            continue
        if key in JOB_ID_FLAGS:
            job_id = value
            continue
        if key in API_KEY_FLAGS:
            api_key = value
            continue
        head = key.split(".")[0]
        if head in settings_fields:
            target, prefix = f"settings.{key}", "++"
        elif head in sections and "." in key:
            target, prefix = key, ""
        else:
            log.warning(
                "Job.init: ignoring --%s from sys.argv: '%s' is not a field of %s. To set it from the command "
                "line, declare it in your JobSettings subclass (%s: int = 0) and type the job's settings "
                "with it; Job.init(argv=[]) reads no flags",
                key, head, settings_class, head,
            )
            continue
        if target in taken or any(t == target or target.startswith(t + ".") for t in taken):
            continue
        out.append(f"{prefix}{target}={flag_value(value)}")
    return out, job_id, api_key


def init_arguments(
    argv: Sequence[str] | None, settings_model: type, job_id: str | None, api_key: str | None,
    overrides: Sequence[str],
) -> tuple[str | None, str | None, list[str]]:
    """``Job.init``'s ``(job_id, api_key, overrides)`` with the seed-style flags of ``argv`` (default:
    ``sys.argv[1:]``; ``[]`` reads none) folded in below the explicit arguments."""
    import sys

    from brevetti_pipe.config._schema import JobConfig

    args = list(sys.argv[1:] if argv is None else argv)
    fields = getattr(settings_model, "model_fields", {})
    flags, argv_job_id, argv_api_key = init_overrides(
        args, fields, JobConfig.model_fields, overrides, getattr(settings_model, "__name__", "JobSettings"))
    return job_id or argv_job_id, api_key or argv_api_key, [*flags, *overrides]
