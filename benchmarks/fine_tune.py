"""Switching a trained ReLU model to SmeLU and fine-tuning it: PD and AUC.

Production teams adopt a smooth activation by converting a trained ReLU model
(`tf_smelu.convert_activations(model, "smelu:0.2", keep_weights=True)`) and
fine-tuning it, not by training from scratch. This measures what that buys,
on the same data and with the replica harness of the main job. Rows of R
replicas each:

  fine-tune  relu      R copies of ONE trained ReLU model, fine-tuned as ReLU
  fine-tune  smelu(β)  R copies of the same model converted (per --activations)
  scratch    relu      R models trained from scratch for --epochs + --finetune_epochs
  scratch    smelu(β)  the same with each of --activations

Replicas fine-tuned from one model share every initial weight, so they differ
only by the order in which they see the fine-tuning data (source `order`):
their PD is what fine-tuning adds on top of one trained model. The scratch
rows use the same source by default (--scratch_sources), and start from the
base model's initial weights. Every row prints AUC (mean ± sd over replicas)
and relative PD over all pairs with its 95% bootstrap interval.

Usage:
  python benchmarks/fine_tune.py --replicas=8 --activations=smelu:0.1,smelu:0.2 \\
      --output_dir=runs/fine_tune  # the measurement: 500k examples, about 20 min
  python benchmarks/fine_tune.py --train_examples=2000 --eval_examples=500 \\
      --replicas=2 --hidden_units=16 --noprogress  # smoke test, seconds
  python benchmarks/fine_tune.py --model=my_model.keras  # your own ReLU model
"""

from __future__ import annotations

import dataclasses
import json
import os

from absl import app, flags

from tf_smelu import cli, convert_activations, experiment, metrics
from tf_smelu.common import atomic_write
from tf_smelu.data.in_memory import batched_dataset
from tf_smelu.experiment.runner import EVAL_BATCH_SIZE
from tf_smelu.registry import Activation
from tf_smelu.training import config as config_flags
from tf_smelu.training.config import TrainingConfig
from tf_smelu.training.problem import load_training_data, model_builder
from tf_smelu.training.replicas import ReplicaTrainer, predict_probabilities

FLAGS = flags.FLAGS
# Update modes belong to multi-worker jobs; --epochs is the base model's training.
EXCLUDED_TRAINING_FLAGS = ("steps", "update_mode", "max_delay", "local_sgd_period",
                           "local_sgd_jitter", "schedule_seed", "sparse_gradients")
config_flags.define_flags(TrainingConfig, exclude=EXCLUDED_TRAINING_FLAGS)
flags.adopt_module_key_flags(config_flags)
flags.DEFINE_list("activations", ["smelu:0.2"],
                  "Activations the trained ReLU model is converted to (specs), one fine-tune "
                  "and one scratch row each.")
flags.DEFINE_integer("replicas", 8, "Replicas R per row (>= 2).", lower_bound=2)
flags.DEFINE_integer("finetune_epochs", 1, "Fine-tuning passes over the training data.",
                     lower_bound=1)
flags.DEFINE_float("finetune_learning_rate", None,
                   "Adam learning rate of fine-tuning (> 0; default: --learning_rate).")
flags.DEFINE_list("scratch_sources", ["order"],
                  "Irreproducibility sources of the scratch rows, joined with '+'.")
flags.DEFINE_string("output_dir", None, "If set, fine_tune.json (flags, base model, rows) "
                    "is written there.")
flags.DEFINE_boolean("progress", True, "Show progress bars.")


@flags.validator("activations")
def _check_activations(texts: list[str]) -> bool:
    try:
        for text in texts:
            Activation.parse(text)
    except ValueError as error:
        raise flags.ValidationError(str(error)) from None
    return bool(texts)


def fine_tune_rows(training: TrainingConfig, activations: list[Activation], replicas: int,
                   finetune_epochs: int, finetune_learning_rate: float | None,
                   scratch_sources: tuple[str, ...], progress: bool = True) -> dict:
    """Trains the base ReLU model, then the rows; returns them with the base's AUC."""
    data = load_training_data(training)
    model_fn = model_builder(training, data.feature_spec)
    steps_per_epoch = -(-len(data.train) // training.batch_size)

    def train_data_fn(order_seed):
        return batched_dataset(data.train.features, data.train.labels, training.batch_size,
                               order_seed)

    eval_data = batched_dataset(data.test.features, data.test.labels, EVAL_BATCH_SIZE)
    # The seeds a replica gets when no source varies: scratch replicas with
    # order only start from the base model's initial weights.
    seeds = experiment.replica_seeds((), 1, training.seed)[0]
    base = model_fn("relu", embedding_seed=seeds.embedding_seed, tower_seed=seeds.tower_seed)
    with experiment.op_determinism(True):
        fit = ReplicaTrainer([base], training).fit(
            train_data_fn(None), steps_per_epoch=steps_per_epoch, progress=progress,
            description="base relu")
    probabilities, labels = predict_probabilities([base], eval_data)

    def fine_tuned(activation, embedding_seed=None, tower_seed=None):
        return convert_activations(base, activation, keep_weights=True)

    finetune = dataclasses.replace(
        training, epochs=finetune_epochs,
        learning_rate=(training.learning_rate if finetune_learning_rate is None
                       else finetune_learning_rate))
    scratch = dataclasses.replace(training, epochs=training.epochs + finetune_epochs)
    relu = Activation.parse("relu")
    rows = {"fine-tune": [], "scratch": []}
    for start, model_function, config, sources in (
        ("fine-tune", fine_tuned, finetune, ("order",)),
        ("scratch", model_fn, scratch, scratch_sources),
    ):
        for row_activation in (relu, *activations):
            row = experiment.run_replicas(
                model_function, train_data_fn, eval_data, row_activation, sources, replicas,
                config, seed=training.seed, steps_per_epoch=steps_per_epoch,
                progress=progress)
            rows[start].append({**row, "start": start,
                                "label": f"{start} {row['label']}", "epochs": config.epochs})
    base_row = {"auc": metrics.roc_auc(labels, probabilities[0]),
                "logloss": metrics.log_loss(labels, probabilities[0]),
                "epochs": training.epochs, "train_seconds": fit["seconds"]}
    return {"base": base_row, "results": rows["fine-tune"] + rows["scratch"]}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        training = config_flags.from_flags(TrainingConfig, FLAGS,
                                           exclude=EXCLUDED_TRAINING_FLAGS)
        scratch_sources = experiment.parse_sources("+".join(FLAGS.scratch_sources))
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    result = fine_tune_rows(
        training, [Activation.parse(text) for text in FLAGS.activations], FLAGS.replicas,
        FLAGS.finetune_epochs,
        FLAGS.finetune_learning_rate, scratch_sources, FLAGS.progress)
    base = result["base"]
    print(f"\nBase ReLU model ({base['epochs']} epoch(s)): AUC {base['auc']:.4f}, "
          f"log loss {base['logloss']:.4f}")
    for start in ("fine-tune", "scratch"):
        print()
        print(experiment.format_table([r for r in result["results"] if r["start"] == start]))
    if FLAGS.output_dir:
        os.makedirs(FLAGS.output_dir, exist_ok=True)
        path = os.path.join(FLAGS.output_dir, "fine_tune.json")
        config = {
            **config_flags.as_flag_dict(training, exclude=EXCLUDED_TRAINING_FLAGS),
            "activations": FLAGS.activations, "replicas": FLAGS.replicas,
            "finetune_epochs": FLAGS.finetune_epochs,
            "finetune_learning_rate": FLAGS.finetune_learning_rate,
            "scratch_sources": FLAGS.scratch_sources,
        }
        with atomic_write(path) as f:
            json.dump({"config": config, **result}, f, indent=2)
        print(f"\nWrote {path}")


if __name__ == "__main__":
    cli.run(main)  # the command-line error style: one line for bad data or models
