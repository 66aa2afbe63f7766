"""Reporting outputs written under a job's artifacts: pivot tables, facets, the HTML report."""

from brevetti_pipe.reporting._facets import build_facets, tile2d
from brevetti_pipe.reporting._pivot import export_pivot_table, pivot_counts
from brevetti_pipe.reporting._report import render_report, write_report

__all__ = ["build_facets", "export_pivot_table", "pivot_counts", "render_report", "tile2d", "write_report"]
