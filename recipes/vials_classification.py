"""Vials classification recipe: a small CNN; the framework trains, evaluates and exports it."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from brevetti_pipe.config import JobSettings
from brevetti_pipe.recipes._input import check_input_size
from brevetti_pipe.run.recipe import recipe


class VialsClassificationSettings(JobSettings):
    """Settings of the vials classification recipe (``settings.*``)."""

    epochs: int = Field(8, ge=1, description="Training epochs")
    batch_size: int = Field(16, ge=1, description="Batch size")
    learning_rate: float = Field(0.002, gt=0, description="Adam learning rate")
    filters: int = Field(16, ge=1, description="Filters of the first conv layer (doubling per block)")


@recipe("vials_classification", settings=VialsClassificationSettings, task="classification")
def build_model(job: Any, input_shape: tuple[int, ...], classes: list[str]) -> Any:
    """Three conv blocks and a flattened softmax head (caps are small, position-bound features)."""
    import keras

    check_input_size(input_shape, "vials_cnn (3 pooling steps)", minimum=8)
    inputs = x = keras.Input(shape=input_shape)
    for block in range(3):
        x = keras.layers.Conv2D(job.settings.filters * 2**block, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    outputs = keras.layers.Dense(len(classes), activation="softmax")(keras.layers.Flatten()(x))
    return keras.Model(inputs, outputs, name="vials_cnn")
