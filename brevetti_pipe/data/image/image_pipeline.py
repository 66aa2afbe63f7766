"""brevettiai's ``data.image.image_pipeline`` module path (the stage lives in :mod:`brevetti_pipe.stages`)."""

from brevetti_pipe.stages import ImagePipeline

__all__ = ["ImagePipeline"]
