"""Vials segmentation recipe: a tiny U-Net segmenting caps and liquid, scored by IoU on devel."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from brevetti_pipe.config import JobSettings
from brevetti_pipe.run.recipe import recipe
from brevetti_pipe.recipes._input import check_input_size, check_pipeline_size

if TYPE_CHECKING:
    from brevetti_pipe.run.job import Job

__all__ = ["VialsSegmentationSettings", "build_unet", "iou_per_class", "run"]

_MODEL = "vials_unet (2 pooling steps whose upsampled outputs join the skips)"
_MULTIPLE = 4


class VialsSegmentationSettings(JobSettings):
    """Settings of the vials segmentation recipe (``settings.*``)."""

    epochs: int = Field(12, ge=1, description="Training epochs")
    batch_size: int = Field(8, ge=1, description="Batch size")
    learning_rate: float = Field(0.003, gt=0, description="Adam learning rate")
    filters: int = Field(16, ge=1, description="Filters of the first U-Net level (doubling per level)")


def build_unet(input_shape: tuple[int, ...], num_classes: int, filters: int, learning_rate: float) -> Any:
    """A two-level U-Net with a softmax over ``num_classes`` (background included).

    Raises:
        ConfigError: for an input whose height or width is not a multiple of 4.
    """
    import keras
    from keras import layers

    def block(x: Any, f: int) -> Any:
        x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
        return layers.Conv2D(f, 3, padding="same", activation="relu")(x)

    check_input_size(input_shape, _MODEL, _MULTIPLE, _MULTIPLE)
    inputs = keras.Input(shape=input_shape)
    e1 = block(inputs, filters)
    e2 = block(layers.MaxPooling2D()(e1), filters * 2)
    b = block(layers.MaxPooling2D()(e2), filters * 4)
    d2 = block(layers.Concatenate()([layers.UpSampling2D()(b), e2]), filters * 2)
    d1 = block(layers.Concatenate()([layers.UpSampling2D()(d2), e1]), filters)
    outputs = layers.Conv2D(num_classes, 1, activation="softmax")(d1)
    model = keras.Model(inputs, outputs, name="vials_unet")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU per class from a pixel confusion matrix (rows true, columns predicted); NaN when absent."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


@recipe("vials_segmentation", settings=VialsSegmentationSettings)
def run(job: Job) -> Any:
    """Train the U-Net on train, report IoU per class and ``devel_mean_iou`` (foreground classes) on devel."""
    s: VialsSegmentationSettings = job.settings  # type: ignore[assignment]
    check_pipeline_size(job, _MODEL, _MULTIPLE, _MULTIPLE)
    samples = job.get_samples()
    train = samples[samples.purpose == "train"]
    devel = samples[samples.purpose == "devel"]
    structure = ("img", "segmentation")
    train_gen = job.data_generator(train, train=True, batch_size=s.batch_size, output_structure=structure)
    devel_gen = job.data_generator(devel, batch_size=s.batch_size, output_structure=structure)
    spec = train_gen.get_dataset().element_spec
    classes = ["background", *job.config.pipeline["segmentation"].params()["classes"]]
    job.seed_frameworks()  # after all I/O: storage retries must not shift the initial weights
    with job.strategy.scope():
        model = build_unet(tuple(spec[0].shape[1:]), len(classes), s.filters, s.learning_rate)
    job.metadata["segmentation_classes"] = classes
    model.fit(
        train_gen.get_dataset(), steps_per_epoch=job.steps_per_epoch(train_gen), epochs=s.epochs,
        validation_data=devel_gen.get_dataset() if len(devel) else None,
        validation_steps=len(devel_gen) if len(devel) else None,
        callbacks=[job.get_remote_monitor()], shuffle=False, verbose=2,
    )
    if len(devel):
        confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
        for images, masks in devel_gen.get_dataset_numpy():
            pred = np.argmax(model.predict_on_batch(images), axis=-1).ravel()
            true = np.argmax(masks, axis=-1).ravel()
            confusion += np.bincount(true * len(classes) + pred, minlength=len(classes) ** 2).reshape(len(classes), len(classes))
        iou = iou_per_class(confusion)
        metrics = {f"devel_iou_{c}": float(v) for c, v in zip(classes, iou) if not np.isnan(v)}
        metrics["devel_mean_iou"] = float(np.nanmean(iou[1:]))
        metrics["devel_pixel_accuracy"] = float(np.trace(confusion) / max(confusion.sum(), 1))
        job.add_output_metrics(metrics)
        job.write_confusion_matrix(confusion.tolist(), classes, purpose="devel")
    return model
