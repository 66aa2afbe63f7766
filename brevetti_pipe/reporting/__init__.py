"""Reporting layer: callbacks (registered by name, configured under ``callbacks.<name>``) and the
outputs they write under a job's artifacts: progress, pivot tables, facets, the HTML report."""

from brevetti_pipe.reporting._callback import CALLBACKS, CallbackList, JobCallback, JobView
from brevetti_pipe.reporting._end_reports import FacetsReport, HtmlReport, PivotReport
from brevetti_pipe.reporting._facets import build_facets, tile2d
from brevetti_pipe.reporting._pivot import export_pivot_table, pivot_counts
from brevetti_pipe.reporting._report import render_report, write_report
from brevetti_pipe.reporting.progress import Progress

__all__ = [
    "CALLBACKS", "CallbackList", "FacetsReport", "HtmlReport", "JobCallback", "JobView", "PivotReport", "Progress",
    "build_facets", "export_pivot_table", "pivot_counts", "render_report", "tile2d", "write_report",
]
