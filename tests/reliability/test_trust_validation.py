"""Validation at the boundary: job ids stay inside the platform, bad sizes / ROIs / parallelism and
wrong storage credentials are one clear error naming the key (or dataset) before any data is read."""

from __future__ import annotations

import json
import urllib.request

import pytest

from brevetti_pipe import ConfigError, DatasetError, Job
from brevetti_pipe.cli import translate_argv
from tests.conftest import run_cli

ESCAPES = ["../../../escaped", "..", "a/b", "/tmp/abs", "a\\..\\b", ".", "~root", "x" * 129]


@pytest.mark.parametrize("job_id", ESCAPES)
def test_job_id_outside_the_platform_is_a_config_error(tmp_path, job_id):
    with pytest.raises(ConfigError, match=r"job\.id") as err:
        Job.init(overrides=[f"platform.root={tmp_path / 'p'}", f"job.id='{job_id}'"])
    assert "\n" not in str(err.value) and f"Received: job.id={job_id!r}" in str(err.value)
    assert not (tmp_path / "p").exists()


def test_job_init_job_id_reaches_the_same_rule(tmp_path):
    with pytest.raises(ConfigError, match=r"job\.id.*letters, digits"):
        Job.init(job_id="../../up", overrides=[f"platform.root={tmp_path / 'p'}"])


def test_job_id_flag_reaches_the_same_rule(tmp_path):
    overrides, _ = translate_argv(["--job_id", "../up"])
    with pytest.raises(ConfigError, match=r"job\.id.*letters, digits"):
        Job.init(overrides=[f"platform.root={tmp_path / 'p'}", *overrides])


def test_job_id_is_checked_before_a_settings_json_is_read_through_it(tmp_path):
    outside = tmp_path / "outside" / "job.json"
    outside.parent.mkdir()
    outside.write_text('{not json: this file must never be read')
    (tmp_path / "p" / "jobs").mkdir(parents=True)  # so that the OS resolves p/jobs/../../outside
    with pytest.raises(ConfigError, match=r"^Invalid value for 'job\.id'"):
        Job.init(job_id="../../outside", overrides=[f"platform.root={tmp_path / 'p'}"])


@pytest.mark.parametrize("job_id", ["a\\b", "x=y", "a b", "[1,2]"])
def test_job_init_job_id_with_override_syntax_is_one_line(tmp_path, job_id):
    with pytest.raises(ConfigError, match=r"job\.id") as err:
        Job.init(job_id=job_id, overrides=[f"platform.root={tmp_path / 'p'}"])
    assert "\n" not in str(err.value)


def test_job_id_keeps_usual_ids(tmp_path):
    for job_id in ("abc", "job-1", "2024_01.run", "7c9e6679-7425-40de-944b-e07fc1f90ae7"):
        assert Job.init(job_id=job_id, overrides=[f"platform.root={tmp_path}"]).id == job_id


def test_cli_job_id_escape_writes_nothing_outside_the_root(tmp_path, tiny_vials):
    root = tmp_path / "a" / "b" / "c" / "root"
    proc = run_cli("recipe=vials_classification", f"platform.root={root}", f"datasets.vials.url={tiny_vials}",
                   "job.id=../../../escaped", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "job.id" in lines[0] and "'../../../escaped'" in lines[0], proc.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name in ("output.json", "report.html")]
    assert written == []


# -- sizes, ROIs, parallelism ---------------------------------------------------------------
@pytest.mark.parametrize("recipe, size, needs", [
    ("vials_classification", "[4,4]", "at least 8"),
    ("vials_classification", "[96,7]", "at least 8"),
    ("vials_segmentation", "[2,2]", "multiple of 4"),
    ("vials_segmentation", "[30,32]", "multiple of 4"),
])
def test_target_size_too_small_for_the_recipe_model(tmp_path, recipe, size, needs):
    missing = tmp_path / "no-such-dataset"  # raised before any data is read (or generated)
    ds = "datasets.vials" if recipe == "vials_classification" else "datasets.vials_seg"
    job = Job.init(overrides=[f"recipe={recipe}", f"platform.root={tmp_path / 'p'}", f"pipeline.image.target_size={size}",
                              f"{ds}.url={missing}", f"{ds}.generator_params.per_class=1", f"{ds}.generator_params.size=32"])
    with pytest.raises(ConfigError) as err:
        job.start()
    text = str(err.value)
    assert "pipeline.image.target_size" in text and needs in text and "Received:" in text and "\n" not in text
    assert not missing.exists()
    out = json.loads((tmp_path / "p" / "jobs" / job.id / "artifacts" / "output.json").read_text())
    assert out["status"] == "failed" and "pipeline.image.target_size" in out["error"]


def test_model_builders_name_the_key_for_a_too_small_input():
    from brevetti_pipe.recipes.vials_classification import build_model
    from brevetti_pipe.recipes.vials_segmentation import build_unet

    with pytest.raises(ConfigError, match=r"pipeline\.image\.target_size.*at least 8"):
        build_model(None, (4, 4, 1), ["a", "b", "c"])
    with pytest.raises(ConfigError, match=r"pipeline\.image\.target_size.*multiple of 4"):
        build_unet(None, (6, 6, 3), ["background", "cap"])


@pytest.mark.parametrize("value", ["-5", "0", "-2"])
def test_num_parallel_calls_must_be_autotune_or_positive(tmp_path, value):
    with pytest.raises(ConfigError, match=rf"data\.num_parallel_calls.*Received: data\.num_parallel_calls={value}"):
        Job.init(overrides=[f"platform.root={tmp_path}", f"data.num_parallel_calls={value}"])


def test_num_parallel_calls_accepts_autotune_spellings(tmp_path):
    for value in ("-1", "1", "4", "autotune"):
        Job.init(overrides=[f"platform.root={tmp_path}", f"data.num_parallel_calls={value}"])
    with pytest.raises(ConfigError, match=r"data\.prefetch"):
        Job.init(overrides=[f"platform.root={tmp_path}", "data.prefetch=-3"])


@pytest.mark.parametrize("rois, index", [
    ("[[0,0,0,0]]", 0), ("[[0,0,8,8],[5,0,3,8]]", 1), ("[[0,9,8,4]]", 0), ("[[-1,0,8,8]]", 0),
])
def test_rois_are_checked_by_index(tmp_path, rois, index):
    with pytest.raises(ConfigError, match=rf"pipeline\.image\.rois\[{index}\].*x0 < x1.*Received: pipeline\.image\.rois\[{index}\]="):
        Job.init(overrides=["recipe=vials_classification", f"platform.root={tmp_path}", f"pipeline.image.rois={rois}"])


def test_segmentation_loader_checks_sizes_and_rois_too():
    from brevetti_pipe.stages import SegmentationLoader

    with pytest.raises(ConfigError, match=r"rois\[0\]"):
        SegmentationLoader(["cap"], rois=[(4, 0, 4, 8)])
    with pytest.raises(ConfigError, match=r"target_size"):
        SegmentationLoader(["cap"], target_size=(0, 8))


def test_rois_of_different_sizes_need_a_target_size(tmp_path):
    overrides = ["recipe=vials_classification", f"platform.root={tmp_path}", "pipeline.image.rois=[[0,0,2,3],[0,0,4,4]]"]
    with pytest.raises(ConfigError, match=r"pipeline\.image\.roi_mode.*one width.*\[2, 4\]"):
        Job.init(overrides=[*overrides, "pipeline.image.target_size=null"])
    assert Job.init(overrides=overrides).config.pipeline["image"].params()["target_size"] == [96, 96]


def test_stage_parameter_errors_name_their_own_key():
    from brevetti_pipe.stages import ImageAugmenter, SegmentationLoader

    with pytest.raises(ConfigError, match=r"'pipeline\.segmentation_loader\.mapping'.*Received: .*\{'rust': 'dent'\}"):
        SegmentationLoader(["cap"], mapping={"rust": "dent"})
    with pytest.raises(ConfigError, match=r"value_range.*low < high.*Received: .*value_range=\(1\.0, 0\.0\)"):
        ImageAugmenter(value_range=(1.0, 0.0))
    with pytest.raises(ConfigError, match=r"image_filter\.avg_blur\[1\].*greater than 0"):
        ImageAugmenter(image_filter={"avg_blur": (3, 0)})


# -- wrong credentials ------------------------------------------------------------------------
@pytest.fixture()
def s3_denied(s3):
    """The S3 server with authentication on: the test's keys are unknown to it, so every call is denied."""

    def auth_after(count: str) -> None:
        req = urllib.request.Request(f"{s3.endpoint}/moto-api/reset-auth", data=count.encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(req, timeout=10).close()

    auth_after("0")
    try:
        yield s3
    finally:
        auth_after("inf")


def test_wrong_credentials_name_the_dataset_and_say_access_denied(tmp_path, s3_denied):
    # the demo dataset's generator first checks whether the dataset exists: that check is denied too
    job = Job.init(overrides=[f"platform.root={tmp_path}", "datasets=vials_demo", "datasets.vials.url=s3://bucket/vials",
                              *s3_denied.overrides("datasets.vials.storage_options")])
    with pytest.raises(DatasetError) as err:
        job.get_samples()
    text = str(err.value)
    assert "dataset 'vials'" in text and "access denied" in text and "s3://bucket/vials" in text, text
    assert "\n" not in text and s3_denied.env["AWS_SECRET_ACCESS_KEY"] not in text
