"""The one training configuration and the flags generated from dataclasses."""

import dataclasses

import pytest
from absl import flags

from tf_smelu.data import DatasetSpec
from tf_smelu.training import config as config_flags
from tf_smelu.training.config import TrainingConfig
from tf_smelu.training.distributed import WorkerJob, define_flags, parse_flags, worker_args
from tf_smelu.training.trainer import TrainerOptions

# Every field differs from its default, so a field the round trip drops or
# mangles cannot go unnoticed.
NON_DEFAULT_TRAINING = TrainingConfig(
    dataset="csv:/data/clicks.csv#clicked", eval_dataset="csv:/data/held_out.csv#clicked",
    train_examples=1234, eval_examples=56,
    max_vocab_size=0, label_column="clicked", categorical_columns=("user_id", "item_id"),
    dense_columns=("price",), label_threshold=0.5, on_error="skip", seed=7, model="dcn", hidden_units=(32, 16),
    embedding_dim=3,
    epochs=2, steps=99, batch_size=48, learning_rate=2.5e-3, update_mode="local_sgd",
    max_delay=2, local_sgd_period=5, local_sgd_jitter=1, schedule_seed=11,
    jit_compile=True, sparse_gradients=False,
)
NON_DEFAULT_OPTIONS = TrainerOptions(
    checkpoint_dir="/tmp/ckpt", checkpoint_every=5, max_checkpoints_to_keep=2, log_every=0,
    crash_at_step=3, crash_worker=0,
)
NON_DEFAULT_JOB = WorkerJob(
    activation="rescu:0.3:3", embedding_seed=1, tower_seed=2, order_seed=3,
    output="/tmp/w.npz", predictions_out="/tmp/p.npy", labels_out="/tmp/l.npy",
    startup_timeout=30.0,
)


def _differs_from_default_everywhere(instance):
    default = type(instance)()
    return [f.name for f in dataclasses.fields(instance)
            if getattr(instance, f.name) == getattr(default, f.name)
            and not (f.name == "sparse_gradients")]  # exclusive with jit_compile


@pytest.mark.parametrize("instance", [NON_DEFAULT_TRAINING, NON_DEFAULT_OPTIONS, NON_DEFAULT_JOB])
def test_every_field_is_tested_with_a_non_default_value(instance):
    names = _differs_from_default_everywhere(instance)
    # csv data takes no vocabulary cap and no TFDS directory (see the movielens round trip).
    assert names in ([], ["max_vocab_size", "data_dir"]), names


def test_config_to_command_line_to_config_is_the_identity():
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    flag_values(["worker", *worker_args(NON_DEFAULT_TRAINING, NON_DEFAULT_JOB,
                                        NON_DEFAULT_OPTIONS)])
    assert parse_flags(flag_values) == (NON_DEFAULT_TRAINING, NON_DEFAULT_OPTIONS, NON_DEFAULT_JOB)


def test_defaults_round_trip_too():
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    flag_values(["worker"])
    assert parse_flags(flag_values) == (TrainingConfig(), TrainerOptions(), WorkerJob())
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    flag_values(["worker", *worker_args(TrainingConfig(), WorkerJob())])
    assert parse_flags(flag_values)[0] == TrainingConfig()


def test_movielens_data_dir_round_trips_too():
    config = TrainingConfig(dataset="movielens_1m", data_dir="/tfds", label_threshold=3.5)
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    flag_values(["worker", *worker_args(config, WorkerJob())])
    assert parse_flags(flag_values)[0] == config


def test_every_field_has_a_flag_with_help():
    flag_values = flags.FlagValues()
    names = define_flags(flag_values)
    fields = [f.name for cls in (TrainingConfig, TrainerOptions, WorkerJob)
              for f in dataclasses.fields(cls)]
    assert sorted(names) == sorted(fields)
    assert all(flag_values[name].help for name in names)


def test_dataset_is_parsed_once_into_a_spec():
    config = TrainingConfig(dataset="criteo:/x/day_0.gz")
    assert isinstance(config.dataset, DatasetSpec) and config.dataset.kind == "criteo"
    assert TrainingConfig(dataset=config.dataset) == config


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(learning_rate=float("nan")), "learning_rate"),
        (dict(batch_size=0), "batch_size"),
        (dict(hidden_units=()), "hidden_units"),
        (dict(hidden_units=(8, 0)), "hidden_units"),
        (dict(hidden_units="8,x"), "hidden_units"),
        (dict(model="rnn"), "model"),
        (dict(update_mode="async"), "update_mode"),
        (dict(steps=0), "steps"),
        (dict(max_delay=-1), "max_delay"),
        (dict(dataset="parquet:/x"), "dataset spec"),
        (dict(dataset="csv:/x.csv", max_vocab_size=5), "synthetic data only"),
        (dict(jit_compile=True, sparse_gradients=True), "dense gradients"),
    ],
)
def test_bad_values_are_rejected_with_the_field_name(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainingConfig(**bad)


def test_flag_validators_use_the_same_checks():
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    for bad in ("--learning_rate=0", "--batch_size=0", "--hidden_units=64,x",
                "--activation=smelu:-1", "--dataset=parquet:/x", "--update_mode=async"):
        with pytest.raises(flags.IllegalFlagValueError):
            flag_values(["worker", bad])
        flag_values.unparse_flags()


def test_steps_replace_epochs_and_the_global_batch_splits_over_workers():
    config = TrainingConfig(epochs=2, batch_size=32)
    assert config.total_steps(320) == 20
    assert dataclasses.replace(config, steps=7).total_steps(320) == 7
    assert config.per_worker_batch_size(2) == 16
    with pytest.raises(ValueError, match="multiple"):
        config.per_worker_batch_size(3)


def test_to_args_refuses_a_value_it_cannot_write():
    @dataclasses.dataclass(frozen=True)
    class Example:
        size: int | None = config_flags.option(3, "A size.")

    with pytest.raises(ValueError, match="cannot be written"):
        config_flags.to_args(Example(size=None))


def test_a_remedy_default_becomes_its_spec_in_the_generated_flag():
    from tf_smelu.experiment import CTRExperimentConfig

    values = flags.FlagValues()
    defaults = CTRExperimentConfig.from_dict({"remedies": ["smelu:1+ema:0.99", "ensemble:2"]})
    config_flags.define_flags(CTRExperimentConfig, defaults, flag_values=values)
    assert values["remedies"].default == ["smelu:1.0+ema:0.99", "ensemble:2"]
    values(["program"])
    assert CTRExperimentConfig.from_dict({"remedies": values.remedies}).remedies == (
        defaults.remedies)
