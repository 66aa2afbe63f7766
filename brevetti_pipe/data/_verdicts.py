"""Data layer: what earlier runs learned about a dataset's files, kept for reruns and sweeps.

Two records per dataset URL, each one JSON file under the rerun cache
(``platform.cache_dir``, else ``<platform.root>/cache``; see
:func:`brevetti_pipe.platform.layout.rerun_cache_url`):

- ``etags/<key>.json``: content hashes of files whose store gives no ETag (local folders),
  keyed by the file's stamp (size, modification and change times, inode): a file that was not
  touched is not read again;
- ``verdicts/<key>.json``: each check stage's verdict per file version (ETag, and the
  annotation's), keyed by the stage's type, its parameters, the decoder's version and
  :data:`CHECK_VERSION`: a rerun re-checks only new or changed files, and a different pipeline
  or decoder re-checks everything.

Writes are atomic (whole files, renamed into place). Concurrent workers of a sweep each read,
merge their own findings and write: the last writer wins, and a verdict lost that way is only
checked again by the next run, never wrong.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Mapping, Sequence
from typing import Any

from brevetti_pipe.errors import StorageError
from brevetti_pipe.storage import IoTools, join_url

__all__ = ["CHECK_VERSION", "RerunCache", "file_stamp", "stage_fingerprint"]

log = logging.getLogger(__name__)

#: Raised when what a check finds (or how its reasons read) changes, so that verdicts of older releases are
#: not reused. 2: reasons name a remote file by its listed name, not its local cache copy.
CHECK_VERSION = 2


#: whether ``os.stat`` gives a birth time, which fsspec then reports as a local file's "created"
_BIRTHTIME = hasattr(os.stat_result, "st_birthtime")


def _key(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def file_stamp(info: Mapping[str, Any]) -> str | None:
    """What changes when a file is rewritten, from its listing entry: size, mtime, inode and, for
    local files, the inode's change time (None when the store gives no modification time); for a
    local symbolic link, its target's.

    The change time is what catches a rewrite in place that keeps size and mtime (``cp -p``,
    ``tar -x`` and ``rsync -t`` copy the source's mtime, and BMPs of one size have one length): no
    tool can set it back. It also moves on ``chmod`` or a new link, which only costs a new hash.
    """
    if "ino" in info and (info.get("islink") or _BIRTHTIME):
        # a local link (fsspec stats the link; the file is its target), or a system where fsspec's
        # "created" is the birth time (macOS, Windows): stat the file for its change time
        try:
            st = os.stat(info["name"])
        except (OSError, KeyError):
            return None
        return f"{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{st.st_ctime_ns}"
    mtime = next((info[k] for k in ("mtime", "LastModified", "updated", "created") if info.get(k)), None)
    if mtime is None:
        return None
    changed = info.get("created", "") if "ino" in info else ""  # here (Linux) fsspec's local "created" is st_ctime
    return f"{info.get('size')}|{mtime}|{info.get('ino', '')}|{changed}"


def stage_fingerprint(stage: Any) -> str | None:
    """What a stage's verdicts depend on besides the files: its type, parameters and decoder
    version; None when its check cannot be reused per file (``check_per_sample`` is false)."""
    if not getattr(stage, "check_per_sample", False):
        return None
    try:
        from PIL import __version__ as pillow
    except ImportError:  # pragma: no cover - Pillow is a core dependency
        pillow = "none"
    params = stage.params.model_dump(mode="json") if hasattr(stage, "params") else {}
    kind = f"{type(stage).__module__}.{type(stage).__qualname__}"
    return json.dumps({"stage": kind, "params": params, "pillow": pillow, "check": CHECK_VERSION}, sort_keys=True)


class RerunCache:
    """Content etags and check verdicts per dataset URL, read once and written back merged.

    Args:
        io: storage access (any fsspec URL).
        url: the cache folder.
    """

    def __init__(self, io: IoTools, url: str) -> None:
        self.io = io
        self.url = url.rstrip("/")

    def _file(self, kind: str, *key: Any) -> str:
        return join_url(self.url, kind, _key(*key) + ".json")

    def _read(self, url: str) -> dict[str, Any]:
        try:
            if not self.io.exists(url):
                return {}
            doc = json.loads(self.io.read_file(url))
        except (StorageError, ValueError, RecursionError) as exc:  # unreadable or half-migrated: work it out again
            log.warning("Ignoring the rerun cache file %s (%s)", url, exc)
            return {}
        if not isinstance(doc, dict) or not isinstance(doc.get("files", {}), dict):
            log.warning("Ignoring the rerun cache file %s (not a JSON object with a \"files\" object)", url)
            return {}
        return doc

    def _merge_write(self, url: str, header: dict[str, Any], entries: Mapping[str, Any]) -> None:
        """Write ``entries`` over what is stored, re-read now: another worker may have written since."""
        if not entries:
            return
        merged = dict(self._read(url).get("files", {}))
        merged.update(entries)
        try:
            self.io.write_file(url, json.dumps({**header, "files": merged}, separators=(",", ":")))
        except StorageError as exc:  # a cache: the job goes on, the next run checks again
            log.warning("Could not update the rerun cache %s (%s)", url, exc)

    # -- content etags -------------------------------------------------------------------
    def content_etags(self, dataset_url: str, urls: Sequence[str], stamps: Sequence[str | None],
                      compute: Any, threads: int = 4) -> tuple[list[str], int]:
        """ETags of ``urls``: from the cache when the file's stamp is unchanged, else ``compute(url)``
        (in ``threads`` threads).

        Returns:
            (etags in order, how many were computed).
        """
        url = self._file("etags", dataset_url)
        known = self._read(url).get("files", {})
        out: list[str | None] = []
        for u, stamp in zip(urls, stamps):
            hit = known.get(u)
            reuse = stamp is not None and isinstance(hit, list) and len(hit) == 2 and hit[0] == stamp
            out.append(str(hit[1]) if reuse else None)  # type: ignore[index]
        todo = [i for i, e in enumerate(out) if e is None]
        with ThreadPoolExecutor(max_workers=threads) as pool:  # reading and hashing release the GIL
            for i, etag in zip(todo, pool.map(compute, [urls[i] for i in todo])):
                out[i] = etag
        fresh = {urls[i]: [stamps[i], out[i]] for i in todo if stamps[i] is not None}
        self._merge_write(url, {"kind": "content etags"}, fresh)
        return [str(e) for e in out], len(todo)

    # -- check verdicts ------------------------------------------------------------------
    def verdicts(self, dataset_url: str, fingerprint: str) -> dict[str, list[Any]]:
        """``{file url: [version, reason or None]}`` known for this dataset and stage."""
        files = self._read(self._file("verdicts", dataset_url, fingerprint)).get("files", {})
        return {k: v for k, v in files.items() if isinstance(v, list) and len(v) == 2}

    def save_verdicts(self, dataset_url: str, fingerprint: str, found: Mapping[str, list[Any]]) -> None:
        """Store newly found verdicts (``{file url: [version, reason or None]}``)."""
        self._merge_write(self._file("verdicts", dataset_url, fingerprint),
                          {"kind": "check verdicts", "stage": json.loads(fingerprint)}, found)
