"""fsspec-backed file access for jobs: atomic writes, concurrent fetches and a local cache."""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from brevetti_pipe._progress import ProgressBar
from brevetti_pipe._retry import RetryPolicy, is_transient, retry_call
from brevetti_pipe._secrets import redact
from brevetti_pipe.errors import StorageError

__all__ = ["IoTools", "is_local", "join_url", "LOCAL_PROTOCOLS"]

log = logging.getLogger(__name__)

LOCAL_PROTOCOLS = ("file", "local")

_BACKEND_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}


def is_local(url: str) -> bool:
    """True for plain paths and ``file://`` URLs."""
    return "://" not in url or url.split("://", 1)[0] in LOCAL_PROTOCOLS


def join_url(base: str, *parts: str) -> str:
    """Join path parts onto a URL or local path with ``/`` (never ``os.sep`` on a URL)."""
    if is_local(base) and "://" not in base:
        return str(Path(base, *parts))
    return posixpath.join(base.rstrip("/"), *[p.strip("/") for p in parts])


class IoTools:
    """Read and write any fsspec URL; the ``job.io`` of brevettiai users.

    Args:
        storage_options: fsspec options per protocol, e.g. ``{"s3": {"endpoint_url": ...}}``.
        cache_root: local directory where :meth:`localize` keeps copies of remote files.
    """

    def __init__(
        self,
        storage_options: dict[str, dict[str, Any]] | None = None,
        cache_root: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.storage_options: dict[str, dict[str, Any]] = dict(storage_options or {})
        self.cache_root = cache_root
        self.retry = retry or RetryPolicy()

    def call(self, fn: Any, what: str) -> Any:
        """Run a storage call with this object's retry policy (transient faults only)."""
        if what.startswith(LOCAL_PROTOCOLS) or "://" not in what:
            return fn()
        return retry_call(fn, redact(what), self.retry)

    @staticmethod
    def _fail(action: str, url: str, exc: BaseException) -> StorageError:
        kind = "gave up after retrying transient faults" if is_transient(exc) else "failed"
        return StorageError(f"{action} {redact(url)} {kind}: {redact(str(exc)) or type(exc).__name__}")

    def set_cache_root(self, path: str | None) -> None:
        """Cache remote files read through :meth:`localize` under ``path`` (a local directory)."""
        self.cache_root = path
        if path:
            os.makedirs(path, exist_ok=True)

    def fs(self, url: str) -> tuple[fsspec.AbstractFileSystem, str]:
        """The filesystem and in-filesystem path for ``url`` (with this object's options)."""
        protocol = url.split("://", 1)[0] if "://" in url else "file"
        options = dict(self.storage_options.get(protocol, {}))
        if protocol in ("s3", "s3a"):
            # botocore's default pool (10 connections) throttles concurrent fetches of many files
            config = dict(options.get("config_kwargs") or {})
            config.setdefault("max_pool_connections", 64)
            options["config_kwargs"] = config
        try:
            return url_to_fs(url, **options)
        except ImportError as exc:
            extra = _BACKEND_EXTRAS.get(protocol)
            hint = f" Install brevetti_pipe[{extra}] to read {protocol}:// URLs." if extra else ""
            raise StorageError(f"No filesystem for {protocol}:// ({exc}).{hint}") from None
        except ValueError as exc:
            raise StorageError(f"Cannot open {redact(url)}: {exc}") from None

    # -- reading -------------------------------------------------------------------------
    def read_file(self, url: str) -> bytes:
        """Return the bytes at ``url``."""
        fs, path = self.fs(url)
        try:
            return self.call(lambda: fs.cat_file(path), url)
        except FileNotFoundError:
            raise StorageError(f"File not found: {redact(url)}") from None
        except Exception as exc:
            raise self._fail("Reading", url, exc) from exc

    def exists(self, url: str) -> bool:
        fs, path = self.fs(url)
        try:
            return bool(self.call(lambda: fs.exists(path), url))
        except Exception as exc:
            raise self._fail("Checking", url, exc) from exc

    # -- writing -------------------------------------------------------------------------
    def write_file(self, url: str, data: bytes | str) -> str:
        """Write ``data`` to ``url`` atomically and return ``url``.

        Local files are written to a temporary name in the same folder, then renamed, so a
        reader never sees half a file; object stores (s3, gs, memory) replace objects whole.
        """
        payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        fs, path = self.fs(url)
        try:
            if is_local(url):
                target = Path(path)
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
                try:
                    with os.fdopen(fd, "wb") as fh:
                        fh.write(payload)
                        fh.flush()
                        os.fsync(fh.fileno())
                    os.replace(tmp, target)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
            else:
                self.call(lambda: fs.pipe_file(path, payload), url)
        except StorageError:
            raise
        except Exception as exc:
            raise self._fail("Writing", url, exc) from exc
        return url

    def upload(self, local_path: str, url: str) -> str:
        """Copy a local file to ``url`` atomically."""
        if is_local(url):
            fs, path = self.fs(url)
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            try:
                with open(local_path, "rb") as src, open(tmp, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
                    dst.flush()
                    os.fsync(dst.fileno())
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            return url
        fs, path = self.fs(url)
        try:
            self.call(lambda: fs.put_file(local_path, path), url)
        except Exception as exc:
            raise self._fail("Uploading to", url, exc) from exc
        return url

    def put_tree(self, local_dir: str, url: str) -> None:
        """Copy a local directory tree to ``url`` (one concurrent batch for async stores)."""
        files = [p for p in Path(local_dir).rglob("*") if p.is_file()]
        if is_local(url):
            for p in files:
                self.upload(str(p), join_url(url, p.relative_to(local_dir).as_posix()))
            return
        fs, path = self.fs(url)
        lpaths = [str(p) for p in files]
        rpaths = [posixpath.join(path.rstrip("/"), p.relative_to(local_dir).as_posix()) for p in files]
        try:
            self.call(lambda: fs.put(lpaths, rpaths), url)
        except Exception as exc:
            raise self._fail("Uploading to", url, exc) from exc

    # -- local cache ---------------------------------------------------------------------
    def _cache_path(self, url: str) -> str:
        assert self.cache_root is not None
        protocol, _, rest = url.partition("://")
        digest = hashlib.sha1(url.encode()).hexdigest()[:12]
        name = posixpath.basename(rest) or "file"
        return os.path.join(self.cache_root, protocol, digest[:2], f"{digest}-{name}")

    def localize(self, urls: Sequence[str]) -> list[str]:
        """Return local file paths for ``urls``, fetching remote ones concurrently into the cache.

        Local paths are returned unchanged. Remote files already in the cache are not fetched
        again, so a second epoch (or a second run sharing ``platform.cache_dir``) reads from disk.
        """
        out = list(urls)
        remote = [i for i, u in enumerate(urls) if not is_local(u)]
        if not remote:
            return [u[len("file://"):] if u.startswith("file://") else u for u in out]
        if not self.cache_root:
            self.set_cache_root(tempfile.mkdtemp(prefix="brevetti-pipe-cache-"))
        todo: dict[str, list[tuple[str, str]]] = {}
        for i in remote:
            local = self._cache_path(urls[i])
            out[i] = local
            if not os.path.exists(local):
                todo.setdefault(urls[i].split("://", 1)[0], []).append((urls[i], local))
        for protocol, pairs in todo.items():
            fs, _ = self.fs(pairs[0][0])
            rpaths = [fs._strip_protocol(u) for u, _ in pairs]
            tmp = [f"{local}.{uuid.uuid4().hex[:8]}.part" for _, local in pairs]
            for t in tmp:
                os.makedirs(os.path.dirname(t), exist_ok=True)
            log.info("Fetching %d files from %s:// into the local cache", len(pairs), protocol)
            chunk = 64

            def fetch(ids: list[int]) -> None:
                # one concurrent batch per chunk (async filesystems: s3fs, gcsfs); files become
                # cache entries only when the whole chunk arrived, so a retry starts clean
                try:
                    fs.get([rpaths[i] for i in ids], [tmp[i] for i in ids])
                    for i in ids:
                        os.replace(tmp[i], pairs[i][1])
                finally:
                    for i in ids:
                        if os.path.exists(tmp[i]):
                            os.unlink(tmp[i])

            try:
                with ProgressBar(len(pairs), f"Caching {protocol}://") as bar:
                    for start_at in range(0, len(pairs), chunk):
                        ids = list(range(start_at, min(start_at + chunk, len(pairs))))
                        self.call(lambda ids=ids: fetch(ids), pairs[ids[0]][0])
                        bar.update(len(ids))
            except FileNotFoundError as exc:
                raise StorageError(f"File not found while caching: {redact(str(exc))}") from None
            except Exception as exc:
                raise self._fail("Fetching", pairs[0][0].rsplit("/", 1)[0] + "/...", exc) from exc
        return out
