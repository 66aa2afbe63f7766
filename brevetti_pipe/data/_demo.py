"""Deterministic synthetic vial-inspection datasets (good / missing_cap / failed_cap)."""

from __future__ import annotations

import io as _io
import json
import logging
import os
import shutil
import tempfile
import uuid

import numpy as np

from brevetti_pipe.data._samples import GENERATORS
from brevetti_pipe.errors import ConfigError
from brevetti_pipe.storage import IoTools, is_local, local_path

__all__ = ["VIAL_CLASSES", "render_vial", "generate_vials"]

log = logging.getLogger(__name__)

VIAL_CLASSES = ("failed_cap", "good", "missing_cap")


def render_vial(kind: str, rng: np.random.Generator, size: int = 512) -> np.ndarray:
    """Render one ``size`` x ``size`` RGB uint8 image of a vial of the given kind.

    ``good`` has a straight cap, ``missing_cap`` an open neck, ``failed_cap`` a cap knocked
    askew. Position, glass tint, lighting and sensor noise vary per image.
    """
    return render_annotated_vial(kind, rng, size)[0]


def render_annotated_vial(kind: str, rng: np.random.Generator, size: int = 512) -> tuple[np.ndarray, list[dict]]:
    """:func:`render_vial` plus its annotations: a ``cap`` polygon (when present) and a ``liquid`` rectangle."""
    from PIL import Image, ImageDraw

    s = size / 512.0
    base = rng.uniform(25, 60)
    yy = np.linspace(0, 1, size, dtype=np.float32)[:, None]
    background = base + 25 * yy + np.zeros((size, size), np.float32)
    img = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(img)
    cx = size / 2 + rng.uniform(-30, 30) * s
    top = rng.uniform(-12, 12) * s
    body_w = rng.uniform(130, 160) * s
    glass = tuple(int(v) for v in rng.uniform([150, 165, 175], [190, 205, 220]))
    draw.rounded_rectangle(
        [cx - body_w / 2, 200 * s + top, cx + body_w / 2, 470 * s + top], radius=int(18 * s), fill=glass
    )
    neck_w = body_w * 0.55
    draw.rectangle([cx - neck_w / 2, 150 * s + top, cx + neck_w / 2, 205 * s + top], fill=glass)
    fill_level = rng.uniform(300, 360) * s + top
    liquid = tuple(int(v) for v in rng.uniform([90, 120, 140], [120, 150, 180]))
    liquid_box = [cx - body_w / 2 + 6 * s, fill_level, cx + body_w / 2 - 6 * s, 462 * s + top]
    draw.rectangle(liquid_box, fill=liquid)
    shapes: list[dict] = [{"label": "liquid", "type": "rectangle",
                           "points": [[liquid_box[0], liquid_box[1]], [liquid_box[2], liquid_box[3]]]}]
    cap_w, cap_h = neck_w * 1.35, rng.uniform(55, 65) * s
    cap_color = tuple(int(v) for v in rng.uniform([200, 60, 50], [240, 90, 80]))
    if kind == "good":
        box = [cx - cap_w / 2, 150 * s + top - cap_h, cx + cap_w / 2, 158 * s + top]
        draw.rectangle(box, fill=cap_color)
        shapes.append({"label": "cap", "type": "polygon",
                       "points": [[box[0], box[1]], [box[2], box[1]], [box[2], box[3]], [box[0], box[3]]]})
    elif kind == "failed_cap":
        angle = np.deg2rad(rng.choice([-1, 1]) * rng.uniform(25, 45))
        shift = rng.choice([-1, 1]) * rng.uniform(35, 55) * s
        ccx, ccy = cx + shift, 150 * s + top - cap_h / 2 - rng.uniform(10, 25) * s
        corners = np.array([[-cap_w / 2, -cap_h / 2], [cap_w / 2, -cap_h / 2], [cap_w / 2, cap_h / 2], [-cap_w / 2, cap_h / 2]])
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        pts = corners @ rot.T + [ccx, ccy]
        draw.polygon([tuple(p) for p in pts], fill=cap_color)
        shapes.append({"label": "cap", "type": "polygon", "points": [[float(x), float(y)] for x, y in pts]})
    elif kind != "missing_cap":
        raise ConfigError(f"unknown vial kind {kind!r}; expected one of {VIAL_CLASSES}")
    arr: np.ndarray = np.asarray(img, dtype=np.float32)
    arr = arr * rng.uniform(0.85, 1.15) + rng.normal(0, 4, arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8), shapes


def _encode(arr: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buf = _io.BytesIO()
    Image.fromarray(arr).save(buf, format={"bmp": "BMP", "png": "PNG", "jpg": "JPEG", "tif": "TIFF"}[fmt])
    return buf.getvalue()


def generate_vials(
    url: str,
    io: IoTools | None = None,
    seed: int = 0,
    per_class: int = 100,
    size: int = 512,
    fmt: str = "bmp",
    classes: tuple[str, ...] = VIAL_CLASSES,
    annotations: bool = False,
) -> str:
    """Write a synthetic vial dataset to ``url`` (``<class>/<class>_NNNN.<fmt>``) and return ``url``.

    The content depends only on the arguments (not on ``io`` or timing), so concurrent
    writers produce identical files. Local targets appear atomically (built beside, renamed).
    With ``annotations``, each image gets ``<image>.json`` with ``cap`` and ``liquid`` shapes.
    """
    io = io or IoTools()
    log.info("Generating the synthetic vials dataset (%d per class, %dpx) at %s", per_class, size, url)
    staging = tempfile.mkdtemp(prefix="brevetti-pipe-vials-")
    try:
        for ci, kind in enumerate(classes):
            os.makedirs(os.path.join(staging, kind))
            for i in range(per_class):
                rng = np.random.default_rng([seed, VIAL_CLASSES.index(kind) if kind in VIAL_CLASSES else ci, i])
                image, shapes = render_annotated_vial(kind, rng, size)
                name = os.path.join(staging, kind, f"{kind}_{i:04d}.{fmt}")
                with open(name, "wb") as fh:
                    fh.write(_encode(image, fmt))
                if annotations:
                    doc = {"image": {"width": size, "height": size}, "annotations": shapes}
                    with open(name + ".json", "w", encoding="utf-8") as fh:
                        json.dump(doc, fh)
        if is_local(url):
            target = local_path(url)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            tmp = f"{target}.{uuid.uuid4().hex[:8]}.tmp"
            shutil.copytree(staging, tmp)
            try:
                os.rename(tmp, target)
            except OSError:  # someone else made it first: theirs is identical
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            io.put_tree(staging, url)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return url


GENERATORS.register("vials", generate_vials)
GENERATORS.register("vials_annotated", lambda url, io=None, **kw: generate_vials(url, io=io, annotations=True, **kw))
