"""`roc_auc` and `log_loss` of binary predictions against labels."""

import doctest
import math

import numpy as np
import pytest

from tf_smelu.metrics import accuracy, log_loss, roc_auc


def _pairwise_auc(labels, scores):
    """AUC by counting every (positive, negative) pair; a tie counts half."""
    positives = [s for y, s in zip(labels, scores) if y == 1]
    negatives = [s for y, s in zip(labels, scores) if y == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


# ---------------------------------------------------------------- roc_auc


@pytest.mark.parametrize(
    "labels, scores, expected",
    [
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),  # 0.35 < 0.4 is the one lost pair of 4
        ([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], 1.0),
        ([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4], 0.0),
        ([0, 1, 1], [-3.0, 5.0, 7.0], 1.0),  # any real scores, e.g. logits
    ],
)
def test_roc_auc_hand_computed(labels, scores, expected):
    result = roc_auc(labels, scores)
    assert isinstance(result, float)
    assert result == pytest.approx(expected)


@pytest.mark.parametrize(
    "labels, scores, expected",
    [
        # Pairs (pos, neg): (0.5, 0.5) tie = 1/2, (0.5, 0.2) = 1, (0.9, 0.5) = 1, (0.9, 0.2) = 1.
        ([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9], 3.5 / 4),
        # One positive tied with two of three negatives, above the third: (1 + 2 * 0.5) / 3.
        ([0, 0, 0, 1], [0.3, 0.3, 0.1, 0.3], 2 / 3),
        ([0, 1, 0, 1, 1], [0.7] * 5, 0.5),  # all tied
    ],
)
def test_roc_auc_ties_count_half(labels, scores, expected):
    assert roc_auc(labels, scores) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_pairwise_count_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 200))
    labels = rng.integers(0, 2, n)
    labels[:2] = (0, 1)  # both classes present
    # Rounding to one decimal creates many ties between and within the classes.
    scores = np.round(rng.uniform(size=n) + 0.3 * labels, 1)
    assert roc_auc(labels, scores) == pytest.approx(_pairwise_auc(labels, scores), abs=1e-12)


def test_roc_auc_input_forms():
    labels, scores = [0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]
    expected = roc_auc(labels, scores)
    assert roc_auc(np.asarray(labels, bool), np.asarray(scores, np.float32)) == expected
    assert roc_auc(np.asarray(labels)[:, None], np.asarray(scores)[:, None]) == expected


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0, 0], [True]])
def test_roc_auc_single_class_raises(labels):
    with pytest.raises(ValueError, match=r"both positive and negative labels"):
        roc_auc(labels, np.linspace(0.1, 0.9, len(labels)))


@pytest.mark.parametrize(
    "labels, scores, match",
    [
        ([0, 1], [0.1, 0.2, 0.3], r"same shape.*labels\.shape=\(2,\), scores\.shape=\(3,\)"),
        ([0, 1], [[0.1], [0.2]], r"same shape.*\(2,\).*\(2, 1\)"),
        ([], [], r"at least one example"),
        ([0, 2, 1], [0.1, 0.2, 0.3], r"`labels` must be 0 or 1.*2\.0"),
        ([0, 1, 1], [0.1, np.nan, 0.3], r"`scores` contains NaN \(1 of 3"),
        (["a", "b"], [0.1, 0.2], r"`labels` must be a numeric array"),
    ],
)
def test_roc_auc_invalid_inputs(labels, scores, match):
    with pytest.raises(ValueError, match=match):
        roc_auc(labels, scores)


# ---------------------------------------------------------------- log_loss


@pytest.mark.parametrize(
    "labels, probabilities, expected",
    [
        ([1, 0], [0.8, 0.4], -(math.log(0.8) + math.log(0.6)) / 2),
        ([1, 1, 0], [0.5, 0.25, 0.75], (math.log(2) + 2 * math.log(4)) / 3),
        ([0.5], [0.5], math.log(2)),  # soft label
        ([0.25], [0.5], math.log(2)),  # -(0.25 log 0.5 + 0.75 log 0.5)
    ],
)
def test_log_loss_hand_computed(labels, probabilities, expected):
    result = log_loss(labels, probabilities)
    assert isinstance(result, float)
    assert result == pytest.approx(expected, rel=1e-12)


def test_log_loss_clips_to_eps():
    assert log_loss([1], [0.0]) == pytest.approx(-math.log(1e-7), rel=1e-12)
    assert log_loss([0], [1.0]) == pytest.approx(-math.log(1e-7), rel=1e-9)
    assert log_loss([1, 0], [1.0, 0.0]) == pytest.approx(-math.log(1 - 1e-7), rel=1e-9)
    assert log_loss([1], [0.0], eps=0.01) == pytest.approx(-math.log(0.01), rel=1e-12)
    assert log_loss([1], [0.3], eps=0.01) == pytest.approx(-math.log(0.3), rel=1e-12)


def test_log_loss_matches_elementwise_sum_on_random_data():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 100)
    probabilities = rng.uniform(0.01, 0.99, 100)
    expected = -sum(
        math.log(p) if y == 1 else math.log(1 - p) for y, p in zip(labels, probabilities)
    ) / 100
    assert log_loss(labels, probabilities) == pytest.approx(expected, rel=1e-12)
    column = log_loss(labels[:, None], probabilities[:, None].astype(np.float32))
    assert column == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "labels, probabilities, kwargs, match",
    [
        # [N] against [N, 1] would broadcast to [N, N] in NumPy arithmetic.
        ([1, 0], [[0.8], [0.4]], {}, r"same shape.*labels\.shape=\(2,\).*\.shape=\(2, 1\)"),
        ([1, 0, 1], [0.8, 0.4], {}, r"same shape.*\(3,\).*\(2,\)"),
        ([], [], {}, r"at least one example"),
        ([1, 0], [0.8, np.nan], {}, r"`probabilities` contains NaN"),
        ([1, 0], [2.5, -1.0], {}, r"`probabilities` must be in \[0, 1\].*-1\.0, 2\.5"),
        ([1, 2], [0.5, 0.5], {}, r"`labels` must be in \[0, 1\]"),
        ([1, 0], [0.8, 0.4], {"eps": 0.0}, r"`eps` must be in \(0, 0\.5\)"),
        ([1, 0], [0.8, 0.4], {"eps": 0.5}, r"`eps` must be in \(0, 0\.5\)"),
    ],
)
def test_log_loss_invalid_inputs(labels, probabilities, kwargs, match):
    with pytest.raises(ValueError, match=match):
        log_loss(labels, probabilities, **kwargs)


def test_docstring_examples():
    result = doctest.testmod(accuracy)
    assert result.attempted == 2 and result.failed == 0
