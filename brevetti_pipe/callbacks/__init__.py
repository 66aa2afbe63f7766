"""Reporting callbacks registered by name and configured under ``callbacks.<name>``."""

from brevetti_pipe.callbacks._base import CALLBACKS, CallbackList, JobCallback
from brevetti_pipe.callbacks.progress import Progress
from brevetti_pipe.callbacks.reporting import FacetsReport, HtmlReport, PivotReport

__all__ = ["CALLBACKS", "CallbackList", "FacetsReport", "HtmlReport", "JobCallback", "PivotReport", "Progress"]
