"""One tiny classifier trained and exported in every format, shared by the deploy tests."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

ALL_FORMATS = ["keras", "saved_model", "onnx", "tflite"]
QUIET = ["~callbacks.facets", "~callbacks.report", "~callbacks.pivot"]


@pytest.fixture(scope="session")
def deployed(tmp_path_factory: pytest.TempPathFactory, tiny_vials: Path) -> SimpleNamespace:
    """The vials recipe (1 epoch, 16x16 greyscale) with train/devel/test, every export format and an
    operating point on ``good``: the job, its in-memory model, its artifacts and output.json."""
    from brevetti_pipe import Job

    root = tmp_path_factory.mktemp("deploy") / "platform"
    job = Job.init(job_id="dep", overrides=[
        "recipe=vials_classification", "settings.epochs=1", "settings.batch_size=8", "pipeline.image.target_size=[16,16]",
        f"platform.root={root}", f"datasets.vials.url={tiny_vials}", *QUIET,
        "split.fractions.train=0.6", "split.fractions.devel=0.2", "split.fractions.test=0.2",
        f"export.formats=[{','.join(ALL_FORMATS)}]", "evaluation.operating_point={accept_class:good,max_escape_rate:0.5}",
    ])
    model = job.start()
    artifacts = root / "jobs" / "dep" / "artifacts"
    return SimpleNamespace(job=job, model=model, root=root, artifacts=artifacts, archive=artifacts / "model.tar.gz",
                           out=json.loads((artifacts / "output.json").read_text()))
