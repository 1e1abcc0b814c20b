"""Prediction-difference functions, `pairwise_pd` and the streaming Keras metrics."""

import doctest
import math
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_smelu import metrics
from tf_smelu.metrics import (
    L1PD,
    AbsolutePD,
    RelativePD,
    Top1PD,
    absolute_pd,
    l1_pd,
    pairwise_pd,
    relative_pd,
    top1_pd,
)

FUNCTIONS = {"absolute": absolute_pd, "relative": relative_pd, "top1": top1_pd, "l1": l1_pd}
KERAS_METRICS = {"absolute": AbsolutePD, "relative": RelativePD, "top1": Top1PD, "l1": L1PD}
MULTICLASS = {"absolute": False, "relative": False, "top1": True, "l1": True}

# Hand-computed examples.
BINARY_1, BINARY_2 = [0.2, 0.4], [0.4, 0.4]
# Row argmaxes: p1 -> 0, 1, 2, 0 (tie goes to the lowest index); p2 -> 0, 0, 2, 1.
MULTI_1 = [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4], [0.5, 0.5, 0.0]]
MULTI_2 = [[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4], [0.4, 0.6, 0.0]]
HAND_CASES = [
    (absolute_pd, BINARY_1, BINARY_2, 0.1),  # mean(0.2, 0)
    (relative_pd, BINARY_1, BINARY_2, 1 / 3),  # mean(0.2 / 0.3, 0)
    (relative_pd, [0.0, 0.5], [0.0, 0.25], 1 / 3),  # mean(0 (0/0 guarded), 0.25 / 0.375)
    (top1_pd, MULTI_1, MULTI_2, 0.5),  # rows 1 and 3 differ
    (l1_pd, MULTI_1, MULTI_2, 0.15),  # mean(0.2, 0.8, 0, 0.2) / 2
]


def _as_kind(values, kind, dtype):
    array = np.asarray(values, dtype=dtype)
    return {"numpy": array, "list": array.tolist(), "tensor": tf.constant(array)}[kind]


def _random_probabilities(rng, multiclass, n=50):
    if multiclass:
        logits = rng.normal(size=(n, 4))
        return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return rng.uniform(size=n)


def _replicas(num_replicas, seed=0, n=200, outlier=None):
    """Binary predictions of replicas that scatter around a shared base model."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.1, 0.9, n)
    scales = rng.uniform(0.01, 0.05, num_replicas)
    if outlier is not None:
        scales[outlier] = 0.3
    return np.clip(base + rng.normal(size=(num_replicas, n)) * scales[:, None], 0.0, 1.0)


# ---------------------------------------------------------------- functions


@pytest.mark.parametrize("kind", ["numpy", "list", "tensor"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn, p1, p2, expected", HAND_CASES)
def test_hand_computed_values(fn, p1, p2, expected, kind, dtype):
    result = fn(_as_kind(p1, kind, dtype), _as_kind(p2, kind, dtype))
    assert isinstance(result, float)
    assert result == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("fn", [absolute_pd, relative_pd])
def test_binary_accepts_column_vectors(fn):
    column = lambda p: np.asarray(p)[:, None]  # noqa: E731
    assert fn(column(BINARY_1), column(BINARY_2)) == pytest.approx(fn(BINARY_1, BINARY_2))


@pytest.mark.parametrize("name", FUNCTIONS)
def test_identical_predictions_and_symmetry(name):
    rng = np.random.default_rng(1)
    p, q = (_random_probabilities(rng, MULTICLASS[name]) for _ in range(2))
    fn = FUNCTIONS[name]
    assert fn(p, p) == 0.0
    assert fn(p, q) == pytest.approx(fn(q, p))


def test_relative_of_zeros_is_zero_not_nan():
    assert relative_pd([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]) == 0.0


def test_package_docstring_example():
    result = doctest.testmod(metrics)
    assert result.attempted == 1 and result.failed == 0


@pytest.mark.parametrize(
    "fn, p1, p2, match",
    [
        (absolute_pd, [0.1, 0.2], [0.1, 0.2, 0.3], r"same shape.*\(2,\).*\(3,\)"),
        (absolute_pd, [[0.1], [0.2]], [0.1, 0.2], r"same shape.*\(2, 1\).*\(2,\)"),
        (absolute_pd, [], [], r"at least one example"),
        (l1_pd, np.zeros((0, 3)), np.zeros((0, 3)), r"at least one example"),
        (relative_pd, [0.1, np.nan], [0.1, 0.2], r"`p1` contains NaN \(1 of 2"),
        (absolute_pd, [0.1, 0.2], [-0.1, 0.2], r"`p2`.*\[0, 1\].*-0\.1"),
        (top1_pd, [[0.5, 1.5]], [[0.5, 0.5]], r"`p1`.*\[0, 1\].*1\.5"),
        (absolute_pd, MULTI_1, MULTI_2, r"\[N\] or \[N, 1\].*\(4, 3\).*use l1_pd or top1_pd"),
        (relative_pd, np.zeros((2, 2, 1)), np.zeros((2, 2, 1)), r"\[N\] or \[N, 1\]"),
        (top1_pd, BINARY_1, BINARY_2, r"\[N, K\].*\(2,\).*use absolute_pd or relative_pd"),
        (l1_pd, [[0.2], [0.4]], [[0.4], [0.4]], r"K >= 2"),
        (absolute_pd, ["a", "b"], [0.1, 0.2], r"`p1` must be an array of probabilities"),
    ],
)
def test_invalid_inputs(fn, p1, p2, match):
    with pytest.raises(ValueError, match=match):
        fn(p1, p2)


# ---------------------------------------------------------------- pairwise

# Three replicas: |r0 - r1| = (0.2, 0), |r0 - r2| = (0.2, 0.4), |r1 - r2| = (0, 0.4).
THREE = [[0.2, 0.4], [0.4, 0.4], [0.4, 0.8]]


def test_pairwise_known_values():
    result = pairwise_pd(THREE, "absolute")
    assert dict(result.pair_values) == pytest.approx({(0, 1): 0.1, (0, 2): 0.3, (1, 2): 0.2})
    assert (result.mean, result.median, result.std) == pytest.approx((0.2, 0.2, 0.1))
    assert result.replica_means == pytest.approx((0.2, 0.15, 0.25))
    # A resample of 3 replicas with two distinct ones averages only their pair (0.1, 0.3 or
    # 0.2, each with probability 1/4 among the valid resamples); all three distinct give the
    # mean 0.2 (probability 1/4). The 2.5% and 97.5% quantiles are thus 0.1 and 0.3.
    assert result.ci == pytest.approx((0.1, 0.3))
    assert result.num_replicas == 3 and result.outliers == ()


@pytest.mark.parametrize(
    "predictions",
    [
        np.asarray(THREE)[:, :, None],
        [tf.constant(p, tf.float32) for p in THREE],
    ],
    ids=["array_R_N_1", "tensor_list"],
)
def test_pairwise_input_forms(predictions):
    expected = pairwise_pd(THREE, "absolute")
    result = pairwise_pd(predictions, "absolute")
    assert dict(result.pair_values) == pytest.approx(dict(expected.pair_values), rel=1e-6)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_pairwise_pairs_match_single_pair_function(name):
    rng = np.random.default_rng(2)
    replicas = [_random_probabilities(rng, MULTICLASS[name], n=20) for _ in range(4)]
    result = pairwise_pd(replicas, name)
    assert len(result.pair_values) == 6
    for (i, j), value in result.pair_values.items():
        assert value == pytest.approx(FUNCTIONS[name](replicas[i], replicas[j]))


def test_pairwise_ci_contains_mean_and_shrinks_with_more_replicas():
    replicas = _replicas(40)
    few, many = (pairwise_pd(replicas[:r], "relative") for r in (5, 40))
    for result in (few, many):
        lo, hi = result.ci
        assert lo < result.mean < hi
    assert many.ci[1] - many.ci[0] < 0.8 * (few.ci[1] - few.ci[0])


def test_pairwise_higher_confidence_is_wider():
    replicas = _replicas(10)
    narrow, wide = (pairwise_pd(replicas, confidence=c).ci for c in (0.8, 0.99))
    assert wide[0] < narrow[0] and narrow[1] < wide[1]


def test_pairwise_bootstrap_is_deterministic_given_seed():
    replicas = _replicas(8)
    first, second = (pairwise_pd(replicas, seed=123) for _ in range(2))
    assert first == second
    assert pairwise_pd(replicas, seed=np.random.default_rng(123)).ci == first.ci
    assert pairwise_pd(replicas, seed=124).ci != first.ci


def test_pairwise_flags_far_off_replica():
    result = pairwise_pd(_replicas(8, outlier=5), "absolute")
    assert result.outliers == (5,)
    assert result.robust_z[5] > metrics.OUTLIER_THRESHOLD
    assert pairwise_pd(_replicas(8), "absolute").outliers == ()


def test_replica_means_equal_up_to_rounding_flag_no_outlier():
    # Replicas 1 and 2 have the same mean PD (7/120), summed in another order:
    # a MAD of ~1e-17 used to give z-scores of ~1e15 and flag replica 0.
    result = pairwise_pd([[0.2, 0.4, 0.9], [0.25, 0.4, 0.8], [0.2, 0.5, 0.85]], "absolute")
    assert result.replica_means[1] == pytest.approx(result.replica_means[2], abs=1e-15)
    assert result.outliers == ()
    assert max(abs(z) for z in result.robust_z) < metrics.OUTLIER_THRESHOLD


def test_pairwise_identical_replicas():
    result = pairwise_pd([BINARY_1] * 4, "relative")
    assert result.mean == 0.0 and result.ci == (0.0, 0.0)
    assert result.robust_z == (0.0,) * 4 and result.outliers == ()


def test_pairwise_two_replicas_has_no_interval():
    result = pairwise_pd(THREE[:2], "absolute")
    assert result.mean == pytest.approx(0.1)
    assert math.isnan(result.std) and all(math.isnan(x) for x in result.ci)


@pytest.mark.parametrize(
    "predictions, kwargs, match",
    [
        ([BINARY_1], {}, r"at least 2 replicas.*\(1, 2\)"),
        (BINARY_1, {}, r"at least 2 replicas.*\(2,\)"),
        ([[0.1, 0.2], [0.1]], {}, r"`predictions` must be an array"),
        (THREE, {"metric": "l2"}, r"`metric` must be one of"),
        (THREE, {"confidence": 1.0}, r"`confidence` must be in \(0, 1\)"),
        (THREE, {"n_resamples": 0}, r"`n_resamples` must be >= 1"),
        (THREE, {"metric": "l1"}, r"`predictions\[0\]` must have shape \[N, K\]"),
        ([[0.1, 0.2], [0.1, 1.2]], {}, r"`predictions\[1\]`.*\[0, 1\]"),
    ],
)
def test_pairwise_invalid_arguments(predictions, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pairwise_pd(predictions, **kwargs)


# ---------------------------------------------------------------- Keras metrics


def _reference_and_predictions(name, n=12, seed=3):
    rng = np.random.default_rng(seed)
    return (_random_probabilities(rng, MULTICLASS[name], n).astype("float32") for _ in range(2))


@pytest.mark.parametrize("name", FUNCTIONS)
def test_keras_metric_streams_and_resets(name):
    reference, predictions = _reference_and_predictions(name)
    metric = KERAS_METRICS[name]()
    metric.update_state(reference[:5], predictions[:5])
    metric.update_state(tf.constant(reference[5:]), tf.constant(predictions[5:]))
    expected = FUNCTIONS[name](predictions, reference)
    assert float(metric.result()) == pytest.approx(expected, rel=1e-5)
    metric.reset_state()
    assert float(metric.result()) == 0.0
    metric.update_state(reference[:3], predictions[:3])
    expected = FUNCTIONS[name](predictions[:3], reference[:3])
    assert float(metric.result()) == pytest.approx(expected, rel=1e-5)


def test_keras_metric_sample_weight():
    metric = AbsolutePD()
    # Per-example |diff| = (0.2, 0, 0.5) with weights (1, 3, 2): (0.2 + 1.0) / 6.
    metric.update_state([0.2, 0.4, 0.1], [0.4, 0.4, 0.6], sample_weight=[1.0, 3.0, 2.0])
    assert float(metric.result()) == pytest.approx(0.2)
    metric = Top1PD()
    metric.update_state(MULTI_2, MULTI_1, sample_weight=[[0.0], [1.0], [1.0], [0.0]])
    assert float(metric.result()) == pytest.approx(0.5)


def test_keras_binary_metric_aligns_column_and_flat_shapes():
    metric = RelativePD()
    metric.update_state(np.asarray(BINARY_2)[:, None], np.asarray(BINARY_1))
    assert float(metric.result()) == pytest.approx(1 / 3)


def test_keras_binary_metric_rejects_class_probabilities():
    with pytest.raises(ValueError, match=r"AbsolutePD expects binary.*use L1PD or Top1PD"):
        AbsolutePD().update_state(MULTI_1, MULTI_2)


def test_keras_metric_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"L1PD: y_true \(the reference model's predictions\)"):
        L1PD().update_state(MULTI_1, np.asarray(MULTI_2)[:, :2])


@pytest.mark.parametrize("cls", KERAS_METRICS.values())
def test_keras_metric_config_round_trip(cls):
    metric = cls(name="pd", dtype="float64")
    config = metric.get_config()
    assert config == {"name": "pd", "dtype": "float64"}
    assert cls.from_config(config).get_config() == config
    serialized = keras.saving.serialize_keras_object(metric)
    assert serialized["registered_name"] == f"tf_smelu>{cls.__name__}"
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is cls and restored.get_config() == config


@pytest.mark.parametrize("cls", KERAS_METRICS.values())
def test_keras_metric_loads_config_saved_before_the_package_split(cls):
    # Files saved when the metrics lived in the module `tf_smelu.metrics`.
    saved = {
        "module": "tf_smelu.metrics",
        "class_name": cls.__name__,
        "config": {"name": "pd", "dtype": "float32"},
        "registered_name": f"tf_smelu>{cls.__name__}",
    }
    restored = keras.saving.deserialize_keras_object(saved)
    assert type(restored) is cls and restored.name == "pd"


@pytest.mark.parametrize(
    "units, activation, keras_metrics",
    [(1, "sigmoid", ["absolute", "relative"]), (3, "softmax", ["top1", "l1"])],
)
def test_keras_metrics_in_model_evaluate(units, activation, keras_metrics):
    x = np.random.default_rng(4).normal(size=(40, 5)).astype("float32")

    def make_model(seed):
        return keras.Sequential(
            [
                keras.Input((5,)),
                keras.layers.Dense(
                    units, activation, kernel_initializer=keras.initializers.GlorotUniform(seed)
                ),
            ]
        )

    model, reference = make_model(0), make_model(1).predict(x, verbose=0)
    model.compile(loss="mse", metrics=[KERAS_METRICS[name]() for name in keras_metrics])
    scores = model.evaluate(x, reference, batch_size=16, return_dict=True, verbose=0)
    predictions = model.predict(x, verbose=0)
    for name in keras_metrics:
        expected = FUNCTIONS[name](predictions, reference)
        assert expected > 0
        assert scores[f"{name}_pd"] == pytest.approx(expected, rel=1e-5)
    self_scores = model.evaluate(x, predictions, batch_size=16, return_dict=True, verbose=0)
    assert all(self_scores[f"{name}_pd"] == pytest.approx(0.0, abs=1e-6) for name in keras_metrics)


_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    from tf_smelu.metrics import RelativePD, relative_pd

    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    reference = np.random.default_rng(1).uniform(size=(64, 1)).astype("float32")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, "sigmoid")])
        model.compile(loss="mse", metrics=[RelativePD()])
    scores = model.evaluate(x, reference, batch_size=16, return_dict=True, verbose=0)
    expected = relative_pd(model.predict(x, verbose=0), reference)
    np.testing.assert_allclose(scores["relative_pd"], expected, rtol=1e-5)
    """
)


@pytest.mark.slow
def test_keras_metric_sums_across_mirrored_replicas():
    # Logical devices must be configured before TF initialises, hence a subprocess.
    result = subprocess.run(
        [sys.executable, "-c", _MIRRORED_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("bad, message", [(1.5, r"\[0, 1\]"), (-0.1, r"\[0, 1\]"),
                                          (np.nan, "NaN")])
def test_keras_metrics_reject_what_the_eager_functions_reject(name, bad, message):
    reference, predictions = _reference_and_predictions(name, n=4)
    predictions[1] = bad  # a whole row of class probabilities for l1/top1
    with pytest.raises(ValueError, match=message):
        FUNCTIONS[name](predictions, reference)
    eager_message = "`y_pred` contains" if message == "NaN" else "`y_pred` must"
    with pytest.raises(ValueError, match=eager_message):
        KERAS_METRICS[name]().update_state(reference, predictions)
    with pytest.raises(ValueError, match="`y_true`"):
        KERAS_METRICS[name]().update_state(predictions, reference)

    @tf.function
    def compiled_step(y_true, y_pred):  # as in model.evaluate
        metric.update_state(y_true, y_pred)
        return metric.result()

    metric = KERAS_METRICS[name]()
    with pytest.raises(tf.errors.InvalidArgumentError, match="`y_pred` must contain probab"):
        compiled_step(tf.constant(reference), tf.constant(predictions))
    assert float(compiled_step(tf.constant(reference), tf.constant(reference))) == 0.0
