"""The worker program: trains one CTR model, alone or as one worker of a cluster.

    python -m tf_smelu.training.distributed --update_mode=stale --activation=smelu:0.4

Run it once (no `TF_CONFIG`: one process, the default strategy) or once per
worker with each worker's `TF_CONFIG` (e.g. through
`tf_smelu.training.launcher`): `tf_smelu.training.trainer` trains under
`MultiWorkerMirroredStrategy` then. Workers of a cluster first meet
(`tf_smelu.training.cluster.meet_peers`): a worker started with other flags
stops them all with one line naming the flags, and one whose peers do not
start says `waiting for worker N` and stops after `--startup_timeout`. Its flags are generated from three
dataclasses, so they cannot drift from the library:

* `tf_smelu.training.config.TrainingConfig`: data, model, optimizer, update
  mode (the same fields, defaults and checks as the main job's flags);
* `tf_smelu.training.trainer.TrainerOptions`: checkpoints, logging, faults;
* `WorkerJob` (below): the activation, per-replica seeds and output files.

With `--predictions_out=P.npy` the chief also writes its final model's click
probabilities on the `--eval_examples` held-out rows of `--dataset` (the test
split of `--seed`, identical for every run with that seed), and
`--labels_out` their labels: what the multi-worker experiment compares
across replicas.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from tf_smelu.common import atomic_write, handle_sigterm, run_program
from tf_smelu.data import DATA_ERRORS, CTRExamples, LoadedDataset
from tf_smelu.data.in_memory import batched_dataset
from tf_smelu.registry import Activation, activation_help
from tf_smelu.training import config as config_flags
from tf_smelu.training.checkpoints import examples_digest
from tf_smelu.training.cluster import (
    ClusterPlace,
    create_strategy,
    in_memory_dataset_fn,
    meet_peers,
)
from tf_smelu.training.config import TrainingConfig, check_fields, option
from tf_smelu.training.problem import UserModelError, load_training_data, model_builder
from tf_smelu.training.replicas import predict_probabilities
from tf_smelu.training.trainer import DistributedTrainer, TrainerOptions, TrainResult

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class WorkerJob:
    """What one replica job trains besides the shared `TrainingConfig`.

    Attributes:
        activation: Hidden activation spec, e.g. `"relu"` or `"smelu:0.2"`.
        embedding_seed: Seed of the embedding tables' initial weights
            (`None`: `seed`).
        tower_seed: Seed of the dense layers' initial weights (`None`:
            `seed + 1`).
        order_seed: Seed of the order of each worker's rows (`None`: `seed`).
        output: The chief saves its final weights here (`.npz`); every worker
            also writes `<output>.worker<i>.npz` and a `.json` summary.
        predictions_out: The chief writes its held-out click probabilities
            here (`.npy`, float64).
        labels_out: The chief writes the held-out labels here (`.npy`).
        startup_timeout: Seconds a worker of a cluster waits for the others
            (`tf_smelu.training.cluster.meet_peers`).
    """

    activation: str = option(
        "relu", lambda: f"Hidden activation: {activation_help()}.", check=Activation.parse)
    embedding_seed: int | None = option(
        None, "Seed of the embedding tables' initial weights (default: --seed).", minimum=0)
    tower_seed: int | None = option(
        None, "Seed of the dense layers' initial weights (default: --seed + 1).", minimum=0)
    order_seed: int | None = option(
        None, "Seed of the order of each worker's rows (default: --seed).", minimum=0)
    output: str | None = option(
        None, "The chief saves its final weights here (.npz); every worker also writes "
        "<output>.worker<i>.npz and a .json summary.")
    predictions_out: str | None = option(
        None, "The chief writes its click probabilities on the --eval_examples held-out rows "
        "here (.npy, float64).")
    labels_out: str | None = option(
        None, "The chief writes the held-out labels here (.npy).")
    startup_timeout: float = option(
        120.0, "Seconds a worker of a cluster waits for the others to start (saying which it "
        "waits for) before it stops; every worker's flags are compared first.", positive=True)

    def __post_init__(self):
        check_fields(self)

    def seeds(self, seed: int) -> tuple[int, int, int]:
        """`(embedding_seed, tower_seed, order_seed)` with defaults from `seed`."""
        pick = lambda value, default: default if value is None else value  # noqa: E731
        return (pick(self.embedding_seed, seed), pick(self.tower_seed, seed + 1),
                pick(self.order_seed, seed))


def save_weights(path: str, model: keras.Model) -> None:
    """Saves `model.weights` to an `.npz` atomically, keys `<position>:<weight path>`."""
    arrays = {f"{i:03d}:{w.path}": w.numpy() for i, w in enumerate(model.weights)}
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)


def load_weights(path: str) -> list[np.ndarray]:
    """The arrays of `save_weights`, in `model.weights` order."""
    with np.load(path) as saved:
        return [saved[key] for key in sorted(saved.files)]


def save_array(path: str, array: np.ndarray) -> None:
    """Saves one array to `path` (`.npy`) atomically."""
    with atomic_write(path, "wb") as f:
        np.save(f, array)


def worker_output_path(output: str, index: int, suffix: str = ".npz") -> str:
    """`<output without .npz>.worker<index><suffix>`."""
    base = output[: -len(".npz")] if output.endswith(".npz") else output
    return f"{base}.worker{index}{suffix}"


def define_flags(flag_values: flags.FlagValues = FLAGS) -> list[str]:
    """Defines the worker's flags (from the three dataclasses); returns their names.

    Called when run as a program only, so that other absl programs can import
    this module without clashing flags.
    """
    # absl lists the main module's flags in --help under its file name.
    module = sys.argv[0] if __name__ == "__main__" else __name__
    names = []
    for cls in (TrainingConfig, TrainerOptions, WorkerJob):
        names += config_flags.define_flags(cls, flag_values=flag_values, module_name=module)
    return names


def parse_flags(
    flag_values: flags.FlagValues,
) -> tuple[TrainingConfig, TrainerOptions, WorkerJob]:
    """The three dataclasses of parsed worker flags."""
    return tuple(config_flags.from_flags(cls, flag_values)
                 for cls in (TrainingConfig, TrainerOptions, WorkerJob))


def worker_args(config: TrainingConfig, job: WorkerJob,
                options: TrainerOptions = TrainerOptions()) -> list[str]:
    """The worker flags that reproduce `(config, job, options)` (see `parse_flags`)."""
    return [*config_flags.to_args(config), *config_flags.to_args(options),
            *config_flags.to_args(job)]


def held_out_predictions(
    model: keras.Model, examples: CTRExamples, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """`(click probabilities [N] float64, labels [N] float64)` of `model` on `examples`."""
    dataset = batched_dataset(examples.features, examples.labels, batch_size)
    probabilities, labels = predict_probabilities([model], dataset)
    return probabilities[0], labels


def build_trainer(
    config: TrainingConfig,
    job: WorkerJob,
    data: LoadedDataset,
    options: TrainerOptions = TrainerOptions(),
    strategy: tf.distribute.Strategy | None = None,
) -> DistributedTrainer:
    """A trainer of `job`'s model on `data.train`, `config.steps` resolved from epochs.

    Its checkpoints record, besides `config`, the activation, the three seeds
    and a digest of the training rows: a checkpoint written with other ones
    is refused (`tf_smelu.training.checkpoints`).
    """
    embedding_seed, tower_seed, order_seed = job.seeds(config.seed)
    build = model_builder(config, data.feature_spec)
    activation = Activation.parse(job.activation)
    config = dataclasses.replace(config, steps=config.total_steps(len(data.train)))
    identity = dict(activation=str(activation), embedding_seed=embedding_seed,
                    tower_seed=tower_seed, order_seed=order_seed,
                    train_data=examples_digest(data.train))
    return DistributedTrainer(
        lambda: build(activation, embedding_seed=embedding_seed, tower_seed=tower_seed),
        in_memory_dataset_fn(data.train, order_seed=order_seed),
        config,
        strategy,
        options,
        identity,
    )


def run_worker(
    config: TrainingConfig, job: WorkerJob, options: TrainerOptions = TrainerOptions()
) -> TrainResult:
    """Trains as this process's worker and writes the job's outputs.

    Reads the cluster from `TF_CONFIG` (none: one process). Workers of a
    cluster first meet (`meet_peers`): all started, all with the same flags.
    """
    flag_values = {**config_flags.as_flag_dict(config), **config_flags.as_flag_dict(options),
                   **config_flags.as_flag_dict(job)}
    place = ClusterPlace.from_tf_config()
    if place is not None:
        meet_peers(place, flag_values, job.startup_timeout)
    strategy = create_strategy()  # before building anything
    if place is not None:
        handle_sigterm()  # TensorFlow's multi-worker runtime installed one ignoring SIGTERM
    data = load_training_data(config)
    trainer = build_trainer(config, job, data, options, strategy)
    result = trainer.train()
    worker = trainer.worker
    rate = f"{result.steps_per_second:.1f}" if result.steps_per_second else "n/a"
    final_loss = f"{result.losses[-1]:.4f}" if result.losses else "n/a"
    print(
        f"worker {worker.index}/{worker.num_workers}: steps {result.start_step}->"
        f"{result.final_step}, {rate} steps/s, final loss {final_loss}",
        flush=True,
    )
    if job.output:
        if worker.is_chief:
            save_weights(job.output, trainer.model)
        save_weights(worker_output_path(job.output, worker.index), trainer.model)
        with atomic_write(worker_output_path(job.output, worker.index, ".json")) as f:
            json.dump({**result.to_json(), "flags": flag_values}, f)
    if worker.is_chief and (job.predictions_out or job.labels_out):
        probabilities, labels = held_out_predictions(trainer.model, data.test)
        if job.predictions_out:
            save_array(job.predictions_out, probabilities)
        if job.labels_out:
            save_array(job.labels_out, labels)
        print(f"worker {worker.index}: predicted {len(labels)} held-out rows", flush=True)
    return result


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        config, options, job = parse_flags(FLAGS)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    run_worker(config, job, options)


if __name__ == "__main__":
    define_flags()
    run_program(main, user_errors=(*DATA_ERRORS, UserModelError))
