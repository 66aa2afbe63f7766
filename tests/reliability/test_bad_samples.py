"""Bad samples: named on failure, or skipped and listed, never an opaque graph crash."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pandas as pd
from PIL import Image

from brevetti_pipe.stages import ImagePipeline, SegmentationLoader
from tests.conftest import TINY_ARGS, only_job_dir, read_output, run_cli


def _with_bad_files(src, dst):
    shutil.copytree(src, dst)
    good = (dst / "good" / "good_0000.bmp").read_bytes()
    (dst / "good" / "truncated.bmp").write_bytes(good[: len(good) // 2])
    (dst / "good" / "empty.bmp").write_bytes(b"")
    (dst / "good" / "notes.png").write_text("this is not an image")
    buf = io.BytesIO()
    Image.new("CMYK", (64, 64), (0, 50, 100, 0)).save(buf, format="JPEG")
    (dst / "missing_cap" / "cmyk.jpg").write_bytes(buf.getvalue())
    return {"truncated.bmp", "empty.bmp", "notes.png", "cmyk.jpg"}


def test_default_policy_fails_naming_the_file(tmp_path, tiny_vials):
    data = tmp_path / "data"
    _with_bad_files(tiny_vials, data)
    proc = run_cli(*TINY_ARGS, f"platform.root={tmp_path / 'p'}", f"datasets.vials.url={data}", cwd=tmp_path)
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("brevetti-pipe: error:")]
    assert len(errors) == 1
    assert "Bad sample in dataset 'vials'" in errors[0] and "(and 3 more)" in errors[0]
    assert "data.on_bad_sample=skip" in errors[0]
    out = read_output(only_job_dir(tmp_path / "p"))
    assert out["status"] == "failed" and "Bad sample" in out["error"]


def test_skip_policy_lists_bad_samples_and_trains(tmp_path, tiny_vials):
    data = tmp_path / "data"
    names = _with_bad_files(tiny_vials, data)
    proc = run_cli(*TINY_ARGS, f"platform.root={tmp_path / 'p'}", f"datasets.vials.url={data}",
                   "data.on_bad_sample=skip", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    job_dir = only_job_dir(tmp_path / "p")
    out = read_output(job_dir)
    assert out["status"] == "completed" and out["bad_samples"] == 4
    bad = pd.read_csv(job_dir / "artifacts" / "bad_samples.csv")
    assert {p.rsplit("/", 1)[-1] for p in bad.path} == names
    reasons = dict(zip(bad.path.str.rsplit("/", n=1).str[-1], bad.reason))
    assert reasons["empty.bmp"] == "empty file (0 bytes)"
    assert reasons["notes.png"].startswith("not an image")
    assert "truncated" in reasons["truncated.bmp"] or "corrupt" in reasons["truncated.bmp"]
    assert "CMYK" in reasons["cmyk.jpg"]
    split = pd.read_csv(job_dir / "artifacts" / "sample_identification.csv")
    assert not set(split.path.str.rsplit("/", n=1).str[-1]) & names


def test_keep_color_mode_flags_odd_channel_counts(tmp_path):
    for i in range(3):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / f"rgb{i}.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "grey.png")
    samples = pd.DataFrame({"path": [str(tmp_path / f"rgb{i}.png") for i in range(3)] + [str(tmp_path / "grey.png")]})
    assert ImagePipeline(color_mode="keep").check(samples) == {3: "has 1 channel(s) where the others have 3 (color_mode=keep needs one count)"}
    assert ImagePipeline(color_mode="rgb").check(samples) == {}


def test_annotation_problems_are_found(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    (tmp_path / "b.json").write_text(json.dumps({"annotations": [{"label": "rust", "points": []}]}))
    (tmp_path / "c.json").write_text(json.dumps({"annotations": [{"label": "cap", "points": []}]}))
    samples = pd.DataFrame({"path": ["x", "y", "z", "w"],
                            "annotation_path": [str(tmp_path / n) for n in ("a.json", "b.json", "c.json")] + [None]})
    bad = SegmentationLoader(classes=["cap"]).check(samples)
    assert set(bad) == {0, 1}
    assert "does not parse" in bad[0] and "['rust']" in bad[1]


def test_a_remote_annotation_is_named_by_its_listed_name_not_its_local_copy(s3, tmp_path, tiny_vials_seg):
    from brevetti_pipe import Job

    fs = s3.fs()
    fs.put(str(tiny_vials_seg), "bucket/seg", recursive=True)
    broken = next(p for p in fs.find("bucket/seg/good") if p.endswith(".json"))
    fs.pipe_file(broken, b"{not json")
    job = Job.init(overrides=[
        "recipe=vials_segmentation", f"platform.root={tmp_path / 'p'}", f"platform.cache_dir={tmp_path / 'cache'}",
        "datasets.vials_seg.url=s3://bucket/seg", "~datasets.vials_seg.generator", "~datasets.vials_seg.generator_params",
        *s3.overrides("datasets.vials_seg.storage_options"), "data.on_bad_sample=skip"])
    job.get_samples()
    bad = pd.read_csv(job.artifact_path("bad_samples.csv")).to_dict("records")
    name = broken.rsplit("/", 1)[-1]
    assert [(b["path"].rsplit("/", 1)[-1], b["reason"].split(" (")[0]) for b in bad] == [
        (name.removesuffix(".json"), f"annotation {name} does not parse")]
