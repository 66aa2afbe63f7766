"""The live report: rewritten after epochs, but not after every one when epochs are short."""

from __future__ import annotations

import logging
from pathlib import Path

from brevetti_pipe import Job


class FastEpochs(Job):
    """Reports a few epochs at once (no training), reading the report right after the last one."""

    epochs = 6
    seen: dict[str, str] = {}

    def run(self):
        for epoch in range(1, self.epochs + 1):
            self.report_progress(epoch, {"loss": 1.0 / epoch, "accuracy": epoch / 10}, epochs=self.epochs)
        type(self).seen["after_last_epoch"] = Path(self.artifact_path("report.html")).read_text()
        return None


def test_short_epochs_batch_up_rewrites_and_the_last_epoch_is_always_shown(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="brevetti_pipe.reporting._end_reports")
    job = FastEpochs.init(job_id="live", overrides=[f"platform.root={tmp_path}"])
    job.start()
    rewrites = [r for r in caplog.records if "report.html rewritten" in r.getMessage()]
    # at the start, after the last of 6 epochs (the others came within the pause) and at the end
    assert len(rewrites) == 3, [r.getMessage() for r in rewrites]
    page = FastEpochs.seen["after_last_epoch"]
    assert 'id="status">running<' in page
    assert page.count('g id="xtick_6"') == 2, "loss and accuracy curves reach epoch 6 before the job ends"
