"""Keras glue: the remote-monitor callback (imported only when Keras is in use)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import keras

from brevetti_pipe.reporting._output import progress_name

__all__ = ["make_remote_monitor", "ProgressSink", "RemoteMonitor"]


class ProgressSink(Protocol):
    """Where finished epochs go (the job's ``report_progress``) and the trained model (``remember_model``)."""

    def report_progress(self, epoch: int, metrics: Mapping[str, Any], *, epochs: int | None = None) -> None: ...

    def remember_model(self, model: Any) -> None: ...




class RemoteMonitor(keras.callbacks.Callback):
    """Reports every finished epoch to the job (progress.jsonl and any progress endpoint) and
    hands it the trained model at the end of ``fit``.

    ``epoch`` in the report counts finished epochs: inside ``fit`` that is Keras' 0-based index + 1;
    called by hand (``on_epoch_end(11, logs)``, as brevettiai's monitor was), the epoch given.
    """

    def __init__(self, job: ProgressSink) -> None:
        super().__init__()
        self.job = job
        self._in_fit = False

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        metrics = {progress_name(k): v for k, v in (logs or {}).items()}
        if self._in_fit:
            self.job.report_progress(epoch + 1, metrics, epochs=(self.params or {}).get("epochs"))
        else:
            self.job.report_progress(epoch, metrics)

    def _mark(self, name: str) -> None:
        mark = getattr(self.job, "mark_phase", None)  # output.json timings: where training starts and ends
        if mark is not None:
            mark(name)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._in_fit = True
        self._mark("train_begin")

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._in_fit = False
        self._mark("train_end")
        self.job.remember_model(self.model)  # a failure between fit and complete() keeps it


def make_remote_monitor(job: ProgressSink) -> RemoteMonitor:
    return RemoteMonitor(job)
