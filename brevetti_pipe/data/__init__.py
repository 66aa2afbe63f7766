"""Data layer: datasets -> samples table -> split -> sampler -> tf.data generator."""

from brevetti_pipe.data._generator import DataGenerator
from brevetti_pipe.data._sampler import StratifiedSampler
from brevetti_pipe.data._samples import GENERATORS, Dataset, get_image_samples
from brevetti_pipe.data._frames import explode
from brevetti_pipe.data._split import SampleSplit, merge_sample_identification

__all__ = [
    "DataGenerator",
    "Dataset",
    "GENERATORS",
    "SampleSplit",
    "StratifiedSampler",
    "explode",
    "get_image_samples",
    "merge_sample_identification",
]
