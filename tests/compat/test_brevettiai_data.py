"""brevettiai's data vocabulary: generator, sampler, split, samples columns, helper names."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from brevetti_pipe import ConfigError, Job, SplitError
from brevetti_pipe.compat import AnnotationLoader, ImageLoader, explode, pivot_data, pivot_fields
from brevetti_pipe.config import SamplerConfig
from brevetti_pipe.data import DataGenerator, StratifiedSampler, get_image_samples
from brevetti_pipe.data.sample_integrity import SampleSplit, merge_sample_identification
from brevetti_pipe.errors import DeprecatedSpellingWarning
from brevetti_pipe.stages import ImagePipeline, SegmentationLoader
from brevetti_pipe.testing import make_vials_dataset


def _table(groups: dict[str, int]) -> pd.DataFrame:
    rows = [(f"/{g}/{i}.png", f"{g}{i}", (g,)) for g, n in groups.items() for i in range(n)]
    return pd.DataFrame(rows, columns=["path", "etag", "category"])


def test_repeat_counts_forever_and_once():
    samples = _table({"a": 5})
    assert len(list(DataGenerator(samples, batch_size=None, repeat=3, output_structure="etag").get_samples_numpy())) == 15
    assert len(list(DataGenerator(samples, batch_size=4, repeat=2).get_samples_numpy())) == 3  # 10 samples in batches of 4
    assert len(list(DataGenerator(samples, batch_size=None, repeat=0).get_samples_numpy())) == 5
    for forever in (True, -1):
        ds = DataGenerator(samples, batch_size=2, repeat=forever).get_samples()
        assert ds.cardinality().numpy() == -1  # tf.data.INFINITE_CARDINALITY
    with pytest.raises(ConfigError, match="repeat"):
        DataGenerator(samples, repeat=-2)


def test_unshuffled_sampler_interleaves_groups_in_input_order():
    samples = _table({"a": 3, "b": 2})
    gen = StratifiedSampler(["category"], "uniform").get(samples, shuffle=False, batch_size=None, epoch_size=8,
                                                         repeat=2, output_structure="etag")
    drawn = list(gen.get_samples_numpy("__default__"))
    # uniform weights: a, a, b, b per cycle; each group's samples in input order, continuing across epochs
    assert drawn == ["a0", "a1", "b0", "b1", "a2", "a0", "b0", "b1", "a1", "a2", "b0", "b1", "a0", "a1", "b0", "b1"]
    assert drawn == list(gen.get_samples_numpy("__default__")), "deterministic"


def test_weighting_by_name_function_or_brevettiai_spelling():
    samples = _table({"a": 4, "b": 1})
    expected = np.array([1 / 6] * 4 + [1 / 3])  # sqrt(4) : sqrt(1) = 2 : 1 between the groups
    assert np.allclose(StratifiedSampler(["category"], "sqrt").weights(samples), expected)
    assert np.allclose(StratifiedSampler(["category"], np.sqrt).weights(samples), expected)
    assert np.allclose(StratifiedSampler(["category"], lambda n, group: 2.0 if group == "b" else 1.0).weights(samples),
                       [1 / 12] * 4 + [2 / 3])
    with pytest.warns(DeprecatedSpellingWarning) as caught:
        sampler = StratifiedSampler(["category"], group_weighing="square root")
    assert [str(w.message) for w in caught] == ["StratifiedSampler: write weighting=... (brevettiai's group_weighing)",
                                                "StratifiedSampler: write weighting='sqrt' (brevettiai's 'square root')"]
    assert np.allclose(sampler.weights(samples), expected)
    assert SamplerConfig(groupby=["category"], weighting="log").weighting == "log"
    gen = DataGenerator(samples, sampling_groupby=["category"], sampling_group_weighing=np.sqrt)
    assert np.allclose(gen.sampler.weights(samples), expected)
    with pytest.raises(ConfigError, match="Allowed: 'uniform', 'count', 'sqrt', 'log'"):
        StratifiedSampler(["category"], "squareroot")


def test_get_samples_gives_every_column_by_default():
    samples = _table({"a": 2}).assign(score=[0.5, 1.5])
    gen = DataGenerator(samples, batch_size=2, output_structure="etag")
    assert set(gen.get_samples().element_spec) == {"path", "etag", "category", "score"}
    assert list(next(gen.get_samples_numpy("__default__"))) == ["a0", "a1"]
    assert next(gen.get_samples_numpy(False))["etag"] == "a0"  # brevettiai's positional batch=False


def test_samples_table_has_brevettiai_columns(tmp_path):
    root = make_vials_dataset(tmp_path / "vials", per_class=1, size=8)
    samples = get_image_samples(root)
    assert (samples["reference"] == "").all() and (samples["url"] == samples["path"]).all()
    assert set(samples["bucket"]) == {samples["path"][0].rsplit("/", 2)[0]}
    assert len(samples.drop(columns=["reference"]).columns) == len(samples.columns) - 1


# brevettiai 0.5.9 SampleSplit.assign(mode="murmurhash3"), followed by hand: RandomState(7) draws one
# randint(0x7FFFFFFF) per stratum in sorted order that has unassigned items (327741615, then 976413892);
# an item is train when mmh3.hash(etag, that seed, signed=False) < 0xFFFFFFFF * 0.5.
#   stratum a (seed 327741615):  e0 2894047168 devel, e2 1301460243 train, e4 148131166 train, e6 2689065560 devel
#   stratum b (seed 976413892):  e1 2580335331 devel, e3 2282607687 devel, e5 271683395 train, e7 729501545 train
#   with stratum a already assigned, b gets the first seed: e1 1557708816 train, e3 1978644226 train,
#   e5 2540632644 devel, e7 1883272611 train
def test_murmurhash3_mode_reproduces_brevettiai_assignment():
    samples = pd.DataFrame({"etag": [f"e{i}" for i in range(8)] + ["e3"], "path": [f"/p{i}" for i in range(9)],
                            "category": [("a",) if i % 2 == 0 else ("b",) for i in range(8)] + [("b",)]})
    split = SampleSplit(stratification=["category"], split=0.5, seed=7, mode="murmurhash3")
    out = split.assign(samples, purpose="train", remainder="devel")
    assert dict(zip(out.etag, out.purpose)) == {"e0": "devel", "e2": "train", "e4": "train", "e6": "devel",
                                                "e1": "devel", "e3": "devel", "e5": "train", "e7": "train"}
    assert out.purpose.iloc[8] == out.purpose.iloc[3], "one etag, one purpose"
    marked = samples.assign(purpose=["test" if i % 2 == 0 else None for i in range(8)] + [None])
    out = split.assign(marked, "train", remainder="devel")
    assert out.purpose.tolist() == ["test", "train", "test", "train", "test", "devel", "test", "train", "train"]
    with pytest.raises(SplitError, match="sorted_permutation"):
        SampleSplit(mode="sorted_permutation")


def test_a_job_splits_with_murmurhash3_from_its_config(tmp_path):
    data = make_vials_dataset(tmp_path / "vials", per_class=3, size=8)
    job = Job.init(argv=[], overrides=[f"platform.root={tmp_path}", f"+datasets.vials.url={data}", "job.seed=11",
                                       "split.mode=murmurhash3", "split.fractions={train:0.5,devel:0.5,test:0.0}"])
    samples = job.get_samples()
    expected = SampleSplit(split=0.5, seed=11, mode="murmurhash3").assign(samples.drop(columns=["purpose"]), "train",
                                                                          remainder="devel")
    assert samples.purpose.tolist() == expected.purpose.tolist() and set(samples.purpose) <= {"train", "devel"}
    with pytest.raises(SplitError, match="train and devel"):
        SampleSplit({"train": 0.6, "devel": 0.2, "test": 0.2}, mode="murmurhash3")


def test_regex_and_multi_column_strata_and_keys(tmp_path):
    paths = [f"/line{i % 2}/part{i // 4}_{i}.png" for i in range(16)]
    samples = pd.DataFrame({"path": paths, "etag": [f"e{i}" for i in range(16)], "category": [("x",)] * 16,
                            "line": [i % 2 for i in range(16)], "part": [i // 4 for i in range(16)]})
    by_regex = SampleSplit(stratification=r"/line(\d)/", uniqueness=r"part(\d+)_", split=0.5, seed=3)
    purpose = by_regex.assign(samples)
    assert purpose.groupby(samples.part).nunique().max() == 1, "a part never straddles purposes"
    assert (purpose == "train").sum() == 8
    by_columns = SampleSplit(stratification=["line"], uniqueness=["part"], split=0.5, seed=3).assign(samples)
    assert by_columns.groupby(samples.part).nunique().max() == 1
    half = by_regex.assign(samples, "train")  # brevettiai: the rest stays unassigned without a remainder
    assert set(half.purpose.dropna()) == {"train"} and half.purpose.isna().sum() == 8
    out = by_regex.update_unassigned(samples, id_path=str(tmp_path / "sample_identification.csv"))
    again = by_regex.update_unassigned(samples.iloc[::-1], id_path=str(tmp_path / "sample_identification.csv"))
    assert dict(zip(out.etag, out.purpose)) == dict(zip(again.etag, again.purpose))


def test_merge_sample_identification_reuses_an_old_split_file(tmp_path):
    samples = _table({"a": 3})
    old = tmp_path / "sample_identification.csv"
    old.write_text("etag,purpose\na0,test\na2,\ngone,train\n")
    merged, extra = merge_sample_identification(samples, str(old))
    assert merged.purpose.tolist()[:1] == ["test"] and merged.purpose.isna().tolist() == [False, True, True]
    assert extra.index.tolist() == ["gone"]


def test_loaders_explode_pivot_and_upload_artifact(tmp_path):
    loader = ImageLoader(channels=1, postprocessor={"type": "CropResizeProcessor", "output_height": 8, "output_width": 6,
                                                    "roi_horizontal_offset": 2, "roi_vertical_offset": 1,
                                                    "roi_width": 12, "roi_height": 16, "interpolation": "bilinear"})
    assert loader == ImagePipeline(color_mode="greyscale", rois=[(2, 1, 14, 17)], target_size=(8, 6))
    annotations = AnnotationLoader(classes=["cap"], mapping={"top": "cap"})
    assert isinstance(annotations, SegmentationLoader) and annotations.output_key == "annotation"
    assert annotations.include_background is False
    table = pd.DataFrame({"category": [("a", "b"), ("a",)], "dataset_id": ["d1", "d1"], "url": ["u1", "u2"]})
    exploded = explode(table, on=["category"])
    assert exploded.category.tolist() == ["a", "b", "a"] and exploded.id.tolist() == [1, 1, 0]
    data = pivot_data(table, {"category": "Category", "dataset_id": "Dataset"}, agg={"url": "first"})
    assert data[["category", "count", "url"]].values.tolist() == [["a", 1, "u2"], ["a", 1, "u1"], ["b", 1, "u1"]]
    fields = pivot_fields({"category": "Category", "dataset_id": "Dataset", "folder": "Folder"}, rows=["dataset_id"],
                          cols=["category"])
    assert fields == {"rowFields": [{"key": "dataset_id", "label": "Dataset"}],
                      "colFields": [{"key": "category", "label": "Category"}],
                      "fields": [{"key": "folder", "label": "Folder"}]}
    job = Job.init(overrides=[f"platform.root={tmp_path}"], argv=[])
    url = job.upload_artifact("notes.json", json.dumps({"a": 1}))
    assert json.loads(job.io.read_file(url)) == {"a": 1} and url == job.artifact_path("notes.json")
    (tmp_path / "local.txt").write_text("from a file")
    assert job.io.read_file(job.upload_artifact(["sub", "copy.txt"], str(tmp_path / "local.txt"), is_file=True)) == b"from a file"


def test_remote_monitor_reports_the_epoch_given_by_hand_and_counts_inside_fit(tmp_path):
    job = Job.init(overrides=[f"platform.root={tmp_path}"], argv=[])
    monitor = job.get_remote_monitor()
    monitor.on_epoch_end(11, {"loss": 0.9})
    monitor.on_train_begin()
    monitor.on_epoch_end(0, {"loss": 0.8})  # Keras' first epoch inside fit
    lines = [json.loads(line) for line in job.io.read_file(job.artifact_path("progress.jsonl")).splitlines()]
    assert [line["epoch"] for line in lines] == [11, 1]


def test_data_image_module_paths():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from brevetti_pipe.data.image import ImageAugmenter, ImagePipeline as IP, SegmentationLoader as SL  # noqa: F401
        from brevetti_pipe.data.image.image_augmenter import ImageNoise  # noqa: F401
        from brevetti_pipe.data.image.image_pipeline import ImagePipeline as IP2
        from brevetti_pipe.data.image.segmentation_loader import SegmentationLoader as SL2
    assert IP is IP2 is ImagePipeline and SL is SL2 is SegmentationLoader
