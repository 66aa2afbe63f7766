"""Command line: ``brevetti-pipe`` (a Hydra app) with brevettiai-style flags on top.

argv -> seed-style flags translated (``--job_id``, ``--api_key``, ``--a.b VALUE``) -> Hydra
(compose, ``--cfg``, ``--help``, ``-m``) -> resolve + validate -> Job.start().
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import hydra
from omegaconf import DictConfig

from brevetti_pipe import _secrets
from brevetti_pipe._resources import config_dir
from brevetti_pipe.errors import BrevettiPipeError, ConfigError, describe

__all__ = ["main", "translate_argv"]

log = logging.getLogger("brevetti_pipe")

#: Hydra's own flags (those taking a value are marked True).
_HYDRA_FLAGS = {
    "--help": False, "-h": False, "--hydra-help": False, "--version": False, "--cfg": True, "-c": True,
    "--resolve": False, "--package": True, "-p": True, "--run": False, "-r": False, "--multirun": False,
    "-m": False, "--shell-completion": False, "-sc": False, "--config-path": True, "-cp": True,
    "--config-name": True, "-cn": True, "--config-dir": True, "-cd": True, "--info": False, "-i": False,
    "--experimental-rerun": True,
}
_TOP_LEVEL = ("job", "platform", "datasets", "split", "sampler", "data", "pipeline", "callbacks", "settings")
_PLAIN = re.compile(r"^[A-Za-z0-9_./:\-+]*$")


def _hydra_literal(value: Any) -> str:
    """Render a Python value in Hydra's override grammar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ",".join(_hydra_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(k)):
                raise ConfigError(f"Dict keys in flag values must be identifiers; got {k!r}")
            items.append(f"{k}:{_hydra_literal(v)}")
        return "{" + ",".join(items) + "}"
    text = str(value)
    if text and _PLAIN.match(text) and text.lower() not in ("null", "true", "false"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _flag_value(raw: str) -> str:
    try:
        parsed = json.loads(raw)
    except (json.JSONDecodeError, ValueError):
        return _hydra_literal(raw)
    if isinstance(parsed, (dict, list)):
        return _hydra_literal(parsed)
    return raw if isinstance(parsed, (int, float, bool)) or parsed is None else _hydra_literal(parsed)


def translate_argv(argv: Sequence[str]) -> tuple[list[str], bool]:
    """Translate brevettiai-style flags into Hydra overrides; returns (argv, verbose).

    ``--job_id X`` -> ``job.id=X``; ``--api_key K`` is removed (kept in memory only);
    ``--a.b VALUE`` (or ``--a.b=VALUE``) -> ``settings.a.b=VALUE`` with JSON values for
    lists/dicts; a first part naming a top-level section (``--job.seed 3``) targets it directly.
    ``--verbose`` shows full tracebacks.
    """
    out: list[str] = []
    verbose = False
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, inline = arg.partition("=")
        if arg in _HYDRA_FLAGS or name in _HYDRA_FLAGS:
            out.append(arg)
            if _HYDRA_FLAGS.get(arg) and i + 1 < len(args):
                out.append(args[i + 1])
                i += 1
            i += 1
            continue
        if arg == "--verbose":
            verbose = True
            i += 1
            continue
        if arg.startswith("--") and len(arg) > 2:
            key = name[2:]
            if eq:
                value = inline
            elif i + 1 < len(args):
                value = args[i + 1]
                i += 1
            else:
                raise ConfigError(f"Flag {arg} needs a value. Usage: {arg} VALUE")
            if key in ("api_key", "api-key"):
                _secrets.set_api_key(value)
            elif key in ("job_id", "job-id"):
                out.append(f"job.id={_hydra_literal(value)}")
            else:
                target = key if key.split(".")[0] in _TOP_LEVEL else f"settings.{key}"
                out.append(f"{target}={_flag_value(value)}")
            i += 1
            continue
        out.append(arg)
        i += 1
    return out, verbose


_RUN_ERRORS: list[BaseException] = []


def _redact_hydra_outputs(output_dir: str | None, subdir: str | None) -> None:
    """Hydra saved the config and overrides before the job started; scrub secrets from them."""
    if not output_dir or not subdir:
        return
    folder = os.path.join(output_dir, subdir)
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.endswith((".yaml", ".yml")) and os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
            clean = _secrets.redact_config_text(text)
            if clean != text:
                tmp = f"{path}.tmp"
                with open(tmp, "w", encoding="utf-8") as fh:
                    fh.write(clean)
                os.replace(tmp, path)


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> Any:
    from hydra.core.hydra_config import HydraConfig

    from brevetti_pipe.config import resolve_config
    from brevetti_pipe.job import Job

    from hydra.types import RunMode

    from omegaconf import OmegaConf

    from brevetti_pipe.sweep import write_run_summary

    _secrets.install_log_redaction()
    hc = HydraConfig.get()
    task = [str(o) for o in OmegaConf.to_container(hc.overrides.task, resolve=False)]
    record: dict[str, Any] = {"overrides": task, "status": "failed", "metrics": {}}
    job = None
    try:
        config = resolve_config(cfg, task, list(hc.runtime.choices.keys()))
        _redact_hydra_outputs(hc.runtime.output_dir, hc.output_subdir)
        job = Job.from_config(config)
        record.update(job_id=job.id, artifacts=job.artifacts_url)
        job.start()
        record.update(status="completed", metrics=dict(job.metrics), report=job.artifact_path("report.html"))
    except BaseException as exc:
        record["error"] = _secrets.redact(describe(exc))
        if job is not None:
            record.update(metrics=dict(job.metrics), report=job.artifact_path("report.html"))
        if hc.mode == RunMode.MULTIRUN and not isinstance(exc, KeyboardInterrupt):
            # one failed run must not stop the sweep: record it, let the others run
            write_run_summary(hc.runtime.output_dir, record)
            log.error("Run %s failed: %s", hc.job.num, record["error"])
            return None
        _RUN_ERRORS.append(exc)  # raised by main() after Hydra returns, without Hydra's banner
        return None
    finally:
        if hc.mode == RunMode.MULTIRUN and record["status"] == "completed":
            write_run_summary(hc.runtime.output_dir, record)
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(job.metrics.items()))
    print(f"Job {job.id} completed. Metrics: {metrics or 'none'}")
    print(f"Artifacts: {_secrets.redact(job.artifacts_url)}")
    objective = cfg.get("sweep", {}).get("objective") if isinstance(cfg.get("sweep"), DictConfig) else None
    if objective:  # sweepers such as Optuna minimise/maximise one number
        return float(job.metrics[str(objective)])
    return dict(job.metrics)


def _explain_composition_error(exc: BaseException, argv: list[str]) -> ConfigError:
    """Recompose with the compose API to name the bad key with suggestions (Hydra's own text as fallback)."""
    from brevetti_pipe.config import compose, translate_hydra_error

    overrides, config_dir, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        name, eq, inline = arg.partition("=")
        if name in ("--config-dir", "-cd"):
            config_dir = inline if eq else (argv[i + 1] if i + 1 < len(argv) else None)
            i += 1 if eq else 2
            continue
        if name in _HYDRA_FLAGS:
            i += 2 if _HYDRA_FLAGS[name] and not eq else 1
            continue
        overrides.append(arg)
        i += 1
    try:
        compose([o for o in overrides if not o.startswith("hydra.")], config_dir=config_dir)
    except ConfigError as err:
        return err
    except Exception:
        pass
    return translate_hydra_error(exc)


def _fail(message: str, code: int) -> None:
    print(f"brevetti-pipe: error: {_secrets.redact(message)}", file=sys.stderr)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point of ``brevetti-pipe``."""
    args = list(sys.argv[1:] if argv is None else argv)
    user_full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    try:
        translated, verbose = translate_argv(args)
    except ConfigError as exc:
        _fail(str(exc), 2)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # errors reach us; we print one line unless asked for more
    sys.argv = [sys.argv[0] if sys.argv else "brevetti-pipe", *translated]
    _RUN_ERRORS.clear()
    from brevetti_pipe.sweep import LAST_SWEEP

    LAST_SWEEP.clear()
    try:
        _hydra_main()
        if _RUN_ERRORS:
            raise _RUN_ERRORS.pop()
        if LAST_SWEEP.get("failed"):
            _fail(f"{LAST_SWEEP['failed']} of {LAST_SWEEP['runs']} runs failed; see {LAST_SWEEP['dir']}/sweep.csv", 1)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("brevetti-pipe: interrupted", file=sys.stderr)
        sys.exit(130)
    except BaseException as exc:
        if verbose or user_full_error:
            raise
        from brevetti_pipe.config import translate_hydra_error

        if isinstance(exc, ConfigError):
            _fail(str(exc), 2)
        if isinstance(exc, BrevettiPipeError):
            _fail(str(exc), 1)
        module = type(exc).__module__
        if module.startswith(("hydra", "omegaconf")):
            _fail(str(_explain_composition_error(exc, translated)), 2)
        _fail(f"{describe(exc)} (rerun with --verbose for the traceback)", 1)
