"""brevetti_pipe: declarative pipelines for training vision-inspection models.

Configs (Hydra) -> validated settings (pydantic) -> Job -> samples -> split -> sampler ->
DataGenerator (tf.data, seeded) -> your run step -> reporting callbacks -> model archive.
TensorFlow is imported only when a graph or model is built.
"""

from brevetti_pipe._util.console import show_logs
from brevetti_pipe.config import JobSettings
from brevetti_pipe.errors import (
    BrevettiPipeError, ChecksumError, ConfigError, DatasetError, JobLockedError, SplitError, StageError, StorageError,
)
from brevetti_pipe.run.job import Job
from brevetti_pipe.run.recipe import recipe

__version__ = "0.1.0"


def load_model(path_or_url: str, io: object = None):  # type: ignore[no-untyped-def]
    """Load an exported model archive; see :func:`brevetti_pipe.run.model.load_model` (imports TensorFlow)."""
    from brevetti_pipe.run.model import load_model as _load

    return _load(path_or_url, io)  # type: ignore[arg-type]


__all__ = [
    "BrevettiPipeError",
    "ChecksumError",
    "ConfigError",
    "DatasetError",
    "Job",
    "JobLockedError",
    "JobSettings",
    "SplitError",
    "StageError",
    "StorageError",
    "load_model",
    "recipe",
    "show_logs",
    "__version__",
]
