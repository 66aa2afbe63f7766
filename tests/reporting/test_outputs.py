"""Pivot tables, facets, model export and load_model round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from PIL import Image

from brevetti_pipe import Job, load_model
from brevetti_pipe.reporting import export_pivot_table, tile2d


def test_pivot_table_files(tmp_path):
    samples = pd.DataFrame({
        "dataset_id": ["a", "a", "b"], "category": [("good",), ("bad",), ("good",)],
        "purpose": ["train", "devel", "train"], "url": ["u1", "u2", "u3"],
    })
    table = export_pivot_table(str(tmp_path / "pivot"), samples, rows=["dataset_id"], cols=["category"], agg={"url": "first"})
    assert table.loc["a", "good"] == 1 and table.loc["b", "bad"] == 0
    fields = json.loads((tmp_path / "pivot" / "summary_fields.json").read_text())
    assert [f["name"] for f in fields] == ["dataset_id", "category", "count"]
    data = json.loads((tmp_path / "pivot" / "pivot_data.json").read_text())
    assert {"dataset_id": "a", "category": "bad", "count": 1, "url": "u2"} in data


def test_tile2d_layout():
    batch = np.arange(6 * 2 * 2).reshape(6, 2, 2, 1)
    grid = tile2d(batch, (2, 3))
    assert grid.shape == (4, 6, 1)
    assert np.array_equal(grid[2:4, 0:2], batch[3])


def test_training_job_exports_reports_and_model_round_trips(tmp_path, tiny_vials):
    job = Job.init(job_id="rt", overrides=[
        "recipe=vials_classification", "settings.epochs=2", "settings.batch_size=8", "pipeline.image.target_size=[32,32]",
        f"platform.root={tmp_path}", f"datasets.vials.url={tiny_vials}",
    ])
    model = job.start()
    artifacts = tmp_path / "jobs" / "rt" / "artifacts"
    facets = json.loads((artifacts / "facets" / "facets.json").read_text())
    assert len(facets["samples"]) == 30 and facets["tile_size"] == [64, 64]
    atlas = np.asarray(Image.open(artifacts / "facets" / "spriteatlas.png"))
    assert atlas.shape[:2] == (5 * 64, 6 * 64) and atlas.std() > 5
    cm = json.loads((artifacts / "charts" / "confusion_matrix_devel.json").read_text())
    assert cm["classes"] == job.classes and sum(map(sum, cm["matrix"])) == (job.samples.purpose == "devel").sum()
    assert (artifacts / "pivot" / "pivot.csv").exists() and (artifacts / "report.html").exists()

    devel = job.samples[job.samples.purpose == "devel"]
    expected = model.predict(np.concatenate([x for x, _ in job.data_generator(devel, output_structure=("img", "onehot")).get_dataset_numpy()]), verbose=0)
    loaded = load_model(str(artifacts / "model.tar.gz"))
    assert loaded.classes == job.classes and loaded.metadata["job_id"] == "rt"
    images = [open(p, "rb").read() for p in devel.path]
    np.testing.assert_allclose(loaded.predict_bytes(images), expected, rtol=1e-5, atol=1e-6)
    assert loaded.predict_classes(images[:1])[0] in job.classes
