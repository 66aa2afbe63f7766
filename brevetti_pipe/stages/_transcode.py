"""One-off conversions done by stages' ``prepare`` (outside the graph, cached on local disk)."""

from __future__ import annotations

import hashlib
import os
import uuid

import numpy as np

from brevetti_pipe.errors import StageError

__all__ = ["cache_name", "inspect_image", "inspect_images", "tiff_to_png", "write_png"]

_CHANNELS = {"1": 1, "L": 1, "P": 3, "LA": 2, "RGB": 3, "RGBA": 4, "I;16": 1, "I;16B": 1, "I;16L": 1, "I;16N": 1, "I": 1}
_FORMATS = {"BMP", "PNG", "JPEG", "MPO", "GIF", "TIFF"}


def _bmp_problem(path: str, mode: str) -> str | None:
    """Why TensorFlow's BMP decoder would not give Pillow's pixels, or None.

    TensorFlow reads 8-bit BMPs as grey levels (right only when the palette is the grey ramp,
    which Pillow reports as mode L) and cannot decode BMPs below 8 bits per pixel.
    """
    with open(path, "rb") as fh:
        head = fh.read(30)
    header = int.from_bytes(head[14:18], "little")
    bits = int.from_bytes(head[24:26] if header == 12 else head[28:30], "little")
    if bits < 8:
        return f"{bits} bit(s) per pixel BMP: TensorFlow cannot decode it; save it as 8-bit greyscale or 24-bit BMP, or PNG"
    if mode == "P":
        return "8-bit palette BMP: TensorFlow reads the palette indices as grey levels; save it as 24-bit BMP or PNG"
    return None


def inspect_image(path: str) -> tuple[str | None, int]:
    """(reason the file is unusable or None, channel count) after a full decode with Pillow.

    Also reports BMPs that TensorFlow decodes differently from Pillow (palette, below 8 bits).
    """
    from PIL import Image

    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)", 0
        with Image.open(path) as img:
            if img.format not in _FORMATS:
                return f"unsupported image format {img.format}", 0
            if img.mode not in _CHANNELS:
                return f"unsupported colour mode {img.mode} (use greyscale, RGB or RGBA)", 0
            img.load()
            problem = _bmp_problem(path, img.mode) if img.format == "BMP" else None
            return problem, 0 if problem else _CHANNELS[img.mode]
    except FileNotFoundError:
        return "file not found", 0
    except Exception as exc:  # Pillow raises many types for bad data
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "cannot identify image file" in text:
            return "not an image (unrecognised content)", 0
        return f"corrupt or truncated image ({text})", 0


def inspect_images(paths: list[str], threads: int = 4) -> list[tuple[str | None, int]]:
    """:func:`inspect_image` for many files, in a thread pool (decoding releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    from brevetti_pipe._util.progress import progress

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(progress(pool.map(inspect_image, paths), "Checking samples", total=len(paths), unit="image"))


def cache_name(path: str, cache_dir: str, kind: str, suffix: str, extra: str = "") -> str:
    """A cache file name that changes when the source file (path, size, mtime, change time) or
    ``extra`` changes (the change time: a rewrite that sets the mtime back, as ``touch -r`` or
    ``cp -p`` do, still makes a new name)."""
    st = os.stat(path)
    digest = hashlib.sha1(f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{extra}".encode()).hexdigest()[:20]
    folder = os.path.join(cache_dir, kind, digest[:2])
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, digest + suffix)


def write_png(array: np.ndarray, target: str) -> None:
    """Write a uint8/uint16 ``[H, W]`` or ``[H, W, C]`` array as PNG atomically (TF's encoder keeps 16 bits)."""
    import tensorflow as tf

    if array.ndim == 2:
        array = array[..., np.newaxis]
    data = tf.io.encode_png(tf.constant(array)).numpy()
    tmp = f"{target}.{uuid.uuid4().hex[:8]}.part"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, target)


def tiff_to_png(path: str, cache_dir: str) -> str:
    """Transcode a TIFF losslessly to PNG in the cache (once) and return the PNG's path."""
    from PIL import Image

    target = cache_name(path, cache_dir, "tiff", ".png")
    if os.path.exists(target):
        return target
    try:
        with Image.open(path) as img:
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                array = np.asarray(img, dtype=np.uint16)
            elif img.mode == "I":
                array = np.clip(np.asarray(img), 0, 65535).astype(np.uint16)
            elif img.mode in ("L", "RGB", "RGBA", "LA"):
                array = np.asarray(img, dtype=np.uint8)
            else:
                array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise StageError(f"Cannot decode TIFF {path}: {exc}") from None
    write_png(array, target)
    return target
