"""The deterministic-prefix cache: bit-identical to the uncached pipeline, in memory and on disk."""

from __future__ import annotations

import hashlib
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from brevetti_pipe.data import DataGenerator, get_image_samples
from brevetti_pipe.stages import ImageAugmenter, ImageNoise, ImagePipeline, OneHotEncoder, RandomTransformer, Stage


def _gen(samples, cache):
    return (DataGenerator(samples, batch_size=8, shuffle=True, repeat=True, seed=5, output_structure=("img", "onehot"), cache=cache)
            .map(ImagePipeline(target_size=(40, 40), antialias=True, rescale="unit"))
            .map(ImageAugmenter(random_transformer=RandomTransformer(rotate=20), image_noise=ImageNoise(stddev=0.02)))
            .map(OneHotEncoder(["failed_cap", "good", "missing_cap"])))


def _hashes(gen, epochs=3):
    it = gen.get_dataset_numpy()
    out = []
    for _ in range(epochs):
        h = hashlib.sha256()
        for _ in range(len(gen)):
            x, y = next(it)
            h.update(x.tobytes())
            h.update(y.tobytes())
        out.append(h.hexdigest())
    return out


def test_memory_and_disk_cache_are_bit_identical_to_uncached(tmp_path, tiny_vials):
    samples = get_image_samples(str(tiny_vials))
    plain = _hashes(_gen(samples, False))
    assert len(set(plain)) == 3, "epochs differ: reshuffled and re-augmented"
    assert _hashes(_gen(samples, True)) == plain
    disk = tmp_path / "cache"
    assert _hashes(_gen(samples, str(disk))) == plain
    files = list(disk.rglob("*.tensor"))
    assert len(files) == len(samples)
    # a second generator reuses the files: remove the sources, the cached prefix still serves
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    assert _hashes(_gen(samples, str(disk))) == plain
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes


def test_a_disk_cache_fills_a_file_listed_twice(tmp_path, tiny_vials):
    # one folder in two datasets: the same file is written twice in one fill, each to its own temporary name
    samples = get_image_samples(str(tiny_vials))
    twice = pd.concat([samples, samples], ignore_index=True)
    plain = _hashes(_gen(twice, False), epochs=1)
    disk = tmp_path / "cache"
    assert _hashes(_gen(twice, str(disk)), epochs=1) == plain
    assert len(list(disk.rglob("*.tensor"))) == len(samples)
    assert not list(disk.rglob("*.part"))


def test_a_disk_cache_entry_follows_every_column_its_stages_read(tmp_path, tiny_vials):
    # the one-hot labels are cached with the images: a category map that swaps two classes must not
    # be served the labels of the run before it
    def gen(samples, cache):
        return (DataGenerator(samples, batch_size=8, seed=5, output_structure=("img", "onehot"), cache=cache)
                .map(ImagePipeline(target_size=(16, 16), rescale="unit"))
                .map(OneHotEncoder(["failed_cap", "good", "missing_cap"])))

    samples = get_image_samples(str(tiny_vials))
    swap = {"good": "missing_cap", "missing_cap": "good"}
    mapped = samples.assign(category=[type(c)(swap.get(x, x) for x in c) if isinstance(c, tuple) else swap.get(c, c)
                                      for c in samples["category"]])
    assert not mapped["category"].equals(samples["category"])
    disk = str(tmp_path / "cache")
    assert _hashes(gen(samples, disk), epochs=1) == _hashes(gen(samples, False), epochs=1)
    assert _hashes(gen(mapped, disk), epochs=1) == _hashes(gen(mapped, False), epochs=1)


def test_cache_keys_on_the_prefix_config(tmp_path, tiny_vials):
    samples = get_image_samples(str(tiny_vials))
    a = DataGenerator(samples, cache=str(tmp_path)).map(ImagePipeline(target_size=(8, 8)))
    b = DataGenerator(samples, cache=str(tmp_path)).map(ImagePipeline(target_size=(9, 9)))
    list(a.get_dataset())
    list(b.get_dataset())
    assert len({p.parent for p in tmp_path.rglob("*.tensor")}) == 2


def test_jpeg_downscale_decodes_smaller_and_close(tmp_path):
    yy, xx = np.mgrid[0:64, 0:64]
    img = np.stack([xx * 4, yy * 4, (xx + yy) * 2], axis=-1).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "a.jpg", quality=95)
    import pandas as pd

    from brevetti_pipe.testing import run_stage

    s = pd.DataFrame({"path": [str(tmp_path / "a.jpg")]})
    full = run_stage(ImagePipeline(target_size=(16, 16), rescale="unit"), s)[0]["img"]
    fast = run_stage(ImagePipeline(target_size=(16, 16), rescale="unit", jpeg_downscale=2), s)[0]["img"]
    assert fast.shape == full.shape and np.abs(fast - full).mean() < 0.02


def test_job_uses_data_cache_setting(tmp_path, tiny_vials):
    from brevetti_pipe import Job

    job = Job.init(overrides=["recipe=vials_classification", f"platform.root={tmp_path}", f"datasets.vials.url={tiny_vials}",
                              "data.cache=true"])
    gen = job.data_generator(job.get_samples(), train=True)
    assert gen.cache is True
    with pytest.raises(Exception):
        Job.init(overrides=["recipe=vials_classification", f"platform.root={tmp_path}", "data.cache=[1]"])


# -- cache="auto" (the default) ----------------------------------------------------------------

def _elements(gen, n, **kwargs):
    it = gen.get_dataset(**kwargs).as_numpy_iterator()
    return [next(it) for _ in range(n)]


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)


@pytest.fixture(scope="module")
def plain_stream(tiny_vials):
    """Three epochs of the uncached stream of ``_gen`` over tiny_vials (4 batches an epoch)."""
    samples = get_image_samples(str(tiny_vials))
    return samples, _elements(_gen(samples, False), 12)


def test_auto_caches_what_fits_serves_from_memory_and_streams_over_budget(tmp_path, tiny_vials, plain_stream, caplog):
    import logging
    import shutil

    data = shutil.copytree(tiny_vials, tmp_path / "vials")
    samples = get_image_samples(str(data))
    auto = _gen(samples, "auto")
    assert auto.cache == "auto" == DataGenerator(samples).cache, "auto is the default"
    with caplog.at_level(logging.INFO, logger="brevetti_pipe.data"):
        it = auto.get_dataset_numpy()
        got = [next(it) for _ in range(4)]
    memory = auto._memory_cache[1]
    assert memory is not None and memory.complete(), "one epoch filled every row"
    assert memory.nbytes == 30 * 40 * 40 * 3 * 4  # 30 samples x 40 x 40 x 3 float32
    assert "data.cache=auto: caching 30 samples in memory: 562.5 KiB (budget 1.0 GiB" in caplog.text
    shutil.rmtree(data)  # later epochs come from memory: the files are no longer needed
    got += [next(it) for _ in range(8)]
    _assert_same(got, plain_stream[1])

    caplog.clear()
    small = _gen(samples, "auto")
    small.cache_max_bytes = 500_000
    with caplog.at_level(logging.INFO, logger="brevetti_pipe.data"):
        small.get_dataset()
    assert small._memory_cache == (small._memory_cache[0], None)
    assert "streaming 30 samples: its decoded prefix needs 562.5 KiB, over the budget 488.3 KiB" in caplog.text


def test_auto_streams_shapes_that_are_not_fixed_where_true_fails(tiny_vials, caplog):
    import logging

    from brevetti_pipe.errors import StageError

    samples = get_image_samples(str(tiny_vials))
    with caplog.at_level(logging.INFO, logger="brevetti_pipe.data"):
        gen = DataGenerator(samples, batch_size=4, output_structure="img").map(ImagePipeline())
        batch = next(iter(gen.get_dataset()))
    assert batch.shape == (4, 64, 64, 3) and gen._memory_cache[1] is None
    assert "the cached stages' output has no fixed size" in caplog.text
    with pytest.raises(StageError, match="cache=True needs fixed output shapes"):
        DataGenerator(samples, cache=True).map(ImagePipeline()).get_dataset()


def test_auto_budget_is_shared_by_live_caches_and_released_with_them(tiny_vials):
    import gc

    from brevetti_pipe.data._memory_cache import cached_bytes

    samples = get_image_samples(str(tiny_vials))

    def gen():
        return DataGenerator(samples, output_structure="img", cache_max_bytes=before + size + size // 2).map(
            ImagePipeline(target_size=(40, 40), rescale="unit"))

    gc.collect()
    before = cached_bytes()  # caches other tests' fixtures still hold
    size = 30 * 40 * 40 * 3 * 4
    a, b = gen(), gen()
    a.get_dataset(), b.get_dataset()
    assert a._memory_cache[1] is not None and b._memory_cache[1] is None, "the second does not fit beside the first"
    assert cached_bytes() == before + size
    del a  # no explicit gc: the next decision collects what finished jobs left in reference cycles
    c = gen()
    c.get_dataset()
    assert c._memory_cache[1] is not None, "released memory is available to the next job"
    assert cached_bytes() == before + size


def test_auto_resume_shards_scopes_and_longer_chains_match_the_uncached_stream(plain_stream):
    import tensorflow as tf

    samples, plain = plain_stream
    # resumed after 7 batches: exactly what the uninterrupted stream draws from there
    _assert_same(_elements(_gen(samples, "auto"), 5, skip=7 * 8), plain[7:])
    # built in a strategy scope (a user's run step): no distributed variable, the same stream
    scoped = _gen(samples, "auto")
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        dataset = scoped.get_dataset()
    assert scoped._memory_cache == ((), None)
    _assert_same([tuple(t.numpy() for t in b) for b in dataset.take(4)], plain[:4])
    # worker 1 of 2 takes every second sample of each epoch's draw
    worker = _gen(samples, "auto")
    worker.shard = (2, 1)
    rows = [np.concatenate([b[k] for b in plain[:4]]) for k in (0, 1)]
    _assert_same(_elements(worker, 1), [(rows[0][1:16:2], rows[1][1:16:2])])
    assert worker._memory_cache[1] is not None
    # a generator mapped further caches its own (longer) prefix, not its parent's
    base = DataGenerator(samples, batch_size=8, output_structure="img").map(ImagePipeline(target_size=(8, 8)))
    list(base.get_dataset())
    longer = base.map(ImagePipeline(target_size=(4, 4)))  # a second, deterministic stage
    assert next(iter(longer.get_dataset())).shape == (8, 4, 4, 3)


def test_auto_caches_segmentation_masks_bit_identically(tiny_vials_seg):
    from brevetti_pipe.stages import SegmentationLoader

    samples = get_image_samples(str(tiny_vials_seg))

    def gen(cache):
        return (DataGenerator(samples, batch_size=4, shuffle=True, repeat=True, seed=2, output_structure=("img", "segmentation"),
                              cache=cache)
                .map(ImagePipeline(target_size=(16, 16), rescale="unit"))
                .map(SegmentationLoader(classes=["cap", "liquid"], target_size=(16, 16)))
                .map(ImageAugmenter(random_transformer=RandomTransformer(rotate=20))))

    auto = gen("auto")
    _assert_same(_elements(auto, 2 * len(auto)), _elements(gen(False), 2 * len(auto)))  # filled, then served
    assert set(auto._memory_cache[1].values) == {"img", "segmentation"}


class _UndeclaredJitter(Stage):
    """A user's stage that draws random numbers but never declared ``random = True``."""

    name = "test_undeclared_jitter"

    def __call__(self, x, seed=None):  # noqa: ANN001, ANN204
        return {**x, "j": tf.random.stateless_uniform([], seed=tf.cast(seed, tf.int32))}


def test_auto_does_not_cache_a_users_stage_that_did_not_say_it_is_deterministic(tiny_vials):
    samples = get_image_samples(str(tiny_vials)).head(12)
    draws = {}
    for cache in (False, "auto"):
        gen = DataGenerator(samples, batch_size=4, output_structure="j", cache=cache).map(
            ImagePipeline(target_size=(8, 8))).map(_UndeclaredJitter())
        draws[cache] = np.concatenate(list(gen.get_dataset_numpy()))
    assert len(set(draws["auto"].tolist())) == 12, "each sample keeps its own draw, as uncached"
    np.testing.assert_array_equal(draws["auto"], draws[False])


def test_an_iterator_over_the_memory_cache_can_be_checkpointed_and_restored(tiny_vials, tmp_path):
    samples = get_image_samples(str(tiny_vials)).head(12)
    gen = DataGenerator(samples, batch_size=4, output_structure="img", repeat=True, cache="auto").map(
        ImagePipeline(target_size=(8, 8)))
    it = iter(gen.get_dataset())
    next(it)
    path = tf.train.Checkpoint(it=it).save(str(tmp_path / "it"))  # raised "ResourceGather is stateful"
    expected = [next(it).numpy() for _ in range(4)]
    again = iter(gen.get_dataset())
    tf.train.Checkpoint(it=again).restore(path)
    np.testing.assert_array_equal(np.stack([next(again).numpy() for _ in range(4)]), np.stack(expected))


def test_the_auto_budget_sees_a_containers_memory_limit(tmp_path):
    # a pod limited to 8 GiB on a large host: /proc/meminfo shows the host, the cgroup the limit
    from brevetti_pipe.data._memory_cache import _cgroup_room

    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text(f"{8 << 30}\n")
    (v2 / "memory.current").write_text(f"{3 << 30}\n")
    assert _cgroup_room(str(v2)) == 5 << 30
    (v2 / "memory.max").write_text("max\n")
    assert _cgroup_room(str(v2)) is None
    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(f"{2 << 30}\n")
    (v1 / "memory.usage_in_bytes").write_text(f"{1 << 30}\n")
    assert _cgroup_room(str(tmp_path / "v1")) == 1 << 30
    assert _cgroup_room(str(tmp_path / "none")) is None


def test_a_disk_cache_of_masks_is_reused_by_the_next_job_and_follows_a_changed_annotation(tiny_vials_seg, tmp_path):
    # each job prepares its masks under its own scratch folder: the entry is keyed by the annotation's
    # version, not by that folder, so the next job reuses it; a changed annotation makes a new entry
    from brevetti_pipe.stages import SegmentationLoader
    from brevetti_pipe.storage import IoTools

    data = tmp_path / "seg"
    shutil.copytree(tiny_vials_seg, data)
    disk = tmp_path / "cache"

    def run(scratch):
        samples = get_image_samples(str(data))
        gen = (DataGenerator(samples, batch_size=4, io=IoTools(cache_root=str(tmp_path / scratch)),
                             output_structure=("img", "segmentation"), cache=str(disk))
               .map(ImagePipeline(target_size=(16, 16), rescale="unit"))
               .map(SegmentationLoader(classes=["cap", "liquid"], target_size=(16, 16))))
        list(gen.get_dataset())
        return {p.name for p in disk.rglob("*.tensor")}

    first = run("job1")
    assert run("job2") == first
    annotation = next((data / "good").glob("*.json"))
    annotation.write_text(annotation.read_text().replace('"cap"', '"liquid"'))
    assert len(run("job3") - first) == 2  # the changed sample's image and mask entries


def test_a_disk_cache_entry_cut_short_is_written_again(tmp_path, tiny_vials, caplog):
    # a full disk, or a crash before the data reached the disk, leaves a short file under the final name
    samples = get_image_samples(str(tiny_vials))
    plain = _hashes(_gen(samples, False), epochs=1)
    disk = tmp_path / "cache"
    assert _hashes(_gen(samples, str(disk)), epochs=1) == plain
    short, empty, longer = sorted(disk.rglob("*.tensor"))[:3]
    short.write_bytes(short.read_bytes()[:100])
    empty.write_bytes(b"")
    longer.write_bytes(longer.read_bytes() + b"\0\0")
    with caplog.at_level("WARNING", logger="brevetti_pipe.data._generator"):
        assert _hashes(_gen(samples, str(disk)), epochs=1) == plain
    assert "data.cache: 3 entries of 'img' in" in caplog.text and "had the wrong size (cut short, or written over); " \
        "written again" in caplog.text
    assert short.stat().st_size == empty.stat().st_size == longer.stat().st_size == sorted(disk.rglob("*.tensor"))[3].stat().st_size


def test_a_disk_cache_folder_may_be_a_file_url_or_under_home_but_not_remote(tmp_path, tiny_vials, monkeypatch):
    # it was used as written: a folder named "file:" or "~" in the working directory, or "s3:" for a bucket
    from brevetti_pipe.errors import ConfigError, StorageError

    samples = get_image_samples(str(tiny_vials))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert DataGenerator(samples, cache=f"file://{tmp_path}/c").cache == str(tmp_path / "c")
    gen = DataGenerator(samples, batch_size=4, output_structure="img", cache="~/c").map(ImagePipeline(target_size=(16, 16)))
    next(iter(gen.get_dataset()))
    assert list((tmp_path / "home" / "c").rglob("*.tensor")) and not (tmp_path / "~").exists()
    with pytest.raises(ConfigError, match="^cache: must be a local directory, not a s3:// URL"):
        DataGenerator(samples, cache="s3://b/c")
    for value in ("file://", "file:///", " ", "false", "Off"):
        with pytest.raises(ConfigError, match="^cache: "):
            DataGenerator(samples, cache=value)
    (tmp_path / "a_file").write_text("")  # a file where the folder should be: one line naming it, before any work
    with pytest.raises(StorageError, match=f"^data.cache: cannot create the cache folder {tmp_path}/a_file/.* \\(Not a directory\\)"):
        DataGenerator(samples, cache=str(tmp_path / "a_file")).map(ImagePipeline(target_size=(16, 16))).get_dataset()


def test_a_variable_shape_disk_cache_entry_left_empty_is_written_again(tmp_path, tiny_vials, caplog):
    # no size is fixed for [None, None, 3] images, but none is smaller than an empty image's entry: an empty
    # file (a crash before the data reached the disk) or a stub of a few bytes is written again, not read
    samples = get_image_samples(str(tiny_vials))

    def gen(cache):
        return DataGenerator(samples, batch_size=4, output_structure="img", cache=cache).map(ImagePipeline())

    plain = [b.numpy().tobytes() for b in gen(False).get_dataset().take(len(gen(False)))]
    disk = tmp_path / "cache"
    assert [b.numpy().tobytes() for b in gen(str(disk)).get_dataset().take(len(plain))] == plain
    empty, stub = sorted(disk.rglob("*.tensor"))[:2]
    whole = empty.stat().st_size
    empty.write_bytes(b"")
    stub.write_bytes(stub.read_bytes()[:12])
    with caplog.at_level("WARNING", logger="brevetti_pipe.data._generator"):
        assert [b.numpy().tobytes() for b in gen(str(disk)).get_dataset().take(len(plain))] == plain
    assert "data.cache: 2 entries of 'img' in" in caplog.text
    assert empty.stat().st_size == whole and stub.stat().st_size > 12


_FILL_UNDER_A_FILE_SIZE_LIMIT = """
import os, resource, signal, sys
from brevetti_pipe.data import DataGenerator, get_image_samples
from brevetti_pipe.errors import describe
from brevetti_pipe.stages import ImagePipeline

samples = get_image_samples(sys.argv[1])
gen = DataGenerator(samples, batch_size=4, cache=sys.argv[2]).map(ImagePipeline(target_size=(40, 40), rescale="unit"))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
try:
    gen.get_dataset()
except Exception as exc:
    print(describe(exc))
"""


def test_a_cache_folder_that_cannot_be_written_is_one_line_and_leaves_no_temporary_files(tmp_path, tiny_vials):
    # the map's other calls must not go on writing after the failure (they left .part files behind)
    import subprocess
    import sys

    disk = tmp_path / "cache"
    proc = subprocess.run([sys.executable, "-c", _FILL_UNDER_A_FILE_SIZE_LIMIT, str(tiny_vials), str(disk)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    folder = next(disk.iterdir())
    assert proc.stdout.strip() == (f"data.cache: cannot write the cache folder {folder} (File too large); free space, "
                                   "allow writing there, or set data.cache to another folder"), proc.stdout + proc.stderr[-2000:]
    assert list(folder.iterdir()) == []


def test_a_damaged_disk_cache_entry_fails_naming_the_file(tmp_path, tiny_vials):
    from brevetti_pipe.errors import describe

    samples = get_image_samples(str(tiny_vials))
    disk = tmp_path / "cache"
    _hashes(_gen(samples, str(disk)), epochs=1)
    victim = sorted(disk.rglob("*.tensor"))[3]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x10  # one flipped bit, same size: it would parse, and train on a wrong pixel
    victim.write_bytes(bytes(data))
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        _hashes(_gen(samples, str(disk)), epochs=1)
    assert describe(raised.value) == ("a data.cache entry is damaged (its checksum does not match); delete it, or its "
                                      f"folder, and run again: {victim}")


def test_a_disk_cache_entry_copied_over_another_fails_naming_the_file(tmp_path, tiny_vials):
    # a whole, valid entry of the same shape under another sample's name (a copy by hand, a restore from
    # the wrong backup, a file system's misplaced block): its own checksum holds, but it is not this sample's
    from brevetti_pipe.errors import describe

    samples = get_image_samples(str(tiny_vials))
    disk = tmp_path / "cache"
    _hashes(_gen(samples, str(disk)), epochs=1)
    entries = sorted(disk.rglob("*.tensor"))
    donor, victim = entries[0], entries[3]
    assert donor.read_bytes() != victim.read_bytes() and donor.stat().st_size == victim.stat().st_size
    shutil.copyfile(donor, victim)
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        _hashes(_gen(samples, str(disk)), epochs=1)
    assert describe(raised.value) == ("a data.cache entry is damaged (its checksum does not match); delete it, or its "
                                      f"folder, and run again: {victim}")
