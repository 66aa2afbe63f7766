"""The hand-written Keras baseline of "time to a trained model": ``python -m benchmarks.keras_script DATA OUT [--cache]``.

What a user would write instead of a brevetti_pipe job for the demo: Keras' directory loader
(80/20 split), the demo's CNN, Keras augmentation layers close to the demo pipeline's, 8 epochs
with validation, an evaluation on the held-out 20 % and the model saved. Keras' loader cannot
decode the demo's greyscale BMPs with ``color_mode="grayscale"`` (``channels must be 0, 3 or 4
for BMP``), so it reads RGB and converts to grey, as the demo pipeline outputs.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _since_process_start() -> float | None:
    """Seconds since this process started (Linux /proc, as a brevetti-pipe job's ``timings.total``).
    Written out rather than imported from ``brevetti_pipe._util.timing``: the baseline loads nothing of ours."""
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
        return uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--cache", action="store_true", help="cache the decoded, resized images in memory")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    train, devel = keras.utils.image_dataset_from_directory(
        args.data, image_size=(96, 96), batch_size=16, label_mode="categorical", color_mode="rgb",
        validation_split=0.2, subset="both", seed=0, verbose=False,
    )

    def grey(x, y):
        return tf.image.rgb_to_grayscale(x) / 255.0, y

    train = train.map(grey, num_parallel_calls=tf.data.AUTOTUNE)
    devel = devel.map(grey, num_parallel_calls=tf.data.AUTOTUNE)
    if args.cache:
        train, devel = train.cache(), devel.cache()
    augment = keras.Sequential([
        keras.layers.RandomFlip("horizontal"),
        keras.layers.RandomZoom(0.05),
        keras.layers.RandomTranslation(0.05, 0.05),
        keras.layers.RandomBrightness(0.1, value_range=(0.0, 1.0)),
        keras.layers.RandomContrast(0.1),
    ])
    train = train.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    train, devel = train.prefetch(tf.data.AUTOTUNE), devel.prefetch(tf.data.AUTOTUNE)

    inputs = keras.Input(shape=(96, 96, 1))
    x = inputs
    for block in range(3):
        x = keras.layers.Conv2D(16 * 2**block, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.002), loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(train, validation_data=devel, epochs=args.epochs, verbose=0)
    loss, accuracy = model.evaluate(devel, verbose=0)
    os.makedirs(args.out, exist_ok=True)
    model.save(os.path.join(args.out, "model.keras"))
    print(json.dumps({"devel_loss": loss, "devel_accuracy": accuracy, "to_saved": _since_process_start()}))


if __name__ == "__main__":
    main()
