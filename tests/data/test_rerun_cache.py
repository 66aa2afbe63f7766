"""Reruns skip work already done: content etags and check verdicts kept per dataset and file version."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from brevetti_pipe import Job
from brevetti_pipe.data._verdicts import stage_fingerprint
from brevetti_pipe.errors import ConfigError, DatasetError
from brevetti_pipe.stages import ImagePipeline
from tests.conftest import REPO


def _dataset(tiny_vials, dst):
    shutil.copytree(tiny_vials, dst)
    good = (dst / "good" / "good_0000.bmp").read_bytes()
    (dst / "good" / "truncated.bmp").write_bytes(good[: len(good) // 2])
    return dst


def _job(tmp_path, data, *extra):
    return Job.init(overrides=["recipe=vials_classification", f"platform.root={tmp_path / 'p'}",
                               f"datasets.vials.url={data}", "data.on_bad_sample=skip", *extra])


def _bad(job):
    return pd.read_csv(job.artifact_path("bad_samples.csv"))


def test_rerun_checks_nothing_and_still_reports_the_corrupt_file(tmp_path, tiny_vials):
    data = _dataset(tiny_vials, tmp_path / "data")
    first = _job(tmp_path, data)
    samples = first.get_samples()
    assert first.data.work == {"hashed": 31, "checked": 31, "reused": 0}
    assert len(samples) == 30 and first.bad_samples == 1

    again = _job(tmp_path, data)
    assert again.get_samples()[["path", "purpose"]].equals(samples[["path", "purpose"]])
    assert again.data.work == {"hashed": 0, "checked": 0, "reused": 31}
    assert again.bad_samples == 1
    assert _bad(again).to_dict("records") == _bad(first).to_dict("records")  # same file, same reason

    with pytest.raises(DatasetError, match="truncated.bmp"):  # the fail policy sees the kept verdict too
        _job(tmp_path, data, "data.on_bad_sample=fail").get_samples()


def test_a_changed_file_is_rehashed_and_rechecked(tmp_path, tiny_vials):
    data = _dataset(tiny_vials, tmp_path / "data")
    _job(tmp_path, data).get_samples()
    victim = data / "missing_cap" / "missing_cap_0003.bmp"
    victim.write_bytes(victim.read_bytes()[:100])  # broken after the first run
    same_size = data / "good" / "good_0001.bmp"
    same_size.write_bytes((data / "good" / "good_0002.bmp").read_bytes())  # new content, same size

    job = _job(tmp_path, data)
    job.get_samples()
    assert job.data.work == {"hashed": 2, "checked": 2, "reused": 29}
    assert sorted(p.rsplit("/", 1)[-1] for p in _bad(job).path) == ["missing_cap_0003.bmp", "truncated.bmp"]


def test_a_file_rewritten_in_place_with_its_old_modification_time_is_rechecked(tmp_path, tiny_vials):
    # `cp -p`, `tar -x` and `rsync -t` give a rewritten file its source's modification time, and every
    # BMP of one size has the same length: the stamp also holds the inode's change time, which no
    # tool sets back
    data = _dataset(tiny_vials, tmp_path / "data")
    _job(tmp_path, data).get_samples()
    victim = data / "good" / "good_0001.bmp"
    before = victim.stat()
    with open(victim, "r+b") as fh:  # in place: same inode, same size, no longer a BMP
        fh.write(b"XX")
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = victim.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)

    job = _job(tmp_path, data)
    job.get_samples()
    assert job.data.work == {"hashed": 1, "checked": 1, "reused": 30}
    assert sorted(p.rsplit("/", 1)[-1] for p in _bad(job).path) == ["good_0001.bmp", "truncated.bmp"]


def test_another_pipeline_config_checks_again(tmp_path, tiny_vials):
    data = _dataset(tiny_vials, tmp_path / "data")
    _job(tmp_path, data).get_samples()  # the recipe decodes greyscale
    job = _job(tmp_path, data, "pipeline.image.color_mode=rgb")
    job.get_samples()
    assert job.data.work == {"hashed": 0, "checked": 31, "reused": 0}
    assert stage_fingerprint(ImagePipeline(color_mode="rgb")) != stage_fingerprint(ImagePipeline(color_mode="rgb", bit_depth=16))
    # color_mode=keep compares each image with the others: its verdicts are never reused
    assert stage_fingerprint(ImagePipeline(color_mode="keep")) is None


def test_two_processes_share_the_cache_safely(tmp_path, tiny_vials):
    data = _dataset(tiny_vials, tmp_path / "data")
    script = textwrap.dedent(f"""
        import json
        from brevetti_pipe import Job
        job = Job.init(overrides=["recipe=vials_classification", "platform.root={tmp_path / 'p'}",
                                  "datasets.vials.url={data}", "data.on_bad_sample=skip"])
        job.get_samples()
        print(json.dumps({{"work": job.data.work, "bad": job.bad_samples}}))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["bad"] == 1 for r in results)
    for record in (tmp_path / "p" / "cache").rglob("*.json"):
        assert len(json.loads(record.read_text())["files"]) == 31  # whole, every file, never a torn write
    assert not [p for p in (tmp_path / "p" / "cache").rglob("*") if p.name.endswith(".tmp")]
    job = _job(tmp_path, data)
    job.get_samples()
    assert job.data.work == {"hashed": 0, "checked": 0, "reused": 31} and job.bad_samples == 1


def test_an_unreadable_cache_file_means_checking_again(tmp_path, tiny_vials):
    data = _dataset(tiny_vials, tmp_path / "data")
    _job(tmp_path, data).get_samples()
    for record in (tmp_path / "p" / "cache").rglob("*.json"):
        record.write_text("{torn")
    job = _job(tmp_path, data)
    job.get_samples()
    assert job.data.work == {"hashed": 31, "checked": 31, "reused": 0} and job.bad_samples == 1


@pytest.mark.parametrize("content", ['{"files": null}', "[]", '"x"', '{"files": []}', "[" * 100_000 + "]" * 100_000])
def test_a_cache_file_of_the_wrong_shape_means_checking_again(tmp_path, tiny_vials, content, caplog):
    data = _dataset(tiny_vials, tmp_path / "data")
    _job(tmp_path, data).get_samples()
    for record in (tmp_path / "p" / "cache").rglob("*.json"):
        record.write_text(content)
    job = _job(tmp_path, data)
    job.get_samples()
    assert job.data.work == {"hashed": 31, "checked": 31, "reused": 0} and job.bad_samples == 1
    assert "Ignoring the rerun cache file" in caplog.text


def test_a_symlinked_file_whose_target_changes_is_rehashed_and_rechecked(tmp_path, tiny_vials):
    # a dataset of links into a store: the stamp is the target's, not the link's
    store = _dataset(tiny_vials, tmp_path / "store")
    data = tmp_path / "data"
    for image in store.rglob("*.bmp"):
        link = data / image.relative_to(store)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(image)
    _job(tmp_path, data).get_samples()
    target = store / "good" / "good_0001.bmp"
    broken = b"XX" + target.read_bytes()[2:]  # same size, no longer a BMP, written anew (new mtime)
    (store / "replacement.tmp").write_bytes(broken)
    os.replace(store / "replacement.tmp", target)

    job = _job(tmp_path, data)
    job.get_samples()
    assert job.data.work == {"hashed": 1, "checked": 1, "reused": 30}
    assert sorted(p.rsplit("/", 1)[-1] for p in _bad(job).path) == ["good_0001.bmp", "truncated.bmp"]


def test_an_annotation_changed_with_its_old_modification_time_is_rechecked(tmp_path, tiny_vials_seg):
    # annotations are versioned by content, as images are: a mtime set back (touch -r) hides nothing
    data = tmp_path / "data"
    shutil.copytree(tiny_vials_seg, data)

    def job(*extra):
        return Job.init(overrides=["recipe=vials_segmentation", f"platform.root={tmp_path / 'p'}",
                                   f"datasets.vials_seg.url={data}", "data.on_bad_sample=skip", *extra])

    first = job()
    first.get_samples()
    assert first.bad_samples == 0
    annotation = next((data / "good").glob("*.json"))
    before = annotation.stat()
    text = annotation.read_text()
    assert '"cap"' in text
    annotation.write_text(text.replace('"cap"', '"cork"'))
    os.utime(annotation, ns=(before.st_atime_ns, before.st_mtime_ns))

    again = job()
    again.get_samples()
    # one annotation hashed; its sample checked again by both check stages (image and annotation)
    assert again.data.work == {"hashed": 1, "checked": 2, "reused": 28} and again.bad_samples == 1
    assert "cork" in _bad(again).to_dict("records")[0]["reason"]


@pytest.mark.parametrize("key, where", [("platform.root", "out"), ("platform.cache_dir", ".cache"),
                                        ("job.temp_dir", "tmp"), ("platform.root", "")])
def test_a_job_folder_inside_the_dataset_is_refused_before_anything_is_written(tmp_path, tiny_vials, key, where):
    # the images a job writes there (galleries, facets, masks) would be a made-up class of the next run
    data = _dataset(tiny_vials, tmp_path / "data")
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    folder = f"{data}/{where}" if where else f"file://{data}"
    with pytest.raises(ConfigError, match=rf"^{key}=.*/data(/{where})? is inside dataset 'vials' \(.*/data\): the images a "
                                          rf"job writes there would be listed as samples by the next run; set {key} to a "
                                          "folder outside the dataset$"):
        _job(tmp_path, data, f"{key}={folder}")
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before
    _job(tmp_path, data, f"{key}={tmp_path}/beside").get_samples()  # beside it: fine


def test_a_job_folder_behind_a_folder_link_in_the_dataset_is_refused(tmp_path, tiny_vials):
    data = _dataset(tiny_vials, tmp_path / "data")
    (tmp_path / "elsewhere").mkdir()
    (data / "extra").symlink_to(tmp_path / "elsewhere")  # the listing walks linked folders
    job = _job(tmp_path, data, f"platform.root={tmp_path}/elsewhere/platform")
    with pytest.raises(ConfigError, match=rf"^platform\.root=.*/elsewhere/platform is inside dataset 'vials' \(.*/data\) "
                                          rf"through the folder link {data}/extra: "):
        job.get_samples()


def test_a_job_folder_in_a_dataset_folder_that_is_not_listed_is_allowed(tmp_path, tiny_vials):
    data = _dataset(tiny_vials, tmp_path / "data")
    listed = "+datasets.vials.folders=[good,failed_cap,missing_cap]"
    first = _job(tmp_path, data, f"platform.root={data}/platform", listed)
    first.get_samples()
    (data / "platform" / "jobs" / "x" / "artifacts").mkdir(parents=True)  # what a job would leave there
    shutil.copy(data / "good" / "good_0000.bmp", data / "platform" / "jobs" / "x" / "artifacts" / "gallery.bmp")
    again = _job(tmp_path, data, f"platform.root={data}/platform", listed)
    assert set(again.get_samples()["folder"]) == {"good", "failed_cap", "missing_cap"}
    with pytest.raises(ConfigError, match=r"^platform\.root=.* is inside dataset 'vials'"):  # listed: refused
        _job(tmp_path, data, f"platform.root={data}/good/platform", listed)
