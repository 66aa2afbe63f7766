"""Map stages: registered, configurable per-sample transforms chained into the tf.data graph."""

from brevetti_pipe.stages._base import STAGES, Stage
from brevetti_pipe.stages.augmenter import ImageAugmenter, ImageDeformation, ImageFiltering, ImageNoise, RandomTransformer
from brevetti_pipe.stages.image_pipeline import ImagePipeline
from brevetti_pipe.stages.onehot import OneHotEncoder
from brevetti_pipe.stages.segmentation import SegmentationLoader

__all__ = [
    "STAGES", "Stage", "ImageAugmenter", "ImageDeformation", "ImageFiltering", "ImageNoise", "ImagePipeline",
    "OneHotEncoder", "RandomTransformer", "SegmentationLoader",
]

