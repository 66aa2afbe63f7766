"""Data layer: the in-memory cache of the deterministic prefix of a DataGenerator's stage chain, and
the ``cache="auto"`` decision (estimated size against a budget shared by the process's caches)."""

from __future__ import annotations

import logging
import math
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["DEFAULT_MAX_BYTES", "RAM_FRACTION", "MemoryCache", "auto_cache_fits", "available_memory", "cached_bytes",
           "estimate_bytes", "format_bytes"]

log = logging.getLogger(__name__)

#: ``data.cache_max_bytes`` by default: 1 GiB.
DEFAULT_MAX_BYTES = 1 << 30
#: ``cache="auto"`` never takes more than this share of the memory available when it decides.
RAM_FRACTION = 0.5

_lock = threading.Lock()
#: bytes held by the in-memory caches alive in this process (id -> bytes), released when a cache is collected
_held: dict[int, int] = {}


def cached_bytes() -> int:
    """Bytes held by the in-memory prefix caches alive in this process."""
    with _lock:
        return sum(_held.values())


def _release(ident: int) -> None:
    with _lock:
        _held.pop(ident, None)


def _cgroup_room(root: str = "/sys/fs/cgroup") -> int | None:
    """Bytes left under the container's memory limit (cgroup v2 ``memory.max`` - ``memory.current``, or
    v1 ``memory.limit_in_bytes`` - ``memory.usage_in_bytes``); None without a limit."""
    for limit_file, usage_file in ((f"{root}/memory.max", f"{root}/memory.current"),
                                   (f"{root}/memory/memory.limit_in_bytes", f"{root}/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file, encoding="ascii") as f:  # the kernel's own files, not a dataset path
                limit = f.read().strip()
            with open(usage_file, encoding="ascii") as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:  # "max" (v2) or a huge number (v1): no limit
            return max(int(limit) - usage, 0)
    return None


def available_memory() -> int | None:
    """Memory the process could still take without swapping: ``MemAvailable`` of ``/proc/meminfo``
    (free plus reclaimable page cache, what psutil reports), else free pages from ``os.sysconf``,
    and no more than is left under a container's memory limit (cgroup); None when nothing says."""
    host = _host_available()
    room = _cgroup_room()
    return room if host is None else host if room is None else min(host, room)


def _host_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:  # not a dataset path: the kernel's own table
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def estimate_bytes(spec: Mapping[str, Any], samples: int) -> int | None:
    """Bytes of ``samples`` rows of the tensors in ``spec`` (TensorSpecs); None when a shape is not
    fixed or a dtype has no fixed size (strings)."""
    total = 0
    for s in spec.values():
        if not s.shape.is_fully_defined() or not (s.dtype.is_numeric or s.dtype.is_bool):
            return None
        total += samples * math.prod(s.shape.as_list()) * s.dtype.size
    return total


def auto_cache_fits(spec: Mapping[str, Any], samples: int, max_bytes: int | None, what: str) -> bool:
    """``cache="auto"``: whether ``samples`` rows of ``spec`` fit the budget, logged in one line.

    The budget is ``max_bytes`` (default :data:`DEFAULT_MAX_BYTES`), capped by :data:`RAM_FRACTION`
    of the available memory, less what the other in-memory caches of this process hold.
    """
    size = estimate_bytes(spec, samples)
    limit = DEFAULT_MAX_BYTES if max_bytes is None else int(max_bytes)
    available = available_memory()
    ram_cap = None if available is None else int(available * RAM_FRACTION)
    budget = limit if ram_cap is None else min(limit, ram_cap)
    held = cached_bytes()
    if size is not None and held and size > budget - held:
        import gc

        gc.collect()  # caches of finished jobs (a sweep in one process) may wait in reference cycles
        held = cached_bytes()
    where = (f"budget {format_bytes(budget)}: data.cache_max_bytes {format_bytes(limit)}"
             + ("" if ram_cap is None else f", {RAM_FRACTION:.0%} of {format_bytes(available or 0)} available memory")
             + (f", {format_bytes(held)} held by other caches" if held else ""))
    if size is None:
        shapes = {k: str(s.shape) for k, s in spec.items()}
        log.info("data.cache=auto: streaming %s: the cached stages' output has no fixed size (%s; set target_size "
                 "to cache it)", what, shapes)
        return False
    if size > budget - held:
        log.info("data.cache=auto: streaming %s: its decoded prefix needs %s, over the %s", what, format_bytes(size),
                 where)
        return False
    log.info("data.cache=auto: caching %s in memory: %s (%s)", what, format_bytes(size), where)
    return True


class MemoryCache:
    """The outputs of the deterministic prefix for every sample row, kept in memory (one ``tf.Variable``
    per key, row = sample) and filled as the samples are first read: the first epoch runs the prefix
    and stores each result; from then on a sample's tensors come from the cache. A sample computed
    twice at once stores the same values twice, so the elements never depend on the timing.

    Args:
        spec: the prefix's new keys -> fixed-shape TensorSpecs.
        samples: rows.
    """

    def __init__(self, spec: Mapping[str, Any], samples: int) -> None:
        import tensorflow as tf

        self.nbytes = estimate_bytes(spec, samples) or 0
        self.values = {k: tf.Variable(tf.zeros((samples, *s.shape), s.dtype), trainable=False, name=f"prefix_cache_{k}")
                       for k, s in sorted(spec.items())}
        self.filled = tf.Variable(tf.zeros((samples,), tf.bool), trainable=False, name="prefix_cache_filled")
        with _lock:
            _held[id(self)] = self.nbytes
        weakref.finalize(self, _release, id(self))

    def read(self, x: dict[str, tf.Tensor], index: tf.Tensor,
             run_prefix: Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]]) -> dict[str, tf.Tensor]:
        """The prefix's new keys for the sample at row ``index`` (``x``: its columns): from the cache,
        or computed by ``run_prefix`` and stored."""
        import tensorflow as tf

        def cached() -> dict[str, tf.Tensor]:
            return {k: tf.gather(v, index) for k, v in self.values.items()}  # a fresh, aligned buffer

        def compute() -> dict[str, tf.Tensor]:
            out = run_prefix(x)
            at = tf.reshape(index, [1, 1])
            stored = [v.scatter_nd_update(at, out[k][tf.newaxis]) for k, v in self.values.items()]
            with tf.control_dependencies(stored):  # the flag only once the values are in
                flagged = self.filled.scatter_nd_update(at, tf.constant([True]))
            with tf.control_dependencies([flagged]):
                return {k: tf.identity(out[k]) for k in self.values}

        return tf.cond(tf.gather(self.filled, index), cached, compute)

    def complete(self) -> bool:
        """Every row filled."""
        return bool(self.filled.numpy().all())
