"""One text label per category value: the form the graph, the class lists, the sampler groups,
the split file and the pivot tables all use."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["category_label"]


def category_label(value: Any) -> str:
    """``("a", "b")`` -> ``"a/b"``; a missing value (None, NaN) -> ``""``, the label of a sample
    with no category folder (``()``); anything else -> ``str(value)``."""
    if isinstance(value, tuple):
        return "/".join(map(str, value))
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)
