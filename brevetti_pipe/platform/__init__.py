"""Platform layer: where jobs, artifacts and datasets live (layout and backends)."""

from brevetti_pipe.platform.backends import PLATFORMS, LocalPlatform, PlatformBackend
from brevetti_pipe.platform.settings_json import read_settings_json, resolve_config

__all__ = ["LocalPlatform", "PLATFORMS", "PlatformBackend", "read_settings_json", "resolve_config"]
