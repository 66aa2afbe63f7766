"""Run layer: what a job hands back: the model archive (model.tar.gz) and the output.json document."""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import json
import os
import platform as _platform
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from brevetti_pipe._util import secrets as _secrets
from brevetti_pipe.errors import StorageError, describe
from brevetti_pipe.run._kept import KeptFiles
from brevetti_pipe.storage import IoTools

__all__ = ["archive_model", "environment", "upload_model", "weights_sha256"]

_PACKAGES = (
    "brevetti_pipe", "tensorflow-cpu", "tensorflow", "keras", "numpy", "pandas", "hydra-core",
    "omegaconf", "pydantic", "fsspec", "s3fs", "gcsfs", "pillow",
)


def environment() -> dict[str, Any]:
    """Versions of Python and of the packages a run depends on (for output.json)."""
    return copy.deepcopy(_environment())


@functools.lru_cache(maxsize=1)
def _environment() -> dict[str, Any]:
    # read once per process: output.json is rewritten on every metric
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {"python": _platform.python_version(), "platform": _platform.platform(), "packages": versions}


def weights_sha256(model: Any) -> str:
    """SHA-256 over a Keras model's weights (each variable's path, dtype, shape and bytes, in
    ``model.weights`` order): equal hashes mean bit-identical weights."""
    import hashlib

    import numpy as np

    digest = hashlib.sha256()
    for variable in model.weights:
        value = np.ascontiguousarray(np.asarray(variable))
        digest.update(f"{getattr(variable, 'path', variable.name)}|{value.dtype.str}|{value.shape}\n".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def archive_model(model: Any, staging: Path, archive: Path, metadata: dict[str, Any]) -> Path:
    """``model`` (a Keras model, a model folder or file, or a ready ``.tar.gz``) as a local archive.

    A Keras model is saved as ``model.keras`` next to ``metadata.json`` (secrets redacted).

    Raises:
        StorageError: ``model`` is a path that does not exist.
    """
    if isinstance(model, (str, os.PathLike)):
        src = Path(model)
        if not src.exists():
            raise StorageError(f"The run step returned a model path that does not exist: {src}")
        if src.is_file() and src.name.endswith((".tar.gz", ".tgz")):
            return src
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(src, arcname=src.name)
        return archive
    model.save(staging / "model.keras")
    (staging / "metadata.json").write_text(json.dumps(_secrets.redact_obj(metadata), indent=2))
    with tarfile.open(archive, "w:gz") as tar:
        for item in ("model.keras", "metadata.json"):
            tar.add(staging / item, arcname=item)
    shutil.rmtree(staging, ignore_errors=True)
    return archive


def upload_model(
    io: IoTools, archive: Path, url: str, *, kept: KeptFiles, name: str, scratch: str | None,
    job_id: str, on_kept: Callable[[str], None],
) -> None:
    """Upload the archive to ``url``; on failure keep it locally for a rerun of the job id.

    Raises:
        StorageError: naming where the model (and the scratch folder) are kept.
    """
    try:
        io.upload(str(archive), url)
    except BaseException as exc:  # an interrupted upload keeps the model too
        kept_at = kept.keep_model(str(archive), name, scratch)
        on_kept(kept_at)
        if not isinstance(exc, Exception):
            raise
        raise StorageError(
            f"Could not upload the model to {_secrets.redact(url)} ({_secrets.redact(describe(exc))}). "
            f"The trained model is kept at {kept_at}"
            + (f" (scratch folder {scratch} kept too)" if scratch else "")
            + f"; rerun job.id={job_id} to upload it."
        ) from exc
