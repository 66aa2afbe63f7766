"""The brevettiai Job API documentation's walk-through, translated line by line, on a generated dataset.

Each block follows one cell of "Introduction to Brevetti AI Job API" (brevettiai 0.5); where a name
or an argument differs here, the line says so. Platform URLs (``job.host_name``), ``getpass`` and
``plt`` calls have no counterpart and are left out; images are 16 px instead of 64/224 to keep it fast.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from pydantic import Field

from brevetti_pipe import Job, JobSettings
from brevetti_pipe.testing import make_vials_dataset


class MyJobSettings(JobSettings):
    my_custom_int_setting: int = Field(default=25, description="My own custom integer setting",
                                       json_schema_extra={"advanced": False})  # brevettiai: advanced=False


class MyJob(Job):
    settings: MyJobSettings

    def run(self):  # This function should be overloaded and is run when job is started
        print(f'Run my custom code using custom parameter "my_custom_int_setting": {self.settings.my_custom_int_setting}')
        return None  # Return path to model artifacts to be uploaded after job is completed


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    root = tmp_path_factory.mktemp("platform")
    data = make_vials_dataset(root / "datasets" / "vials", per_class=4, size=16)
    # the platform's job page -> our config: where the platform lives and which dataset the job has
    return [f"platform.root={root}", f"+datasets.vials.url={data}"]


def test_documented_walkthrough(platform, monkeypatch, capsys):
    model_id, api_key = "ae03ff72-b7a2-444d-8fe9-623f61dc4c71", "key-from-the-platform"
    monkeypatch.setattr(sys, "argv", ["notebook", "-f", "/tmp/kernel.json"])  # a notebook kernel's argv

    # job = MyJob.init(job_id=model_id, api_key=api_key); job.start(complete=False); job.settings.my_custom_int_setting
    job = MyJob.init(job_id=model_id, api_key=api_key, overrides=platform)
    job.start(complete=False)
    assert job.settings.my_custom_int_setting == 25
    assert '"my_custom_int_setting": 25' in capsys.readouterr().out
    job.complete()  # ours: one live run per job id (a lock), so the run is finished before it starts again

    # sys.argv += ["--my_custom_int_setting", '10']; job = MyJob.init(...); job.start(complete=False)
    sys.argv += ["--my_custom_int_setting", "10"]
    job = MyJob.init(job_id=model_id, api_key=api_key, overrides=platform)
    job.start(complete=False)
    assert job.settings.my_custom_int_setting == 10

    # job.upload_job_output() -> 'artifacts/output.json'
    assert job.upload_job_output().endswith("artifacts/output.json")

    # temp_path = job.temp_path(...); job.io.write_file(temp_path, ...); str(job.io.read_file(temp_path), "utf-8")
    temp_path = job.temp_path("something_i_want_to_save_temporarily.txt")
    job.io.write_file(temp_path, "Valuable information")
    assert str(job.io.read_file(temp_path), "utf-8") == "Valuable information"

    # artifact_path = job.artifact_path("something_i_want_to_save.txt"); job.io.write_file(artifact_path, ...)
    artifact_path = job.artifact_path("something_i_want_to_save.txt")
    job.io.write_file(artifact_path, "Valuable information")
    assert str(job.io.read_file(artifact_path), "utf-8") == "Valuable information"

    # samples = job.datasets[0].get_image_samples()
    samples = job.datasets[0].get_image_samples()

    # from brevettiai.data.sample_integrity import SampleSplit
    from brevetti_pipe.data.sample_integrity import SampleSplit
    samples = SampleSplit().update_unassigned(samples, id_path=job.artifact_path("sample_identification.csv"))

    # samples.head(5): the columns the documentation shows
    head = samples.head(5)
    for column in ("category", "folder", "path", "etag", "bucket", "dataset", "dataset_id", "reference", "url", "purpose"):
        assert column in head.columns, column

    # io_tools = job.io; buf = io_tools.read_file(samples.path[0]); buf[:10]
    io_tools = job.io
    buf = io_tools.read_file(samples.path[0])
    assert buf[:2] == b"BM"

    # io_tools.set_cache_root(job.temp_path("cache", dir=True))
    io_tools.set_cache_root(job.temp_path("cache", dir=True))

    # from brevettiai.data.data_generator import StratifiedSampler, DataGenerator, OneHotEncoder
    # from brevettiai.data.image import ImagePipeline, ImageAugmenter, SegmentationLoader
    from brevetti_pipe.data.data_generator import DataGenerator, OneHotEncoder, StratifiedSampler
    from brevetti_pipe.data.image import ImageAugmenter, ImagePipeline, SegmentationLoader  # noqa: F401

    ds = StratifiedSampler().get(samples.drop(columns=["reference"]), shuffle=True, batch_size=8,
                                 output_structure=("path", "folder"))

    # ds.get_samples(), ds.get_dataset(): every column without maps, the output structure with them
    spec = ds.get_samples().element_spec
    assert {"category", "folder", "path", "etag", "bucket", "dataset", "dataset_id", "url", "purpose"} <= set(spec)
    assert "reference" not in spec
    assert len(ds.get_dataset().element_spec) == 2

    # ds.get_samples_numpy(), ds.get_dataset_numpy()
    first = next(ds.get_samples_numpy())
    paths, folders = next(ds.get_dataset_numpy())
    assert len(first["path"]) == len(paths) == 8 and set(folders) <= set(samples.folder)

    # ds = DataGenerator(samples, shuffle=True, batch_size=8, output_structure=("img", "onehot"))
    # ds = ds.map(ImagePipeline(target_size=(64,64), antialias=True, rescale="imagenet")) \
    #     .map(OneHotEncoder(samples.folder.unique(), output_key="onehot"))
    ds = DataGenerator(samples, shuffle=True, batch_size=8, output_structure=("img", "onehot"))
    ds = ds.map(ImagePipeline(target_size=(16, 16), antialias=True, rescale="imagenet")) \
        .map(OneHotEncoder(samples.folder.unique(), output_key="onehot"))

    # ds.get_dataset(structure=("path", "img", "onehot"))
    path_spec, img_spec, onehot_spec = ds.get_dataset(structure=("path", "img", "onehot")).element_spec
    assert img_spec.shape.as_list() == [None, 16, 16, 3] and onehot_spec.shape.as_list() == [None, 3]

    # from brevettiai.data.image.utils import tile2d -> brevetti_pipe.compat.tile2d
    from brevetti_pipe.compat import tile2d

    # x = next(ds.get_dataset_numpy(structure=None)); tile2d(x["img"], (2, 4))[..., 0]
    x = next(ds.get_dataset_numpy(structure=None))
    assert tile2d(x["img"], (2, 4))[..., 0].shape == (32, 64)
    assert x["img"].min() >= -1 and x["img"].max() <= 1

    # x = next(ds.get_dataset_numpy(structure="img")); tile2d(x, (2,4))[...,0]
    x = next(ds.get_dataset_numpy(structure="img"))
    assert tile2d(x, (2, 4))[..., 0].shape == (32, 64)

    # from brevettiai.data.data_generator import build_image_data_generator
    from brevetti_pipe.data.data_generator import build_image_data_generator
    ds = build_image_data_generator(samples, batch_size=8, image=dict(target_size=(16, 16), antialias=True, rescale="imagenet"))
    # Run 1 and run 2 of the same dataset give the same sampling and augmentation
    run1 = next(ds.get_dataset_numpy())
    run2 = next(ds.get_dataset_numpy())
    assert np.array_equal(run1[0], run2[0]) and np.array_equal(run1[1], run2[1])

    # job.add_output_metric("My custom metric", 277); job.upload_job_output()
    job.add_output_metric("My custom metric", 277)
    output = json.loads(job.io.read_file(job.upload_job_output()))
    assert output["metrics"]["My custom metric"] == 277

    # remote_monitor_callback = job.get_remote_monitor(); on_epoch_end(11, ...); on_epoch_end(12, ...)
    remote_monitor_callback = job.get_remote_monitor()
    remote_monitor_callback.on_epoch_end(11, {"loss": 0.9, "accuracy": 0.5})
    remote_monitor_callback.on_epoch_end(12, {"loss": 0.7, "accuracy": 0.8})
    progress = [json.loads(line) for line in job.io.read_file(job.artifact_path("progress.jsonl")).splitlines()]
    assert [p["epoch"] for p in progress] == [11, 12]

    # from brevettiai.interfaces.pivot import export_pivot_table, get_default_fields, pivot_fields
    from brevetti_pipe.compat import export_pivot_table, get_default_fields, pivot_fields  # noqa: F401
    export_pivot_table(job.artifact_path("pivot", dir=True), samples,
                       datasets=job.datasets,
                       fields=None,
                       tags=None,  # brevettiai: job.backend.get_root_tags(job.id, job.api_key): no tags here
                       rows=["dataset_id"],
                       cols=["category"],
                       agg={"url": "first"})
    assert job.io.exists(job.artifact_path("pivot", "summary_fields.json"))

    # from brevettiai.interfaces.facets_atlas import build_facets
    from brevetti_pipe.compat import build_facets
    fds = DataGenerator(samples, shuffle=True, output_structure=("img", "category")) \
        .map(ImagePipeline(target_size=(64, 64), antialias=True))
    build_facets(fds, job.artifact_path("facets", dir=True), count=8)
    assert job.io.exists(job.artifact_path("facets", "facets.json"))

    # job.complete_job(exported_model_path)
    job.complete()
    assert json.loads(job.io.read_file(job.artifact_path("output.json")))["status"] == "completed"
