"""report.html: one self-contained page per job, rendered from the job's artifacts alone."""

from __future__ import annotations

import base64
import html
import io as _io
import json
import posixpath
from collections import defaultdict
from typing import Any

import pandas as pd

from brevetti_pipe.storage import IoTools, join_url

__all__ = ["render_report", "write_report"]

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#222;background:#fafafa}
h1{margin:0 0 .3rem}h2{margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.status{display:inline-block;padding:.15rem .6rem;border-radius:1rem;color:#fff;font-weight:600}
.completed{background:#2ca02c}.failed{background:#d62728}.running{background:#1f77b4}
table{border-collapse:collapse;margin:.5rem 0;background:#fff}td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
th{background:#eee}td.l,th.l{text-align:left}.charts{display:flex;flex-wrap:wrap;gap:1rem}
.chart{background:#fff;border:1px solid #ddd;padding:.5rem}pre{background:#fff;border:1px solid #ddd;padding:.8rem;overflow:auto;max-height:24rem}
.error{color:#d62728;font-weight:600}.atlas img{image-rendering:pixelated;border:1px solid #ccc;max-width:100%}
"""


def _read(io: IoTools, url: str) -> bytes | None:
    try:
        return io.read_file(url) if io.exists(url) else None
    except Exception:
        return None


def _table(frame: pd.DataFrame, index_label: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for idx, row in frame.iterrows():
        label = " / ".join(map(str, idx)) if isinstance(idx, tuple) else str(idx)
        cells = "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values)
        rows.append(f"<tr><th class='l'>{html.escape(label)}</th>{cells}</tr>")
    return f"<table><tr><th class='l'>{html.escape(index_label)}</th>{head}</tr>{''.join(rows)}</table>"


def _chart(name: str, series: dict[str, list[tuple[int, float]]]) -> str:
    width, height, pad, legend = 440, 220, 40, 90
    points = [p for values in series.values() for p in values if p[1] is not None]
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def sx(x: float) -> float:
        return pad + (x - x0) / (x1 - x0) * (width - legend - 1.5 * pad)

    def sy(y: float) -> float:
        return height - pad + (y - y0) / (y1 - y0) * -(height - 1.5 * pad)

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' aria-label='{html.escape(name)}'>"]
    parts.append(f"<line x1='{pad}' y1='{height - pad}' x2='{width - legend - pad / 2}' y2='{height - pad}' stroke='#888'/>")
    parts.append(f"<line x1='{pad}' y1='{pad / 2}' x2='{pad}' y2='{height - pad}' stroke='#888'/>")
    parts.append(f"<text x='{pad}' y='{pad / 2 - 4}' font-size='12'>{html.escape(name)}</text>")
    parts.append(f"<text x='2' y='{sy(y1) + 4:.1f}' font-size='10'>{y1:.3g}</text><text x='2' y='{sy(y0):.1f}' font-size='10'>{y0:.3g}</text>")
    parts.append(f"<text x='{sx(x1) - 10:.1f}' y='{height - pad + 14}' font-size='10'>epoch {x1}</text>")
    for i, (label, values) in enumerate(sorted(series.items())):
        color = _COLORS[i % len(_COLORS)]
        pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values if y is not None)
        parts.append(f"<polyline fill='none' stroke='{color}' stroke-width='2' points='{pts}'/>")
        for x, y in values:
            if y is not None:
                parts.append(f"<circle cx='{sx(x):.1f}' cy='{sy(y):.1f}' r='2.5' fill='{color}'/>")
        parts.append(f"<text x='{width - legend + 8}' y='{pad + 14 * i}' font-size='11' fill='{color}'>{html.escape(label)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _curves(progress: list[dict[str, Any]]) -> str:
    groups: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(dict)
    for record in progress:
        epoch = int(record.get("epoch", 0))
        for key, value in record.items():
            if key == "epoch" or not isinstance(value, (int, float)) or value is None:
                continue
            purpose, _, metric = key.partition("_")
            name = metric if purpose in ("train", "devel", "test") and metric else key
            label = purpose if metric and purpose in ("train", "devel", "test") else key
            groups[name].setdefault(label, []).append((epoch, float(value)))
    charts = [c for name, series in sorted(groups.items()) if (c := _chart(name, series))]
    return "<div class='charts' id='curves'>" + "".join(f"<div class='chart'>{c}</div>" for c in charts) + "</div>"


def render_report(artifacts_url: str, io: IoTools | None = None) -> str:
    """Render the report page of the job whose artifacts live at ``artifacts_url``."""
    io = io or IoTools()
    out = json.loads(_read(io, join_url(artifacts_url, "output.json")) or b"{}")
    job = out.get("job", {})
    status = str(out.get("status", "unknown"))
    sections = [
        f"<h1>{html.escape(str(job.get('name', 'job')))}</h1>",
        f"<p>Job <code>{html.escape(str(job.get('id', '')))}</code> &middot; seed {html.escape(str(job.get('seed', '')))} "
        f"&middot; <span class='status {html.escape(status)}' id='status'>{html.escape(status)}</span></p>",
    ]
    if out.get("error"):
        sections.append(f"<p class='error' id='error'>{html.escape(str(out['error']))}</p>")
    metrics = out.get("metrics") or {}
    sections.append("<h2>Final metrics</h2>")
    if metrics:
        frame = pd.DataFrame({"value": ["null" if v is None else f"{v:.4g}" for v in metrics.values()]}, index=list(metrics))
        sections.append(f"<div id='metrics'>{_table(frame, 'metric')}</div>")
    else:
        sections.append("<p id='metrics'>No metrics were reported.</p>")
    progress_raw = _read(io, join_url(artifacts_url, "progress.jsonl"))
    progress = [json.loads(line) for line in (progress_raw or b"").decode().splitlines() if line.strip()]
    sections.append("<h2>Training curves</h2>")
    sections.append(_curves(progress) if progress else "<p id='curves'>No epochs were reported.</p>")
    for cm_name in ("devel", "test"):
        raw = _read(io, join_url(artifacts_url, "charts", f"confusion_matrix_{cm_name}.json"))
        if raw:
            cm = json.loads(raw)
            frame = pd.DataFrame(cm["matrix"], index=cm["classes"], columns=cm["classes"])
            sections.append(f"<h2>Confusion matrix ({cm_name}: rows true, columns predicted)</h2>")
            cm_table = _table(frame, "true \\ predicted")
            sections.append(f"<div id='confusion_{cm_name}'>{cm_table}</div>")
    split_raw = _read(io, join_url(artifacts_url, "sample_identification.csv"))
    if split_raw:
        split = pd.read_csv(_io.BytesIO(split_raw), dtype=str, keep_default_na=False)
        if "category" in split.columns:
            table = split.groupby(["category", "purpose"]).size().unstack(fill_value=0)
            sections.append("<h2>Split (samples per category and purpose)</h2>")
            sections.append(f"<div id='split'>{_table(table, 'category')}</div>")
    pivot_raw = _read(io, join_url(artifacts_url, "pivot", "pivot.csv"))
    if pivot_raw:
        pivot = pd.read_csv(_io.BytesIO(pivot_raw), index_col=0)
        sections.append("<h2>Pivot table</h2>")
        sections.append(f"<div id='pivot'>{_table(pivot, str(pivot.index.name or ''))}</div>")
    facets_raw = _read(io, join_url(artifacts_url, "facets", "facets.json"))
    atlas = _read(io, join_url(artifacts_url, "facets", "spriteatlas.png"))
    if facets_raw and atlas:
        facets = json.loads(facets_raw)
        data = base64.b64encode(atlas).decode()
        by_cat = defaultdict(list)
        for s in facets.get("samples", []):
            by_cat[s.get("category", "")].append(str(s["index"]))
        legend = "".join(f"<li>{html.escape(c)}: tiles {', '.join(ix)}</li>" for c, ix in sorted(by_cat.items()))
        sections.append("<h2>Facets atlas</h2>")
        sections.append(
            f"<div class='atlas' id='facets'><img alt='facets atlas' src='data:image/png;base64,{data}' "
            f"width='{min(1024, 4 * facets['tile_size'][1] * facets['columns'])}'/><ul>{legend}</ul></div>"
        )
    try:
        fs, root = io.fs(artifacts_url)
        others = sorted(p for p in fs.find(root) if p.endswith(".html") and not p.endswith("/report.html"))
    except Exception:
        others = []
    if others:
        links = "".join(
            f"<li><a href='{html.escape(posixpath.relpath(p, root.rstrip('/')))}'>{html.escape(posixpath.relpath(p, root.rstrip('/')))}</a></li>"
            for p in others
        )
        sections.append(f"<h2>More pages</h2><ul id='links'>{links}</ul>")
    sections.append("<h2>Settings</h2>")
    sections.append(f"<pre id='settings'>{html.escape(json.dumps(out.get('settings', {}), indent=2))}</pre>")
    sections.append("<details><summary>Full config and environment</summary>")
    sections.append(f"<pre>{html.escape(json.dumps({'config': out.get('config'), 'environment': out.get('environment')}, indent=2))}</pre></details>")
    title = html.escape(f"{job.get('name', 'job')} {job.get('id', '')}")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">"
        f"<title>{title}</title><style>{_CSS}</style></head><body>{''.join(sections)}</body></html>"
    )


def write_report(artifacts_url: str, io: IoTools | None = None) -> str:
    """Render and atomically write ``report.html`` into the artifacts; returns its URL."""
    io = io or IoTools()
    url = join_url(artifacts_url, "report.html")
    io.write_file(url, render_report(artifacts_url, io))
    return url
