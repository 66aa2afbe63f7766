"""Where JPEG (or any format's) time goes: ``python -m benchmarks.profile_jpeg ROOT ANTIALIAS [ROUNDS]``.

Ablation in one process, interleaved rounds, medians: each variant adds one piece of the
brevetti_pipe chain to the hand-written pipeline (or removes one from ours), so the difference
between neighbours is what that piece costs. Prints a table of images/s (min, median, max) and the median CPU milliseconds per image
(all threads of the process: much less sensitive than wall time to other load on the machine).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def variants(root: Path, antialias: bool) -> dict:
    import tensorflow as tf

    from benchmarks.pipelines import BATCH, CLASSES, SIZE, _files, brevetti
    from brevetti_pipe.data import DataGenerator, get_image_samples
    from brevetti_pipe.stages import ImagePipeline, OneHotEncoder

    paths, labels = _files(root)

    def hand_ds(decode_fn):
        def load(i, path, label):
            img = decode_fn(tf.io.read_file(path))
            img = tf.image.resize(img, SIZE, antialias=antialias) / 255.0
            return img, tf.one_hot(label, len(CLASSES))
        ds = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64), paths, labels))
        return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(BATCH).prefetch(tf.data.AUTOTUNE).repeat()

    samples = get_image_samples(str(root))

    def ours(aug: bool):
        if aug:
            return brevetti(root, antialias)[0]
        gen = (DataGenerator(samples, batch_size=BATCH, repeat=True, seed=0, output_structure=("img", "onehot"), cache=False)
               .map(ImagePipeline(target_size=SIZE, antialias=antialias, rescale="unit"))
               .map(OneHotEncoder(CLASSES)))
        return gen.get_dataset()

    jpeg = paths[0].lower().endswith((".jpg", ".jpeg"))
    return {k: v for k, v in {
        "hand: decode_image + resize": lambda: hand_ds(lambda d: tf.io.decode_image(d, channels=3, expand_animations=False)),
        "hand: decode_jpeg + resize": lambda: hand_ds(lambda d: tf.io.decode_jpeg(d, channels=3)),
        "ours: ImagePipeline + OneHot": lambda: ours(False),
        "ours: full chain (+ augment)": lambda: ours(True),
        "hand full (benchmarks.pipelines)": lambda: __import__("benchmarks.pipelines", fromlist=["hand"]).hand(root, antialias)[0].repeat(),
    }.items() if jpeg or "decode_jpeg" not in k}


def main() -> None:
    root, antialias, rounds = Path(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3]) if len(sys.argv) > 3 else 5
    n = sum(1 for p in root.rglob("*") if p.is_file())
    steps = -(-n // 32)
    datasets = {name: make() for name, make in variants(root, antialias).items()}
    rates: dict[str, list[float]] = {k: [] for k in datasets}
    cpu: dict[str, list[float]] = {k: [] for k in datasets}
    for r in range(rounds):
        for name in (list(datasets) if r % 2 == 0 else list(reversed(datasets))):
            it = iter(datasets[name])  # one live iterator at a time: no background prefetch elsewhere
            next(it)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                next(it)
            rates[name].append(n / (time.perf_counter() - t0))
            cpu[name].append((time.process_time() - c0) * 1000 / n)
            del it
    for name, v in rates.items():
        print(f"| {name} | {min(v):.0f} | {statistics.median(v):.0f} | {max(v):.0f} | {statistics.median(cpu[name]):.2f} |")


if __name__ == "__main__":
    main()
