"""Run layer: the reporting half of :class:`~brevetti_pipe.run.job.Job`: final metrics, epoch progress,
artifacts, confusion matrices and output.json, each delegated to :mod:`~brevetti_pipe.reporting` or
:mod:`~brevetti_pipe.run.lifecycle`. A mixin, so the Job facade reads as its construction, data and
lifecycle."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from brevetti_pipe.reporting import CallbackList
from brevetti_pipe.reporting import _output
from brevetti_pipe.run import lifecycle
from brevetti_pipe.storage import IoTools

if TYPE_CHECKING:
    from brevetti_pipe.run.lifecycle import JobState

__all__ = ["JobReporting"]


class JobReporting:
    """Reporting methods of a job (see :class:`~brevetti_pipe.run.job.Job`)."""

    callbacks: CallbackList
    io: IoTools
    fitted: Any

    def artifact_path(self, *parts: str, dir: bool = False) -> str:
        raise NotImplementedError

    @property
    def _state(self) -> JobState:
        return cast("JobState", self)

    def add_output_metric(self, name: str, value: float) -> None:
        """Record a final metric (``<purpose>_<metric>``) and rewrite output.json."""
        self.add_output_metrics({name: value})

    def add_output_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Record several metrics and rewrite output.json once (best effort: :meth:`complete` writes them all);
        a non-finite value is kept here, null in output.json; a value that is not a number raises ValueError."""
        lifecycle.add_metrics(self._state, metrics)

    def mark_phase(self, name: str) -> None:
        """Note that a step of the job happened now (``train_begin``, ``train_end``; the Keras monitor
        marks them): output.json's ``timings`` gives the seconds between such marks per phase."""
        cast(Any, self).timings.mark(name)

    def phase_timings(self) -> dict[str, float]:
        """Seconds per phase so far (output.json ``timings``; see :class:`~brevetti_pipe._util.timing.PhaseTimer`)."""
        job = cast(Any, self)
        return cast("dict[str, float]", job.timings.phases(job.data.timings))

    def remember_model(self, model: Any) -> None:
        """Note the model ``fit`` trained (the Keras monitor does): a failure before :meth:`complete` keeps it."""
        self.fitted = model

    @property
    def progress_history(self) -> list[dict[str, Any]]:
        """The progress records (``{"epoch": n, ...metrics}``) of this training, resumed epochs included."""
        state = cast(Any, self).__dict__
        return cast("list[dict[str, Any]]", state.setdefault("_progress_history", []))

    def report_progress(self, epoch: int, metrics: Mapping[str, Any], *, epochs: int | None = None) -> None:
        """Report the metrics of a finished epoch to the progress callbacks (``epochs``: the training's
        planned epochs when known, so callbacks that batch their work up know the last one)."""
        values = _output.epoch_values(metrics)
        history = self.progress_history
        history[:] = [r for r in history if r["epoch"] < int(epoch)]  # an epoch run again replaces its record
        history.append({"epoch": int(epoch), **values})
        self.callbacks.on_epoch_end(job=self._state.view, epoch=int(epoch), metrics=values, epochs=epochs)

    def resume_progress(self, epoch: int, records: Sequence[Mapping[str, Any]]) -> None:
        """Training resumes after ``epoch``: ``records`` (``{"epoch": n, ...metrics}``, from the checkpoint)
        become this training's progress so far, and the progress callbacks get them (``on_resume``)."""
        history = [dict(r) for r in records]
        self.progress_history[:] = history
        self.callbacks.on_resume(job=self._state.view, epoch=int(epoch), progress=history)

    def on_artifact(self, path: str) -> None:
        self.callbacks.on_artifact(job=self._state.view, path=path)

    def report_confusion_matrix(self, y_true: Sequence[int], y_pred: Sequence[int], purpose: str = "devel",
                                classes: Sequence[str] | None = None) -> list[list[int]]:
        """Write artifacts/charts/confusion_matrix_<purpose>.json (rows: true class, columns: predicted)."""
        names = list(classes or self._state.classes)
        return self.write_confusion_matrix(_output.confusion_counts(y_true, y_pred, len(names)), names, purpose)

    def write_confusion_matrix(self, matrix: Sequence[Sequence[int]], classes: Sequence[str],
                               purpose: str = "devel") -> list[list[int]]:
        """Write a precomputed confusion matrix (rows true, columns predicted) for the report."""
        url = self.artifact_path("charts", f"confusion_matrix_{purpose}.json")
        rows = _output.write_confusion_matrix(self.io, url, matrix, classes)
        self.on_artifact(url)
        return rows

    def get_remote_monitor(self) -> Any:
        """A Keras callback reporting each epoch (``val_*`` as ``devel_*``, others as ``train_*``)."""
        from brevetti_pipe.reporting.remote_monitor import make_remote_monitor

        return make_remote_monitor(self)

    def output(self) -> dict[str, Any]:
        """The output.json document (secrets redacted)."""
        return lifecycle.output_document(self._state)

    def upload_job_output(self) -> str:
        """Write artifacts/output.json atomically and return its URL (failures raise)."""
        return lifecycle.write_output(self._state)

    def upload_artifact(self, artifact_name: str | Sequence[str], payload: bytes | str, is_file: bool = False) -> str:
        """brevettiai's artifact upload: write ``payload`` (or, with ``is_file``, the file it names) to
        artifacts/``artifact_name`` atomically; returns its URL."""
        parts = (artifact_name,) if isinstance(artifact_name, str) else tuple(artifact_name)
        url = self.artifact_path(*parts)
        self.io.write_file(url, self.io.read_file(str(payload)) if is_file else payload)
        self.on_artifact(url)
        return url
