"""report.html in real headless Chromium: every section present and readable, gallery and facets images
loaded at their own size, the axis labels a person reads, and no request leaving the page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from brevetti_pipe import Job
from brevetti_pipe.data._demo import generate_vials
from brevetti_pipe.run.keras_callbacks import keras_callback
from tests.browser import open_offline, requested, save_screenshot, x_ticks


LIVE: dict[str, str] = {}


# -- a user-registered Keras callback keeping the page a reload shows mid-job (after the last epoch)
@keras_callback("report_snapshot")
def _report_snapshot(job: Job) -> Any:
    import keras

    class Snapshot(keras.callbacks.Callback):
        def on_train_end(self, logs: Any = None) -> None:
            LIVE["after_fit"] = Path(job.artifact_path("report.html")).read_text()

    return Snapshot()


@pytest.fixture(scope="module")
def classification_report(tmp_path_factory, tiny_vials) -> Path:
    root = tmp_path_factory.mktemp("classification")
    artifacts = root / "jobs" / "rep" / "artifacts"
    artifacts.mkdir(parents=True)
    (artifacts / "extra.html").write_text("<p>custom page</p>")
    job = Job.init(job_id="rep", api_key="sk-report-secret-42", overrides=[
        "recipe=vials_classification", "+training.callbacks.report_snapshot={}", "settings.epochs=3", "settings.batch_size=8",
        "settings.filters=4", "pipeline.image.target_size=[32,32]", "split.fractions.train=0.6",
        "split.fractions.devel=0.2", "split.fractions.test=0.2", f"platform.root={root}", f"datasets.vials.url={tiny_vials}",
        "+evaluation.operating_point.accept_class=good", "+evaluation.operating_point.max_escape_rate=0.1",
        "export.formats=[keras]",
    ])
    job.start()
    return artifacts / "report.html"


def test_classification_report_offline_with_every_section(classification_report, browser, tmp_path):
    report = classification_report
    live = LIVE["after_fit"]
    assert 'id="status">running<' in live and '<meta http-equiv="refresh"' in live, "rewritten while the job runs"
    assert live.count("<svg") == 2 and live.count("g id=\"xtick_3\"") == 2, "loss and accuracy up to epoch 3"
    text = report.read_text()
    assert 'http-equiv="refresh"' not in text, "a finished job's page stays put"
    assert "sk-report-secret-42" not in text
    dom = open_offline(browser, report)
    for section in ("metrics", "curves", "per_class", "confusion_devel", "confusion_test", "operating_point", "gallery",
                    "split", "pivot", "facets", "model", "settings", "config", "command", "choices", "duration"):
        assert browser.evaluate(f"!!document.getElementById('{section}')"), section
    assert browser.evaluate("document.getElementById('status').textContent") == "completed"
    assert "settings.epochs=3" in browser.evaluate("document.getElementById('overrides').textContent")
    assert "recipe=vials_classification" in browser.evaluate("document.getElementById('choices').textContent")
    assert browser.evaluate("document.querySelector('#model_link a')?.getAttribute('href')") == "model.tar.gz"
    assert "href=\"extra.html\"" in dom
    # final metrics: one column per purpose; per-class precision/recall/F1 of every class
    assert browser.evaluate("[...document.querySelectorAll('#metrics th')].map(t => t.textContent)") == \
        ["metric", "devel", "test"]
    assert browser.evaluate("document.querySelectorAll('#per_class table').length") == 2
    assert browser.evaluate("[...document.querySelectorAll('#per_class table')[0].querySelectorAll('th')]"
                            ".map(t => t.textContent)") == ["class", "precision", "recall", "F1"]
    assert browser.evaluate("document.querySelectorAll('#per_class table tr').length") == 2 * (1 + 3)
    # curves: train and devel for loss and accuracy, epochs 1..3 on the x axis with a grid
    assert browser.evaluate("document.querySelectorAll('#curves svg').length") >= 2
    assert x_ticks(browser) == ["1", "2", "3"]
    assert browser.evaluate("[...document.querySelectorAll('#curves svg')[0].querySelectorAll('text')]"
                            ".map(t => t.textContent)").count("epoch") == 1
    # confusion heatmaps: counts and row-normalised panels, the class names on the axes
    labels = browser.evaluate("[...document.querySelectorAll('#confusion_devel svg text')].map(t => t.textContent)")
    assert {"good", "predicted", "true", "devel: counts", "devel: row-normalised"} <= set(labels), labels
    # gallery: thumbnails shown 1:1 with true, predicted and confidence
    gallery = browser.evaluate("[...document.querySelectorAll('#gallery figure')].map(f => "
                               "[f.querySelector('img')?.naturalWidth, f.querySelector('img')?.width, f.textContent])")
    assert gallery and all(w == 96 and shown == 96 and "true" in t and "confidence" in t for w, shown, t in gallery)
    assert browser.evaluate("[...document.querySelectorAll('#gallery h3')].map(h => h.textContent)")[0].startswith("devel")
    # facets: every tile at its own size, labelled with its class; no filler tiles
    tiles = browser.evaluate("[...document.querySelectorAll('#facets figure')].map(f => "
                             "[f.querySelector('img').naturalWidth, f.querySelector('img').width, f.querySelector('.cls').textContent])")
    assert len(tiles) == 30 and all(w == 64 and shown == 64 for w, shown, _ in tiles)
    assert {label for _, _, label in tiles} == {"good", "missing_cap", "failed_cap"}
    assert int(browser.evaluate("document.querySelectorAll('#model tr').length")) > 5
    assert "parameters" in browser.evaluate("document.getElementById('model_params').textContent")
    pixels = save_screenshot(browser, "classification")
    assert pixels.std() > 10, "the screenshot is blank"

    # The same page with a remote image injected: the request is seen, and the page's policy blocks it.
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("<body>", "<body><img src='http://127.0.0.1:9/probe.png'>", 1))
    events = browser.open(probe.as_uri())
    assert "http://127.0.0.1:9/probe.png" in requested(events), "the DevTools capture sees a page's remote request"
    blocked = [e["params"].get("blockedReason") for e in events if e["method"] == "Network.loadingFailed"]
    assert blocked == ["csp"], "the report's Content-Security-Policy blocks any remote load"


def test_one_epoch_segmentation_report(tmp_path, browser):
    data = tmp_path / "seg"
    generate_vials(str(data), per_class=4, size=64, annotations=True)
    job = Job.init(job_id="seg", overrides=[
        "recipe=vials_segmentation", "settings.epochs=1", "settings.batch_size=4", "export.formats=[keras]",
        "settings.filters=2", "pipeline.image.target_size=[16,16]", f"platform.root={tmp_path}",
        f"datasets.vials_seg.url={data}", "callbacks.facets.count=6",
    ])
    job.start()
    report = tmp_path / "jobs" / "seg" / "artifacts" / "report.html"
    open_offline(browser, report)
    for section in ("metrics", "curves", "per_class", "confusion_devel", "gallery", "split", "facets", "model"):
        assert browser.evaluate(f"!!document.getElementById('{section}')"), section
    assert x_ticks(browser) == ["1"], "a one-epoch run shows epoch 1, and only 1"
    assert browser.evaluate("[...document.querySelectorAll('#per_class th')].map(t => t.textContent)") == ["class", "IoU", "Dice"]
    captions = browser.evaluate("[...document.querySelectorAll('#gallery figure')].map(f => f.textContent)")
    assert captions and all("IoU" in c for c in captions)
    assert browser.evaluate("document.querySelectorAll('#gallery img').length") == len(captions)
    save_screenshot(browser, "segmentation")
