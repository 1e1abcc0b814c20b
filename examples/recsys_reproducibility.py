"""Accuracy vs. reproducibility of ReLU and smooth activations on CTR data.

Trains R replicas of a recommendation (CTR) model per activation that are
identical except for the irreproducibility sources you switch on, evaluates
them on the same held-out examples and reports AUC, log loss and the
prediction difference (PD) between replicas, with 95% confidence intervals.

Writes to --output_dir:
  results.json   every flag, the environment, one row per activation/beta
                 and source set (schema in DESIGN.md)
  tradeoff.png   relative PD against AUC, one panel per source set

Examples:
  python examples/recsys_reproducibility.py                  # default, < 10 min
  python examples/recsys_reproducibility.py --quick          # smoke test, < 2 min
  python examples/recsys_reproducibility.py \\
      --activations=relu,smelu:0.05,smelu:0.1,smelu:0.2,gelu \\
      --sources=tower_init,init+order,stale --replicas=8

Sources (combine with '+', separate sets with ','): init, embedding_init,
tower_init, order, stale, op_nondeterminism; 'none' is the deterministic
control (replicas must agree bit for bit).
"""

from __future__ import annotations


from absl import app, flags

from tf_smelu.experiment import CTRExperimentConfig

FLAGS = flags.FLAGS
# Defaults come from the library's config, so the two cannot drift apart.
DEFAULTS = CTRExperimentConfig()

flags.DEFINE_string(
    "output_dir", "runs/recsys_reproducibility", "Where results.json and tradeoff.png go."
)
flags.DEFINE_list(
    "activations",
    list(DEFAULTS.activations),
    "Activations to compare: name or name:beta (smelu, rescu, generalized_smelu take "
    "a beta; rescu:beta:order sets the order); relu, gelu, swish, softplus take none.",
)
flags.DEFINE_list(
    "sources",
    list(DEFAULTS.sources),
    "Sets of irreproducibility sources, one result row per activation and set. "
    "Within a set join sources with '+', e.g. init+order.",
)
flags.DEFINE_string(
    "dataset",
    DEFAULTS.dataset,
    "Data: synthetic (built in, the default), movielens_100k, movielens_1m (TFDS, "
    "downloaded on first use), criteo:PATH (Criteo TSV, .gz ok) or csv:PATH[#LABEL_COLUMN].",
)
flags.DEFINE_integer("replicas", DEFAULTS.replicas, "Replicas R per activation and source set (>= 2).", lower_bound=2)
flags.DEFINE_integer(
    "train_examples", DEFAULTS.train_examples,
    "Training examples (synthetic: generated; real data: a seeded subset of at most this many).",
    lower_bound=1,
)
flags.DEFINE_integer(
    "eval_examples", DEFAULTS.eval_examples, "Held-out examples for AUC and PD (at most, for real data).",
    lower_bound=1,
)
flags.DEFINE_integer("epochs", DEFAULTS.epochs, "Passes over the training data.", lower_bound=1)
flags.DEFINE_integer("batch_size", DEFAULTS.batch_size, "Training batch size.", lower_bound=1)
flags.DEFINE_float("learning_rate", DEFAULTS.learning_rate, "Adam learning rate.")
flags.DEFINE_enum("model", DEFAULTS.model, ["mlp", "dcn"], "Ranking model: MLP tower or DCN-v2 style.")
flags.DEFINE_list("hidden_units", [str(u) for u in DEFAULTS.hidden_units], "Widths of the MLP tower.")
flags.DEFINE_integer("embedding_dim", DEFAULTS.embedding_dim, "Embedding size per categorical field.", lower_bound=1)
flags.DEFINE_integer(
    "max_delay", DEFAULTS.max_delay, "Largest gradient delay (steps) for the 'stale' source.", lower_bound=0
)
flags.DEFINE_integer("seed", DEFAULTS.seed, "Base seed of data, weights, orders and schedules.")
flags.DEFINE_boolean(
    "jit_compile", DEFAULTS.jit_compile, "Compile training steps with XLA (faster, not bit-comparable)."
)
flags.DEFINE_boolean(
    "quick", False, "Smoke-test preset (< 2 min): 20k examples, 3 replicas, 2 activations."
)
flags.DEFINE_boolean("progress", True, "Show progress bars.")


QUICK_PRESET = dict(
    train_examples=20_000, eval_examples=5_000, replicas=3, activations=["relu", "smelu:0.2"]
)


def resolved_config() -> dict:
    """All flag values of this module; --quick fills in flags not given explicitly."""
    from tf_smelu.cli import resolved_flags

    return resolved_flags(QUICK_PRESET)


def run(config: dict) -> dict:
    """Runs the experiment described by `config`; returns results.json's content."""
    from tf_smelu import experiment

    rows = experiment.run_ctr_experiment(experiment.CTRExperimentConfig.from_dict(config))
    return {"config": config, "results": rows}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from tf_smelu import experiment

    config = resolved_config()
    try:  # report bad flag values before any work, without a traceback
        CTRExperimentConfig.from_dict(config).validate()
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    experiment.report(run(config)["results"], config, config["output_dir"])


if __name__ == "__main__":
    app.run(main)
