"""End to end: examples/export_and_serve.py in a tiny configuration."""

import os
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "examples", "export_and_serve.py")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _run(args, timeout):
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=ENV
    )


@pytest.mark.slow
def test_export_serve_and_printed_cli_command(tmp_path):
    export_dir = str(tmp_path / "export")
    result = _run(
        [sys.executable, SCRIPT, f"--export_dir={export_dir}", "--train_examples=4000",
         "--steps=10", "--requests=3", "--hidden_units=16"],
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Every op is a stock TensorFlow op" in result.stdout
    assert "served scores equal the in-process model's" in result.stdout
    assert os.path.exists(os.path.join(export_dir, "saved_model.pb"))

    # The printed `saved_model_cli run` command works as printed.
    (command,) = [
        line.strip() for line in result.stdout.splitlines()
        if line.strip().startswith("saved_model_cli run")
    ]
    args = shlex.split(command)
    cli = _run(
        [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", *args[1:]],
        timeout=180,
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert "Result for output key output_0" in cli.stdout


@pytest.mark.slow
def test_help_explains_every_flag():
    result = _run([sys.executable, SCRIPT, "--help"], timeout=120)  # absl exits with 1
    assert "serve it where tf_smelu is not installed" in result.stdout
    for flag in ("--export_dir", "--train_examples", "--steps", "--batch_size",
                 "--hidden_units", "--requests", "--seed"):
        assert flag in result.stdout
