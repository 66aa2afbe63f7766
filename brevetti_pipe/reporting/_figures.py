"""Report figures: matplotlib charts rendered to inline SVG (text stays text, so pages can be searched
and tests can read the axis labels).

Figures are built with :class:`matplotlib.figure.Figure` and the Agg-free SVG canvas: no pyplot, no
global figure registry, no display needed, safe in worker threads.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["confusion_svg", "curves_svg", "objective_svg", "operating_point_svg"]

#: colour per series label; train and devel keep their colour in every chart
_PALETTE = {"train": "#1f77b4", "devel": "#d62728", "test": "#2ca02c"}
_OTHERS = ("#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
_RC: dict[str, Any] = {
    "svg.fonttype": "none", "font.size": 9, "axes.titlesize": 10, "axes.grid": True, "grid.color": "#dddddd",
    "grid.linewidth": 0.6, "axes.spines.top": False, "axes.spines.right": False, "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
}
_HEADER = re.compile(r"^.*?(?=<svg)", re.S)
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.S)


def _rc(extra: dict[str, Any] | None = None) -> Any:
    """matplotlib's rc_context with the report's style (``extra`` on top)."""
    import matplotlib

    settings: Any = {**_RC, **(extra or {})}
    return matplotlib.rc_context(settings)


def _color(label: str, i: int) -> str:
    return _PALETTE.get(label, _OTHERS[i % len(_OTHERS)])


def _figure(width: float, height: float, fixed: bool = False) -> Any:
    """A figure; ``fixed`` margins cost a third of the constrained layout (the per-epoch charts use them)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=96, layout=None if fixed else "constrained")
    if fixed:
        fig.subplots_adjust(left=0.15, right=0.97, top=0.89, bottom=0.19)
    return fig


def _svg(fig: Any, key: str) -> str:
    """The figure as an ``<svg>`` element for inline use (no XML prolog; ids unique per ``key``)."""
    buf = io.StringIO()
    with _rc({"svg.hashsalt": key}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    return _METADATA.sub("", _HEADER.sub("", buf.getvalue(), count=1), count=1)


def _style(ax: Any) -> None:
    ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


#: per thread, the figure of each training-curve chart: a live report rewrite after an epoch moves the
#: points of the lines already drawn instead of building the axes, ticks and lines again (a third of the
#: time; the SVG is byte for byte the one a new figure gives)
_CHARTS = threading.local()


def _curve_chart(name: str, labels: list[str]) -> tuple[Any, Any, list[Any]]:
    charts: dict[str, tuple[list[str], Any, Any, list[Any]]] = _CHARTS.__dict__.setdefault("charts", {})
    found = charts.get(name)
    if found is None or found[0] != labels:
        fig = _figure(4.4, 2.6, fixed=True)
        ax = fig.add_subplot()
        lines = [ax.plot([], [], marker="o", markersize=3.5, linewidth=1.8, color=_color(label, i), label=label)[0]
                 for i, label in enumerate(labels)]
        ax.set_title(name)
        ax.set_xlabel("epoch")
        _style(ax)
        found = charts[name] = (labels, fig, ax, lines)
    return found[1], found[2], found[3]


def curves_svg(name: str, series: Mapping[str, Sequence[tuple[int, float | None]]]) -> str:
    """One training-curve chart: ``series`` label (train, devel, ...) -> (epoch, value) points.

    The x axis shows whole epochs only (a one-epoch run shows ``1``), with a grid and tick labels on
    both axes; a missing (non-finite) value leaves a gap.
    """
    from matplotlib.ticker import MaxNLocator

    ordered = sorted(series.items(), key=lambda kv: (kv[0] not in _PALETTE, kv[0]))
    with _rc():
        fig, ax, lines = _curve_chart(name, [label for label, _ in ordered])
        epochs: set[int] = set()
        for line, (_, points) in zip(lines, ordered):
            xs = [int(x) for x, _ in points]
            ys = [np.nan if y is None else float(y) for _, y in points]
            epochs.update(xs)
            line.set_data(xs, ys)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.relim()
        ax.autoscale_view()
        if epochs:
            lo, hi = min(epochs), max(epochs)
            if len(epochs) <= 12:
                ax.set_xticks(sorted(epochs))
            pad = 0.5 if hi - lo < 12 else 0.03 * (hi - lo)
            ax.set_xlim(lo - pad, hi + pad)
        ax.legend(loc="best", fontsize=8, frameon=False)
        return _svg(fig, f"curve-{name}")


def _count_text(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.1f}M"
    if value >= 1e4:
        return f"{value / 1e3:.0f}k"
    return f"{int(value)}"


def confusion_svg(matrix: Sequence[Sequence[float]], classes: Sequence[str], purpose: str) -> str:
    """Two heatmaps side by side: counts, and rows normalised to 1 (recall per true class on the diagonal)."""
    counts = np.asarray(matrix, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.where(totals > 0, counts / totals, 0.0)
    n = len(classes)
    longest = max((len(str(c)) for c in classes), default=1)
    rotate = n > 2 and longest > 4
    side = min(4.2, 1.6 + 0.5 * n + (0.06 * longest if rotate else 0))
    with _rc():
        fig = _figure(2 * side + 0.6, side + 0.2)
        axes = fig.subplots(1, 2)
        panels = ((counts, "Blues", "counts", _count_text), (rates, "Oranges", "row-normalised", lambda v: f"{v:.2f}"))
        for ax, (values, cmap, title, fmt) in zip(axes, panels):
            vmax = float(values.max()) if values.size and values.max() > 0 else 1.0
            image = ax.imshow(values, cmap=cmap, vmin=0, vmax=vmax)
            ax.set_title(f"{purpose}: {title}")
            ax.set_xticks(range(n), labels=[str(c) for c in classes], rotation=35 if rotate else 0,
                          ha="right" if rotate else "center", rotation_mode="anchor")
            ax.set_yticks(range(n), labels=[str(c) for c in classes])
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.grid(False)
            if n <= 12:
                for r in range(n):
                    for c in range(n):
                        dark = values[r, c] > 0.55 * vmax
                        ax.text(c, r, fmt(values[r, c]), ha="center", va="center", fontsize=8,
                                color="white" if dark else "#222222")
            bar = fig.colorbar(image, ax=ax, shrink=0.7, aspect=15)
            if title == "counts":
                from matplotlib.ticker import MaxNLocator

                bar.locator = MaxNLocator(integer=True)
                bar.update_ticks()
        return _svg(fig, f"confusion-{purpose}")


def operating_point_svg(points: Sequence[Mapping[str, float]], chosen: Mapping[str, float] | None) -> str:
    """Escape rate and false-reject rate against the threshold, and the trade-off between them, with
    the chosen operating point marked."""
    pts = sorted(points, key=lambda p: p["threshold"])
    t = [p["threshold"] for p in pts]
    esc = [p["escape_rate"] for p in pts]
    frr = [p["false_reject_rate"] for p in pts]
    with _rc():
        fig = _figure(8.4, 2.8)
        left, right = fig.subplots(1, 2)
        left.plot(t, esc, color="#d62728", linewidth=1.8, label="escape rate")
        left.plot(t, frr, color="#1f77b4", linewidth=1.8, label="false reject rate")
        left.set_xlabel("threshold")
        left.set_ylabel("rate")
        left.set_title("rates by threshold")
        right.plot(frr, esc, color="#444444", linewidth=1.8, marker="o", markersize=2.5)
        right.set_xlabel("false reject rate")
        right.set_ylabel("escape rate")
        right.set_title("trade-off")
        if chosen:
            left.axvline(chosen["threshold"], color="#2ca02c", linestyle="--", linewidth=1.2,
                         label=f"chosen ({chosen['threshold']:.3g})")
            right.plot([chosen["false_reject_rate"]], [chosen["escape_rate"]], marker="*", markersize=12,
                       color="#2ca02c", linestyle="none", label="chosen")
            right.legend(fontsize=8, frameon=False)
        left.legend(fontsize=8, frameon=False)
        for ax in (left, right):
            _style(ax)
        return _svg(fig, "operating-point")


def objective_svg(parameter: str, values: Sequence[Any], objective: str, scores: Sequence[float | None],
                  best: int | None) -> str:
    """The sweep objective against one swept parameter (numbers on a numeric axis, other values as
    categories), the best run starred."""
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric:
        xs: list[Any] = [float(v) for v in values]
    else:
        labels = sorted({str(v) for v in values})
        xs = [labels.index(str(v)) for v in values]
    ys = [np.nan if s is None else float(s) for s in scores]
    with _rc():
        fig = _figure(3.8, 2.8, fixed=True)
        ax = fig.add_subplot()
        ax.scatter(xs, ys, s=28, color="#1f77b4", zorder=3, label="run")
        if best is not None:
            ax.scatter([xs[best]], [ys[best]], s=140, marker="*", color="#ff7f0e", zorder=4, label="best")
        if numeric:
            distinct = sorted(set(xs))
            if len(distinct) <= 8:
                ax.set_xticks(distinct, labels=[f"{v:g}" for v in distinct])
            if len(distinct) > 2 and distinct[0] > 0 and distinct[-1] / distinct[0] >= 100:
                ax.set_xscale("log")
        else:
            ax.set_xticks(range(len(labels)), labels=labels)
        ax.margins(x=0.12, y=0.12)
        ax.set_xlabel(parameter)
        ax.set_ylabel(objective)
        ax.set_title(f"{objective} by {parameter}")
        _style(ax)
        return _svg(fig, f"objective-{parameter}")
