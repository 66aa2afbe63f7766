"""``brevetti-pipe-predict``: run an exported model archive on image files, folders or fsspec URLs.

    brevetti-pipe-predict ARCHIVE INPUT... [--format keras|saved_model|onnx|tflite]
                          [--output predictions.csv] [--batch-size N] [--storage-option KEY=VALUE]

Writes one row per image (path, predicted class, probability per class, decision at the archive's
operating point) to ``--output`` (a CSV, any fsspec URL) or prints a table. Segmentation archives
write each predicted mask as a PNG into ``<output stem>_masks/`` beside the CSV. Inputs that cannot be
read or decoded are listed on stderr with the reason; the rest are still predicted, and the exit
code is 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from brevetti_pipe._util import secrets as _secrets
from brevetti_pipe._util.console import quiet_tensorflow
from brevetti_pipe.errors import BrevettiPipeError, ConfigError, describe
from brevetti_pipe.run._images import IMAGE_SUFFIXES
from brevetti_pipe.storage import IoTools, is_local, listed_url

__all__ = ["list_inputs", "main", "predict_rows"]

log = logging.getLogger(__name__)

_FORMATS = ("keras", "saved_model", "onnx", "tflite")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brevetti-pipe-predict",
        description="Predict with an exported model archive (model.tar.gz) on images: files, folders "
                    "(searched recursively for BMP/PNG/JPEG/GIF/TIFF) or fsspec URLs (s3://, gs://, ...).",
    )
    parser.add_argument("archive", help="model.tar.gz: a local path or an fsspec URL")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or URLs")
    parser.add_argument("--format", choices=_FORMATS, default=None,
                        help="model format to run (default: saved_model when the archive has it)")
    parser.add_argument("--output", "-o", default=None, help="CSV file or URL to write (default: print a table)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per model call (default: 32)")
    parser.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                        help="fsspec option for remote archives/inputs, e.g. endpoint_url=http://... (repeatable)")
    return parser


def _storage_options(pairs: Sequence[str], urls: Sequence[str]) -> dict[str, dict[str, Any]]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--storage-option takes KEY=VALUE. Received: {_secrets.redact(pair)!r}")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    protocols = {u.split("://", 1)[0] for u in urls if "://" in u and not is_local(u)}
    return {p: dict(options) for p in protocols}


def list_inputs(inputs: Sequence[str], io: IoTools) -> tuple[list[str], dict[str, str]]:
    """(image paths/URLs to predict, in order; {input: reason} for inputs that do not exist).

    A folder contributes its image files (by suffix), recursively, sorted.
    """
    found: list[str] = []
    missing: dict[str, str] = {}
    for item in inputs:
        try:
            fs, path = io.fs(item)
            if fs.isdir(path):
                files = sorted(p for p in fs.find(path) if p.lower().endswith(IMAGE_SUFFIXES))
                if not files:
                    missing[item] = "folder has no images (BMP, PNG, JPEG, GIF or TIFF)"
                found.extend(listed_url(fs, p, item) for p in files)
            elif fs.exists(path):
                found.append(item)
            else:
                missing[item] = "not found"
        except Exception as exc:
            missing[item] = _secrets.redact(describe(exc))
    return found, missing


def _read_all(paths: Sequence[str], io: IoTools) -> list[bytes | BaseException]:
    from brevetti_pipe.run._images import normalise_bytes

    def read(path: str) -> bytes | BaseException:
        try:
            return normalise_bytes(io.read_file(path))
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(read, paths))


def predict_rows(model: Any, paths: Sequence[str], io: IoTools, batch_size: int = 32,
                 mask_dir: str | None = None) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Predict every image of ``paths`` with a :class:`~brevetti_pipe.run.model.LoadedModel`.

    Returns:
        (one row per predicted image, in input order; {path: reason} for the unreadable ones).
    """
    from tqdm import tqdm

    rows: list[dict[str, Any]] = []
    bad: dict[str, str] = {}
    names: set[str] = set()
    with tqdm(total=len(paths), unit="img", disable=None, file=sys.stderr, leave=False) as bar:
        for start in range(0, len(paths), batch_size):
            chunk = list(paths[start:start + batch_size])
            good: list[tuple[str, bytes]] = []
            for path, data in zip(chunk, _read_all(chunk, io)):
                if isinstance(data, BaseException):
                    bad[path] = _secrets.redact(describe(data))
                elif not data:
                    bad[path] = "empty file (0 bytes)"
                else:
                    good.append((path, data))
            outputs, failed = model.predict_encoded([d for _, d in good], batch_size)
            kept = [p for i, (p, _) in enumerate(good) if i not in failed]
            bad.update({good[i][0]: f"cannot be decoded: {reason}" for i, reason in failed.items()})
            if outputs is not None:
                rows.extend(_rows(model, kept, outputs, mask_dir, names))
            bar.update(len(chunk))
    order = {p: i for i, p in enumerate(paths)}
    rows.sort(key=lambda r: order[r["path"]])
    return rows, bad


def _rows(model: Any, paths: list[str], outputs: Any, mask_dir: str | None, names: set[str]) -> list[dict[str, Any]]:
    import numpy as np

    classes = model.classes or [str(i) for i in range(outputs.shape[-1])]
    if model.task == "segmentation":
        rows = []
        for path, probs in zip(paths, outputs):
            mask = np.argmax(probs, axis=-1).astype(np.uint8)
            row: dict[str, Any] = {"path": path}
            if mask_dir is not None:
                row["mask"] = _write_mask(mask, path, mask_dir, names)
            row.update({f"area_{c}": float(np.mean(mask == i)) for i, c in enumerate(classes)})
            rows.append(row)
        return rows
    decisions = model.decide(outputs)
    rows = []
    for i, (path, probs) in enumerate(zip(paths, outputs)):
        row = {"path": path, "predicted_class": classes[int(np.argmax(probs))], "confidence": float(np.max(probs))}
        row.update({f"p_{c}": float(p) for c, p in zip(classes, probs)})
        row["decision"] = decisions[i] if decisions is not None else ""
        rows.append(row)
    return rows


def _write_mask(mask: Any, path: str, mask_dir: str, names: set[str]) -> str:
    """Write ``mask`` (class ids) as ``<mask_dir>/<image stem>.png`` (made unique); returns the file name."""
    from PIL import Image

    stem = os.path.splitext(path.rstrip("/").rsplit("/", 1)[-1])[0] or "image"
    name, k = f"{stem}.png", 1
    while name in names:
        k += 1
        name = f"{stem}-{k}.png"
    names.add(name)
    os.makedirs(mask_dir, exist_ok=True)
    tmp = os.path.join(mask_dir, f".{name}.tmp")
    Image.fromarray(mask).save(tmp, format="PNG")
    os.replace(tmp, os.path.join(mask_dir, name))
    return name


def _print_table(rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    if rows:
        with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200):
            print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}"))


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``brevetti-pipe-predict``; returns the exit code (0, 1 for bad inputs, 2 for usage)."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    quiet_tensorflow()  # TensorFlow's start-up lines stay off the console (TF_CPP_MIN_LOG_LEVEL=0 shows them)
    try:
        if args.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1. Received: {args.batch_size}")
        io = IoTools(_storage_options(args.storage_option, [args.archive, *args.inputs, args.output or ""]))
        paths, missing = list_inputs(args.inputs, io)
        from brevetti_pipe.run.model import load_model

        with load_model(args.archive, io, format=args.format) as model:
            mask_dir = None
            if model.task == "segmentation" and args.output:
                if not is_local(args.output):
                    raise ConfigError(f"Segmentation masks are written beside a local --output CSV. Received: --output {args.output}")
                mask_dir = os.path.splitext(args.output)[0] + "_masks"
            rows, bad = predict_rows(model, paths, io, args.batch_size, mask_dir)
    except BrevettiPipeError as exc:
        print(f"brevetti-pipe-predict: error: {_secrets.redact(str(exc))}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    for row in rows:  # credentials and signed query parameters of an input URL stay out of the CSV and table
        row["path"] = _secrets.redact(row["path"])
    if args.output:
        import pandas as pd

        io.write_file(args.output, pd.DataFrame(rows).to_csv(index=False))
        print(f"Wrote {len(rows)} prediction(s) to {_secrets.redact(args.output)}", file=sys.stderr)
    else:
        _print_table(rows)
    problems = {**missing, **bad}
    if problems:
        print(f"Could not predict {len(problems)} input(s):", file=sys.stderr)
        for path, reason in problems.items():
            print(f"  {_secrets.redact(path)}: {reason}", file=sys.stderr)
        return 1
    return 0


def console() -> None:
    """``brevetti-pipe-predict`` console script (a quick exit: see :mod:`brevetti_pipe._util.exit`)."""
    from brevetti_pipe._util.exit import exit_after

    exit_after(main)
