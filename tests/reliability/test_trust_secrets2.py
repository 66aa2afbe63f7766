"""The _target_ allowlist is exact, and secrets of every shape (numbers, sweeps, lists, headers, query strings,
multi-line keys in config files, URL passwords holding '@') stay out of every file and stream."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hydra.utils import get_class

from brevetti_pipe._util import secrets as _secrets
from brevetti_pipe.cli import guard_overrides
from brevetti_pipe.config import compose
from brevetti_pipe.config._load import _ALLOWED_TARGETS
from brevetti_pipe.errors import ConfigError
from brevetti_pipe.platform import resolve_config
from tests.conftest import TINY_ARGS, run_cli
from tests.reliability.test_trust_secrets import _leaks

GOLDEN = Path(__file__).parents[1] / "config" / "golden"


def test_a_popen_helper_of_an_allowed_plugin_package_runs_nothing(tmp_path):
    pwned = tmp_path / "PWNED2"
    proc = run_cli("recipe=vials_classification",
                   "+hydra.callbacks.x._target_=hydra_plugins.hydra_ray_launcher._launcher_util._run_command",
                   f"+hydra.callbacks.x._args_=[[touch,{pwned}]]", "job.seed=-1", cwd=tmp_path)
    assert proc.returncode == 2 and not pwned.exists(), proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert "'_target_' 'hydra_plugins.hydra_ray_launcher._launcher_util._run_command' is not allowed" in proc.stderr


@pytest.mark.parametrize("override", [
    "hydra.launcher._target_=hydra_plugins.hydra_ray_launcher._launcher_util._run_command",
    "hydra.launcher._target_=hydra_plugins.hydra_ray_launcher.ray_aws_launcher.RayAWSLauncher",
    "hydra.sweeper._target_=hydra._internal.core_plugins.basic_launcher.BasicLauncher",
    "+hydra.callbacks.x._target_=hydra._internal.core_plugins.bash_completion.BashCompletion",  # a plugin, not a callback
    "+datasets.vials.storage_options.x._target_=brevetti_pipe.sweep.SweepSummary",  # right class, wrong place
    "+hydra.callbacks.x={_target_:brevetti_pipe.sweep.SweepSummary,_args_:[{_target_:os.system,_args_:[id]}]}",
    "+hydra.callbacks.x._target_=hydra.experimental.callbacks.LogJobReturnCallback,os.system",
    "hydra.sweeper.custom_search_space=os.system",
    "+hydra.sweeper={custom_search_space:subprocess.call}",
    "+hydra.launcher.ray.init.runtime_env={worker_process_setup_hook:os.getcwd}",
    "+hydra.launcher.ray.remote.runtime_env.pip=[evil-package]",
])
def test_targets_and_code_keys_outside_the_exact_allowlist_are_refused(override):
    with pytest.raises(ConfigError, match="not allowed|names code to run"):
        guard_overrides(["recipe=vials_classification", override])


def test_every_allowed_target_is_a_real_class_and_passes_in_its_place():
    for where, names in _ALLOWED_TARGETS.items():
        node = where.replace("\\.", ".").replace("[^.]+", "summary")
        for name in names:
            assert isinstance(get_class(name), type), name
            assert guard_overrides([f"+{node}._target_={name}"]) == [f"+{node}._target_={name}"]


SWEEP_SECRETS = ("84736251", "SECRETDDD1", "SECRETDDD2", "SECRETLLL1", "Bearer SECRETHHH1", "SECRETPWD1", "SECRETPPH1",
                 "SECRETSAS1", "SECRETAUT1", "SECRETQS1", "SECRETQS2", "SECRETQS3", "SECRETQS4", "SECRETQS5")
PROGRESS = "http://127.0.0.1:9/p?access_token=SECRETQS1&sig=SECRETQS2&api_key=SECRETQS3&X-Amz-Credential=SECRETQS4&password=SECRETQS5"


def test_numbers_sweeps_lists_headers_and_query_secrets_are_masked_in_a_sweep(tmp_path, tiny_vials):
    so = "+datasets.vials.storage_options"
    proc = run_cli(*TINY_ARGS, f"platform.root={tmp_path / 'p'}", f"datasets.vials.url={tiny_vials}",
                   f"{so}.password=84736251", f"{so}.secret=SECRETDDD1,SECRETDDD2", f"{so}.creds=[{{secret:SECRETLLL1}}]",
                   f"{so}.headers={{Authorization:'Bearer SECRETHHH1'}}", f"{so}.pwd=SECRETPWD1",
                   f"{so}.passphrase=SECRETPPH1", f"{so}.sas=SECRETSAS1", f"{so}.auth=SECRETAUT1",
                   f"callbacks.progress.url='{PROGRESS}'", "callbacks.progress.retries=0", "-m", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = next((tmp_path / "multirun").rglob("multirun.yaml")).parent
    assert {"sweep.csv", "sweep.html", "multirun.yaml"} <= {p.name for p in sweep.iterdir()}
    assert _leaks(tmp_path, proc, *SWEEP_SECRETS) == []
    assert "storage_options.secret='***0'" in (proc.stdout + proc.stderr)
    assert "Progress POST to http://127.0.0.1:9/p?access_token=***&sig=***" in proc.stderr
    outputs = [json.loads(p.read_text()) for p in (tmp_path / "p" / "jobs").glob("*/artifacts/output.json")]
    assert [o["status"] for o in outputs] == ["completed", "completed"]


def test_sweep_and_nested_secrets_reach_each_run_with_their_real_values(tmp_path):
    so = "+datasets.vials.storage_options"
    masked = guard_overrides([f"{so}.secret=SECRETDDD1,SECRETDDD2", f"{so}.creds=[{{secret:SECRETLLL1}}]",
                              f"{so}.password=84736251", "recipe=vials_classification", f"platform.root={tmp_path}"])
    assert not any(s in "".join(masked) for s in SWEEP_SECRETS)
    for i, real in enumerate(("SECRETDDD1", "SECRETDDD2")):
        run = [f"{so}.secret='***{i}'", *masked[1:]]  # what Hydra hands run i
        cfg, task, groups = compose(run)
        options = resolve_config(cfg, task, groups).datasets["vials"].storage_options
        assert options == {"secret": real, "creds": [{"secret": "SECRETLLL1"}], "password": 84736251}


@pytest.mark.parametrize("key", ["authorization", "Authorization", "auth", "basic_auth", "pwd", "passphrase", "sas",
                                 "sas_token", "signature", "cookie", "sig", "password", "X-Amz-Security-Token"])
def test_wider_secret_key_names(key):
    assert _secrets.is_secret_key(key)


@pytest.mark.parametrize("key", ["unique_key", "path_key", "output_key", "annotation_key", "author", "keys",
                                 "monkey", "signal", "design", "auto_tune"])
def test_ordinary_keys_are_not_secret(key):
    assert not _secrets.is_secret_key(key)


@pytest.mark.parametrize("golden", sorted(GOLDEN.glob("*.yaml")), ids=lambda p: p.name)
def test_golden_configs_are_unchanged_by_redaction(golden):
    text = golden.read_text()
    assert _secrets.redact_config_text(text) == text


def test_redacted_config_text_stays_valid_yaml_and_drops_multi_line_bodies():
    text = "a:\n  private_key: '-----BEGIN\n\n    BODYLINE1\n\n    -----END'\n  next: 1\nc:\n  - secret: |\n      BODY2\n    x: 2\n"
    clean = _secrets.redact_config_text(text)
    assert "BODY" not in clean and yaml.safe_load(clean) == {
        "a": {"private_key": "***", "next": 1}, "c": [{"secret": "***", "x": 2}]}


@pytest.mark.parametrize("url", [
    "s3://AKID:pa@SECRETFFF@bucket/vials", "s3://AKID:pa/b@SECRETFFF@bucket/vials",
    "http://127.0.0.1:18401/p?access_token=SECRETFFF&sig=SECRETFFF&X-Amz-Credential=SECRETFFF&password=SECRETFFF",
])
def test_url_credentials_and_query_secrets_are_masked(url):
    assert "SECRETFFF" not in _secrets.redact(url) and "bucket/vials" in _secrets.redact(url) + "bucket/vials"
    _secrets.collect_secrets({"url": url})
    assert "SECRETFFF" not in _secrets.redact(f"error: {url.replace('SECRETFFF@', 'SECRETFFF @')}")


PEM_BODY = ("MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7", "SECRETPEMLINE2xyzAbCdEfGh0123456789")


def test_multi_line_file_secrets_are_masked_in_hydra_files_and_printed_config(tmp_path):
    folder = tmp_path / "cfg" / "datasets"
    folder.mkdir(parents=True)
    key = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(PEM_BODY) + "\n-----END PRIVATE KEY-----\n"
    (folder / "sec.yaml").write_text(yaml.safe_dump({"vials": {"url": "gs://b/vials", "generator": "vials",
                                                               "storage_options": {"token": {"type": "service_account",
                                                                                             "private_key": key}}}}))
    args = ("--config-dir", str(tmp_path / "cfg"), "recipe=vials_classification", "datasets=sec")
    bad = run_cli(*args, "job.seed=-1", cwd=tmp_path)
    assert bad.returncode == 2, bad.stderr
    hydra = next((tmp_path / "outputs").rglob(".hydra"))
    assert yaml.safe_load((hydra / "config.yaml").read_text())["datasets"]["vials"]["storage_options"]["token"][
        "private_key"] == "***"
    printed = run_cli(*args, "--cfg", "job", cwd=tmp_path)
    assert printed.returncode == 0 and "private_key: '***'" in printed.stdout, printed.stderr
    assert _leaks(tmp_path / "outputs", bad, *PEM_BODY) == [] and _leaks(tmp_path / "outputs", printed, *PEM_BODY) == []


def test_url_password_with_an_at_sign_is_masked_in_every_output(tmp_path, s3):
    proc = run_cli(*TINY_ARGS, f"platform.root={tmp_path / 'p'}", "datasets.vials.url=s3://AKID:pa@SECRETFFF@bucket/vials",
                   f"+datasets.vials.storage_options.endpoint_url={s3.endpoint}", "platform.retry_seconds=1",
                   "callbacks.progress.url=null", cwd=tmp_path, env=s3.env)
    assert proc.returncode == 1, proc.stderr[-3000:]
    artifacts = next((tmp_path / "p" / "jobs").iterdir()) / "artifacts"
    assert json.loads((artifacts / "output.json").read_text())["status"] == "failed"
    assert (artifacts / "report.html").is_file() and "***" in proc.stderr
    assert _leaks(tmp_path, proc, "SECRETFFF", "pa@") == []
