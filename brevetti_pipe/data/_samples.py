"""Datasets -> samples table: one row per image with its category, etag and dataset."""

from __future__ import annotations

import base64
import hashlib
import importlib
import logging
import os
import posixpath
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from brevetti_pipe._util.progress import ProgressBar, progress
from brevetti_pipe._util.registry import Registry
from brevetti_pipe._util.retry import unresolvable_host
from brevetti_pipe._util.secrets import redact
from brevetti_pipe.config._schema import DatasetConfig
from brevetti_pipe.errors import DatasetError, StorageError
from brevetti_pipe.storage import IoTools, is_local

__all__ = ["Dataset", "get_image_samples", "IMAGE_EXTENSIONS", "GENERATORS", "SAMPLE_COLUMNS"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
SAMPLE_COLUMNS = ("path", "category", "folder", "etag", "size", "dataset", "dataset_id", "url", "annotation_path",
                  "annotation_etag", "annotation_size", "bucket", "reference")

#: Dataset generators (name -> callable(url, io, seed, **params)) used when a dataset is missing.
GENERATORS: Registry[Any] = Registry("dataset generator", entry_points="brevetti_pipe.dataset_generators")
GENERATORS.add_loader(lambda: importlib.import_module("brevetti_pipe.data._demo"))  # the built-in generators


@dataclass
class Dataset:
    """A named dataset: a root URL of category folders, plus how to read it.

    Attributes:
        name: the key under ``datasets`` in the config.
        url: fsspec URL of the dataset root.
        config: the validated dataset config.
    """

    name: str
    url: str
    config: DatasetConfig = field(default_factory=lambda: DatasetConfig(url="."))

    @property
    def id(self) -> str:
        return self.config.id or posixpath.basename(self.url.rstrip("/")) or self.name

    def get_image_samples(self, io: IoTools | None = None, **kwargs: Any) -> pd.DataFrame:
        """List this dataset's images; see :func:`get_image_samples`."""
        return get_image_samples(self, io=io, **kwargs)


def _etag(info: dict[str, Any]) -> str | None:
    # GCS md5Hash is content identity (its etag changes with every rewrite); S3's ETag is the MD5.
    for key in ("md5Hash", "ETag", "etag", "md5"):
        value = info.get(key)
        if value:
            value = str(value).strip('"')
            if key == "md5Hash":  # GCS gives base64 of the raw digest
                try:
                    return base64.b64decode(value).hex()
                except ValueError:
                    return value
            return value
    return None


def _size(info: dict[str, Any]) -> int | None:
    size = info.get("size")
    return int(size) if size is not None else None


def _follow_links(fs: Any, listing: dict[str, Any], walked: list[str],
                  on_link: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """A local listing with symlinked folders replaced by their files, listed under the link's path.

    One rule: a linked folder is walked unless it lies inside the dataset or inside a folder
    already walked (a link back up the tree, or a second link to one folder); those are skipped
    with a warning naming the link. Links to files stay as they are. ``on_link(link, real folder)``
    is told of each folder walked, before it is.
    """
    out: dict[str, Any] = {}
    for path, info in listing.items():
        real = os.path.realpath(path) if info.get("islink") else ""
        if not (real and os.path.isdir(real)):
            out[path] = info
        elif any(real == w or real.startswith(w.rstrip(os.sep) + os.sep) for w in walked):
            log.warning("Skipping the folder link %s -> %s: that folder is listed already", path, real)
        else:
            if on_link is not None:
                on_link(path, real)
            walked.append(real)
            out.update(_follow_links(fs, fs.find(path, detail=True, withdirs=False), walked, on_link))
    return out


def _full_url(protocol: str, path: str) -> str:
    if protocol in ("file", "local") or path.startswith(f"{protocol}://"):
        return path
    if protocol in ("http", "https") and path.startswith(("http://", "https://")):
        return path  # the http filesystem's paths are whole URLs already (of either scheme)
    return f"{protocol}://{path}"


def get_image_samples(
    url_or_dataset: str | Dataset,
    *,
    io: IoTools | None = None,
    name: str | None = None,
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
    content_etags: Callable[[list[str], list[dict[str, Any]]], list[str]] | None = None,
    folder_links: Callable[[str, str], None] | None = None,
) -> pd.DataFrame:
    """List every image below a dataset URL into a samples table.

    One listing call walks the whole tree (paged by the store), not one call per file. In a
    local dataset, symlinked folders are followed, each real folder once (a link into the
    dataset or to a folder already listed is skipped with a warning).

    Args:
        url_or_dataset: a dataset root URL (any fsspec URL) or a :class:`Dataset`.
        io: the IoTools carrying storage options; a default one when None.
        name: dataset name for the ``dataset`` column when a URL is given.
        extensions: file endings (lower case) that count as images.
        content_etags: ``(urls, listing entries) -> etags`` for files the store gives no ETag
            (default: the MD5 of each file's content; a rerun cache reuses earlier hashes).
        folder_links: ``(link path, real folder)`` of each symlinked folder of a local dataset, before
            its files are listed (it may raise to refuse the dataset).

    Returns:
        A DataFrame sorted by path with columns ``path`` (full URL), ``category`` (tuple of
        folder names after the category map), ``folder`` (relative folder), ``etag`` (the
        store's ETag/MD5, else a content hash), ``dataset``, ``dataset_id``, ``url`` and
        ``annotation_path`` (the ``<image>.json`` beside the image, or None) with its
        ``annotation_etag`` (the store's ETag, else a content hash) and size; as in brevettiai also
        ``bucket`` (the dataset's root URL) and ``reference`` (empty: no platform reference here).

    Raises:
        DatasetError: naming the dataset when it is missing, empty, unreadable or a file rather
            than a folder, or when the category map matches no folder.
    """
    ds = url_or_dataset if isinstance(url_or_dataset, Dataset) else Dataset(
        name or posixpath.basename(str(url_or_dataset).rstrip("/")), str(url_or_dataset),
        DatasetConfig(url=str(url_or_dataset)),
    )
    io = io or IoTools()
    cfg = ds.config
    log.info("Getting image samples from dataset '%s' [%s]", ds.name, redact(ds.url))
    try:
        fs, root = io.fs(ds.url)
        # fsspec's http filesystem answers False for a host it cannot reach unless asked strictly
        strict = {"strict": True} if "http" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)) else {}
        if not io.call(lambda: fs.exists(root, **strict), ds.url):
            raise DatasetError(f"Dataset '{ds.name}' not found: nothing at {redact(ds.url)}")
        listing = io.call(lambda: fs.find(root, detail=True, withdirs=False), ds.url)
    except DatasetError:
        raise
    except PermissionError as exc:
        raise DatasetError(
            f"Cannot list dataset '{ds.name}' at {redact(ds.url)}: access denied ({redact(str(exc))}); "
            "check the credentials for this store"
        ) from None
    except (StorageError, Exception) as exc:  # network, missing backend, bad endpoint
        dns = " (the host name does not resolve: check the URL)" if unresolvable_host(exc) else ""
        raise DatasetError(f"Cannot list dataset '{ds.name}' at {redact(ds.url)}: {redact(str(exc))}{dns}") from None
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("http", "https") and "@" in ds.url.split("://", 1)[-1].split("/", 1)[0]:
        # every listed URL would carry them into the samples table and so into every artifact made from it
        raise DatasetError(
            f"Dataset '{ds.name}' at {redact(ds.url)}: credentials in an http(s) dataset URL would be written "
            "into every sample path (sample_identification.csv, predictions, reports); serve the dataset "
            "without them (e.g. on a private network) or from a store that takes credentials from its "
            "storage options (s3://, gs://)"
        )
    root = root.rstrip("/")
    if root in listing:
        raise DatasetError(
            f"Dataset '{ds.name}' at {redact(ds.url)} is a file, not a folder: a dataset URL names a folder "
            "of category folders (e.g. <root>/good/*.bmp)"
        )
    if is_local(ds.url):
        listing = _follow_links(fs, listing, [os.path.realpath(root)], folder_links)
    names = set(listing)
    bucket = _full_url(protocol, root)
    rows = []
    bar = ProgressBar(len(listing), f"Listing '{ds.name}'", unit="file")
    infos: dict[str, Any] = {}
    unknown_maps = set((cfg.category_map or {}).keys())
    for path in sorted(listing):
        bar.update()
        info = listing[path]
        if not path.lower().endswith(extensions):
            continue
        rel = path[len(root):].lstrip("/") if path.startswith(root) else path
        parts = rel.split("/")[:-1]
        if cfg.folders is not None and (not parts or parts[0] not in cfg.folders):
            continue
        folder = "/".join(parts)
        mapped = list(parts)
        if cfg.category_map and parts:
            key = folder if folder in cfg.category_map else parts[0]
            if key in cfg.category_map:
                unknown_maps.discard(key)
                mapped = [p for p in str(cfg.category_map[key]).split("/") if p]
        annotation = path + ".json" if path + ".json" in names else None
        if annotation is None:
            stem = path.rsplit(".", 1)[0] + ".json"
            annotation = stem if stem in names else None
        url = _full_url(protocol, path)
        infos[url] = info
        if annotation:
            infos[_full_url(protocol, annotation)] = listing[annotation]
        rows.append({
            "path": url,
            "category": tuple(mapped),
            "folder": folder,
            "etag": _etag(info),
            "size": _size(info),
            "dataset": ds.name,
            "dataset_id": ds.id,
            "url": url,
            "annotation_path": _full_url(protocol, annotation) if annotation else None,
            "annotation_etag": _etag(listing[annotation]) if annotation else None,
            "annotation_size": _size(listing[annotation]) if annotation else None,
            "bucket": bucket,
            "reference": "",
        })
    bar.close()
    if cfg.category_map and unknown_maps == set(cfg.category_map):
        raise DatasetError(
            f"Dataset '{ds.name}': category_map keys {sorted(unknown_maps)} match no folder in "
            f"{redact(ds.url)}. Folders found: {sorted({r['folder'] for r in rows}, key=str) or 'none'}"
        )
    if not rows:
        raise DatasetError(
            f"Dataset '{ds.name}' at {redact(ds.url)} contains no images "
            f"({', '.join(e.lstrip('.') for e in extensions)})"
            + (f" in folders {cfg.folders}" if cfg.folders is not None else "")
        )
    samples = pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS))
    # files the store gives no ETag (local folders, http) get their content's MD5, annotations too
    # (a modification time can be set back, and an http listing has none)
    for column, url_column in (("etag", "url"), ("annotation_etag", "annotation_path")):
        missing = samples[column].isna() & samples[url_column].notna()
        if missing.any():
            urls = samples.loc[missing, url_column].tolist()
            samples.loc[missing, column] = (
                content_etags(urls, [infos[u] for u in urls]) if content_etags is not None
                else [hashlib.md5(io.read_file(u)).hexdigest()
                      for u in progress(urls, f"Hashing '{ds.name}' (MD5)", unit="file")]
            )
    if cfg.classes is not None:
        known = {"/".join(c) for c in samples["category"]}
        missing_cls = [c for c in cfg.classes if c not in known]
        if missing_cls:
            log.warning("Dataset '%s': classes %s have no samples", ds.name, missing_cls)
    counts = Counter(samples["category"])
    log.info("Contents: %s", dict(sorted(counts.items())))
    return samples


def concat_samples(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate samples tables of several datasets, keeping column order."""
    if not frames:
        return pd.DataFrame(columns=list(SAMPLE_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def is_remote(samples: pd.DataFrame) -> bool:
    return any(not is_local(u) for u in samples["path"])
