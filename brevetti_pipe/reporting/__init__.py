"""Reporting layer: callbacks (registered by name, configured under ``callbacks.<name>``) and the
outputs they write under a job's artifacts: progress, pivot tables, facets, the HTML report.

The writers (pivot, facets, report) are imported on first use: they bring pandas and NumPy along,
which ``brevetti-pipe --help`` and ``--cfg job`` do without.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from brevetti_pipe.reporting._callback import CALLBACKS, CallbackList, JobCallback, JobView, check_files
from brevetti_pipe.reporting._end_reports import FacetsReport, HtmlReport, PivotReport
from brevetti_pipe.reporting.progress import Progress
from brevetti_pipe.reporting.tracking import MlflowTracking, TensorBoardTracking

if TYPE_CHECKING:
    from brevetti_pipe.reporting._facets import build_facets, tile2d
    from brevetti_pipe.reporting._pivot import export_pivot_table, pivot_counts
    from brevetti_pipe.reporting._report import render_report, write_report

__all__ = [
    "CALLBACKS", "CallbackList", "FacetsReport", "HtmlReport", "JobCallback", "JobView", "MlflowTracking", "PivotReport",
    "Progress", "TensorBoardTracking",
    "build_facets", "check_files", "export_pivot_table", "pivot_counts", "render_report", "tile2d", "write_report",
]

_LAZY = {
    "build_facets": "_facets", "tile2d": "_facets", "export_pivot_table": "_pivot", "pivot_counts": "_pivot",
    "render_report": "_report", "write_report": "_report",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"brevetti_pipe.reporting.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'brevetti_pipe.reporting' has no attribute {name!r}")
