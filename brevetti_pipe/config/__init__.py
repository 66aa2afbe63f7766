"""Configuration: Hydra-composed YAML + platform JSON + CLI -> one validated JobConfig."""

from brevetti_pipe.config._compose import check_config_folder, compose, translate_hydra_error
from brevetti_pipe.config._errors import validate_model
from brevetti_pipe.config._load import JSON_KEYS, SettingsSource, parse_settings_json, resolve_config
from brevetti_pipe.config._schema import (
    ComponentSpec,
    DataConfig,
    DatasetConfig,
    EvaluationConfig,
    ExportConfig,
    JobConfig,
    JobSection,
    JobSettings,
    OperatingPointConfig,
    PlatformConfig,
    SamplerConfig,
    SplitConfig,
    StrictModel,
    TrainingConfig,
)

__all__ = [
    "ComponentSpec",
    "DataConfig",
    "DatasetConfig",
    "EvaluationConfig",
    "ExportConfig",
    "JSON_KEYS",
    "JobConfig",
    "JobSection",
    "JobSettings",
    "OperatingPointConfig",
    "PlatformConfig",
    "SamplerConfig",
    "SplitConfig",
    "StrictModel",
    "TrainingConfig",
    "check_config_folder",
    "compose",
    "SettingsSource",
    "parse_settings_json",
    "resolve_config",
    "translate_hydra_error",
    "validate_model",
]
