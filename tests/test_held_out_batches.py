"""Held-out arrays are fed to Keras as batched datasets: same predictions, no E0000 line."""

from __future__ import annotations

import collections

import keras
import numpy as np
import pytest

from tf_smelu.reproducibility import outputs


def _two_input_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    hidden = keras.layers.Dense(4, activation="relu")(keras.layers.Concatenate()([a, b]))
    model = keras.Model({"a": a, "b": b}, {
        "click": keras.layers.Dense(1, activation="sigmoid", name="click")(hidden),
        "genre": keras.layers.Dense(3, activation="softmax", name="genre")(hidden)})
    model.compile("sgd", {"click": "binary_crossentropy", "genre": "categorical_crossentropy"},
                  metrics={"click": ["auc"]})
    return model


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_predictions_and_evaluations_are_keras_own_bit_for_bit():
    rng = np.random.default_rng(0)
    x = {"a": rng.normal(size=(37, 3)), "b": rng.normal(size=(37, 2)).astype("float32")}  # f64
    y = {"click": (rng.random(37) > 0.5).astype("float32"),
         "genre": np.eye(3, dtype="float32")[rng.integers(0, 3, 37)]}
    model = _two_input_model()
    batches = outputs.in_memory_batches((x,), 8)  # a partial last batch (37 = 4 x 8 + 5)
    assert batches is not None
    ours, keras_own = outputs.predict(model, x, 8, "m"), model.predict(x, batch_size=8, verbose=0)
    for name in ("click", "genre"):
        np.testing.assert_array_equal(ours[name], keras_own[name])
    evaluated = model.evaluate(outputs.in_memory_batches((x, y), 8), verbose=0, return_dict=True)
    assert evaluated == model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)

    sequential = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    np.testing.assert_array_equal(outputs.predict(sequential, x["a"], 8, "m"),
                                  sequential.predict(x["a"], batch_size=8, verbose=0))
    # A list of inputs stays a list of inputs (from_tensor_slices would stack a list).
    listed = keras.Model([model.inputs[0], model.inputs[1]], model.outputs)
    np.testing.assert_array_equal(outputs.predict(listed, [x["a"], x["b"]], 8, "m")[0],
                                  keras_own["click"])


def test_lists_become_tuples_floats_keras_float_type_and_other_containers_stay_as_keras_feeds_them():
    features = collections.namedtuple("Features", "a b")
    a, b, c = np.zeros((5, 3)), np.arange(5), np.ones((5, 2), "float16")
    parts = ([a, [b, c]], collections.OrderedDict(z=a, y=b), features(a, b))
    listed, ordered, named = next(iter(outputs.in_memory_batches(parts, 2)))
    # A list stacked by `from_tensor_slices` would be one tensor, not a tuple of batches.
    assert type(listed) is tuple and type(listed[1]) is tuple
    floatx = keras.backend.floatx()
    assert [str(t.dtype.name) for t in keras.tree.flatten(listed)] == [floatx, "int64", floatx]
    assert [tuple(t.shape) for t in keras.tree.flatten(listed)] == [(2, 3), (2,), (2, 2)]
    # Keras' own array adapter keeps these containers: so do the batches.
    assert type(ordered) is collections.OrderedDict and list(ordered) == ["z", "y"]
    assert type(named) is features and named.a.dtype.name == floatx


@pytest.mark.parametrize("parts", [
    ([np.zeros((3, 2)), np.zeros((4, 2))],),  # first dimensions differ: Keras says so
    (np.zeros((0, 2)),),  # no example
    (np.float32(1.0),),  # a scalar
    ([[1.0, 2.0]],),  # Python lists
])
def test_what_is_not_arrays_of_examples_goes_to_keras_as_it_is(parts):
    assert outputs.in_memory_batches(parts, 8) is None


@pytest.mark.slow  # a subprocess: TensorFlow logs the line from C++, once per process
def test_a_study_under_op_determinism_logs_no_unbounded_threadpool_error(tmp_path):
    import os
    import pathlib
    import subprocess
    import sys

    script = tmp_path / "study.py"
    script.write_text(
        "import numpy as np, keras, tensorflow as tf\n"
        "from tf_smelu.reproducibility import ReplicaStudy\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.normal(size=(300, 4)).astype('float32')\n"
        "y = (x[:, 0] > 0).astype('float32')\n"
        "def build(seed):\n"
        "    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, activation='relu'),"
        " keras.layers.Dense(1, activation='sigmoid')])\n"
        "    model.compile('adam', 'binary_crossentropy')\n"
        "    return model\n"
        "train = tf.data.Dataset.from_tensor_slices((x[:200], y[:200])).batch(50)\n"
        # 100 held-out rows in batches of 64: a partial last batch.
        "[row] = ReplicaStudy(build, train, (x[200:], y[200:]), replicas=2, epochs=1,\n"
        "                     predict_batch_size=64).run()\n"
        "print('rel_pd', row['rel_pd'])\n")
    repo = pathlib.Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "TF_CPP_MIN_LOG_LEVEL": "2"}  # ERRORs shown
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=300, cwd=repo, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rel_pd" in result.stdout
    assert "use_unbounded_threadpool" not in result.stderr, result.stderr[-3000:]
