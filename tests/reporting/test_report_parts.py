"""Report and sweep-page pieces that need no browser: the operating-point reader, the sweep table."""

from __future__ import annotations

import json
import re

from brevetti_pipe.cli.sweep import sweep_table
from brevetti_pipe.reporting._report import _operating_point, render_report

POINTS = [{"threshold": t / 4, "escape_rate": 1 - t / 4, "false_reject_rate": t / 4} for t in range(5)]


def test_operating_point_reads_records_or_columns_and_skips_other_shapes():
    records = _operating_point(json.dumps({"points": POINTS, "chosen": {**POINTS[2], "accept_class": "good"}}).encode())
    columns = _operating_point(json.dumps({"points": {k: [p[k] for p in POINTS] for k in POINTS[0]},
                                           "operating_point": POINTS[1]}).encode())
    assert records and columns and "<svg" in records["svg"] and "<svg" in columns["svg"]
    assert records["chosen"]["accept_class"] == "good" and records["chosen"]["threshold"] == "0.5"
    assert columns["chosen"]["threshold"] == "0.25"
    for bad in (b"[1, 2]", b"not json", json.dumps({"points": [{"threshold": 0.5}]}).encode(), b"{}"):
        assert _operating_point(bad) is None, bad


def test_report_of_a_folder_with_a_broken_operating_point_still_renders(tmp_path):
    (tmp_path / "charts").mkdir()
    (tmp_path / "charts" / "operating_point.json").write_text('{"points": "oops"}')
    (tmp_path / "output.json").write_text(json.dumps({"job": {"id": "j", "name": "n"}, "status": "failed",
                                                      "error": "boom", "metrics": {"devel_loss": None}}))
    page = render_report(str(tmp_path))
    assert 'id="error"' in page and "boom" in page and 'id="operating_point"' not in page


def _run(i: int, overrides: list[str], metrics: dict[str, float], status: str = "completed") -> dict:
    return {"run": str(i), "job_id": f"j{i}", "status": status, "overrides": overrides, "metrics": metrics}


def test_sweep_table_splits_swept_from_constant_overrides_and_picks_the_best():
    runs = [
        _run(0, ["recipe=r", "settings.lr=0.001", "job.seed=0"], {"devel_loss": 0.5, "devel_accuracy": 0.7}),
        _run(1, ["recipe=r", "settings.lr=0.01", "job.seed=0"], {"devel_loss": 0.3, "devel_accuracy": 0.9}),
        _run(2, ["recipe=r", "settings.lr=0.001", "job.seed=1"], {"devel_loss": 0.1, "devel_accuracy": 0.95}, "failed"),
        _run(3, ["recipe=r", "settings.lr=0.01", "job.seed=1"], {"devel_loss": 0.4, "devel_accuracy": 0.8}),
    ]
    table, info = sweep_table(runs)
    assert info["params"] == ["settings.lr", "job.seed"] and info["constant"] == ["recipe=r"]
    assert list(table["settings.lr"]) == [0.001, 0.01, 0.001, 0.01], "values parsed by Hydra: numbers stay numbers"
    assert info["objective"] == "devel_loss" and info["minimise"], "no objective: the first metric; a loss is minimised"
    assert list(table.best) == [False, True, False, False], "a failed run is never the best"
    table, info = sweep_table(runs, objective="devel_accuracy")
    assert not info["minimise"] and list(table.best) == [False, True, False, False]
    table, info = sweep_table(runs, objective="devel_accuracy", direction="minimize")
    assert list(table.best) == [True, False, False, False]
    assert list(table.columns[:5]) == ["run", "job_id", "settings.lr", "job.seed", "status"]


def test_launch_record_masks_secrets_and_drops_hydra_groups():
    from brevetti_pipe.run._view import ReportingView

    view = ReportingView(object())  # type: ignore[arg-type]
    view.launched_with(["platform.storage_options.secret=TOPSECRET", "datasets.v.url=s3://AK:SK@bucket/x", "settings.a=1"],
                       {"recipe": "r", "hydra/launcher": "basic", "datasets": None})
    launch = view.launch()
    assert "TOPSECRET" not in str(launch) and "AK:SK" not in str(launch)
    assert launch["overrides"][2] == "settings.a=1" and launch["choices"] == {"recipe": "r"}
    page = render_report("memory://nothing-here", extras={"launch": launch})
    assert "TOPSECRET" not in page and "settings.a=1" in page


def test_a_rewrite_with_unchanged_progress_draws_no_curve_again(tmp_path):
    """The end of a job rewrites the report after the last epoch's rewrite: its curves are not drawn again,
    and the page is the same; a new epoch draws them anew."""
    from brevetti_pipe.reporting import _figures

    drawn = []
    draw = _figures.curves_svg

    def counting(name, series):  # noqa: ANN001, ANN202
        drawn.append(name)
        return draw(name, series)

    epochs = [{"epoch": e, "train_loss": 1.0 / e, "devel_loss": 1.2 / e, "train_accuracy": 0.5 + e / 10} for e in (1, 2)]
    (tmp_path / "output.json").write_text(json.dumps({"job": {"id": "c", "name": "curves"}, "status": "running"}))
    (tmp_path / "progress.jsonl").write_text("".join(json.dumps(r) + "\n" for r in epochs))
    _figures.curves_svg = counting
    try:
        first = render_report(str(tmp_path))
        assert sorted(drawn) == ["accuracy", "loss"]
        again = render_report(str(tmp_path))
        # the same page but for the time it was written (the two renders may straddle a second)
        written = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00")
        assert sorted(drawn) == ["accuracy", "loss"] and written.sub("T", again) == written.sub("T", first)
        epochs.append({"epoch": 3, "train_loss": 0.3, "devel_loss": 0.4, "train_accuracy": 0.8})
        (tmp_path / "progress.jsonl").write_text("".join(json.dumps(r) + "\n" for r in epochs))
        assert render_report(str(tmp_path)) != first
        assert sorted(drawn) == ["accuracy", "accuracy", "loss", "loss"]
    finally:
        _figures.curves_svg = draw


def test_a_redrawn_curve_chart_is_the_svg_a_new_figure_gives():
    """Curve charts keep their figure between rewrites and move the points: every state (more epochs,
    a gap, past 12 epochs, a series appearing) gives the bytes a freshly built figure gives."""
    from brevetti_pipe.reporting import _figures

    def fresh(name, series):  # noqa: ANN001, ANN202
        _figures._CHARTS.__dict__.pop("charts", None)
        return _figures.curves_svg(name, series)

    states = []
    for n in (1, 2, 3, 14):
        train = [(e, 1.0 / e) for e in range(1, n + 1)]
        states.append({"train": train})
        states.append({"train": train, "devel": [(e, None if e == 2 else 1.5 / e) for e in range(1, n + 1)]})
    redrawn = []
    _figures._CHARTS.__dict__.pop("charts", None)
    for series in states:
        redrawn.append(_figures.curves_svg("loss", series))
    for series, svg in zip(states, redrawn):
        assert svg == fresh("loss", series)
    assert len(set(redrawn)) == len(states)
    assert "<svg" in redrawn[-1] and "devel" in redrawn[-1] and "devel" not in redrawn[0]
