"""brevettiai's ``data.image.segmentation_loader`` module path (the stage lives in :mod:`brevetti_pipe.stages`)."""

from brevetti_pipe.stages import SegmentationLoader

__all__ = ["SegmentationLoader"]
