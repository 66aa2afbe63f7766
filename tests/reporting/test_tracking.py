"""TensorBoard and MLflow callbacks: a real one-epoch job writes event files TensorBoard's own reader
reads and an MLflow run that mlflow.search_runs finds in the local file store."""

from __future__ import annotations

import json
import sys

import pytest

from brevetti_pipe.errors import ConfigError

SECRET = "tok-9f8e7d6c5b4a"


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, tiny_vials):
    """One real job (vials recipe, 1 epoch, 32 px) with both trackers on; returns (artifacts dir, platform root)."""
    from brevetti_pipe import Job

    root = tmp_path_factory.mktemp("tracked") / "p"
    job = Job.init(overrides=[
        "recipe=vials_classification", "settings.epochs=1", "settings.batch_size=8",
        "pipeline.image.target_size=[32,32]", f"platform.root={root}", f"datasets.vials.url={tiny_vials}",
        f"+datasets.vials.storage_options={{token: {SECRET}}}",
        "+callbacks@callbacks.tensorboard=tensorboard", "callbacks.tensorboard.images=6",
        "callbacks.tensorboard.image_size=16", "+callbacks@callbacks.mlflow=mlflow", "export.formats=[keras]",
    ])
    job.start()
    return root / "jobs" / job.id / "artifacts", root, job


def _accumulator(folder):
    from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={TENSORS: 0})
    acc.Reload()
    return acc


def test_tensorboard_scalars_per_epoch_and_final_metrics(tracked):
    from tensorboard.util.tensor_util import make_ndarray

    artifacts, _, job = tracked
    train, devel = _accumulator(artifacts / "tensorboard" / "train"), _accumulator(artifacts / "tensorboard" / "devel")
    assert {"loss", "accuracy"} <= set(train.Tags()["tensors"])
    progress = json.loads((artifacts / "progress.jsonl").read_text().splitlines()[0])
    [event] = devel.Tensors("loss")
    assert event.step == 1
    assert float(make_ndarray(event.tensor_proto)) == pytest.approx(progress["devel_loss"], rel=1e-6)
    [final] = devel.Tensors("final/accuracy")
    assert float(make_ndarray(final.tensor_proto)) == pytest.approx(job.metrics["devel_accuracy"])


def test_tensorboard_confusion_matrix_and_sample_images(tracked):
    import io

    from PIL import Image
    from tensorboard.util.tensor_util import make_ndarray

    artifacts, _, _ = tracked
    devel = _accumulator(artifacts / "tensorboard" / "devel")
    [cm] = devel.Tensors("confusion_matrix")
    width, height, png = make_ndarray(cm.tensor_proto)[:3]
    image = Image.open(io.BytesIO(png))
    assert image.size == (int(width), int(height)) and image.size[0] > 120  # 3 classes x 40 px cells + labels
    samples = _accumulator(artifacts / "tensorboard" / "samples")
    tags = set(samples.Tags()["tensors"])
    assert tags == {"samples/failed_cap", "samples/good", "samples/missing_cap"}
    [good] = samples.Tensors("samples/good")
    pngs = make_ndarray(good.tensor_proto)[2:]
    assert len(pngs) == 2 and Image.open(io.BytesIO(pngs[0])).size == (16, 16)


def test_mlflow_tracks_under_the_platform_root_a_local_url_names(tmp_path, monkeypatch):
    # local://<folder> was taken as the folder "<cwd>/local:/<folder>"
    from brevetti_pipe.reporting.tracking import MlflowTracking
    from brevetti_pipe.storage import local_path

    monkeypatch.chdir(tmp_path)
    tracking = MlflowTracking()
    for root in (f"local://{tmp_path}/p", f"file://{tmp_path}/p", f"{tmp_path}/p"):
        assert tracking._tracking_uri(root) == f"file://{tmp_path}/p/mlruns", root
    assert tracking._tracking_uri("file://p") == f"file://{local_path('p')}/mlruns" == f"file://{tmp_path}/p/mlruns"
    # a folder name with '#', '%' or a space: MLflow reads back the folder the job writes (it cut at '#')
    from mlflow.utils.file_utils import local_file_uri_to_path

    odd = f"{tmp_path}/ml root#1 %41x"
    assert local_file_uri_to_path(tracking._tracking_uri(f"local://{odd}")) == f"{odd}/mlruns"


def test_mlflow_run_has_config_params_metrics_and_artifacts(tracked, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    artifacts, root, job = tracked
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = f"file://{root / 'mlruns'}"
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["vials_classification"])
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["status"] == "FINISHED" and run["tags.mlflow.runName"] == job.id
    assert run["params.run"] == "vials_classification" and run["params.settings.epochs"] == "1"
    assert run["params.pipeline.image.target_size"] == "[32, 32]"
    params = {k: v for k, v in run.items() if k.startswith("params.")}
    assert "params.datasets.vials.storage_options.token" in params
    assert not any(SECRET in str(v) for v in params.values()), "a secret reached MLflow"
    assert run["metrics.devel_accuracy"] == pytest.approx(job.metrics["devel_accuracy"])
    client = MlflowClient(uri)
    history = client.get_metric_history(run["run_id"], "train_loss")
    assert [m.step for m in history] == [1]
    logged = {a.path for a in client.list_artifacts(run["run_id"])}
    assert {"report.html", "output.json", "model.tar.gz"} <= logged
    assert (artifacts / "model.tar.gz").is_file()


@pytest.mark.parametrize(("module", "callback", "extra"), [
    ("mlflow", "MlflowTracking", "mlflow"), ("tensorboard", "TensorBoardTracking", "tensorboard"),
])
def test_missing_extra_is_one_line_naming_it(monkeypatch, module, callback, extra):
    from brevetti_pipe import reporting

    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: importing it raises ImportError
    with pytest.raises(ConfigError) as err:
        getattr(reporting, callback)()
    message = str(err.value)
    assert "\n" not in message and f"brevetti_pipe[{extra}]" in message and f"callbacks.{extra}" in message


def test_trackers_with_artifacts_on_an_object_store(s3, tmp_path, tiny_vials, monkeypatch):
    """On S3 the event files are written locally and uploaded; MLflow gets local copies of the artifacts."""
    from mlflow.tracking import MlflowClient

    from brevetti_pipe import Job

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    job = Job.init(overrides=[
        "recipe=vials_classification", "settings.epochs=1", "settings.batch_size=8",
        "pipeline.image.target_size=[16,16]", "platform.root=s3://bucket/platform", f"datasets.vials.url={tiny_vials}",
        *s3.overrides("platform.storage_options"), "~callbacks.facets", "export.formats=[keras]",
        "+callbacks@callbacks.tensorboard=tensorboard", "callbacks.tensorboard.images=0",
        "+callbacks@callbacks.mlflow=mlflow", f"callbacks.mlflow.tracking_uri=file://{tmp_path / 'mlruns'}",
    ])
    job.start()
    fs = s3.fs()
    prefix = f"bucket/platform/jobs/{job.id}/artifacts/tensorboard"
    events = [p for p in fs.find(prefix) if "/train/" in p]
    assert events, fs.find(prefix)
    fs.get(events, str(tmp_path / "train") + "/")
    assert "loss" in _accumulator(tmp_path / "train").Tags()["tensors"]
    client = MlflowClient(f"file://{tmp_path / 'mlruns'}")
    [run] = client.search_runs([client.get_experiment_by_name("vials_classification").experiment_id])
    assert {"output.json", "model.tar.gz"} <= {a.path for a in client.list_artifacts(run.info.run_id)}


def _fail_in_epoch(job, epoch=1):
    """A Keras callback that fails the training when epoch ``epoch`` (1-based) begins."""
    import keras

    class Fail(keras.callbacks.Callback):
        def on_epoch_begin(self, index, logs=None):
            if index + 1 == epoch:
                raise RuntimeError(f"failing in epoch {epoch}")

    return Fail()


def test_mlflow_a_resumed_training_carries_on_in_its_run_and_a_restart_gets_its_own(tmp_path, tiny_vials, monkeypatch):
    """Attempt 1 fails in epoch 1 (no checkpoint yet), attempt 2 in epoch 2 (checkpoint after epoch 1),
    attempt 3 before its training, attempt 4 resumes and completes: attempt 1
    keeps its FAILED run; attempts 2 to 4 are one training, so one run, FINISHED, with the train loss at
    steps 1 and 2, the attempt tag 4 and no error tag left from attempts 2 and 3."""
    from mlflow.tracking import MlflowClient

    from brevetti_pipe import Job
    from brevetti_pipe.run.keras_callbacks import keras_callback
    from tests.run.conftest import CLS_ARGS

    keras_callback("fail_in_epoch")(_fail_in_epoch)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = f"file://{tmp_path / 'mlruns'}"
    args = [*CLS_ARGS, f"platform.root={tmp_path / 'p'}", f"datasets.vials.url={tiny_vials}", "job.id=again",
            "+callbacks@callbacks.mlflow=mlflow", f"callbacks.mlflow.tracking_uri={uri}"]
    for epoch in (1, 2):
        with pytest.raises(Exception, match=f"failing in epoch {epoch}"):
            Job.init(overrides=[*args, "+training.callbacks.fail.type=fail_in_epoch",
                                f"+training.callbacks.fail.epoch={epoch}"]).start()
    def no_data(*args, **kwargs):
        raise RuntimeError("no data today")

    with monkeypatch.context() as patch:  # a failure after the job started, before its training
        patch.setattr("brevetti_pipe.run.training.generators", no_data)
        with pytest.raises(Exception, match="no data today"):
            Job.init(overrides=args).start()
    job = Job.init(overrides=args)
    job.start()
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("vials_classification").experiment_id
    runs = sorted(client.search_runs([experiment]), key=lambda r: r.info.start_time)
    assert [(r.info.status, r.data.tags["brevetti_pipe.attempt"]) for r in runs] == [("FAILED", "1"), ("FINISHED", "4")]
    first, resumed = runs
    assert "brevetti_pipe.error" in first.data.tags and "brevetti_pipe.error" not in resumed.data.tags
    assert client.get_metric_history(first.info.run_id, "train_loss") == []
    history = client.get_metric_history(resumed.info.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2]
    assert resumed.data.metrics["devel_accuracy"] == pytest.approx(job.metrics["devel_accuracy"])
    assert json.loads((tmp_path / "p" / "jobs" / "again" / "artifacts" / "output.json").read_text())["attempt"] == 4
