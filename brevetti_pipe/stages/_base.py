"""Map stage base class and registry: a stage turns one sample dict into another inside tf.data."""

from __future__ import annotations

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
        raise ValueError("a ROI is (x0, y0, x1, y1) in pixels with 0 <= x0 < x1 and 0 <= y0 < y1")
    return roi


#: (height, width) of an image stage's output, both >= 1.
ImageSize = tuple[PositiveInt, PositiveInt]
#: A region of interest (x0, y0, x1, y1): a non-empty box of pixels; errors name ``rois[i]``.
Roi = Annotated[tuple[int, int, int, int], AfterValidator(_check_roi)]


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
