"""tf_smelu under the TensorFlow, JAX and PyTorch backends of Keras 3.

Keras reads KERAS_BACKEND once, at import, so every check runs
`backend_worker.py` in a fresh process with the backend set. A backend whose
package is not installed is skipped with the reason shown; an installed one
that fails to import fails the test.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tf_smelu import serving

WORKER = pathlib.Path(__file__).resolve().parent / "backend_worker.py"
# The Python package each backend needs, and how to install it on the CPU.
BACKENDS = {
    "tensorflow": ("tensorflow", "pip install tensorflow"),
    "jax": ("jax", 'pip install "jax[cpu]"'),
    # PyPI's Linux torch wheels are CUDA builds; the CPU build comes from
    # PyTorch's own index (or a local wheel), which setup.py cannot name.
    "torch": ("torch", "pip install torch --index-url https://download.pytorch.org/whl/cpu"),
}


def _require(backend: str) -> None:
    module, install = BACKENDS[backend]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"the {backend} backend needs `{module}`, which is not installed ({install})")


def _run(backend: str, command: str, directory) -> str:
    _require(backend)
    result = subprocess.run(
        [sys.executable, str(WORKER), command, str(directory)],
        capture_output=True, text=True, timeout=600, cwd=WORKER.parent, check=False,
        env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, (
        f"{command} under {backend} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    )
    return result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_functions_layers_and_strings_match_numpy(backend, tmp_path):
    """Values (float32/16, bfloat16), input and parameter gradients, errors,
    `activation="..."` strings, and a trained model against NumPy."""
    assert f"check passed under {backend}" in _run(backend, "check", tmp_path)


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """One trained `.keras` model per installed backend, in one directory."""
    directory = tmp_path_factory.mktemp("keras_files")
    saved = []
    for backend, (module, _) in BACKENDS.items():
        if importlib.util.find_spec(module) is not None:
            _run(backend, "save", directory)
            saved.append(backend)
    return directory, saved


@pytest.mark.slow
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_keras_file_loads_under_every_other_backend(backend, saved_models):
    directory, saved = saved_models
    _require(backend)
    others = [b for b in saved if b != backend]
    if not others:
        pytest.skip("no other backend is installed")
    output = _run(backend, "load", directory)
    for source in others:
        assert f"loaded {source}.keras under {backend}" in output


@pytest.mark.slow
def test_jax_model_exports_a_saved_model_that_serves(tmp_path):
    _run("jax", "export", tmp_path)
    path = str(tmp_path / "jax_export")
    op_types = serving.saved_model_op_types(path)
    assert not serving.non_stock_ops(op_types), serving.non_stock_ops(op_types)
    # jax2tf embeds the model as one StableHLO module: serving it needs a
    # TensorFlow with XLA (pip's TensorFlow and TF Serving have it).
    assert "XlaCallModule" in op_types
    with np.load(tmp_path / "jax_export.npz") as saved:
        (served,) = serving.serve_without_package(path, {"features": saved["x"]}).values()
        np.testing.assert_allclose(served, saved["y"], rtol=1e-5, atol=1e-6)


# ---- ReplicaStudy under backends and tf.distribute strategies (issue 21, item 7) ----

STUDY_WORKER = pathlib.Path(__file__).resolve().parent / "study_backend_worker.py"


def _study(backend: str, *args: str, timeout: int = 600) -> dict:
    """Runs study_backend_worker.py under `backend`; its last stdout line as JSON."""
    import json

    _require(backend)
    result = subprocess.run(
        [sys.executable, str(STUDY_WORKER), *args], capture_output=True, text=True,
        timeout=timeout, cwd=WORKER.parent, check=False,
        env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, f"{args} under {backend} failed:\n{result.stderr[-4000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def _assert_control_and_sources(summary: dict) -> None:
    """sources=() gives bit-identical replicas; init or order alone makes them differ."""
    assert summary["none"]["identical"] is True and summary["none"]["rel_pd"] == 0.0, summary
    for source in ("init", "order"):
        assert summary[source]["identical"] is False and summary[source]["rel_pd"] > 0, summary
    for row in summary.values():
        if isinstance(row, dict):  # trained, not two untrained models
            assert row["steps"] == 32 and row["auc"] > 0.75, summary


@pytest.mark.slow
def test_study_under_jax_with_tf_data_input():
    """JAX trains from tf.data; with no source varying its replicas are bit-identical
    on the CPU (XLA), and a tf.distribute strategy is refused with one message."""
    summary = _study("jax", "sources")
    assert summary["backend"] == "jax"
    _assert_control_and_sources(summary)
    assert "only the TensorFlow backend" in summary["strategy_error"]
    assert "'jax' backend" in summary["strategy_error"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy, devices", [("mirrored", 2), ("mwms", 1)])
def test_study_under_a_user_strategy(strategy, devices):
    """MirroredStrategy over two CPU devices and single-worker MWMS: each replica is built
    and compiled in the strategy's scope; the control stays bit-identical."""
    summary = _study("tensorflow", strategy)
    assert summary["replicas_in_sync"] == devices
    _assert_control_and_sources(summary)


@pytest.mark.slow
def test_study_refuses_multi_worker_mwms_naming_the_keras_issue():
    """Keras 3's fit fails under MWMS of several workers (keras-team/keras#20585, checked
    with TF 2.21 / Keras 3.15): the study says so before building anything."""
    import json
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(str(probe.getsockname()[1]))
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    workers = [subprocess.Popen(
        [sys.executable, str(STUDY_WORKER), "mwms_workers", str(index), ",".join(ports)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for index in range(2)]
    try:
        outputs = [worker.communicate(timeout=300) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    for worker, (stdout, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]
        error = json.loads(stdout.strip().splitlines()[-1])["error"]
        assert "keras-team/keras#20585" in error and "2 workers" in error, error
