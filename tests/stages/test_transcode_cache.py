"""The prepared-file cache (masks rasterised from annotations, TIFFs as PNG): a new source version is a new name."""

from __future__ import annotations

import os

from brevetti_pipe.stages._transcode import cache_name


def test_a_source_rewritten_with_its_old_size_and_modification_time_gets_a_new_name(tmp_path):
    source = tmp_path / "good_0000.bmp.json"
    source.write_text('{"label": "cap"}')
    first = cache_name(str(source), str(tmp_path / "cache"), "masks", ".png")
    assert cache_name(str(source), str(tmp_path / "cache"), "masks", ".png") == first  # untouched: the same entry
    before = source.stat()
    after = before
    for _ in range(10_000):  # once more while the file system's clock has not ticked since
        if after.st_ctime_ns != before.st_ctime_ns:
            break
        with open(source, "r+") as fh:  # in place, the same length, then the old mtime back (touch -r, cp -p)
            fh.write('{"label": "cup"}')
        os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = source.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    assert cache_name(str(source), str(tmp_path / "cache"), "masks", ".png") != first
