"""`results.json`: written row by row, read back to resume an interrupted run.

An experiment writes `results.json` after every finished row (atomically, so
a reader or a crash never sees half a file), marked `"complete": false` until
the last row. Run again with the same configuration and output directory,
it reads the finished rows back (`finished_rows`) and trains only the rest;
a file written with another configuration is never mixed in: it stops the
run with one line naming the fields that differ. `results.schema.json` (next
to this module, `results_schema()`) documents the format; a row is reused
only if it matches the schema and agrees with itself (`row_problem`).
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import math
import os
import platform
from collections.abc import Iterable, Iterator, Mapping

import jsonschema
import keras
import numpy as np
import tensorflow as tf

from tf_smelu.common import MISSING, UserError, atomic_write, field_differences

RESULTS_FILE = "results.json"

ROW_KEYED_FIELDS = ("activations", "sources", "update_mode", "remedies")
"""Configuration fields that choose *which* rows run, not how: a resumed run
may add or drop rows with them, and rows are matched by `row_key`."""

NON_RESULT_FIELDS = ("progress", "job_timeout", "output_dir", "quick", "resume", "debug")
"""Flags that change neither which rows run nor their numbers."""

SEARCH_FIELDS = ("max_auc_loss", "time_budget", "max_replicas", "max_train_cost",
                 "max_serve_cost")
"""The advisor's budgets: they decide which rows the search trains and to how
many replicas, never a row's numbers (a row of R replicas is the same row under
any budget), so a stopped search resumes with a larger `--time_budget` and the
same rows can be decided again under another cost budget."""


class ResultsMismatchError(UserError, ValueError):
    """`results.json` in the output directory belongs to another configuration."""


def environment() -> dict[str, str]:
    """Versions and machine, recorded with every result.

    The CPU model and its vector instruction sets are recorded because
    oneDNN picks kernels by them: ReLU rows (fused MatMul+BiasAdd+ReLU) can
    differ in the last bits between CPU models while running identically on
    one machine.

    Returns:
        The versions of TensorFlow, Keras, tf_smelu, NumPy and Python, the
        machine type, CPU count, CPU model and its vector extensions, as
        strings.
    """
    import tf_smelu

    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf_smelu": tf_smelu.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": str(os.cpu_count()),
        **_cpu_description(),
    }


_VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16",
                 "amx_tile", "amx_bf16", "neon", "asimd", "sve")


def _cpu_description() -> dict[str, str]:
    """`cpu_model` and `cpu_vector_extensions` from /proc/cpuinfo (Linux; else unknown)."""
    model, extensions = platform.processor() or "unknown", "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info = f.read()
    except OSError:
        return {"cpu_model": model, "cpu_vector_extensions": extensions}
    for line in info.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and model in ("unknown", "", platform.machine()):
            model = value
        elif key in ("flags", "Features") and extensions == "unknown":
            present = set(value.split())
            extensions = " ".join(f for f in _VECTOR_FLAGS if f in present) or "none"
    return {"cpu_model": model, "cpu_vector_extensions": extensions}


def row_key(row: Mapping[str, object]) -> tuple[str, str]:
    """What identifies a row within one configuration: its sources and label.

    The advisor's confirmation rows (`"confirmation": true`: the choice and
    the baseline again, on fresh replica seeds) are `<label> [confirmation]`,
    apart from the search's rows of the same label.

    Args:
        row: A result row (with `sources` and `label`).

    Returns:
        `(sources joined by "+", label)`.
    """
    label = str(row["label"])
    return "+".join(row["sources"]), f"{label} [confirmation]" if row.get("confirmation") else label


def write_results(
    output_dir: str, config: Mapping[str, object], rows: list[dict], complete: bool = True,
    advice: Mapping[str, object] | None = None,
    data: Mapping[str, object] | None = None,
) -> str:
    """Writes `results.json` (`{"config", "environment", "complete", "results"}`), atomically.

    Undefined numbers (e.g. the interval of a single pair when R = 2) are
    written as `null`: NaN is not JSON.

    Args:
        output_dir: Where `results.json` goes (created if missing).
        config: The run's flag values.
        rows: The finished rows.
        complete: False while rows are still to come.
        advice: The `--max_auc_loss` search's result per source set, if any.
        data: How the data was read (`tf_smelu.experiment.runner.data_details`:
            the schema, the malformed rows skipped), if known.

    Returns:
        The path written.
    """
    path = os.path.join(output_dir, RESULTS_FILE)
    content = {"config": dict(config), "environment": environment(), "complete": complete,
               "results": rows, **({"advice": dict(advice)} if advice else {}),
               **({"data": dict(data)} if data else {})}
    with atomic_write(path) as f:  # never leave a half-written file
        json.dump(_nan_to_none(content), f, indent=2, allow_nan=False, default=_json_default)
    return path


def read_results(path: str) -> dict:
    """The content of a `results.json`, checked for the keys a resume needs.

    Raises:
        ResultsMismatchError: The file is not a results file (damaged,
            truncated or of another program), naming the file.
    """
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ResultsMismatchError(
            f"{path}: cannot be read as results ({error}); move it away or pass --noresume "
            "to start over") from None
    if not (isinstance(content, dict) and isinstance(content.get("config"), dict)
            and isinstance(content.get("results"), list)
            and all(isinstance(r, dict) and "sources" in r and "label" in r
                    for r in content["results"])):
        raise ResultsMismatchError(
            f"{path}: not a tf_smelu results file (needs 'config' and 'results' rows); move it "
            "away or pass --noresume to start over")
    return content


RESULTS_SCHEMA = "results.schema.json"
"""The JSON Schema (draft 2020-12) of `results.json`, shipped next to this module."""


def results_schema() -> dict:
    """The JSON Schema of `results.json`.

    Returns:
        `RESULTS_SCHEMA` as read from the installed package (package data,
        so that a resume can validate rows outside a checkout).
    """
    schema = importlib.resources.files(__package__).joinpath(RESULTS_SCHEMA)
    return json.loads(schema.read_text(encoding="utf-8"))


def _is_json_number(checker: jsonschema.TypeChecker, value: object) -> bool:
    # Python's json reads NaN and Infinity, but JSON (RFC 8259) has no such numbers.
    return checker.is_type(value, "integer") or (isinstance(value, float) and math.isfinite(value))


ResultsValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("number", _is_json_number),
)
"""Draft 2020-12 validation in which a `number` is a JSON number: finite."""


@functools.cache
def _row_validator() -> jsonschema.protocols.Validator:
    """`ResultsValidator` of the schema's row (`$defs/row`, whose `$ref`s stay resolvable)."""
    schema = results_schema()
    return ResultsValidator({"$schema": schema["$schema"], "$defs": schema["$defs"],
                             "$ref": "#/$defs/row"})


def _schema_problem(row: object) -> str | None:
    """The schema's most relevant complaint about `row` (`best_match`), in one line."""
    error = jsonschema.exceptions.best_match(_row_validator().iter_errors(row))
    if error is None:
        return None
    where = error.json_path.removeprefix("$").removeprefix(".")  # e.g. rel_pd_ci[0]
    shown = repr(error.instance)
    if where and error.message.startswith(shown):
        # The value as it is written in the file (null, NaN, "high"), not as Python shows it.
        shown_as_json = json.dumps(error.instance, default=str)
        return f"{where} is {shown_as_json}, which{error.message[len(shown):]}"
    return f"{where}: {error.message}" if where else error.message


def _mean_problems(row: Mapping[str, object], name: str, length: int,
                   mean: str) -> Iterator[str]:
    """What is wrong with a per-replica (or per-pair) list whose mean is the row's `mean`."""
    values = row[name]
    if len(values) != length:
        yield f"{name} holds {len(values)} values, not {length} (replicas is {row['replicas']})"
    # The advisor's tolerance (it checks the same on the rows it is given).
    elif not math.isclose(float(np.mean(values)), row[mean], rel_tol=1e-6, abs_tol=1e-12):
        yield f"{mean} {row[mean]} is not the mean of {name} ({np.mean(values)})"


def _consistency_problems(row: Mapping[str, object]) -> Iterator[str]:
    """What the schema cannot say: how a schema-valid row's fields must agree."""
    replicas = row["replicas"]
    yield from _mean_problems(row, "aucs", replicas, "auc_mean")
    if "rel_pd_pairs" in row:
        yield from _mean_problems(row, "rel_pd_pairs", replicas * (replicas - 1) // 2, "rel_pd")
    outliers = row.get("outlier_replicas", [])
    if any(i >= replicas for i in outliers):
        yield f"outlier_replicas {outliers} are not replica indices below {replicas}"


def row_problem(row: object) -> str | None:
    """What makes a `results.json` row (as read from the file) unfit for reuse, if anything.

    First the schema (`results.schema.json`'s row, with `ResultsValidator`:
    fields, types, ranges, finite numbers, known activations and sources),
    then what it cannot say: `aucs` holds `replicas` values whose mean is
    `auc_mean`, `rel_pd_pairs` one value per pair with mean `rel_pd`,
    `outlier_replicas` indices below `replicas`.

    Returns:
        The first problem found, e.g. `"auc_mean is null, which is not of
        type 'number'"`, or None for a sound row.
    """
    return _schema_problem(row) or next(_consistency_problems(row), None)


def config_differences(
    old: Mapping[str, object], new: Mapping[str, object], ignore: Iterable[str] = ()
) -> list[str]:
    """`name: old -> new` for every field whose value differs (missing counts as differing)."""
    def text(value):
        return "'<unset>'" if value is MISSING else repr(value)

    return [f"{name}: {text(before)} -> {text(after)}"
            for name, before, after in sorted(field_differences(old, new, ignore))]


def finished_rows(
    output_dir: str, config: Mapping[str, object], resume: bool = True,
    defaults: Mapping[str, object] | None = None,
) -> list[dict]:
    """The rows of an earlier run of the same configuration in `output_dir`.

    Args:
        output_dir: The run's output directory.
        config: The run's normalized configuration (e.g.
            `CTRExperimentConfig.to_dict()`); every field except
            `ROW_KEYED_FIELDS`, `NON_RESULT_FIELDS` and `SEARCH_FIELDS` must equal the earlier
            run's for its rows to be reused.
        resume: False starts over (the earlier file is replaced when the
            first row finishes).
        defaults: Every field's default (e.g. `CTRExperimentConfig().to_dict()`):
            a field the earlier file lacks (written before the field existed)
            matches when this run's value is its default, which is what the
            earlier version ran with.

    Returns:
        The earlier rows (empty when there is no earlier file or `resume` is
        False).

    Raises:
        ResultsMismatchError: The earlier file is damaged (unreadable, or a
            row fails `row_problem`: the message names the row) or was
            written with a different configuration (the message lists the
            differences).
    """
    path = os.path.join(output_dir, RESULTS_FILE)
    if not resume or not os.path.exists(path):
        return []
    content = read_results(path)
    ignore = (*ROW_KEYED_FIELDS, *NON_RESULT_FIELDS, *SEARCH_FIELDS)
    old = {k: v for k, v in content["config"].items() if k in config}
    older_version = {k for k, v in config.items()
                     if k not in old and defaults is not None and k in defaults
                     and defaults[k] == v}
    differences = config_differences(old, config, (*ignore, *older_version))
    if differences:
        raise ResultsMismatchError(
            f"{path} holds results of another configuration ({'; '.join(differences)}); "
            "use another --output_dir, or --noresume to replace them")
    for index, row in enumerate(content["results"]):
        problem = row_problem(row)
        if problem:
            raise ResultsMismatchError(
                f"{path}: results row {index + 1} ({row.get('label')}) is damaged: {problem}; "
                "delete the file or pass --noresume to start over")
    return [_none_to_nan(row) for row in content["results"]]


def _nan_to_none(value):
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(item) for item in value]
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return None
    return value


_NUMBERS_WRITTEN_AS_NULL = ("auc_mean", "auc_std", "logloss_mean", "abs_pd", "rel_pd",
                            "rel_pd_median", "rel_pd_std", "train_loss")


def _none_to_nan(value, key: str | None = None):
    """Undoes `_nan_to_none` for a row read back (`beta` null stays None: no beta)."""
    if isinstance(value, dict):
        return {k: _none_to_nan(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [math.nan if item is None else _none_to_nan(item) for item in value]
    if value is None and key in _NUMBERS_WRITTEN_AS_NULL:
        return math.nan
    return value


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"Not JSON serializable: {type(value).__name__}")
