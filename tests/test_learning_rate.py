"""The baseline's learning-rate sweep before the `--max_auc_loss` search (`learning_rate`)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from tf_smelu.common import UserError
from tf_smelu.experiment import CTRExperimentConfig
from tf_smelu.experiment import learning_rate as lr
from tf_smelu.training.replicas import DivergedError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN_JOB = os.path.join(REPO, "examples", "recsys_reproducibility.py")


def _results(aucs_by_step: dict[int, float | None], configured: float = 0.01
             ) -> dict[int, lr.RateResult]:
    """Fake results: a mean AUC per step (None: diverged)."""
    return {step: lr.RateResult(step, lr.rate_at(configured, step), diverged="nan at step 3")
            if auc is None else
            lr.RateResult(step, lr.rate_at(configured, step), (auc - 1e-3, auc, auc + 1e-3))
            for step, auc in aucs_by_step.items()}


def _sweep(aucs_by_step, configured=0.01) -> lr.Sweep:
    return lr.Sweep(configured, _results(aucs_by_step, configured), ("init",))


# ---- the grid and the choice (pure) ----


def test_the_grid_is_half_decades_around_the_configured_rate():
    assert lr.rate_at(0.0123, 0) == 0.0123  # the configured rate itself, not rounded
    assert [lr.rate_at(0.01, s) for s in (-2, -1, 1, 2, 3)] == [0.001, 0.0032, 0.032, 0.1, 0.32]


def test_the_base_grid_comes_first():
    assert lr.next_step({}) == lr.BASE_STEPS[0]
    assert lr.next_step(_results({-1: 0.70})) == 0
    assert lr.next_step(_results({-1: 0.70, 0: 0.72})) == 1


def test_an_interior_best_decides_the_sweep():
    sweep = _sweep({-1: 0.70, 0: 0.72, 1: 0.71})
    assert lr.next_step(sweep.results) is None
    assert sweep.chosen.step == 0 and sweep.at_edge is None
    assert sweep.text().startswith("learning rate: chose 0.01 (AUC 0.7200")


@pytest.mark.parametrize("aucs, extension", [
    ({-1: 0.73, 0: 0.72, 1: 0.71}, -2),                  # best at the low edge: one step lower
    ({-1: 0.70, 0: 0.72, 1: 0.73}, 2),                   # best at the high edge: one step higher
    ({-2: 0.74, -1: 0.73, 0: 0.72, 1: 0.71}, -3),        # still the lowest: again
    ({-1: 0.70, 0: 0.72, 1: 0.73, 2: 0.72}, None),       # the extension was worse: decided
])
def test_a_best_rate_at_an_edge_extends_the_grid_one_step(aucs, extension):
    assert lr.next_step(_results(aucs)) == extension


@pytest.mark.parametrize("aucs, edge, chosen", [
    ({-3: 0.75, -2: 0.74, -1: 0.73, 0: 0.72, 1: 0.71}, "low", "0.00032"),
    ({-1: 0.70, 0: 0.71, 1: 0.72, 2: 0.73, 3: 0.74}, "high", "0.32"),
])
def test_the_extension_is_bounded_and_an_edge_is_said(aucs, edge, chosen):
    sweep = _sweep(aucs)
    assert lr.next_step(sweep.results) is None
    assert sweep.at_edge == edge
    assert sweep.text().startswith(f"learning rate: chose {chosen} ")
    assert f"It is the {edge}est rate the sweep may try" in sweep.text()
    assert sweep.to_json()["at_edge"] == edge


def test_a_diverged_rate_counts_as_the_worst_and_the_sweep_goes_on():
    sweep = _sweep({-1: 0.60, 0: 0.61, 1: None})
    assert sweep.chosen.step == 0 and lr.next_step(sweep.results) is None
    assert "diverged: nan at step 3" in sweep.table()
    assert sweep.to_json()["rates"][2]["auc_mean"] is None


def test_a_non_finite_auc_counts_as_diverged():
    results = _results({-1: 0.60, 0: 0.61})
    results[1] = lr.RateResult(1, 0.032, (math.nan, 0.9, 0.9))
    assert lr.best(list(results.values())).step == 0


def test_when_every_rate_diverges_the_sweep_tries_lower_rates_then_says_so_in_one_line():
    aucs = {step: None for step in (-1, 0, 1)}
    assert lr.next_step(_results(aucs)) == -2
    aucs.update({-2: None, -3: None})
    sweep = _sweep(aucs)
    assert lr.next_step(sweep.results) is None
    with pytest.raises(lr.AllDivergedError, match="down to 0.00032") as raised:
        _ = sweep.chosen
    assert isinstance(raised.value, UserError) and "\n" not in str(raised.value)


def test_ties_go_to_the_rate_nearest_the_configured_one_then_to_the_lower():
    assert _sweep({-1: 0.72, 0: 0.72, 1: 0.72}).chosen.step == 0
    assert _sweep({-1: 0.72, 0: 0.70, 1: 0.72}).chosen.step == -1


# ---- the sweep over a row trainer, and its cache ----


class FakeTrainer:
    """The main job's row trainer, with an AUC that peaks at `peak` and diverges above `ceiling`."""

    def __init__(self, peak=0.003, ceiling=math.inf):
        self.peak, self.ceiling, self.calls = peak, ceiling, []

    def row(self, recipe, sources, replicas, *, seed=None, learning_rate=None):
        self.calls.append(dict(recipe=recipe, sources=tuple(sources), replicas=replicas,
                               seed=seed, learning_rate=learning_rate))
        if learning_rate > self.ceiling:
            raise DivergedError(f"training diverged at learning rate {learning_rate:g}")
        auc = 0.75 - 0.01 * math.log10(learning_rate / self.peak) ** 2
        return {"aucs": [auc - 1e-4 * r for r in range(replicas)], "train_seconds": 2.0}


def _config(**changes) -> CTRExperimentConfig:
    values = dict(max_auc_loss=0.002, replicas=4, learning_rate=0.01, sources=["tower_init"])
    return CTRExperimentConfig.from_dict({**values, **changes})


def _tune(config, output_dir, trainer, finished=()):
    lines, built = [], []

    def make_trainer(c):
        built.append(c)
        return trainer

    tuned, sweep, rows = lr.tune(config, make_trainer, output_dir, finished, lines.append)
    return tuned, sweep, rows, lines, built


def test_the_sweep_trains_relu_replicas_at_each_rate_seeded_apart_from_the_rows(tmp_path):
    trainer = FakeTrainer(peak=0.001, ceiling=0.02)
    config = _config()
    tuned, sweep, _, lines, built = _tune(config, str(tmp_path), trainer)
    assert [c["learning_rate"] for c in trainer.calls] == [0.0032, 0.01, 0.032, 0.001, 0.00032]
    call = trainer.calls[0]
    assert str(call["recipe"].activation) == "relu" and not call["recipe"].remedies
    assert call["sources"] == ("init", "tower_init") and call["replicas"] == lr.REPLICAS
    assert call["seed"] != config.training.seed and len({c["seed"] for c in trainer.calls}) == 1
    assert len(built) == 1 and built[0].beta_scale == "absolute"  # one trainer, no σ measured
    assert sweep.chosen.learning_rate == 0.001
    assert tuned.training.learning_rate == 0.001 and config.training.learning_rate == 0.01
    # What results.json compares on a resume is the user's configuration, not the tuned one.
    assert config.to_dict() == _config().to_dict() and config.to_dict()["learning_rate"] == 0.01
    assert lines[-1].splitlines()[-1].startswith("learning rate: chose 0.001 (AUC 0.7499")


def test_the_cache_is_written_and_reused_without_building_a_trainer(tmp_path):
    _, first, _, _, _ = _tune(_config(), str(tmp_path), FakeTrainer())
    assert (tmp_path / lr.CACHE_FILE).exists()
    trainer = FakeTrainer(peak=1.0)  # would choose otherwise, if it trained
    tuned, again, _, lines, built = _tune(_config(), str(tmp_path), trainer)
    assert not trainer.calls and not built
    assert again.results == first.results and tuned.training.learning_rate == 0.0032
    assert "trained earlier" in lines[0] and "(trained earlier)" in lines[1]


def test_an_interrupted_sweep_trains_only_the_missing_rates(tmp_path):
    _, full, _, _, _ = _tune(_config(), str(tmp_path), FakeTrainer())
    lr.write_cache(str(tmp_path / lr.CACHE_FILE), lr.cache_key(_config()),
                   {s: r for s, r in full.results.items() if s < 1})
    trainer = FakeTrainer()
    _, resumed, _, _, _ = _tune(_config(), str(tmp_path), trainer)
    assert [c["learning_rate"] for c in trainer.calls] == [0.032]
    assert resumed.results == full.results


@pytest.mark.parametrize("change", [dict(seed=1), dict(model="dcn"), dict(epochs=2),
                                    dict(batch_size=256), dict(train_examples=1000),
                                    dict(sources=["init+order"]), dict(learning_rate=0.02)])
def test_a_cache_of_another_configuration_is_ignored_with_one_line(tmp_path, change):
    _tune(_config(), str(tmp_path), FakeTrainer())
    trainer = FakeTrainer()
    _, _, _, lines, _ = _tune(_config(**change), str(tmp_path), trainer)
    assert trainer.calls  # trained again
    [line] = [line for line in lines if "another configuration" in line]
    assert next(iter(change)) in line or "sweep_sources" in line


def test_changes_that_do_not_touch_the_sweep_reuse_it(tmp_path):
    _tune(_config(), str(tmp_path), FakeTrainer())
    trainer = FakeTrainer()
    _tune(_config(activations=["relu", "gelu"], replicas=8, max_replicas=16, time_budget=9.0,
                  max_auc_loss=0.01, progress=False), str(tmp_path), trainer)
    assert not trainer.calls


_RATE = {"step": 0, "learning_rate": 0.01, "aucs": [0.7, 0.7, 0.7], "diverged": None,
         "train_seconds": 1}


@pytest.mark.parametrize("content", [
    "{not json", "", "[]", "\x00\xff", {"key": None}, {"rates": None},
    {"rates": [{"step": 9}]}, {"rates": [{**_RATE, "step": 9}]}, {"rates": [1]},
    {"rates": [{**_RATE, "aucs": [2.0, 0.7, 0.7]}]}, {"rates": [{**_RATE, "aucs": [0.7]}]},
    {"rates": [{**_RATE, "learning_rate": 0.02}]}, {"rates": [{**_RATE, "diverged": 3}]},
    {"rates": [{**_RATE, "train_seconds": "x"}]},
])
def test_a_damaged_cache_is_one_line_and_the_sweep_runs_again(tmp_path, content):
    if isinstance(content, dict):  # a file of this configuration, damaged inside
        content = json.dumps({"key": lr.cache_key(_config()), **content})
    (tmp_path / lr.CACHE_FILE).write_text(content)
    trainer = FakeTrainer()
    _, sweep, _, lines, _ = _tune(_config(), str(tmp_path), trainer)
    [line] = [line for line in lines if "not a learning-rate sweep this run can reuse" in line]
    assert "\n" not in line and lr.CACHE_FILE in line
    assert trainer.calls and sweep.chosen.learning_rate == 0.0032
    json.loads((tmp_path / lr.CACHE_FILE).read_text())  # replaced by a sound one


def test_finished_rows_trained_at_another_rate_are_not_reused():
    rows = [{"label": "relu", "learning_rate": 0.01}, {"label": "gelu", "learning_rate": 0.0032},
            {"label": "old"}]
    lines = []
    kept = lr.rows_at_rate(rows, 0.0032, lines.append)
    assert [r["label"] for r in kept] == ["gelu", "old"]
    assert lines == ["1 finished row(s) of results.json were trained at learning rate 0.01, "
                     "not the chosen 0.0032: they are trained again"]


def test_without_tuning_nothing_is_trained_or_written(tmp_path):
    trainer = FakeTrainer()
    config = _config(tune_learning_rate=False)
    tuned, sweep, rows, _, _ = _tune(config, str(tmp_path), trainer, finished=[{"x": 1}])
    assert tuned is config and sweep is None and rows == [{"x": 1}]
    assert not trainer.calls and not os.listdir(tmp_path)


# ---- the configuration ----


def test_tuning_is_on_with_the_advisor_and_recorded_resolved():
    config = CTRExperimentConfig(max_auc_loss=0.002, replicas=4)
    assert config.tune_learning_rate is True and config.to_dict()["tune_learning_rate"] is True
    assert CTRExperimentConfig.from_dict(config.to_dict()) == config
    # explicit on resumes an unset run: the same configuration
    assert CTRExperimentConfig(max_auc_loss=0.002, replicas=4, tune_learning_rate=True) == config
    assert CTRExperimentConfig(max_auc_loss=0.002, replicas=4,
                               tune_learning_rate=False).tune_learning_rate is False
    assert CTRExperimentConfig().tune_learning_rate is None  # the flag's default stays unset
    assert CTRExperimentConfig(tune_learning_rate=False) == CTRExperimentConfig()


# ---- end to end ----


def _main_job(output_dir):
    return subprocess.run(
        [sys.executable, MAIN_JOB, "--train_examples=2000", "--eval_examples=1000",
         "--hidden_units=8", "--activations=relu,gelu", "--replicas=4", "--max_replicas=4",
         # 0.1: tiny data's best rate, so that the base grid decides (3 rates, no extension)
         "--learning_rate=0.1", "--max_auc_loss=0.01", f"--output_dir={output_dir}",
         "--noprogress"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


@pytest.mark.slow
def test_the_main_job_tunes_once_and_a_rerun_reuses_the_sweep_and_the_rows(tmp_path,
                                                                           validate_results):
    first = _main_job(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    content = validate_results(tmp_path / "results.json")
    sweep = content["advice"]["tower_init"]["learning_rate"]
    assert sweep["configured"] == 0.1 and sweep["text"] in first.stdout
    assert f"learning rate: chose {sweep['chosen']:g}" in first.stdout
    assert len(sweep["grid"]) >= 3 and sweep["chosen"] in sweep["grid"]
    assert all(r["learning_rate"] == sweep["chosen"] for r in content["results"])
    assert [r["label"] for r in content["results"]] == ["relu", "gelu"]  # no sweep rows
    assert content["config"]["learning_rate"] == 0.1  # the user's, so that a rerun matches
    assert content["config"]["tune_learning_rate"] is True
    cache = json.loads((tmp_path / lr.CACHE_FILE).read_text())
    assert [r["learning_rate"] for r in cache["rates"]] == sweep["grid"]

    again = _main_job(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Resuming: 2 finished row(s)" in again.stdout
    assert "Loaded synthetic" not in again.stdout  # nothing trained: no data loaded
    assert again.stdout.count("(trained earlier)") == len(sweep["grid"])
    rerun = validate_results(tmp_path / "results.json")
    assert rerun["results"] == content["results"]
    assert rerun["advice"]["tower_init"]["learning_rate"] == sweep
