"""Helpers for the absl command lines of the examples."""

from __future__ import annotations

import sys
from typing import Mapping

from absl import flags


def resolved_flags(preset: Mapping[str, object], preset_flag: str = "quick") -> dict:
    """The main module's flag values, with `preset` filling unset flags.

    When the boolean flag `preset_flag` is on, every value of `preset` whose
    flag was not given on the command line replaces the flag's default:
    explicit flags always win.
    """
    own_flags = flags.FLAGS.get_key_flags_for_module(sys.argv[0])
    config = {flag.name: flag.value for flag in own_flags}
    if config.get(preset_flag):
        explicit = {flag.name for flag in own_flags if flag.present}
        config.update({k: v for k, v in preset.items() if k not in explicit})
    return config


def define_experiment_flags(defaults, output_dir: str, quick_help: str) -> None:
    """Defines the flags of a replica-experiment program (one per config field).

    Both examples that run `tf_smelu.experiment.run_ctr_experiment` (the main
    job and the multi-worker example) call this with their own defaults, so
    their flags cannot drift apart. Call `flags.adopt_module_key_flags` on
    this module afterwards so that `--help` lists them.

    Args:
        defaults: A `tf_smelu.experiment.CTRExperimentConfig` with the
            program's defaults.
        output_dir: Default of `--output_dir`.
        quick_help: Help of `--quick`, saying what the preset does.
    """
    from tf_smelu.data import DATASET_SPEC_HELP
    from tf_smelu.training.updates import UPDATE_MODES

    flags.DEFINE_string("output_dir", output_dir,
                        "Where results.json and tradeoff.png (and the jobs' runs/) go.")
    flags.DEFINE_list(
        "activations", list(defaults.activations),
        "Activations to compare: name or name:beta (smelu, rescu, generalized_smelu take a "
        "beta; rescu:beta:order sets the order); relu, gelu, swish, softplus take none.")
    flags.DEFINE_list(
        "sources", list(defaults.sources),
        "Sets of irreproducibility sources, one result row per activation and set. Within a "
        "set join sources with '+', e.g. init+order; 'none' varies nothing (the control).")
    flags.DEFINE_string("dataset", defaults.dataset,
                        f"Data: {DATASET_SPEC_HELP}. synthetic is built in; MovieLens comes "
                        "from TFDS (downloaded on first use).")
    flags.DEFINE_integer("replicas", defaults.replicas,
                         "Replicas R per row (>= 2).", lower_bound=2)
    flags.DEFINE_integer(
        "train_examples", defaults.train_examples,
        "Training examples (synthetic: generated; real data: a seeded subset of at most this "
        "many).", lower_bound=1)
    flags.DEFINE_integer("eval_examples", defaults.eval_examples,
                         "Held-out examples for AUC and PD (at most, for real data).",
                         lower_bound=1)
    flags.DEFINE_integer("epochs", defaults.epochs, "Passes over the training data.",
                         lower_bound=1)
    flags.DEFINE_integer("batch_size", defaults.batch_size,
                         "Training batch size (global: split over --workers).", lower_bound=1)
    flags.DEFINE_float("learning_rate", defaults.learning_rate, "Adam learning rate (> 0).")
    flags.register_validator("learning_rate", lambda rate: rate > 0,
                             "--learning_rate must be > 0.")
    flags.DEFINE_enum("model", defaults.model, ["mlp", "dcn"],
                      "Ranking model: MLP tower or DCN-v2 style.")
    flags.DEFINE_list("hidden_units", [str(u) for u in defaults.hidden_units],
                      "Widths of the MLP tower (the top MLP for dcn).")
    flags.DEFINE_integer("embedding_dim", defaults.embedding_dim,
                         "Embedding size per categorical field.", lower_bound=1)
    flags.DEFINE_integer("max_delay", defaults.max_delay,
                         "Largest gradient delay in steps (the 'stale' source or update mode).",
                         lower_bound=0)
    flags.DEFINE_integer("seed", defaults.seed,
                         "Base seed of data, weights, orders and schedules.")
    flags.DEFINE_boolean("jit_compile", defaults.jit_compile,
                         "Compile training steps with XLA (in-process only; faster, not "
                         "bit-comparable).")
    flags.DEFINE_integer(
        "workers", defaults.workers,
        "Worker processes per replica: > 1 trains every replica as its own "
        "MultiWorkerMirroredStrategy job on localhost.", lower_bound=1)
    flags.DEFINE_list(
        "update_mode", list(defaults.update_mode),
        f"Update modes, one row each ({', '.join(UPDATE_MODES)}); given, every replica runs "
        "as a multi-worker job (see --workers) whose schedule comes from OS entropy. Empty: "
        "the in-process harness (sync with --workers=1).")
    flags.DEFINE_integer("local_sgd_period", defaults.local_sgd_period,
                         "local_sgd: steps between weight averages.", lower_bound=1)
    flags.DEFINE_integer("local_sgd_jitter", defaults.local_sgd_jitter,
                         "local_sgd: +- steps of random jitter per averaging interval.",
                         lower_bound=0)
    flags.DEFINE_integer(
        "max_vocab_size", defaults.max_vocab_size,
        "Multi-worker jobs on synthetic data: caps every field's vocabulary (dense all-reduces "
        "of the embedding tables stay cheap); 0: the full sizes.", lower_bound=0)
    flags.DEFINE_integer("job_timeout", defaults.job_timeout,
                         "Seconds before a multi-worker replica job is killed.", lower_bound=1)
    flags.DEFINE_boolean("quick", False, quick_help)
    flags.DEFINE_boolean("progress", defaults.progress, "Show progress bars.")
