"""Evaluation of every purpose: metrics equal an independent scikit-learn computation, the
predictions CSV holds the agreed columns and the evaluated rows, the confusion matrix per purpose."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm


def _artifacts(job) -> Path:
    return Path(job.artifacts_url)


@pytest.mark.parametrize("purpose", ["devel", "test"])
def test_classification_metrics_equal_scikit_learn(classification_job, purpose):
    job, _ = classification_job
    ev = job.evaluations[purpose]
    classes = job.classes
    y, p = ev.y_true, ev.probabilities
    assert len(y) == len(ev.samples) == (job.samples.purpose == purpose).sum() > 0
    labels = list(range(len(classes)))
    pred = p.argmax(1)
    expected = {
        "loss": skm.log_loss(y, p, labels=labels),
        "accuracy": skm.accuracy_score(y, pred),
        "macro_f1": skm.f1_score(y, pred, labels=labels, average="macro", zero_division=0),
    }
    present = [c for c in labels if 0 < (y == c).sum() < len(y)]
    expected["auc"] = np.mean([skm.roc_auc_score(y == c, p[:, c]) for c in present])
    prec, rec, f1, _ = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    for i, name in enumerate(classes):
        expected.update({f"precision_{name}": prec[i], f"recall_{name}": rec[i], f"f1_{name}": f1[i]})
    out = json.loads((_artifacts(job) / "output.json").read_text())["metrics"]
    for name, value in expected.items():
        assert ev.metrics[f"{purpose}_{name}"] == pytest.approx(value, rel=1e-5, abs=1e-6), name
        assert out[f"{purpose}_{name}"] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    matrix = json.loads((_artifacts(job) / "charts" / f"confusion_matrix_{purpose}.json").read_text())["matrix"]
    assert np.array_equal(matrix, skm.confusion_matrix(y, pred, labels=labels))


def test_classification_probabilities_are_the_models_on_the_evaluated_rows(classification_job):
    job, model = classification_job
    ev = job.evaluations["devel"]
    gen = job.data_generator(ev.samples, batch_size=4, output_structure=("img", "onehot"))
    x = np.concatenate([b for b, _ in gen.get_dataset_numpy()])
    np.testing.assert_allclose(model.predict(x, verbose=0), ev.probabilities, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("purpose", ["devel", "test"])
def test_predictions_csv_has_the_agreed_columns_and_rows(classification_job, purpose):
    job, _ = classification_job
    ev = job.evaluations[purpose]
    table = pd.read_csv(_artifacts(job) / f"predictions_{purpose}.csv")
    classes = job.classes
    assert list(table.columns) == ["path", "etag", "true_class", "predicted_class", "confidence",
                                   *[f"p_{c}" for c in classes]]
    assert table.path.tolist() == ev.samples.path.tolist() and table.etag.tolist() == ev.samples.etag.tolist()
    np.testing.assert_allclose(table[[f"p_{c}" for c in classes]].to_numpy(), ev.probabilities, rtol=1e-6)
    assert table.true_class.tolist() == [classes[i] for i in ev.y_true]
    assert table.true_class.tolist() == [c[0] if isinstance(c, tuple) else c for c in ev.samples.category]
    assert table.predicted_class.tolist() == [classes[i] for i in ev.probabilities.argmax(1)]
    np.testing.assert_allclose(table.confidence, ev.probabilities.max(1), rtol=1e-6)


@pytest.mark.parametrize("purpose", ["devel", "test"])
def test_segmentation_metrics_equal_scikit_learn(segmentation_job, purpose):
    job, model = segmentation_job
    ev = job.evaluations[purpose]
    classes = ["background", "cap", "liquid"]
    gen = job.data_generator(ev.samples, batch_size=2, output_structure=("img", "segmentation"))
    batches = list(gen.get_dataset_numpy())
    true = np.concatenate([m for _, m in batches]).argmax(-1)
    pred = model.predict(np.concatenate([x for x, _ in batches]), verbose=0).argmax(-1)
    t, p = true.ravel(), pred.ravel()
    labels = [c for c in range(3) if (t == c).any() or (p == c).any()]
    iou = skm.jaccard_score(t, p, labels=labels, average=None)
    dice = skm.f1_score(t, p, labels=labels, average=None)
    m = ev.metrics
    assert m[f"{purpose}_pixel_accuracy"] == pytest.approx(skm.accuracy_score(t, p))
    for label, i, d in zip(labels, iou, dice):
        assert m[f"{purpose}_iou_{classes[label]}"] == pytest.approx(i)
        assert m[f"{purpose}_dice_{classes[label]}"] == pytest.approx(d)
    foreground = [i for label, i in zip(labels, iou) if label > 0]
    assert m[f"{purpose}_mean_iou"] == pytest.approx(np.mean(foreground))
    table = pd.read_csv(_artifacts(job) / f"predictions_{purpose}.csv")
    assert list(table.columns) == ["path", "etag", "iou", "pixel_accuracy"]
    assert table.path.tolist() == ev.samples.path.tolist()
    per_sample = [skm.accuracy_score(a.ravel(), b.ravel()) for a, b in zip(true, pred)]
    np.testing.assert_allclose(table.pixel_accuracy, per_sample)
    assert (_artifacts(job) / "charts" / f"confusion_matrix_{purpose}.json").exists()


def test_auc_leaves_out_a_class_absent_from_the_purpose():
    from brevetti_pipe.run.evaluation import classification_metrics

    rng = np.random.default_rng(0)
    y = np.array([0, 0, 1, 1, 0, 1, 1, 0])  # class 2 never occurs
    p = rng.dirichlet(np.ones(3), size=len(y))
    metrics, _ = classification_metrics(y, p, ["a", "b", "c"], "devel")
    expected = np.mean([skm.roc_auc_score(y == c, p[:, c]) for c in (0, 1)])
    assert metrics["devel_auc"] == pytest.approx(expected)
    assert metrics["devel_recall_c"] == 0.0 and metrics["devel_precision_c"] == 0.0
    one_class, _ = classification_metrics(np.zeros(4, dtype=int), p[:4], ["a", "b", "c"], "test")
    assert np.isnan(one_class["test_auc"])


def test_auc_counts_ties_half_as_scikit_learn():
    from brevetti_pipe.run.evaluation import roc_auc_ovr

    y = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1])
    p1 = np.array([0.2, 0.8, 0.5, 0.5, 0.5, 0.1, 0.8, 0.9, 0.2])
    probs = np.stack([1 - p1, p1], axis=1)
    macro, per_class = roc_auc_ovr(y, probs)
    assert per_class[1] == pytest.approx(skm.roc_auc_score(y, p1))
    assert macro == pytest.approx(skm.roc_auc_score(y, p1))


def test_a_short_last_batch_is_predicted_without_tracing_the_predict_function_again():
    """Batches of 4, 4 and 2: the model is traced once (the short batch is padded), and each row's
    probabilities are the ones the model gives that row on its own."""
    import keras
    import tensorflow as tf

    from brevetti_pipe.run.evaluation import _predict

    traces = []

    def count(x):  # runs once per trace of the predict function
        traces.append(tuple(x.shape))
        return x

    inputs = keras.Input((3,))
    hidden = keras.layers.Lambda(count)(keras.layers.Dense(5, activation="relu")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden))
    x = np.random.default_rng(0).normal(size=(10, 3)).astype("float32")
    traces.clear()  # the functional build above called it symbolically
    dataset = tf.data.Dataset.from_tensor_slices((x, np.arange(10))).batch(4)
    pred, target = _predict(type("OneWorker", (), {"num_workers": 1})(), model, dataset)
    assert len(traces) == 1
    assert target.tolist() == list(range(10))
    np.testing.assert_allclose(pred, np.asarray(model(x, training=False)), rtol=1e-6, atol=1e-7)
    assert pred.shape == (10, 2)


def test_devel_evaluation_reads_the_images_the_training_cached(tmp_path, tiny_vials, classification_job, monkeypatch):
    """With the in-memory cache (data.cache=auto keeps this data set in memory), the evaluation after
    training reads the devel images the validation already decoded instead of decoding them again:
    here the devel files are deleted between the training and the evaluation, and the evaluation
    still gives the predictions of the same job on intact files (the session's classification job)."""
    import shutil

    from brevetti_pipe import Job
    from brevetti_pipe.run import training
    from tests.run.conftest import CLS_ARGS

    first, _ = classification_job
    data = tmp_path / "data"
    shutil.copytree(tiny_vials, data)
    real = training.evaluate_all
    gone: list[str] = []

    def devel_files_gone(job, model, task, *rest):
        devel = job.samples[job.samples.purpose == "devel"]
        for path in devel["path"]:
            Path(path).unlink()
            gone.append(path)
        return real(job, model, task, *rest)

    monkeypatch.setattr(training, "evaluate_all", devel_files_gone)
    second = Job.init(overrides=[*CLS_ARGS, f"datasets.vials.url={data}", "+export.parity_samples=0", "job.id=cls",
                                 f"platform.root={tmp_path / 'platform'}"])
    second.start()
    assert gone and not any(Path(p).exists() for p in gone)
    assert second.status == "completed"
    before = pd.read_csv(_artifacts(first) / "predictions_devel.csv")
    after = pd.read_csv(_artifacts(second) / "predictions_devel.csv")
    assert [Path(p).relative_to(data) for p in after["path"]] == [Path(p).relative_to(tiny_vials) for p in before["path"]]
    pd.testing.assert_frame_equal(after.drop(columns="path"), before.drop(columns="path"))
    assert second.metrics["devel_accuracy"] == first.metrics["devel_accuracy"]
    assert second.metrics["test_accuracy"] == first.metrics["test_accuracy"]  # the test split is read from its files
