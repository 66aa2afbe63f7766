"""Pydantic models of the composed config: the one validated settings tree a job runs from."""

from __future__ import annotations

import os
import re
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from brevetti_pipe._util.paths import LOCAL_PROTOCOLS, strip_local_scheme
from brevetti_pipe.errors import ConfigError

__all__ = [
    "StrictModel",
    "JobSettings",
    "PlatformConfig",
    "JobSection",
    "DatasetConfig",
    "SplitConfig",
    "SamplerConfig",
    "DataConfig",
    "ComponentSpec",
    "TrainingConfig",
    "EvaluationConfig",
    "OperatingPointConfig",
    "ExportConfig",
    "JobConfig",
    "PURPOSES",
]

PURPOSES = ("train", "devel", "test")

# A job id names one folder under <root>/jobs: one path part, never '..', '/', '\\' or '~'.
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class JobSettings(StrictModel):
    """Base class of a recipe's own typed settings tree (``settings.*`` in the config).

    Subclass it and annotate your job with it::

        class MySettings(JobSettings):
            epochs: int = Field(5, description="Training epochs")

        class MyJob(Job):
            settings: MySettings
    """


class PlatformConfig(StrictModel):
    """Where the platform lives and how to talk to it."""

    type: str = Field("local", description="Registered platform backend")
    root: str = Field(..., description="fsspec URL of the platform root (local path, s3://, gs://, memory://)")
    cache_dir: str | None = Field(
        None, description="Local directory caching remote dataset files; default: under the job temp dir"
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="Extra fsspec options for platform.root (e.g. endpoint_url)"
    )
    retry_seconds: float = Field(
        60.0, gt=0, description="Transient storage faults are retried with backoff for at most this long"
    )

    @field_validator("root")
    @classmethod
    def _check_root(cls, value: str) -> str:
        value = _one_slash_url(value)
        scheme, sep, rest = value.partition("://")
        if not value.strip():
            raise ConfigError("must not be empty; allowed: a folder or URL, e.g. /data/platform or s3://bucket/platform")
        if sep and not rest.strip("/") and scheme not in ("file", "local", "memory"):
            raise ConfigError(f"a {scheme}:// URL needs a location after it, e.g. {scheme}://bucket/platform")
        return value

    @field_validator("cache_dir")
    @classmethod
    def _check_cache_dir(cls, value: str | None) -> str | None:
        return _local_folder(value, "/var/cache/brevetti-pipe", "a cache under the job's temp dir")


_ONE_SLASH = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+):/(?!/)")


def _one_slash_url(value: str) -> str:
    """``file:/x`` (one slash) as ``/x`` (:func:`strip_local_scheme`, as fsspec reads it); ``s3:/b/x`` and
    the like refused: a URL missing a slash, which every reader would take for a relative folder named ``s3:``."""
    m = _ONE_SLASH.match(value)
    if m is None:
        return value
    scheme = m["scheme"].lower()
    if scheme in LOCAL_PROTOCOLS:  # FILE:/x too: the config hands every reader /x
        return strip_local_scheme(scheme + value[len(scheme):])
    raise ConfigError(f"{value!r} is a URL missing a slash: write {m['scheme']}://{value[m.end():]}")


#: words that read as a setting, not as a folder's name (a quoted "false" from JSON, ``data.cache=off``)
_CACHE_WORDS = ("auto", "true", "false", "yes", "no", "on", "off", "none", "null", "memory", "disk")


def data_cache_value(value: Any) -> bool | str:
    """``data.cache`` (and ``DataGenerator(cache=)``): True, False, ``"auto"`` or a local folder, which is
    read as :func:`_local_folder` reads ``platform.cache_dir``.

    Raises:
        ConfigError: another type, a remote URL, or a word such as ``"false"`` or ``"off"`` (a string
            that would otherwise become a folder of that name).
    """
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, bool) or value == "auto":
        return value
    if not isinstance(value, str) or not value.strip() or value.strip().lower() in _CACHE_WORDS:
        hint = (f" ({value!r} is a string: write it without quotes, or ./{value.strip()} for a folder of that name)"
                if isinstance(value, str) and value.strip() else "")
        raise ConfigError(f"allowed: auto, true, false or a local directory; got {value!r}{hint}")
    return cast(str, _local_folder(value, "/var/cache/brevetti-pipe/prefix", "auto"))  # a str in, a str out


def _local_folder(value: str | None, example: str, default: str) -> str | None:
    """A local folder: ``~`` expanded, ``file://`` (or ``local://``) dropped; another URL is refused (the
    folder is written with plain file calls, so ``s3://...`` would make a folder named ``s3:``)."""
    if value is None:
        return None
    value = _one_slash_url(value)
    scheme, sep, rest = value.partition("://")
    if sep and scheme not in LOCAL_PROTOCOLS:
        raise ConfigError(f"must be a local directory, not a {scheme}:// URL, e.g. {example}")
    if sep and not rest.strip("/"):
        raise ConfigError(f"a {scheme}:// URL needs a folder after it, e.g. {scheme}://{example}")
    value = strip_local_scheme(value)  # file://tmp/x is ./tmp/x, as fsspec and storage.local_path read it
    if not value.strip():
        raise ConfigError(f"must not be empty; leave it null for {default}")
    return os.path.expanduser(value)


class JobSection(StrictModel):
    """Identity and reproducibility of one run."""

    id: str | None = Field(None, description="Job id; a fresh UUID when null")
    name: str = Field("brevetti_pipe", description="Human-readable job name")
    seed: int = Field(0, ge=0, lt=2**31, description="The one seed everything random derives from")
    settings_json: str | None = Field(
        None, description="Platform settings JSON (path or URL); default <root>/jobs/<id>/job.json"
    )
    deterministic: bool = Field(True, description="Enable TensorFlow op determinism for bit-exact runs")
    temp_dir: str | None = Field(None, description="Local scratch directory; default: a fresh temp dir")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("temp_dir")
    @classmethod
    def _check_temp_dir(cls, value: str | None) -> str | None:
        return _local_folder(value, "/scratch/brevetti-pipe", "a fresh temp dir")

    @field_validator("id", mode="before")
    @classmethod
    def _check_id(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # job.id=42 on the command line
        if isinstance(value, str) and (not _JOB_ID.fullmatch(value) or ".." in value):
            raise ConfigError(
                "a job id is one folder name under <platform.root>/jobs: 1-128 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit, without '..'"
            )
        return value


class DatasetConfig(StrictModel):
    """One dataset: a folder of category folders of images, on any fsspec URL."""

    url: str = Field(..., description="fsspec URL of the dataset root")
    id: str | None = Field(None, description="Dataset id; default: the last part of the URL")
    classes: list[str] | None = Field(
        None, description="Class names in label order; default: the category folders found, sorted"
    )
    category_map: dict[str, str] | None = Field(
        None, description="Folder name -> category; folders not listed keep their name"
    )
    folders: list[str] | None = Field(None, description="Only list these top-level folders")
    generator: str | None = Field(
        None, description="Registered generator that creates the dataset when the URL is missing"
    )
    generator_params: dict[str, Any] = Field(default_factory=dict, description="Arguments for the generator")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="Extra fsspec options")


class SplitConfig(StrictModel):
    """How samples are assigned to train / devel / test."""

    type: Literal["sample_split"] = Field(
        "sample_split", description="The split strategy (one so far: seeded, stratified, persisted)"
    )
    fractions: dict[str, float] = Field(
        default_factory=lambda: {"train": 0.8, "devel": 0.2, "test": 0.0},
        description="Fraction of samples per purpose; must sum to 1",
    )
    stratify: list[str] = Field(default_factory=lambda: ["category"], description="Columns to stratify by")
    unique_key: str = Field("etag", description="Samples sharing this value always share a purpose")
    seed: int | None = Field(None, description="Split seed; default: job.seed")
    file: str = Field("sample_identification.csv", description="Artifact file persisting the split")
    manual_column: str | None = Field(
        None, description="Column of a user CSV/table whose non-empty values force a purpose"
    )
    mode: Literal["murmurhash3"] | None = Field(
        None, description="null: ours; murmurhash3: brevettiai's hash assignment (train share: fractions.train, the "
        "rest devel), recomputing its old split decisions from the same seed (needs brevetti_pipe[brevettiai])"
    )

    @field_validator("file")
    @classmethod
    def _check_file(cls, value: str) -> str:
        parts = value.replace("\\", "/").split("/")
        if not value.strip() or value.startswith(("/", "\\", "~")) or ":" in parts[0] or ".." in parts:
            raise ConfigError("allowed: a file name relative to the job's artifacts folder, without '..'")
        return value

    @field_validator("fractions")
    @classmethod
    def _check_fractions(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(PURPOSES))
        if unknown:
            raise ConfigError(f"unknown purpose(s) {unknown}; allowed: {list(PURPOSES)}")
        if any(v < 0 for v in value.values()):
            raise ConfigError(f"fractions must be >= 0, got {value}")
        total = sum(value.values())
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"fractions must sum to 1, got {total:g} from {value}")
        return value


class SamplerConfig(StrictModel):
    """How training samples are drawn each epoch."""

    type: Literal["stratified"] = Field("stratified", description="The sampler (one so far: weighted by group)")
    groupby: list[str] | None = Field(None, description="Columns to group by; null = plain shuffle")
    weighting: Literal["uniform", "count", "sqrt", "log", "logx+1"] | dict[str, float] = Field(
        "count", description="uniform (equal per group), count (proportional), sqrt / log / logx+1 of the group "
        "size, or weights per group"
    )


class DataConfig(StrictModel):
    """Data-handling policies shared by all stages."""

    on_bad_sample: Literal["fail", "skip"] = Field(
        "fail", description="Unreadable samples: fail naming the file, or skip them (listed in bad_samples.csv)"
    )
    check_samples: bool = Field(True, description="Check every sample (full decode, annotations) before training")
    num_parallel_calls: int | Literal["autotune"] = Field(
        "autotune", description="Parallel map calls: autotune (or -1, tf.data.AUTOTUNE) or a count >= 1"
    )
    prefetch: int | Literal["autotune"] = Field(
        "autotune", description="Batches to prefetch: autotune (or -1, tf.data.AUTOTUNE) or a count >= 0"
    )
    cache: bool | str = Field(
        "auto", description="Cache the deterministic prefix of the stage chain (decode, resize, ...): auto (in memory "
        "when it fits cache_max_bytes, else stream), true (memory), false, or a local directory"
    )
    cache_max_bytes: int = Field(
        1 << 30, ge=0, description="Budget of cache=auto in bytes (default 1 GiB), also capped by half the available memory"
    )

    @field_validator("cache")
    @classmethod
    def _check_cache(cls, value: bool | str) -> bool | str:
        return data_cache_value(value)

    @field_validator("num_parallel_calls", "prefetch")
    @classmethod
    def _check_count(cls, value: int | str, info: ValidationInfo) -> int | str:
        least = 1 if info.field_name == "num_parallel_calls" else 0
        if isinstance(value, int) and value != -1 and value < least:
            raise ConfigError(f"allowed: 'autotune', -1 (the same) or a count >= {least}")
        return value


class DistributionConfig(StrictModel):
    """Which tf.distribute strategy the run step builds its model under."""

    strategy: Literal["default", "mirrored", "multi_worker"] = Field(
        "default", description="default (one device), mirrored (all local GPUs), multi_worker (workers from TF_CONFIG)"
    )


class SweepConfig(StrictModel):
    """Settings for sweeps (``--multirun``)."""

    objective: str | None = Field(
        None, description="Metric a run returns to the sweeper (e.g. devel_accuracy for Optuna); null returns all metrics"
    )


class ComponentSpec(StrictModel):
    """A registered component chosen by ``type`` plus its own parameters (validated by it)."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(..., description="Registered name")

    def params(self) -> dict[str, Any]:
        """The parameters besides ``type``."""
        return dict(self.model_extra or {})


class TrainingConfig(StrictModel):
    """How the framework trains a model-builder recipe's model (``training.*``)."""

    epochs: int | None = Field(None, ge=1, description="Training epochs; null = settings.epochs, else 10")
    batch_size: int | None = Field(None, ge=1, description="Global batch size; null = settings.batch_size, else 32")
    optimizer: str = Field("adam", description="Keras optimizer name, used when the builder leaves the model uncompiled")
    learning_rate: float | None = Field(
        None, gt=0, description="Optimizer learning rate; null = settings.learning_rate, else the optimizer's default"
    )
    mixed_precision: bool = Field(False, description="Train with the mixed_float16 policy (float32 outputs)")
    jit_compile: bool | Literal["auto"] = Field(False, description="XLA-compile the train step (Keras jit_compile)")
    verbose: Literal["auto", 0, 1, 2] = Field(
        "auto", description="Keras progress: auto (a bar on a terminal, one line per epoch otherwise), 0, 1 or 2"
    )
    resume: bool = Field(True, description="Checkpoint every epoch under artifacts/checkpoint/ and continue a rerun of the job id")
    init_from: str | None = Field(
        None, description="Warm start: a model.tar.gz URL or a job id on this platform whose weights are loaded"
    )
    init_from_partial: bool = Field(False, description="Allow init_from to leave layers that do not match untouched")
    callbacks: dict[str, ComponentSpec] = Field(
        default_factory=dict,
        description="Registered Keras callbacks by name (early_stopping, reduce_lr_on_plateau, model_checkpoint, "
        "csv_logger); type defaults to the name",
    )

    @field_validator("callbacks", mode="before")
    @classmethod
    def _type_from_name(cls, value: Any) -> Any:
        # `training.callbacks.early_stopping.patience=2` needs no `type:`; null removes an entry
        if isinstance(value, dict):
            return {k: ({"type": k, **v} if isinstance(v, dict) and "type" not in v else v)
                    for k, v in value.items() if v is not None}
        return value


class OperatingPointConfig(StrictModel):
    """The accept/reject threshold chosen on devel (classification)."""

    accept_class: str = Field(..., description="The class a line accepts (e.g. good)")
    max_escape_rate: float = Field(
        0.01, ge=0, le=1, description="Largest fraction of defective devel samples that may be accepted"
    )


class EvaluationConfig(StrictModel):
    """What the framework evaluates after training (``evaluation.*``)."""

    purposes: list[Literal["train", "devel", "test"]] | None = Field(
        None, description="Purposes to evaluate; null = devel, plus test when the split has test samples"
    )
    operating_point: OperatingPointConfig | None = Field(
        None, description="Pick a threshold on P(accept_class) on devel (classification)"
    )


ExportFormat = Literal["keras", "saved_model", "onnx", "tflite"]
DEFAULT_EXPORT_FORMATS: tuple[ExportFormat, ...] = ("keras", "saved_model")


class ExportConfig(StrictModel):
    """What goes into artifacts/model.tar.gz (``export.*``)."""

    formats: list[ExportFormat] = Field(
        default_factory=lambda: list(DEFAULT_EXPORT_FORMATS), description="Model formats inside the archive"
    )
    parity_samples: int = Field(64, ge=0, description="Devel samples run through every format to prove they agree")
    tolerance: float = Field(1e-4, ge=0, description="Largest allowed |output difference| between formats")


class JobConfig(StrictModel):
    """The complete validated job config (everything but Hydra's own ``hydra`` node)."""

    platform: PlatformConfig
    job: JobSection = Field(default_factory=JobSection)
    datasets: dict[str, DatasetConfig] = Field(default_factory=dict)
    split: SplitConfig = Field(default_factory=SplitConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    distribution: DistributionConfig = Field(default_factory=DistributionConfig)
    pipeline: dict[str, ComponentSpec] = Field(default_factory=dict)
    callbacks: dict[str, ComponentSpec] = Field(default_factory=dict)
    training: TrainingConfig = Field(default_factory=lambda: TrainingConfig())
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    run: str | None = Field(None, description="Registered recipe run step")
    settings: dict[str, Any] = Field(default_factory=dict, description="The recipe's typed settings")

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        # `~pipeline.x` is the CLI way to remove; a null entry (e.g. from JSON) means the same.
        if isinstance(data, dict):
            for key in ("pipeline", "callbacks", "datasets"):
                if isinstance(data.get(key), dict):
                    data[key] = {k: v for k, v in data[key].items() if v is not None}
                elif data.get(key) is None and key in data:
                    data[key] = {}
        return data
