"""OneHotEncoder stage: category string -> one-hot (or multi-hot) float vector."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from brevetti_pipe._util.category import category_label
from brevetti_pipe.config._schema import StrictModel
from brevetti_pipe.errors import StageError
from brevetti_pipe.stages._base import Stage

if TYPE_CHECKING:
    import pandas as pd
    import tensorflow as tf

__all__ = ["OneHotEncoder", "OneHotEncoderParams"]


class OneHotEncoderParams(StrictModel):
    """Parameters of :class:`OneHotEncoder`."""

    classes: list[str] | None = Field(
        None, description="Class names in label order; null: filled in from the data by the job"
    )
    input_key: str = Field("category", description="Element key holding the category ('a' or 'a/b')")
    output_key: str = Field("onehot", description="Element key receiving the encoding")
    multi_label: bool = Field(
        False, description="Multi-hot: every '/'-separated part of the category is a label"
    )
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="Label smoothing epsilon")

    @field_validator("classes", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, (list, tuple, str)):
            value = list(value)  # numpy arrays, pandas Index, ...
        if isinstance(value, (list, tuple)):
            value = [category_label(v) for v in value]
            if len(set(value)) != len(value):
                raise StageError(f"classes must be unique, got {value}")
        return value


class OneHotEncoder(Stage, name="onehot_encoder"):
    """Encodes the category of a sample against a fixed class list.

    Input: ``x[input_key]``, a string scalar; for a category tuple, its parts joined by '/'.
    Output: ``x[output_key]``, float32 ``[len(classes)]``. An unknown category (single label)
    stops the graph with an error naming the category and the classes.
    """

    fills_classes = True

    Params = OneHotEncoderParams

    @property
    def _index_column(self) -> str:
        return f"_class_index_{self.params.input_key}"

    def reads(self) -> set[str]:
        return {self.params.input_key, self._index_column}

    def sample_ranks(self) -> dict[str, int]:
        return {self.params.input_key: 0}

    def prepare_reads_files(self, samples: pd.DataFrame) -> bool:
        return False  # reads the category column only

    def prepare(self, samples: pd.DataFrame, cache_dir: str) -> pd.DataFrame:
        """Map each sample's category to its class index once (single label), naming unknown categories."""
        p = self.params
        if p.multi_label or not p.classes or p.input_key not in samples.columns:
            return samples
        labels = samples[p.input_key].map(category_label)
        index = labels.map({c: i for i, c in enumerate(p.classes)})
        unknown = sorted(set(labels[index.isna()]))
        if unknown:
            raise StageError(f"OneHotEncoder: unknown category {unknown[0]!r} ({len(unknown)} unknown); classes: {p.classes}")
        return samples.assign(**{self._index_column: index.astype("int64")})

    def __call__(self, x: dict[str, tf.Tensor], seed: tf.Tensor | None = None) -> dict[str, Any]:
        import tensorflow as tf

        p = self.params
        if not p.classes:
            raise StageError(
                "OneHotEncoder has no classes. Set pipeline.<name>.classes, or leave it null in a job "
                "so the classes are taken from the dataset folders."
            )
        classes = tf.constant(p.classes)
        if not p.multi_label and self._index_column in x:
            onehot = tf.one_hot(x[self._index_column], len(p.classes), dtype=tf.float32)
            if p.label_smoothing:
                onehot = onehot * (1.0 - p.label_smoothing) + p.label_smoothing / len(p.classes)
            return {**x, p.output_key: onehot}
        category = x[p.input_key]
        if p.multi_label:
            parts = tf.strings.split(category, "/")
            hits = tf.reduce_any(tf.equal(parts[:, tf.newaxis], classes[tf.newaxis, :]), axis=0)
        else:
            hits = tf.equal(classes, category)
            check = tf.debugging.Assert(
                tf.reduce_any(hits),
                ["OneHotEncoder: unknown category", category, "; classes:", classes],
                summarize=len(p.classes),
            )
            with tf.control_dependencies([check]):
                hits = tf.identity(hits)
        onehot = tf.cast(hits, tf.float32)
        if p.label_smoothing:
            onehot = onehot * (1.0 - p.label_smoothing) + p.label_smoothing / len(p.classes)
        return {**x, p.output_key: onehot}
