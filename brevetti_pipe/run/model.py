"""Loading an exported model archive (model.tar.gz) and predicting on raw image bytes."""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brevetti_pipe.errors import StorageError
from brevetti_pipe.storage import IoTools, is_local

__all__ = ["LoadedModel", "load_model", "safe_extract"]


def safe_extract(archive: str | os.PathLike[str], target: str | os.PathLike[str]) -> list[str]:
    """Extract a tar archive into ``target``; members escaping it (absolute, ``..``, links) are refused."""
    target = Path(target).resolve()
    names = []
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            dest = (target / member.name).resolve()
            if not member.isfile() and not member.isdir() or not str(dest).startswith(str(target) + os.sep):
                raise StorageError(f"Refusing to extract {member.name!r} from {archive}: it would land outside {target}")
            names.append(member.name)
        tar.extractall(target, filter="data")
    return names


class LoadedModel:
    """A trained model with the preprocessing it was trained with.

    Attributes:
        model: the Keras model.
        metadata: the archive's metadata.json (classes, pipeline, job id).
        classes: class names in output order.
    """

    def __init__(self, model: Any, metadata: dict[str, Any]) -> None:
        self.model = model
        self.metadata = metadata
        self.classes: list[str] = list(metadata.get("classes") or [])
        self._image_stage = self._find_image_stage(metadata.get("pipeline") or {})

    @staticmethod
    def _find_image_stage(pipeline: dict[str, Any]) -> Any:
        from brevetti_pipe.stages import Stage

        for spec in pipeline.values():
            if spec.get("type") == "image_pipeline":
                return Stage.from_config(spec)
        return None

    def preprocess(self, images: Sequence[bytes]) -> np.ndarray:
        """Encoded images (BMP/PNG/JPEG bytes) -> the batch the model expects."""
        import tensorflow as tf

        if self._image_stage is None:
            raise ValueError("The archive records no image_pipeline stage; preprocess the images yourself")
        ds = tf.data.Dataset.from_tensor_slices(tf.constant(list(images), dtype=tf.string))
        ds = ds.map(self._image_stage.process_bytes).batch(64)
        return np.concatenate([b.numpy() for b in ds], axis=0)

    def predict_bytes(self, images: Sequence[bytes]) -> np.ndarray:
        """Model outputs (e.g. class probabilities) for encoded images."""
        return np.asarray(self.model.predict(self.preprocess(images), verbose=0))

    def predict_classes(self, images: Sequence[bytes]) -> list[str]:
        """The most probable class name per image."""
        return [self.classes[i] for i in np.argmax(self.predict_bytes(images), axis=1)]


def load_model(path_or_url: str, io: IoTools | None = None) -> LoadedModel:
    """Load an exported ``model.tar.gz`` from a local path or any fsspec URL."""
    import keras

    io = io or IoTools()
    workdir = Path(tempfile.mkdtemp(prefix="brevetti-pipe-model-"))
    archive = path_or_url
    if not is_local(path_or_url):
        archive = str(workdir / "model.tar.gz")
        Path(archive).write_bytes(io.read_file(path_or_url))
    elif not os.path.isfile(path_or_url):
        raise StorageError(f"Model archive not found: {path_or_url}")
    safe_extract(archive, workdir / "model")
    metadata_path = workdir / "model" / "metadata.json"
    metadata = json.loads(metadata_path.read_text()) if metadata_path.exists() else {}
    model = keras.saving.load_model(workdir / "model" / "model.keras")
    return LoadedModel(model, metadata)
