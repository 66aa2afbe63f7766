"""DataGenerator API: structures, length, iteration, immutability of map, numpy views."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brevetti_pipe.data import DataGenerator, get_image_samples
from brevetti_pipe.errors import StageError
from brevetti_pipe.stages import ImagePipeline, OneHotEncoder


@pytest.fixture(scope="module")
def samples(tiny_vials):
    return get_image_samples(str(tiny_vials))


def test_output_structures(samples):
    gen = DataGenerator(samples, batch_size=4, seed=0).map(ImagePipeline(target_size=(16, 16))).map(OneHotEncoder(["failed_cap", "good", "missing_cap"]))
    full = next(gen.get_dataset_numpy(structure=None))
    assert {"img", "onehot", "path", "category", "etag"} <= set(full)
    assert full["img"].shape == (4, 16, 16, 3) and full["img"].dtype == np.float32
    assert isinstance(full["category"][0], str)
    img = next(gen.get_dataset_numpy(structure="img"))
    assert img.shape == (4, 16, 16, 3)
    path, onehot = next(gen.get_dataset_numpy(structure=("path", "onehot")))
    assert onehot.shape == (4, 3) and path[0].startswith(str(samples.path[0])[:10])


def test_len_iteration_and_remainder(samples):
    gen = DataGenerator(samples, batch_size=8, output_structure="etag")
    batches = list(gen)
    assert len(gen) == len(batches) == 4 and [len(b) for b in batches] == [8, 8, 8, 6]
    assert list(np.concatenate(batches)) == samples.etag.tolist()
    dropped = DataGenerator(samples, batch_size=8, drop_remainder=True, output_structure="etag")
    assert len(dropped) == 3 == len(list(dropped))


def test_map_returns_a_new_generator(samples):
    base = DataGenerator(samples, batch_size=2)
    mapped = base.map(ImagePipeline(target_size=(8, 8)))
    assert base.stages == [] and len(mapped.stages) == 1


def test_get_samples_skips_stages(samples):
    gen = DataGenerator(samples, batch_size=2).map(ImagePipeline(target_size=(8, 8)))
    assert "img" not in next(gen.get_samples_numpy())


def test_missing_output_key_is_a_stage_error(samples):
    with pytest.raises(StageError, match=r"output_structure asks for \['onehot'\]"):
        DataGenerator(samples, batch_size=2, output_structure=("img", "onehot")).map(ImagePipeline()).get_dataset()


def test_unknown_category_stops_with_its_name(samples):
    gen = DataGenerator(samples, batch_size=2, output_structure="onehot").map(OneHotEncoder(["good"]))
    with pytest.raises(Exception, match="unknown category 'failed_cap'"):
        list(gen)


def test_numeric_and_none_columns_pass_through():
    samples = pd.DataFrame({"path": ["/a", "/b"], "score": [0.5, 1.5], "n": [1, 2], "note": [None, "x"]})
    score, n, note = next(DataGenerator(samples, batch_size=2, output_structure=("score", "n", "note")).get_samples_numpy("__default__"))
    assert score.tolist() == [0.5, 1.5] and n.tolist() == [1, 2] and note.tolist() == ["", "x"]


def _augmented_chain(samples: pd.DataFrame) -> DataGenerator:
    from brevetti_pipe.stages import ImageAugmenter, ImageNoise, RandomTransformer

    flip_only = RandomTransformer(flip_up_down=False, scale=0, translate_horizontal=0, translate_vertical=0, shear=0)
    return (DataGenerator(samples, batch_size=4, repeat=True, seed=0, output_structure=("img", "onehot"))
            .map(ImagePipeline(target_size=(16, 16), rescale="unit"))
            .map(ImageAugmenter(random_transformer=flip_only, image_noise=ImageNoise(chance=1.0, brightness=0.1, contrast=0.0),
                                image_filter=None, image_deformation=None))
            .map(OneHotEncoder(["failed_cap", "good", "missing_cap"])))


def test_stages_run_in_one_parallel_map_that_tf_data_can_fuse_with_the_batch(samples):
    """No serialisation point in the per-sample path: every stage, the seeds and the column
    lookups run in one autotuned parallel map right before the batch (tf.data fuses the two),
    with no Python callback, and the graph ends in an autotuned prefetch."""
    import tensorflow as tf

    graph = tf.compat.v1.GraphDef.FromString(_augmented_chain(samples).get_dataset()._as_serialized_graph().numpy())
    nodes = {n.name: n for n in graph.node}
    maps = [n for n in graph.node if n.op in {"MapDataset", "ParallelMapDataset", "ParallelMapDatasetV2", "MapAndBatchDataset"}]
    assert [n.op for n in maps] == ["ParallelMapDatasetV2"], [n.op for n in graph.node]
    (parallel_map,) = maps
    calls = nodes[parallel_map.input[-1].split(":")[0]]
    assert tf.make_ndarray(calls.attr["value"].tensor) == tf.data.AUTOTUNE
    consumers = [n.op for n in graph.node if any(i.split(":")[0] == parallel_map.name for i in n.input)]
    assert consumers == ["BatchDatasetV2"]
    prefetch = [n for n in graph.node if n.op == "PrefetchDataset"]
    assert len(prefetch) == 1 and tf.make_ndarray(nodes[prefetch[0].input[1].split(":")[0]].attr["value"].tensor) == tf.data.AUTOTUNE
    python_ops = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
    used = {op.op for f in graph.library.function for op in f.node_def} | {n.op for n in graph.node}
    assert not used & python_ops
