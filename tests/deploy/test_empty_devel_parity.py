"""A job whose devel split is empty: no parity is claimed on no data, and the user is told."""

from __future__ import annotations

import json
import logging

from tests.deploy.conftest import QUIET


def test_empty_devel_records_parity_as_not_checked_and_warns(tmp_path, tiny_vials, caplog):
    from brevetti_pipe import Job

    root = tmp_path / "platform"
    job = Job.init(job_id="nodevel", overrides=[
        "recipe=vials_classification", "settings.epochs=1", "settings.batch_size=8", "pipeline.image.target_size=[16,16]",
        f"platform.root={root}", f"datasets.vials.url={tiny_vials}", *QUIET,
        "split.fractions.train=1.0", "split.fractions.devel=0.0", "split.fractions.test=0.0", "export.formats=[keras]",
    ])
    with caplog.at_level(logging.WARNING):
        job.start()
    artifacts = root / "jobs" / "nodevel" / "artifacts"
    out = json.loads((artifacts / "output.json").read_text())
    assert out["export"]["keras"] == {"max_abs_diff": None, "label_agreement": None, "samples": 0}
    assert any("devel" in r.getMessage() and "not checked" in r.getMessage() for r in caplog.records), caplog.text
