"""data.cache=auto (the default) on a real job: the same trained weights as the uncached pipeline."""

from __future__ import annotations

import logging

from brevetti_pipe import Job
from brevetti_pipe.run.export import weights_sha256
from tests.run.conftest import CLS_ARGS


def test_auto_cache_trains_the_same_weights_as_no_cache(tmp_path, tiny_vials, classification_job, caplog):
    job, model = classification_job  # trained with the defaults: data.cache=auto
    assert job.config.data.cache == "auto"
    with caplog.at_level(logging.INFO, logger="brevetti_pipe.data"):
        plain = Job.init(overrides=[*CLS_ARGS, f"platform.root={tmp_path}", f"datasets.vials.url={tiny_vials}",
                                    "job.id=cls", "data.cache=false", "data.check_samples=false", "export.formats=[keras]",
                                    "evaluation.purposes=[devel]", "training.resume=false"])
        uncached = plain.start()
    assert "data.cache=auto" not in caplog.text
    assert weights_sha256(uncached) == weights_sha256(model)
    assert plain.metrics["devel_accuracy"] == job.metrics["devel_accuracy"]
