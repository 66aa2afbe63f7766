"""report.html in real headless Chromium: sections present and visible, and the page requests nothing remote.

The page's own requests are read from the DevTools protocol (``--remote-debugging-pipe``), so
Chromium's background services (clock sync, updater, sign-in; Debian's build sends some even with
``--disable-background-networking``) do not count: they are the browser's requests, not the page's.
A loopback proxy still catches them so that nothing leaves the machine.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import select
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from brevetti_pipe import Job
from brevetti_pipe.data._demo import generate_vials
from brevetti_pipe.recipes.vials_classification import VialsClassificationSettings
from brevetti_pipe.recipes.vials_classification import build_model as build_cnn
from brevetti_pipe.recipes.vials_segmentation import VialsSegmentationSettings, build_unet, iou_per_class
from brevetti_pipe.run.recipe import recipe
from tests.conftest import run_cli

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium (``make test`` installs it; installed here with apt-get when missing and root)."""
    path = shutil.which("chromium")
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, capture_output=True, timeout=900)
        path = shutil.which("chromium")
    if path is None:
        pytest.fail("Debian's chromium is needed for the report test and could not be installed (apt-get install chromium)")
    return path


class _Catcher(BaseHTTPRequestHandler):
    def _any(self) -> None:
        self.send_response(503)
        self.end_headers()

    do_GET = do_POST = do_CONNECT = do_HEAD = _any

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def proxy():
    server = HTTPServer(("127.0.0.1", 0), _Catcher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class DevTools:
    """One headless Chromium driven over the DevTools protocol on fds 3/4 (NUL-terminated JSON)."""

    def __init__(self, chromium: str, profile: Path, proxy: str) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire() -> None:  # runs in the child: the protocol wants exactly fds 3 and 4
            a, b = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [chromium, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile}",
             f"--proxy-server=http://{proxy}", "--proxy-bypass-list=<-loopback>"],
            preexec_fn=wire, close_fds=False,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Network", "Page", "Runtime"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=1200, height=1800,
                  deviceScaleFactor=1, mobile=False)

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self._from_browser, 1 << 16) if ready else b""
            if not chunk:
                raise TimeoutError("Chromium's DevTools pipe gave no answer")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 60
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._id:
                assert "error" not in answer, answer
                return answer["result"]
            self.events.append(answer)

    def open(self, url: str) -> list[dict[str, Any]]:
        """Load ``url``, wait for its load event and a quiet network; return the page's network events."""
        first = len(self.events)
        self.call("Page.navigate", session=True, url=url)
        deadline = time.monotonic() + 60
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events[first:]):
            self.events.append(self._receive(deadline))
        # An evaluation round trip after the load event flushes the events queued before it.
        self.call("Runtime.evaluate", session=True, expression="document.readyState")
        return [e for e in self.events[first:] if e.get("method", "").startswith("Network.")
                and e.get("sessionId") == self.session]

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)["result"]["value"]

    def screenshot(self) -> np.ndarray:
        data = base64.b64decode(self.call("Page.captureScreenshot", session=True, format="png")["data"])
        return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32)

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (OSError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


def _requested(events: list[dict[str, Any]]) -> list[str]:
    return [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]


@pytest.fixture(scope="module")
def browser(chromium, proxy, tmp_path_factory):
    """One Chromium for every page of this module."""
    tools = DevTools(chromium, tmp_path_factory.mktemp("profile"), proxy)
    yield tools
    tools.close()


SHOTS = Path("/tmp/report_shots")


def _save_screenshot(browser: DevTools, name: str) -> np.ndarray:
    """The first screen of the open page, kept as /tmp/report_shots/<name>.png for a person to look at."""
    pixels = browser.screenshot()
    SHOTS.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(SHOTS / f"{name}.png")
    return pixels


def _open_offline(browser: DevTools, page: Path) -> str:
    """Open ``page``; assert it requested nothing but itself and data: URIs, under the report's CSP; return its DOM."""
    text = page.read_text()
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", text), "no remote resources in the page"
    events = browser.open(page.as_uri())
    assert [u for u in _requested(events) if not u.startswith("data:")] == [page.as_uri()], \
        "the page itself requested nothing but its own file (and its inline data: images)"
    assert browser.evaluate("document.querySelector('meta[http-equiv=\"Content-Security-Policy\"]')?.content ?? null") == CSP
    assert browser.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)"), "an image did not load"
    return browser.evaluate("document.documentElement.outerHTML")


def _x_ticks(browser: DevTools, chart: int = 0) -> list[str]:
    """The rendered x-axis tick labels of the ``chart``-th training curve."""
    return browser.evaluate(
        f"[...document.querySelectorAll('#curves svg')[{chart}].querySelectorAll('g[id^=xtick] text')]"
        ".map(t => t.textContent.trim())")


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
    text = report.read_text()
    assert "sk-report-secret-42" not in text
    dom = _open_offline(browser, report)
    for section in ("metrics", "curves", "per_class", "confusion_devel", "confusion_test", "operating_point", "gallery",
                    "split", "pivot", "facets", "model", "settings", "config", "command", "choices", "duration"):
        assert browser.evaluate(f"!!document.getElementById('{section}')"), section
    assert browser.evaluate("document.getElementById('status').textContent") == "completed"
    assert "run=report_test_classification" in browser.evaluate("document.getElementById('command').textContent")
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
    assert _x_ticks(browser) == ["1", "2", "3"]
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
    pixels = _save_screenshot(browser, "classification")
    assert pixels.std() > 10, "the screenshot is blank"

    # The same page with a remote image injected: the request is seen, and the page's policy blocks it.
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("<body>", "<body><img src='http://127.0.0.1:9/probe.png'>", 1))
    events = browser.open(probe.as_uri())
    assert "http://127.0.0.1:9/probe.png" in _requested(events), "the DevTools capture sees a page's remote request"
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
    _open_offline(browser, report)
    for section in ("metrics", "curves", "per_class", "confusion_devel", "gallery", "split", "facets", "model"):
        assert browser.evaluate(f"!!document.getElementById('{section}')"), section
    assert _x_ticks(browser) == ["1"], "a one-epoch run shows epoch 1, and only 1"
    assert browser.evaluate("[...document.querySelectorAll('#per_class th')].map(t => t.textContent)") == ["class", "IoU"]
    captions = browser.evaluate("[...document.querySelectorAll('#gallery figure')].map(f => f.textContent)")
    assert captions and all("IoU" in c for c in captions)
    assert browser.evaluate("document.querySelectorAll('#gallery img').length") == len(captions)


def test_sweep_page_compares_runs(tmp_path, tiny_vials, browser):
    proc = run_cli("-m", "recipe=vials_classification", "settings.epochs=1", "pipeline.image.target_size=[16,16]",
                   f"platform.root={tmp_path / 'p'}", f"datasets.vials.url={tiny_vials}", "callbacks.facets.count=4",
                   "settings.batch_size=4,8", "settings.filters=2,4", "sweep.objective=devel_accuracy",
                   cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = next((tmp_path / "multirun").rglob("sweep.html"))
    table = pd.read_csv(sweep.parent / "sweep.csv")
    assert {"settings.batch_size", "settings.filters", "duration_s", "best"} <= set(table.columns)
    assert sorted(zip(table["settings.batch_size"], table["settings.filters"])) == [(4, 2), (4, 4), (8, 2), (8, 4)]
    assert table.best.sum() == 1 and table.devel_accuracy[table.best].item() == table.devel_accuracy.max()
    _open_offline(browser, sweep)
    assert browser.evaluate("[...document.querySelectorAll('#runs th.param')].map(t => t.textContent)") == \
        ["settings.batch_size", "settings.filters"]
    assert browser.evaluate("document.querySelectorAll('#runs tr.best').length") == 1
    best_run = browser.evaluate("document.querySelector('#runs tr.best td').textContent")
    assert best_run.startswith(str(table.run[table.best].item()))
    constant = browser.evaluate("document.getElementById('constant').textContent")
    assert "settings.epochs=1" in constant and "settings.epochs" not in browser.evaluate(
        "document.getElementById('runs').textContent")
    assert browser.evaluate("document.querySelectorAll('#charts svg').length") == 2
    hrefs = browser.evaluate("[...document.querySelectorAll('#runs a')].map(a => a.getAttribute('href'))")
    assert len(hrefs) == 4 and all((sweep.parent / h).is_file() for h in hrefs)
    _save_screenshot(browser, "sweep")
