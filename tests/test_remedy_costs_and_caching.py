"""Issue 22's review findings on remedies: what the main job loads, trains and counts once.

One data load for the learning-rate sweep, the search and the confirmation;
the teacher and the previous model trained once per main job, not per row;
a model a pull remedy cannot train refused before the first row; the
teacher's steps in the training cost the budgets compare.
"""

from __future__ import annotations

import pytest


class RunLog:
    """What a row trainer reports to (the runner's rows): log lines and the data's details."""

    def __init__(self):
        self.lines = []

    def log(self, message: str) -> None:
        self.lines.append(message)

    def loaded(self, data) -> None:
        pass


def _tiny_config(**changes):
    from tf_smelu.experiment import CTRExperimentConfig

    values = dict(train_examples=600, eval_examples=400, hidden_units=[8], steps=4,
                  batch_size=128, progress=False, sources=["tower_init"])
    return CTRExperimentConfig.from_dict({**values, **changes})


class CountingTrainer:
    """A row trainer that loads the data as the real ones do, then predicts noise, seeded.

    Replica i's predictions depend only on (recipe, seed, i), as real replicas' do.
    """

    def __init__(self, config, run, data=None):
        from tf_smelu.experiment import runner

        self._labels = (runner.load_checked_data(config.training, run) if data is None
                        else data).test.labels

    def row(self, recipe, sources, replicas, *, seed=None, learning_rate=None, previous=None,
            on_predictions=None):
        import zlib

        import numpy as np

        from tf_smelu.experiment.harness import summarize_predictions
        from tf_smelu.experiment.runner import RELU

        activation = recipe.activation or RELU
        logits = np.stack([
            2.0 * self._labels - 1.0 + np.random.default_rng(
                [zlib.crc32(str(recipe).encode()), seed or 0, replica]).normal(size=len(self._labels))
            for replica in range(replicas)])
        probabilities = 1.0 / (1.0 + np.exp(-logits))
        if on_predictions is not None:
            on_predictions(probabilities)
        return {**summarize_predictions(activation, sources, probabilities, self._labels,
                                        seed=seed or 0),
                "train_seconds": 0.01}


def test_the_sweep_the_search_and_the_confirmation_load_the_data_once(monkeypatch):
    from tf_smelu.experiment import runner

    loads = []
    real = runner.load_training_data

    def counted(training):
        loads.append(training.dataset)
        return real(training)

    monkeypatch.setattr(runner, "load_training_data", counted)
    monkeypatch.setitem(runner.TRAINERS, "builtin", CountingTrainer)
    config = _tiny_config(activations=["relu", "gelu"], max_auc_loss=0.05, replicas=4,
                          max_replicas=4, tune_learning_rate=True)
    lines = []
    rows, advice = runner.advise_ctr_experiment(config, log=lines.append)
    assert "learning_rate" in advice["tower_init"]  # the sweep trained, and so did the search
    assert {row["label"] for row in rows} >= {"relu", "gelu"}, [r["label"] for r in rows]
    assert len(loads) == 1, loads
    assert sum(line.startswith("Loaded ") for line in lines) == 1


def _fits_spy(monkeypatch) -> list[str]:
    """The class name of every model `fit` trains from now on (`_Stacked`: replicas with pulls)."""
    import functools

    import keras

    fits, real = [], keras.Model.fit

    @functools.wraps(real)  # the study checks fit arguments against fit's signature
    def counted(self, *args, **kwargs):
        fits.append(type(self).__name__)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", counted)
    return fits


@pytest.mark.slow
def test_the_keras_trainer_trains_the_teacher_once_for_all_rows_bit_for_bit(monkeypatch):
    """Two distill rows, one teacher; a row of a fresh trainer (its own teacher) predicts the same."""
    import numpy as np

    import tf_smelu.reproducibility  # noqa: F401  (registers the keras trainer)
    from tf_smelu.experiment.runner import TRAINERS
    from tf_smelu.remedies import Recipe

    config = _tiny_config(trainer="keras", remedies=["distill:0.5", "distill:1"])
    fits, kept = _fits_spy(monkeypatch), {}

    def row(trainer, spec):
        return trainer.row(Recipe.parse(spec), ("tower_init",), 2,
                           on_predictions=lambda p: kept.__setitem__(spec, p))

    def teachers():  # the replicas of a distill row train stacked with their pulls
        return sum(name != "_Stacked" for name in fits)

    trainer = TRAINERS["keras"](config, RunLog())
    first, second = row(trainer, "relu+distill:0.5"), row(trainer, "relu+distill:1")
    assert teachers() == 1, fits
    assert "setup_reused" not in first and second["setup_reused"] == ["teacher"]
    assert second["setup_seconds"] == first["setup_seconds"] > 0  # its cost as measured
    # One teacher, as many steps as a replica: distill with R = 2 costs 1.5 baseline models.
    assert first["setup_steps"] == second["setup_steps"] == first["steps"] == 4
    cached = kept.pop("relu+distill:1")
    alone = row(TRAINERS["keras"](config, RunLog()), "relu+distill:1")
    assert teachers() == 2 and "setup_reused" not in alone  # a new trainer trains its own
    np.testing.assert_array_equal(kept["relu+distill:1"], cached)


def _cost_row(label, steps, replicas, **fields):
    return {"label": label, "steps": steps, "replicas": replicas, "train_seconds": 10.0,
            **fields}


@pytest.mark.parametrize("replicas, ratio", [(4, 1.25), (8, 1.125), (2, 1.5)])
def test_a_teachers_steps_count_amortized_over_the_rows_replicas(replicas, ratio):
    from tf_smelu.experiment.costs import budget_problems, row_costs, with_costs

    baseline = _cost_row("relu", 100, 4)
    distill = _cost_row("relu+distill(0.5)", 100, replicas, setup_steps=100,
                        setup_seconds=2.0)
    ensemble = _cost_row("relu+ensemble(K=2)", 200, replicas)
    with_costs([baseline, distill, ensemble], baseline)
    assert distill["train_steps_ratio"] == ratio
    assert ensemble["train_steps_ratio"] == 2.0 and baseline["train_steps_ratio"] == 1.0
    costs = row_costs(distill, {"train": 1.0, "serve": 1.0})
    assert costs["train"] == ratio
    assert budget_problems(costs, {"max_train_cost": 1.0}) == [
        f"train cost {ratio:.3g} > --max_train_cost=1"]


def test_a_row_written_before_setup_steps_resumes_and_is_costed_by_its_seconds(tmp_path):
    """The committed distill row (setup_seconds, no setup_steps, a steps ratio of 1 without
    its teacher) resumes; its steps ratio goes and budgets take its measured time instead."""
    import json
    import os
    import shutil

    from tf_smelu.experiment.costs import row_costs, with_costs
    from tf_smelu.experiment.results import finished_rows

    committed = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "docs", "remedies_default_results.json")
    shutil.copy(committed, tmp_path / "results.json")
    with open(committed, encoding="utf-8") as f:
        content = json.load(f)
    rows = finished_rows(str(tmp_path), content["config"])
    assert len(rows) == len(content["results"])  # every row resumes
    relu, distill = (next(row for row in rows if row["label"] == label)
                     for label in ("relu", "relu+distill(0.5)"))
    assert "setup_steps" not in distill and distill["train_steps_ratio"] == 1.0
    with_costs([distill], relu)
    assert "train_steps_ratio" not in distill
    train = row_costs(distill, {"train": 1.0, "serve": 1.0})["train"]
    assert train == pytest.approx(distill["train_seconds"] / relu["train_seconds"])
    assert train > 1  # the teacher's time, which a steps ratio of 1 left out


@pytest.mark.parametrize("max_train_cost, excluded", [(1.0, True), (1.2, False)])
def test_the_search_leaves_out_a_distillation_its_teacher_puts_over_the_budget(
        max_train_cost, excluded):
    """Before anything trains: with at most 8 replicas, distill costs at least 1 + 1/8."""
    from tf_smelu.experiment import advisor

    settings = advisor.SearchSettings.from_activations(
        ["relu", "smelu:1"], 0.002, replicas=4, max_replicas=8, remedies=["distill:0.5"],
        max_train_cost=max_train_cost)
    assert settings.ruled_out == ({"relu+distill(0.5)": (
        f"train cost 1.12 > --max_train_cost={max_train_cost:g}")} if excluded else {})
