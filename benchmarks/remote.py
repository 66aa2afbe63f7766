"""Remote data: first epoch from S3 (moto on loopback + 30 ms per request) with concurrent fetching,
second epoch from the local cache, against a sequential one-file-at-a-time fsspec loop."""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path


def _measure(fmt: str, per_class: int, latency: float) -> dict[str, float]:
    from tests.servers import FaultProxy, s3_server

    from brevetti_pipe.data import DataGenerator, get_image_samples
    from brevetti_pipe.data._demo import generate_vials
    from brevetti_pipe.io import IoTools
    from brevetti_pipe.stages import ImagePipeline

    def epoch(gen: DataGenerator, it) -> float:  # noqa: ANN001
        t = time.perf_counter()
        for _ in range(len(gen)):
            next(it)
        return len(gen.samples) / (time.perf_counter() - t)

    with s3_server() as s3, FaultProxy(s3.endpoint, fail_rate=0.0, delay=latency) as proxy:
        s3.fs().mkdir("bench")
        generate_vials("s3://bench/vials", io=IoTools({"s3": s3.options}), per_class=per_class, size=512, fmt=fmt)
        io = IoTools({"s3": {"endpoint_url": proxy.endpoint}})
        samples = get_image_samples("s3://bench/vials", io=io)
        n = len(samples)
        size = s3.fs().size(samples.path[0])
        fs, _ = io.fs("s3://bench/vials")
        t0 = time.perf_counter()
        for p in samples.path[:40]:
            fs.cat_file(p)
        sequential = 40 / (time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as cache:
            direct = IoTools({"s3": s3.options})
            direct.set_cache_root(cache + "/direct")
            t = time.perf_counter()
            direct.localize(samples.path.tolist())
            server_cap = n / (time.perf_counter() - t)
            io.set_cache_root(cache)
            t = time.perf_counter()
            io.localize(samples.path.tolist())
            fetch = n / (time.perf_counter() - t)
            io.set_cache_root(tempfile.mkdtemp(dir=cache))
            gen = DataGenerator(samples, batch_size=32, repeat=True, io=io, output_structure="img").map(
                ImagePipeline(target_size=(224, 224), rescale="unit"))
            t = time.perf_counter()
            it = iter(gen.get_dataset())  # fetches every file concurrently into the cache
            for _ in range(len(gen)):
                next(it)
            first = n / (time.perf_counter() - t)
            second = statistics.median(epoch(gen, it) for _ in range(2))
            del it
        with tempfile.TemporaryDirectory() as local_dir:
            generate_vials(local_dir, per_class=per_class, size=512, fmt=fmt)
            local = get_image_samples(local_dir)
            lgen = DataGenerator(local, batch_size=32, repeat=True, output_structure="img").map(
                ImagePipeline(target_size=(224, 224), rescale="unit"))
            lit = iter(lgen.get_dataset())
            next(lit)
            local_rate = statistics.median(epoch(lgen, lit) for _ in range(2))
            del lit
    return {"n": n, "size": size, "sequential": sequential, "fetch": fetch, "cap": server_cap, "first": first, "second": second, "local": local_rate}


def remote_section(local_root: Path, per_class: int = 70, latency: float = 0.03) -> list[str]:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    lines = ["## Remote data (S3)", "",
             f"{per_class * 3} images (512x512) in moto's S3 server on loopback behind a proxy adding {latency * 1000:.0f} ms "
             "per request. The test servers themselves (moto's development server behind a Python proxy) move about "
             "50 MB/s, so large files are bandwidth-bound here and the concurrency gain shows on small objects.", "",
             "| format | object size | moto without latency (server ceiling) | sequential fsspec loop | concurrent fetch only | epoch 1 from S3 | epoch 2 from cache | same pipeline, local files |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    targets = []
    for fmt in ("jpg", "png"):
        m = _measure(fmt, per_class, latency)
        lines.append(f"| {fmt} | {m['size'] / 1024:.0f} KiB | {m['cap']:.0f}/s | {m['sequential']:.0f}/s | {m['fetch']:.0f}/s | {m['first']:.0f}/s | "
                     f"{m['second']:.0f}/s | {m['local']:.0f}/s |")
        r1, r2 = m["first"] / m["sequential"], m["second"] / m["local"]
        targets.append(f"- {fmt}: epoch 1 / sequential loop = {r1:.1f}x (target >= 20x) {'met' if r1 >= 20 else 'NOT met'}; "
                       f"epoch 2 / local = {r2:.2f}x (target >= 0.8x) {'met' if r2 >= 0.8 else 'NOT met'}")
    return lines + ["", *targets]
