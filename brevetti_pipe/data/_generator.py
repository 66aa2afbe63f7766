"""Data layer: DataGenerator: samples table -> seeded tf.data graph with map stages chained in one fused map.

Over 400 lines on purpose: the draw, the first-epoch streaming of remote files, the cache of the
deterministic prefix and the fused map share one graph-building method and its seeds; split apart,
each part would need the others' private state.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, Union, cast

import numpy as np
import pandas as pd

from brevetti_pipe._util.category import category_label
from brevetti_pipe.data._disk_cache import FORMAT, decode_entry, encode_entry, entry_size, unusable_entries, write_entries
from brevetti_pipe.data._memory_cache import DEFAULT_MAX_BYTES, MemoryCache, auto_cache_fits, estimate_bytes
from brevetti_pipe.config._schema import data_cache_value
from brevetti_pipe.errors import ConfigError, StageError, StorageError
from brevetti_pipe.stages._base import stage_seed_id
from brevetti_pipe.storage import FileVersion, IoTools, Prefetch, is_local

if TYPE_CHECKING:
    import tensorflow as tf

    from brevetti_pipe.stages._base import Stage

__all__ = ["DataGenerator", "OutputStructure", "localize_samples"]

log = logging.getLogger(__name__)


class Sampler(Protocol):
    """What draws a generator's samples with weights (:class:`~brevetti_pipe.data.StratifiedSampler`)."""

    def weights(self, samples: pd.DataFrame) -> Any: ...


OutputStructure = Union[None, str, Sequence[str]]

#: Mixed into the job seed so that generator seeds differ from other seed users.
_SEED_SALT = 0x5EED
#: Rows released at a time to the first epoch while their files arrive.
_RELEASE = 32


def stage_seed_ids(stages: Sequence[Stage]) -> list[int]:
    """Per-stage seed ids from the stages' keys (``pipeline.<name>``, else the registry name;
    a repeated key gets ``#2``, ``#3``...), so a stage's draws do not depend on its position."""
    seen: dict[str, int] = {}
    ids = []
    for stage in stages:
        key = stage.key or stage.name or type(stage).__name__
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:
            key = f"{key}#{seen[key]}"
        ids.append(stage_seed_id(key))
    return ids


def _utf8(values: Any) -> np.ndarray:
    """Strings as UTF-8 bytes for TensorFlow (numpy's own ``astype(bytes)`` is ASCII only)."""
    return np.array([v.encode("utf-8") for v in values], dtype=object)


def _column_values(series: pd.Series) -> np.ndarray:
    """A column as a numpy array TensorFlow accepts (tuples joined with '/', None -> '')."""
    if series.dtype.kind in "biuf":
        return series.to_numpy()
    return _utf8(category_label(v) for v in series)


def _decode(value: Any) -> Any:
    """Numpy bytes -> str, recursively, for the *_numpy iterators."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.dtype.kind in "OS":
        return np.vectorize(lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else b, otypes=[object])(value)
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_decode(v) for v in value)
    return value


#: file column -> its (size, etag) columns from the listing
_VERSION_COLUMNS = {"path": ("size", "etag"), "annotation_path": ("annotation_size", "annotation_etag")}


def file_versions(samples: pd.DataFrame, column: str) -> list[FileVersion | None] | None:
    """What the listing said of each file in ``column`` (size, ETag), or None without those columns."""
    size_col, etag_col = _VERSION_COLUMNS.get(column, ("", ""))
    if size_col not in samples.columns and etag_col not in samples.columns:
        return None
    missing = pd.Series([None] * len(samples), index=samples.index, dtype=object)
    return [FileVersion(None if pd.isna(n) else int(n), None if pd.isna(e) else str(e))
            for n, e in zip(samples.get(size_col, missing), samples.get(etag_col, missing))]


def localize_samples(samples: pd.DataFrame, io: IoTools, columns: Sequence[str] = ("path", "annotation_path")) -> pd.DataFrame:
    """Samples whose file columns point at local files (remote ones fetched into ``io``'s cache,
    checked against the listing's sizes and ETags, see :func:`file_versions`).

    The original ``path`` is kept in ``url`` when it changes.
    """
    out = samples
    for column in columns:
        if column not in out.columns or not len(out):
            continue
        values = out[column]
        present = values.notna() & (values.astype(str) != "")
        if not present.any():
            continue
        versions = file_versions(out[present], column)
        local = io.localize(values[present].astype(str).tolist(), versions)
        if local != values[present].tolist():
            if column == "path" and "url" not in out.columns:
                out = out.assign(url=samples["path"])
            updated = values.astype(object).copy()
            updated[present] = local
            out = out.assign(**{column: updated})
    return out


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (some containers)
        return str(os.getuid()) if hasattr(os, "getuid") else "user"


def _prefix_runner(prefix: Sequence[Stage]) -> Any:
    """A function running the deterministic ``prefix`` stages on one element, returning only the keys they add."""
    import tensorflow as tf

    def run_prefix(x: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        out = dict(x)
        seed = tf.constant([0, 0], tf.int64)  # deterministic stages do not draw from it
        for stage in prefix:
            out = stage(out, seed=seed)
        return {k: v for k, v in out.items() if k not in x}

    return run_prefix


#: the output specs of deterministic prefixes, by the prefix's stage configs and the columns' dtypes: the
#: train and devel generators of a job (and the runs of a sweep) trace a prefix once to learn them
_PREFIX_SPECS: dict[str, Any] = {}


def _prefix_spec(prefix: Sequence[Stage], columns: dict[str, np.ndarray]) -> dict[str, Any]:
    """The TensorSpecs of the keys ``prefix`` adds to an element with ``columns`` (traced once per
    prefix config and column dtypes)."""
    import json

    import tensorflow as tf

    inputs = {k: tf.constant(v[:1]) for k, v in columns.items()}
    key = json.dumps([[type(st).__module__, type(st).__qualname__, st.get_config()] for st in prefix]
                     + [[k, t.dtype.name, t.shape[1:].as_list()] for k, t in sorted(inputs.items())], sort_keys=True)
    spec = _PREFIX_SPECS.get(key)
    if spec is None:
        spec = tf.data.Dataset.from_tensor_slices(inputs).map(
            tf.autograph.experimental.do_not_convert(_prefix_runner(prefix))).element_spec
        if len(_PREFIX_SPECS) >= 64:
            _PREFIX_SPECS.clear()
        _PREFIX_SPECS[key] = spec
    return dict(spec)


class DataGenerator:
    """Builds the tf.data graph for a samples table: draw -> map stages -> batch -> prefetch.

    Every element starts as a dict of the sample's columns (strings, numbers; ``category`` as
    ``"a/b"``); stages add keys (``img``, ``onehot``, ...). Randomness is stateless: each sample
    gets a seed from (seed, epoch, sample index), each stage one from (sample seed, stage key),
    so the output is bit-identical across processes and ``num_parallel_calls`` settings, and each
    epoch draws anew.

    Args:
        samples: the samples table (see :func:`get_image_samples`).
        batch_size: elements per batch; 0 or None for unbatched elements.
        shuffle: draw each epoch in a seeded random order. Without it, a sampler with group
            weights interleaves the groups deterministically and takes each group's samples in
            input order, cycling (brevettiai's unshuffled sampling).
        repeat: ``True`` or ``-1`` iterates epochs forever (then use ``steps_per_epoch=len(gen)``
            with Keras); an int N > 0 gives N epochs; False or 0 one epoch.
        seed: the seed (usually ``job.seed``).
        output_structure: None for the whole dict, a key for one tensor, or a tuple of keys.
        sampler: a StratifiedSampler whose weights drive the draw (with replacement).
        epoch_size: samples per epoch; default: the number of samples.
        drop_remainder: drop the last incomplete batch.
        num_parallel_calls: parallel calls of the fused map; ``"autotune"`` by default.
        prefetch: batches to prefetch; ``"autotune"`` by default.
        io: IoTools used to fetch remote files into the local cache before reading.
        shard: (number of workers, this worker's index): each epoch's draw is split by
            position so workers see disjoint samples, before any decoding happens.
        max_epoch_samples, sampling_groupby, sampling_group_weighing: brevettiai's spellings of
            ``epoch_size`` (at most this many) and of a StratifiedSampler's ``groupby`` / ``weighting``
            (brevettiai's default weighting: uniform).
        cache: cache the outputs of the deterministic prefix of the chain (the stages before
            the first random one: read, decode, ROI, resize, rescale). ``"auto"`` (default) keeps
            them in memory when their estimated size (samples x the cached tensors' fixed shapes x
            dtype size) fits the budget (``cache_max_bytes``, capped by half the available memory,
            less what other live caches hold), else streams, and logs which and why; ``True``
            keeps them in memory (shapes must be fixed); ``False`` streams. In memory, the first
            epoch runs the prefix in the parallel map and stores each sample's result; later
            reads take it from the cache. A directory path caches on local disk (reused across
            runs), filled by a parallel pre-pass. Every mode is bit-identical to the uncached pipeline.
        cache_max_bytes: the ``cache="auto"`` budget in bytes (default 1 GiB).

    Example:
        >>> gen = DataGenerator(samples, batch_size=8, shuffle=True, output_structure=("img", "onehot"))
        >>> gen = gen.map(ImagePipeline(target_size=(64, 64))).map(OneHotEncoder(classes))
        >>> model.fit(gen.get_dataset(), epochs=3)
    """

    def __init__(
        self,
        samples: pd.DataFrame,
        batch_size: int | None = 32,
        shuffle: bool = False,
        repeat: bool | int = False,
        seed: int = 0,
        output_structure: OutputStructure = None,
        sampler: Sampler | None = None,
        epoch_size: int | None = None,
        drop_remainder: bool = False,
        num_parallel_calls: int | str = "autotune",
        prefetch: int | str = "autotune",
        io: IoTools | None = None,
        stages: Sequence[Stage] = (),
        shard: tuple[int, int] | None = None,
        cache: bool | str = "auto",
        cache_max_bytes: int | None = None,
        max_epoch_samples: int | float | None = None,
        sampling_groupby: Sequence[str] | str | None = None,
        sampling_group_weighing: Any = None,
    ) -> None:
        if not isinstance(samples, pd.DataFrame):
            try:  # a column dict or a list of records, as brevettiai took them
                samples = pd.DataFrame(list(samples) if isinstance(samples, np.ndarray) else samples)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"samples must be a table (DataFrame, column dict or records); got "
                                  f"{type(samples).__name__}: {exc}") from None
        self.samples = samples.reset_index(drop=True)
        self.batch_size = batch_size
        self.shuffle = shuffle
        if isinstance(repeat, bool) or repeat is None:
            self.repeat: bool | int = bool(repeat)
        elif isinstance(repeat, (int, np.integer)) and repeat >= -1:
            self.repeat = True if repeat == -1 else int(repeat)
        else:
            raise ConfigError(f"repeat is True/-1 (forever), False/0 (one epoch) or a count N >= 1; got {repeat!r}")
        self.seed = int(seed)
        self.output_structure = output_structure
        if sampling_groupby is not None or sampling_group_weighing is not None:  # brevettiai's spelling
            from brevetti_pipe.data._weights import GroupWeights

            if sampler is not None:
                raise ConfigError("Give a sampler or brevettiai's sampling_groupby/sampling_group_weighing, not both")
            groupby = [sampling_groupby] if isinstance(sampling_groupby, str) else sampling_groupby
            sampler = GroupWeights(groupby, sampling_group_weighing or "uniform", seed=int(seed))
        self.sampler = sampler
        if max_epoch_samples is not None and not epoch_size:  # brevettiai's name: at most this many per epoch
            epoch_size = int(min(max_epoch_samples, len(self.samples))) or None
        self.epoch_size = int(epoch_size) if epoch_size else len(self.samples)
        self.drop_remainder = drop_remainder
        self.num_parallel_calls = num_parallel_calls
        self.prefetch = prefetch
        self.io = io or IoTools()
        self.stages: list[Stage] = list(stages)
        self.shard = shard
        try:
            cache = data_cache_value(cache)
        except ConfigError as exc:
            raise ConfigError(f"cache: {exc}") from None
        self.cache = os.path.abspath(cache) if isinstance(cache, str) and cache != "auto" else cache  # read as a folder already
        self.cache_max_bytes = DEFAULT_MAX_BYTES if cache_max_bytes is None else int(cache_max_bytes)
        #: (prefix stage ids, its in-memory cache or None when ``cache="auto"`` streams it)
        self._memory_cache: tuple[tuple[int, ...], MemoryCache | None] | None = None
        if shard is not None and not (shard[0] >= 1 and 0 <= shard[1] < shard[0]):
            raise ConfigError(f"shard must be (workers, index) with 0 <= index < workers; got {shard}")
        self._columns: dict[str, np.ndarray] | None = None
        self._prefetch: Prefetch | None = None
        self._prefetch_order: np.ndarray | None = None
        self._columns_key: tuple[int, ...] = ()
        self._datasets: dict[str, tf.data.Dataset] = {}

    # -- composition ---------------------------------------------------------------------
    def map(self, stage: Stage | Sequence[Stage]) -> DataGenerator:
        """A new generator with ``stage`` (or several) appended to the chain."""
        new = copy.copy(self)
        new._datasets = {}
        new._memory_cache = None  # a longer chain caches a longer prefix
        new.stages = self.stages + (list(stage) if isinstance(stage, (list, tuple)) else [cast("Stage", stage)])
        return new

    def __len__(self) -> int:
        """Batches per epoch."""
        return self._length(1)

    @property
    def in_order_once(self) -> bool:
        """Whether every pass is the same one over its samples, in order: no shuffle, repeat, sampler
        or epoch size of its own."""
        return not self.shuffle and not self.repeat and self.sampler is None and self.epoch_size == len(self.samples)

    @property
    def epochs(self) -> int:
        """Epochs one pass over the dataset yields (1 unless ``repeat`` is a count; forever: 1)."""
        return self.repeat if not isinstance(self.repeat, bool) and self.repeat > 1 else 1

    def _length(self, epochs: int, batch: bool = True, skip: int = 0) -> int:
        """Batches (elements when unbatched) in ``epochs`` epochs after skipping ``skip`` samples;
        batches run across epoch boundaries."""
        size = max(self._samples_per_epoch() * epochs - skip, 0)
        if not self.batch_size or not batch:
            return size
        if self.drop_remainder:
            return size // self.batch_size
        return math.ceil(size / self.batch_size)

    # -- graph ---------------------------------------------------------------------------
    def _prepared(self, stages: Sequence[Stage], first_order: Callable[[], np.ndarray] | None = None) -> pd.DataFrame:
        """Samples with remote files fetched to local disk and every stage's ``prepare`` applied.

        With ``first_order`` (the sample order of epoch 0) and no ``prepare`` that opens files,
        remote images are fetched in the background in that order (``self._prefetch``), so the
        first epoch decodes the first files while the rest arrive.
        """
        samples = self.samples
        self._prefetch = None
        paths = samples["path"] if "path" in samples.columns else None
        if (first_order is not None and stages and paths is not None and paths.notna().all()
                and not any(is_local(str(u)) for u in paths)
                and not any(st.prepare_reads_files(samples) for st in stages)):
            samples = localize_samples(samples, self.io, columns=("annotation_path",))
            order = first_order()
            # started once the graph is built: the fetch thread's Python work competes for the
            # GIL with tracing, which takes it hundreds of times
            pending = self.io.prefetch(paths.astype(str).tolist(), order=cast("Sequence[int]", order), start=False,
                                       versions=file_versions(samples, "path"))
            self._prefetch, self._prefetch_order = pending, order
            samples = samples.assign(**({} if "url" in samples.columns else {"url": paths}), path=pending.paths)
        else:
            samples = localize_samples(samples, self.io)
        if stages:
            # stages cache their files by content (atomically), so one folder per user serves every
            # run without a cache root: converted TIFFs and masks are reused, not copied per run
            cache_dir = self.io.cache_root or os.path.join(tempfile.gettempdir(), f"brevetti-pipe-prepare-{_user()}")
            for stage in stages:
                samples = stage.prepare(samples, cache_dir)
        return samples

    def _needed_columns(self, stages: Sequence[Stage], structure: OutputStructure) -> set[str] | None:
        """Sample columns the graph must carry: what the stages read plus the output keys (None: all)."""
        if structure is None:
            return None
        needed = {structure} if isinstance(structure, str) else set(structure)
        for stage in stages:
            keys = stage.reads()
            if keys is None:
                return None
            needed |= keys
        return needed

    def _split_prefix(self, stages: Sequence[Stage]) -> tuple[list[Stage], list[Stage]]:
        """(the deterministic prefix, the rest). Under ``cache="auto"`` (the default, not a choice the
        user made) a stage counts as deterministic only when it says so: ours, or a class that sets
        ``random = False`` itself; a user's stage that draws numbers but never declared ``random``
        would otherwise be cached with its first draws."""
        def random(st: Stage) -> bool:
            if getattr(st, "random", False):
                return True
            if self.cache != "auto" or type(st).__module__.startswith("brevetti_pipe."):
                return False
            return not any("random" in vars(c) for c in type(st).__mro__ if c.__name__ != "Stage")

        cut = next((i for i, st in enumerate(stages) if random(st)), len(stages))
        return list(stages[:cut]), list(stages[cut:])

    def _cache_dir(self, prefix: Sequence[Stage]) -> str:
        import hashlib
        import json

        root = self.cache if isinstance(self.cache, str) else os.path.join(
            self.io.cache_root or tempfile.gettempdir(), "prefix-cache")
        signature = json.dumps([FORMAT, *(st.get_config() for st in prefix)], sort_keys=True)
        return os.path.join(root, hashlib.sha1(signature.encode()).hexdigest()[:16])

    def _memory_cache_for(self, prefix: Sequence[Stage], columns: dict[str, np.ndarray]) -> MemoryCache | None:
        """The in-memory cache of ``prefix`` (made on first use, kept per prefix), or None when
        ``cache="auto"`` decides to stream (logged, with the size and the budget)."""
        key = tuple(id(st) for st in prefix)
        if self._memory_cache is not None and self._memory_cache[0] == key:
            return self._memory_cache[1]
        import tensorflow as tf

        spec = _prefix_spec(prefix, columns)
        if self.cache is True and estimate_bytes(spec, 1) is None:
            raise StageError("cache=True needs fixed output shapes from the cached stages (set target_size); got "
                             f"{ {k: str(s.shape) for k, s in spec.items()} }")
        cache = None
        if self.cache is True or auto_cache_fits(spec, len(self.samples), self.cache_max_bytes,
                                                 f"{len(self.samples)} samples"):
            cache = MemoryCache(spec, len(self.samples))
        self._memory_cache = (key, cache)
        return cache

    def _fill_cache(self, prefix: Sequence[Stage], columns: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Run the deterministic prefix once per sample and store its new outputs as tensor files.

        Returns the columns with ``_cache_<key>`` file paths added, and each cached key's TensorSpec.
        """
        import hashlib

        import tensorflow as tf

        folder = self._cache_dir(prefix)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:  # a file in the way, no permission, a read-only file system
            raise StorageError(f"data.cache: cannot create the cache folder {folder} ({exc.strerror or exc}); set "
                               "data.cache to a folder that can be written") from None
        # an entry is one file version *and* every other column the prefix reads (a category map, a
        # mask rasterised from a changed annotation): what changes the output changes the entry
        reads: set[str] = set()
        for st in prefix:
            read = st.reads()
            reads = set(columns) if read is None else reads | read
        # columns a stage's prepare() adds (a mask PNG under the job's scratch cache) name files of this
        # run only: their sources' versions (the annotation's etag) and the stage's parameters key them
        listed = set(self.samples.columns)
        keyed = ["path", "etag"] + sorted(k for k in set(columns) & listed & reads - {"path", "etag"})
        keyed += sorted(k for k in columns if k.endswith("_etag") and k not in keyed)
        ident = [hashlib.sha1(b"|".join(parts)).hexdigest()[:20] for parts in zip(
            *(columns[k] if columns[k].dtype.kind in "OS" else _utf8(columns[k].astype(str))
              for k in keyed if k in columns))]
        inputs = {k: tf.constant(v) for k, v in columns.items()}
        run_prefix = _prefix_runner(prefix)

        spec = tf.data.Dataset.from_tensor_slices(inputs).map(run_prefix).element_spec
        keys = sorted(spec)
        paths = {k: _utf8(os.path.join(folder, f"{i}.{k}.tensor") for i in ident) for k in keys}
        todo = [False] * len(ident)
        for k in keys:
            unusable, damaged = unusable_entries([p.decode() for p in paths[k]], entry_size(spec[k]))
            todo = [a or b for a, b in zip(todo, unusable)]
            if damaged:
                log.warning("data.cache: %d entr%s of %r in %s had the wrong size (cut short, or written over); written again",
                            damaged, "y" if damaged == 1 else "ies", k, folder)
        missing = [i for i, again in enumerate(todo) if again]
        if missing:
            subset = {k: tf.gather(v, missing) for k, v in inputs.items()}
            targets = {k: tf.constant(paths[k][missing]) for k in keys}

            def encode(x: dict[str, tf.Tensor], target: dict[str, tf.Tensor]) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
                out = run_prefix(x)
                return {k: encode_entry(out[k], target[k]) for k in keys}, target

            # the prefix runs in the parallel map; each entry is written as it comes and published at once (a
            # stopped fill keeps what it wrote), by threads this fill waits for: no write outlives a failure
            fill = tf.data.Dataset.from_tensor_slices((subset, targets)).map(
                tf.autograph.experimental.do_not_convert(encode), num_parallel_calls=self._parallel(), deterministic=False)
            write_entries((target[k].numpy().decode(), entries[k].numpy()) for entries, target in fill for k in keys)
        cached = dict(columns)
        cached.update({f"_cache_{k}": paths[k] for k in keys})
        return cached, {k: spec[k] for k in keys}

    def _column_arrays(self, stages: Sequence[Stage] = (), first_order: Callable[[], np.ndarray] | None = None) -> dict[str, np.ndarray]:
        key = tuple(id(s) for s in stages)
        if self._columns is None or self._columns_key != key:
            samples = self._prepared(stages, first_order)
            self._columns = {str(c): _column_values(samples[c]) for c in samples.columns}
            self._columns_key = key
        return self._columns

    def _parallel(self) -> int:
        import tensorflow as tf

        if self.num_parallel_calls in ("autotune", None):
            return tf.data.AUTOTUNE
        return int(self.num_parallel_calls)

    def _structure(self, x: dict[str, tf.Tensor], structure: OutputStructure) -> Any:
        if structure is None:
            return x
        keys = [structure] if isinstance(structure, str) else list(structure)
        missing = [k for k in keys if k not in x]
        if missing:
            raise StageError(
                f"output_structure asks for {missing}, but the elements have keys {sorted(x)}; "
                "add the stage that produces them or fix output_structure."
            )
        return x[structure] if isinstance(structure, str) else tuple(x[k] for k in keys)

    def _samples_per_epoch(self) -> int:
        """Samples this worker draws per epoch (its shard of ``epoch_size``)."""
        if self.shard is not None and self.shard[0] > 1:
            return len(range(self.shard[1], self.epoch_size, self.shard[0]))
        return self.epoch_size

    def _build(self, stages: Sequence[Stage], structure: OutputStructure, batch: bool = True,
               skip: int = 0) -> tf.data.Dataset:
        import tensorflow as tf

        if self.samples.empty:
            raise StageError("DataGenerator has no samples to draw from")
        n = len(self.samples)
        m = self.epoch_size
        weights = self.sampler.weights(self.samples) if self.sampler is not None else None
        ordered = self._ordered_draw() if weights is not None and not self.shuffle else None
        base_seed = tf.constant([self.seed, _SEED_SALT], dtype=tf.int64)
        fold_in = tf.random.experimental.stateless_fold_in

        def index_of(epoch: tf.Tensor) -> tf.Tensor:
            """The sample rows of ``epoch``, in order (this worker's share when sharded)."""
            epoch_seed = fold_in(base_seed, epoch)
            if weights is not None and not self.shuffle and ordered is not None:
                index = tf.numpy_function(ordered, [epoch], tf.int64, stateful=False)
                index.set_shape([m])
            elif weights is not None:
                logits = tf.math.log(tf.constant(weights, dtype=tf.float64))[tf.newaxis]
                index = tf.random.stateless_categorical(logits, m, seed=epoch_seed, dtype=tf.int64)[0]
            elif self.shuffle:
                order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=epoch_seed)
                index = tf.tile(order, [-(-m // n)])[:m]
            else:
                index = tf.tile(tf.range(n, dtype=tf.int64), [-(-m // n)])[:m]
            if self.shard is not None and self.shard[0] > 1:
                index = index[self.shard[1]::self.shard[0]]
            return index

        stage_ids = dict(zip(map(id, stages), stage_seed_ids(stages)))
        start_epoch, offset = divmod(skip, self._samples_per_epoch())
        on_disk = bool(self.cache) and self.cache not in (True, "auto")
        streamable = not on_disk and tf.executing_eagerly() and skip == 0
        arrays = self._column_arrays(stages, (lambda: index_of(tf.constant(0, tf.int64)).numpy()) if streamable else None)
        cached_specs: dict[str, Any] = {}
        memory: MemoryCache | None = None
        prefix, rest = self._split_prefix(stages)
        if on_disk and prefix:
            arrays, cached_specs = self._fill_cache(prefix, arrays)
            stages = rest
        elif self.cache is True and prefix:
            memory = self._memory_cache_for(prefix, arrays)
        elif self.cache == "auto" and prefix:
            # a dataset built inside a tf.function or a tf.distribute scope would get a graph-local
            # or a distributed variable: auto streams there
            if tf.executing_eagerly() and not tf.distribute.has_strategy():
                memory = self._memory_cache_for(prefix, arrays)
            elif self._memory_cache is None:
                self._memory_cache = ((), None)
                log.info("data.cache=auto: streaming %d samples: the dataset is built inside a tf.function or a "
                         "tf.distribute strategy scope", len(self.samples))
        run_prefix = _prefix_runner(prefix)
        # the prefix reads its columns only when a sample is not cached yet
        needed = self._needed_columns(stages if memory is None else [*prefix, *rest], structure)
        columns = {k: tf.constant(v) for k, v in arrays.items() if needed is None or k in needed or k.startswith("_cache_")}

        def rows_of(epoch: tf.Tensor, index: tf.Tensor) -> tf.data.Dataset:
            """(epoch seed, row) elements: the epoch is folded into the seed once here, not per sample."""
            seeds = tf.tile(fold_in(base_seed, epoch)[tf.newaxis], [tf.shape(index)[0], 1])
            return tf.data.Dataset.from_tensor_slices((seeds, index))

        def epoch_indices(epoch: tf.Tensor) -> tf.data.Dataset:
            return rows_of(epoch, index_of(epoch))

        def element(epoch_seed: tf.Tensor, index: tf.Tensor) -> Any:
            x = {k: tf.gather(col, index) for k, col in columns.items() if not k.startswith("_cache_")}
            for key, spec in cached_specs.items():
                path = tf.gather(columns[f"_cache_{key}"], index)
                value = decode_entry(tf.io.read_file(path), path, spec.dtype)
                x[key] = tf.ensure_shape(value, spec.shape)
            if memory is not None:
                x.update(memory.read(x, index, run_prefix))
            sample_seed = fold_in(epoch_seed, index)
            for stage in (rest if memory is not None else stages):
                x = stage(x, seed=fold_in(sample_seed, stage_ids[id(stage)]))
            return self._structure(x, structure)

        # Stages are pure TF ops with no Python control flow on tensors: skip autograph (faster
        # tracing, and a stage's own error reaches the user unwrapped).
        epoch_indices = tf.autograph.experimental.do_not_convert(epoch_indices)
        element = tf.autograph.experimental.do_not_convert(element)
        pending = self._prefetch
        if pending is not None and skip > 0 and not pending.done:
            pending.start()  # a later epoch first: take every file before reading any
            pending.join()
            pending = None
        if pending is not None and pending.done:
            pending.join()  # a failed background fetch is raised here, by file name
            pending = None
        if pending is not None:
            # epoch 0 released as its files arrive, in the order they are fetched: identical elements
            assert self._prefetch_order is not None
            ds = self._arriving_first_epoch(pending, self._prefetch_order, lambda part: rows_of(tf.constant(0, tf.int64), part))
            if self.repeat is True:
                ds = ds.concatenate(tf.data.Dataset.counter(start=1, dtype=tf.int64).flat_map(epoch_indices))
            elif self.epochs > 1:
                ds = ds.concatenate(tf.data.Dataset.range(1, self.epochs, output_type=tf.int64).flat_map(epoch_indices))
        else:
            epochs = (tf.data.Dataset.counter(start=start_epoch, dtype=tf.int64) if self.repeat is True
                      else tf.data.Dataset.range(start_epoch, max(self.epochs, start_epoch), output_type=tf.int64))
            ds = epochs.flat_map(epoch_indices)
            if offset:
                ds = ds.skip(offset)
        ds = ds.map(element, num_parallel_calls=self._parallel(), deterministic=True)
        if self.batch_size and batch:
            ds = ds.batch(self.batch_size, drop_remainder=self.drop_remainder)
        cardinality = tf.data.INFINITE_CARDINALITY if self.repeat is True else self._length(self.epochs, batch, skip)
        ds = ds.apply(tf.data.experimental.assert_cardinality(cardinality))
        prefetch = tf.data.AUTOTUNE if self.prefetch in ("autotune", None) else int(self.prefetch)
        if prefetch:
            ds = ds.prefetch(prefetch)
        options = tf.data.Options()
        options.deterministic = True
        # sharding across workers is explicit (``shard``), by sample and before decoding
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        if memory is not None:  # the cache's variables are state an iterator checkpoint need not hold: a
            # restored iterator refills what it reads (the prefix is deterministic)
            options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
        ds = ds.with_options(options)
        if pending is not None:
            pending.start()
        return ds

    @staticmethod
    def _arriving_first_epoch(
        pending: Prefetch, order: np.ndarray, rows_of: Callable[[tf.Tensor], tf.data.Dataset]
    ) -> tf.data.Dataset:
        """Epoch 0's elements (``rows_of`` each part of ``order``), released a few rows at a time
        once their files are local."""
        import tensorflow as tf

        parts = [order[s:s + _RELEASE] for s in range(0, len(order), _RELEASE)]

        def release(k: np.ndarray) -> np.ndarray:
            part = parts[int(k)]
            for i in part:
                pending.wait(int(i))
            return part

        def released(k: tf.Tensor) -> tf.data.Dataset:
            part = tf.numpy_function(release, [k], tf.int64, stateful=True)
            part.set_shape([None])
            return rows_of(part)

        return tf.data.Dataset.range(len(parts)).flat_map(tf.autograph.experimental.do_not_convert(released))

    # -- public API ----------------------------------------------------------------------
    _DEFAULT = object()

    def get_samples(self, structure: Any = None, batch: bool = True) -> tf.data.Dataset:
        """The drawn samples, batched (unless ``batch=False``), without map stages: every column
        by default (as brevettiai), or ``structure`` (a key, a tuple of keys, or "__default__" for
        ``output_structure``)."""
        structure, batch = self._structure_args(structure, batch, None)
        return self._build([], structure, batch)

    def get_dataset(self, structure: Any = _DEFAULT, batch: bool = True, *, skip: int = 0) -> tf.data.Dataset:
        """The drawn samples through every map stage, batched (unless ``batch=False``) and prefetched;
        ``structure`` defaults to ``output_structure`` (None: the whole element dict). ``skip``: start
        after that many samples of this worker's stream (a training resumed after ``k`` steps of ``b``
        samples passes ``k * b`` and draws exactly what the uninterrupted one draws from there,
        without decoding the skipped samples).

        Built (traced) once per output structure and settings: a run step asking for the
        element spec, then fitting, then predicting gets the same graph, not three traces of it.
        """
        structure, batch = self._structure_args(structure, batch, self._DEFAULT)
        key = repr((structure, batch, int(skip), [id(s) for s in self.stages], id(self.samples), len(self.samples),
                    self.batch_size, self.shuffle, self.repeat, self.seed, self.sampler, self.epoch_size,
                    self.drop_remainder, self.num_parallel_calls, self.prefetch, self.shard, self.cache))
        if key not in self._datasets:
            self._datasets[key] = self._build(self.stages, structure, batch, int(skip))
        return self._datasets[key]

    def _structure_args(self, structure: Any, batch: bool, default: Any) -> tuple[Any, bool]:
        if isinstance(structure, bool):  # brevettiai's positional order: get_samples(batch, structure)
            structure, batch = default, structure
        if structure is self._DEFAULT or (isinstance(structure, str) and structure == "__default__"):
            structure = self.output_structure
        return structure, batch

    def get_samples_numpy(self, structure: Any = None, batch: bool = True) -> Iterator[Any]:
        """:meth:`get_samples` as numpy values (strings decoded to str)."""
        return map(_decode, self.get_samples(structure, batch).as_numpy_iterator())

    def get_dataset_numpy(self, structure: Any = _DEFAULT, batch: bool = True) -> Iterator[Any]:
        """:meth:`get_dataset` as numpy values (strings decoded to str)."""
        return map(_decode, self.get_dataset(structure, batch).as_numpy_iterator())

    def _ordered_draw(self) -> Callable[[Any], np.ndarray] | None:
        """Epoch -> sample rows for an unshuffled weighted draw: position k of the endless stream picks
        group ``#{cumulative weight < (k + 1/2) * min(weight) / 2 mod 1}`` (brevettiai's selector,
        sampled at the middle of each step so that the groups come in proportion to their weights)
        and takes that group's next sample in input order, cycling. None without group weights."""
        groups = getattr(self.sampler, "group_draw", None)
        drawn = groups(self.samples) if groups is not None else None
        if drawn is None:
            return None
        codes, group_weights = drawn
        members = [np.flatnonzero(codes == g) for g in range(len(group_weights))]
        cumulative = np.cumsum(group_weights)
        step = group_weights[group_weights > 0].min() / 2
        m = self.epoch_size

        def rows(epoch: Any) -> np.ndarray:
            k = np.arange((int(epoch) + 1) * m, dtype=np.float64)
            state = np.mod((k + 0.5) * step, 1.0)
            chosen = np.minimum(np.searchsorted(cumulative, state, side="left"), len(members) - 1)
            occurrence = np.zeros(len(chosen), dtype=np.int64)
            for g in range(len(members)):
                hit = chosen == g
                occurrence[hit] = np.arange(int(hit.sum()))
            sizes = np.array([len(x) for x in members])
            tail = slice(int(epoch) * m, None)
            return np.array([members[g][o % sizes[g]] for g, o in zip(chosen[tail], occurrence[tail])], dtype=np.int64)

        return rows

    def __iter__(self) -> Iterator[Any]:
        return self.get_dataset_numpy()
