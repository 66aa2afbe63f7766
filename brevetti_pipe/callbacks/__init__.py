"""Reporting callbacks registered by name and configured under ``callbacks.<name>``."""

from brevetti_pipe.callbacks._base import CALLBACKS, CallbackList, JobCallback, check_files
from brevetti_pipe.callbacks.progress import Progress
from brevetti_pipe.callbacks.reporting import FacetsReport, HtmlReport, PivotReport

__all__ = ["CALLBACKS", "CallbackList", "check_files", "FacetsReport", "HtmlReport", "JobCallback", "PivotReport", "Progress"]
