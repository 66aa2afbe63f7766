"""Storage layer: fsspec-backed file access for jobs: atomic writes, concurrent fetches and a local cache.

Over 400 lines on purpose: ``IoTools`` is the one object every layer reads and writes through; its
retry policy, checksum checks, cache keys and prefetch share state that one class keeps consistent.
"""

from __future__ import annotations

import concurrent.futures
import copy
import errno
import hashlib
import logging
import os
import posixpath
import re
import shutil
import tempfile
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import fsspec
from fsspec.core import url_to_fs

from brevetti_pipe.storage import _s3fetch
from brevetti_pipe._util.paths import LOCAL_PROTOCOLS, strip_local_scheme
from brevetti_pipe._util.progress import ProgressBar
from brevetti_pipe._util.retry import RetryPolicy, is_transient, retry_call, unresolvable_host
from brevetti_pipe._util.secrets import redact
from brevetti_pipe.errors import ChecksumError, StorageError

__all__ = ["ChecksumError", "FileVersion", "IoTools", "Prefetch", "is_local", "join_url", "listed_url",
           "local_path", "LOCAL_PROTOCOLS"]

log = logging.getLogger(__name__)


_BACKEND_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}

# Local write failures a user must act on, named in plain words (the file is named too).
_DISK_ERRORS = {
    errno.ENOSPC: "failed: no space left on device",
    errno.EDQUOT: "failed: disk quota exceeded",
    errno.EROFS: "failed: read-only file system",
}


def _protocol(fs: fsspec.AbstractFileSystem) -> str:
    return fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]


def listed_url(fs: fsspec.AbstractFileSystem, path: str, like: str | None = None) -> str:
    """The URL of a path ``fs`` listed: the path itself on local disk, the whole URL the http filesystem
    lists, else the path with the scheme of ``like`` (the URL the user gave: ``s3a://`` stays ``s3a://``,
    so the storage options configured for that scheme still apply), or the filesystem's own scheme."""
    if _protocol(fs) in LOCAL_PROTOCOLS or path.startswith(("http://", "https://")):
        return path
    if like and "://" in like:
        return f"{like.split('://', 1)[0]}://{path.split('://', 1)[-1]}"
    return str(fs.unstrip_protocol(path))


def is_local(url: str) -> bool:
    """True for plain paths and ``file://`` URLs."""
    return "://" not in url or url.split("://", 1)[0] in LOCAL_PROTOCOLS


def local_path(url: str) -> str:
    """The absolute file-system path of a local URL (``file://`` or ``local://`` dropped, ``~`` expanded)."""
    return os.path.abspath(os.path.expanduser(strip_local_scheme(url)))


def join_url(base: str, *parts: str) -> str:
    """Join path parts onto a URL or local path with ``/`` (never ``os.sep`` on a URL)."""
    if is_local(base) and "://" not in base:
        return str(Path(base, *parts))
    return posixpath.join(base.rstrip("/"), *[p.strip("/") for p in parts])


_CHUNK = 64  # files per concurrent batch (and per retry)
_IN_FLIGHT = 2  # batches at a time


class FileVersion(NamedTuple):
    """What a listing said about a remote file: the cache keys on it and fetched bytes must match it.

    Attributes:
        size: bytes, or None when unknown.
        etag: the store's ETag or MD5 (checked against the content when it is a plain MD5), else
            any token of the content's version (e.g. the modification time); None when unknown.
    """

    size: int | None
    etag: str | None = None


_Todo = tuple[int, str, str, "FileVersion | None"]  # (index, url, cache path, version)
_MD5 = re.compile(r"[0-9a-f]{32}")


def _mismatch(path: str, url: str, version: FileVersion | None, md5: str | bool | None) -> ChecksumError | None:
    """Why the fetched file at ``path`` is not ``url`` as listed (None when it is).

    ``md5``: the MD5 of the fetched bytes, True to hash the file, None when the store's ETag is
    not an MD5 (only the size is checked then).
    """
    if version is None:
        return None
    size = os.path.getsize(path)
    if version.size is not None and size != version.size:
        return ChecksumError(f"{redact(url)}: got {size} bytes, the listing says {version.size} "
                             "(a short read, or the file changed since it was listed)")
    etag = (version.etag or "").lower()
    if md5 and _MD5.fullmatch(etag):
        if md5 is True:
            digest = hashlib.md5()
            with open(path, "rb") as fh:
                while block := fh.read(1 << 20):
                    digest.update(block)
            md5 = digest.hexdigest()
        if md5 != etag:
            return ChecksumError(f"{redact(url)}: content MD5 {md5} is not the listed ETag {version.etag} "
                                 "(a damaged read, or the file changed since it was listed)")
    return None


def _as_checksum(exc: BaseException | None, where: str) -> BaseException | None:
    """botocore's response checksum failure as a :class:`ChecksumError`: a damaged read like a
    short one, so retried as one."""
    if exc is not None and type(exc).__name__ == "FlexibleChecksumError":
        return ChecksumError(f"{redact(where)}: {exc}")
    return exc


def _get_each(fs: fsspec.AbstractFileSystem, rpaths: Sequence[str], lpaths: Sequence[str]) -> list[BaseException | None]:
    """``fs.get`` file by file, concurrently on async stores: one failed file fails only itself."""

    if getattr(fs, "async_impl", False):
        from fsspec.asyn import sync

        async def run() -> list[Any]:
            import asyncio

            return await asyncio.gather(*(fs._get_file(r, lp) for r, lp in zip(rpaths, lpaths)), return_exceptions=True)

        results = [r if isinstance(r, BaseException) else None for r in sync(fs.loop, run)]
    else:
        results = []
        for r, lp in zip(rpaths, lpaths):
            try:
                fs.get_file(r, lp)
                results.append(None)
            except Exception as exc:
                results.append(exc)
    return [_as_checksum(exc, r) for exc, r in zip(results, rpaths)]


def _exists(fs: fsspec.AbstractFileSystem, url: str) -> bool:
    try:
        return bool(fs.exists(fs._strip_protocol(url)))
    except Exception:
        return True  # unknown: do not blame this file


class Prefetch:
    """Remote files being fetched into the local cache by a background thread (see
    :meth:`IoTools.prefetch`)."""

    def __init__(self, io: IoTools, paths: list[str], todo: list[_Todo], start: bool = True) -> None:
        self.paths = paths
        self._chunk_of = {item[0]: k // _CHUNK for k, item in enumerate(todo)}
        self._done: set[int] = set()  # chunks fetched
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._started = False
        if todo:
            self._count = len(todo)
            self._thread = threading.Thread(target=self._run, args=(io, todo), name="brevetti-pipe-prefetch", daemon=True)
            if start:
                self.start()

    def start(self) -> None:
        """Start fetching (once; ``wait`` and ``join`` start it too)."""
        with self._cond:
            if self._thread is None or self._started:
                return
            self._started = True
        log.info("Fetching %d files into the local cache in the background", self._count)
        self._thread.start()

    def _run(self, io: IoTools, todo: list[_Todo]) -> None:
        def done(chunk: int) -> None:
            with self._cond:
                self._done.add(chunk)
                self._cond.notify_all()

        try:
            io._fetch_chunks(todo, done)
        except BaseException as exc:  # handed to the waiting reader
            with self._cond:
                self._error = exc
                self._cond.notify_all()
        finally:
            if self in io._prefetches:
                io._prefetches.remove(self)

    @property
    def done(self) -> bool:
        """True when every file is local (or the fetch failed)."""
        return self._thread is None or (self._started and not self._thread.is_alive())

    def wait(self, index: int) -> str:
        """Block until the file at ``index`` is local; return its path (raises the fetch error)."""
        chunk = self._chunk_of.get(index)
        if chunk is not None:
            self.start()
            with self._cond:
                while chunk not in self._done and self._error is None:
                    self._cond.wait()
                if chunk not in self._done:
                    raise self._error  # type: ignore[misc]
        return self.paths[index]

    def join(self, raise_error: bool = True) -> None:
        """Wait for the whole fetch."""
        if self._thread is not None:
            self.start()
            self._thread.join()
        if raise_error and self._error is not None:
            raise self._error


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
        #: fetch S3 objects for the cache through presigned URLs (a quarter of the client CPU of
        #: ``fs.get``); plain S3 options only, anything else always goes through ``fs.get``
        self.presigned_fetch = True
        self._prefetches: list[Prefetch] = []

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_prefetches"] = []  # threads stay with the process that started them
        return state

    def best_effort(self) -> IoTools:
        """This object for writes the job can live without (progress, report): on a store that is
        down, a call backs off once and fails within 5 seconds instead of the whole retry budget."""
        view = copy.copy(self)
        view.retry = self.retry.best_effort()
        return view

    def call(self, fn: Any, what: str) -> Any:
        """Run a storage call with this object's retry policy (transient faults only).

        The call ends within ``retry.total_seconds`` of wall time, a hanging attempt included.
        """
        if what.startswith(LOCAL_PROTOCOLS) or "://" not in what:
            return fn()
        return retry_call(fn, redact(what), self.retry)

    @staticmethod
    def _fail(action: str, url: str, exc: BaseException) -> StorageError:
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRORS:
            reason = f"{_DISK_ERRORS[exc.errno]} [Errno {exc.errno}]"
        elif unresolvable_host(exc):
            # the host that was asked: the URL's for http(s), else an endpoint from the storage options
            # (s3://bucket/... names a bucket, not a host)
            host = urllib.parse.urlsplit(url).hostname if url.startswith(("http://", "https://")) else None
            where = f"the host name {host!r}" if host else "the store's host name (the endpoint in the storage options)"
            reason = f"failed: {where} does not resolve (DNS: no such host); check the URL and the storage options"
        elif is_transient(exc):
            reason = f"gave up after retrying transient faults: {redact(str(exc)) or type(exc).__name__}"
        else:
            reason = f"failed: {redact(str(exc)) or type(exc).__name__}"
        return StorageError(f"{action} {redact(url)} {reason}")

    def set_cache_root(self, path: str | None) -> None:
        """Cache remote files read through :meth:`localize` under ``path`` (a local directory)."""
        self.cache_root = path
        if path:
            os.makedirs(path, exist_ok=True)

    def fs(self, url: str) -> tuple[fsspec.AbstractFileSystem, str]:
        """The filesystem and in-filesystem path for ``url`` (with this object's options)."""
        protocol = url.split("://", 1)[0] if "://" in url else "file"
        options = dict(self.storage_options.get(protocol, {}))
        single = False
        if protocol in ("s3", "s3a"):
            # botocore's default pool (10 connections) throttles concurrent fetches of many files
            config = dict(options.get("config_kwargs") or {})
            config.setdefault("max_pool_connections", _CHUNK * _IN_FLIGHT)
            # presigned URLs (the cache fetch) must be SigV4: S3 refuses SigV2 for newer buckets
            config.setdefault("signature_version", "s3v4")
            # best effort: no per-request retries under IoTools.call's one backoff (this config
            # differs, so fsspec hands out a separate client and the essential one keeps its retries)
            single = not self.retry.store_retries and "retries" not in config
            if single:
                config["retries"] = {"total_max_attempts": 1}
            options["config_kwargs"] = config
        try:
            fs, path = url_to_fs(url, **options)
            if single:
                fs.retries = 1  # s3fs's own retry loop
            return fs, path
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

        def read() -> bytes:
            try:
                return fs.cat_file(path)
            except Exception as exc:
                checked = _as_checksum(exc, url)
                if checked is exc or checked is None:
                    raise
                raise checked from exc

        try:
            return self.call(read, url)
        except FileNotFoundError:
            raise StorageError(f"File not found: {redact(url)}") from None
        except Exception as exc:
            raise self._fail("Reading", url, exc) from exc

    def exists(self, url: str) -> bool:
        """True when something is at ``url``; a store that cannot be reached raises (fsspec's http
        filesystem would answer False: it is asked strictly, only a 404 means absent)."""
        fs, path = self.fs(url)
        kwargs = {"strict": True} if _protocol(fs) in ("http", "https") else {}
        try:
            return bool(self.call(lambda: fs.exists(path, **kwargs), url))
        except Exception as exc:
            raise self._fail("Checking", url, exc) from exc

    # -- writing -------------------------------------------------------------------------
    @staticmethod
    def _write_local(path: str, write: Callable[[BinaryIO], object]) -> None:
        """Write a local file atomically: a temporary name in the same folder, then a rename.

        The file gets the process umask's permissions (0644 under umask 022), like any file a
        user's tools create, so colleagues and web servers can read the artifacts.
        """
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def write_file(self, url: str, data: bytes | str) -> str:
        """Write ``data`` to ``url`` atomically and return ``url``.

        Local files are written to a temporary name in the same folder, then renamed, so a
        reader never sees half a file; object stores (s3, gs, memory) replace objects whole.
        """
        payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        fs, path = self.fs(url)
        try:
            if is_local(url):
                self._write_local(path, lambda fh: fh.write(payload))
            else:
                self.call(lambda: fs.pipe_file(path, payload), url)
        except StorageError:
            raise
        except Exception as exc:
            raise self._fail("Writing", url, exc) from exc
        return url

    def upload(self, local_path: str, url: str) -> str:
        """Copy a local file to ``url`` atomically."""
        fs, path = self.fs(url)
        try:
            if is_local(url):
                with open(local_path, "rb") as src:
                    self._write_local(path, lambda fh: shutil.copyfileobj(src, fh, 1 << 20))
            else:
                self.call(lambda: fs.put_file(local_path, path), url)
        except Exception as exc:
            raise self._fail("Uploading to" if not is_local(url) else "Writing", url, exc) from exc
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
    def _cache_path(self, url: str, version: FileVersion | None = None) -> str:
        """The cache file of ``url`` as ``version`` (its ETag or modification-time token, else its
        size): an object replaced in place gets a new cache file."""
        assert self.cache_root is not None
        protocol, _, rest = url.partition("://")
        key = url if version is None or version == (None, None) else f"{url}\0{version.etag or version.size}"
        digest = hashlib.sha1(key.encode()).hexdigest()[:12]
        name = posixpath.basename(rest) or "file"
        return os.path.join(self.cache_root, protocol, digest[:2], f"{digest}-{name}")

    def _plan(self, urls: Sequence[str], order: Sequence[int] | None = None,
              versions: Sequence[FileVersion | None] | None = None) -> tuple[list[str], list[_Todo]]:
        """Local paths for ``urls`` and the (index, url, cache path, version) still to fetch, in ``order``.

        A cache entry whose size differs from the listing's is fetched again.
        """
        for pending in list(self._prefetches):
            pending.join(raise_error=False)  # files a background fetch is writing are not fetched twice
        out = [strip_local_scheme(u) for u in urls]
        if all(is_local(u) for u in urls):
            return out, []
        if not self.cache_root:
            self.set_cache_root(tempfile.mkdtemp(prefix="brevetti-pipe-cache-"))
        todo, seen = [], set()
        for i in [*map(int, () if order is None else order), *range(len(urls))]:  # ``order`` first, then the rest
            if i in seen or is_local(urls[i]):
                continue
            seen.add(i)
            version = versions[i] if versions is not None else None
            out[i] = self._cache_path(urls[i], version)
            try:
                size = os.path.getsize(out[i])
            except OSError:  # not in the cache
                size = None
            if size is None or (version is not None and version.size is not None and size != version.size):
                todo.append((i, urls[i], out[i], version))
        return out, todo

    def _fetch_chunk(self, chunk: Sequence[_Todo]) -> None:
        """Fetch one chunk of (index, url, cache path, version) as one concurrent batch per protocol.

        Each file is checked against its listing (size; MD5 where the ETag is one) and becomes a
        cache entry by an atomic rename once it passed; a retry fetches only the files that did not.
        """
        by_protocol: dict[str, list[_Todo]] = {}
        for item in chunk:
            by_protocol.setdefault(item[1].split("://", 1)[0], []).append(item)
        for protocol, items in by_protocol.items():
            fs, _ = self.fs(items[0][1])
            presigned = (self.presigned_fetch and protocol in ("s3", "s3a")
                         and _s3fetch.supported(self.storage_options.get(protocol, {})))
            pending = list(items)

            def fetch() -> None:
                tag = uuid.uuid4().hex[:8]
                tmp = [f"{local}.{tag}.part" for _, _, local, _ in pending]
                for folder in {os.path.dirname(t) for t in tmp}:
                    os.makedirs(folder, exist_ok=True)
                rpaths = [fs._strip_protocol(u) for _, u, _, _ in pending]
                try:
                    if presigned:  # per file: the error, or the MD5 of the bytes (None: the ETag is no MD5)
                        results: list[BaseException | str | bool | None] = list(_s3fetch.get(fs, rpaths, tmp))
                    else:  # S3's ETag may not be the MD5 (SSE-KMS); GCS md5Hash and our content hashes are
                        results = [exc or protocol not in ("s3", "s3a") or None for exc in _get_each(fs, rpaths, tmp)]
                    failed: list[tuple[_Todo, BaseException]] = []
                    for t, item, result in zip(tmp, pending, results):
                        problem = result if isinstance(result, BaseException) else _mismatch(t, item[1], item[3], result)
                        if problem is None:
                            os.replace(t, item[2])
                        else:
                            failed.append((item, problem))
                finally:
                    for t in tmp:
                        if os.path.exists(t):
                            os.unlink(t)
                pending[:] = [item for item, _ in failed]
                if failed:  # the first non-transient error wins (a missing file is not retried)
                    raise next((e for _, e in failed if not is_transient(e)), failed[0][1])

            try:
                self.call(fetch, items[0][1])
            except FileNotFoundError as exc:
                # the store's message rarely names the key: find the missing ones (error path only)
                gone = [u for _, u, _, _ in pending if not _exists(fs, u)] or [pending[0][1]]
                more = f" (and {len(gone) - 1} more)" if len(gone) > 1 else ""
                raise StorageError(f"File not found while caching: {redact(gone[0])}{more}: {redact(str(exc))}") from None
            except Exception as exc:
                raise self._fail("Fetching", items[0][1].rsplit("/", 1)[0] + "/...", exc) from exc

    def _fetch_chunks(self, todo: Sequence[_Todo], done: Callable[[int], None]) -> None:
        """Fetch ``todo`` in chunks, ``_IN_FLIGHT`` at a time and started in order (a slow last
        answer of one chunk does not idle the connection pool); ``done(k)`` after chunk k."""
        chunks = [todo[i:i + _CHUNK] for i in range(0, len(todo), _CHUNK)]
        with concurrent.futures.ThreadPoolExecutor(_IN_FLIGHT, thread_name_prefix="brevetti-pipe-fetch") as pool:
            futures = [pool.submit(self._fetch_chunk, chunk) for chunk in chunks]
            try:
                for k, future in enumerate(futures):
                    future.result()
                    done(k)
            finally:
                for future in futures:
                    future.cancel()

    def localize(self, urls: Sequence[str], versions: Sequence[FileVersion | None] | None = None) -> list[str]:
        """Return local file paths for ``urls``, fetching remote ones concurrently into the cache.

        Local paths are returned unchanged. Remote files already in the cache are not fetched
        again, so a second epoch (or a second run sharing ``platform.cache_dir``) reads from disk.
        With ``versions`` (what the listing said of each URL) the cache keys on the version, so a
        replaced object is fetched anew, and fetched bytes are checked against it: a short or
        damaged read is fetched again within the retry budget, then a :class:`StorageError`
        naming the URL.
        """
        out, todo = self._plan(urls, versions=versions)
        if todo:
            log.info("Fetching %d files into the local cache", len(todo))
            with ProgressBar(len(todo), "Caching remote files") as bar:
                self._fetch_chunks(todo, lambda k: bar.update(min(_CHUNK, len(todo) - k * _CHUNK)))
        return out

    def prefetch(self, urls: Sequence[str], order: Sequence[int] | None = None, start: bool = True,
                 versions: Sequence[FileVersion | None] | None = None) -> Prefetch:
        """Like :meth:`localize`, but fetch in a background thread, in ``order`` (indices into
        ``urls``; default: as given), and return at once. ``Prefetch.paths`` are the local paths;
        ``Prefetch.wait(i)`` blocks until ``urls[i]`` is there, so work can start on the first
        files while the rest arrive. With ``start=False`` the fetch begins at ``Prefetch.start()``
        (or the first ``wait``), e.g. once the caller's own set-up is done. ``versions``: as for
        :meth:`localize`."""
        out, todo = self._plan(urls, order, versions)
        pending = Prefetch(self, out, todo, start=start)
        if todo:
            self._prefetches.append(pending)
        return pending
