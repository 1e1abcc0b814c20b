"""The replica experiment: accuracy and prediction difference per activation.

For each activation (and beta) and each set of irreproducibility sources, R
replicas are trained that are identical except for the sources switched on,
then evaluated on the same held-out examples. A result row holds their
accuracy (AUC, log loss) next to their prediction difference over all
R (R - 1) / 2 pairs, with a confidence interval: the paper's claim is about
the *tradeoff*, so neither number means much alone.

The harness is generic: it takes a `model_fn(activation, embedding_seed,
tower_seed)` and a `train_data_fn(order_seed)`, so users measure their own
models and data. `examples/recsys_reproducibility.py` is one client.
`run_ctr_experiment` runs the main job's configuration either in this
process (replicas side by side) or, with `workers > 1` or an `update_mode`,
as one multi-worker job per replica (`run_multiworker_experiment`).

Sources (`SOURCES`), each independent:
  init              every initial weight differs (embedding and tower seeds)
  embedding_init    only the embedding tables' initial weights differ
  tower_init        only the dense layers' initial weights differ
  order             the data order differs
  stale             asynchronous-style stale gradients with a different
                    random delay schedule per replica
  op_nondeterminism TensorFlow's op determinism is off (it is on otherwise,
                    so that with no source on, replicas are bit-identical)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import tempfile
import time
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from tf_smelu import layers as smelu_layers
from tf_smelu import metrics
from tf_smelu.training.replicas import ReplicaTrainer, TrainConfig, predict_probabilities
from tf_smelu.training.updates import UPDATE_MODES, delay_schedule
from tf_smelu.validation import require_choice

SOURCES = ("init", "embedding_init", "tower_init", "order", "stale", "op_nondeterminism")
# Activations given by Keras name; those with a beta are built as layers.
KERAS_ACTIVATIONS = ("relu", "gelu", "swish", "softplus", "linear")
BETA_ACTIVATIONS = ("smelu", "rescu", "generalized_smelu")


@dataclasses.dataclass(frozen=True)
class Activation:
    """An activation to compare: a name and, for the smooth family, a beta.

    Parse one from text with `Activation.parse("smelu:0.1")`.
    """

    name: str
    beta: Optional[float] = None
    order: int = 2  # RESCU only

    def __post_init__(self):
        known = KERAS_ACTIVATIONS + BETA_ACTIVATIONS
        if self.name not in known:
            raise ValueError(f"Unknown activation {self.name!r}; expected one of {known}.")
        if self.name in BETA_ACTIVATIONS:
            if self.beta is None:
                object.__setattr__(self, "beta", 1.0)
            if not self.beta > 0:
                raise ValueError(f"beta must be > 0. Received: {self.name}:{self.beta}")
        elif self.beta is not None:
            raise ValueError(f"{self.name} takes no beta. Received: {self.name}:{self.beta}")

    @classmethod
    def parse(cls, text: str) -> "Activation":
        """`"relu"`, `"smelu:0.1"` (beta) or `"rescu:0.2:3"` (beta, order)."""
        name, *rest = text.strip().split(":")
        try:
            beta = float(rest[0]) if rest else None
            order = int(rest[1]) if len(rest) > 1 else 2
        except ValueError as error:
            raise ValueError(f"Cannot parse activation {text!r}: {error}") from None
        return cls(name, beta, order)

    @property
    def label(self) -> str:
        if self.beta is None:
            return self.name
        suffix = f", n={self.order}" if self.name == "rescu" else ""
        return f"{self.name}(β={self.beta:g}{suffix})"

    def to_keras(self):
        """A Keras activation name or layer instance (cloned per hidden layer)."""
        if self.name == "smelu":
            return smelu_layers.SmeLU(beta=self.beta)
        if self.name == "rescu":
            return smelu_layers.RESCU(beta=self.beta, order=self.order)
        if self.name == "generalized_smelu":
            return smelu_layers.GeneralizedSmeLU(alpha=self.beta, beta=self.beta)
        return self.name


def parse_sources(text: str) -> tuple:
    """`"tower_init+order"` -> `("order", "tower_init")`; `"none"` -> `()`."""
    if text.strip() in ("", "none"):
        return ()
    names = tuple(sorted({part.strip() for part in text.split("+")}))
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise ValueError(f"Unknown source(s) {unknown} in {text!r}; expected {SOURCES}.")
    return names


@dataclasses.dataclass(frozen=True)
class ReplicaSeeds:
    embedding_seed: int
    tower_seed: int
    order_seed: Optional[int]
    schedule_seed: int


def replica_seeds(sources: Iterable[str], replicas: int, base_seed: int) -> List[ReplicaSeeds]:
    """Seeds per replica: a source that is on gives each replica its own seed.

    Seeds of sources that are off are the same for every replica, so those
    replicas differ in nothing else.
    """
    sources = set(sources)

    def seed(kind: int, varies: bool, replica: int) -> int:
        entropy = [base_seed, kind, replica if varies else 0]
        return int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)

    rows = []
    for r in range(replicas):
        rows.append(
            ReplicaSeeds(
                embedding_seed=seed(1, bool(sources & {"init", "embedding_init"}), r),
                tower_seed=seed(2, bool(sources & {"init", "tower_init"}), r),
                # None: the data's own order, identical for all replicas.
                order_seed=seed(3, True, r) if "order" in sources else None,
                schedule_seed=seed(4, "stale" in sources, r),
            )
        )
    return rows


@contextlib.contextmanager
def op_determinism(enabled: bool):
    """Turns TensorFlow's op determinism on or off, restoring it afterwards.

    The setting is process-wide; only TF's private config module can read it
    or switch it off again (`tests/test_experiment.py` guards that API).
    """
    previous = tf_config.is_op_determinism_enabled()
    _set_op_determinism(enabled)
    try:
        yield
    finally:
        _set_op_determinism(previous)


def _set_op_determinism(enabled: bool) -> None:
    if enabled:
        tf.config.experimental.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC (Mann-Whitney U with average ranks for ties)."""
    labels = np.asarray(labels, bool)
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        raise ValueError("AUC needs both positive and negative labels.")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = np.asarray(scores)[order]
    ranks = np.empty(labels.size)
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def log_loss(labels: np.ndarray, probabilities: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities (clipped to [eps, 1-eps])."""
    p = np.clip(probabilities, eps, 1.0 - eps)
    return float(-np.mean(labels * np.log(p) + (1.0 - labels) * np.log(1.0 - p)))


ModelFn = Callable[..., keras.Model]
DataFn = Callable[[Optional[int]], tf.data.Dataset]


def _train_and_predict(
    model_fn, train_data_fn, eval_data, activation, sources, replicas, train_config,
    seed, steps_per_epoch, progress,
):
    """Builds, trains and evaluates the replicas: (probabilities, labels, fit, config)."""
    seeds = replica_seeds(sources, replicas, seed)
    keras_activation = activation.to_keras()
    models = [
        model_fn(keras_activation, embedding_seed=s.embedding_seed, tower_seed=s.tower_seed)
        for s in seeds
    ]
    if "stale" in sources:
        train_config = dataclasses.replace(train_config, update_mode="stale")
    schedules = None
    if train_config.update_mode == "stale":
        if not steps_per_epoch:
            raise ValueError("Stale updates need `steps_per_epoch` for the delay schedules.")
        steps = steps_per_epoch * train_config.epochs
        schedules = [delay_schedule(steps, train_config.max_delay, s.schedule_seed) for s in seeds]
    trainer = ReplicaTrainer(models, train_config, schedules)
    if "order" in sources:
        datasets = [train_data_fn(s.order_seed) for s in seeds]
    else:
        datasets = train_data_fn(None)
    fit = trainer.fit(
        datasets,
        steps_per_epoch=steps_per_epoch,
        progress=progress,
        description=f"{activation.label} [{'+'.join(sources) or 'none'}]",
    )
    probabilities, labels = predict_probabilities(models, eval_data)
    return probabilities, labels, fit, train_config


def run_replicas(
    model_fn: ModelFn,
    train_data_fn: DataFn,
    eval_data: tf.data.Dataset,
    activation: Activation,
    sources: Sequence[str],
    replicas: int,
    train_config: TrainConfig = TrainConfig(),
    seed: int = 0,
    steps_per_epoch: Optional[int] = None,
    progress: bool = True,
    eval_groups: Optional[Mapping[str, np.ndarray]] = None,
) -> Dict[str, object]:
    """Trains and evaluates R replicas; returns one result row.

    Args:
        model_fn: `model_fn(activation, embedding_seed=..., tower_seed=...)`
            returning a built Keras model that outputs click logits.
        train_data_fn: `train_data_fn(order_seed)` returning batched
            `(features, labels)`; `order_seed=None` means the fixed order.
        eval_data: Batched held-out `(features, labels)`, same for all.
        activation: What to put in the hidden layers.
        sources: Irreproducibility sources switched on (see `SOURCES`).
        replicas: R >= 2.
        train_config: Training settings; `stale` in `sources` turns on
            stale updates with random per-replica delay schedules.
        seed: Base seed of everything.
        steps_per_epoch: For the progress bar (and the delay schedule).
        progress: Show progress bars.
        eval_groups: Optional name -> boolean mask over the evaluation
            examples (e.g. head/torso/tail ids); the row then holds the
            relative PD within each group under `rel_pd_by_group`.

    Returns:
        A row as in `results.json` (see DESIGN.md), plus the median pair PD,
        outlying replicas, per-replica AUCs and per-group PD.
    """
    sources = parse_sources("+".join(sources))
    if replicas < 2:
        raise ValueError(f"`replicas` must be >= 2. Received: replicas={replicas}")
    with op_determinism("op_nondeterminism" not in sources):
        probabilities, labels, fit, train_config = _train_and_predict(
            model_fn, train_data_fn, eval_data, activation, sources, replicas,
            train_config, seed, steps_per_epoch, progress,
        )
    row = summarize_predictions(
        activation, sources, probabilities, labels, seed=seed, eval_groups=eval_groups
    )
    row.update(
        train_loss=fit["loss"],
        train_seconds=fit["seconds"],
        steps=fit["steps"],
        update_mode=train_config.update_mode,
    )
    return row


def summarize_predictions(
    activation: Activation,
    sources: Sequence[str],
    probabilities: np.ndarray,
    labels: np.ndarray,
    seed: int = 0,
    eval_groups: Optional[Mapping[str, np.ndarray]] = None,
) -> Dict[str, object]:
    """Accuracy and PD of R replicas' held-out predictions: a result row.

    Args:
        activation: The replicas' activation.
        sources: What differed between the replicas (names go in the row).
        probabilities: `[R, N]` click probabilities on the same examples.
        labels: `[N]` 0/1 labels.
        seed: Seed of the bootstrap intervals.
        eval_groups: Optional name -> boolean mask over the N examples; the
            row then holds the relative PD within each non-empty group.

    Returns:
        The row fields of DESIGN.md's schema that predictions determine, plus
        the median pair, outlying replicas, per-replica AUCs, per-group PD and
        whether all replicas predicted bit-identically.
    """
    probabilities = np.asarray(probabilities, np.float64)
    aucs = [roc_auc(labels, p) for p in probabilities]
    losses = [log_loss(labels, p) for p in probabilities]
    relative = metrics.pairwise_pd(probabilities, "relative", seed=seed)
    absolute = metrics.pairwise_pd(probabilities, "absolute", seed=seed)
    by_group = {}
    for name, mask in (eval_groups or {}).items():
        mask = np.asarray(mask, bool)
        if mask.shape != labels.shape:
            raise ValueError(
                f"eval_groups[{name!r}] has shape {mask.shape}; expected {labels.shape}."
            )
        if mask.any():
            group = metrics.pairwise_pd(probabilities[:, mask], "relative", seed=seed)
            by_group[name] = {"rel_pd": group.mean, "rel_pd_ci": list(group.ci),
                              "examples": int(mask.sum())}
    return {
        "activation": activation.name,
        "beta": activation.beta,
        "label": activation.label,
        "replicas": int(probabilities.shape[0]),
        "sources": list(sources),
        "auc_mean": float(np.mean(aucs)),
        "auc_std": float(np.std(aucs, ddof=1)),
        "logloss_mean": float(np.mean(losses)),
        "abs_pd": absolute.mean,
        "rel_pd": relative.mean,
        "rel_pd_ci": [relative.ci[0], relative.ci[1]],
        "rel_pd_median": relative.median,
        "rel_pd_std": relative.std,
        "outlier_replicas": list(relative.outliers),
        "identical_replicas": bool(all(np.array_equal(probabilities[0], p) for p in probabilities)),
        "aucs": aucs,
        "rel_pd_by_group": by_group,
    }


def environment() -> Dict[str, str]:
    """Versions and machine, recorded with every result."""
    import tf_smelu

    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf_smelu": tf_smelu.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": str(os.cpu_count()),
    }


def write_results(output_dir: str, config: Dict[str, object], rows: List[Dict]) -> str:
    """Writes `results.json` (`{"config": ..., "results": [...]}`).

    Undefined numbers (e.g. the interval of a single pair when R = 2) are
    written as `null`: NaN is not JSON.
    """
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "results.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(
            _nan_to_none({"config": config, "environment": environment(), "results": rows}),
            f,
            indent=2,
            allow_nan=False,
            default=_json_default,
        )
    os.replace(path + ".tmp", path)  # never leave a half-written file
    return path


def _nan_to_none(value):
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(item) for item in value]
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return None
    return value


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"Not JSON serializable: {type(value).__name__}")


def format_table(rows: List[Dict]) -> str:
    """A readable text table of result rows, with PD relative to ReLU."""
    header = (
        f"{'sources':<22} {'activation':<26} {'AUC':>15} {'logloss':>8} "
        f"{'relPD (95% CI)':>24} {'vs relu':>8} {'absPD':>7} {'sec':>6}"
    )
    lines = [header, "-" * len(header)]
    relu = {tuple(r["sources"]): r["rel_pd"] for r in rows if r["activation"] == "relu"}
    for r in rows:
        key = tuple(r["sources"])
        change = f"{r['rel_pd'] / relu[key] - 1:+.0%}" if key in relu and relu[key] else ""
        lo, hi = r["rel_pd_ci"]
        ci = f"{r['rel_pd']:.4f} [{lo:.4f},{hi:.4f}]" if not math.isnan(lo) else f"{r['rel_pd']:.4f}"
        lines.append(
            f"{'+'.join(r['sources']) or 'none':<22} {r['label']:<26} "
            f"{r['auc_mean']:.4f}±{r['auc_std']:.4f} {r['logloss_mean']:8.4f} "
            f"{ci:>24} {change:>8} {r['abs_pd']:7.4f} {r['train_seconds']:6.0f}"
        )
    return "\n".join(lines)


def format_group_table(rows: List[Dict]) -> str:
    """Relative PD per evaluation group (e.g. id popularity), one line per row."""
    groups = list(dict.fromkeys(g for r in rows for g in r.get("rel_pd_by_group", {})))
    if not groups:
        return ""
    lines = [f"{'sources':<22} {'activation':<26} " + " ".join(f"{g:>12}" for g in groups)]
    for r in rows:
        cells = [
            f"{r['rel_pd_by_group'][g]['rel_pd']:12.4f}" if g in r["rel_pd_by_group"] else " " * 12
            for g in groups
        ]
        lines.append(f"{'+'.join(r['sources']) or 'none':<22} {r['label']:<26} " + " ".join(cells))
    return "\n".join(lines)


def plot_tradeoff(rows: List[Dict], path: str) -> str:
    """Relative PD against AUC, one point per activation/beta, one panel per source set."""
    # A bare Figure draws off-screen without switching pyplot's backend, so
    # notebooks that show their own plots keep working.
    from matplotlib.figure import Figure

    groups: Dict[tuple, List[Dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r["sources"]), []).append(r)
    fig = Figure(figsize=(6 * len(groups), 4.8))
    axes = fig.subplots(1, len(groups), squeeze=False)
    for ax, (sources, group) in zip(axes[0], groups.items()):
        for r in group:
            lo, hi = r["rel_pd_ci"]
            yerr = None if math.isnan(lo) else [[r["rel_pd"] - lo], [hi - r["rel_pd"]]]
            ax.errorbar(
                r["auc_mean"], r["rel_pd"], xerr=r["auc_std"], yerr=yerr,
                fmt="o", capsize=4, label=r["label"],
            )
        ax.set_title(f"sources: {'+'.join(sources) or 'none'} (R={group[0]['replicas']})")
        ax.set_xlabel("AUC (mean ± sd over replicas)")
        ax.set_ylabel("relative PD (mean over pairs, 95% CI)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Accuracy–reproducibility tradeoff: lower right is better")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


@dataclasses.dataclass(frozen=True)
class CTRExperimentConfig:
    """The main job's experiment: data, model, activations, sources, training.

    Defaults are those of `examples/recsys_reproducibility.py`.
    """

    dataset: str = "synthetic"
    activations: Sequence[str] = ("relu", "smelu:0.2", "smelu:0.4", "smelu:0.6", "gelu")
    sources: Sequence[str] = ("tower_init",)
    replicas: int = 8
    train_examples: int = 500_000
    eval_examples: int = 100_000
    epochs: int = 1
    batch_size: int = 512
    learning_rate: float = 1e-3
    model: str = "mlp"
    hidden_units: Sequence[int] = (256, 128, 64)
    embedding_dim: int = 8
    max_delay: int = 4
    seed: int = 0
    jit_compile: bool = False
    progress: bool = True
    workers: int = 1
    update_mode: Sequence[str] = ()
    local_sgd_period: int = 16
    local_sgd_jitter: int = 4
    max_vocab_size: int = 0
    job_timeout: int = 3600
    work_dir: Optional[str] = None

    @property
    def multi_worker(self) -> bool:
        """Whether each replica runs as its own multi-worker job.

        True with `workers > 1` or any `update_mode` (then every row is also
        per update mode; `workers > 1` alone means `sync`). Multi-worker
        fields: `workers` (processes per job), `update_mode` (modes of
        `tf_smelu.training.updates.UPDATE_MODES`), `max_delay`,
        `local_sgd_period`, `local_sgd_jitter`, `max_vocab_size` (synthetic
        vocabulary cap, 0: none), `job_timeout` (seconds per job) and
        `work_dir` (the jobs' weights, predictions and logs; `None`: a new
        temporary directory, kept and logged, so failed jobs can be read).
        """
        return self.workers > 1 or bool(self.update_mode)

    @property
    def update_modes(self) -> tuple:
        """The update modes of the rows: `update_mode`, or `("sync",)`."""
        return tuple(self.update_mode) or ("sync",)

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> "CTRExperimentConfig":
        """Takes the fields it knows from `values` (e.g. all of a job's flags)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def validate(self) -> None:
        """Raises ValueError on a bad activation, source set or dataset spec."""
        from tf_smelu.data import parse_dataset_spec

        for text in self.activations:
            Activation.parse(text)
        source_sets = [parse_sources(text) for text in self.sources]
        parse_dataset_spec(self.dataset)
        if not self.multi_worker:
            return
        for mode in self.update_mode:
            require_choice("update_mode", mode, UPDATE_MODES)
        in_process_only = sorted({"stale", "op_nondeterminism"}.intersection(*source_sets))
        if in_process_only:
            raise ValueError(
                f"Source(s) {in_process_only} exist only in the in-process harness; with "
                "multi-worker jobs use update_mode=stale, and op determinism is not set "
                f"there. Received: sources={list(self.sources)}"
            )
        if self.batch_size % self.workers:
            raise ValueError(
                "`batch_size` (the global batch) must be a multiple of `workers`. "
                f"Received: batch_size={self.batch_size}, workers={self.workers}"
            )
        if self.jit_compile:
            raise ValueError("`jit_compile` is not supported with multi-worker jobs.")
        if self.max_vocab_size and parse_dataset_spec(self.dataset).kind != "synthetic":
            raise ValueError(
                "`max_vocab_size` applies to synthetic data only. "
                f"Received: dataset={self.dataset!r}, max_vocab_size={self.max_vocab_size}"
            )


def run_ctr_experiment(
    config: CTRExperimentConfig, log: Callable[[str], None] = print
) -> List[Dict]:
    """Loads the data, then runs every (source set, activation) pair of `config`.

    With `config.multi_worker`, every replica is a multi-worker job
    (`run_multiworker_experiment`).

    Returns:
        The result rows, in order (sources outer, activations inner; with
        multi-worker jobs: sources, update modes, activations).
    """
    if config.multi_worker:
        return run_multiworker_experiment(config, log)
    from tf_smelu.data import load_dataset, popularity_buckets
    from tf_smelu.data.in_memory import batched_dataset
    from tf_smelu.models import build_model

    activations = [Activation.parse(a) for a in config.activations]
    source_sets = [parse_sources(s) for s in config.sources]
    start = time.perf_counter()
    data = load_dataset(
        config.dataset,
        train_examples=config.train_examples,
        eval_examples=config.eval_examples,
        seed=config.seed,
    )
    train, test = data.train, data.test
    log(f"Loaded {config.dataset}: {len(train):,} train and {len(test):,} test examples "
        f"in {time.perf_counter() - start:.0f}s (positive rate {train.labels.mean():.3f}).")

    def train_data_fn(order_seed):
        return batched_dataset(train.features, train.labels, config.batch_size, order_seed)

    eval_data = batched_dataset(test.features, test.labels, 4096)
    eval_groups = None
    if data.item_field is not None:
        # PD of head (50% of traffic), torso (next 40%) and tail items.
        bucket = popularity_buckets(
            train.features[data.item_field], test.features[data.item_field]
        )
        eval_groups = {
            f"item_{name}": bucket == index for index, name in enumerate(("head", "torso", "tail"))
        }
    # The tower widths are `hidden_units` of the MLP and `top_units` of DCN.
    tower_argument = "hidden_units" if config.model == "mlp" else "top_units"

    def model_fn(activation, embedding_seed, tower_seed):
        return build_model(
            config.model,
            data.feature_spec,
            activation=activation,
            embedding_dim=config.embedding_dim,
            embedding_seed=embedding_seed,
            tower_seed=tower_seed,
            **{tower_argument: [int(u) for u in config.hidden_units]},
        )

    train_config = TrainConfig(
        epochs=config.epochs,
        learning_rate=config.learning_rate,
        max_delay=config.max_delay,
        jit_compile=config.jit_compile,
    )
    steps_per_epoch = -(-len(train) // config.batch_size)
    rows: List[Dict] = []
    for sources in source_sets:
        for activation in activations:
            rows.append(
                run_replicas(
                    model_fn, train_data_fn, eval_data, activation, sources,
                    config.replicas, train_config, seed=config.seed,
                    steps_per_epoch=steps_per_epoch, progress=config.progress,
                    eval_groups=eval_groups,
                )
            )
            log(format_table(rows[-1:]).splitlines()[-1])
    return rows


def run_multiworker_experiment(
    config: CTRExperimentConfig, log: Callable[[str], None] = print
) -> List[Dict]:
    """Runs every replica of `config` as a job of `config.workers` processes.

    One row per (source set, update mode, activation), with
    `"update:<mode>"` appended to the row's sources. Each job's chief
    predicts the held-out split; this process loads the same data once more
    to check the labels and to compute PD by item popularity.
    See `tf_smelu.training.replica_jobs`.
    """
    from tf_smelu.data import popularity_buckets
    from tf_smelu.training.distributed import load_data
    from tf_smelu.training.replica_jobs import ClusterTraining, ReplicaJob, run_replica_jobs

    config.validate()
    training = ClusterTraining(
        workers=config.workers,
        epochs=config.epochs,
        per_replica_batch_size=config.batch_size // config.workers,
        learning_rate=config.learning_rate,
        model=config.model,
        hidden_units=tuple(int(u) for u in config.hidden_units),
        embedding_dim=config.embedding_dim,
        dataset=config.dataset,
        max_vocab_size=config.max_vocab_size,
        train_examples=config.train_examples,
        eval_examples=config.eval_examples,
        seed=config.seed,
        max_delay=config.max_delay,
        local_sgd_period=config.local_sgd_period,
        local_sgd_jitter=config.local_sgd_jitter,
        timeout=config.job_timeout,
    )
    data = load_data(config.dataset, config.train_examples, config.eval_examples, config.seed,
                     config.max_vocab_size)
    eval_groups = None
    if data.item_field is not None:
        bucket = popularity_buckets(
            data.train.features[data.item_field], data.test.features[data.item_field]
        )
        eval_groups = {
            f"item_{name}": bucket == index for index, name in enumerate(("head", "torso", "tail"))
        }
    work_dir = config.work_dir or tempfile.mkdtemp(prefix="tf_smelu_jobs_")
    log(f"{config.workers}-worker jobs on localhost, update modes {list(config.update_modes)}; "
        f"weights, predictions and worker logs in {work_dir}")
    rows: List[Dict] = []
    for sources in [parse_sources(s) for s in config.sources]:
        seeds = replica_seeds(sources, config.replicas, config.seed)
        for mode in config.update_modes:
            for text in config.activations:
                jobs = [
                    ReplicaJob(
                        text, mode, r, work_dir,
                        embedding_seed=s.embedding_seed, tower_seed=s.tower_seed,
                        # None: every replica reads the rows in the same order.
                        order_seed=s.order_seed if s.order_seed is not None else config.seed,
                        tag="+".join(sources),
                    )
                    for r, s in enumerate(seeds)
                ]
                result = run_replica_jobs(training, jobs, progress=config.progress)
                if not np.array_equal(result.labels, data.test.labels):
                    raise RuntimeError(
                        f"The workers' held-out labels differ from this process's ({jobs[0].name})."
                    )
                row = summarize_predictions(
                    Activation.parse(text), [*sources, f"update:{mode}"], result.probabilities,
                    result.labels, seed=config.seed, eval_groups=eval_groups,
                )
                row.update(train_seconds=float(np.mean(result.seconds)), update_mode=mode,
                           workers=config.workers)
                rows.append(row)
                log(format_table(rows[-1:]).splitlines()[-1])
    return rows


def report(
    rows: List[Dict], config: Mapping[str, object], output_dir: str,
    log: Callable[[str], None] = print,
) -> tuple:
    """Prints the tables and writes results.json and tradeoff.png.

    Returns:
        The paths `(results_json, tradeoff_png)`.
    """
    log("\n" + format_table(rows))
    group_table = format_group_table(rows)
    if group_table:
        log("\nRelative PD by item popularity "
            "(share of traffic: head 50%, torso 40%, tail 10%)\n" + group_table)
    path = write_results(output_dir, dict(config), rows)
    plot = plot_tradeoff(rows, os.path.join(output_dir, "tradeoff.png"))
    log(f"\nWrote {path} and {plot}")
    return path, plot
