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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from brevetti_pipe._util import secrets as _secrets
from brevetti_pipe.errors import ConfigError, StorageError, describe
from brevetti_pipe.run._kept import KeptFiles
from brevetti_pipe.storage import IoTools

__all__ = [
    "FORMAT_FILES", "SEMANTIC_METADATA", "archive_folder", "archive_model", "check_export_formats", "environment",
    "file_digests", "metadata_digests", "preprocessor_function", "stage_preprocessor", "upload_model", "weights_sha256",
    "write_formats",
]

_PACKAGES = (
    "brevetti_pipe", "tensorflow-cpu", "tensorflow", "keras", "numpy", "pandas", "hydra-core",
    "omegaconf", "pydantic", "fsspec", "s3fs", "gcsfs", "pillow", "tf2onnx", "onnx", "onnxruntime",
)

#: where each export format lives inside model.tar.gz (a trailing ``/`` is a folder)
FORMAT_FILES = {"keras": "model.keras", "saved_model": "saved_model/", "onnx": "model.onnx", "tflite": "model.tflite"}
#: the modules a format needs that the core install lacks, and the extra bringing them
_FORMAT_NEEDS = {"onnx": (("tf2onnx", "onnx", "onnxruntime"), "export")}
#: SavedModel signatures: encoded bytes in (serving_default), the preprocessing alone, the model alone
SIGNATURES = {
    "serving_default": "images: [N] tf.string of encoded BMP/PNG/JPEG/GIF -> probabilities (preprocessing inside)",
    "preprocess": "images: [N] tf.string -> image: the preprocessed batch the model takes",
    "predict_preprocessed": "image: the preprocessed batch -> probabilities",
}


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


def preprocessor_function(preprocess: Any) -> Any:
    """``preprocess`` (``[N] tf.string -> batch``) as a ``tf.function``, traced without AutoGraph when it can be.

    The image stage is plain TensorFlow ops: AutoGraph's source conversion of it changes nothing and costs
    seconds per process (most of an export). A function that needs it (Python control flow on tensors
    fails to trace without it) keeps it.
    """
    import tensorflow as tf

    signature = [tf.TensorSpec([None], tf.string)]
    plain = tf.function(tf.autograph.experimental.do_not_convert(preprocess), input_signature=signature, autograph=False)
    try:
        plain.get_concrete_function()
    except Exception:  # needs AutoGraph; a genuine error surfaces again on the converted trace
        return tf.function(preprocess, input_signature=signature)
    return plain


def stage_preprocessor(config: dict[str, Any], shape: Sequence[int | None], dtype: str) -> Any:
    """The traced preprocessing (:func:`preprocessor_function` of ``run._images.batch_preprocessor``) of the
    ``image_pipeline`` stage ``config`` for a model input of ``shape`` (no batch axis) and ``dtype``.

    One function per (config, shape, dtype) per process: the export, its parity check and a
    :class:`~brevetti_pipe.run.model.LoadedModel` of the archive share it, so it is traced once, not once each
    (the function is pure: the same config makes the same graph).
    """
    return _stage_preprocessor(json.dumps(config, sort_keys=True), tuple(shape), str(dtype))


@functools.lru_cache(maxsize=8)
def _stage_preprocessor(config: str, shape: tuple[int | None, ...], dtype: str) -> Any:
    from brevetti_pipe.run._images import batch_preprocessor
    from brevetti_pipe.stages import Stage

    stage = Stage.from_config(json.loads(config), where="metadata.preprocessing.stage")
    return preprocessor_function(batch_preprocessor(stage, shape, dtype))


def weights_sha256(model: Any) -> str:
    """SHA-256 over a Keras model's weights (each variable's dtype, shape and bytes, in
    ``model.weights`` order): equal hashes mean bit-identical weights. Variable names are left out:
    Keras numbers layer names per process (``dense_1``), and a reloaded model must hash the same."""
    import hashlib

    import numpy as np

    digest = hashlib.sha256()
    for variable in model.weights:
        value = np.ascontiguousarray(np.asarray(variable))
        digest.update(f"{value.dtype.str}|{value.shape}\n".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _importable(module: str) -> bool:
    import importlib.util
    import sys

    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_export_formats(formats: Sequence[str]) -> None:
    """Fail early when a format in ``export.formats`` needs packages that are not installed.

    Raises:
        ConfigError: naming the format, the missing module and the extra to install.
    """
    for fmt in formats:
        modules, extra = _FORMAT_NEEDS.get(fmt, ((), ""))
        missing = [m for m in modules if not _importable(m)]
        if missing:
            raise ConfigError(
                f"export.formats asks for {fmt}, which needs {', '.join(missing)} (not installed). "
                f"Install brevetti_pipe[{extra}], or drop {fmt} from export.formats. Received: export.formats={list(formats)}"
            )


def write_formats(model: Any, staging: Path, formats: Sequence[str], preprocess: Any, input_spec: Any) -> dict[str, Any]:
    """Write ``model`` in each of ``formats`` into ``staging`` (see :data:`FORMAT_FILES`).

    Args:
        model: a single-input Keras model.
        preprocess: ``[N] tf.string -> model input batch`` (see ``run._images.batch_preprocessor``, or its
            ``tf.function`` from :func:`stage_preprocessor`), traced into the SavedModel's ``serving_default``
            so it serves encoded image bytes.
        input_spec: the model input's ``tf.TensorSpec`` (batch dimension None).

    Returns:
        ``{format: {file/path and what it takes}}`` for metadata.json.
    """
    import warnings

    import keras
    import tensorflow as tf

    check_export_formats(formats)
    if not isinstance(preprocess, tf.types.experimental.PolymorphicFunction):  # else traced already
        preprocess = preprocessor_function(preprocess)
    written: dict[str, Any] = {}
    images = tf.TensorSpec([None], tf.string, name="images")
    tensor = tf.TensorSpec(input_spec.shape, input_spec.dtype, name="image")
    need_saved_model = any(f in formats for f in ("saved_model", "tflite"))
    if "keras" in formats:
        model.save(staging / FORMAT_FILES["keras"])
        written["keras"] = {"file": FORMAT_FILES["keras"], "input": "preprocessed"}
    if need_saved_model:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", lambda images: {"probabilities": model(preprocess(images), training=False)},
                             input_signature=[images])
        archive.add_endpoint("preprocess", lambda images: {"image": preprocess(images)}, input_signature=[images])
        archive.add_endpoint("predict_preprocessed", lambda image: {"probabilities": model(image, training=False)},
                             input_signature=[tensor])
        archive.write_out(str(staging / "saved_model"), verbose=False)
        written["saved_model"] = {"path": FORMAT_FILES["saved_model"], "input": "encoded", "signatures": dict(SIGNATURES)}
    if "tflite" in formats:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(staging / "saved_model"),
                                                             signature_keys=["predict_preprocessed"])
        (staging / FORMAT_FILES["tflite"]).write_bytes(converter.convert())
        written["tflite"] = {"file": FORMAT_FILES["tflite"], "input": "preprocessed", "signature": "predict_preprocessed"}
    if need_saved_model and "saved_model" not in formats:
        shutil.rmtree(staging / "saved_model", ignore_errors=True)  # only the TFLite converter's input
    if "onnx" in formats:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf2onnx's NumPy deprecation notices
            model.export(str(staging / FORMAT_FILES["onnx"]), format="onnx", verbose=False,
                         input_signature=[tf.TensorSpec(input_spec.shape, input_spec.dtype, name="image")])
        written["onnx"] = {"file": FORMAT_FILES["onnx"], "input": "preprocessed"}
    return {f: written[f] for f in formats}


#: the metadata.json entries that change what a loaded model means; their digests are checked on load
SEMANTIC_METADATA = ("task", "classes", "pipeline", "preprocessing", "input", "output", "operating_point")


def metadata_digests(metadata: dict[str, Any]) -> dict[str, str]:
    """SHA-256 of each :data:`SEMANTIC_METADATA` entry of ``metadata`` (canonical JSON, as written to metadata.json)."""
    import hashlib

    def digest(value: Any) -> str:
        canonical = json.dumps(json.loads(json.dumps(value)), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    return {key: digest(metadata.get(key)) for key in SEMANTIC_METADATA}


def file_digests(folder: Path, prefix: str = "") -> dict[str, str]:
    """SHA-256 of every file under ``folder`` by its relative path (``/``-separated), sorted; only the
    paths starting with ``prefix`` (a format's file or folder) when it is given."""
    import hashlib

    digests = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if not path.relative_to(folder).as_posix().startswith(prefix):
            continue  # another format's files: loading one format reads no other
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        digests[path.relative_to(folder).as_posix()] = h.hexdigest()
    return digests


def archive_folder(staging: Path, archive: Path) -> Path:
    """Pack every entry of ``staging`` (sorted, metadata.json first) into the gzip tar ``archive``."""
    entries = sorted(staging.iterdir(), key=lambda p: (p.name != "metadata.json", p.name))
    tmp = archive.with_name(f".{archive.name}.{os.getpid()}.tmp")
    # gzip's own default level: level 9 (tarfile's) takes ~40% longer for 0.1% less on float weights
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        for entry in entries:
            tar.add(entry, arcname=entry.name)
    os.replace(tmp, archive)
    return archive


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
