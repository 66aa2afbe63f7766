"""A segmentation archive exports the same way (masks out) and predict writes mask PNGs beside the CSV."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from PIL import Image

from brevetti_pipe import Job, load_model
from brevetti_pipe.cli.predict import main
from brevetti_pipe.recipes.vials_segmentation import VialsSegmentationSettings
from brevetti_pipe.run.recipe import recipe
from tests.deploy.conftest import QUIET


@recipe("deploy_tiny_segmenter", settings=VialsSegmentationSettings)
def tiny_segmenter(job):  # noqa: ANN001, ANN201
    """A per-pixel softmax over background, cap and liquid (a 3x3 convolution), fitted for one step."""
    import keras

    samples = job.get_samples()
    train = job.data_generator(samples[samples.purpose == "train"], train=True, batch_size=8,
                               output_structure=("img", "segmentation"))
    job.seed_frameworks()
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 3, padding="same", activation="softmax")(inputs))
    model.compile("adam", "categorical_crossentropy")
    model.fit(train.get_dataset(), steps_per_epoch=1, epochs=1, verbose=0, shuffle=False)
    return model


def test_segmentation_archive_and_predicted_masks(tmp_path, capsys):
    root = tmp_path / "platform"
    job = Job.init(job_id="seg", overrides=[
        "recipe=vials_segmentation", "run=deploy_tiny_segmenter", "pipeline.image.target_size=[16,16]",
        f"platform.root={root}", *QUIET,
        "datasets.vials_seg.generator_params.per_class=4", "datasets.vials_seg.generator_params.size=32",
        "export.formats=[saved_model,tflite]",  # keras and onnx: as for classification (test_archive.py)
    ])
    job.start()
    artifacts = root / "jobs" / "seg" / "artifacts"
    out = json.loads((artifacts / "output.json").read_text())
    assert out["status"] == "completed", out["error"]
    devel = job.samples[job.samples.purpose == "devel"]
    assert list(out["export"]) == ["saved_model", "tflite"]
    for fmt in ("saved_model", "tflite"):
        figures = out["export"][fmt]
        assert figures["samples"] == len(devel) > 0 and figures["label_agreement"] == 1.0, fmt
        assert figures["max_abs_diff"] <= 1e-4, fmt
    assert out["operating_point"] is None

    paths = [str(p) for p in devel.path]
    with load_model(artifacts / "model.tar.gz") as model:
        assert model.task == "segmentation" and model.classes == ["background", "cap", "liquid"]
        assert model.metadata["output"]["shape"] == [None, 16, 16, 3]
        probs = model.predict(paths)
    assert probs.shape == (len(paths), 16, 16, 3)

    csv = tmp_path / "out" / "predictions.csv"
    assert main([str(artifacts / "model.tar.gz"), *paths, "--format", "tflite", "--output", str(csv)]) == 0, capsys.readouterr().err
    table = pd.read_csv(csv)
    assert list(table.columns) == ["path", "mask", "area_background", "area_cap", "area_liquid"]
    assert list(table.path) == paths
    for row, p in zip(table.itertuples(), probs):
        mask = np.asarray(Image.open(tmp_path / "out" / "predictions_masks" / row.mask))
        expected = np.argmax(p, axis=-1)
        assert mask.shape == (16, 16) and np.mean(mask == expected) == 1.0
        assert [row.area_background, row.area_cap, row.area_liquid] == [float(np.mean(expected == i)) for i in range(3)]
