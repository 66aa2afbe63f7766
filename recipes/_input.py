"""Input-size checks of the built-in recipes: an image too small for the model is a ConfigError naming the key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from brevetti_pipe.errors import ConfigError

__all__ = ["check_input_size"]


def check_input_size(size: Sequence[int | None], model: str, minimum: int, multiple: int = 1,
                     key: str = "pipeline.image.target_size", received: Any = None) -> None:
    """Raise a ConfigError unless height and width (``size[:2]``; None = not known yet) fit ``model``.

    Args:
        size: (height, width, ...) of the model input.
        model: the model and why it needs the size, e.g. ``"vials_cnn (3 pooling steps)"``.
        minimum: the least height and width.
        multiple: height and width must be multiples of it (e.g. 4 for two pooling steps with skips).
        key: the config key that sets the size; ``received`` its value (default: the size).

    Raises:
        ConfigError: naming ``key``, the value received and the size allowed.
    """
    height, width = size[0], size[1]
    if all(d is None or (d >= minimum and d % multiple == 0) for d in (height, width)):
        return
    need = f"at least {minimum}" + (f" and a multiple of {multiple}" if multiple > 1 else "")
    received = [height, width] if received is None else received
    raise ConfigError(f"Invalid value for '{key}': {model} needs a height and width {need}; this gives "
                      f"{height}x{width}. Received: {key}={received}")
