"""report.html in real headless Chromium: every section present and readable, gallery and facets images
loaded at their own size, the axis labels a person reads, and no request leaving the page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from brevetti_pipe import Job
from brevetti_pipe.data._demo import generate_vials
from brevetti_pipe.recipes.vials_classification import VialsClassificationSettings
from brevetti_pipe.recipes.vials_classification import build_model as build_cnn
from brevetti_pipe.recipes.vials_segmentation import VialsSegmentationSettings, build_unet, iou_per_class
from brevetti_pipe.run.recipe import recipe
from tests.browser import open_offline, requested, save_screenshot, x_ticks


LIVE: dict[str, str] = {}


# -- run steps that write what the framework's evaluation writes: predictions_<purpose>.csv, per-class metrics
@recipe("report_test_classification", settings=VialsClassificationSettings)
def _classify(job: Job) -> Any:
    import keras

    s = job.settings
    samples = job.get_samples()
    parts = {p: samples[samples.purpose == p] for p in ("train", "devel", "test")}
    structure = ("img", "onehot")
    train = job.data_generator(parts["train"], train=True, batch_size=s.batch_size, output_structure=structure)
    devel = job.data_generator(parts["devel"], batch_size=s.batch_size, output_structure=structure)
    job.seed_frameworks()
    model = build_cnn(tuple(train.get_dataset().element_spec[0].shape[1:]), len(job.classes), s.filters, s.learning_rate)
    model.fit(train.get_dataset(), steps_per_epoch=len(train), epochs=s.epochs, validation_data=devel.get_dataset(),
              validation_steps=len(devel), callbacks=[job.get_remote_monitor()], verbose=0, shuffle=False)
    LIVE["after_fit"] = Path(job.artifact_path("report.html")).read_text()  # the page a reload shows mid-job
    classes = job.classes
    for purpose in ("devel", "test"):
        rows = parts[purpose]
        batches = [(model.predict_on_batch(x), y) for x, y in
                   job.data_generator(rows, batch_size=s.batch_size, output_structure=structure).get_dataset_numpy()]
        probs, onehot = np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
        y_true, y_pred = onehot.argmax(1), probs.argmax(1)
        frame = pd.DataFrame({"path": rows.path.values, "etag": rows.etag.values,
                              "true_class": [classes[i] for i in y_true], "predicted_class": [classes[i] for i in y_pred],
                              "confidence": probs.max(1), **{f"p_{c}": probs[:, i] for i, c in enumerate(classes)}})
        job.io.write_file(job.artifact_path(f"predictions_{purpose}.csv"), frame.to_csv(index=False))
        metrics = {f"{purpose}_loss": float(np.mean(keras.losses.categorical_crossentropy(onehot, probs))),
                   f"{purpose}_accuracy": float(np.mean(y_true == y_pred))}
        f1s = []
        for i, c in enumerate(classes):
            tp = float(np.sum((y_pred == i) & (y_true == i)))
            precision, recall = tp / max(1, np.sum(y_pred == i)), tp / max(1, np.sum(y_true == i))
            f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
            metrics.update({f"{purpose}_precision_{c}": precision, f"{purpose}_recall_{c}": recall, f"{purpose}_f1_{c}": f1s[-1]})
        metrics[f"{purpose}_macro_f1"] = float(np.mean(f1s))
        job.add_output_metrics(metrics)
        job.report_confusion_matrix(y_true.tolist(), y_pred.tolist(), purpose=purpose)
        if purpose == "devel":  # the operating point the deploy step writes: reject unless p(good) >= threshold
            good = 1.0 - probs[:, 0] if classes[0] != "good" else probs[:, 0]
            bad = y_true != classes.index("good") if "good" in classes else y_true != 0
            points = [{"threshold": t, "escape_rate": float(np.mean(good[bad] >= t)) if bad.any() else 0.0,
                       "false_reject_rate": float(np.mean(good[~bad] < t)) if (~bad).any() else 0.0}
                      for t in np.linspace(0, 1, 21).tolist()]
            chosen = min(points, key=lambda p: (p["escape_rate"] > 0.1, p["false_reject_rate"]))
            job.io.write_file(job.artifact_path("charts", "operating_point.json"),
                              json.dumps({"points": points, "chosen": {**chosen, "accept_class": "good"}}))
    return model


@recipe("report_test_segmentation", settings=VialsSegmentationSettings)
def _segment(job: Job) -> Any:
    s = job.settings
    samples = job.get_samples()
    train_rows, devel_rows = samples[samples.purpose == "train"], samples[samples.purpose == "devel"]
    structure = ("img", "segmentation")
    train = job.data_generator(train_rows, train=True, batch_size=s.batch_size, output_structure=structure)
    classes = ["background", *job.config.pipeline["segmentation"].params()["classes"]]
    job.seed_frameworks()
    model = build_unet(tuple(train.get_dataset().element_spec[0].shape[1:]), len(classes), s.filters, s.learning_rate)
    model.fit(train.get_dataset(), steps_per_epoch=len(train), epochs=s.epochs, callbacks=[job.get_remote_monitor()],
              verbose=0, shuffle=False)
    total = np.zeros((len(classes), len(classes)), dtype=np.int64)
    ious, accuracies = [], []
    for images, masks in job.data_generator(devel_rows, batch_size=s.batch_size, output_structure=structure).get_dataset_numpy():
        pred, true = model.predict_on_batch(images).argmax(-1), masks.argmax(-1)
        for p, t in zip(pred, true):
            cm = np.bincount(t.ravel() * len(classes) + p.ravel(), minlength=len(classes) ** 2).reshape(len(classes), -1)
            total += cm
            ious.append(float(np.nanmean(iou_per_class(cm)[1:])) if cm[1:].sum() else 0.0)
            accuracies.append(float(np.trace(cm) / cm.sum()))
    frame = pd.DataFrame({"path": devel_rows.path.values, "etag": devel_rows.etag.values, "iou": ious,
                          "pixel_accuracy": accuracies})
    job.io.write_file(job.artifact_path("predictions_devel.csv"), frame.to_csv(index=False))
    iou = iou_per_class(total)
    job.add_output_metrics({**{f"devel_iou_{c}": float(v) for c, v in zip(classes, iou) if not np.isnan(v)},
                            "devel_mean_iou": float(np.nanmean(iou[1:])),
                            "devel_pixel_accuracy": float(np.trace(total) / total.sum())})
    job.write_confusion_matrix(total.tolist(), classes, purpose="devel")
    return model


@pytest.fixture(scope="module")
def classification_report(tmp_path_factory, tiny_vials) -> Path:
    root = tmp_path_factory.mktemp("classification")
    artifacts = root / "jobs" / "rep" / "artifacts"
    artifacts.mkdir(parents=True)
    (artifacts / "extra.html").write_text("<p>custom page</p>")
    job = Job.init(job_id="rep", api_key="sk-report-secret-42", overrides=[
        "recipe=vials_classification", "run=report_test_classification", "settings.epochs=3", "settings.batch_size=8",
        "settings.filters=4", "pipeline.image.target_size=[32,32]", "split.fractions.train=0.6",
        "split.fractions.devel=0.2", "split.fractions.test=0.2", f"platform.root={root}", f"datasets.vials.url={tiny_vials}",
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
    assert "run=report_test_classification" in browser.evaluate("document.getElementById('overrides').textContent")
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
        "recipe=vials_segmentation", "run=report_test_segmentation", "settings.epochs=1", "settings.batch_size=4",
        "settings.filters=2", "pipeline.image.target_size=[16,16]", f"platform.root={tmp_path}",
        f"datasets.vials_seg.url={data}", "callbacks.facets.count=6",
    ])
    job.start()
    report = tmp_path / "jobs" / "seg" / "artifacts" / "report.html"
    open_offline(browser, report)
    for section in ("metrics", "curves", "per_class", "confusion_devel", "gallery", "split", "facets", "model"):
        assert browser.evaluate(f"!!document.getElementById('{section}')"), section
    assert x_ticks(browser) == ["1"], "a one-epoch run shows epoch 1, and only 1"
    assert browser.evaluate("[...document.querySelectorAll('#per_class th')].map(t => t.textContent)") == ["class", "IoU"]
    captions = browser.evaluate("[...document.querySelectorAll('#gallery figure')].map(f => f.textContent)")
    assert captions and all("IoU" in c for c in captions)
    assert browser.evaluate("document.querySelectorAll('#gallery img').length") == len(captions)
    save_screenshot(browser, "segmentation")
