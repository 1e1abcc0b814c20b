"""`CTRExperimentConfig`: checks at construction, flat values, generated flags."""

import dataclasses

import pytest
from absl import app, flags

from tf_smelu import cli
from tf_smelu.experiment import CTRExperimentConfig
from tf_smelu.experiment.config import TRAINING_FIELDS_SET_BY_THE_EXPERIMENT
from tf_smelu.registry import Activation
from tf_smelu.training import config as config_flags
from tf_smelu.training.config import TrainingConfig

NON_DEFAULT = CTRExperimentConfig(
    activations=("relu", "rescu:0.3:3"), sources=("init+order", "none"), replicas=3,
    update_mode=("sync", "local_sgd"), workers=2, job_timeout=60, progress=False,
    training=TrainingConfig(train_examples=2000, eval_examples=300, max_vocab_size=50, seed=4,
                            hidden_units=(16,), batch_size=64, learning_rate=2e-3, steps=9,
                            local_sgd_period=4, local_sgd_jitter=1, sparse_gradients=True),
)


def _flag_values(defaults=CTRExperimentConfig()):
    flag_values = flags.FlagValues()
    cli.define_experiment_flags(defaults, "out", "quick", flag_values=flag_values)
    return flag_values


def test_flags_to_config_round_trip_for_every_field():
    flag_values = _flag_values()
    args = [*config_flags.to_args(NON_DEFAULT),
            *config_flags.to_args(NON_DEFAULT.training, exclude=TRAINING_FIELDS_SET_BY_THE_EXPERIMENT)]
    flag_values(["prog", *args])
    values = {name: flag_values[name].value for name in flag_values}
    assert CTRExperimentConfig.from_dict(values) == NON_DEFAULT
    assert CTRExperimentConfig.from_dict(NON_DEFAULT.to_dict()) == NON_DEFAULT


def test_every_field_has_a_flag_and_defaults_exist_once():
    flag_values = _flag_values()
    names = set(flag_values)
    fields = {f.name for f in dataclasses.fields(CTRExperimentConfig)} - {"training", "work_dir"}
    fields |= {f.name for f in dataclasses.fields(TrainingConfig)} - set(
        TRAINING_FIELDS_SET_BY_THE_EXPERIMENT)
    assert fields <= names
    flag_values(["prog"])
    parsed = CTRExperimentConfig.from_dict({name: flag_values[name].value for name in flag_values})
    assert parsed == CTRExperimentConfig()


def _config_of_args(*args: str) -> CTRExperimentConfig:
    flag_values = _flag_values()
    flag_values(["prog", *args])
    return cli.experiment_config({name: flag_values[name].value for name in flag_values})


DISTILL_ONLY = ("--activations=relu", "--remedies=distill:0.5", "--max_auc_loss=0.002",
                "--replicas=4", "--max_replicas=4")


def test_a_train_budget_its_teacher_exceeds_refuses_distillation_in_one_line():
    """At most 4 replicas share the teacher: distill costs 1 + 1/4, as the search counts it."""
    with pytest.raises(app.UsageError) as raised:
        _config_of_args(*DISTILL_ONLY, "--max_train_cost=1.1")
    message = str(raised.value)
    assert ("rule out every candidate, so relu would be compared with nothing: relu+distill(0.5) "
            "(train cost 1.25 > --max_train_cost=1.1)") in message
    assert "\n" not in message


def test_a_train_budget_above_distillation_with_its_teacher_keeps_it():
    config = _config_of_args(*DISTILL_ONLY, "--max_train_cost=1.3")
    assert config.max_train_cost == 1.3 and config.to_dict()["remedies"] == ["distill:0.5"]


def test_activations_are_parsed_once():
    config = CTRExperimentConfig(activations=("smelu:0.2", Activation("gelu")))
    assert config.activations == (Activation("smelu", 0.2), Activation("gelu"))


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(activations=()), "at least one activation"),
        (dict(activations="relu"), "sequence"),
        (dict(activations=("relu", "smelu:-1")), "beta"),
        (dict(sources=("tower",)), "Unknown source"),
        (dict(replicas=1), "replicas"),
        (dict(update_mode=("async",)), "update_mode"),
        (dict(workers=2, sources=("stale",)), "in-process harness"),
        (dict(workers=2, sources=("none", "op_nondeterminism")), "in-process harness"),
        (dict(workers=3), "multiple"),
        (dict(workers=2, training=TrainingConfig(jit_compile=True)), "jit_compile"),
        (dict(training=TrainingConfig(update_mode="local_sgd")), "multi-worker"),
    ],
)
def test_bad_settings_fail_at_construction(bad, message):
    with pytest.raises(ValueError, match=message):
        CTRExperimentConfig(**bad)


def test_multi_worker_is_chosen_by_workers_or_update_modes():
    assert not CTRExperimentConfig().multi_worker
    assert CTRExperimentConfig(workers=2).update_modes == ("sync",)
    assert CTRExperimentConfig(update_mode=("stale",)).multi_worker


def test_usage_errors_are_one_line():
    from absl import app

    with pytest.raises(app.UsageError, match="^`replicas` must be >= 2"):
        cli.experiment_config({"replicas": 1})
