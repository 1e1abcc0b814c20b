"""The main job's `--trainer=keras`: every replica by `model.fit`, remedies as rows.

Issue 21 item 8 (your model trained with its own compile arguments from the
command line) and issue 22 item 1 (remedies as options of the main job).
Hostile inputs of both are in `tests/test_hostile_inputs.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN_JOB = os.path.join(REPO, "examples", "recsys_reproducibility.py")
TINY = ["--quick", "--train_examples=2000", "--eval_examples=1000", "--replicas=2",
        "--hidden_units=8", "--noprogress"]
ROW_LABELS = ("relu", "smelu(β=1)", "relu+ema(0.9)", "relu+ensemble(K=2)")


def save_click_model(path, compile_arguments: dict | None) -> str:
    """Saves a small Functional click model of the synthetic data's features.

    Args:
        path: Where the `.keras` file goes.
        compile_arguments: `model.compile` keyword arguments, or None to save
            it uncompiled.

    Returns:
        The path, as a string.
    """
    import keras

    from tf_smelu.data import SyntheticCTRConfig

    spec = SyntheticCTRConfig().feature_spec()
    inputs = {name: keras.Input(shape=(), dtype="int64", name=name)
              for name in spec.categorical_names}
    inputs["dense"] = keras.Input(shape=(spec.num_dense,), name="dense")
    embedded = [keras.layers.Embedding(f.vocab_size, 4, name=f"embedding_{f.name}")(inputs[f.name])
                for f in spec.categorical]
    hidden = keras.layers.Concatenate(name="concat")([*embedded, inputs["dense"]])
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="click")(hidden))
    if compile_arguments is not None:
        model.compile(**compile_arguments)
    model.save(path)
    return str(path)


def _run(args, timeout=900):
    return subprocess.run([sys.executable, MAIN_JOB, *TINY, *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def _rows(content: dict) -> dict[tuple[str, str], dict]:
    return {("+".join(row["sources"]) or "none", row["label"]): row
            for row in content["results"]}


@pytest.mark.slow
def test_remedies_are_rows_with_cost_ratios_and_a_rerun_reuses_them(tmp_path, validate_results):
    """One run (and its resume with one more remedy): keras rows of activations and
    remedies, validated."""
    args = ["--activations=relu,smelu:1", "--remedies=ema:0.9,ensemble:2",
            f"--output_dir={tmp_path}"]
    first = _run(args)
    assert first.returncode == 0, first.stderr[-3000:]
    content = validate_results(tmp_path / "results.json")
    assert content["complete"]
    assert [content["config"][key] for key in ("trainer", "row_trainer", "remedies")] == [
        "auto", "keras", ["ema:0.9", "ensemble:2"]]  # auto chose keras for the remedies
    rows = _rows(content)
    assert list(rows) == [("tower_init", label) for label in ROW_LABELS]
    for row in rows.values():
        assert row["trainer"] == "keras_fit" and row["optimizer"]["class_name"] == "Adam"
        assert row["optimizer"]["learning_rate"] == pytest.approx(1e-2)  # --learning_rate
        assert set(row["rel_pd_by_group"]) == {"item_head", "item_torso", "item_tail"}
        assert row["rel_pd"] > 0 and not row["side_by_side"]  # remedies: all one by one
    relu, ema, ensemble = (rows[("tower_init", label)] for label in (
        "relu", "relu+ema(0.9)", "relu+ensemble(K=2)"))
    assert (ema["remedy"], ensemble["remedy"]) == ("ema:0.9", "ensemble:2")
    assert ensemble["serve_params_ratio"] == 2 and ensemble["params"] == 2 * relu["params"]
    assert ensemble["train_steps_ratio"] == 2 and ensemble["steps"] == 2 * relu["steps"]
    assert ema["serve_params_ratio"] == 1 and ema["train_steps_ratio"] == 1
    assert ensemble["train_seconds_ratio"] == pytest.approx(
        ensemble["train_seconds"] / relu["train_seconds"])
    assert relu["train_seconds_ratio"] == 1

    # A remedy added to the same run: the finished rows are reused, only its row trains.
    args[1] += ",label_smoothing:0.1"
    again = _run(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("(finished earlier)") == len(rows)
    resumed = validate_results(tmp_path / "results.json")["results"]
    assert resumed[:len(rows)] == content["results"]
    assert [row["label"] for row in resumed[len(rows):]] == ["relu+label_smoothing(0.1)"]


@pytest.mark.slow
def test_a_users_keras_file_trains_with_its_own_compile_arguments(tmp_path, validate_results):
    """SGD, its learning rate and a metric of the file's own, not the builtin Adam and AUC;
    with no source varying, its replicas agree bit for bit (PD exactly 0)."""
    import keras

    model = save_click_model(tmp_path / "sgd.keras", dict(
        optimizer=keras.optimizers.SGD(0.05), loss="binary_crossentropy",
        metrics=[keras.metrics.Precision(name="my_precision")]))
    result = _run(["--trainer=keras", f"--model={model}", "--activations=relu,smelu:1",
                   "--sources=none,init", f"--output_dir={tmp_path / 'out'}"])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _rows(validate_results(tmp_path / "out" / "results.json"))
    assert list(rows) == [(sources, label) for sources in ("none", "init")
                          for label in ("relu", "smelu(β=1)")]
    for (sources, label), row in rows.items():
        assert row["optimizer"]["class_name"] == "SGD"
        assert row["optimizer"]["learning_rate"] == pytest.approx(0.05)
        assert set(row["eval_metrics"]) == {"loss", "my_precision"}  # the file's metrics only
        assert row["trainer"] == "keras_fit"
        assert (row["rel_pd"] == 0) == row["identical_replicas"] == (sources == "none"), (
            sources, label, row["rel_pd"])


class RunLog:
    """What a row trainer reports to (the runner's rows): log lines and the data's details."""

    def __init__(self):
        self.lines = []

    def log(self, message: str) -> None:
        self.lines.append(message)

    def loaded(self, data) -> None:
        pass


@pytest.mark.slow
def test_a_row_adds_replicas_and_takes_a_seed_and_a_learning_rate():
    """The interface the advisor and the learning-rate sweep call (`RowTrainer.row`)."""
    import tf_smelu.reproducibility  # noqa: F401  (registers the keras trainer)
    from tf_smelu.experiment import CTRExperimentConfig
    from tf_smelu.experiment.runner import TRAINERS
    from tf_smelu.remedies import Recipe

    config = CTRExperimentConfig.from_dict(dict(
        trainer="keras", train_examples=1000, eval_examples=500, hidden_units=[8],
        progress=False))
    trainer = TRAINERS["keras"](config, RunLog())
    relu, kept = Recipe.parse("relu"), {}

    def row(name, replicas, **kwargs):
        return trainer.row(relu, ("tower_init",), replicas,
                           on_predictions=lambda p: kept.__setitem__(name, p), **kwargs)

    three = row("three", 3)
    added = row("added", 3, previous=kept["three"][:2])
    # Replica 2 trained alone later equals replica 2 trained with the others (seeds by index).
    np.testing.assert_array_equal(kept["added"], kept["three"])
    assert added["replicas"] == 3 and added["rel_pd"] == three["rel_pd"]
    assert "fit_logs" not in added  # per-replica logs of the new replica only: left out
    row("seeded", 2, seed=7)
    assert not np.array_equal(kept["seeded"], kept["three"][:2])
    faster = row("faster", 2, learning_rate=0.05)
    assert faster["optimizer"]["learning_rate"] == pytest.approx(0.05)
    assert not np.array_equal(kept["faster"], kept["three"][:2])
    with pytest.raises(ValueError, match="nothing left"):
        row("none", 2, previous=kept["three"][:2])


@pytest.mark.parametrize("sources, embedding_varies, tower_varies", [
    (("tower_init",), False, True),
    (("embedding_init",), True, False),
    (("init", "order"), True, True),
    (("order",), True, True),  # one study seed for all replicas: only ensemble members differ
    ((), True, True),
])
def test_main_job_sources_vary_the_model_seeds_they_name(sources, embedding_varies,
                                                         tower_varies):
    from tf_smelu.reproducibility.main_job import model_seeds, study_sources

    assert study_sources(sources) == tuple(sorted(
        {"init" if s.endswith("init") else s for s in sources}))
    first, second = (model_seeds(sources, seed, base_seed=0) for seed in (11, 12))
    assert (first[0] != second[0], first[1] != second[1]) == (embedding_varies, tower_varies)
    assert model_seeds(sources, 11, base_seed=0) == first  # a function of its arguments only
    with pytest.raises(ValueError, match="stale"):
        study_sources((*sources, "stale"))
