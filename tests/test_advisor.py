"""The advisor: intervals against ReLU, the frontier, the decision and the search plan.

Rows are made by hand (exact means, known spread) or by a simulated experiment
whose truth is known: nothing trains here.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import pathlib
import zlib

import numpy as np
import pytest

from tf_smelu.experiment import advisor
from tf_smelu.registry import Activation
from tf_smelu.remedies import Recipe
from tf_smelu.training.preactivation import relative_label

BUDGET = 0.002


def _standard(rng: np.random.Generator, size: int) -> np.ndarray:
    """`size` numbers with mean exactly 0 and sd exactly 1, so row means are exact."""
    x = rng.standard_normal(size)
    return (x - x.mean()) / x.std()


def make_row(spec, auc, pd, *, replicas=8, auc_sd=0.0002, pd_sd=0.05, sources=("tower_init",),
             key=None):
    """A result row whose mean AUC is `auc` and mean relative PD `pd`, exactly.

    Its replicas' noise is drawn from `key` (default: `spec`)."""
    activation = Activation.parse(spec)
    rng = np.random.default_rng(zlib.crc32((key or spec).encode()))
    aucs = auc + auc_sd * _standard(rng, replicas)
    weights = np.exp(pd_sd * _standard(rng, replicas * (replicas - 1) // 2))
    pairs = pd * weights / weights.mean()
    return {"activation": activation.name, "beta": activation.beta, "label": activation.label,
            "spec": str(activation), "replicas": replicas, "sources": list(sources),
            "aucs": aucs.tolist(), "auc_mean": float(aucs.mean()),
            "rel_pd_pairs": pairs.tolist(), "rel_pd": float(pairs.mean())}


RELU = make_row("relu", 0.7200, 0.050)


def simulated_row(spec: str, replicas: int) -> dict:
    """A replica experiment with known truth: AUC loss 0.005 β, PD x exp(-β).

    Replica i's numbers depend only on (spec, i), as replica seeds depend only
    on the index: a row extended to more replicas keeps its first ones.
    """
    activation = Activation.parse(spec)
    references = {"gelu": (0.0015, 0.85), "swish": (0.001, 0.9), "softplus": (0.004, 0.8)}
    beta = advisor.scale_of(activation) or 0.0
    loss, factor = references.get(activation.name, (0.005 * beta, np.exp(-beta)))
    aucs, effects = [], []
    for i in range(replicas):
        rng = np.random.default_rng([zlib.crc32(spec.encode()), i])
        aucs.append(0.72 - loss + 0.0004 * rng.standard_normal())
        effects.append(rng.standard_normal())
    pairs = [0.05 * factor * np.exp(0.1 * (effects[i] + effects[j]))
             for i, j in zip(*np.triu_indices(replicas, 1))]
    return {"activation": activation.name, "beta": activation.beta, "label": activation.label,
            "spec": str(activation), "replicas": replicas, "sources": ["tower_init"],
            "aucs": aucs, "auc_mean": float(np.mean(aucs)),
            "rel_pd_pairs": pairs, "rel_pd": float(np.mean(pairs))}


def run_simulated(trial, row):
    new = simulated_row(str(trial.activation), trial.replicas)
    if trial.recipe.remedies:  # a remedy changes nothing in the simulation but the row's name
        new.update(remedy=trial.recipe.remedy_spec, label=trial.label)
    return new


class FakeClock:
    """Advances `seconds_per_replica` per replica trained by `run_trial`."""

    def __init__(self, seconds_per_replica=10.0):
        self.now, self.rate = 0.0, seconds_per_replica

    def __call__(self):
        return self.now

    def run_trial(self, trial, row):
        self.now += self.rate * trial.extra_replicas
        return run_simulated(trial, row)


# --- intervals against the baseline -------------------------------------------------------


def test_changes_against_relu_are_exact_point_estimates_inside_their_intervals():
    analysis = advisor.analyze([RELU, make_row("smelu:0.2", 0.7195, 0.040)])
    (smelu,) = analysis.candidates
    assert smelu.auc_change.estimate == pytest.approx(-0.0005)
    assert smelu.rel_pd_change.estimate == pytest.approx(-0.2)
    for interval in (smelu.auc_change, smelu.rel_pd_change):
        assert interval.low < interval.estimate < interval.high
    # Spread 0.0002 per replica, 8 replicas each: the AUC interval is about +-0.0002.
    assert 0.00005 < smelu.auc_change.high - smelu.auc_change.low < 0.0006
    assert analysis.baseline.auc_change == advisor.Interval(0.0, 0.0, 0.0)


def test_intervals_widen_with_the_replicas_spread():
    def width(auc_sd):
        analysis = advisor.analyze([RELU, make_row("smelu:0.2", 0.7195, 0.04, auc_sd=auc_sd)])
        change = analysis.candidates[0].auc_change
        return change.high - change.low

    assert width(0.002) > 3 * width(0.0002)


def test_intervals_are_deterministic_and_independent_of_row_order():
    rows = [RELU, make_row("smelu:0.2", 0.7195, 0.04), make_row("gelu", 0.719, 0.045)]
    forward, backward = advisor.analyze(rows), advisor.analyze(rows[::-1])
    assert forward.candidates == backward.candidates[::-1]
    assert forward.candidates == advisor.analyze(rows).candidates
    assert forward.candidates != advisor.analyze(rows, seed=1).candidates


def test_rows_are_resampled_independently():
    # A copy of ReLU's replicas under another name: resampled in step with
    # ReLU's, its change would be exactly 0 in every resample.
    copy = {**RELU, "activation": "gelu", "label": "gelu", "spec": "gelu"}
    (gelu,) = advisor.analyze([RELU, copy]).candidates
    assert gelu.auc_change.estimate == 0 and gelu.rel_pd_change.estimate == 0
    assert gelu.auc_change.low < 0 < gelu.auc_change.high
    assert gelu.rel_pd_change.low < 0 < gelu.rel_pd_change.high


def test_pd_difference_between_candidates():
    analysis = advisor.analyze(
        [RELU, make_row("smelu:0.2", 0.7195, 0.040), make_row("smelu:0.4", 0.719, 0.030)])
    small, large = analysis.candidates
    difference = analysis.pd_difference(large, small)
    assert difference.estimate == pytest.approx(-0.01)
    assert difference.high < 0


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.pop("rel_pd_pairs"), "rel_pd_pairs"),
        (lambda r: r.pop("aucs"), "aucs"),
        (lambda r: r.update(rel_pd_pairs=r["rel_pd_pairs"][:-1]), "rel_pd_pairs"),
        (lambda r: r.update(aucs=[*r["aucs"][:-1], float("nan")]), "aucs"),
        (lambda r: r.update(rel_pd=0.3), "rel_pd"),
        (lambda r: r.update(auc_mean=0.5), "auc_mean"),
        (lambda r: r.update(label="smelu(β=0.3)"), "smelu(β=0.3)"),
    ],
)
def test_a_damaged_row_is_named(change, message):
    row = make_row("smelu:0.2", 0.7195, 0.04)
    change(row)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        advisor.analyze([RELU, row])


def test_rows_of_a_results_file_without_pair_pds_get_one_clear_error():
    path = pathlib.Path(__file__).resolve().parent.parent / "docs" / "default_results.json"
    rows = [{k: v for k, v in row.items() if k != "rel_pd_pairs"}
            for row in json.loads(path.read_text(encoding="utf-8"))["results"]]
    with pytest.raises(ValueError, match=r"lacks \['rel_pd_pairs'\].*every replica pair"):
        advisor.recommend(rows, BUDGET)


@pytest.mark.parametrize(
    "rows, message",
    [
        ([], "at least the baseline"),
        ([make_row("smelu:0.2", 0.7195, 0.04)], "No 'relu' row"),
        ([RELU, make_row("gelu", 0.719, 0.04, sources=("order",))], "share their sources"),
        ([RELU, RELU], "several rows of"),
        ([RELU, make_row("gelu", 0.719, 0.04, replicas=3)], "needs >= 4 replicas"),
    ],
)
def test_rows_that_cannot_be_compared_are_refused(rows, message):
    with pytest.raises(ValueError, match=message):
        advisor.analyze(rows)


def test_rescu_rows_need_their_spec_for_the_order():
    row = make_row("rescu:0.2:3", 0.7195, 0.04)
    assert advisor.analyze([RELU, row]).candidates[0].activation.order == 3
    del row["spec"]
    with pytest.raises(ValueError, match="need `spec`"):
        advisor.analyze([RELU, row])


# --- the Pareto frontier -------------------------------------------------------------------


def test_pareto_frontier_of_hand_made_points():
    rel_pd = [0.050, 0.040, 0.045, 0.030, 0.030, 0.060]
    auc = [0.720, 0.719, 0.718, 0.715, 0.715, 0.721]
    # 2 is beaten by 1 (less PD, more AUC); 3 and 4 are equal: both stay.
    assert advisor.pareto_frontier(rel_pd, auc) == [5, 0, 1, 3, 4]


@pytest.mark.parametrize("rel_pd, auc", [([0.1, 0.2], [0.7]), ([0.1, float("nan")], [0.7, 0.7])])
def test_pareto_frontier_refuses_bad_points(rel_pd, auc):
    with pytest.raises(ValueError, match="finite numbers"):
        advisor.pareto_frontier(rel_pd, auc)


def test_family_frontiers_start_at_relu_and_drop_dominated_betas():
    rows = [RELU, make_row("smelu:0.1", 0.7199, 0.045), make_row("smelu:0.2", 0.7190, 0.046),
            make_row("smelu:0.4", 0.7180, 0.030), make_row("gelu", 0.7195, 0.044)]
    frontiers = advisor.family_frontiers(advisor.analyze(rows))
    assert list(frontiers) == ["smelu"]
    assert [c.label for c in frontiers["smelu"]] == ["relu", "smelu(β=0.1)", "smelu(β=0.4)"]


# --- the recommendation ----------------------------------------------------------------------


def recommend(*rows, budget=BUDGET):
    return advisor.recommend([RELU, *rows], budget)


def test_clear_winner():
    advice = recommend(make_row("smelu:0.2", 0.7195, 0.040), make_row("smelu:0.4", 0.7150, 0.030),
                       make_row("gelu", 0.7190, 0.049))
    assert advice.choice.spec == "smelu:0.2"
    assert advice.text.startswith("use smelu(β=0.2) (smelu:0.2): relative PD -20% [")
    assert "at AUC -0.0005 [" in advice.text and "vs relu (R=8 vs R=8" in advice.text
    assert "Reference points: gelu: relative PD -2%" in advice.text
    assert advice.best_per_family["smelu"] is advice.choice


def test_nothing_within_budget_keeps_relu():
    advice = recommend(make_row("smelu:0.4", 0.7150, 0.030))
    assert advice.choice is None
    assert advice.text.startswith("keep relu: nothing reduces relative PD significantly")
    assert "Best beyond budget: smelu(β=0.4): relative PD -40%" in advice.text
    assert "over budget" in advice.text


def test_insignificant_pd_reduction_keeps_relu():
    advice = recommend(make_row("smelu:0.1", 0.7199, 0.048, pd_sd=0.5))
    change = advice.analysis.candidates[0].rel_pd_change
    assert change.estimate < 0 < change.high
    assert advice.choice is None
    assert "Closest within budget: smelu(β=0.1)" in advice.text
    assert "PD reduction not significant" in advice.text


def test_the_budget_binds_on_the_upper_end_of_the_auc_loss():
    # Point loss 0.0019 is within 0.002, but its interval reaches beyond.
    edge = make_row("smelu:0.4", 0.7181, 0.030)
    assert -advisor.analyze([RELU, edge]).candidates[0].auc_change.low > BUDGET
    advice = recommend(edge, make_row("smelu:0.2", 0.7195, 0.040))
    assert advice.choice.spec == "smelu:0.2"
    assert advice.analysis.get("smelu(β=0.4)").budget_status(BUDGET) == advisor.STRADDLES
    assert recommend(edge, budget=0.003).choice.spec == "smelu:0.4"


def test_indistinguishable_betas_are_named():
    advice = recommend(make_row("smelu:0.3", 0.7190, 0.040), make_row("smelu:0.4", 0.7186, 0.039))
    assert advice.choice.spec == "smelu:0.4"
    assert [c.spec for c in advice.indistinguishable] == ["smelu:0.3"]
    assert "smelu(β=0.4) and smelu(β=0.3) are indistinguishable in PD at R=8/8" in advice.text
    distinct = recommend(make_row("smelu:0.3", 0.7190, 0.045), make_row("smelu:0.4", 0.7186, 0.035))
    assert distinct.indistinguishable == () and "indistinguishable" not in distinct.text


def test_a_reference_activation_can_be_the_answer():
    advice = recommend(make_row("smelu:0.2", 0.7195, 0.045), make_row("gelu", 0.7192, 0.035))
    assert advice.choice.spec == "gelu"
    assert advice.text.startswith("use gelu (gelu): relative PD -30%")
    assert "Best of each family within budget: smelu(β=0.2): relative PD -10%" in advice.text


def test_identical_relu_replicas_leave_nothing_to_reduce():
    identical = make_row("relu", 0.72, 0.0)
    advice = advisor.recommend([identical, make_row("smelu:0.2", 0.7195, 0.04)], BUDGET)
    assert advice.choice is None and advice.analysis is None
    assert "predict identically" in advice.text
    with pytest.raises(ValueError, match="predict identically"):
        advisor.analyze([identical])


def test_recommendation_is_json_ready():
    advice = recommend(make_row("smelu:0.2", 0.7195, 0.040), make_row("gelu", 0.7190, 0.049))
    content = json.loads(json.dumps(advice.to_json(), allow_nan=False))
    assert content["choice"] == "smelu:0.2"
    assert [c["spec"] for c in content["candidates"]] == ["smelu:0.2", "gelu"]
    assert content["candidates"][0]["budget"] == "within" and content["candidates"][0]["pd_reduced"]
    assert [p["label"] for p in content["frontiers"]["smelu"]] == ["relu", "smelu(β=0.2)"]


@pytest.mark.parametrize("budget", [-0.001, float("nan"), "0.002"])
def test_bad_budget(budget):
    with pytest.raises(ValueError, match="max_auc_loss"):
        recommend(budget=budget)


# --- the search plan --------------------------------------------------------------------------


SETTINGS = advisor.SearchSettings(BUDGET, families=("smelu",), references=("gelu",),
                                  n_resamples=500)


def smelu_steps(*rows, **settings):
    settings = advisor.SearchSettings(BUDGET, families=("smelu",), references=(), **settings)
    return [(str(t.activation), t.replicas, t.extra_replicas)
            for t in advisor.next_candidates("smelu", [RELU, *rows], settings)]


def test_first_plan_trains_the_baseline_the_first_grid_beta_then_the_references():
    trials = advisor.plan([], SETTINGS)
    assert [(str(t.activation), t.replicas) for t in trials] == [
        ("relu", 8), ("smelu:0.05", 8), ("gelu", 8)]
    default = advisor.plan([], advisor.SearchSettings(BUDGET))
    assert [t.label for t in default] == [
        "relu", "smelu(β=0.05)", "rescu(β=0.05, n=2)", "generalized_smelu(β=0.05)",
        "gelu", "swish", "softplus"]


def test_a_time_budget_cuts_reference_points_before_remedies_and_names_what_it_never_trained():
    settings = advisor.SearchSettings(BUDGET, families=(), references=("gelu", "swish"),
                                      remedies=("ema:0.999",), n_resamples=500,
                                      time_budget=150.0)
    clock = FakeClock(seconds_per_replica=10.0)
    result = advisor.search(clock.run_trial, settings, clock=clock, log=lambda _: None)
    assert [t.label for t in result.trials] == ["relu"]
    assert result.stopped.endswith(
        "; never trained: relu+ema(0.999), gelu, swish (a larger --time_budget measures them)")
    clock = FakeClock(seconds_per_replica=10.0)
    result = advisor.search(clock.run_trial, dataclasses.replace(settings, time_budget=200.0),
                            clock=clock, log=lambda _: None)
    assert [t.label for t in result.trials] == ["relu", "relu+ema(0.999)"]
    assert result.stopped.endswith("; never trained: gelu, swish (a larger --time_budget "
                                   "measures them)")


def test_the_grid_is_climbed_while_betas_are_within_budget():
    assert smelu_steps(make_row("smelu:0.05", 0.7199, 0.048)) == [("smelu:0.1", 8, 8)]
    assert smelu_steps(*(make_row(f"smelu:{b}", 0.7199, 0.048) for b in (0.05, 0.1, 0.2, 0.4,
                                                                          0.8))) == []


def test_the_grid_is_climbed_before_a_straddling_beta_gets_replicas():
    straddling = make_row("smelu:0.4", 0.7181, 0.03)
    within = make_row("smelu:0.2", 0.7195, 0.04)
    assert smelu_steps(within, straddling) == [("smelu:0.8", 8, 8)]
    everything_straddles = [make_row(f"smelu:{b}", 0.7181, 0.03) for b in (0.05, 0.1, 0.2, 0.4,
                                                                            0.8)]
    assert smelu_steps(*everything_straddles) == [  # grid done: the open rows get replicas
        (f"smelu:{b}", 16, 8) for b in (0.05, 0.1, 0.2, 0.4, 0.8)]


def test_a_beta_straddling_the_budget_gets_twice_the_replicas_up_to_the_maximum():
    straddling = make_row("smelu:0.4", 0.7181, 0.03)
    within = make_row("smelu:0.2", 0.7195, 0.04)
    over = make_row("smelu:0.8", 0.7150, 0.02)
    assert smelu_steps(within, straddling, over) == [("smelu:0.4", 16, 8)]
    assert smelu_steps(within, straddling, over, max_replicas=12) == [("smelu:0.4", 12, 4)]
    # At the maximum it counts as over budget: the bracket is bisected below it.
    assert smelu_steps(within, straddling, over, max_replicas=8) == [("smelu:0.28", 8, 8)]


def test_bisection_between_within_and_over_budget():
    within, over = make_row("smelu:0.2", 0.7195, 0.04), make_row("smelu:0.4", 0.7150, 0.03)
    assert smelu_steps(within, over) == [("smelu:0.28", 8, 8)]
    assert smelu_steps(within, over, make_row("smelu:0.28", 0.7190, 0.035)) == [
        ("smelu:0.33", 8, 8)]
    close = make_row("smelu:0.24", 0.7150, 0.03)
    assert smelu_steps(within, close) == []  # 0.24 / 0.2 <= 1 + resolution
    assert smelu_steps(within, close, resolution=0.1) == [("smelu:0.22", 8, 8)]


def test_halving_when_the_first_beta_is_over_budget():
    assert smelu_steps(make_row("smelu:0.05", 0.7150, 0.03)) == [("smelu:0.025", 8, 8)]
    assert smelu_steps(make_row("smelu:0.0125", 0.7150, 0.03)) == []  # below a quarter of 0.05


def test_replicas_go_to_a_reference_tied_with_the_choice_but_not_to_tied_betas():
    tied_betas = [RELU, make_row("smelu:0.3", 0.7190, 0.040), make_row("smelu:0.4", 0.7186, 0.039)]
    settings = advisor.SearchSettings(BUDGET, families=(), references=())
    assert advisor.plan(tied_betas, settings) == []
    with_gelu = [*tied_betas, make_row("gelu", 0.7192, 0.0395)]
    assert {(t.label, t.replicas) for t in advisor.plan(with_gelu, settings)} == {
        ("relu", 16), ("gelu", 16), ("smelu(β=0.4)", 16)}


def test_the_baseline_keeps_up_with_the_replicas_of_the_candidates():
    straddling = make_row("smelu:0.4", 0.7181, 0.03)
    rows = [RELU, make_row("smelu:0.2", 0.7195, 0.04), straddling,
            make_row("smelu:0.8", 0.7150, 0.02)]
    settings = advisor.SearchSettings(BUDGET, families=("smelu",), references=())
    trials = advisor.plan(rows, settings)
    assert [(t.label, t.replicas, t.extra_replicas) for t in trials] == [
        ("relu", 16, 8), ("smelu(β=0.4)", 16, 8)]
    assert "baseline keeps up" in trials[0].reason


def test_replicas_go_to_a_promising_insignificant_candidate_and_to_relu():
    rows = [RELU, make_row("gelu", 0.7199, 0.045, pd_sd=0.5)]
    settings = advisor.SearchSettings(BUDGET, families=(), references=())
    assert [(t.label, t.replicas) for t in advisor.plan(rows, settings)] == [
        ("gelu", 16), ("relu", 16)]


def test_search_finds_the_largest_beta_within_budget_and_ends():
    result = advisor.search(run_simulated, SETTINGS, log=lambda _: None)
    assert result.stopped == "search finished"
    # True AUC loss 0.005 β: the budget 0.002 allows β < 0.4; bisection brackets it.
    assert result.recommendation.choice.spec in ("smelu:0.28", "smelu:0.33")
    assert advisor.plan(result.rows, SETTINGS) == []
    labels = [t.label for t in result.trials]
    assert labels[:3] == ["relu", "smelu(β=0.05)", "gelu"]
    assert all(t.replicas <= SETTINGS.max_replicas for t in result.trials)


def test_search_is_deterministic_and_resumes_from_its_rows():
    first = advisor.search(run_simulated, SETTINGS, log=lambda _: None)
    again = advisor.search(run_simulated, SETTINGS, log=lambda _: None)
    assert first.trials == again.trials and first.rows == again.rows
    half = len(first.trials) // 2
    rows = {}
    for trial in first.trials[:half]:
        rows[trial.label] = run_simulated(trial, None)
    resumed = advisor.search(run_simulated, SETTINGS, list(rows.values()), log=lambda _: None)
    assert resumed.trials == first.trials[half:]
    assert resumed.recommendation.text == first.recommendation.text


def test_time_budget_stops_at_the_first_trial_that_does_not_fit():
    unlimited = advisor.search(run_simulated, SETTINGS, log=lambda _: None).trials
    total = sum(10.0 * t.extra_replicas for t in unlimited)
    for budget in (50.0, total / 2, total - 1.0):
        clock = FakeClock(seconds_per_replica=10.0)
        settings = advisor.SearchSettings(BUDGET, families=("smelu",), references=("gelu",),
                                          n_resamples=500, time_budget=budget)
        result = advisor.search(clock.run_trial, settings, clock=clock, log=lambda _: None)
        assert result.trials == unlimited[:len(result.trials)]  # a prefix of the same search
        assert result.stopped.startswith("time budget: ")
        assert clock.now <= max(budget, 80.0)  # the first trial (8 replicas) always runs
        spent = sum(10.0 * t.extra_replicas for t in unlimited[:len(result.trials) + 1])
        assert spent > budget  # the next trial would not have fit
    assert len(result.trials) < len(unlimited)


def test_search_with_relative_beta_labels_its_rows_in_sigma_and_climbs_the_k_grid():
    def run_relative(trial, row):
        new = simulated_row(str(trial.activation), trial.replicas)
        if advisor.scale_of(trial.activation) is not None:
            new.update(label=relative_label(trial.activation), beta_scale="relative",
                       beta_per_layer={"hidden_activation_0": 0.5 * trial.activation.beta,
                                       "hidden_activation_1": 2 * trial.activation.beta})
        return new

    settings = advisor.SearchSettings(BUDGET, families=("smelu",), references=("gelu",),
                                      n_resamples=500, relative=True)
    assert settings.scale_grid == advisor.RELATIVE_SCALE_GRID
    result = advisor.search(run_relative, settings, log=lambda _: None)
    assert result.stopped == "search finished"
    labels = [t.label for t in result.trials]
    assert labels[:4] == ["relu", "smelu(β=0.125σ)", "gelu", "smelu(β=0.25σ)"]
    # True AUC loss 0.005 k: within the budget 0.002 below k = 0.4, bracketed by 0.25 and 0.5.
    choice = result.recommendation.choice
    assert 0.25 <= choice.scale < 0.5 and choice.label == f"smelu(β={choice.scale:g}σ)"
    assert (f"(smelu:{choice.scale:g} with --beta_scale=relative, β per hidden layer "
            f"{0.5 * choice.scale:.3g}, {2 * choice.scale:.3g})") in result.recommendation.text


def test_search_refuses_a_row_of_the_wrong_size():
    with pytest.raises(ValueError, match="with 8 replicas"):
        advisor.search(lambda trial, row: simulated_row(str(trial.activation), 4), SETTINGS,
                       log=lambda _: None)


def test_search_result_is_json_ready():
    result = advisor.search(run_simulated, SETTINGS, log=lambda _: None)
    content = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert content["stopped"] == "search finished"
    assert content["trials"][0] == {"spec": "relu", "label": "relu", "replicas": 8,
                                    "extra_replicas": 8, "reason": "the baseline"}


# --- settings -----------------------------------------------------------------------------------


def test_settings_from_the_activations_flag():
    settings = advisor.SearchSettings.from_activations(
        ["relu", "smelu:0.2", "smelu:0.4", "rescu:0.3:3", "gelu", "swish"], BUDGET, replicas=6)
    assert [advisor.family_name(f) for f in settings.families] == ["smelu", "rescu(order=3)"]
    assert [str(r) for r in settings.references] == ["gelu", "swish"]
    assert settings.baseline == Activation("relu") and settings.replicas == 6


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"families": ("gelu",)}, "scale parameter"),
        ({"references": ("smelu:0.2",)}, "scale parameter"),
        ({"families": ("smelu", "smelu:0.3")}, "family twice"),
        ({"scale_grid": (0.2, 0.1)}, "scale_grid"),
        ({"scale_grid": ()}, "scale_grid"),
        ({"replicas": 3}, "replicas"),
        ({"replicas": 16, "max_replicas": 8}, "max_replicas"),
        ({"resolution": 0.0}, "resolution"),
        ({"time_budget": -1.0}, "time_budget"),
        ({"confidence": 1.0}, "confidence"),
    ],
)
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        advisor.SearchSettings(BUDGET, **settings)


def test_every_trial_of_the_default_search_is_a_valid_spec():
    settings = advisor.SearchSettings(BUDGET, n_resamples=300)
    trials = advisor.search(run_simulated, settings, log=lambda _: None).trials
    for trial in trials:
        assert Activation.parse(str(trial.activation)) == trial.activation
    per_label = {label: [t.replicas for t in group]
                 for label, group in itertools.groupby(sorted(trials, key=lambda t: t.label),
                                                       key=lambda t: t.label)}
    assert all(r == sorted(set(r)) for r in per_label.values())  # replicas only grow


# --- remedies, cost budgets and the confirmation (issue 22) -----------------------------------


def remedy_row(spec, auc, pd, *, remedy=None, steps=None, params=None, **kwargs):
    """`make_row` of a recipe: `remedy` (e.g. `ensemble:2`) and cost totals if given."""
    row = make_row(spec, auc, pd, key=f"{spec}+{remedy}", **kwargs)
    activation = Activation.parse(spec)
    row.update(activation=activation.name, beta=activation.beta, spec=str(activation))
    if remedy is not None:
        row.update(remedy=remedy, label=Recipe.parse(remedy).label(activation.label))
    row.update({k: v for k, v in (("steps", steps), ("params", params)) if v is not None})
    return row


COSTED_RELU = {**RELU, "steps": 1000, "params": 5000}
ENSEMBLE = remedy_row("relu", 0.7205, 0.030, remedy="ensemble:2", steps=2000, params=10000)
EMA = remedy_row("relu", 0.7200, 0.044, remedy="ema:0.999", steps=1000, params=5000)
SMELU = remedy_row("smelu:0.2", 0.7195, 0.040)  # the built-in trainer's row: no cost fields


def test_remedy_rows_are_read_with_their_remedies_and_costs():
    analysis = advisor.analyze([COSTED_RELU, ENSEMBLE, EMA, SMELU])
    ensemble, ema, smelu = analysis.candidates
    assert ensemble.label == "relu+ensemble(K=2)" and ensemble.spec == "relu+ensemble:2"
    assert (ensemble.train_cost, ensemble.serve_cost) == (2.0, 2.0)
    assert (ema.train_cost, ema.serve_cost) == (1.0, 1.0)
    assert (smelu.train_cost, smelu.serve_cost) == (1.0, 1.0)  # no cost fields: an activation
    # A remedy is its own family with fixed parameters: no β, no member of relu's.
    assert ensemble.family == "relu+ensemble(K=2)" and ensemble.scale is None
    assert advisor.row_recipe(ENSEMBLE).remedies == Recipe.parse("ensemble:2").remedies


def test_a_remedy_row_without_cost_fields_costs_what_its_recipe_says():
    bare = {k: v for k, v in ENSEMBLE.items() if k not in ("steps", "params")}
    (ensemble,) = advisor.analyze([RELU, bare]).candidates
    assert (ensemble.train_cost, ensemble.serve_cost) == (2.0, 2.0)


def test_a_mislabelled_remedy_row_is_named():
    with pytest.raises(ValueError, match=r"describes recipe 'relu\+ema\(0.999\)'"):
        advisor.analyze([RELU, {**EMA, "label": "relu+ema(0.99)"}])
    with pytest.raises(ValueError, match="Result row 'relu\\+ema\\(0.999\\)': .*bogus"):
        advisor.analyze([RELU, {**EMA, "remedy": "bogus:1"}])


def test_budgets_rank_remedies_and_activations_together():
    rows = [COSTED_RELU, ENSEMBLE, EMA, SMELU]
    free = advisor.recommend(rows, BUDGET)
    assert free.choice.label == "relu+ensemble(K=2)"
    assert free.text.startswith("use relu+ensemble(K=2) (relu+ensemble:2): relative PD -40% [")
    assert "cost ×2 to train, ×2 to serve" in free.text.splitlines()[0]
    serve_one = advisor.recommend(rows, BUDGET, max_serve_cost=1)
    assert serve_one.choice.label == "smelu(β=0.2)"
    assert "budget: AUC loss <= 0.002, serve cost <= 1" in serve_one.text
    assert ("relu+ensemble(K=2): relative PD -40%" in serve_one.text
            and "over the cost budget: serve cost 2 > --max_serve_cost=1" in serve_one.text)
    train = advisor.recommend(rows, BUDGET, max_train_cost=1.5)
    assert train.choice.label == "smelu(β=0.2)"
    assert advisor.recommend(rows, BUDGET, max_train_cost=2, max_serve_cost=2).choice.label == (
        "relu+ensemble(K=2)")
    content = json.loads(json.dumps(serve_one.to_json(), allow_nan=False))
    assert content["max_serve_cost"] == 1 and content["max_train_cost"] is None
    by_label = {c["label"]: c for c in content["candidates"]}
    assert by_label["relu+ensemble(K=2)"]["over_cost"] == ["serve cost 2 > --max_serve_cost=1"]
    assert by_label["relu+ensemble(K=2)"]["remedy"] == "ensemble:2"
    assert by_label["smelu(β=0.2)"]["over_cost"] == [] and by_label["smelu(β=0.2)"]["remedy"] is None


def test_a_remedy_can_be_the_answer_and_keep_relu_names_the_remedy_over_budget():
    ema = remedy_row("relu", 0.7200, 0.035, remedy="ema:0.999", steps=1000, params=5000)
    advice = advisor.recommend([COSTED_RELU, ema, SMELU], BUDGET)
    assert advice.choice.spec == "relu+ema:0.999"
    assert "Remedies: relu+ema(0.999): relative PD -30%" in advice.text
    keep = advisor.recommend([COSTED_RELU, ENSEMBLE], BUDGET, max_serve_cost=1)
    assert keep.choice is None
    assert "Best beyond budget: relu+ensemble(K=2)" in keep.text and "serve cost <= 1" in keep.text


def test_a_cost_a_hair_over_the_budget_is_within_it():
    # Generalized SmeLU learns a few parameters per unit: not a bigger model to serve.
    slightly = remedy_row("smelu:0.2", 0.7195, 0.040, steps=1000, params=5010)
    advice = advisor.recommend([COSTED_RELU, slightly], BUDGET, max_serve_cost=1)
    assert advice.choice.serve_cost == pytest.approx(1.002)
    bigger = remedy_row("smelu:0.2", 0.7195, 0.040, steps=1000, params=5100)
    assert advisor.recommend([COSTED_RELU, bigger], BUDGET, max_serve_cost=1).choice is None


def test_the_frontier_spans_every_remedy_within_the_cost_budgets():
    analysis = advisor.analyze([COSTED_RELU, ENSEMBLE, EMA, SMELU])
    assert [c.label for c in advisor.frontier(analysis)] == ["relu+ensemble(K=2)"]
    cheap = advisor.frontier(analysis, {"max_serve_cost": 1})
    # ema keeps relu's AUC with less PD: relu is dominated; smelu trades AUC for PD.
    assert [c.label for c in cheap] == ["relu+ema(0.999)", "smelu(β=0.2)"]
    content = advisor.recommend([COSTED_RELU, ENSEMBLE, EMA, SMELU], BUDGET,
                                max_serve_cost=1).to_json()
    assert [p["label"] for p in content["frontier"]] == [c.label for c in cheap]
    assert "relu+ensemble(K=2)" not in content["frontiers"]  # per-family: β families only


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"max_serve_cost": 0.5}, r"`max_serve_cost` must be a number >= 1.*rule out even relu"),
        ({"max_train_cost": -1}, r"`max_train_cost` must be a number >= 1"),
        ({"max_train_cost": float("nan")}, "max_train_cost"),
        ({"families": (), "references": (), "remedies": ("ensemble:2", "smelu:1+ensemble:3"),
          "max_serve_cost": 1},
         r"rule out every candidate.*relu\+ensemble\(K=2\) \(serve cost 2 > "
         r"--max_serve_cost=1\); smelu\(β=1\)\+ensemble\(K=3\) \(serve cost 3"),
        ({"remedies": ("gelu",)}, "must each name a remedy"),
    ],
)
def test_budgets_that_rule_out_too_much_are_refused_before_training(settings, message):
    with pytest.raises(ValueError, match=message):
        advisor.SearchSettings(BUDGET, **settings)


def test_recommend_refuses_a_budget_below_one():
    with pytest.raises(ValueError, match="max_train_cost"):
        advisor.recommend([RELU, SMELU], BUDGET, max_train_cost=0.9)


def test_remedies_are_planned_like_reference_points_and_those_over_budget_never():
    settings = advisor.SearchSettings(
        BUDGET, families=("smelu",), references=("gelu",), max_serve_cost=1,
        remedies=("ema:0.999", "ensemble:2", "smelu:1+ema:0.9"))
    assert settings.ruled_out == {"relu+ensemble(K=2)": "serve cost 2 > --max_serve_cost=1"}
    trials = advisor.plan([], settings)
    assert [(t.label, t.replicas) for t in trials] == [
        ("relu", 8), ("relu+ema(0.999)", 8), ("smelu(β=1)+ema(0.9)", 8),
        ("smelu(β=0.05)", 8), ("gelu", 8)]
    assert trials[2].to_json()["spec"] == "smelu:1.0+ema:0.9"
    assert trials[2].recipe == Recipe.parse("smelu:1+ema:0.9")
    # smelu(β=1)+ema(0.9) is not a member of the smelu family: the β search starts anyway.
    done = [RELU, make_row("gelu", 0.7190, 0.049),
            remedy_row("relu", 0.72, 0.04, remedy="ema:0.999"),
            remedy_row("smelu:1", 0.71, 0.03, remedy="ema:0.9")]
    assert [t.label for t in advisor.plan(done, settings)] == ["smelu(β=0.05)"]


def test_a_resumed_search_neither_plans_nor_names_as_never_trained_the_rows_it_has():
    settings = advisor.SearchSettings(BUDGET, families=(), references=("gelu", "swish"),
                                      remedies=("ema:0.999",), n_resamples=500,
                                      time_budget=100.0)
    done = [EMA, make_row("gelu", 0.7190, 0.049)]
    assert [t.label for t in advisor.plan(done, settings)] == ["relu", "swish"]
    clock = FakeClock(seconds_per_replica=10.0)
    result = advisor.search(clock.run_trial, settings, done, clock=clock, log=lambda _: None)
    assert [t.label for t in result.trials] == ["relu"]
    assert result.stopped.endswith("; never trained: swish (a larger --time_budget measures them)")


def test_replicas_go_to_a_promising_remedy_but_not_to_one_measured_over_a_cost_budget():
    noisy_ema = remedy_row("relu", 0.7199, 0.045, remedy="ema:0.999", pd_sd=0.5)
    settings = advisor.SearchSettings(BUDGET, families=(), references=(),
                                      remedies=("ema:0.999",))
    assert [(t.label, t.replicas) for t in advisor.plan([RELU, noisy_ema], settings)] == [
        ("relu+ema(0.999)", 16), ("relu", 16)]
    # Measured serving twice relu's parameters: over the budget, however many replicas.
    bigger = {**noisy_ema, "params": 10000}
    settings = dataclasses.replace(settings, max_serve_cost=1)
    rows = [COSTED_RELU, bigger]
    assert advisor.plan(rows, settings) == []


def simulated_remedy_row(trial, seed_effect=0.0):
    """`simulated_row` of a trial: ema:0.999 cuts PD by 30% for free; ensemble:2 by 50%."""
    row = simulated_row(str(trial.activation), trial.replicas)
    factor = {"": 1.0, "ema:0.999": 0.7, "ensemble:2": 0.5}[trial.recipe.remedy_spec]
    factor *= 1 + (seed_effect if trial.seed is not None and trial.remedies else 0.0)
    pairs = [p * factor for p in row["rel_pd_pairs"]]
    members = len(trial.recipe.member_seeds(0))
    row.update(rel_pd_pairs=pairs, rel_pd=float(np.mean(pairs)), label=trial.label,
               steps=1000 * members, params=5000 * members, **trial.row_fields)
    if trial.remedies:
        row["remedy"] = trial.recipe.remedy_spec
    return row


REMEDY_SETTINGS = advisor.SearchSettings(BUDGET, families=(), references=("gelu",),
                                         remedies=("ema:0.999", "ensemble:2"), n_resamples=500)


def test_search_with_remedies_then_a_confirmation_that_holds():
    trained = []

    def run_trial(trial, row):
        trained.append(trial)
        return simulated_remedy_row(trial)

    result = advisor.search(run_trial, REMEDY_SETTINGS, log=lambda _: None)
    assert result.recommendation.choice.label == "relu+ensemble(K=2)"
    assert result.confirmation is None and not any(t.seed for t in trained)
    confirmed = advisor.confirm(run_trial, result, REMEDY_SETTINGS, log=lambda _: None)
    fresh = advisor.confirmation_seed(REMEDY_SETTINGS.seed)
    assert fresh != REMEDY_SETTINGS.seed
    assert [(t.label, t.seed, t.replicas) for t in trained[-2:]] == [
        ("relu", fresh, 8), ("relu+ensemble(K=2)", fresh, 8)]
    assert confirmed.confirmation.held and confirmed.confirmation.problems == ()
    assert [r["confirmation"] for r in confirmed.confirmation_rows] == [True, True]
    assert confirmed.rows == result.rows  # the confirmation's rows stay apart
    assert confirmed.text.splitlines()[-1].startswith(
        f"Confirmed on fresh replica seeds (base seed {fresh}, R=8 for relu and "
        "relu+ensemble(K=2)): relative PD -50% [")
    content = json.loads(json.dumps(confirmed.to_json(), allow_nan=False))
    assert content["confirmation"]["held"] and content["confirmation"]["seed"] == fresh
    assert content["confirmation"]["rows"] == ["relu", "relu+ensemble(K=2)"]
    assert content["text"].endswith(confirmed.confirmation.text)
    # Resumed: the finished confirmation rows are reused, nothing trains.
    again = advisor.confirm(lambda *_: pytest.fail("trained again"), result, REMEDY_SETTINGS,
                            confirmed.confirmation_rows, log=lambda _: None)
    assert again.confirmation == confirmed.confirmation


def test_a_confirmation_that_does_not_hold_says_why():
    result = advisor.search(lambda t, r: simulated_remedy_row(t), REMEDY_SETTINGS,
                            log=lambda _: None)
    # On the fresh seeds the ensemble's PD cut is gone (x 0.5 x 2 = relu's PD).
    confirmed = advisor.confirm(lambda t, r: simulated_remedy_row(t, seed_effect=1.0), result,
                                REMEDY_SETTINGS, log=lambda _: None)
    assert not confirmed.confirmation.held
    assert confirmed.confirmation.problems == ("its PD reduction is no longer significant",)
    assert confirmed.text.splitlines()[-1].startswith("NOT confirmed on fresh replica seeds")
    assert confirmed.to_json()["confirmation"]["held"] is False
    # Served at cost 2 while the budget now says 1: judged from the same rows, it fails on cost.
    strict = dataclasses.replace(REMEDY_SETTINGS, max_serve_cost=1)
    judged = advisor.judge_confirmation(
        confirmed.confirmation_rows, result.recommendation, strict)
    assert "serve cost 2 > --max_serve_cost=1" in judged.problems


def test_keep_relu_needs_no_confirmation():
    settings = advisor.SearchSettings(0.0001, families=(), references=("softplus",),
                                      n_resamples=500)
    result = advisor.search(lambda t, r: simulated_remedy_row(t), settings, log=lambda _: None)
    assert result.recommendation.choice is None
    said = []
    confirmed = advisor.confirm(lambda *_: pytest.fail("trained"), result, settings,
                                log=said.append)
    assert confirmed is result and confirmed.to_json()["confirmation"] is None
    assert said == ["advisor: keep relu needs no confirmation (nothing would change)"]


@pytest.mark.slow
def test_main_job_confirms_its_choice_on_fresh_seeds_and_resumes_the_confirmation(
        tmp_path, validate_results):
    """One search through the main job (built-in trainer, activations), then a resume that
    finds the search and one confirmation row finished and trains only the other.

    On this tiny model swish's PD cut is within the replicas' noise: at seed 0 (R = 4) the
    search picks it, on another CPU (oneDNN kernels differ in the last bits) it may keep
    relu; both outcomes are checked for what they must write.
    """
    import os
    import subprocess
    import sys

    script = pathlib.Path(__file__).resolve().parent.parent / "examples" / \
        "recsys_reproducibility.py"
    args = [sys.executable, str(script), "--quick", "--train_examples=10000",
            "--eval_examples=2000", "--hidden_units=16,8", "--activations=relu,softplus,swish",
            "--replicas=4", "--max_replicas=4", "--max_auc_loss=0.05",
            # The rate the learning-rate sweep picks here; the sweep is test_learning_rate's.
            "--learning_rate=0.032", "--notune_learning_rate",
            f"--output_dir={tmp_path}", "--noprogress"]

    def run():
        result = subprocess.run(args, capture_output=True, text=True, timeout=600,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    def numbers(rows):  # all but the time taken
        return [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]

    first = run()
    content = validate_results(tmp_path / "results.json")
    advice = content["advice"]["tower_init"]
    search = [r for r in content["results"] if not r.get("confirmation")]
    confirmations = [r for r in content["results"] if r.get("confirmation")]
    assert [r["label"] for r in search] == ["relu", "softplus", "swish"]
    confirmation = advice["confirmation"]
    if advice["choice"] is None:
        assert confirmation is None and not confirmations
        assert "advisor: keep relu needs no confirmation (nothing would change)" in first
        kept = content["results"]
    else:
        fresh = advisor.confirmation_seed(content["config"]["seed"])
        chosen = advice["choice"]
        assert confirmation["seed"] == fresh and confirmation["rows"] == ["relu", chosen]
        assert confirmation["held"] == (not confirmation["problems"])
        assert confirmation["text"] in first and advice["text"].endswith(confirmation["text"])
        assert [(r["label"], r["seed"], r["replicas"]) for r in confirmations] == [
            ("relu", fresh, 4), (chosen, fresh, 4)]
        # Fresh seeds, other replicas: not one AUC in common with the search's rows.
        assert not set(confirmations[0]["aucs"]) & set(search[0]["aucs"])
        assert "relu [confirmation]" in first
        kept = content["results"][:-1]  # interrupted before the last confirmation row

    (tmp_path / "results.json").write_text(
        json.dumps({**content, "results": kept, "complete": False}), encoding="utf-8")
    second = run()
    resumed = validate_results(tmp_path / "results.json")
    assert "advisor: relu to R=4" not in second  # neither the search's relu nor the fresh one
    assert numbers(resumed["results"]) == numbers(content["results"])  # the same, in place
    assert resumed["advice"]["tower_init"]["confirmation"] == confirmation
    if confirmation is None:
        assert "Loaded " not in second  # nothing left to train: the data is not even read
    else:
        assert f"advisor: {advice['choice']} to R=4: confirmation" in second
