"""Secrets never reach any file a run writes: output.json, logs, Hydra's .hydra/, artifacts."""

from __future__ import annotations

from pathlib import Path

from brevetti_pipe._util import secrets as _secrets
from tests.conftest import TINY_ARGS, read_output, only_job_dir, run_cli

API_KEY = "sk-planted-4f1c2d9e8b7a"
STORAGE_SECRET = "storage-planted-77aa01"


def _files_containing(root: Path, needle: str) -> list[Path]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and needle.encode() in path.read_bytes():
            hits.append(path)
    return hits


def test_planted_secrets_are_in_no_file_of_the_job_or_hydra_dir(tmp_path, tiny_vials):
    root = tmp_path / "p"
    proc = run_cli(
        *TINY_ARGS, "--api_key", API_KEY, f"platform.root={root}", f"datasets.vials.url={tiny_vials}",
        f"+datasets.vials.storage_options.secret={STORAGE_SECRET}",
        "callbacks.progress.url=http://127.0.0.1:9/progress", "callbacks.progress.retries=0",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    job_dir = only_job_dir(root)
    assert read_output(job_dir)["status"] == "completed"
    hydra_dirs = list((tmp_path / "outputs").rglob(".hydra"))
    assert hydra_dirs, "Hydra's output dir should exist"
    assert "storage_options" in (hydra_dirs[0] / "config.yaml").read_text()
    for secret in (API_KEY, STORAGE_SECRET):
        assert _files_containing(tmp_path, secret) == []
        assert secret not in proc.stdout and secret not in proc.stderr


def test_redaction_masks_urls_queries_and_known_values():
    _secrets.add_secret("hunter2-secret")
    text = "s3://AKIA123:abc@bucket/x https://h/p?api_key=zzz&b=1 pw=hunter2-secret"
    assert _secrets.redact(text) == "s3://***@bucket/x https://h/p?api_key=***&b=1 pw=***"
    assert _secrets.redact_obj({"token": "t0k3n-value", "nested": {"secret": "x"}, "n": 1}) == {
        "token": "***", "nested": {"secret": "***"}, "n": 1,
    }
    assert _secrets.redact_config_text("a:\n  secret: abc\n  url: x\n- foo.key=bar\n") == "a:\n  secret: '***'\n  url: x\n- foo.key='***'\n"
