"""Command line: ``brevetti-pipe`` (a Hydra app) with brevettiai-style flags on top.

argv -> seed-style flags translated (``--job_id``, ``--api_key``, ``--a.b VALUE``) -> Hydra
(compose, ``--cfg``, ``--help``, ``-m``) -> resolve + validate -> Job.start().
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn, cast

from brevetti_pipe._util import collector

with collector.paused():  # importing makes long-lived objects only (see brevetti_pipe._util.collector)
    import hydra
    from omegaconf import DictConfig

    from brevetti_pipe._util import secrets as _secrets
    from brevetti_pipe._util.console import quiet_tensorflow
    from brevetti_pipe.config._argv import flag_value as _flag_value
    from brevetti_pipe.config._overrides import guard_overrides, hydra_literal
    from brevetti_pipe._util.resources import config_dir
    from brevetti_pipe.errors import BrevettiPipeError, ConfigError, describe, did_you_mean

__all__ = ["console", "guard_overrides", "main", "translate_argv"]

log = logging.getLogger("brevetti_pipe")

#: Hydra's own flags (those taking a value are marked True).
_HYDRA_FLAGS = {
    "--help": False, "-h": False, "--hydra-help": False, "--version": False, "--cfg": True, "-c": True,
    "--resolve": False, "--package": True, "-p": True, "--run": False, "-r": False, "--multirun": False,
    "-m": False, "--shell-completion": False, "-sc": False, "--config-path": True, "-cp": True,
    "--config-name": True, "-cn": True, "--config-dir": True, "-cd": True, "--info": False, "-i": False,
    "--experimental-rerun": True,
}
_INFO_CHOICES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")
_OWN_FLAGS = ("--verbose", "--job_id", "--job-id", "--api_key", "--api-key")
#: when main() started (imports done), for the first job's timings; later runs of a sweep start at their own
_MAIN_STARTED: list[float] = []


def _sections() -> tuple[str, ...]:
    from brevetti_pipe.config import JobConfig

    return tuple(JobConfig.model_fields)


def translate_argv(argv: Sequence[str]) -> tuple[list[str], bool]:
    """Translate brevettiai-style flags into Hydra overrides; returns (argv, verbose).

    ``--job_id X`` -> ``job.id=X``; ``--api_key K`` is removed (kept in memory only);
    ``--a.b VALUE`` (or ``--a.b=VALUE``) -> ``settings.a.b=VALUE`` with JSON values for
    lists/dicts; a first part naming a top-level section (``--job.seed 3``) targets it directly.
    ``--verbose`` shows full tracebacks. Hydra's flags (with their values) are moved after the
    overrides, so they may be given anywhere.

    Raises:
        ConfigError: for a flag without a value, a misspelt Hydra flag (``--multi-run``, ``-multirun``)
            that is not a settings key either, or a value nested deeper than MAX_DEPTH.
    """
    sections = _sections()
    out: list[str] = []
    flags: list[str] = []  # Hydra's flags go after the overrides: argparse takes them anywhere then
    verbose = False
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, inline = arg.partition("=")
        if arg in _HYDRA_FLAGS or name in _HYDRA_FLAGS:
            flags.append(arg)
            takes_next = _HYDRA_FLAGS.get(arg) or (arg in ("--info", "-i") and i + 1 < len(args)
                                                   and args[i + 1] in _INFO_CHOICES)
            if takes_next and i + 1 < len(args):
                flags.append(args[i + 1])
                i += 1
            i += 1
            continue
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 1:
            known = [f for f in _HYDRA_FLAGS if f.startswith("--")]
            raise ConfigError(f"Unknown flag '{arg}'.{did_you_mean('--' + arg.lstrip('-'), known)} Hydra's flags "
                              "are listed by --help; settings flags are --name VALUE.")
        if arg == "--verbose":
            verbose = True
            i += 1
            continue
        if arg.startswith("--") and len(arg) > 2:
            key = name[2:]
            _refuse_misspelt_flag(name, args)
            if eq:
                value = inline
            elif i + 1 < len(args):
                value = args[i + 1]
                i += 1
            else:
                raise ConfigError(f"Flag {arg} needs a value. Usage: {arg} VALUE")
            _refuse_deep(f"Flag {name}", value)
            if key in ("api_key", "api-key"):
                _secrets.set_api_key(value)
            elif key in ("job_id", "job-id"):
                out.append(f"job.id={hydra_literal(value)}")
            else:
                target = key if key.split(".")[0] in sections else f"settings.{key}"
                out.append(f"{target}={_flag_value(value)}")
            i += 1
            continue
        _refuse_deep(f"Override '{name}'", inline)
        out.append(arg)
        i += 1
    return [*out, *flags], verbose


def _refuse_deep(what: str, text: str) -> None:
    """Refuse a value nested deeper than MAX_DEPTH before a recursive parser (JSON, Hydra's grammar) meets it."""
    from brevetti_pipe.config._compose import MAX_DEPTH

    depth = deepest = 0
    quote = ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]})":
            depth -= 1
    if deepest > MAX_DEPTH:
        raise ConfigError(f"{what} is nested {deepest} levels deep; allowed: at most {MAX_DEPTH} levels.")


def _split_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(overrides, config folders named by --config-dir/--config-path) of a Hydra command line."""
    overrides: list[str] = []
    folders: list[str] = []
    i = 0
    while i < len(argv):
        name, eq, inline = argv[i].partition("=")
        if name in _HYDRA_FLAGS:
            value = inline if eq else (argv[i + 1] if _HYDRA_FLAGS[name] and i + 1 < len(argv) else None)
            if name in ("--config-dir", "-cd", "--config-path", "-cp") and value:
                folders.append(value)
            i += 2 if _HYDRA_FLAGS[name] and not eq else 1
            continue
        if not argv[i].startswith("-"):
            overrides.append(argv[i])
        i += 1
    return overrides, folders


def _refuse_misspelt_flag(name: str, argv: Sequence[str]) -> None:
    """``--multi-run`` would become ``settings.multi-run`` and swallow the next argument: refuse a flag
    that is close to one of Hydra's (or ours) unless it names a key of the composed settings."""
    flags = [f for f in (*_HYDRA_FLAGS, *_OWN_FLAGS) if f.startswith("--")]
    close = difflib.get_close_matches(name.replace("_", "-"), [f.replace("_", "-") for f in flags], n=1, cutoff=0.85)
    if not close or name in _OWN_FLAGS:
        return
    from omegaconf import DictConfig, OmegaConf

    from brevetti_pipe.config import compose

    overrides, folders = _split_args(argv)
    try:
        cfg, _, _ = compose([o for o in overrides if not o.startswith("hydra")], config_dir=folders[0] if folders else None)
        parent, _, leaf = f"settings.{name[2:]}".rpartition(".")
        node = OmegaConf.select(cfg, parent)
        if isinstance(node, DictConfig) and leaf in node:
            return
    except Exception:  # a command line that does not compose cannot make the flag a setting
        pass
    suggestion = flags[[f.replace("_", "-") for f in flags].index(close[0])]
    raise ConfigError(
        f"Unknown flag '{name}'. Did you mean '{suggestion}'? Settings flags (--name VALUE) must name a key of "
        "settings; Hydra's flags are listed by --help."
    )


_RUN_ERRORS: list[BaseException] = []
_VERBOSE = [False]  # --verbose of the running command line


def _redact_hydra_outputs(output_dir: str | None, subdir: str | None) -> None:
    """Hydra saved the config and overrides (and a sweep's multirun.yaml) before the job started; scrub
    secrets from them."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    paths = []
    if output_dir and subdir and os.path.isdir(folder := os.path.join(output_dir, subdir)):
        paths = [os.path.join(folder, n) for n in os.listdir(folder) if n.endswith((".yaml", ".yml"))]
    hc = HydraConfig.get() if HydraConfig.initialized() else None
    if hc is not None and hc.mode == RunMode.MULTIRUN:
        paths.append(os.path.join(hc.sweep.dir, "multirun.yaml"))
    for path in filter(os.path.isfile, paths):
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        clean = _secrets.redact_config_text(text)
        if clean != text:
            tmp = f"{path}.{os.getpid()}.tmp"  # runs of a parallel sweep scrub the same multirun.yaml
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(clean)
            os.replace(tmp, path)


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> Any:
    from hydra.core.hydra_config import HydraConfig

    from brevetti_pipe.platform import resolve_config
    from brevetti_pipe.run.job import Job

    from hydra.types import RunMode

    from omegaconf import OmegaConf

    from brevetti_pipe.cli._links import link_hydra_dir
    from brevetti_pipe.cli.sweep import write_run_summary

    _secrets.install_log_redaction()
    quiet_tensorflow(_VERBOSE[0])  # again here: launchers run jobs in other processes
    hc = HydraConfig.get()
    first = bool(_MAIN_STARTED)
    main_at = _MAIN_STARTED.pop() if first else time.time()
    task = [str(o) for o in cast("list[Any]", OmegaConf.to_container(hc.overrides.task, resolve=False))]
    record: dict[str, Any] = {"overrides": task, "status": "failed", "metrics": {}}
    job = None
    try:
        _redact_hydra_outputs(hc.runtime.output_dir, hc.output_subdir)
        config = resolve_config(cfg, task, list(hc.runtime.choices.keys()))
        job = Job.from_config(config)
        link_hydra_dir(job, hc.runtime.output_dir)
        if first:
            from brevetti_pipe._util.timing import process_started

            started = process_started()
            if started is not None:
                job.timings.mark("process_start", started)
        job.timings.mark("main", main_at)
        record.update(job_id=job.id, artifacts=job.artifacts_url)
        collector.resume(freeze=True)  # what start-up made lives as long as the command; the job's garbage is collected
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

    if "Could not find" in str(exc):  # a missing group option: Hydra's text names it and its options
        return translate_hydra_error(exc)
    overrides, folders = _split_args(argv)
    try:
        compose([o for o in overrides if not o.startswith("hydra.")], config_dir=folders[0] if folders else None)
    except ConfigError as err:
        return err
    except Exception:
        pass
    return translate_hydra_error(exc)


def _fail(message: str, code: int) -> None:
    print(f"brevetti-pipe: error: {_secrets.redact(message)}", file=sys.stderr)
    sys.exit(code)


def console() -> None:
    """``brevetti-pipe`` console script: :func:`main`, then a quick exit (see :mod:`brevetti_pipe._util.exit`)."""
    from brevetti_pipe._util.exit import exit_after

    exit_after(main)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``brevetti-pipe`` (``argv``: the arguments, default ``sys.argv[1:]``)."""
    _MAIN_STARTED[:] = [time.time()]
    collector.pause()  # until the job starts: composing and validating make no garbage worth collecting
    try:
        _main(argv)
    finally:
        collector.resume()


def _main(argv: Sequence[str] | None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    user_full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    try:
        translated, verbose = translate_argv(args)
    except ConfigError as exc:
        _fail(str(exc), 2)
        return
    # before the run step is resolved: a user's module may import keras (and so TensorFlow) at the top
    quiet_tensorflow(verbose)  # TensorFlow's start-up lines stay off the console unless --verbose
    try:
        translated = guard_overrides(translated)  # secrets masked first: a flag error may quote an override
        translated = _upgrade_added_key_overrides(translated)
        _check_hydra_flags(translated)
        _check_config_folders(translated)
        _prepare_settings(translated)
    except ConfigError as exc:
        _fail(str(exc), 2)
        return
    _VERBOSE[0] = verbose
    os.environ["HYDRA_FULL_ERROR"] = "1"  # errors reach us; we print one line unless asked for more
    sys.argv = [sys.argv[0] if sys.argv else "brevetti-pipe", *translated]
    _RUN_ERRORS.clear()
    from brevetti_pipe.cli.sweep import LAST_SWEEP

    LAST_SWEEP.clear()
    # --help prints only the help template (secrets on the command line are already masked above); the
    # config-text masking would rewrite its usage line's ``key=value``
    helping = any(a in ("--help", "-h", "--hydra-help") for a in translated)
    with contextlib.nullcontext() if helping else _secrets.redacting_streams():
        _run_hydra(verbose or user_full_error, translated)


_NO_COMPOSE_FLAGS = ("--help", "-h", "--hydra-help", "--version", "--shell-completion", "-sc")


def _upgrade_added_key_overrides(argv: list[str]) -> list[str]:
    from brevetti_pipe.run._settings import upgrade_added_key_overrides

    return upgrade_added_key_overrides(argv)


def _prepare_settings(argv: list[str]) -> None:
    """Install the run step's settings defaults (lowest precedence) before Hydra composes; not for --help."""
    if any(a in _NO_COMPOSE_FLAGS for a in argv):
        return
    from brevetti_pipe.run._settings import prepare_settings

    overrides, folders = _split_args(argv)
    name = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--config-name", "-cn")), None)
    name = name or next((a.partition("=")[2] for a in argv if a.startswith(("--config-name=", "-cn="))), None)
    prepare_settings(overrides, config_dir=folders[0] if folders else None, config_name=name or "config")


def _check_hydra_flags(argv: list[str]) -> None:
    """Parse with Hydra's own argument parser first, so a bad flag value is one line instead of argparse's usage."""
    from hydra._internal.utils import get_args_parser

    if "--version" in argv:  # argparse prints the version and exits itself
        return
    parser = get_args_parser()

    def error(message: str) -> NoReturn:
        raise ConfigError(f"{message[0].upper()}{message[1:]}. Hydra's flags are listed by --help.")

    parser.error = error  # type: ignore[method-assign]
    args = parser.parse_args(argv)
    modes = [f"--{m.replace('_', '-')}" for m in ("run", "multirun", "cfg", "info", "shell_completion") if getattr(args, m)]
    if len(modes) > 1:
        raise ConfigError(f"Flags {' and '.join(modes)} cannot be combined; give one of --run, --multirun, --cfg, "
                          "--info and --shell-completion.")


def _check_config_folders(argv: list[str]) -> None:
    """Refuse config bombs (anchor expansion, deep nesting) in the user's config folders before Hydra loads them."""
    from brevetti_pipe.config import check_config_folder

    overrides, folders = _split_args(argv)
    for arg in overrides:
        key, _, value = arg.lstrip("+").partition("=")
        if key.startswith("hydra.searchpath"):  # Hydra reads an entry without a scheme as a folder too
            entries = (e.strip().strip("'\"") for e in value.strip().strip("[]").split(","))
            folders += [e for e in entries if e and not e.startswith("pkg://")]
    for folder in folders:
        check_config_folder(folder)


def _run_hydra(verbose: bool, translated: list[str]) -> None:
    from brevetti_pipe.cli.sweep import LAST_SWEEP

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
        if verbose:
            raise
        from brevetti_pipe.config._compose import defaults_loop

        exc = defaults_loop(exc) or exc
        if isinstance(exc, ConfigError):
            _fail(str(exc), 2)
        if isinstance(exc, BrevettiPipeError):
            _fail(str(exc), 1)
        module = type(exc).__module__
        if module.startswith(("hydra", "omegaconf")):
            _fail(str(_explain_composition_error(exc, translated)), 2)
        _fail(f"{describe(exc)} (rerun with --verbose for the traceback)", 1)
