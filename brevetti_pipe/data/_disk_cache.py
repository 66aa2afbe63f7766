"""The files of ``data.cache=<dir>``: one serialized tensor per sample and key, with a checksum trailer.

An entry is ``serialize_tensor(value)`` followed by ``serialize_tensor(fingerprint64(those bytes))``. A
fill stats every entry and writes again the ones whose size is not the size their spec gives (a file cut
short by a full disk or a crash before the data reached it); a read checks the trailer, so a damaged
entry fails its job naming the file instead of feeding wrong numbers to training or failing with
TensorFlow's "Could not parse 'serialized' as TensorProto".
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["FORMAT", "DAMAGED", "decode_entry", "encode_entry", "entry_size", "unusable_entries"]

#: part of every cache folder's name: entries written in another format are never read
FORMAT = "entry-v2"

#: the message of a read that finds a damaged entry (``brevetti_pipe.errors.describe`` makes it the job's one line)
DAMAGED = "brevetti_pipe.errors.DatasetError: a data.cache entry is damaged (its checksum does not match); delete it, or its folder, and run again: "


def _trailer(body: tf.Tensor) -> tf.Tensor:
    import tensorflow as tf

    return tf.io.serialize_tensor(tf.fingerprint(body[tf.newaxis])[0])


@functools.lru_cache(maxsize=1)
def _trailer_length() -> int:
    import tensorflow as tf

    with tf.init_scope():  # eager, also when first asked inside a dataset function
        return len(_trailer(tf.constant(b"")).numpy())


def encode_entry(value: tf.Tensor) -> tf.Tensor:
    """The bytes of the entry holding ``value``."""
    import tensorflow as tf

    body = tf.io.serialize_tensor(value)
    return tf.strings.join([body, _trailer(body)])


def decode_entry(raw: tf.Tensor, path: tf.Tensor, dtype: Any) -> tf.Tensor:
    """The tensor an entry's bytes ``raw`` (read from ``path``) hold; a failed check raises, naming ``path``."""
    import tensorflow as tf

    n = tf.strings.length(raw) - _trailer_length()
    body = tf.strings.substr(raw, 0, tf.maximum(n, 0))
    intact = tf.logical_and(n >= 0, tf.equal(tf.strings.substr(raw, tf.maximum(n, 0), _trailer_length()), _trailer(body)))
    check = tf.debugging.Assert(intact, [tf.strings.join([DAMAGED, path])])
    with tf.control_dependencies([check]):
        return tf.io.parse_tensor(body, dtype)


def entry_size(spec: tf.TensorSpec) -> int | None:
    """Bytes of an entry holding a tensor of ``spec``; None when the spec does not fix it (a string, an
    unknown dimension)."""
    import tensorflow as tf

    if not spec.shape.is_fully_defined() or spec.dtype == tf.string:
        return None
    with tf.init_scope():
        return len(encode_entry(tf.zeros(spec.shape, spec.dtype)).numpy())


def unusable_entries(paths: Sequence[str], size: int | None) -> tuple[list[bool], int]:
    """Per entry, whether it must be written (missing, or not ``size`` bytes long); and how many of
    those exist (damaged)."""
    out, damaged = [], 0
    for path in paths:
        try:
            found = os.stat(path).st_size
        except FileNotFoundError:
            out.append(True)
            continue
        bad = size is not None and found != size
        damaged += bad
        out.append(bad)
    return out, damaged
