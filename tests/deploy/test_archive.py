"""The deployable archive: its contents, every format in its own runtime, parity and the operating point
in output.json, load_model on every kind of input, and tampering caught."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brevetti_pipe import load_model
from brevetti_pipe.errors import StageError, StorageError
from brevetti_pipe.run.export import weights_sha256
from brevetti_pipe.run.operating_point import accept_index, choose_operating_point, tradeoff_curve
from tests.deploy.conftest import ALL_FORMATS


def _devel(deployed):
    samples = deployed.job.samples
    return samples[samples.purpose == "devel"]


def _three_encodings(deployed, folder: Path) -> list[Path]:
    """One devel image as PNG, its own BMP, and a JPEG."""
    bmp = Path(_devel(deployed).path.iloc[0])
    with Image.open(bmp) as img:
        img.load()
        img.save(folder / "vial.png")
        img.convert("RGB").save(folder / "vial.jpg", quality=90)
    return [folder / "vial.png", bmp, folder / "vial.jpg"]


def test_archive_holds_every_format_and_the_metadata_to_serve_them(deployed):
    with tarfile.open(deployed.archive) as tar:
        names = tar.getnames()
        meta = json.load(tar.extractfile("metadata.json"))
    assert {"metadata.json", "model.keras", "model.onnx", "model.tflite", "saved_model/saved_model.pb"} <= set(names)
    assert meta["job_id"] == "dep" and meta["task"] == "classification"
    assert meta["classes"] == deployed.job.classes == ["failed_cap", "good", "missing_cap"]
    assert meta["weights_sha256"] == weights_sha256(deployed.model) == deployed.out["weights_sha256"]
    stage = meta["preprocessing"]["stage"]
    assert stage["type"] == "image_pipeline" and stage["target_size"] == [16, 16] and stage["color_mode"] == "greyscale"
    assert meta["preprocessing"]["applies_to"] == ["keras", "onnx", "tflite"]
    assert meta["input"]["shape"] == [None, 16, 16, 1] and meta["input"]["dtype"] == "float32"
    assert list(meta["formats"]) == ALL_FORMATS and meta["formats"]["saved_model"]["input"] == "encoded"
    assert meta["operating_point"] == deployed.out["operating_point"]
    assert {"tensorflow-cpu", "keras", "numpy", "onnxruntime"} <= set(meta["packages"])
    assert set(meta["files"]) >= {"model.keras", "model.onnx", "model.tflite", "saved_model/saved_model.pb"}
    assert meta["export"] == deployed.out["export"]


def test_output_json_has_parity_per_format_and_the_operating_point(deployed):
    out = deployed.out
    assert out["status"] == "completed" and out["model_path"] == "model.tar.gz"
    devel = _devel(deployed)
    for fmt in ALL_FORMATS:
        figures = out["export"][fmt]
        assert figures["samples"] == len(devel) == 6
        assert figures["label_agreement"] == 1.0 and 0.0 <= figures["max_abs_diff"] <= 1e-4
    # the Keras file and the SavedModel run the very graph that was trained
    assert out["export"]["keras"]["max_abs_diff"] == 0.0 and out["export"]["saved_model"]["max_abs_diff"] == 0.0

    # the recipe evaluated nothing into job.evaluations: the point comes from the export's own devel pass
    point = out["operating_point"]
    assert set(point) >= {"threshold", "devel_escape_rate", "devel_false_reject_rate", "test_escape_rate",
                          "test_false_reject_rate"}
    with load_model(deployed.archive, format="keras") as model:
        probs = model.predict(list(devel.path))
        classes = model.classes
        test = deployed.job.samples[deployed.job.samples.purpose == "test"]
        test_probs = model.predict(list(test.path))
    column = accept_index(classes, "good")
    is_good = np.array([c == ("good",) for c in devel.category])
    chosen = choose_operating_point(probs[:, column], is_good, 0.5)
    assert (point["threshold"], point["devel_escape_rate"], point["devel_false_reject_rate"]) == (
        chosen.threshold, chosen.escape_rate, chosen.false_reject_rate)
    test_good = np.array([c == ("good",) for c in test.category])
    accepted = test_probs[:, column] >= point["threshold"]
    assert point["test_escape_rate"] == float(np.mean(accepted[~test_good]))
    assert point["test_false_reject_rate"] == float(np.mean(~accepted[test_good]))
    chart = json.loads((deployed.artifacts / "charts" / "operating_point.json").read_text())
    assert chart["chosen"] == point
    assert chart["curve"] == [p.as_dict() for p in tradeoff_curve(probs[:, column], is_good)]


def test_every_format_runs_in_its_own_runtime_in_a_fresh_process(deployed, tmp_path):
    paths = _three_encodings(deployed, tmp_path)
    with load_model(deployed.archive) as model:  # the SavedModel, encoded bytes in
        assert model.format == "saved_model"
        served = model.predict([str(p) for p in paths])
        batch = model.preprocess([p.read_bytes() for p in paths])
    with load_model(deployed.archive, format="keras") as keras_model:
        assert np.array_equal(keras_model.predict([str(p) for p in paths]), served)
    extracted = tmp_path / "archive"
    with tarfile.open(deployed.archive) as tar:
        tar.extractall(extracted, filter="data")
    np.save(tmp_path / "batch.npy", batch)
    script = textwrap.dedent(f"""
        import sys, numpy as np, tensorflow as tf, onnxruntime as ort
        root, paths = {str(extracted)!r}, {[str(p) for p in paths]!r}
        serve = tf.saved_model.load(root + "/saved_model").signatures["serving_default"]
        raw = [open(p, "rb").read() for p in paths]
        saved = serve(images=tf.constant(raw))["probabilities"].numpy()
        batch = np.load({str(tmp_path / "batch.npy")!r})
        session = ort.InferenceSession(root + "/model.onnx", providers=["CPUExecutionProvider"])
        onnx = session.run(None, {{session.get_inputs()[0].name: batch}})[0]
        interpreter = tf.lite.Interpreter(model_path=root + "/model.tflite")
        tflite = interpreter.get_signature_runner("predict_preprocessed")(image=batch)["probabilities"]
        assert not any(m.startswith("brevetti_pipe") for m in sys.modules)
        np.savez({str(tmp_path / "fresh.npz")!r}, saved=saved, onnx=onnx, tflite=tflite)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    fresh = np.load(tmp_path / "fresh.npz")
    # served from raw PNG / BMP / JPEG bytes, bit for bit what load_model(...).predict(paths) gives
    assert np.array_equal(fresh["saved"], served)
    for fmt in ("onnx", "tflite"):
        assert np.max(np.abs(fresh[fmt] - served)) <= 1e-4, fmt
        assert np.array_equal(np.argmax(fresh[fmt], axis=1), np.argmax(served, axis=1)), fmt


def test_load_model_predicts_paths_bytes_arrays_and_pil_images_alike(deployed, tmp_path):
    png = _three_encodings(deployed, tmp_path)[0]
    with Image.open(png) as img:
        img.load()
    for fmt in ALL_FORMATS:
        with load_model(deployed.archive, format=fmt) as model:
            expected = model.predict(str(png))
            assert expected.shape == (1, 3)
            assert np.array_equal(model.predict(png.read_bytes()), expected)
            assert np.array_equal(model.predict(np.asarray(img)), expected), fmt
            assert np.array_equal(model.predict(img), expected), fmt
            assert np.array_equal(model.predict([img, png.read_bytes()]), model.predict([png, str(png)]))
            assert model.predict_classes(img) == [model.classes[int(np.argmax(expected))]]
            threshold = deployed.out["operating_point"]["threshold"]
            assert model.decide(expected) == ["accept" if expected[0, 1] >= threshold else "reject"]

    model = load_model(deployed.archive, format="onnx")
    with pytest.raises(StageError, match=r"predict_bytes takes encoded image bytes; item 0 is a str .*predict\(\)"):
        model.predict_bytes([str(png)])
    with pytest.raises(StageError, match=r"Image 1 cannot be decoded"):
        model.predict_bytes([png.read_bytes(), b"not an image"])
    with pytest.raises(StageError, match=r"uint8 or uint16.*float32 array"):
        model.predict(np.zeros((16, 16), np.float32))
    folder = model.dir.parent
    assert folder.is_dir()
    del model
    gc.collect()
    assert not folder.exists(), "the finalizer removes the extraction folder"
    with load_model(deployed.archive, format="tflite") as model:
        folder = model.dir.parent
    assert not folder.exists(), "leaving the with block removes the extraction folder"


def _repack(archive: Path, target: Path, change) -> Path:
    """A copy of ``archive`` with ``change(folder)`` applied to its extracted files."""
    folder = target.with_suffix("")
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    change(folder)
    with tarfile.open(target, "w:gz") as tar:
        for entry in sorted(folder.iterdir()):
            tar.add(entry, arcname=entry.name)
    return target


def test_a_tampered_archive_is_refused(deployed, tmp_path):
    import keras

    def change_weights(folder: Path) -> None:
        model = keras.saving.load_model(folder / "model.keras", compile=False)
        kernel = model.weights[0]
        kernel.assign(kernel.numpy() + 0.01)
        model.save(folder / "model.keras")

    tampered = _repack(deployed.archive, tmp_path / "tampered.tar.gz", change_weights)
    with pytest.raises(StorageError, match="model.keras differs from its SHA-256 in metadata.json"):
        load_model(tampered, format="keras")

    def change_weights_and_digest(folder: Path) -> None:  # a re-pack that also refreshed the file digests
        change_weights(folder)
        from brevetti_pipe.run.export import file_digests

        meta = json.loads((folder / "metadata.json").read_text())
        meta["files"] = {k: v for k, v in file_digests(folder).items() if k != "metadata.json"}
        (folder / "metadata.json").write_text(json.dumps(meta))

    tampered = _repack(deployed.archive, tmp_path / "tampered2.tar.gz", change_weights_and_digest)
    with pytest.raises(StorageError, match="weights in model.keras differ from weights_sha256"):
        load_model(tampered, format="keras")

    def change_onnx(folder: Path) -> None:
        data = bytearray((folder / "model.onnx").read_bytes())
        data[-5] ^= 0xFF
        (folder / "model.onnx").write_bytes(bytes(data))

    tampered = _repack(deployed.archive, tmp_path / "tampered3.tar.gz", change_onnx)
    with pytest.raises(StorageError, match="model.onnx differs"):
        load_model(tampered, format="onnx")
    with load_model(tampered, format="saved_model") as model:  # the other formats are untouched
        assert model.predict(_devel(deployed).path.iloc[0]).shape == (1, 3)


def test_edited_classes_or_operating_point_in_metadata_json_are_refused(deployed, tmp_path):
    def edit(key: str, value):
        def change(folder: Path) -> None:
            meta = json.loads((folder / "metadata.json").read_text())
            meta[key] = value(meta[key])
            (folder / "metadata.json").write_text(json.dumps(meta, indent=2))
        return change

    swapped = _repack(deployed.archive, tmp_path / "classes.tar.gz", edit("classes", lambda c: c[::-1]))
    with pytest.raises(StorageError, match=r"metadata\.json.*classes"):
        load_model(swapped, format="keras")
    looser = _repack(deployed.archive, tmp_path / "op.tar.gz", edit("operating_point", lambda op: {**op, "threshold": 0.0}))
    with pytest.raises(StorageError, match=r"metadata\.json.*operating_point"):
        load_model(looser, format="keras")
    untouched = _repack(deployed.archive, tmp_path / "same.tar.gz", lambda folder: None)
    with load_model(untouched, format="keras") as model:
        assert model.classes == ["failed_cap", "good", "missing_cap"]


def test_the_keras_format_reuses_the_preprocessing_the_export_traced(deployed):
    """The export traces the image preprocessing once: loading the archive's Keras model in the same
    process preprocesses with that very function and traces nothing new."""
    from brevetti_pipe.run.export import stage_preprocessor

    data = [Path(p).read_bytes() for p in _devel(deployed).path.iloc[:3]]
    with load_model(deployed.archive, format="keras") as loaded:
        meta = loaded.metadata
        shape, dtype = meta["input"]["shape"][1:], meta["input"]["dtype"]
        exported = stage_preprocessor(meta["preprocessing"]["stage"], shape, dtype)
        traced = exported.experimental_get_tracing_count()
        assert traced >= 1  # the export traced it
        out = loaded.predict_bytes(data)
        assert loaded._preprocessor() is exported
        assert exported.experimental_get_tracing_count() == traced
    with load_model(deployed.archive, format="saved_model") as served:
        np.testing.assert_allclose(out, served.predict_bytes(data), rtol=1e-5, atol=1e-6)
