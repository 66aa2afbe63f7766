"""brevetti_pipe: declarative pipelines for training vision-inspection models.

Configs (Hydra) -> validated settings (pydantic) -> Job -> samples -> split -> sampler ->
DataGenerator (tf.data, seeded) -> your run step -> reporting callbacks -> model archive.
TensorFlow is imported only when a graph or model is built.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from brevetti_pipe._util import collector

collector.pause_for_command()  # the command resumes it when its job starts
with collector.paused():  # importing makes long-lived objects only: nothing to collect (see _util.collector)
    from brevetti_pipe._util.console import show_logs
    from brevetti_pipe.config import JobSettings
    from brevetti_pipe.errors import (
        BrevettiPipeError, ChecksumError, ConfigError, DatasetError, ExportError, JobLockedError, MetricError,
        SplitError, StageError, StorageError,
    )
    from brevetti_pipe.run.job import Job
    from brevetti_pipe.run.recipe import recipe

if TYPE_CHECKING:
    from brevetti_pipe.run.model import LoadedModel
    from brevetti_pipe.storage import IoTools

__version__ = "0.1.0"


def load_model(path_or_url: str | os.PathLike[str], io: IoTools | None = None, *, format: str | None = None,
               verify: bool = True) -> LoadedModel:
    """Load an exported model archive in one of its formats (keras, saved_model, onnx, tflite); see
    :func:`brevetti_pipe.run.model.load_model` (imports TensorFlow).

    Example:
        >>> with load_model("model.tar.gz", format="onnx") as model:
        ...     probabilities = model.predict(["a.png", "b.bmp"])
    """
    from brevetti_pipe.run.model import load_model as _load

    return _load(path_or_url, io, format=format, verify=verify)


__all__ = [
    "BrevettiPipeError",
    "ChecksumError",
    "ConfigError",
    "DatasetError",
    "ExportError",
    "Job",
    "JobLockedError",
    "JobSettings",
    "MetricError",
    "SplitError",
    "StageError",
    "StorageError",
    "load_model",
    "recipe",
    "show_logs",
    "__version__",
]
