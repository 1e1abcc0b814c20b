"""PredictionDifferenceCallback: PD against a reference model during one `fit`."""

from __future__ import annotations

import csv
import inspect
import re
import textwrap

import keras
import numpy as np
import pytest

from tf_smelu import metrics
from tf_smelu.reproducibility import PredictionDifferenceCallback

FEATURES = 6


FLOAT32_PRECISION = 1e-6
"""How closely PDs of float32 predictions made in different batches agree."""

def _arrays(rows: int = 900):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, FEATURES)).astype("float32")
    y = (x[:, 0] - x[:, 1] + 0.5 * rng.normal(size=rows) > 0).astype("float32")
    return x[:600], y[:600], x[600:]


def _build(features: int = FEATURES, outputs: int = 1) -> keras.Model:
    activation = "sigmoid" if outputs == 1 else "softmax"
    model = keras.Sequential([
        keras.Input((features,)),
        keras.layers.Dense(12, activation="relu"),
        keras.layers.Dense(outputs, activation=activation),
    ])
    loss = "binary_crossentropy" if outputs == 1 else "sparse_categorical_crossentropy"
    model.compile(keras.optimizers.Adam(1e-2), loss)
    return model


@pytest.fixture(scope="module")
def reference():
    keras.utils.set_random_seed(1)
    x, y, _ = _arrays()
    model = _build()
    model.fit(x, y, epochs=1, batch_size=50, verbose=0)
    return model


@pytest.mark.parametrize("kind", ["model", "keras_file", "npy_file"])
@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_logged_pd_equals_the_offline_pd_of_the_two_models(kind, reference, tmp_path):
    x, y, held_out = _arrays()
    given = {
        "model": lambda: reference,
        "keras_file": lambda: reference.save(tmp_path / "reference.keras") or str(
            tmp_path / "reference.keras"),
        "npy_file": lambda: np.save(tmp_path / "reference.npy",
                                    reference.predict(held_out, verbose=0)) or str(
            tmp_path / "reference.npy"),
    }[kind]()
    keras.utils.set_random_seed(2)
    model = _build()
    log_file = tmp_path / "log.csv"
    history = model.fit(x, y, epochs=2, batch_size=50, verbose=0, callbacks=[
        PredictionDifferenceCallback(given, held_out), keras.callbacks.CSVLogger(str(log_file))])

    p = model.predict(held_out, verbose=0)
    q = reference.predict(held_out, verbose=0)
    # To float32 precision: the callback predicts in batches of its own, and some CPUs'
    # float32 kernels round differently per batch shape (5e-11 relative seen).
    assert history.history["churn_rel_pd"][-1] == pytest.approx(
        metrics.relative_pd(p, q), rel=FLOAT32_PRECISION)
    assert history.history["churn_abs_pd"][-1] == pytest.approx(
        metrics.absolute_pd(p, q), rel=FLOAT32_PRECISION)
    # Training moved the model: the first epoch's PD is another number.
    assert history.history["churn_rel_pd"][0] != history.history["churn_rel_pd"][1]
    with open(log_file, newline="") as f:
        logged = list(csv.DictReader(f))
    assert [float(r["churn_rel_pd"]) for r in logged] == pytest.approx(
        history.history["churn_rel_pd"], rel=1e-6)


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_multiclass_outputs_log_top1_and_l1_pd():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, FEATURES)).astype("float32")
    y = np.digitize(x[:, 0], [-0.5, 0.5])
    reference = _build(outputs=3)
    model = _build(outputs=3)
    history = model.fit(x, y, epochs=1, batch_size=50, verbose=0,
                        callbacks=[PredictionDifferenceCallback(reference, x[:200], prefix="pd_")])
    p, q = model.predict(x[:200], verbose=0), reference.predict(x[:200], verbose=0)
    assert history.history["pd_top1_pd"] == [pytest.approx(metrics.top1_pd(p, q),
                                                           rel=FLOAT32_PRECISION)]
    assert history.history["pd_l1_pd"] == [pytest.approx(metrics.l1_pd(p, q),
                                                         rel=FLOAT32_PRECISION)]


def test_a_reference_with_other_inputs_fails_before_the_first_step(reference):
    x, y, held_out = _arrays()
    model = keras.Sequential([keras.Input((FEATURES + 2,)), keras.layers.Dense(1, "sigmoid")])
    model.compile("adam", "binary_crossentropy")
    wider = np.concatenate([held_out, held_out[:, :2]], axis=1)
    steps = []
    counter = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda *_: steps.append(1))
    with pytest.raises(ValueError, match="reference model .* cannot predict the held-out data"):
        model.fit(np.concatenate([x, x[:, :2]], axis=1), y, epochs=1, verbose=0,
                  callbacks=[PredictionDifferenceCallback(reference, wider), counter])
    assert steps == []


def test_saved_predictions_of_another_shape_fail_before_the_first_step(reference, tmp_path):
    x, y, held_out = _arrays()
    model = _build()
    with pytest.raises(ValueError, match=r"do not match the model's.*\(100,\).*\(300,\)"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[PredictionDifferenceCallback(np.full(100, 0.5), held_out)])
    (tmp_path / "reference.txt").write_text("0.5\n")
    with pytest.raises(ValueError, match=r"\.keras.*\.npy.*Received: reference=.*reference.txt"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[
            PredictionDifferenceCallback(tmp_path / "reference.txt", held_out)])


def test_saved_predictions_with_nan_fail_before_the_first_step(tmp_path):
    x, y, held_out = _arrays()
    saved = np.full(len(held_out), 0.5)
    saved[3] = np.nan
    np.save(tmp_path / "reference.npy", saved)
    steps = []
    counter = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda *_: steps.append(1))
    with pytest.raises(ValueError, match=r"output 'output' are not all finite.*Received: 1 of 300"):
        _build().fit(x, y, epochs=1, verbose=0, callbacks=[
            PredictionDifferenceCallback(tmp_path / "reference.npy", held_out), counter])
    assert steps == []


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_the_docstring_example_runs(capsys):
    [example] = re.findall(r"```python\n(.*?)```", inspect.getdoc(PredictionDifferenceCallback),
                           flags=re.S)
    exec(compile(textwrap.dedent(example), "PredictionDifferenceCallback", "exec"), {})
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("[") and len(printed.split(",")) == 2  # one PD per epoch
