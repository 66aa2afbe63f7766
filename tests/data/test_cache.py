"""The deterministic-prefix cache: bit-identical to the uncached pipeline, in memory and on disk."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from brevetti_pipe.data import DataGenerator, get_image_samples
from brevetti_pipe.stages import ImageAugmenter, ImageNoise, ImagePipeline, OneHotEncoder, RandomTransformer


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
