"""Is the input the bottleneck? ``python -m benchmarks --train-step``.

Steps/s of one fixed Keras model trained on batches from our pipeline (files decoded,
resized, augmented, one-hot, as in the pipeline section) against the same model trained on
one batch of those tensors held in memory (``Dataset.from_tensors(batch).repeat()``: no input
work at all). A ratio near 1.0 means the pipeline keeps the device fed; well below 1.0 means
training waits for data: raise ``data.num_parallel_calls``, turn on ``data.cache``, or give
the input more CPU cores. On a CPU-only machine the model and the pipeline share the cores,
so the ratio there is a floor, not what a GPU sees.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = Path(__file__).resolve().parent


def _model(input_shape: tuple[int, ...], classes: int):  # noqa: ANN202
    import keras

    inputs = keras.Input(shape=input_shape)
    x = inputs
    for block in range(3):
        x = keras.layers.Conv2D(16 * 2**block, 3, strides=2 if block == 0 else 1, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x))
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    return model


def measure(root: Path, steps: int, rounds: int) -> dict[str, list[float]]:
    import keras
    import tensorflow as tf

    from benchmarks.pipelines import brevetti

    keras.utils.set_random_seed(0)
    ours, _ = brevetti(root, antialias=False)
    batch = next(iter(ours))
    memory = tf.data.Dataset.from_tensors(batch).repeat()
    model = _model(tuple(batch[0].shape[1:]), int(batch[1].shape[-1]))
    model.fit(memory, steps_per_epoch=3, epochs=1, verbose=0)  # trace the train step once
    rates: dict[str, list[float]] = {"pipeline": [], "in_memory": []}
    for r in range(rounds):
        for name in (("pipeline", "in_memory") if r % 2 == 0 else ("in_memory", "pipeline")):
            ds = ours if name == "pipeline" else memory
            t0 = time.perf_counter()
            model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
            rates[name].append(steps / (time.perf_counter() - t0))
    return rates


def train_step_section(root: Path, steps: int = 20, rounds: int = 9) -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.train_step", str(root), str(steps), str(rounds)],
                          cwd=HERE.parent, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    rates = json.loads(proc.stdout.strip().splitlines()[-1])
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratio = med["pipeline"] / med["in_memory"]
    return [
        "## Train step: is the input the bottleneck?", "",
        f"A fixed CNN (3 conv blocks, the first strided, 224x224x3 input, batch 32) trained {steps} steps at a time, {rounds} interleaved "
        f"rounds, fed by our pipeline from `{root.name}` (decode, resize, augment, one-hot) or by one of its batches "
        "held in memory. On this CPU-only machine the model and the pipeline share the 2 cores, and the in-memory "
        "rate itself moves between runs (this machine is bimodal): compare the medians of the same run.", "",
        "| input | min | median | max |", "|---|---:|---:|---:|",
        *[f"| {k} | {min(v):.2f} steps/s | {med[k]:.2f} steps/s | {max(v):.2f} steps/s |" for k, v in rates.items()],
        "", f"- pipeline / in-memory: {ratio:.2f}x (1.0x: the input never holds training back)",
    ]


if __name__ == "__main__":
    print(json.dumps(measure(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))
