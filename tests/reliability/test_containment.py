"""Containment: no writes outside the job's folders, no arbitrary callables, safe YAML and archives."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from brevetti_pipe import ConfigError, Job, StorageError
from brevetti_pipe.run.model import safe_extract
from tests.conftest import run_cli


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("member", [("../evil.txt", b"x", "file"), ("/tmp/abs_evil.txt", b"x", "file"),
                                    ("link", "/etc/passwd", "symlink")])
def test_archives_never_extract_outside_their_target(tmp_path, member):
    archive = tmp_path / "m.tar.gz"
    _tar(archive, [("ok.txt", b"fine", "file"), member])
    with pytest.raises(StorageError, match="Refusing to extract"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_no_target_callables_from_json_or_cli(tmp_path):
    doc = tmp_path / "s.json"
    doc.write_text(json.dumps({"pipeline": {"image": {"_target_": "os.system", "type": "image_pipeline"}}}))
    with pytest.raises(ConfigError, match="may not set 'pipeline.image._target_'"):
        Job.init(overrides=["recipe=vials_classification", f"platform.root={tmp_path}", f"job.settings_json={doc}"])
    doc.write_text(json.dumps({"pipeline": {"image": {"type": "os.system"}}}))
    with pytest.raises(ConfigError, match="Unknown stage 'os.system'"):
        Job.init(overrides=["recipe=vials_classification", f"platform.root={tmp_path}", f"job.settings_json={doc}"])
    with pytest.raises(ConfigError, match="The run step must be a Python function, got builtin_function_or_method"):
        Job.init(overrides=[f"platform.root={tmp_path}", "run=os:system"])
    with pytest.raises(ConfigError, match="Unknown callback"):
        Job.init(overrides=[f"platform.root={tmp_path}", "+callbacks.x={type:subprocess.run}"])


def test_yaml_is_loaded_safely(tmp_path):
    marker = tmp_path / "pwned"
    user = tmp_path / "cfg" / "experiment"
    user.mkdir(parents=True)
    (user / "evil.yaml").write_text(f'# @package _global_\nx: !!python/object/apply:os.system ["touch {marker}"]\n')
    proc = run_cli("--config-dir", str(tmp_path / "cfg"), "+experiment=evil", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode != 0
    assert not marker.exists()
