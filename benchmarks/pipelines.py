"""One benchmark pipeline per process: ``python -m benchmarks.pipelines NAME FORMAT ANTIALIAS``.

Every pipeline yields (image, one-hot) batches of 32 at 224x224 from the same files: resize
(antialias on or off), rescale to [0, 1], a per-sample horizontal flip (p = 0.5) and a
per-sample brightness shift drawn from stateless seeds, and a one-hot label. Prints JSON with
images/s per measured epoch.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SIZE = (224, 224)
BATCH = 32
CLASSES = ["failed_cap", "good", "missing_cap"]


def _files(root: Path) -> tuple[list[str], list[int]]:
    paths = sorted(str(p) for p in root.rglob("*") if p.is_file())
    labels = [CLASSES.index(Path(p).parent.name) for p in paths]
    return paths, labels


def hand(root: Path, antialias: bool, decode: bool = True, full: bool = True):
    """The hand-tuned tf.data ceiling: what a user would write in ten lines."""
    import tensorflow as tf

    paths, labels = _files(root)
    seed = tf.constant([0, 7], tf.int64)

    def load(i, path, label):
        data = tf.io.read_file(path)
        if not decode:
            return data, label
        img = tf.io.decode_image(data, channels=3, expand_animations=False)
        if not full:
            return img, label
        img = tf.image.resize(img, SIZE, antialias=antialias) / 255.0
        s = tf.random.experimental.stateless_fold_in(seed, i)
        img = tf.cond(tf.random.stateless_uniform([], s) < 0.5, lambda: tf.image.flip_left_right(img), lambda: img)
        img = img + tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(s, 1), -0.1, 0.1)
        return img, tf.one_hot(label, len(CLASSES))

    ds = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64), paths, labels))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if decode and not full:
        return ds.batch(1).prefetch(tf.data.AUTOTUNE), len(paths)  # decoded sizes may differ
    return ds.batch(BATCH).prefetch(tf.data.AUTOTUNE), len(paths)


def _disk_cache() -> str:
    """A fresh ``data.cache=<dir>`` folder for this process (filled by epoch 1), removed at exit."""
    import atexit
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="bench-disk-cache-")
    atexit.register(shutil.rmtree, folder, True)
    return folder


def brevetti(root: Path, antialias: bool, cache: bool | str = False, repeat: bool = True):
    from brevetti_pipe.data import DataGenerator, get_image_samples
    from brevetti_pipe.stages import ImageAugmenter, ImageNoise, ImagePipeline, OneHotEncoder, RandomTransformer

    samples = get_image_samples(str(root))
    gen = (
        DataGenerator(samples, batch_size=BATCH, repeat=repeat, seed=0, output_structure=("img", "onehot"),
                      cache=cache)
        .map(ImagePipeline(target_size=SIZE, antialias=antialias, rescale="unit"))
        .map(ImageAugmenter(
            random_transformer=RandomTransformer(flip_left_right=True, flip_up_down=False, scale=0, rotate=0,
                                                 translate_horizontal=0, translate_vertical=0, shear=0),
            image_noise=ImageNoise(chance=1.0, brightness=0.1, contrast=0.0),
            image_filter=None, image_deformation=None, value_range=(-1.0, 2.0),
        ))
        .map(OneHotEncoder(CLASSES))
    )
    return gen.get_dataset(), len(samples)


def keras_dir(root: Path, antialias: bool):
    """Keras' directory loader (bilinear, no antialias) with the same augmentation per batch."""
    import keras
    import tensorflow as tf

    ds = keras.utils.image_dataset_from_directory(str(root), image_size=SIZE, batch_size=BATCH, label_mode="categorical",
                                                  shuffle=False, class_names=CLASSES, verbose=False)
    seed = tf.constant([0, 7], tf.int64)

    def aug(i, batch):
        x, y = batch
        s = tf.random.experimental.stateless_fold_in(seed, i)
        n = tf.shape(x)[0]
        flip = tf.random.stateless_uniform([n], s) < 0.5
        x = tf.where(flip[:, None, None, None], tf.reverse(x, [2]), x) / 255.0
        x = x + tf.random.stateless_uniform([n, 1, 1, 1], tf.random.experimental.stateless_fold_in(s, 1), -0.1, 0.1)
        return x, y

    ds = ds.enumerate().map(aug, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE), sum(1 for p in root.rglob("*") if p.is_file())


PIPELINES = {
    "io_floor": lambda r, a: hand(r, a, decode=False),
    "decode_floor": lambda r, a: hand(r, a, full=False),
    "hand": hand,
    "brevetti": brevetti,
    "brevetti_cached": lambda r, a: brevetti(r, a, cache=True),
    "brevetti_disk": lambda r, a: brevetti(r, a, cache=_disk_cache()),
    "keras_dir": keras_dir,
}


def measure(name: str, root: Path, antialias: bool, epochs: int = 2) -> dict:
    start = time.perf_counter()
    ds, n = PIPELINES[name](root, antialias)
    repeat = name.startswith("brevetti")
    steps = -(-n // BATCH) if name != "decode_floor" else n
    if not repeat:
        ds = ds.repeat()
    it = iter(ds)
    setup = time.perf_counter() - start
    next(it)  # warm-up: graph build, thread pools
    rates, cpu = [], []
    for _ in range(epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            next(it)
        rates.append(n / (time.perf_counter() - t0))
        cpu.append((time.process_time() - c0) * 1000 / n)  # all threads: CPU ms per image
    return {"pipeline": name, "images": n, "setup_s": setup, "epochs": rates, "cpu_ms": cpu}


if __name__ == "__main__":
    name, root, antialias = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "1"
    epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    print(json.dumps(measure(name, root, antialias, epochs)))
