"""Map stages: registered, configurable per-sample transforms chained into the tf.data graph."""

from brevetti_pipe.stages._base import STAGES, Stage
from brevetti_pipe.stages.augmenter import ImageAugmenter, ImageNoise, RandomTransformer
from brevetti_pipe.stages.image_pipeline import ImagePipeline
from brevetti_pipe.stages.onehot import OneHotEncoder

__all__ = ["STAGES", "Stage", "ImageAugmenter", "ImageNoise", "ImagePipeline", "OneHotEncoder", "RandomTransformer"]
