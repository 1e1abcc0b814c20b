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

import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "output_dir", "runs/recsys_reproducibility", "Where results.json and tradeoff.png go."
)
flags.DEFINE_list(
    "activations",
    ["relu", "smelu:0.2", "smelu:0.4", "smelu:0.6", "gelu"],
    "Activations to compare: name or name:beta (smelu, rescu, generalized_smelu take "
    "a beta; rescu:beta:order sets the order); relu, gelu, swish, softplus take none.",
)
flags.DEFINE_list(
    "sources",
    ["tower_init"],
    "Sets of irreproducibility sources, one result row per activation and set. "
    "Within a set join sources with '+', e.g. init+order.",
)
flags.DEFINE_string(
    "dataset",
    "synthetic",
    "Data: synthetic (built in, the default), movielens_100k, movielens_1m (TFDS, "
    "downloaded on first use), criteo:PATH (Criteo TSV, .gz ok) or csv:PATH[#LABEL_COLUMN].",
)
flags.DEFINE_integer("replicas", 8, "Replicas R per activation and source set (>= 2).", lower_bound=2)
flags.DEFINE_integer(
    "train_examples", 500_000,
    "Training examples (synthetic: generated; real data: a seeded subset of at most this many).",
    lower_bound=1,
)
flags.DEFINE_integer(
    "eval_examples", 100_000, "Held-out examples for AUC and PD (at most, for real data).",
    lower_bound=1,
)
flags.DEFINE_integer("epochs", 1, "Passes over the training data.", lower_bound=1)
flags.DEFINE_integer("batch_size", 512, "Training batch size.", lower_bound=1)
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_enum("model", "mlp", ["mlp", "dcn"], "Ranking model: MLP tower or DCN-v2 style.")
flags.DEFINE_list("hidden_units", ["256", "128", "64"], "Widths of the MLP tower.")
flags.DEFINE_integer("embedding_dim", 8, "Embedding size per categorical field.", lower_bound=1)
flags.DEFINE_integer(
    "max_delay", 4, "Largest gradient delay (steps) for the 'stale' source.", lower_bound=0
)
flags.DEFINE_integer("seed", 0, "Base seed of data, weights, orders and schedules.")
flags.DEFINE_boolean(
    "jit_compile", False, "Compile training steps with XLA (faster, not bit-comparable)."
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
    own_flags = FLAGS.get_key_flags_for_module(sys.argv[0])
    config = {flag.name: flag.value for flag in own_flags}
    if config["quick"]:
        explicit = {flag.name for flag in own_flags if flag.present}
        config.update({k: v for k, v in QUICK_PRESET.items() if k not in explicit})
    return config


def run(config: dict) -> dict:
    """Runs the experiment described by `config`; returns results.json's content."""
    from tf_smelu import experiment
    from tf_smelu.data import load_dataset, popularity_buckets
    from tf_smelu.data.in_memory import batched_dataset
    from tf_smelu.models import build_model
    from tf_smelu.training.replicas import TrainConfig

    activations = [experiment.Activation.parse(a) for a in config["activations"]]
    source_sets = [experiment.parse_sources(s) for s in config["sources"]]
    start = time.perf_counter()
    data = load_dataset(
        config["dataset"],
        train_examples=config["train_examples"],
        eval_examples=config["eval_examples"],
        seed=config["seed"],
    )
    train, test = data.train, data.test
    print(f"Loaded {config['dataset']}: {len(train):,} train and {len(test):,} test examples "
          f"in {time.perf_counter() - start:.0f}s (positive rate {train.labels.mean():.3f}).")

    def train_data_fn(order_seed):
        return batched_dataset(train.features, train.labels, config["batch_size"], order_seed)

    eval_data = batched_dataset(test.features, test.labels, 4096)
    eval_groups = None
    if data.item_field is not None:
        # PD of head (50% of traffic), torso (next 40%) and tail items: rare ids
        # barely move from their random init, which no activation can fix.
        bucket = popularity_buckets(
            train.features[data.item_field], test.features[data.item_field]
        )
        eval_groups = {
            f"item_{name}": bucket == index for index, name in enumerate(("head", "torso", "tail"))
        }
    spec = data.feature_spec

    # The tower widths are `hidden_units` of the MLP and `top_units` of DCN.
    tower_argument = "hidden_units" if config["model"] == "mlp" else "top_units"

    def model_fn(activation, embedding_seed, tower_seed):
        return build_model(
            config["model"],
            spec,
            activation=activation,
            embedding_dim=config["embedding_dim"],
            embedding_seed=embedding_seed,
            tower_seed=tower_seed,
            **{tower_argument: [int(u) for u in config["hidden_units"]]},
        )

    train_config = TrainConfig(
        epochs=config["epochs"],
        learning_rate=config["learning_rate"],
        max_delay=config["max_delay"],
        jit_compile=config["jit_compile"],
    )
    steps_per_epoch = -(-len(train) // config["batch_size"])
    rows = []
    for sources in source_sets:
        for activation in activations:
            rows.append(
                experiment.run_replicas(
                    model_fn,
                    train_data_fn,
                    eval_data,
                    activation,
                    sources,
                    config["replicas"],
                    train_config,
                    seed=config["seed"],
                    steps_per_epoch=steps_per_epoch,
                    progress=config["progress"],
                    eval_groups=eval_groups,
                )
            )
            print(experiment.format_table(rows[-1:]).splitlines()[-1], flush=True)
    return {"config": config, "results": rows}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from tf_smelu import experiment
    from tf_smelu.data import parse_dataset_spec

    config = resolved_config()
    try:  # report bad flag values before any work, without a traceback
        [experiment.Activation.parse(a) for a in config["activations"]]
        [experiment.parse_sources(s) for s in config["sources"]]
        parse_dataset_spec(config["dataset"])
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    results = run(config)
    rows = results["results"]
    print()
    print(experiment.format_table(rows))
    group_table = experiment.format_group_table(rows)
    if group_table:
        print("\nRelative PD by item popularity (share of traffic: head 50%, torso 40%, tail 10%)")
        print(group_table)
    path = experiment.write_results(config["output_dir"], config, rows)
    plot = experiment.plot_tradeoff(rows, path.replace("results.json", "tradeoff.png"))
    print(f"\nWrote {path} and {plot}")


if __name__ == "__main__":
    app.run(main)
