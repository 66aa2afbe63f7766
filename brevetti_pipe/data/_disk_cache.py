"""The files of ``data.cache=<dir>``: one serialized tensor per sample and key, with a checksum trailer.

An entry is ``serialize_tensor(value)`` followed by ``serialize_tensor(fingerprint64(those bytes, the entry's
file name))``. The name names the sample (its path, version and the columns the prefix reads) and the key, so
an entry copied over another of the same shape fails its check too. A fill stats every entry and writes again
the ones whose size their spec rules out (a file cut short by a crash before its data reached the disk: not the
size a fixed shape gives, or below the smallest entry a variable shape allows, such as an empty file); each is
written under a temporary name and renamed into place when done (a failed write is one line naming the
folder); a read checks the trailer, so a damaged entry fails its job naming the file instead of feeding wrong
numbers to training or failing with TensorFlow's "Could not parse 'serialized' as TensorProto".
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import os
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from brevetti_pipe.errors import StorageError

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["FORMAT", "DAMAGED", "decode_entry", "encode_entry", "entry_name", "entry_size", "unusable_entries",
           "write_entries"]

#: part of every cache folder's name: entries written in another format are never read
FORMAT = "entry-v3"

#: the message of a read that finds a damaged entry (``brevetti_pipe.errors.describe`` makes it the job's one line)
DAMAGED = "brevetti_pipe.errors.DatasetError: a data.cache entry is damaged (its checksum does not match); delete it, or its folder, and run again: "


def _trailer(body: tf.Tensor, name: tf.Tensor) -> tf.Tensor:
    import tensorflow as tf

    # one row of two strings: the body and the name are fingerprinted apart and combined (no copy, no framing)
    return tf.io.serialize_tensor(tf.fingerprint(tf.stack([body, name])[tf.newaxis])[0])


@functools.lru_cache(maxsize=1)
def _trailer_length() -> int:
    import tensorflow as tf

    with tf.init_scope():  # eager, also when first asked inside a dataset function
        return len(_trailer(tf.constant(b""), tf.constant(b"")).numpy())


def entry_name(path: tf.Tensor) -> tf.Tensor:
    """The file name of the entry at ``path`` (what its checksum is bound to)."""
    import tensorflow as tf

    return tf.strings.regex_replace(path, r"^.*[/\\]", "")


def encode_entry(value: tf.Tensor, path: tf.Tensor) -> tf.Tensor:
    """The bytes of the entry holding ``value``, to be written to ``path``."""
    import tensorflow as tf

    body = tf.io.serialize_tensor(value)
    return tf.strings.join([body, _trailer(body, entry_name(path))])


def decode_entry(raw: tf.Tensor, path: tf.Tensor, dtype: Any) -> tf.Tensor:
    """The tensor an entry's bytes ``raw`` (read from ``path``) hold; a failed check raises, naming ``path``."""
    import tensorflow as tf

    n = tf.strings.length(raw) - _trailer_length()  # the body's length; negative when the file is shorter than a trailer
    split = tf.maximum(n, 0)
    body = tf.strings.substr(raw, 0, split)
    trailer = _trailer(body, entry_name(path))
    intact = tf.logical_and(n >= 0, tf.equal(tf.strings.substr(raw, split, _trailer_length()), trailer))
    check = tf.debugging.Assert(intact, [tf.strings.join([DAMAGED, path])])
    with tf.control_dependencies([check]):
        return tf.io.parse_tensor(body, dtype)


def entry_size(spec: tf.TensorSpec) -> tuple[int, int | None]:
    """Bytes of an entry holding a tensor of ``spec``: ``(fewest, exact)``. ``exact`` is None when the spec
    does not fix the size (a string, an unknown dimension); ``fewest`` is then the size of its smallest
    entry (every unknown dimension 0, every string empty), which a valid entry never goes below."""
    import tensorflow as tf

    if spec.shape.rank is None:
        return _trailer_length(), None
    with tf.init_scope():
        zeros = tf.zeros([0 if d is None else d for d in spec.shape.as_list()], spec.dtype)
        smallest = len(encode_entry(zeros, tf.constant("")).numpy())
    exact = spec.shape.is_fully_defined() and spec.dtype != tf.string
    return smallest, smallest if exact else None


def unusable_entries(paths: Sequence[str], size: tuple[int, int | None]) -> tuple[list[bool], int]:
    """Per entry, whether it must be written: missing, or a size ``size`` (:func:`entry_size`) rules out
    (not the exact size; below the fewest bytes); and how many of those exist (damaged)."""
    fewest, exact = size
    out, damaged = [], 0
    for path in paths:
        try:
            found = os.stat(path).st_size
        except FileNotFoundError:
            out.append(True)
            continue
        bad = found != exact if exact is not None else found < fewest
        damaged += bad
        out.append(bad)
    return out, damaged


def write_entry(path: str, data: bytes) -> None:
    """Write one entry under a temporary name of this writer, then rename it into place: another
    process filling the same folder, or a file listed twice, never sees a half-written entry.

    Raises:
        StorageError: naming the folder and the reason (a full disk, a read-only file system, no permission).
    """
    tmp = f"{path}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException as exc:  # Ctrl-C too: no temporary file is left behind
        try:
            os.remove(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise StorageError(f"data.cache: cannot write the cache folder {os.path.dirname(path)} "
                               f"({exc.strerror or exc}); free space, allow writing there, or set data.cache to "
                               "another folder") from None
        raise


def write_entries(entries: Iterable[tuple[str, bytes]], threads: int = 4) -> None:
    """:func:`write_entry` of each ``(path, bytes)``, on ``threads`` threads (file writes release the GIL),
    at most a few dozen entries held in memory; returns when every write has ended. The first failure
    stops the rest and is raised."""
    with concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="data-cache-write") as pool:
        pending: collections.deque[concurrent.futures.Future[None]] = collections.deque()
        try:
            for path, data in entries:
                pending.append(pool.submit(write_entry, path, data))
                while len(pending) > 8 * threads or (pending and pending[0].done()):
                    pending.popleft().result()
            while pending:
                pending.popleft().result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # the writes under way end (each removes its own .part)
            raise
