"""Data layer: ``pipeline.<name>`` entries -> stages, and a job's samples -> a configured DataGenerator."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from brevetti_pipe.config import JobConfig, validate_model
from brevetti_pipe.data._generator import DataGenerator
from brevetti_pipe.data._sampler import StratifiedSampler
from brevetti_pipe.stages import STAGES, ImagePipeline, Stage
from brevetti_pipe.storage import IoTools

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["build_stages", "make_generator", "thumbnail_generator", "validate_pipeline"]


def validate_pipeline(config: JobConfig) -> None:
    """Check every ``pipeline.<name>`` entry (type and parameters) before any data is read."""
    for name, spec in config.pipeline.items():
        stage_cls = STAGES.get(spec.type, where=f"pipeline.{name}.type")
        validate_model(stage_cls.Params, spec.params(), prefix=f"pipeline.{name}")


def build_stages(config: JobConfig, classes: Callable[[], list[str]] | None = None) -> list[Stage]:
    """The map stages of ``pipeline.*`` in chain order, each keyed by its name (which seeds its draws).

    Args:
        classes: the job's class names, for stages that take them from the data
            (``fills_classes``) when their ``classes`` is null; None leaves them null.
    """
    stages = []
    for name, spec in config.pipeline.items():
        params = spec.params()
        stage_cls = STAGES.get(spec.type, where=f"pipeline.{name}.type")
        if classes is not None and stage_cls.fills_classes and params.get("classes") is None:
            params["classes"] = classes()
        stage = Stage.from_config({"type": spec.type, **params}, where=f"pipeline.{name}")
        stage.key = name
        stages.append(stage)
    return stages


def make_generator(
    samples: pd.DataFrame, config: JobConfig, io: IoTools, stages: Sequence[Stage], *, seed: int,
    train: bool = False, shard: tuple[int, int] | None = None, output_structure: Any = None, **kwargs: Any,
) -> DataGenerator:
    """A DataGenerator over ``samples`` with the configured stages, seed and data options.

    With ``train=True`` it shuffles, repeats, draws with the configured sampler and takes the
    ``shard`` (workers, index); otherwise it reads each sample once, in order, and leaves out
    the random stages (augmentation).
    """
    sampler = None
    if train and config.sampler.groupby:
        sampler = StratifiedSampler(config.sampler.groupby, config.sampler.weighting, seed=seed)
    options: dict[str, Any] = dict(
        seed=seed, shuffle=train, repeat=train, sampler=sampler, output_structure=output_structure,
        shard=shard if train else None,
        num_parallel_calls=config.data.num_parallel_calls, prefetch=config.data.prefetch,
        io=io, stages=[st for st in stages if train or not st.random], cache=config.data.cache,
        cache_max_bytes=config.data.cache_max_bytes,
    )
    options.update(kwargs)
    return DataGenerator(samples, **options)


def thumbnail_generator(samples: pd.DataFrame, config: JobConfig, io: IoTools, size: int) -> DataGenerator:
    """``img`` thumbnails (``size`` x ``size``, values in [0, 1]) of ``samples`` in the pipeline's colour mode."""
    color = "rgb"
    for spec in config.pipeline.values():
        if "color_mode" in STAGES.get(spec.type, where="pipeline").Params.model_fields:
            color = spec.params().get("color_mode", "rgb")
            break
    return DataGenerator(samples, batch_size=16, io=io, cache=False).map(
        ImagePipeline(target_size=(size, size), color_mode=color, antialias=True, rescale="unit")
    )
