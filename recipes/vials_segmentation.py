"""Vials segmentation recipe: a tiny U-Net for caps and liquid; the framework trains, scores and exports it."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from brevetti_pipe.config import JobSettings
from brevetti_pipe.recipes._input import check_input_size
from brevetti_pipe.run.recipe import recipe


class VialsSegmentationSettings(JobSettings):
    """Settings of the vials segmentation recipe (``settings.*``)."""

    epochs: int = Field(12, ge=1, description="Training epochs")
    batch_size: int = Field(8, ge=1, description="Batch size")
    learning_rate: float = Field(0.003, gt=0, description="Adam learning rate")
    filters: int = Field(16, ge=1, description="Filters of the first U-Net level (doubling per level)")


@recipe("vials_segmentation", settings=VialsSegmentationSettings, task="segmentation")
def build_unet(job: Any, input_shape: tuple[int, ...], classes: list[str]) -> Any:
    """A two-level U-Net with a softmax over ``classes`` (background first)."""
    from keras import Input, Model, layers

    def block(x: Any, f: int) -> Any:
        return layers.Conv2D(f, 3, padding="same", activation="relu")(layers.Conv2D(f, 3, padding="same", activation="relu")(x))

    check_input_size(input_shape, "vials_unet (2 pooling steps whose upsampled outputs join the skips)", 4, multiple=4)
    f = job.settings.filters
    e1 = block(inputs := Input(shape=input_shape), f)
    e2 = block(layers.MaxPooling2D()(e1), f * 2)
    d2 = block(layers.Concatenate()([layers.UpSampling2D()(block(layers.MaxPooling2D()(e2), f * 4)), e2]), f * 2)
    d1 = block(layers.Concatenate()([layers.UpSampling2D()(d2), e1]), f)
    return Model(inputs, layers.Conv2D(len(classes), 1, activation="softmax")(d1), name="vials_unet")
