"""Predicting: secrets kept out of the CSV, folders in load_model().predict, the reason a file cannot be decoded."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pandas as pd
import pytest

from brevetti_pipe import load_model
from brevetti_pipe.cli.predict import main
from brevetti_pipe.errors import StageError


def _images(deployed, n: int = 2) -> list[Path]:
    samples = deployed.job.samples
    return [Path(p) for p in samples[samples.purpose == "devel"].path.iloc[:n]]


def test_credentials_and_signed_query_parameters_stay_out_of_the_csv_and_table(deployed, tmp_path, capsys):
    image = _images(deployed, 1)[0]
    shutil.copy(image, tmp_path / "x.png")
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # the server's access log is not the CLI's output
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://u:PASSW0RD@127.0.0.1:{server.server_address[1]}/x.png?X-Amz-Signature=SIG&token=TOK"
        out = tmp_path / "sp.csv"
        assert main([str(deployed.archive), url, "--output", str(out)]) == 0, capsys.readouterr().err
        assert main([str(deployed.archive), url]) == 0
    finally:
        server.shutdown()
    table = pd.read_csv(out)
    printed = capsys.readouterr()
    assert len(table) == 1 and table.path[0].startswith("http://***@127.0.0.1:")
    for secret in ("PASSW0RD", "=SIG", "=TOK"):
        assert secret not in out.read_text() and secret not in printed.out + printed.err, out.read_text()
    assert "x.png" in printed.out


def test_load_model_predicts_a_folder_like_the_cli(deployed, tmp_path):
    folder = tmp_path / "line"
    (folder / "cam1").mkdir(parents=True)
    images = _images(deployed, 2)
    for i, p in enumerate(images):
        shutil.copy(p, folder / "cam1" / f"{i}{p.suffix}")
    (folder / "notes.txt").write_text("not an image")
    with load_model(deployed.archive, format="keras") as model:
        expected = model.predict([str(folder / "cam1" / f"{i}{p.suffix}") for i, p in enumerate(images)])
        got = model.predict(str(folder))
    assert got.shape == expected.shape == (2, 3)
    assert (abs(got - expected) < 1e-6).all()


def test_a_file_that_is_not_an_image_is_reported_with_the_reason(deployed, tmp_path, capsys):
    fake = tmp_path / "fake.png"
    fake.write_text("this is a text file, not a picture")
    code = main([str(deployed.archive), str(fake), "--format", "keras"])
    err = capsys.readouterr().err
    assert code == 1
    line = next(ln for ln in err.splitlines() if "fake.png" in ln)
    reason = line.split("cannot be decoded:", 1)[1].strip()
    assert "Graph execution error" not in reason and "image" in reason.lower(), line
    with load_model(deployed.archive, format="keras") as model, pytest.raises(StageError, match="image"):
        model.predict(str(fake))


def test_the_predict_console_script_prints_no_tensorflow_startup_lines(deployed):
    import os
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("brevetti-pipe-predict")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([str(exe), str(deployed.archive), str(_images(deployed, 1)[0]), "--format", "keras"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "absl::InitializeLog" not in proc.stderr and "oneDNN" not in proc.stderr, proc.stderr
    assert "predicted_class" in proc.stdout
