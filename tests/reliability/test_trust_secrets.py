"""Secrets given on the command line, in dataset URLs or in a settings JSON are never written or printed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from brevetti_pipe._util import secrets as _secrets
from brevetti_pipe.config import compose
from brevetti_pipe.platform import resolve_config
from tests.conftest import TINY_ARGS, run_cli

SECRET = "planted-s3-secret-9c1e"
PEM = "-----BEGIN PRIVATE KEY-----planted-pem-77d0-----END PRIVATE KEY-----"
SECRET_OVERRIDES = (
    f"+datasets.vials.storage_options.secret={SECRET}",
    f"+datasets.vials.storage_options.token={{type:service_account,private_key:'{PEM}'}}",
)


def _leaks(root: Path, proc, *needles: str) -> list[str]:
    """Every file under ``root`` and stream of ``proc`` that contains one of ``needles``."""
    hits = [f"{p}: {n}" for p in root.rglob("*") if p.is_file() for n in needles if n.encode() in p.read_bytes()]
    return hits + [f"{name}: {n}" for name in ("stdout", "stderr") for n in needles if n in getattr(proc, name)]


def test_cli_secrets_are_masked_in_hydra_files_when_the_config_is_invalid(tmp_path):
    proc = run_cli("recipe=vials_classification", *SECRET_OVERRIDES, "job.seed=-1", cwd=tmp_path)
    assert proc.returncode == 2 and "job.seed" in proc.stderr, proc.stderr
    hydra = next((tmp_path / "outputs").rglob(".hydra"))
    assert sorted(p.name for p in hydra.iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert "storage_options.secret='***'" in (hydra / "overrides.yaml").read_text()
    assert _leaks(tmp_path, proc, SECRET, "planted-pem") == []


@pytest.mark.parametrize("before, after", [((), ("--cfg", "job")), (("--cfg",), ()), (("--info",), ())])
def test_cli_secrets_are_masked_in_printed_config_and_usage_errors(tmp_path, before, after):
    # "--cfg OVERRIDE": the override is refused as the flag's value and quoted in the error;
    # "--info OVERRIDE": --info's value is optional, so it prints the info with the overrides applied
    proc = run_cli(*before, *SECRET_OVERRIDES, "recipe=vials_classification", *after, cwd=tmp_path)
    assert proc.returncode == (2 if before == ("--cfg",) else 0), proc.stderr
    assert "storage_options.secret='***'" in proc.stderr or "secret: '***'" in proc.stdout, proc.stderr
    assert _leaks(tmp_path, proc, SECRET, "planted-pem") == []
    if after:
        assert "private_key: '***'" in proc.stdout


def test_cli_secrets_are_masked_in_a_sweep_and_still_reach_the_job(tmp_path, tiny_vials):
    proc = run_cli(*TINY_ARGS, f"platform.root={tmp_path / 'p'}", f"datasets.vials.url={tiny_vials}",
                   *SECRET_OVERRIDES, "callbacks.progress.url=null", "-m", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    launcher = proc.stdout + proc.stderr
    assert "#0 : " in launcher and "storage_options.secret='***'" in launcher
    assert (next((tmp_path / "multirun").rglob("multirun.yaml"))).is_file()
    assert _leaks(tmp_path, proc, SECRET, "planted-pem") == []


def test_masked_overrides_compose_to_the_real_values(tmp_path):
    from brevetti_pipe.cli import guard_overrides

    masked = guard_overrides(["recipe=vials_classification", f"platform.root={tmp_path}", *SECRET_OVERRIDES])
    assert not any(SECRET in o or "planted-pem" in o for o in masked)
    cfg, task, groups = compose(masked)
    options = resolve_config(cfg, task, groups).datasets["vials"].storage_options
    assert options["secret"] == SECRET and options["token"] == {"type": "service_account", "private_key": PEM}


def test_dataset_url_credentials_are_masked_in_every_output(tmp_path, s3):
    key, secret = "AKIAPLANTEDKEY01", "planted/url+secret/77"
    proc = run_cli(*TINY_ARGS, f"platform.root={tmp_path / 'p'}", f"datasets.vials.url=s3://{key}:{secret}@bucket/vials",
                   f"+datasets.vials.storage_options.endpoint_url={s3.endpoint}", "platform.retry_seconds=1",
                   "callbacks.progress.url=null", cwd=tmp_path, env=s3.env)
    assert proc.returncode == 1, proc.stderr[-3000:]
    artifacts = next((tmp_path / "p" / "jobs").iterdir()) / "artifacts"
    out = json.loads((artifacts / "output.json").read_text())
    assert out["status"] == "failed" and "***" in out["error"]
    assert (artifacts / "report.html").is_file() and "***" in proc.stderr
    assert _leaks(tmp_path, proc, secret, key) == []


def test_settings_json_values_are_taken_literally(tmp_path, monkeypatch):
    monkeypatch.setenv("DB_PASSWORD", "planted-env-password")
    doc = tmp_path / "job.json"
    doc.write_text(json.dumps({"datasets": {"vials": {"url": "memory://v", "generator": "vials",
                                                      "storage_options": {"password": "${oc.env:DB_PASSWORD}"},
                                                      "id": "\\${oc.env:DB_PASSWORD}"}}}))
    cfg, task, groups = compose(["recipe=vials_classification", f"platform.root={tmp_path}", f"job.settings_json={doc}"])
    ds = resolve_config(cfg, task, groups).datasets["vials"]
    assert ds.storage_options["password"] == "${oc.env:DB_PASSWORD}"
    assert ds.id == "\\${oc.env:DB_PASSWORD}"
    assert "planted-env-password" not in _secrets.redact_obj(ds.model_dump()).__repr__()


def test_masked_credentials_reach_jobs_run_in_launcher_processes(tmp_path, s3):
    """Moto checks signatures: the sweep's runs (joblib worker processes) read the dataset only with the real secret."""
    import boto3

    from brevetti_pipe.data._demo import generate_vials
    from brevetti_pipe.storage import IoTools

    generate_vials("s3://bucket/vials", io=IoTools({"s3": s3.options}), per_class=8, size=48)
    iam = boto3.client("iam", endpoint_url=s3.endpoint, region_name="us-east-1")
    iam.create_user(UserName="reader")
    iam.put_user_policy(UserName="reader", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    cred = iam.create_access_key(UserName="reader")["AccessKey"]
    _set_auth(s3.endpoint, "0")
    try:
        proc = run_cli(*TINY_ARGS, f"platform.root={tmp_path / 'p'}", "datasets.vials.url=s3://bucket/vials",
                       f"+datasets.vials.storage_options.endpoint_url={s3.endpoint}",
                       f"+datasets.vials.storage_options.key={cred['AccessKeyId']}",
                       f"+datasets.vials.storage_options.secret={cred['SecretAccessKey']}",
                       # moto does not authenticate presigned GETs: an option outside the fast path keeps s3fs
                       "+datasets.vials.storage_options.default_fill_cache=false", "platform.retry_seconds=5",
                       "callbacks.progress.url=null", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "-m",
                       cwd=tmp_path, env=s3.env)
    finally:
        _set_auth(s3.endpoint, "inf")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(next((tmp_path / "p" / "jobs").glob("*/artifacts/output.json")).read_text())
    assert out["status"] == "completed"
    assert _leaks(tmp_path, proc, cred["SecretAccessKey"], cred["AccessKeyId"]) == []


def _set_auth(endpoint: str, after: str) -> None:
    import urllib.request

    req = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=after.encode(), method="POST",
                                 headers={"Content-Type": "text/plain"})
    urllib.request.urlopen(req, timeout=10).close()
