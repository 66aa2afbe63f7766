"""Storage layer: fsspec-backed reads and writes, atomic writes, concurrent fetches and a local cache."""

from brevetti_pipe.storage.files import LOCAL_PROTOCOLS, FileVersion, IoTools, Prefetch, is_local, join_url, listed_url, local_path

__all__ = ["FileVersion", "IoTools", "LOCAL_PROTOCOLS", "Prefetch", "is_local", "join_url", "listed_url", "local_path"]
