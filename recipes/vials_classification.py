"""Vials classification recipe: a small Keras CNN on the train split, evaluated on devel."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from brevetti_pipe.config import JobSettings
from brevetti_pipe.run.recipe import recipe
from brevetti_pipe.recipes._input import check_input_size, check_pipeline_size

if TYPE_CHECKING:
    from brevetti_pipe.run.job import Job

__all__ = ["VialsClassificationSettings", "build_model", "run"]

_MODEL = "vials_cnn (3 pooling steps)"
_MIN_SIZE = 8  # each MaxPooling2D halves the size


class VialsClassificationSettings(JobSettings):
    """Settings of the vials classification recipe (``settings.*``)."""

    epochs: int = Field(8, ge=1, description="Training epochs")
    batch_size: int = Field(16, ge=1, description="Batch size")
    learning_rate: float = Field(0.002, gt=0, description="Adam learning rate")
    filters: int = Field(16, ge=1, description="Filters of the first conv layer (doubling per block)")


def build_model(input_shape: tuple[int, ...], num_classes: int, filters: int, learning_rate: float) -> Any:
    """A three-block CNN with a flattened softmax head (caps are small, position-bound features).

    Raises:
        ConfigError: for an input smaller than 8x8.
    """
    import keras

    check_input_size(input_shape, _MODEL, _MIN_SIZE)

    inputs = keras.Input(shape=input_shape)
    x = inputs
    for block in range(3):
        x = keras.layers.Conv2D(filters * 2**block, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs, name="vials_cnn")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


@recipe("vials_classification", settings=VialsClassificationSettings)
def run(job: Job) -> Any:
    """Train on the train split, report per-epoch progress, evaluate on devel, return the model."""
    s: VialsClassificationSettings = job.settings  # type: ignore[assignment]
    check_pipeline_size(job, _MODEL, _MIN_SIZE)
    samples = job.get_samples()
    train = samples[samples.purpose == "train"]
    devel = samples[samples.purpose == "devel"]
    structure = ("img", "onehot")
    train_gen = job.data_generator(train, train=True, batch_size=s.batch_size, output_structure=structure)
    devel_gen = job.data_generator(devel, batch_size=s.batch_size, output_structure=structure)
    image_shape = train_gen.get_dataset().element_spec[0].shape[1:]
    job.seed_frameworks()  # after all I/O: storage retries must not shift the initial weights
    with job.strategy.scope():
        model = build_model(tuple(image_shape), len(job.classes), s.filters, s.learning_rate)
    if job.num_workers > 1:
        # Keras 3's fit does not run under MultiWorkerMirroredStrategy: use the distributed loop
        from brevetti_pipe.run.distribute import fit_distributed, predict_local

        fit_distributed(job, model, train_gen.get_dataset(), job.steps_per_epoch(train_gen), s.epochs, s.batch_size)
        batches = predict_local(model, devel_gen.get_dataset()) if len(devel) else []
    else:
        model.fit(
            train_gen.get_dataset(),
            steps_per_epoch=job.steps_per_epoch(train_gen),
            epochs=s.epochs,
            validation_data=devel_gen.get_dataset() if len(devel) else None,
            validation_steps=len(devel_gen) if len(devel) else None,
            callbacks=[job.get_remote_monitor()],
            shuffle=False,  # the generator draws a seeded order per epoch
            verbose=2,
        )
        batches = [(model.predict_on_batch(x), y) for x, y in devel_gen.get_dataset_numpy()] if len(devel) else []
    if batches:
        import keras
        import numpy as np

        probs = np.concatenate([p for p, _ in batches])
        onehot = np.concatenate([y for _, y in batches])
        loss = float(np.mean(keras.losses.categorical_crossentropy(onehot, probs)))
        y_true, y_pred = np.argmax(onehot, axis=1), np.argmax(probs, axis=1)
        job.add_output_metrics({"devel_loss": loss, "devel_accuracy": float(np.mean(y_true == y_pred))})
        job.report_confusion_matrix(y_true.tolist(), y_pred.tolist(), purpose="devel")
    return model
