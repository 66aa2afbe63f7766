"""Run layer: a job's life: lock, rerun clean-up, running -> completed | failed, signals, scratch removal.

Over 400 lines on purpose: start, fail and complete share the ordering rules that keep a trained model
(the lease, the kept-model fallback, the output.json writes and the signal handlers); split apart, each
step would have to re-derive where the others left the job.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from brevetti_pipe._util import secrets as _secrets
from brevetti_pipe.config import JobConfig
from brevetti_pipe.errors import ExportError, JobLockedError, StorageError, describe
from brevetti_pipe.platform import layout
from brevetti_pipe.reporting import CallbackList, JobView, Progress
from brevetti_pipe.reporting._output import clean_metrics
from brevetti_pipe.reporting._output import output_document as _document
from brevetti_pipe.run._kept import KeptFiles
from brevetti_pipe.run._lease import JobLease
from brevetti_pipe.run.context import Scratch
from brevetti_pipe.run.export import archive_model, check_export_formats, environment, upload_model
from brevetti_pipe.storage import IoTools

if TYPE_CHECKING:
    import pandas as pd

    from brevetti_pipe.data.selection import SampleSelection
    from brevetti_pipe.run.evaluation import Evaluation

__all__ = [
    "JobInterrupted", "JobState", "add_metrics", "begin", "complete", "export_model", "fail", "output_document", "start",
    "update_output", "write_output",
]

log = logging.getLogger(__name__)


class JobInterrupted(KeyboardInterrupt):
    """Raised inside a running job on SIGTERM/SIGINT so it can be marked failed before exit."""


class JobState(Protocol):
    """What the lifecycle reads and writes of a job (the :class:`~brevetti_pipe.run.job.Job` has it all)."""

    id: str
    config: JobConfig
    io: IoTools
    callbacks: CallbackList
    scratch: Scratch
    lease: JobLease | None
    status: str
    error: str | None
    attempt: int
    started_at: str | None
    ended_at: str | None
    model_path: str | None
    kept_model: str | None
    trained: bool
    fitted: Any
    exported: dict[str, Any]
    evaluations: dict[str, Evaluation]
    output_error: BaseException | None
    output_warned: bool
    weights_sha256: str | None

    @property
    def samples(self) -> pd.DataFrame | None: ...

    @property
    def classes(self) -> list[str]: ...

    @property
    def kept(self) -> KeptFiles: ...

    @property
    def view(self) -> JobView: ...

    @property
    def is_chief(self) -> bool: ...

    @property
    def job_url(self) -> str: ...

    @property
    def artifacts_url(self) -> str: ...

    @property
    def strategy(self) -> Any: ...

    def artifact_path(self, *parts: str, dir: bool = False) -> str: ...

    name: str
    seed: int
    settings: Any
    metrics: dict[str, float]
    metadata: dict[str, Any]
    data: SampleSelection

    @property
    def bad_samples(self) -> int: ...

    def temp_path(self, *parts: str, dir: bool = False) -> str: ...

    def on_artifact(self, path: str) -> None: ...

    def upload_job_output(self) -> str: ...

    def output(self) -> dict[str, Any]: ...

    def export_model(self, model: Any, name: str = ...) -> str: ...

    def seed_frameworks(self) -> None: ...

    def run(self) -> Any: ...

    def mark_phase(self, name: str) -> None: ...

    def phase_timings(self) -> dict[str, float]: ...


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def start(job: JobState, complete_after: bool = True) -> Any:
    """Lock, mark running, run the job's ``run`` step and complete it; a failure or a signal marks it failed."""
    begin(job)
    log.info("Job %s started; artifacts at %s", job.id, _secrets.redact(job.artifacts_url))
    previous = _install_signal_handlers()
    try:
        if job.config.distribution.strategy != "default":
            _ = job.strategy  # multi-worker strategies must exist before other TensorFlow work
        job.callbacks.on_job_start(job=job.view)
        check_export_formats(job.config.export.formats)  # a missing extra fails before training, not after
        if job.config.run is not None or "tensorflow" in sys.modules:
            job.seed_frameworks()
        job.mark_phase("run_start")
        result = job.run()
        job.mark_phase("run_end")
        if complete_after:
            complete(job, result)
        return result
    except BaseException as exc:
        if job.status == "running":
            fail(job, exc)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def begin(job: JobState) -> None:
    """Take the job's lock, clean up after an interrupted run, upload a model an earlier run kept,
    start a fresh progress file for this attempt and write output.json (running)."""
    if job.is_chief:
        lease = JobLease(job.io, layout.lock_url(job.job_url), job.id)
        lease.acquire()  # before anything is written: a refused run changes nothing
        job.lease = lease
    try:
        job.scratch.run_owns()  # end() removes or keeps the scratch folder
        job.attempt = _previous_attempts(job) + 1
        _tidy(job, "removing temp files an interrupted run left", _remove_leftover_temp_files)
        if job.is_chief:
            _upload_kept_model(job)
        job.status = "running"
        job.started_at = _now()
        job.upload_job_output()
        if job.attempt > 1:
            _tidy(job, "setting the earlier progress aside", _set_aside_progress)
    except BaseException as exc:
        job.status, job.error = "failed", _secrets.redact(describe(exc))
        end(job)
        raise


def complete(job: JobState, model: Any = None) -> str | None:
    """Export ``model``, mark the job completed, write output.json and run the end hooks."""
    job.trained = True
    try:
        if job.lease is not None:
            job.lease.check()  # a run that lost its lock must not write over its successor's
        if model is not None and job.weights_sha256 is None and hasattr(model, "weights"):
            from brevetti_pipe.run.export import weights_sha256

            job.weights_sha256 = weights_sha256(model)
        if model is not None:
            job.model_path = job.export_model(model)
            job.fitted = None  # uploaded
        job.status = "completed"
        job.ended_at = _now()
        job.mark_phase("completed")
        job.upload_job_output()
    except BaseException as exc:
        fail(job, exc)
    if job.is_chief and job.config.training.resume:
        _tidy(job, "removing the resume checkpoint", _remove_checkpoint)
    try:
        job.callbacks.on_job_end(job=job.view, status="completed", error=None)
        log.info("Job %s completed. Output: %s", job.id, _secrets.redact(job.artifact_path("output.json")))
    finally:
        end(job)
    return job.model_path


def fail(job: JobState, exc: BaseException) -> NoReturn:
    """Mark the job failed, record it and end it; raise ``exc``, or an error that also says
    where the final output.json is kept when it could not be written."""
    if isinstance(exc, KeyboardInterrupt):
        reason = f"interrupted ({exc})" if str(exc) else "interrupted"
    else:
        reason = describe(exc)
    job.status = "failed"
    job.error = _secrets.redact(reason)
    job.ended_at = _now()
    _keep_fitted_model(job)
    failure = exc
    try:
        if job.lease is not None and job.lease.lost:
            raise job.lease.lost_error()
        if exc is job.output_error:
            raise exc
        job.upload_job_output()
    except JobLockedError:
        pass  # the job's artifacts are its new owner's now: write nothing there
    except Exception as write_error:
        kept = job.kept.keep_output(job.output())
        try:  # an output.json saying "running" would outlive this process
            _remove(job.io, job.artifact_path("output.json"))
        except Exception:
            pass
        note = f"The final output.json is kept at {kept}"
        if write_error is not exc:
            note = f"output.json could not be written either ({describe(write_error)}). {note}"
        log.error("%s", _secrets.redact(note))
        if not isinstance(exc, KeyboardInterrupt):
            failure = StorageError(_secrets.redact(f"{job.error}. {note}"))
    try:
        job.callbacks.on_job_end(job=job.view, status="failed", error=job.error)
    except Exception as cb_error:
        log.error("A callback failed while ending the failed job: %s", cb_error)
    log.error("Job %s failed: %s", job.id, job.error)
    end(job)
    if failure is exc:
        raise exc
    raise failure from exc


def _keep_fitted_model(job: JobState) -> None:
    """Keep the model trained by this run (see :meth:`Job.remember_model`) locally when the job fails
    before uploading it."""
    if job.fitted is None or job.kept_model is not None:
        return
    job.trained = True
    try:
        archive = _archive(job, job.fitted, "model.tar.gz")
        job.kept_model = job.kept.keep_model(str(archive), "model.tar.gz", job.scratch.owned)
    except Exception as exc:
        log.error("Could not keep the trained model of job %s: %s", job.id, exc)
        return
    job.error = f"{job.error}. The trained model is kept at {job.kept_model}; rerun job.id={job.id} to upload it"
    log.error("The trained model of the failed job %s is kept at %s; rerun job.id=%s to upload it",
              job.id, job.kept_model, job.id)


def end(job: JobState) -> None:
    """Release the job's lock and remove its scratch folder (kept when a trained job failed)."""
    if job.lease is not None:
        job.lease.release()
        job.lease = None
    job.scratch.run_owns()  # decided here, also for a job completed without start()
    if job.status == "failed" and job.trained and job.scratch.owned:
        log.warning("Keeping the scratch folder %s of the failed job %s", job.scratch.owned, job.id)
        try:
            job.kept.note(scratch=job.scratch.owned)  # the next run of this job id removes it
        except OSError:
            pass
        return
    job.scratch.remove()


def output_document(job: JobState) -> dict[str, Any]:
    """The output.json document of ``job`` (secrets redacted)."""
    return _document(
        job={"id": job.id, "name": job.name, "seed": job.seed, "run": job.config.run}, status=job.status,
        settings=job.settings.model_dump(mode="json"), config=job.config.model_dump(mode="json"),
        metrics=job.metrics, model_path=job.model_path, kept_model=job.kept_model, attempt=job.attempt,
        environment=environment(), error=job.error, bad_samples=job.bad_samples,
        started_at=job.started_at, ended_at=job.ended_at, hydra_dir=getattr(job, "hydra_dir", None),
        weights_sha256=job.exported.get("weights_sha256") or job.weights_sha256,
        export=job.exported.get("export") or {}, operating_point=job.exported.get("operating_point"),
        timings=job.phase_timings(),
    )


def add_metrics(job: JobState, metrics: Mapping[str, Any]) -> None:
    """Record final metrics (non-finite ones too, null in output.json), tell the callbacks of the
    finite ones and rewrite output.json (best effort: the final write carries every metric).

    Raises:
        ValueError: for a value that is not a number (text, None).
    """
    clean = clean_metrics(metrics)
    job.metrics.update(clean)
    for name, value in clean.items():
        if math.isfinite(value):
            job.callbacks.on_metric(job=job.view, name=name, value=value)
    update_output(job)


def update_output(job: JobState) -> None:
    """Rewrite output.json while the job runs; a failure is warned about once and training goes on.
    A run that lost its lock writes nothing."""
    if job.lease is not None and job.lease.lost:
        return
    try:
        job.io.best_effort().write_file(job.artifact_path("output.json"),
                                        json.dumps(job.output(), indent=2, allow_nan=False))
    except Exception as exc:
        if not job.output_warned:
            job.output_warned = True
            log.warning("Could not update output.json (%s); the job goes on and writes it at its end",
                        _secrets.redact(describe(exc)))


def write_output(job: JobState) -> str:
    """Write artifacts/output.json atomically and return its URL (failures raise)."""
    url = job.artifact_path("output.json")
    try:
        job.io.write_file(url, json.dumps(job.output(), indent=2, allow_nan=False))
    except Exception as exc:
        job.output_error = exc  # a failing job does not wait out the same write's retries again
        raise
    return url


def export_model(job: JobState, model: Any, name: str) -> str:
    """Export ``model`` (every format of ``export.formats``, the operating point, parity with the
    trained model) into the archive ``name`` and upload it to the artifacts (kept locally when the
    upload fails); returns ``name``.

    Raises:
        ExportError: a format's outputs differ from the trained model's beyond ``export.tolerance``
            (or a label differs); the archive is kept as artifacts/model.unverified.tar.gz (or
            locally when that upload fails too) and the message says where.
    """
    from brevetti_pipe.run.deployment import UNVERIFIED, export_archive

    if job.fitted is None and hasattr(model, "save") and hasattr(model, "weights"):
        job.fitted = model  # a failing export (a converter error, say) keeps the model, see fail()
    result = export_archive(job, model, Path(job.temp_path("export", dir=True)), Path(job.temp_path(name)), _metadata(job))
    job.exported = result.output_fields()
    if result.failures:
        return _keep_unverified(job, result.archive, UNVERIFIED, result.failures)
    url = job.artifact_path(name)

    def kept(path: str) -> None:
        job.kept_model = path

    upload_model(job.io, result.archive, url, kept=job.kept, name=name, scratch=job.scratch.owned, job_id=job.id, on_kept=kept)
    job.on_artifact(url)
    return name


def _keep_unverified(job: JobState, archive: Path, name: str, failures: list[str]) -> str:
    """Upload an archive whose formats failed parity as artifacts/``name`` (locally kept if that fails too)
    and raise the ExportError naming the formats and where the model is."""
    url = job.artifact_path(name)
    where = _secrets.redact(url)

    def kept(path: str) -> None:
        job.kept_model = path

    try:
        upload_model(job.io, archive, url, kept=job.kept, name=name, scratch=job.scratch.owned, job_id=job.id, on_kept=kept)
        job.on_artifact(url)
        job.kept_model = name
    except StorageError:
        where = str(job.kept_model)
    job.fitted = None  # it is kept: a failure must not archive it again
    raise ExportError(
        f"Export parity failed for {'; '.join(failures)}. The trained model is kept (unverified) at {where}; "
        "the export figures are under 'export' in output.json"
    )


def _metadata(job: JobState) -> dict[str, Any]:
    return {
        "job_id": job.id, "name": job.name, "classes": job.data.known_classes,
        "pipeline": {n: s.model_dump(mode="json") for n, s in job.config.pipeline.items()},
        "brevetti_pipe": environment()["packages"].get("brevetti_pipe"), **job.metadata,
    }


def _archive(job: JobState, model: Any, name: str) -> Path:
    """The local model archive ``name`` of ``model`` (a Keras model or a path) in the scratch folder:
    the Keras format and metadata only (a failed job keeps its model this way, quickly)."""
    return archive_model(model, Path(job.temp_path("export", dir=True)), Path(job.temp_path(name)), _metadata(job))


def _remove(io: IoTools, url: str) -> None:
    fs, path = io.fs(url)
    io.best_effort().call(lambda: fs.rm_file(path), url)


def _tidy(job: JobState, what: str, step: Callable[[JobState], None]) -> None:
    """Run a clean-up step at the start of a rerun; a failure is a warning, not a failed job."""
    try:
        step(job)
    except Exception as exc:
        log.warning("Job %s: %s failed (%s); the job goes on", job.id, what, exc)


def _remove_checkpoint(job: JobState) -> None:
    """A completed job keeps no resume checkpoint: its rerun trains anew instead of resuming stale state."""
    from brevetti_pipe.run.checkpoint import remove_checkpoint

    remove_checkpoint(job)


def _previous_attempts(job: JobState) -> int:
    """Attempts recorded by earlier runs of this job id (output.json, else the local keep)."""
    url = job.artifact_path("output.json")
    try:
        text = job.io.read_file(url) if job.io.exists(url) else job.kept.dir.joinpath("output.json").read_bytes()
        return int(json.loads(text).get("attempt") or 1)
    except (OSError, ValueError, AttributeError):
        return 0


def _remove_leftover_temp_files(job: JobState) -> None:
    """Delete the ``.*.tmp`` files an interrupted (kill -9) run left among the artifacts."""
    io = job.io
    fs, path = io.fs(job.artifacts_url)
    try:
        found = io.call(lambda: fs.find(path), job.artifacts_url)
    except FileNotFoundError:
        return
    leftovers = [p for p in found if p.rsplit("/", 1)[-1].startswith(".") and p.endswith(".tmp")]
    for p in leftovers:
        io.best_effort().call(lambda p=p: fs.rm_file(p), job.artifacts_url)
    if leftovers:
        log.info("Removed %d temporary file(s) left by an interrupted run of job %s", len(leftovers), job.id)


def _upload_kept_model(job: JobState) -> None:
    """Upload the model archive an earlier run of this job id could not upload."""
    record = job.kept.read()
    model, name = record.get("model"), str(record.get("name") or "model.tar.gz")
    if model and os.path.isfile(model):
        url = job.artifact_path(name)
        if job.io.exists(url):
            log.warning("Not uploading the model kept at %s: the artifacts already hold %s", model, name)
            return
        try:
            job.io.upload(model, url)
        except Exception as exc:
            log.warning("Could not upload the model kept from an earlier run (%s); it stays at %s", exc, model)
            return
        job.model_path = name
        log.info("Uploaded the model kept from an earlier run of job %s (%s) to %s", job.id, model, _secrets.redact(url))
    if record:
        job.kept.clear()


def _set_aside_progress(job: JobState) -> None:
    """A rerun trains from the first epoch: the earlier attempts' progress moves to ``<file>.attempt-N``."""
    for cb in job.callbacks:
        if not isinstance(cb, Progress):
            continue
        url = job.artifact_path(cb.params.file)
        if job.io.exists(url):
            stem, dot, ext = cb.params.file.rpartition(".")
            aside = f"{stem}.attempt-{job.attempt - 1}.{ext}" if dot else f"{ext}.attempt-{job.attempt - 1}"
            job.io.best_effort().write_file(job.artifact_path(aside), job.io.read_file(url))
            _remove(job.io, url)
            log.info("Attempt %d of job %s: the progress of the earlier attempt is in %s", job.attempt, job.id, aside)


def _install_signal_handlers() -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}

    def interrupt(signum: int, frame: Any) -> None:
        raise JobInterrupted(f"interrupted by {signal.Signals(signum).name}")

    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, interrupt)
    return previous
