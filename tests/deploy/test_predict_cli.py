"""``brevetti-pipe-predict``: a folder with a corrupt image, an s3:// folder on moto, a printed table."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from brevetti_pipe import load_model
from brevetti_pipe.cli.predict import main

COLUMNS = ["path", "predicted_class", "confidence", "p_failed_cap", "p_good", "p_missing_cap", "decision"]


def _images(deployed, n: int = 3) -> list[Path]:
    samples = deployed.job.samples
    return [Path(p) for p in samples[samples.purpose == "devel"].path.iloc[:n]]


def _check_rows(table: pd.DataFrame, deployed, images: list[Path]) -> None:
    assert list(table.columns) == COLUMNS
    with load_model(deployed.archive) as model:
        expected = model.predict([str(p) for p in images])
        decisions = model.decide(expected)
    np.testing.assert_allclose(table[["p_failed_cap", "p_good", "p_missing_cap"]].to_numpy(), expected, rtol=0, atol=1e-6)
    assert list(table.predicted_class) == [model.classes[i] for i in np.argmax(expected, axis=1)]
    assert list(table.decision) == decisions and set(decisions) <= {"accept", "reject"}


def test_the_console_script_is_installed():
    exe = Path(sys.executable).with_name("brevetti-pipe-predict")
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ARCHIVE" in proc.stdout.upper() and "--storage-option" in proc.stdout
    proc = subprocess.run([str(exe), "missing.tar.gz", "x.png"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == (
        "brevetti-pipe-predict: error: Model archive not found: missing.tar.gz")


def test_a_corrupt_file_is_listed_and_the_rest_predicted(deployed, tmp_path, capsys):
    folder = tmp_path / "line" / "cam1"
    folder.mkdir(parents=True)
    images = []
    for p in _images(deployed):
        images.append(folder / p.name)
        shutil.copy(p, images[-1])
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a PNG cut short
    (folder / "notes.txt").write_text("not an image, not an input")
    out = tmp_path / "predictions.csv"
    code = main([str(deployed.archive), str(tmp_path / "line"), "--output", str(out), "--batch-size", "8"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"Could not predict 1 input(s):\n  {folder / 'broken.png'}: cannot be decoded" in err
    table = pd.read_csv(out)
    assert list(table.path) == sorted(str(p) for p in images)
    _check_rows(table, deployed, sorted(images))


def test_an_s3_folder_on_moto_and_a_printed_table(deployed, s3, tmp_path, capsys):
    fs = s3.fs()
    fs.put(str(deployed.archive), "bucket/models/model.tar.gz")
    images = _images(deployed)
    for p in images:
        fs.put(str(p), f"bucket/line/{p.name}")
    option = f"endpoint_url={s3.endpoint}"
    code = main(["s3://bucket/models/model.tar.gz", "s3://bucket/line", "--format", "onnx",
                 "--output", "s3://bucket/out/predictions.csv", "--storage-option", option])
    assert code == 0, capsys.readouterr().err
    table = pd.read_csv(fs.open("bucket/out/predictions.csv"))
    assert list(table.path) == [f"s3://bucket/line/{p.name}" for p in sorted(images)]
    _check_rows(table, deployed, sorted(images))

    code = main([str(deployed.archive), str(images[0]), "s3://bucket/line/missing.bmp", "--storage-option", option])
    captured = capsys.readouterr()
    assert code == 1
    assert str(images[0]) in captured.out and "predicted_class" in captured.out and "decision" in captured.out
    assert "s3://bucket/line/missing.bmp: not found" in captured.err
