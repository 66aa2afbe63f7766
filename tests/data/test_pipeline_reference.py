"""The flip + brightness chain is exactly the hand-written tf.data computation, bit for bit.

The expected batches are computed here op by op, eagerly, from the documented seed rule (sample
seed = fold_in(fold_in([seed, 0x5EED], epoch), row) with int64 epoch and row; a stage's seed =
fold_in(sample seed, crc32 of its key as int32)), so a change in the generator's graph (how seeds are plumbed, which ops run,
their order) that alters a single bit of the output fails here.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from brevetti_pipe.data import DataGenerator, get_image_samples
from brevetti_pipe.stages import ImageAugmenter, ImageNoise, ImagePipeline, OneHotEncoder, RandomTransformer
from brevetti_pipe.stages._base import stage_seed_id

CLASSES = ["failed_cap", "good", "missing_cap"]
SIZE, BRIGHTNESS, LOW, HIGH, SEED = (16, 16), 0.1, -1.0, 2.0, 4
fold = tf.random.experimental.stateless_fold_in


def _draw(seed: tf.Tensor, key: int, low: float, high: float) -> tf.Tensor:
    return tf.random.stateless_uniform([], seed=fold(seed, key), minval=low, maxval=high)


def _expected(path: str, label: int, epoch: int, row: int, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    img = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    img = tf.image.resize(img, SIZE, antialias=antialias) * (1.0 / 255.0)
    sample = fold(fold(tf.constant([SEED, 0x5EED], tf.int64), tf.constant(epoch, tf.int64)), tf.constant(row, tf.int64))
    stage = fold(sample, stage_seed_id("image_augmenter"))
    if _draw(stage, 1, 0.0, 1.0) < 0.5:
        img = tf.image.flip_left_right(img)
    img = img + _draw(stage, 11, -BRIGHTNESS, BRIGHTNESS) * (HIGH - LOW)
    img = tf.maximum(tf.minimum(img, HIGH), LOW)
    return img.numpy(), tf.one_hot(label, len(CLASSES)).numpy()


def test_flip_brightness_chain_equals_the_hand_written_computation(tiny_vials):
    samples = get_image_samples(str(tiny_vials)).iloc[:12]
    flip_only = RandomTransformer(flip_up_down=False, scale=0, translate_horizontal=0, translate_vertical=0, shear=0)
    labels = [CLASSES.index("/".join(c)) for c in samples.category]
    for antialias in (True, False):
        gen = (DataGenerator(samples, batch_size=5, repeat=2, seed=SEED, output_structure=("img", "onehot"))
               .map(ImagePipeline(target_size=SIZE, antialias=antialias, rescale="unit"))
               .map(ImageAugmenter(random_transformer=flip_only, image_filter=None, image_deformation=None,
                                   image_noise=ImageNoise(chance=1.0, brightness=BRIGHTNESS, contrast=0.0),
                                   value_range=(LOW, HIGH)))
               .map(OneHotEncoder(CLASSES)))
        images, onehots = (np.concatenate(parts) for parts in zip(*gen.get_dataset_numpy()))
        expected = [_expected(str(p), y, epoch, row, antialias)
                    for epoch in range(2) for row, (p, y) in enumerate(zip(samples.path, labels))]
        np.testing.assert_array_equal(images, np.stack([e[0] for e in expected]))
        np.testing.assert_array_equal(onehots, np.stack([e[1] for e in expected]))
        flipped = [not np.array_equal(images[i], images[i + len(samples)]) for i in range(len(samples))]
        assert any(flipped), "each epoch draws anew"
