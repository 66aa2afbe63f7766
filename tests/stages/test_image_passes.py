"""The per-sample graph of decode -> resize -> rescale -> flip + brightness makes no full-image pass
that the equivalent hand-written tf.data map does not, except the clip to ``value_range``."""

from __future__ import annotations

from collections import Counter

import pytest

from brevetti_pipe.stages import ImageAugmenter, ImageNoise, ImagePipeline, RandomTransformer

SIZE = (16, 16)
#: ops that hand a tensor on without computing over its pixels
_VIEWS = {"Identity", "Squeeze", "ExpandDims", "Reshape", "EnsureShape", "StatelessIf", "If", "Placeholder"}


def _image_passes(fn) -> Counter:
    """Op types of the traced ``fn(path, seed)`` (cond branches included) whose output is an image."""
    import tensorflow as tf

    traced = tf.function(tf.autograph.experimental.do_not_convert(fn)).get_concrete_function(
        tf.TensorSpec([], tf.string), tf.TensorSpec([2], tf.int64))
    graph = traced.graph.as_graph_def(add_shapes=True)
    nodes = [*graph.node, *(n for f in graph.library.function for n in f.node_def)]
    return Counter(
        n.op for n in nodes
        if n.op not in _VIEWS and any(len(s.dim) >= 3 for s in n.attr["_output_shapes"].list.shape)
    )


def _hand(antialias: bool):
    """benchmarks.pipelines.hand's map: what a user writes by hand."""
    import tensorflow as tf

    def load(path, seed):
        img = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        img = tf.image.resize(img, SIZE, antialias=antialias) / 255.0
        img = tf.cond(tf.random.stateless_uniform([], seed) < 0.5, lambda: tf.image.flip_left_right(img), lambda: img)
        return img + tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, 1), -0.1, 0.1)

    return load


def _ours(antialias: bool):
    pipeline = ImagePipeline(target_size=SIZE, antialias=antialias, rescale="unit")
    augmenter = ImageAugmenter(
        random_transformer=RandomTransformer(flip_left_right=True, flip_up_down=False, scale=0, rotate=0,
                                             translate_horizontal=0, translate_vertical=0, shear=0),
        image_noise=ImageNoise(chance=1.0, brightness=0.1, contrast=0.0),
        image_filter=None, image_deformation=None, value_range=(-1.0, 2.0),
    )
    return lambda path, seed: augmenter(pipeline({"path": path}, seed=seed), seed=seed)["img"]


@pytest.mark.parametrize("antialias", [False, True])
def test_only_the_clip_is_a_pass_beyond_the_hand_written_map(antialias):
    hand, ours = _image_passes(_hand(antialias)), _image_passes(_ours(antialias))
    # x * (1/255) instead of x / 255 (the same pass, cheaper), and the clip's two passes
    expected = hand - Counter({"RealDiv": 1}) + Counter({"Mul": 1, "Minimum": 1, "Maximum": 1})
    assert hand["RealDiv"] == 1 and ours == expected, f"hand: {dict(hand)}, ours: {dict(ours)}"
