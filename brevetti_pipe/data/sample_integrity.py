"""brevettiai's ``data.sample_integrity`` module path: SampleSplit and merge_sample_identification."""

from brevetti_pipe.data._split import MODE_MURMURHASH3, MODE_SORTED_PERMUTATION, SampleSplit, merge_sample_identification

__all__ = ["MODE_MURMURHASH3", "MODE_SORTED_PERMUTATION", "SampleSplit", "merge_sample_identification"]
