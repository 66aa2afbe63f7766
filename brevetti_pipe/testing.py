"""Test helpers for brevetti_pipe users: fake data and the stage conformance suite.

Add a stage to the suite with a three-line test class::

    from brevetti_pipe.testing import StageConformance

    class TestInvert(StageConformance):
        def make_stage(self):
            return Invert(key="img")

``StageConformance`` checks: config round trip; runs under ``tf.data`` map in graph mode; no
Python (py_function / numpy_function) in the traced graph; same seed -> same output and, for
random stages, another seed -> another output; the declared output dtypes and shapes; and for
stages with ``label_keys``, that images and masks stay aligned.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["StageConformance", "checkerboard", "make_vials_dataset", "write_image", "run_stage"]

PY_OPS = {"PyFunc", "EagerPyFunc", "PyFuncStateless", "NumpyFunction"}


def write_image(path: str | os.PathLike[str], array: np.ndarray) -> str:
    """Write a uint8 (or uint16 for PNG/TIFF) array as an image file chosen by the extension."""
    from PIL import Image

    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    Image.fromarray(array).save(path)
    return path


def checkerboard(height: int, width: int, cell: int = 4, values: tuple[int, int] = (0, 1)) -> np.ndarray:
    """A ``[H, W]`` uint8 checkerboard of ``values``."""
    yy, xx = np.mgrid[0:height, 0:width]
    board = ((yy // cell + xx // cell) % 2).astype(np.uint8)
    return np.where(board == 1, values[1], values[0]).astype(np.uint8)


def make_vials_dataset(root: str | os.PathLike[str], per_class: int = 4, size: int = 64, annotations: bool = False) -> str:
    """A small synthetic vials dataset (good / missing_cap / failed_cap) at ``root``; returns ``root``."""
    from brevetti_pipe.data._demo import generate_vials

    return generate_vials(os.fspath(root), per_class=per_class, size=size, annotations=annotations)


def run_stage(
    stage: Any, samples: pd.DataFrame, seed: int = 0, epochs: int = 1, upstream: list[Any] | None = None
) -> list[dict[str, np.ndarray]]:
    """Every element of ``samples`` through ``upstream`` stages then ``stage``, in a seeded
    DataGenerator (graph mode, unbatched)."""
    from brevetti_pipe.data import DataGenerator

    gen = DataGenerator(samples, batch_size=None, seed=seed, repeat=epochs > 1).map([*(upstream or []), stage])
    it = gen.get_dataset_numpy()
    return [next(it) for _ in range(len(samples) * epochs)]


def _digest(elements: list[dict[str, np.ndarray]], keys: list[str]) -> str:
    h = hashlib.sha256()
    for e in elements:
        for k in keys:
            h.update(np.ascontiguousarray(e[k]).tobytes())
    return h.hexdigest()


class StageConformance:
    """Mixin test suite every stage passes. Override :meth:`make_stage`; others have defaults.

    The default samples are four 24x32 RGB PNGs with a checkerboard mask annotation beside each.
    """

    #: output key -> (numpy dtype name, shape or None to skip the shape check)
    expected: dict[str, tuple[str, tuple[int, ...] | None]] = {}

    def make_stage(self) -> Any:
        raise NotImplementedError

    def make_upstream(self) -> list[Any]:
        """Stages that produce the tested stage's inputs (e.g. an ImagePipeline before an augmenter)."""
        return []

    def make_samples(self, tmp_path: Any) -> pd.DataFrame:
        rows = []
        rng = np.random.default_rng(0)
        for i in range(4):
            img = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
            path = write_image(os.path.join(tmp_path, "imgs", f"s{i}.png"), img)
            ann = {"annotations": [{"label": "a", "type": "rectangle", "points": [[2, 2], [12 + i, 10]]},
                                   {"label": "b", "type": "polygon", "points": [[20, 4], [30, 4], [25, 20]]}]}
            with open(path + ".json", "w") as fh:
                json.dump(ann, fh)
            rows.append({"path": path, "category": ("good",) if i % 2 else ("bad",), "etag": f"e{i}",
                         "annotation_path": path + ".json"})
        return pd.DataFrame(rows)

    # -- the suite -----------------------------------------------------------------------
    def test_config_round_trip(self) -> None:
        from brevetti_pipe.stages import Stage

        stage = self.make_stage()
        config = stage.get_config()
        assert json.loads(json.dumps(config)) == config, "get_config() must be JSON-compatible"
        again = Stage.from_config(config)
        assert type(again) is type(stage) and again == stage and again.get_config() == config

    def test_runs_in_graph_with_declared_outputs(self, tmp_path: Any) -> None:
        out = run_stage(self.make_stage(), self.make_samples(tmp_path), upstream=self.make_upstream())
        for key, (dtype, shape) in self.expected.items():
            assert key in out[0], f"missing output key {key!r}; got {sorted(out[0])}"
            assert out[0][key].dtype == np.dtype(dtype), (key, out[0][key].dtype)
            if shape is not None:
                assert out[0][key].shape == shape, (key, out[0][key].shape)

    def test_no_python_in_the_graph(self, tmp_path: Any) -> None:
        import tensorflow as tf

        from brevetti_pipe.data import DataGenerator
        from brevetti_pipe.data._generator import _column_values

        stage = self.make_stage()
        chain = [*self.make_upstream(), stage]
        gen = DataGenerator(self.make_samples(tmp_path), batch_size=None)
        samples = gen._prepared(chain)
        element = {c: tf.constant(_column_values(samples[c])[0]) for c in samples.columns}  # as the generator feeds it

        def apply(x: dict[str, Any], s: Any) -> dict[str, Any]:
            for st in chain:
                x = st(x, seed=s)
            return x

        fn = tf.function(apply)
        graph = fn.get_concrete_function(element, tf.constant([1, 2], tf.int64)).graph
        ops = {op.type for op in graph.get_operations()}
        for f in graph._functions.values() if hasattr(graph, "_functions") else []:
            ops |= {n.op for n in f.definition.node_def}
        assert not ops & PY_OPS, f"Python ops in the stage graph: {ops & PY_OPS}"

    def test_seeded(self, tmp_path: Any) -> None:
        stage = self.make_stage()
        samples = self.make_samples(tmp_path)
        keys = sorted(self.expected) or ["path"]
        up = self.make_upstream()
        a = _digest(run_stage(stage, samples, seed=1, upstream=up), keys)
        assert a == _digest(run_stage(stage, samples, seed=1, upstream=up), keys), "same seed must give the same output"
        if getattr(stage, "random", False):
            others = {_digest(run_stage(stage, samples, seed=s, upstream=up), keys) for s in (2, 3, 4)}
            assert others - {a}, "a random stage must change with the seed"

    def test_images_and_masks_stay_aligned(self, tmp_path: Any) -> None:
        """Stages with label_keys: a checkerboard image and its mask transform identically."""
        stage = self.make_stage()
        params = getattr(stage, "params", None)
        if not getattr(params, "label_keys", None):
            return
        import tensorflow as tf

        board = checkerboard(32, 32, cell=4, values=(0, 1))
        assert params is not None
        image_key, mask_key = params.image_keys[0], params.label_keys[0]
        nearest = stage.from_config({**stage.get_config(), "image_noise": None, "image_filter": None})
        cfg = nearest.get_config()
        for part in ("random_transformer", "image_deformation"):
            if cfg.get(part):
                cfg[part]["interpolation"] = "nearest"
        nearest = stage.from_config(cfg)
        for seed in range(6):
            x = {image_key: tf.constant(board[..., None], tf.float32), mask_key: tf.constant(board[..., None], tf.uint8)}
            y = nearest(x, seed=tf.constant([seed, 7], tf.int64))
            img = y[image_key].numpy()[..., 0]
            mask = y[mask_key].numpy()[..., 0]
            assert y[mask_key].dtype == tf.uint8, "masks keep their integer dtype"
            assert np.array_equal(np.round(img).astype(np.uint8), mask), f"image and mask diverged for seed {seed}"
