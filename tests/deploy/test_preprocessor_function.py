"""The export's preprocessing function: traced without AutoGraph when it can be, bit-equal to the converted
trace, and still correct for a function that needs AutoGraph (Python control flow on tensors)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from brevetti_pipe.run._images import batch_preprocessor
from brevetti_pipe.run.export import preprocessor_function
from brevetti_pipe.stages import Stage


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((20, 24), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_the_image_stage_traced_without_autograph_equals_the_converted_trace():
    import tensorflow as tf

    stage = Stage.from_config({"type": "image_pipeline", "target_size": [12, 12], "color_mode": "greyscale",
                               "rescale": "unit"}, where="pipeline.image")
    fn = batch_preprocessor(stage, (12, 12, 1), "float32")
    images = tf.constant([_png(10), _png(200)])
    fast = preprocessor_function(fn)
    converted = tf.function(fn, input_signature=[tf.TensorSpec([None], tf.string)])
    assert np.array_equal(np.asarray(fast(images)), np.asarray(converted(images)))
    assert np.asarray(fast(images)).shape == (2, 12, 12, 1)


def test_a_function_needing_autograph_keeps_it():
    import tensorflow as tf

    def needs_autograph(images):  # noqa: ANN001, ANN202
        n = tf.size(images)
        if n > 1:  # a Python `if` on a tensor: only AutoGraph can trace it
            return tf.fill([n], 2.0)
        return tf.fill([n], 1.0)

    fn = preprocessor_function(needs_autograph)
    assert np.asarray(fn(tf.constant([b"a", b"b"]))).tolist() == [2.0, 2.0]
    assert np.asarray(fn(tf.constant([b"a"]))).tolist() == [1.0]
