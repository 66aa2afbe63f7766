"""Map stage base class and registry: a stage turns one sample dict into another inside tf.data."""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, PositiveInt

from brevetti_pipe._util.registry import Registry
from brevetti_pipe.config._errors import validate_model
from brevetti_pipe.config._schema import StrictModel
from brevetti_pipe.errors import StageError

if TYPE_CHECKING:
    import pandas as pd
    import tensorflow as tf

__all__ = ["Stage", "STAGES", "ImageSize", "Roi"]

STAGES: Registry[type["Stage"]] = Registry("stage", config_group="pipeline", entry_points="brevetti_pipe.stages")


def _check_roi(roi: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = roi
    if min(roi) < 0 or x0 >= x1 or y0 >= y1:
        raise StageError(f"a ROI is (x0, y0, x1, y1) in pixels with 0 <= x0 < x1 and 0 <= y0 < y1; got {roi}")
    return roi


#: (height, width) of an image stage's output, both >= 1.
ImageSize = tuple[PositiveInt, PositiveInt]
#: A region of interest (x0, y0, x1, y1): a non-empty box of pixels; errors name ``rois[i]``.
Roi = Annotated[tuple[int, int, int, int], AfterValidator(_check_roi)]


def stage_seed_id(key: str) -> int:
    """The seed id of a stage keyed ``key`` (``pipeline.<name>`` or its registry name)."""
    return zlib.crc32(key.encode("utf-8")) & 0x7FFFFFFF


def _standalone(call: Callable[..., Any]) -> Callable[..., Any]:
    """Let a stage's ``__call__`` take what a notebook has: one sample or a batch (tensors, numpy
    arrays, lists, strings), and ``seed`` as None (the stage's own), an int or a tensor."""

    @functools.wraps(call)
    def wrapper(self: Stage, x: Any, seed: Any = None, *args: Any, **kwargs: Any) -> Any:
        import tensorflow as tf

        if not isinstance(x, dict):
            raise StageError(f"{type(self).__name__} takes a sample dict (key -> value); got {type(x).__name__}")
        if not (isinstance(seed, tf.Tensor) and seed.shape == (2,) and seed.dtype == tf.int64):
            seed = self.seed_tensor(seed)
        x = {k: v if isinstance(v, (tf.Tensor, tf.Variable)) else _to_tensor(v) for k, v in x.items()}
        if type(self).prepare is not Stage.prepare and tf.executing_eagerly():
            x = _prepared(self, x)
        ranks = self.sample_ranks()
        batched = [k for k, r in ranks.items() if k in x and x[k].shape.rank == r + 1]
        if not batched:
            return call(self, x, seed, *args, **kwargs)
        n = tf.shape(x[batched[0]], out_type=tf.int64)[0]
        fold_in = tf.random.experimental.stateless_fold_in

        def one(i: tf.Tensor, element: dict[str, tf.Tensor]) -> Any:
            return call(self, element, fold_in(seed, i), *args, **kwargs)

        ds = tf.data.Dataset.from_tensor_slices((tf.range(n), x)).map(tf.autograph.experimental.do_not_convert(one))
        return ds.batch(tf.maximum(n, 1)).get_single_element()

    wrapper._standalone = True  # type: ignore[attr-defined]
    return wrapper


def _prepared(stage: Stage, x: dict[str, Any]) -> dict[str, Any]:
    """Run ``stage.prepare`` on the string values of an eager call (one sample or a batch), adding
    the columns it makes (a converted TIFF, a mask PNG) as tensors."""
    import getpass
    import os
    import tempfile

    import pandas as pd
    import tensorflow as tf

    ranks = {k: v.shape.rank for k, v in x.items() if v.dtype == tf.string and v.shape.rank in (0, 1)}
    if not ranks:
        return x
    batch = max(ranks.values()) == 1
    columns = {k: [b.decode("utf-8") for b in (x[k].numpy().tolist() if r == 1 else [x[k].numpy()])]
               for k, r in ranks.items() if r == (1 if batch else 0)}
    if len({len(v) for v in columns.values()}) != 1:
        return x
    samples = pd.DataFrame(columns)
    try:
        user = getpass.getuser()
    except Exception:  # no user name in this environment
        user = "user"
    out = stage.prepare(samples, os.path.join(tempfile.gettempdir(), f"brevetti-pipe-prepare-{user}"))
    x = dict(x)
    for column in out.columns:
        if column not in samples.columns or not out[column].equals(samples[column]):
            values = out[column].tolist()
            x[str(column)] = tf.constant(values if batch else values[0])
    return x


def _to_tensor(value: Any) -> Any:
    import numpy as np
    import tensorflow as tf

    if isinstance(value, np.ndarray) and value.dtype.kind in "OU":
        value = value.astype(object).tolist()
    return tf.convert_to_tensor(value)


class _NoParams(StrictModel):
    """No parameters."""


class Stage:
    """Base class of map stages.

    A stage has three parts: a pydantic ``Params`` model (the config), this thin class, and
    pure tensor functions doing the work. It is called once per sample inside the tf.data
    graph with the sample dict and a stateless seed (shape ``[2]``, int64) that is unique to
    (job seed, epoch, sample, stage)::

        class Invert(Stage, name="invert"):
            class Params(StrictModel):
                key: str = "img"

            def __call__(self, x, seed=None):
                return {**x, self.params.key: 255.0 - x[self.params.key]}

    Positional arguments map to the fields of ``Params`` in declaration order, so
    ``OneHotEncoder(classes)`` works as in brevettiai.
    """

    name: ClassVar[str] = ""
    #: True when the stage draws random numbers; the stages before the first random one
    #: form the deterministic prefix that can be cached.
    random: ClassVar[bool] = False
    #: True when a null ``classes`` parameter is filled with the job's class names.
    fills_classes: ClassVar[bool] = False
    #: The stage's name in the chain (``pipeline.<key>``): it keys the stage's random draws, so
    #: adding or removing another stage does not change them. None: the registry name.
    key: str | None = None

    #: The parameter model; a subclass sets its own (nested class or assignment).
    Params: ClassVar[type[Any]] = _NoParams
    #: The validated parameters (an instance of the subclass's ``Params``).
    params: Any

    def __init_subclass__(cls, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name:
            cls.name = name
            STAGES.register(name, cls)
        call = cls.__dict__.get("__call__")
        if call is not None and not getattr(call, "_standalone", False):
            cls.__call__ = _standalone(call)  # type: ignore[method-assign]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) == 1 and isinstance(args[0], self.Params) and not kwargs:
            self.params = args[0]
            return
        fields = list(self.Params.model_fields)
        if len(args) > len(fields):
            raise StageError(f"{type(self).__name__} takes at most {len(fields)} positional arguments")
        data = dict(zip(fields, args))
        overlap = set(data) & set(kwargs)
        if overlap:
            raise StageError(f"{type(self).__name__} got {sorted(overlap)} both positionally and by name")
        data.update(kwargs)
        self.params = validate_model(self.Params, data, prefix=f"pipeline.{self.name or type(self).__name__}")

    def __getattr__(self, item: str) -> Any:
        # brevettiai users read stage parameters as attributes (ip.target_size)
        params = self.__dict__.get("params")
        if params is not None and item in type(params).model_fields:
            return getattr(params, item)
        raise AttributeError(f"{type(self).__name__!s} has no attribute {item!r}")

    def get_config(self) -> dict[str, Any]:
        """The stage's config: ``{"type": name, **params}`` (JSON-compatible)."""
        return {"type": self.name, **self.params.model_dump(mode="json")}

    @classmethod
    def from_config(cls, config: dict[str, Any] | BaseModel, *, where: str = "pipeline") -> Stage:
        """Build a stage from :meth:`get_config` output (or a ``pipeline.<name>`` config entry)."""
        data = dict(config.model_dump() if isinstance(config, BaseModel) else config)  # extras included
        kind = data.pop("type", cls.name or None)
        target = cls if cls.name and kind == cls.name else STAGES.get(str(kind), where=f"{where}.type")
        try:
            return target(**data)
        except StageError as exc:
            raise StageError(str(exc).replace(f"pipeline.{target.name}", where)) from None

    def reads(self) -> set[str] | None:
        """Element keys this stage reads (None: unknown, so every key is kept for it)."""
        return None

    def sample_ranks(self) -> dict[str, int]:
        """Element keys and their rank in one sample (``path``: 0, ``img``: 3): a call whose value
        for such a key has one more dimension is on a batch, run sample by sample."""
        return {}

    def seed_tensor(self, seed: Any = None) -> tf.Tensor:
        """The ``[2]`` int64 seed of a standalone call: ``(seed, stage seed id)`` for an int or scalar
        tensor, ``(0, stage seed id)`` for None (the stage's own, from its key), a ``[2]`` value as is."""
        import tensorflow as tf

        own = stage_seed_id(self.key or self.name or type(self).__name__)
        if seed is None:
            return tf.constant([0, own], tf.int64)
        value = tf.cast(tf.convert_to_tensor(seed), tf.int64)
        if value.shape.rank == 0:
            return tf.stack([value, tf.constant(own, tf.int64)])
        if value.shape != (2,):
            raise StageError(f"A stage seed is an int or a [2] tensor; got shape {value.shape.as_list()}")
        return value

    def prepare(self, samples: pd.DataFrame, cache_dir: str) -> pd.DataFrame:
        """Per-sample work outside the graph, done once before it is built (default: none).

        A stage whose inputs TensorFlow cannot read natively converts them here into files it
        can (e.g. TIFF -> PNG, annotation JSON -> mask PNG) under ``cache_dir`` and returns the
        samples with the columns its ``__call__`` reads. Results are cached by content, so the
        graph itself stays pure TensorFlow.
        """
        return samples

    def prepare_reads_files(self, samples: pd.DataFrame) -> bool:
        """True when :meth:`prepare` opens the samples' files, which must then be local before it
        runs (default: whether the stage overrides ``prepare``). False lets a generator start on
        the first remote files while the rest are still being fetched."""
        return type(self).prepare is not Stage.prepare

    #: True when :meth:`check` judges each sample on its own file(s) and the stage's parameters
    #: alone, so a rerun may reuse its verdict for an unchanged file (see ``data._verdicts``).
    check_per_sample: bool = False

    def check(self, samples: pd.DataFrame) -> dict[int, str]:
        """Find samples this stage cannot process: ``{row position: reason}`` (default: none).

        Runs once before training on local files, so that a corrupt file is reported by
        name (or skipped, by policy) instead of failing deep inside the graph.
        """
        return {}

    def __call__(self, x: dict[str, tf.Tensor], seed: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.model_dump().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.params == self.params  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]
