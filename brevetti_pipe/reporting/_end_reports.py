"""End-of-job reporting callbacks: pivot table, facets atlas and the HTML report."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from pydantic import Field

from brevetti_pipe.reporting._callback import JobCallback
from brevetti_pipe.config._schema import StrictModel

if TYPE_CHECKING:
    from brevetti_pipe.reporting._callback import JobView

__all__ = ["PivotReport", "FacetsReport", "HtmlReport"]

log = logging.getLogger(__name__)


class PivotReport(JobCallback, name="pivot"):
    """Writes artifacts/pivot/ (counts of samples per ``rows`` x ``cols``) when the job listed samples."""

    class Params(StrictModel):
        rows: list[str] = Field(default_factory=lambda: ["dataset_id", "purpose"], description="Row fields")
        cols: list[str] = Field(default_factory=lambda: ["category"], description="Column fields")
        agg: dict[str, str] = Field(default_factory=lambda: {"url": "first"}, description="Extra column -> aggregation")

    def on_job_end(self, *, job: JobView, status: str, **kwargs: Any) -> None:
        if job.samples is None:
            return
        from brevetti_pipe.reporting._pivot import export_pivot_table

        export_pivot_table(job.artifact_path("pivot"), job.samples, self.params.rows, self.params.cols,
                           self.params.agg, io=job.io.best_effort())


class FacetsReport(JobCallback, name="facets"):
    """Writes artifacts/facets/ (a 64x64 thumbnail atlas and metadata) when the job listed samples."""

    class Params(StrictModel):
        count: int = Field(32, ge=1, le=1024, description="Thumbnails in the atlas (spread over categories)")
        tile_size: int = Field(64, ge=8, le=256, description="Thumbnail edge in pixels")

    def on_job_end(self, *, job: JobView, status: str, **kwargs: Any) -> None:
        samples = job.samples
        if samples is None or samples.empty:
            return
        from brevetti_pipe.reporting._facets import build_facets

        # an even spread over categories, deterministic
        order = samples.assign(_cat=samples["category"].map(str))
        order["_rank"] = order.groupby("_cat").cumcount()
        chosen = order.sort_values(["_rank", "_cat"], kind="mergesort").head(self.params.count)
        chosen = chosen.drop(columns=["_cat", "_rank"])
        gen = job.thumbnails(chosen, self.params.tile_size)
        build_facets(gen, job.artifact_path("facets"), count=self.params.count, io=job.io.best_effort())


#: the shortest pause in seconds between two live rewrites of the report after epochs
LIVE_PAUSE = 2.0


class HtmlReport(JobCallback, name="report"):
    """Writes artifacts/report.html at the start of the job, after epochs (reload to follow a running
    job: at most one rewrite per :data:`LIVE_PAUSE` seconds, or ten times the last rewrite's time,
    and always after the training's last epoch) and at its end (runs last then), from the artifacts
    and what the job knows."""

    class Params(StrictModel):
        file: str = Field("report.html", description="Report file name in the artifacts")
        gallery: int = Field(12, ge=0, le=200, description="Samples per gallery group (misclassified, least confident)")
        thumbnail_size: int = Field(96, ge=16, le=512, description="Gallery thumbnail edge in pixels (shown 1:1)")
        live: bool = Field(True, description="Rewrite the report at the start and after epochs (and at the end)")

    _live_failed = False
    #: when the report was last written and the shortest pause before an epoch rewrites it again
    _written_at = float("-inf")
    _pause = 0.0

    def _write(self, job: JobView, extras: dict[str, Any]) -> None:
        from brevetti_pipe.reporting._report import write_report

        launch = getattr(job, "launch", None)
        summary = getattr(job, "model_summary", None)
        extras = {"launch": launch() if launch else {}, "model": summary() if summary else None, **extras}
        io = job.io.best_effort()  # the report can be rebuilt later: a store that is down costs one backoff
        started = time.perf_counter()
        write_report(job.artifacts_url, io, extras, self.params.file)  # type: ignore[arg-type]
        self._written_at = time.perf_counter()
        took = self._written_at - started
        # live rewrites take at most ~1/10 of the training time: short epochs are batched up
        self._pause = max(LIVE_PAUSE, 10 * took)
        log.debug("report.html rewritten in %.0f ms", 1000 * took)

    def _live(self, job: JobView, extras: dict[str, Any]) -> None:
        if not self.params.live or self._live_failed:
            return
        try:
            self._write(job, extras)
        except Exception:
            self._live_failed = True  # a store that is down costs one backoff, not one per epoch
            raise

    def on_job_start(self, *, job: JobView, **kwargs: Any) -> None:
        self._live_failed = False
        self._live(job, {})

    def on_epoch_end(self, *, job: JobView, epoch: int, metrics: dict[str, float], epochs: int | None = None,
                     **kwargs: Any) -> None:
        """Rewrite the report with this epoch, unless it was rewritten moments ago (the training's last
        epoch, when ``epochs`` tells it, is always written)."""
        last = epochs is not None and epoch >= epochs
        if not last and time.perf_counter() - self._written_at < self._pause:
            return
        # the progress callback may write this epoch after us: hand it over directly
        self._live(job, {"epoch": {"epoch": epoch, **metrics}})

    def on_job_end(self, *, job: JobView, status: str, **kwargs: Any) -> None:
        extras: dict[str, Any] = {}
        if self.params.gallery:
            from brevetti_pipe.reporting._gallery import gallery
            from brevetti_pipe.reporting._report import predictions

            found = predictions(job.io.best_effort(), job.artifacts_url)
            if found:
                extras["gallery"] = gallery(job, found, self.params.gallery, self.params.thumbnail_size)
        self._write(job, extras)
        log.info("Report: %s", job.artifact_path(self.params.file))
