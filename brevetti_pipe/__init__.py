"""brevetti_pipe: declarative pipelines for training vision-inspection models.

Configs (Hydra) -> validated settings (pydantic) -> Job -> samples -> split -> sampler ->
DataGenerator (tf.data, seeded) -> your run step -> reporting callbacks -> model archive.
TensorFlow is imported only when a graph or model is built.
"""

from brevetti_pipe.config import JobSettings
from brevetti_pipe.errors import BrevettiPipeError, ConfigError, DatasetError, SplitError, StageError, StorageError
from brevetti_pipe.job import Job
from brevetti_pipe.recipe import recipe

__version__ = "0.1.0"

__all__ = [
    "BrevettiPipeError",
    "ConfigError",
    "DatasetError",
    "Job",
    "JobSettings",
    "SplitError",
    "StageError",
    "StorageError",
    "recipe",
    "__version__",
]
