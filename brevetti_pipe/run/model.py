"""Run layer: an exported model archive (model.tar.gz) loaded in one of its formats, predicting on
image paths, URLs, bytes, numpy arrays or PIL images with the preprocessing it was trained with."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brevetti_pipe.errors import BrevettiPipeError, ConfigError, StageError, StorageError
from brevetti_pipe.run._images import IMAGE_SUFFIXES, encode_input, find_image_stage
from brevetti_pipe.run.export import (
    FORMAT_FILES, check_export_formats, file_digests, metadata_digests, stage_preprocessor, weights_sha256,
)
from brevetti_pipe.storage import IoTools, is_local, listed_url

__all__ = ["FORMATS", "LoadedModel", "load_model", "safe_extract"]

log = logging.getLogger(__name__)

FORMATS = tuple(FORMAT_FILES)
#: the format ``load_model`` picks when none is asked for, first found first
_PREFERENCE = ("saved_model", "keras", "onnx", "tflite")


def safe_extract(archive: str | os.PathLike[str], target: str | os.PathLike[str]) -> list[str]:
    """Extract a tar archive into ``target``; members escaping it (absolute, ``..``, links) are refused."""
    target = Path(target).resolve()
    names = []
    try:
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                dest = (target / member.name).resolve()
                if not member.isfile() and not member.isdir() or not str(dest).startswith(str(target) + os.sep):
                    raise StorageError(f"Refusing to extract {member.name!r} from {archive}: it would land outside {target}")
                names.append(member.name)
            tar.extractall(target, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, StorageError):
            raise
        raise StorageError(f"Cannot read the model archive {archive}: {exc} (expected a model.tar.gz)") from None
    return names


_TF_NODE = re.compile(r"\{\{function_node [^}]*\}\}\s*|\s*\[\[\{\{node [^\]]*\]\]\s*(\[Op:[^\]]*\])?")


def _first_line(exc: BaseException) -> str:
    """The reason of an error in one line; for TensorFlow's "Graph execution error:" the op's own message
    (the line before the ``[[{{node ...}}]]`` trailer), not the heading or the traceback."""
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    if lines and lines[0].rstrip(":").strip() == "Graph execution error":
        lines = [ln for ln in lines[1:] if not ln.startswith("[[")][-1:] or lines
    line = _TF_NODE.sub("", lines[0]).strip() if lines else ""
    return line or type(exc).__name__


def _folder_images(item: Any, io: IoTools) -> list[Any]:
    """``[item]``, or for a folder (path or URL) its image files, recursively, sorted.

    Raises:
        StorageError: a folder without images.
    """
    if not isinstance(item, (str, os.PathLike)):
        return [item]
    source = os.fspath(item)
    if source.split("?", 1)[0].lower().endswith(IMAGE_SUFFIXES):
        return [item]  # an image file: no listing request
    try:
        fs, path = io.fs(source)
        is_dir = fs.isdir(path)
    except BrevettiPipeError:
        raise
    except Exception:
        return [item]  # reading it reports the problem
    if not is_dir:
        return [item]
    files = sorted(listed_url(fs, p, source) for p in fs.find(path) if p.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise StorageError(f"The folder {source} has no images (expected BMP, PNG, JPEG, GIF or TIFF files)")
    return files


class LoadedModel:
    """A trained model in one export format, with the preprocessing it was trained with.

    Use it as a context manager (or call :meth:`close`) to remove its extraction folder at once;
    otherwise the folder goes when the object is garbage collected.

    Attributes:
        format: ``keras``, ``saved_model``, ``onnx`` or ``tflite``.
        metadata: the archive's metadata.json.
        classes: output class names in order (for segmentation: the mask ids' names).
        task: ``classification`` or ``segmentation``.
        operating_point: ``{accept_class, threshold, ...}`` or None.
        model: the runtime object (Keras model, SavedModel, ONNX Runtime session or TFLite runner).
    """

    def __init__(self, folder: str | os.PathLike[str], format: str | None = None, *, verify: bool = True,
                 cleanup: str | os.PathLike[str] | None = None) -> None:
        self.dir = Path(folder)
        self._finalizer = weakref.finalize(self, shutil.rmtree, os.fspath(cleanup), True) if cleanup else None
        try:
            meta_path = self.dir / "metadata.json"
            self.metadata: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
            self.format = self._pick(format)
            self.classes: list[str] = list(self.metadata.get("classes") or [])
            self.task: str = self.metadata.get("task") or "classification"
            self.operating_point: dict[str, Any] | None = self.metadata.get("operating_point")
            if verify:
                self._verify_metadata()
                self._verify_files()
            self._stage: Any = self._image_stage()
            self._pre: Any = None
            self.model: Any = self._load()
        except BaseException:
            self.close()
            raise

    # -- loading -------------------------------------------------------------------------
    def _pick(self, format: str | None) -> str:
        present = [f for f in FORMATS if (self.dir / FORMAT_FILES[f].rstrip("/")).exists()]
        if format is None:
            for f in _PREFERENCE:
                if f in present:
                    return f
            raise StorageError(f"The model archive at {self.dir} holds no model (expected one of {list(FORMAT_FILES.values())})")
        if format not in FORMATS:
            raise ConfigError(f"Unknown model format. Received: format={format!r}; allowed: {list(FORMATS)}")
        if format not in present:
            raise ConfigError(f"The model archive has no {format} model (it holds {present}). Received: format={format!r}")
        return format

    def _verify_metadata(self) -> None:
        """Compare the entries that give the outputs their meaning (classes, task, pipeline, input, operating
        point...) with the digests recorded beside them at export (archives from before the record pass)."""
        recorded: dict[str, str] = self.metadata.get("metadata_sha256") or {}
        found = metadata_digests(self.metadata)
        changed = [key for key, digest in recorded.items() if found.get(key) != digest]
        if changed:
            raise StorageError(
                f"The model archive's metadata.json was changed after export (job {self.metadata.get('job_id')}): "
                f"{', '.join(changed)} differ from metadata_sha256. Received: "
                + "; ".join(f"{k}={json.dumps(self.metadata.get(k))[:200]}" for k in changed)
            )

    def _verify_files(self) -> None:
        """Compare the chosen format's files with the SHA-256 digests metadata.json recorded at export."""
        recorded: dict[str, str] = self.metadata.get("files") or {}
        if not recorded:
            return
        prefix = FORMAT_FILES[self.format]
        wanted = {p: d for p, d in recorded.items() if p == prefix or (prefix.endswith("/") and p.startswith(prefix))}
        found = file_digests(self.dir, prefix)
        for path in sorted(set(wanted) | set(found)):
            if wanted.get(path) != found.get(path):
                what = "is missing" if path not in found else "was not exported" if path not in wanted else "differs from its SHA-256"
                raise StorageError(
                    f"The model archive's {path} {what} in metadata.json: the archive was changed after export "
                    f"(job {self.metadata.get('job_id')}). Received: {path} sha256={found.get(path)}, expected {wanted.get(path)}"
                )

    def _image_stage(self) -> Any:
        from brevetti_pipe.stages import Stage

        spec = (self.metadata.get("preprocessing") or {}).get("stage")
        if spec is None:  # archives from before the preprocessing record
            found = find_image_stage(self.metadata.get("pipeline") or {})
            spec = found[1] if found else None
        stage = Stage.from_config(spec, where="metadata.preprocessing.stage") if spec else None
        self._stage_config: dict[str, Any] | None = stage.get_config() if stage is not None else None
        return stage

    def _load(self) -> Any:
        fmt, path = self.format, self.dir / FORMAT_FILES[self.format].rstrip("/")
        if fmt == "keras":
            import keras

            model = keras.saving.load_model(path, compile=False)
            expected = self.metadata.get("weights_sha256")
            if expected and weights_sha256(model) != expected:
                raise StorageError(
                    f"The weights in model.keras differ from weights_sha256 in metadata.json: the archive was changed "
                    f"after export (job {self.metadata.get('job_id')}). Received: {weights_sha256(model)}, expected {expected}"
                )
            return model
        if fmt == "saved_model":
            import tensorflow as tf

            return tf.saved_model.load(str(path))
        check_export_formats([fmt])
        if fmt == "onnx":
            import onnxruntime

            return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        import warnings

        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's notice about LiteRT
            interpreter = tf.lite.Interpreter(model_content=path.read_bytes())
        return interpreter.get_signature_runner("predict_preprocessed")

    # -- preprocessing -------------------------------------------------------------------
    @property
    def input_spec(self) -> dict[str, Any]:
        """``{"shape": [None, H, W, C], "dtype": ...}`` of the preprocessed batch."""
        return dict(self.metadata.get("input") or {})

    def _preprocessor(self) -> Any:
        if self._pre is None:
            if self._stage is None:
                raise StageError("The archive records no image_pipeline stage; preprocess the images yourself "
                                 "and call predict_preprocessed()")
            spec = self.input_spec
            shape = tuple(spec.get("shape") or [None, None, None, None])[1:]
            self._pre = stage_preprocessor(self._stage_config or {}, shape, spec.get("dtype") or "float32")
        return self._pre

    def preprocess(self, images: Sequence[bytes]) -> np.ndarray:
        """Encoded images (BMP/PNG/JPEG/GIF bytes) -> the batch the Keras, ONNX and TFLite models take."""
        import tensorflow as tf

        return np.asarray(self._preprocessor()(tf.constant(list(images), dtype=tf.string)))

    # -- predicting ----------------------------------------------------------------------
    def predict_preprocessed(self, batch: np.ndarray) -> np.ndarray:
        """Model outputs for an already preprocessed batch (see :meth:`preprocess`)."""
        batch = np.asarray(batch)
        if self.format == "keras":
            return np.asarray(self.model(batch, training=False))
        if self.format == "saved_model":
            import tensorflow as tf

            return np.asarray(self.model.signatures["predict_preprocessed"](image=tf.constant(batch))["probabilities"])
        if self.format == "onnx":
            return np.asarray(self.model.run(None, {self.model.get_inputs()[0].name: batch})[0])
        return np.asarray(self.model(image=batch)["probabilities"])

    def _run_encoded(self, images: list[bytes]) -> np.ndarray:
        import tensorflow as tf

        if self.format == "saved_model":
            return np.asarray(self.model.signatures["serving_default"](images=tf.constant(images, dtype=tf.string))["probabilities"])
        return self.predict_preprocessed(self.preprocess(images))

    def predict_encoded(self, images: Sequence[bytes], batch_size: int = 32) -> tuple[np.ndarray | None, dict[int, str]]:
        """Outputs for encoded images, tolerating bad ones: ``(outputs of the good images in order, {index: reason})``."""
        outputs: list[np.ndarray] = []
        bad: dict[int, str] = {}
        for start in range(0, len(images), batch_size):
            chunk = list(images[start:start + batch_size])
            try:
                outputs.append(self._run_encoded(chunk))
                continue
            except BrevettiPipeError:
                raise
            except Exception as exc:
                if len(chunk) == 1:
                    bad[start] = _first_line(exc)
                    continue
            for i, data in enumerate(chunk):  # one of them is bad: find it
                try:
                    outputs.append(self._run_encoded([data]))
                except BrevettiPipeError:
                    raise
                except Exception as exc:
                    bad[start + i] = _first_line(exc) if data else "empty file (0 bytes)"
        return (np.concatenate(outputs) if outputs else None), bad

    def predict_bytes(self, images: Sequence[bytes], batch_size: int = 32) -> np.ndarray:
        """Model outputs (class probabilities, or per-pixel probabilities) for encoded images.

        Raises:
            StageError: an item is not bytes (e.g. a path: use :meth:`predict`), or cannot be decoded.
        """
        if isinstance(images, (bytes, bytearray)):
            images = [bytes(images)]
        items = list(images)
        for i, item in enumerate(items):
            if not isinstance(item, (bytes, bytearray, memoryview)):
                hint = " Pass paths to predict() instead." if isinstance(item, (str, os.PathLike)) else ""
                raise StageError(f"predict_bytes takes encoded image bytes; item {i} is a {type(item).__name__} "
                                 f"({str(item)[:200]!r}).{hint}")
        if not items:
            shape = (self.metadata.get("output") or {}).get("shape") or [None, len(self.classes)]
            return np.zeros((0, *[d or 0 for d in shape[1:]]), np.float32)
        out, bad = self.predict_encoded([bytes(b) for b in items], batch_size)
        if bad:
            i = min(bad)
            raise StageError(f"Image {i} cannot be decoded: {bad[i]} ({len(bad)} of {len(items)} images bad)")
        assert out is not None
        return out

    def predict(self, x: Any, batch_size: int = 32, io: IoTools | None = None) -> np.ndarray:
        """Model outputs for images: one or a list of paths / fsspec URLs, encoded bytes, numpy pixel
        arrays (``[H, W]``, ``[H, W, C]``, ``[N, H, W, C]``; uint8 or uint16) or PIL images.

        A folder (local or a URL) stands for its image files (BMP/PNG/JPEG/GIF/TIFF), searched
        recursively, in sorted order, as with ``brevetti-pipe-predict``.

        Returns:
            ``[N, classes]`` probabilities (classification) or ``[N, H, W, classes]`` (segmentation).
        """
        items: Iterable[Any] = x if isinstance(x, (list, tuple)) else [x]
        encoded: list[bytes] = []
        for i, item in enumerate(items):
            for one in _folder_images(item, io or IoTools()):
                encoded.extend(encode_input(one, io, where=f"predict input {i}"))
        return self.predict_bytes(encoded, batch_size)

    def predict_classes(self, x: Any) -> list[str]:
        """The most probable class name per image (classification)."""
        return [self.classes[i] for i in np.argmax(self.predict(x), axis=1)]

    def decide(self, probabilities: np.ndarray) -> list[str] | None:
        """``accept`` / ``reject`` per row at the archive's operating point (None without one)."""
        from brevetti_pipe.run.operating_point import accept_index, decisions

        op = self.operating_point
        if not op or self.task != "classification":
            return None
        column = accept_index(self.classes, op["accept_class"])
        return decisions(np.asarray(probabilities)[:, column], float(op["threshold"]))

    # -- clean-up ------------------------------------------------------------------------
    def close(self) -> None:
        """Remove the extraction folder now (when this object made it)."""
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> LoadedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LoadedModel(format={self.format!r}, task={self.task!r}, classes={self.classes!r})"


def load_model(path_or_url: str | os.PathLike[str], io: IoTools | None = None, *, format: str | None = None,
               verify: bool = True) -> LoadedModel:
    """Load an exported ``model.tar.gz`` (a local path, any fsspec URL, or an extracted archive folder).

    Args:
        format: ``keras``, ``saved_model``, ``onnx`` or ``tflite``; default: the SavedModel when the
            archive has one, else the first format found.
        verify: check the format's files against the SHA-256 digests (and, for Keras, the weights
            against ``weights_sha256``) recorded in metadata.json at export.

    Raises:
        StorageError: the archive is missing, unreadable, or was changed after export.
        ConfigError: the archive has no model in ``format``, or its extra is not installed.
    """
    source = os.fspath(path_or_url)
    if is_local(source) and os.path.isdir(source):
        return LoadedModel(source, format, verify=verify)
    workdir = Path(tempfile.mkdtemp(prefix="brevetti-pipe-model-"))
    try:
        archive = source
        if not is_local(source):
            archive = str(workdir / "model.tar.gz")
            Path(archive).write_bytes((io or IoTools()).read_file(source))
        elif not os.path.isfile(source):
            raise StorageError(f"Model archive not found: {source}")
        safe_extract(archive, workdir / "model")
        if not is_local(source):
            os.remove(archive)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return LoadedModel(workdir / "model", format, verify=verify, cleanup=workdir)
