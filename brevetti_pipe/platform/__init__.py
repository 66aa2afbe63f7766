"""Platform layer: where jobs, artifacts and datasets live (layout and backends)."""

from brevetti_pipe.platform.backends import PLATFORMS, LocalPlatform, PlatformBackend

__all__ = ["LocalPlatform", "PLATFORMS", "PlatformBackend"]
