"""http(s) datasets: a folder served with HTML directory listings (Python's http.server, nginx's
autoindex) is listed and read like any other store; a host name that does not resolve fails at once."""

from __future__ import annotations

import hashlib
import shutil
import time

import numpy as np
import pytest

from brevetti_pipe.data import DataGenerator, get_image_samples
from brevetti_pipe.errors import DatasetError, StorageError
from brevetti_pipe.stages import ImagePipeline
from brevetti_pipe.storage import IoTools
from tests.servers import http_folder_server


def _images(samples, io):
    gen = DataGenerator(samples, batch_size=8, io=io, output_structure="img").map(ImagePipeline(target_size=(16, 16)))
    return np.concatenate(list(gen.get_dataset_numpy()))


def test_an_http_dataset_is_listed_and_read_like_the_same_folder_on_disk(tiny_vials, tmp_path):
    local = get_image_samples(str(tiny_vials))
    with http_folder_server(tiny_vials.parent) as base:
        url = f"{base}/{tiny_vials.name}/"
        io = IoTools(cache_root=str(tmp_path / "cache"))
        remote = get_image_samples(url, io=io)
        assert [p.count("://") for p in remote["path"]] == [1] * len(local), remote["path"].iloc[0]
        assert remote["path"].str.startswith(url).all()
        assert [p[len(url):] for p in remote["path"]] == [str(p)[len(str(tiny_vials)) + 1:] for p in local["path"]]
        assert remote["category"].tolist() == local["category"].tolist()
        assert remote["etag"].notna().all()
        np.testing.assert_array_equal(_images(remote, io), _images(local, IoTools()))
        assert not IoTools().exists(f"{url}good/missing.bmp")  # a 404 is "absent", not an error


def test_http_annotations_are_versioned_by_their_content(tiny_vials_seg, tmp_path):
    # an http listing gives no ETag and no modification time: a changed annotation must still be a new version
    data = tmp_path / "served" / "seg"
    shutil.copytree(tiny_vials_seg, data)
    with http_folder_server(data.parent) as base:
        url = f"{base}/seg/"
        first = get_image_samples(url, io=IoTools())
        annotated = first[first["annotation_path"].notna()]
        assert len(annotated) == len(first)
        expected = [hashlib.md5((data / p[len(url):]).read_bytes()).hexdigest() for p in annotated["annotation_path"]]
        assert annotated["annotation_etag"].tolist() == expected
        changed = data / annotated["annotation_path"].iloc[0][len(url):]
        changed.write_text(changed.read_text().replace('"cap"', '"cork"'))
        again = get_image_samples(url, io=IoTools())
        assert (again["annotation_etag"] != first["annotation_etag"]).tolist() == [True] + [False] * (len(first) - 1)


def test_a_host_that_does_not_resolve_fails_at_once_with_the_url_masked():
    url = "https://reader:hunter2@no-such-host.invalid/datasets/vials/"
    started = time.monotonic()
    with pytest.raises(StorageError) as caught:
        IoTools().read_file(url + "good/a.bmp")
    message = str(caught.value)
    assert "no-such-host.invalid" in message and "does not resolve" in message, message
    assert "hunter2" not in message and "\n" not in message
    with pytest.raises(StorageError, match="does not resolve"):
        IoTools().exists(url)  # fsspec's http filesystem alone would answer False
    with pytest.raises(DatasetError, match=r"Cannot list dataset 'vials' at https://\*\*\*@no-such-host\.invalid.*"
                                           r"does not resolve") as listed:
        get_image_samples(url)
    assert "hunter2" not in str(listed.value)
    assert time.monotonic() - started < 5, "a permanent DNS failure is not retried"


def test_an_http_folder_given_to_predict_lists_its_image_urls_once_schemed(tiny_vials):
    from brevetti_pipe.cli.predict import list_inputs

    with http_folder_server(tiny_vials.parent) as base:
        found, missing = list_inputs([f"{base}/{tiny_vials.name}/good/"], IoTools())
    assert not missing and len(found) == 10
    assert all(u.startswith(f"{base}/{tiny_vials.name}/good/good_") and u.count("://") == 1 for u in found), found[:2]


def test_a_listed_file_keeps_the_scheme_the_user_gave():
    # storage options are looked up by scheme: s3a:// turned into s3:// would read with no endpoint
    import fsspec

    from brevetti_pipe.storage import listed_url

    s3 = fsspec.filesystem("s3", anon=True)  # no request is made: only the URL is built
    assert listed_url(s3, "bucket/imgs/a.png", "s3a://bucket/imgs") == "s3a://bucket/imgs/a.png"
    assert listed_url(s3, "bucket/imgs/a.png", "s3://bucket/imgs") == "s3://bucket/imgs/a.png"
    assert listed_url(s3, "bucket/imgs/a.png") == "s3://bucket/imgs/a.png"
    http = fsspec.filesystem("http")
    assert listed_url(http, "http://h:1/x/a.png", "http://h:1/x") == "http://h:1/x/a.png"
    assert listed_url(fsspec.filesystem("file"), "/data/a.png", "/data") == "/data/a.png"


def test_credentials_in_an_http_dataset_url_are_refused_before_any_sample_path_carries_them(tiny_vials):
    with http_folder_server(tiny_vials.parent) as base:
        url = base.replace("://", "://reader:hunter2@", 1) + f"/{tiny_vials.name}/"
        with pytest.raises(DatasetError) as caught:
            get_image_samples(url, name="vials")
    message = str(caught.value)
    assert "hunter2" not in message and "\n" not in message
    assert message.startswith("Dataset 'vials' at http://***@127.0.0.1") and "credentials" in message


def test_an_unresolvable_s3_endpoint_is_not_blamed_on_the_bucket():
    io = IoTools({"s3": {"endpoint_url": "http://minio.invalid:9000", "key": "k", "secret": "s",
                         "config_kwargs": {"retries": {"max_attempts": 1}}}})  # botocore retries on its own
    started = time.monotonic()
    with pytest.raises(StorageError) as caught:
        io.read_file("s3://training-data/vials/a.png")
    message = str(caught.value)
    assert time.monotonic() - started < 30, "a name that does not exist is not retried"
    assert "'training-data'" not in message and "does not resolve" in message, message
