"""The one training configuration, and absl flags generated from dataclasses.

`TrainingConfig` says how a model is trained, identically in the in-process
replica harness (`tf_smelu.training.replicas`), in every replica job
(`tf_smelu.training.replica_jobs`) and in the worker program
(`tf_smelu.training.distributed`). Its defaults exist only here.

Command lines are generated from dataclasses, so flags cannot drift from the
fields: `define_flags(TrainingConfig)` defines one flag per field (type,
default, help, bounds and choices from the field), `from_flags` builds the
dataclass back from parsed flags, and `to_args` writes the command-line
arguments that reproduce a value (`from_flags` of `to_args(config)` is
`config` again; `tests/test_training_config.py` checks every field).
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping

from absl import flags

from tf_smelu.data.schema import column_names
from tf_smelu.data.sources import (
    DATASET_SPEC_HELP,
    DatasetSpec,
    check_dataset_options,
    check_eval_dataset,
    parse_dataset_spec,
    vocab_cap,
)
from tf_smelu.training.updates import UPDATE_MODES
from tf_smelu.validation import require_choice

MODELS = ("mlp", "dcn")
"""Model names of `tf_smelu.models.build_model`; `model` also takes your own (`check_model`)."""

MODEL_HELP = (  # the help of --model, also shown by programs that take a model
    "Ranking model: mlp, dcn, or your own Keras model: PATH.keras (a saved Functional or "
    "Sequential model, rebuilt for every replica with seeded weights and its hidden ReLUs "
    "replaced by the activation under test) or package.module:function (importable; "
    "function(feature_spec) returns such a model, or function(feature_spec, activation, "
    "embedding_seed, tower_seed) builds each replica). Inputs named as the data's features: "
    "int64 ids [batch] per categorical field, float32 'dense' [batch, num_dense]; output a "
    "click logit [batch, 1] or [batch] (a sigmoid output is removed). --hidden_units and "
    "--embedding_dim apply to mlp and dcn only."
)
"""Help text of `--model`: the built-in models and the two ways to give your own."""


def check_model(model: str) -> str:
    """`model` names a built-in model, a `.keras` file that exists, or `module:function`.

    Loading the file or module, and matching the model to the data, happen in
    `tf_smelu.training.problem.model_builder`, before any training.

    Args:
        model: The `--model` value.

    Returns:
        `model`, unchanged.

    Raises:
        ValueError: if `model` is none of those, or its `.keras` file does
            not exist.
    """
    if model in MODELS:
        return model
    if model.endswith(".keras"):
        if not os.path.isfile(model):
            raise ValueError(f"`model` file not found. Received: model={model!r}")
        return model
    module, colon, function = model.partition(":")
    if colon and function.isidentifier() and all(p.isidentifier() for p in module.split(".")):
        return model
    raise ValueError(
        f"`model` must be one of {MODELS}, a saved Keras model PATH.keras or "
        f"package.module:function. Received: model={model!r}"
    )


def option(
    default: object,
    help: str,
    *,
    minimum: float | None = None,
    positive: bool = False,
    choices: Iterable[str] | None = None,
    check: Callable[[object], object] | None = None,
    flag: bool = True,
) -> dataclasses.Field:
    """A dataclass field that carries its flag's help text and checks.

    Args:
        default: The default (the only place it is written).
        help: One sentence for `--help`, or a function returning it (for
            help that lists what is registered when the flag is defined).
        minimum: Smallest allowed value (numbers).
        positive: The value must be finite and `> 0` (numbers).
        choices: Allowed values (strings, or each element of a tuple).
        check: Called with the whole value; raises ValueError if it is bad.
        flag: Whether `define_flags` makes a flag of it.

    Returns:
        The field, its checks and help in its metadata.

    Raises:
        TypeError: if `default` is a list, dict or set (fields are frozen:
            use a tuple).
    """
    metadata = dict(help=help, minimum=minimum, positive=positive, check=check,
                    choices=tuple(choices) if choices is not None else None, flag=flag)
    if isinstance(default, (list, dict, set)):
        raise TypeError("Use a tuple for sequence defaults: fields are immutable.")
    return dataclasses.field(default=default, metadata=metadata)


def check_field(field: dataclasses.Field, value: object) -> None:
    """Raises ValueError when `value` breaks the checks of `field`'s `option`.

    Args:
        field: A field made with `option`.
        value: A candidate value (`None` passes; each element of a tuple is
            checked).

    Raises:
        ValueError: naming the field, if its `check` refuses the value, an
            element is not among `choices`, a number is not finite, not
            `> 0` with `positive`, or below `minimum`.
    """
    name, meta = field.name, field.metadata
    if meta.get("check") is not None and value is not None:
        meta["check"](value)
    values = value if isinstance(value, tuple) else (value,)
    for item in values:
        if item is None:
            continue
        if meta.get("choices") is not None:
            require_choice(name, item, meta["choices"])
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"`{name}` must be finite. Received: {name}={item!r}")
            if meta.get("positive") and not item > 0:
                raise ValueError(f"`{name}` must be > 0. Received: {name}={item!r}")
            minimum = meta.get("minimum")
            if minimum is not None and item < minimum:
                raise ValueError(f"`{name}` must be >= {minimum}. Received: {name}={item!r}")


def check_fields(instance: object) -> None:
    """Runs `check_field` on every field of a dataclass instance.

    Args:
        instance: A dataclass instance whose fields were made with `option`.

    Raises:
        ValueError: at the first field whose value breaks its checks.
    """
    for field in dataclasses.fields(instance):
        check_field(field, getattr(instance, field.name))


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """How a CTR model is trained: data, model, optimizer and update mode.

    Global batch = `batch_size`; a worker of an N-worker job steps on
    `batch_size / N` rows. `steps`, when set, replaces `epochs`. Each field
    is also a flag of the programs, whose `--help` says more.

    Attributes:
        dataset: The training data, a `DatasetSpec` or its text
            (`DATASET_SPEC_HELP`).
        eval_dataset: Separate held-out files of the same kind; None: a
            seeded tenth of `dataset` is held out.
        train_examples: Training examples (synthetic: generated; real data:
            at most this many), `>= 1`.
        eval_examples: Held-out examples for AUC and PD (at most, for real
            data), `>= 1`.
        max_vocab_size: Synthetic data only: a cap on every field's
            vocabulary; 0: none.
        label_column: csv/tfrecord: the label column; None: the spec's, else
            `label`.
        categorical_columns: csv/tfrecord: categorical columns; empty:
            inferred.
        dense_columns: csv/tfrecord: numeric columns; empty: inferred.
        label_threshold: csv/tfrecord/movielens: a label is `value >= this`;
            None: labels must be 0 or 1 (movielens: 4).
        data_dir: movielens: the TFDS data directory; None: TFDS's default.
        on_error: csv/criteo: `"raise"` at a malformed row, or `"skip"` it.
        seed: Base seed of data, weights, orders and schedules, `>= 0`.
        model: `"mlp"`, `"dcn"`, a `.keras` file or `module:function`
            (`MODEL_HELP`).
        hidden_units: Widths of the MLP tower (the top MLP for dcn).
        embedding_dim: Embedding size per categorical field.
        epochs: Passes over the training data, `>= 1`.
        steps: Training steps, replacing `epochs` when set.
        batch_size: Global training batch, split over a job's workers.
        learning_rate: Adam learning rate, `> 0`.
        update_mode: `"sync"`, `"stale"` or `"local_sgd"` (see
            `tf_smelu.training.updates`).
        max_delay: stale: largest gradient delay in steps.
        local_sgd_period: local_sgd: steps between weight averages.
        local_sgd_jitter: local_sgd: +- steps of jitter per interval.
        schedule_seed: Seed of the stale delays or averaging points; None:
            OS entropy, so every run differs.
        jit_compile: Compile the training step with XLA.
        sparse_gradients: Multi-worker: sparse embedding gradients.

    Raises:
        ValueError: naming the field, if a value breaks its checks, a
            dataset option does not apply to `dataset`, `eval_dataset` does
            not match it, or `jit_compile` is combined with
            `sparse_gradients`.
    """

    # Data.
    dataset: DatasetSpec = option(
        "synthetic", f"Data: {DATASET_SPEC_HELP}. synthetic is built in; MovieLens comes from "
        "TFDS (see --data_dir); GLOB matches plain or GZIP TFRecord files. The columns of csv "
        "and tfrecord data are inferred unless set with --label_column, --categorical_columns, "
        "--dense_columns and --label_threshold.",
        check=lambda spec: spec if isinstance(spec, DatasetSpec) else parse_dataset_spec(spec))
    eval_dataset: DatasetSpec | None = option(
        None, "Held-out data for AUC and PD from separate files of --dataset's kind: "
        "csv:PATH[#LABEL_COLUMN], tfrecord:GLOB[#LABEL_COLUMN] or criteo:PATH, with the "
        "training data's columns (checked before training). Read with the training data's "
        "schema and encoded with what its rows fitted (vocabularies, dense statistics); "
        "every --dataset row may then train. Unset: a seeded tenth of --dataset is held out.",
        check=lambda spec: spec if isinstance(spec, DatasetSpec) else parse_dataset_spec(spec))
    train_examples: int = option(
        500_000, "Training examples (synthetic: generated; real data: a seeded subset of at "
        "most this many).", minimum=1)
    eval_examples: int = option(
        100_000, "Held-out examples for AUC and PD (at most, for real data).", minimum=1)
    max_vocab_size: int = option(
        0, "Synthetic data only: caps every field's vocabulary (small tables keep the dense "
        "all-reduces of multi-worker jobs cheap); 0: the full sizes.", minimum=0)
    label_column: str | None = option(
        None, "csv/tfrecord data: the label column (or feature); unset: the one of "
        "csv:PATH#LABEL_COLUMN, else 'label'.")
    categorical_columns: tuple[str, ...] = option(
        (), "csv/tfrecord data: categorical feature columns, e.g. user,item (each gets an "
        "embedding). Naming any feature column (here or in --dense_columns) uses exactly the "
        "named ones; empty: inferred (ids, text, repeating whole numbers).",
        check=lambda names: column_names("categorical_columns", names))
    dense_columns: tuple[str, ...] = option(
        (), "csv/tfrecord data: numeric feature columns (standardised; missing values become "
        "the training mean); empty: inferred.",
        check=lambda names: column_names("dense_columns", names))
    label_threshold: float | None = option(
        None, "csv/tfrecord/movielens data: label = value >= this, e.g. 4 for 1-5 star "
        "ratings; unset: labels must be 0 or 1 (movielens: 4).")
    data_dir: str | None = option(
        None, "movielens data: TFDS data directory holding (or receiving) the prepared data; "
        "unset: $TFDS_DATA_DIR or ~/tensorflow_datasets. Offline, point it at a copy.")
    on_error: str = option(
        "raise", "csv/criteo data: a malformed row stops the run with its file and line "
        "(raise), or is skipped and counted (skip; the count is printed and recorded in "
        "results.json).", choices=("raise", "skip"))
    seed: int = option(0, "Base seed of data, weights, orders and schedules.", minimum=0)
    # Model.
    model: str = option("mlp", MODEL_HELP, check=check_model)
    hidden_units: tuple[int, ...] = option(
        (256, 128, 64), "Widths of the MLP tower (the top MLP for dcn).", minimum=1)
    embedding_dim: int = option(8, "Embedding size per categorical field.", minimum=1)
    # Optimization.
    epochs: int = option(1, "Passes over the training data.", minimum=1)
    steps: int | None = option(
        None, "Training steps; when set, replaces --epochs (the data repeats as needed).",
        minimum=1)
    batch_size: int = option(
        512, "Global training batch (split over the workers of a multi-worker job).",
        minimum=1)
    # 1e-2: on the default data every activation compared reached its best (or
    # within 0.003 of it) there after one epoch; at 1e-3 ReLU was 0.017 AUC below.
    learning_rate: float = option(
        1e-2, "Adam learning rate (> 0); the default is where ReLU, SmeLU and GELU reached "
        "their best AUC on the default data in one epoch.", positive=True)
    # Updates.
    update_mode: str = option(
        "sync", "How gradients reach the weights: sync, stale (applied after random delays, "
        "as with asynchronous workers), local_sgd (workers average their weights "
        "periodically; multi-worker only).", choices=UPDATE_MODES)
    max_delay: int = option(4, "stale: largest gradient delay in steps.", minimum=0)
    local_sgd_period: int = option(16, "local_sgd: steps between weight averages.", minimum=1)
    local_sgd_jitter: int = option(
        4, "local_sgd: +- steps of random jitter per averaging interval.", minimum=0)
    schedule_seed: int | None = option(
        None, "Seed of the stale delays or local_sgd averaging points. Unset: drawn from OS "
        "entropy (by a job's chief), so every run differs, as in production.", minimum=0)
    # Execution.
    jit_compile: bool = option(
        False, "Compile the forward and backward pass with XLA (faster; not bit-comparable "
        "with graph mode).")
    sparse_gradients: bool = option(
        False, "Multi-worker: keep embedding gradients sparse (all-gathered rows, sparse Adam); "
        "default dense, which was 3-4x faster on localhost.")

    def __post_init__(self):
        if isinstance(self.dataset, str):
            object.__setattr__(self, "dataset", parse_dataset_spec(self.dataset))
        if not isinstance(self.dataset, DatasetSpec):
            raise ValueError(f"`dataset` must be a spec string. Received: {self.dataset!r}")
        if isinstance(self.eval_dataset, str):
            object.__setattr__(self, "eval_dataset", parse_dataset_spec(self.eval_dataset))
        units = self.hidden_units
        units = units.split(",") if isinstance(units, str) else units
        try:  # flags give strings
            units = tuple(int(u) if isinstance(u, str) else u for u in units)
        except ValueError:
            raise ValueError(
                "`hidden_units` must be positive integers, e.g. 256,128,64. "
                f"Received: hidden_units={self.hidden_units!r}"
            ) from None
        object.__setattr__(self, "hidden_units", units)
        if not self.hidden_units:
            raise ValueError("`hidden_units` must name at least one layer width.")
        check_fields(self)
        vocab_cap(self.dataset, self.max_vocab_size)  # the one rule: synthetic data only
        for name in ("categorical_columns", "dense_columns"):  # callers may pass lists
            object.__setattr__(self, name, column_names(name, getattr(self, name)))
        check_dataset_options(self.dataset, **{name: getattr(self, name) for name in (
            "label_column", "categorical_columns", "dense_columns", "label_threshold",
            "data_dir")})
        check_eval_dataset(self.dataset, self.eval_dataset, self.label_column)
        if self.jit_compile and self.sparse_gradients:
            raise ValueError("`jit_compile` needs dense gradients: unset `sparse_gradients`.")

    def per_worker_batch_size(self, num_workers: int) -> int:
        """Rows per worker and step; the global batch must split evenly.

        Args:
            num_workers: Workers of the job.

        Returns:
            `batch_size // num_workers`.

        Raises:
            ValueError: if `batch_size` is not a multiple of `num_workers`.
        """
        if self.batch_size % num_workers:
            raise ValueError(
                "`batch_size` (the global batch) must be a multiple of the number of workers. "
                f"Received: batch_size={self.batch_size}, workers={num_workers}"
            )
        return self.batch_size // num_workers

    def total_steps(self, train_rows: int) -> int:
        """`steps`, or the steps of `epochs` passes over `train_rows` rows.

        Args:
            train_rows: Rows of the training data.

        Returns:
            The number of training steps (at least 1; a last partial batch
            counts as a step).
        """
        if self.steps is not None:
            return self.steps
        return max(1, -(-self.epochs * train_rows // self.batch_size))


# --------------------------------------------------------------------------
# Flags from dataclasses.
# --------------------------------------------------------------------------


def _field_types(cls) -> dict[str, object]:
    return typing.get_type_hints(cls)


def _kind(annotation) -> tuple[str, bool]:
    """(`"int"`, `"float"`, `"bool"`, `"str"`, `"spec"`, `"ints"` or `"strs"`, optional)."""
    optional = False
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(arguments) < len(typing.get_args(annotation))
        (annotation,) = arguments
    if typing.get_origin(annotation) is tuple:
        element = typing.get_args(annotation)[0]
        return ("ints" if element is int else "strs"), optional
    if annotation is DatasetSpec:
        return "spec", optional
    names = {bool: "bool", int: "int", float: "float", str: "str"}
    if annotation not in names:
        raise TypeError(f"No flag type for annotation {annotation!r}.")
    return names[annotation], optional


def flag_fields(cls: type, exclude: Iterable[str] = ()) -> list[dataclasses.Field]:
    """The fields of `cls` that are flags, minus `exclude`.

    Args:
        cls: A dataclass whose fields were made with `option`.
        exclude: Field names to leave out.

    Returns:
        The fields, in definition order.
    """
    exclude = set(exclude)
    return [f for f in dataclasses.fields(cls)
            if f.metadata.get("flag", False) and f.name not in exclude]


def define_flags(
    cls: type,
    defaults: object | None = None,
    exclude: Iterable[str] = (),
    flag_values: flags.FlagValues = flags.FLAGS,
    module_name: str | None = None,
) -> list[str]:
    """Defines one absl flag per `option` field of dataclass `cls`.

    Args:
        cls: A dataclass whose fields were made with `option`.
        defaults: An instance whose values become the flags' defaults
            (default: `cls()`).
        exclude: Field names to leave out.
        flag_values: Where to define them.
        module_name: The module the flags belong to (shown by `--help`).

    Returns:
        The names of the flags defined.
    """
    defaults = cls() if defaults is None else defaults
    hints = _field_types(cls)
    names = []
    for field in flag_fields(cls, exclude):
        kind, _ = _kind(hints[field.name])
        value = getattr(defaults, field.name)
        meta = field.metadata
        kw = dict(flag_values=flag_values, module_name=module_name)
        help_text = meta["help"]() if callable(meta["help"]) else meta["help"]
        if kind == "bool":
            flags.DEFINE_boolean(field.name, value, help_text, **kw)
        elif kind == "int":
            flags.DEFINE_integer(field.name, value, help_text, **kw)
        elif kind == "float":
            flags.DEFINE_float(field.name, value, help_text, **kw)
        elif kind == "str" and meta.get("choices"):
            flags.DEFINE_enum(field.name, value, list(meta["choices"]), help_text, **kw)
        elif kind in ("str", "spec"):
            flags.DEFINE_string(field.name, None if value is None else str(value), help_text, **kw)
        else:  # a tuple
            flags.DEFINE_list(field.name, [str(v) for v in value], help_text, **kw)
        flags.register_validator(
            field.name, _flag_validator(field, kind), flag_values=flag_values
        )
        names.append(field.name)
    return names


def _flag_validator(field: dataclasses.Field, kind: str) -> Callable[[object], bool]:
    def validate(value) -> bool:
        try:
            check_field(field, _from_flag_value(kind, value))
        except ValueError as error:
            raise flags.ValidationError(str(error)) from None
        return True

    return validate


def _from_flag_value(kind: str, value):
    if value is None:
        return None
    if kind == "ints":
        try:
            return tuple(int(v) for v in value)
        except ValueError:
            raise ValueError(f"expected integers separated by commas, got {value!r}") from None
    if kind == "strs":
        return tuple(value)
    return value


def from_flags(cls: type, flag_values: flags.FlagValues | Mapping[str, object],
               exclude: Iterable[str] = (), **overrides: object) -> typing.Any:
    """Builds `cls` from parsed flags (or a name -> value mapping).

    Fields that are not flags, or are excluded, keep their defaults unless
    given in `overrides`.

    Args:
        cls: A dataclass whose fields were made with `option`.
        flag_values: Parsed flags, or flag name -> value.
        exclude: Field names not to read.
        **overrides: Field values that replace the flags'.

    Returns:
        The instance of `cls`.

    Raises:
        ValueError: if a value is invalid (as for the constructor of `cls`).
    """
    hints = _field_types(cls)
    values = {}
    for field in flag_fields(cls, exclude):
        if field.name in overrides:
            continue
        raw = flag_values[field.name]
        raw = raw.value if isinstance(raw, flags.Flag) else raw
        values[field.name] = _from_flag_value(_kind(hints[field.name])[0], raw)
    return cls(**values, **overrides)


def to_args(instance: object, exclude: Iterable[str] = ()) -> list[str]:
    """Command-line arguments that `from_flags` turns back into `instance`.

    Args:
        instance: A dataclass instance whose fields were made with `option`.
        exclude: Field names to leave out.

    Returns:
        `--name=value` arguments (`--name`/`--noname` for booleans), one
        per flag field that is not None.

    Raises:
        ValueError: if a field is None but its default is not (no flag value
            says None).
    """
    hints = _field_types(type(instance))
    args = []
    for field in flag_fields(type(instance), exclude):
        value = getattr(instance, field.name)
        kind, _ = _kind(hints[field.name])
        if value is None:
            if field.default is not None:
                raise ValueError(f"`{field.name}` = None cannot be written as a flag.")
            continue
        if kind == "bool":
            args.append(f"--{'' if value else 'no'}{field.name}")
        elif kind in ("ints", "strs"):
            args.append(f"--{field.name}={','.join(str(v) for v in value)}")
        elif kind == "float":
            args.append(f"--{field.name}={value!r}")
        else:
            args.append(f"--{field.name}={value}")
    return args


def as_flag_dict(instance: object, exclude: Iterable[str] = ()) -> dict[str, object]:
    """Field name -> JSON-ready value (spec strings, lists) of every flag field.

    Args:
        instance: A dataclass instance whose fields were made with `option`.
        exclude: Field names to leave out.

    Returns:
        The values, tuples as lists and dataset specs as their text.
    """
    result = {}
    for field in flag_fields(type(instance), exclude):
        value = getattr(instance, field.name)
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, DatasetSpec):
            value = str(value)
        result[field.name] = value
    return result
