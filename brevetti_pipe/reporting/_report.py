"""report.html: one self-contained offline page per job (Jinja2 template, matplotlib SVG charts, PNG
data-URI thumbnails), rendered from the job's artifacts plus what only the running job knows."""

from __future__ import annotations

import datetime as _dt
import functools
import html
import io as _io
import json
import logging
import math
import posixpath
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import pandas as pd

from brevetti_pipe._util import secrets as _secrets
from brevetti_pipe.reporting import _figures
from brevetti_pipe.reporting._facets import facet_tiles
from brevetti_pipe.storage import IoTools, join_url

__all__ = ["CSP", "ReportExtras", "predictions", "render_page", "render_report", "write_report"]

log = logging.getLogger(__name__)

#: nothing but the page itself and its inline data: no script, no remote request
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_PURPOSES = ("train", "devel", "test")
_PER_CLASS = re.compile(r"^(?P<purpose>[A-Za-z0-9]+)_(?P<metric>precision|recall|f1|iou|dice)_(?P<cls>.+)$")
_COLUMN_NAMES = {"precision": "precision", "recall": "recall", "f1": "F1", "iou": "IoU", "dice": "Dice"}


class ReportExtras(TypedDict, total=False):
    """What the running job adds to its artifacts."""

    launch: dict[str, Any]  #: command, overrides, choices (see JobView.launch)
    model: dict[str, Any] | None  #: see JobView.model_summary
    gallery: list[dict[str, Any]] | None  #: entries of brevetti_pipe.reporting._gallery.gallery
    epoch: dict[str, Any]  #: the epoch just finished ({"epoch": n, ...metrics}), if progress.jsonl lacks it


@functools.lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("brevetti_pipe.reporting", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "j2")),
        trim_blocks=True, lstrip_blocks=True,
    )


def _read(io: IoTools, url: str) -> bytes | None:
    try:
        return io.read_file(url) if io.exists(url) else None
    except Exception:
        return None


def _list(io: IoTools, url: str) -> list[str]:
    """Names in the folder ``url`` (nothing when it does not exist or cannot be listed)."""
    try:
        fs, path = io.fs(url)
        return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))
    except Exception:
        return []


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{float(value):.4g}"


def _table(frame: pd.DataFrame, index_label: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for idx, row in frame.iterrows():
        label = " / ".join(map(str, idx)) if isinstance(idx, tuple) else str(idx)
        cells = "".join(f"<td class='num'>{html.escape(str(v))}</td>" for v in row.values)
        rows.append(f"<tr><td class='l'>{html.escape(label)}</td>{cells}</tr>")
    return f"<table><tr><th class='l'>{html.escape(index_label)}</th>{head}</tr>{''.join(rows)}</table>"


def _parse_time(text: Any) -> _dt.datetime | None:
    try:
        value = _dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)


def _duration(started: Any, ended: Any, running: bool) -> str:
    start = _parse_time(started) if started else None
    end = _parse_time(ended) if ended else (_dt.datetime.now(_dt.timezone.utc) if running else None)
    if start is None or end is None:
        return ""
    seconds = max(0, int((end - start).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours} h {minutes} min {secs} s" if hours else f"{minutes} min {secs} s" if minutes else f"{secs} s"
    return text + (" so far" if not ended and running else "")


def _split_purpose(name: str, purposes: Sequence[str]) -> tuple[str, str]:
    head, _, rest = name.partition("_")
    return (head, rest) if rest and head in purposes else ("", name)


def _metric_tables(metrics: Mapping[str, Any], purposes: Sequence[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(final metrics: one row per metric, one column per purpose; per-class tables per purpose)."""
    per_class: dict[str, dict[str, dict[str, Any]]] = defaultdict(lambda: defaultdict(dict))
    overall: dict[str, dict[str, Any]] = defaultdict(dict)
    for name, value in metrics.items():
        m = _PER_CLASS.match(name)
        if m and m["purpose"] in purposes:
            per_class[m["purpose"]][m["cls"]][m["metric"]] = value
            continue
        purpose, metric = _split_purpose(name, purposes)
        overall[metric][purpose] = value
    columns = [p for p in purposes if any(p in v for v in overall.values())]
    if any("" in v for v in overall.values()):
        columns.append("")
    order = {"loss": 0, "accuracy": 1, "macro_f1": 2, "auc": 3, "mean_iou": 1, "pixel_accuracy": 2}
    rows = [(name, [_number(overall[name].get(p)) for p in columns])
            for name in sorted(overall, key=lambda n: (order.get(n, 9), n))]
    tables = []
    for purpose in [p for p in purposes if p in per_class]:
        classes = per_class[purpose]
        present = [c for c in _COLUMN_NAMES if any(c in v for v in classes.values())]
        tables.append({"purpose": purpose, "columns": [_COLUMN_NAMES[c] for c in present],
                       "rows": [(cls, [_number(v.get(c)) for c in present]) for cls, v in classes.items()]})
    return {"purposes": columns, "rows": rows}, tables


def _curves(progress: list[dict[str, Any]]) -> list[str]:
    groups: dict[str, dict[str, list[tuple[int, float | None]]]] = defaultdict(dict)
    for record in progress:
        try:
            epoch = int(record.get("epoch", 0))
        except (TypeError, ValueError):
            continue
        for key, value in record.items():
            if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float, type(None))):
                continue
            purpose, metric = _split_purpose(key, _PURPOSES)
            name, label = (metric, purpose) if purpose else (key, key)
            number = None if value is None or not math.isfinite(value) else float(value)
            groups[name].setdefault(label, []).append((epoch, number))
    order = {"loss": 0, "accuracy": 1}
    names = sorted(groups, key=lambda n: (order.get(n, 2), n))
    return [_curve_svg(n, tuple((label, tuple(points)) for label, points in groups[n].items()))
            for n in names if any(y is not None for s in groups[n].values() for _, y in s)]


@functools.lru_cache(maxsize=32)
def _curve_svg(name: str, series: tuple[tuple[str, tuple[tuple[int, float | None], ...]], ...]) -> str:
    # a chart whose points did not change since the last rewrite (the end of the job after the last
    # epoch's rewrite) is not drawn again
    return _figures.curves_svg(name, dict(series))


@functools.lru_cache(maxsize=16)
def _confusion_svg(raw: bytes, purpose: str) -> tuple[str, int]:
    cm = json.loads(raw)
    matrix = cm["matrix"]
    return _figures.confusion_svg(matrix, [str(c) for c in cm["classes"]], purpose), int(sum(map(sum, matrix)))


def _operating_point(raw: bytes | None) -> dict[str, Any] | None:
    """The trade-off chart of charts/operating_point.json: ``points`` as records or as columns, and
    ``chosen`` (or ``operating_point``); None when the file is missing or not in that shape."""
    if not raw:
        return None
    try:
        doc = json.loads(raw)
        points = doc.get("points", doc.get("curve"))
        if isinstance(points, dict):
            points = pd.DataFrame(points).to_dict("records")
        keys = ("threshold", "escape_rate", "false_reject_rate")
        clean = [{k: float(p[k]) for k in keys} for p in points or [] if all(p.get(k) is not None for k in keys)]
        chosen = doc.get("chosen") or doc.get("operating_point")
        if isinstance(chosen, dict):  # the run layer writes the devel rates as devel_<rate>
            chosen = {**{k: chosen[f"devel_{k}"] for k in keys[1:] if f"devel_{k}" in chosen}, **chosen}
        chosen = {k: float(chosen[k]) for k in keys} | {k: v for k, v in chosen.items() if k not in keys} \
            if isinstance(chosen, dict) and all(k in chosen for k in keys) else None
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        log.warning("Report: charts/operating_point.json is not in the expected shape (%s); no trade-off chart", exc)
        return None
    if not clean:
        return None
    shown = {k: (_number(v) if isinstance(v, (int, float)) else v) for k, v in (chosen or {}).items()}
    return {"svg": _figures.operating_point_svg(clean, chosen), "chosen": shown}


def predictions(io: IoTools, artifacts_url: str) -> dict[str, pd.DataFrame]:
    """The ``predictions_<purpose>.csv`` tables at the artifacts' root, by purpose."""
    out = {}
    for name in _list(io, artifacts_url):
        m = re.fullmatch(r"predictions_(.+)\.csv", name)
        raw = _read(io, join_url(artifacts_url, name)) if m else None
        if m and raw:
            try:
                out[m.group(1)] = pd.read_csv(_io.BytesIO(raw), keep_default_na=False, na_values=[""])
            except Exception as exc:
                log.warning("Report: cannot read %s (%s)", name, exc)
    return out


def _yaml(obj: Any) -> str:
    """``obj`` as block YAML, the way Hydra users read configs (JSON when it does not fit)."""
    return _yaml_text(json.dumps(obj, sort_keys=False, default=str))


@functools.lru_cache(maxsize=8)
def _yaml_text(text: str) -> str:  # settings and config do not change between epochs
    import yaml

    try:
        return yaml.safe_dump(json.loads(text), sort_keys=False, default_flow_style=False, allow_unicode=True)
    except yaml.YAMLError:
        return json.dumps(json.loads(text), indent=2)


def _group_gallery(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in entries:
        groups.setdefault((e["purpose"], e["group"]), []).append({**e, "name": posixpath.basename(e["path"])})
    return [{"title": f"{purpose}: {group}", "entries": items} for (purpose, group), items in groups.items()]


def render_report(artifacts_url: str, io: IoTools | None = None, extras: ReportExtras | None = None,
                  report_file: str = "report.html") -> str:
    """Render the report page of the job whose artifacts live at ``artifacts_url``.

    Args:
        artifacts_url: the job's artifacts folder (output.json, progress.jsonl, charts/, ...).
        io: storage access (default: a plain :class:`IoTools`).
        extras: what the running job knows beyond its artifacts (see :class:`ReportExtras`).
        report_file: where the page goes, relative to the artifacts (its links are relative to it).
    """
    io = io or IoTools()
    extras = extras or ReportExtras()
    out = json.loads(_read(io, join_url(artifacts_url, "output.json")) or b"{}")
    job = {"name": "job", "id": "", "seed": None, "run": None, **(out.get("job") or {})}
    status = str(out.get("status") or "unknown")
    listing = _list(io, artifacts_url)
    chart_files = _list(io, join_url(artifacts_url, "charts"))
    preds = predictions(io, artifacts_url)
    cm_purposes = [m.group(1) for f in chart_files if (m := re.fullmatch(r"confusion_matrix_(.+)\.json", f))]
    purposes = list(dict.fromkeys([*_PURPOSES, *preds, *cm_purposes]))
    metrics, per_class = _metric_tables(out.get("metrics") or {}, purposes)
    here = posixpath.dirname(report_file)

    def href(path: str) -> str:
        return posixpath.relpath(path, here or ".")

    progress_raw = _read(io, join_url(artifacts_url, "progress.jsonl"))
    progress = []
    for line in (progress_raw or b"").decode("utf-8", "replace").splitlines():
        try:
            progress.append(json.loads(line))
        except ValueError:
            continue
    latest = extras.get("epoch")
    if latest and not any(r.get("epoch") == latest.get("epoch") for r in progress):
        progress.append(dict(latest))
    confusion = []
    for purpose in sorted(cm_purposes, key=lambda p: (purposes.index(p), p)):
        raw = _read(io, join_url(artifacts_url, "charts", f"confusion_matrix_{purpose}.json"))
        if raw:
            try:
                svg, total = _confusion_svg(raw, purpose)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("Report: cannot read confusion_matrix_%s.json (%s)", purpose, exc)
                continue
            unit = "pixels" if purpose in preds and "iou" in preds[purpose].columns else "samples"
            confusion.append({"purpose": purpose, "svg": svg, "total": f"{total:,}", "unit": unit})
    split_html = pivot_html = ""
    split_raw = _read(io, join_url(artifacts_url, "sample_identification.csv"))
    if split_raw:
        split = pd.read_csv(_io.BytesIO(split_raw), dtype=str, keep_default_na=False)
        if {"category", "purpose"} <= set(split.columns):
            table = split.groupby(["category", "purpose"]).size().unstack(fill_value=0)
            table = table[[p for p in purposes if p in table.columns] + [c for c in table.columns if c not in purposes]]
            table.loc["total"] = table.sum()
            split_html = _table(table, "category \\ purpose")
    pivot_raw = _read(io, join_url(artifacts_url, "pivot", "pivot.csv"))
    if pivot_raw:
        pivot = pd.read_csv(_io.BytesIO(pivot_raw), index_col=0)
        pivot_html = _table(pivot, str(pivot.index.name or ""))
    facets: list[dict[str, Any]] = []
    facets_raw = _read(io, join_url(artifacts_url, "facets", "facets.json"))
    atlas = _read(io, join_url(artifacts_url, "facets", "spriteatlas.png")) if facets_raw else None
    if facets_raw and atlas:
        try:
            facets = facet_tiles(atlas, json.loads(facets_raw))
        except Exception as exc:
            log.warning("Report: cannot read the facets atlas (%s)", exc)
    try:
        fs, root = io.fs(artifacts_url)
        pages = sorted(posixpath.relpath(p, root.rstrip("/")) for p in fs.find(root, maxdepth=3) if p.endswith(".html"))
    except Exception:
        pages = []
    links = [href(p) for p in pages if p != report_file]
    model_path = out.get("model_path")
    gallery = extras.get("gallery")
    sections = [("sec-metrics", "Metrics"), ("sec-curves", "Curves")]
    sections += [("sec-per-class", "Per class")] if per_class else []
    sections += [(f"sec-confusion-{c['purpose']}", f"Confusion {c['purpose']}") for c in confusion]
    op = _operating_point(_read(io, join_url(artifacts_url, "charts", "operating_point.json"))
                          if "operating_point.json" in chart_files else None)
    sections += [("sec-operating-point", "Operating point")] if op else []
    sections += [("sec-gallery", "Samples")] if gallery is not None else []
    sections += [(a, t) for a, t, on in (("sec-split", "Split", split_html), ("sec-pivot", "Pivot", pivot_html),
                                         ("sec-facets", "Facets", facets), ("sec-model", "Model", extras.get("model")))
                 if on]
    sections += [("sec-settings", "Settings"), ("sec-config", "Config")]
    launch = extras.get("launch") or {}
    context = {
        "refresh_seconds": 30, "job": job, "status": status,
        "status_class": status if status in ("running", "completed", "failed") else "unknown",
        "attempt": out.get("attempt"), "started": out.get("started_at"), "ended": out.get("ended_at"),
        "duration": _duration(out.get("started_at"), out.get("ended_at"), status == "running"),
        "launch": {"command": _secrets.redact(str(launch.get("command") or "")),
                   "overrides": [_secrets.redact(str(o)) for o in launch.get("overrides") or []],
                   "choices": dict(launch.get("choices") or {})},
        "model_href": href(str(model_path)) if model_path else None,
        "weights_sha256": out.get("weights_sha256"), "kept_model": out.get("kept_model"),
        "error": out.get("error"), "toc": sections, "metrics": metrics, "per_class": per_class,
        "curves": _curves(progress), "confusion": confusion, "operating_point": op,
        "gallery": None if gallery is None else _group_gallery(gallery),
        "split": split_html, "pivot": pivot_html, "facets": facets, "model": extras.get("model"), "links": links,
        "settings": _yaml(out.get("settings") or {}), "config": _yaml(out.get("config") or {}),
        "environment": _yaml(out.get("environment") or {}),
        "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "version": ((out.get("environment") or {}).get("packages") or {}).get("brevetti_pipe"),
    }
    return render_page("report.html.j2", **context)


def render_page(template: str, **context: Any) -> str:
    """Render one of the package's page templates (``templates/<template>``) with the report's style
    sheet and Content-Security-Policy; secrets masked."""
    return _secrets.redact(_environment().get_template(template).render(csp=CSP, css=_css(), **context))


@functools.lru_cache(maxsize=1)
def _css() -> str:
    from importlib.resources import files

    return files("brevetti_pipe.reporting").joinpath("templates", "_style.css").read_text(encoding="utf-8")


def write_report(artifacts_url: str, io: IoTools | None = None, extras: ReportExtras | None = None,
                 report_file: str = "report.html") -> str:
    """Render and atomically write the report into the artifacts; returns its URL."""
    io = io or IoTools()
    url = join_url(artifacts_url, report_file)
    io.write_file(url, render_report(artifacts_url, io, extras, report_file))
    return url
