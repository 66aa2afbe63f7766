"""Shared fixtures of the run-layer tests: one tiny classification job and one tiny segmentation job,
trained once per session and inspected by many tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import KERAS_ONLY

#: no report, facets or pivot: these tests look at training and evaluation only
QUIET = ("~callbacks.report", "~callbacks.facets", "~callbacks.pivot")

#: 16x16 greyscale vials, 4 filters, 2 epochs; train / devel / test so both purposes are evaluated
CLS_ARGS = (
    "recipe=vials_classification", "settings.epochs=2", "settings.batch_size=8", "settings.filters=4",
    "pipeline.image.target_size=[16,16]",
    "split.fractions.train=0.6", "split.fractions.devel=0.2", "split.fractions.test=0.2", KERAS_ONLY, *QUIET,
)


def seg_args(data: Path) -> tuple[str, ...]:
    """A 16x16 U-Net with 2 filters, 1 epoch, on ``data``; devel and test purposes."""
    return ("recipe=vials_segmentation", "settings.epochs=1", "settings.batch_size=4", "settings.filters=2",
            "pipeline.image.target_size=[16,16]", f"datasets.vials_seg.url={data}",
            "split.fractions.train=0.6", "split.fractions.devel=0.2", "split.fractions.test=0.2", KERAS_ONLY, *QUIET)


@pytest.fixture(scope="session")
def classification_job(tmp_path_factory: pytest.TempPathFactory, tiny_vials: Path):
    """(job, model) of a completed tiny classification run."""
    from brevetti_pipe import Job

    root = tmp_path_factory.mktemp("cls")
    job = Job.init(overrides=[*CLS_ARGS, f"platform.root={root}", f"datasets.vials.url={tiny_vials}", "job.id=cls"])
    model = job.start()
    return job, model


@pytest.fixture(scope="session")
def segmentation_job(tmp_path_factory: pytest.TempPathFactory, tiny_vials_seg: Path):
    """(job, model) of a completed tiny segmentation run."""
    from brevetti_pipe import Job

    root = tmp_path_factory.mktemp("seg")
    job = Job.init(overrides=[*seg_args(tiny_vials_seg), f"platform.root={root}", "job.id=seg"])
    model = job.start()
    return job, model
