"""Accuracy vs. reproducibility of ReLU and smooth activations on CTR data.

Trains R replicas of a recommendation (CTR) model per activation that are
identical except for the irreproducibility sources you switch on, evaluates
them on the same held-out examples and reports AUC, log loss and the
prediction difference (PD) between replicas, with 95% confidence intervals.

Writes to --output_dir:
  results.json   every flag, the environment, one row per activation/beta
                 and source set (schema: tf_smelu/experiment/
                 results.schema.json), rewritten after every finished
                 row: an interrupted run keeps them, and
                 running the same command again trains only the missing rows
  tradeoff.png   relative PD against AUC, one panel per source set
  runs/          multi-worker jobs only: each job's weights, predictions, logs

Multi-worker jobs: with --workers=N (N > 1) or --update_mode=MODE[,MODE...]
every replica is trained as its own cluster of N MultiWorkerMirroredStrategy
processes on localhost (tf_smelu.training.distributed), one row per update
mode: sync, stale (gradients applied after random delays, as with
asynchronous workers), local_sgd (workers average their weights every
--local_sgd_period +- --local_sgd_jitter steps). Each job draws its schedule
from OS entropy, so replicas differ by it; --sources then defaults to none.
Sources stale and op_nondeterminism are in-process only.

Which activation should I use? With --max_auc_loss=0.002 (the AUC you will
give up against ReLU) the job searches beta for the smooth families in
--activations (default smelu, rescu and generalized_smelu, with gelu, swish
and softplus as reference points), spends replicas where the intervals leave the answer open, stops
within --time_budget (default 480 s) and prints a recommendation with its 95%
intervals, or "keep relu". results.json then holds the search ("advice"):
every candidate's AUC and PD change vs relu, each family's Pareto frontier.

Trainers: --trainer=builtin trains a row's replicas side by side in the
project's own loop (Adam at --learning_rate, binary cross-entropy), also for
--model=PATH.keras; --trainer=keras trains every replica by model.fit, your
model with the optimizer, loss, metrics and schedule it was saved compiled
with. --remedies=ensemble:2,ema:0.999 adds one row per remedy (keras only);
--trainer=auto (default) is keras with --remedies, else builtin.

Examples:
  python examples/recsys_reproducibility.py                  # default, < 10 min
  python examples/recsys_reproducibility.py --max_auc_loss=0.002   # a recommendation
  python examples/recsys_reproducibility.py --quick          # smoke test, < 2 min
  python examples/recsys_reproducibility.py \\
      --activations=relu,smelu:0.25,smelu:0.5,smelu:1,gelu \\
      --sources=tower_init,init+order,stale --replicas=8
  python examples/recsys_reproducibility.py --quick --workers=2 \\
      --update_mode=stale,local_sgd --max_vocab_size=1000  # replicas as 2-worker jobs

Sources (combine with '+', separate sets with ','): init, embedding_init,
tower_init, order, stale, op_nondeterminism; 'none' is the deterministic
control (replicas must agree bit for bit).
"""

from __future__ import annotations

import os

from absl import app, flags

from tf_smelu import cli, experiment
from tf_smelu.experiment import CTRExperimentConfig

FLAGS = flags.FLAGS
# Defaults come from the library's config, so the two cannot drift apart.
cli.define_experiment_flags(
    CTRExperimentConfig(), output_dir="runs/recsys_reproducibility",
    quick_help="Smoke-test preset (< 2 min): 20k examples, 3 replicas, 2 activations; explicit "
    "flags still win.",
)
flags.adopt_module_key_flags(cli)


QUICK_PRESET = dict(
    train_examples=20_000, eval_examples=5_000, replicas=3, activations=["relu", "smelu:1"]
)


SEARCH_PRESET = {
    "activations": ["relu", "smelu:0.2", "rescu:0.2", "generalized_smelu:0.2", "gelu", "swish",
                    "softplus"],
    "replicas": 4,
    "time_budget": 480.0,
}
"""--max_auc_loss defaults (flags given explicitly win): the smelu, rescu (order 2)
and generalized_smelu families searched, GELU, Swish and Softplus as reference
points, R = 4 to start (the search adds replicas where intervals leave the
answer open), 8 minutes of training."""


def resolved_config() -> dict:
    """All flag values of this module; --quick fills in flags not given explicitly.

    With multi-worker jobs `--sources` defaults to none: replicas then differ
    only by their update schedule (the in-process default, tower_init, would
    blur the update mode's own effect). With `--max_auc_loss`, `SEARCH_PRESET`
    fills in flags not given explicitly.
    """
    config = cli.resolved_flags(QUICK_PRESET)
    if (config["update_mode"] or config["workers"] > 1) and not FLAGS["sources"].present:
        config["sources"] = ["none"]
    if config["max_auc_loss"] is not None:
        config.update({k: v for k, v in SEARCH_PRESET.items() if not FLAGS[k].present})
    return config


def run(config: dict) -> dict:
    """Runs resolved flag values as the main job does, writing nothing; returns results.json's content.

    For notebooks and scripts that want the rows in memory; `main` also checks
    the output directory, writes every finished row and resumes.
    """
    experiment_config = cli.experiment_config(
        config, work_dir=os.path.join(config["output_dir"], "runs"))
    return {"config": config, "results": experiment.run_ctr_experiment(experiment_config)}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = resolved_config()
    cli.run_experiment(config, config["output_dir"], resume=config["resume"])


if __name__ == "__main__":
    cli.run(main)
