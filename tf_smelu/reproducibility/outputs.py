"""A Keras model's outputs as named probability arrays, and the PD between two of them.

Shared by `ReplicaStudy` and `PredictionDifferenceCallback`: both predict a
user's model, which may have one output or several (a list or a dict), each
binary (`[N]` or `[N, 1]`: click probabilities) or multi-class (`[N, K]`,
`K >= 2`: class probabilities), returning probabilities or logits.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from tf_smelu import metrics

Outputs = dict[str, np.ndarray]
"""Output name -> one model's predictions of that output, in output order."""


def output_names(model: keras.Model, count: int) -> list[str]:
    """The names of `model`'s `count` outputs (`output`, `output_1`, ... if it has none)."""
    names = list(getattr(model, "output_names", None) or [])
    if len(names) == count:
        return names
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def named_outputs(model: keras.Model, structure: object,
                  convert: Callable[[object], object] = np.asarray) -> Outputs:
    """`model.predict`-shaped data (an array, a list or a dict) as `{output name: array}`.

    Args:
        model: The model whose outputs `structure` follows (a list takes
            the names of its outputs).
        structure: One array, a list/tuple of arrays (one per output, in
            order) or a dict keyed by output name.
        convert: Applied to every value (tensors stay tensors with
            `lambda t: t`, e.g. inside `Dataset.map`).
    """
    if isinstance(structure, Mapping):
        return {str(name): convert(value) for name, value in structure.items()}
    if isinstance(structure, Sequence) and not isinstance(structure, (str, bytes)):
        names = output_names(model, len(structure))
        return {name: convert(value) for name, value in zip(names, structure)}
    return {output_names(model, 1)[0]: convert(structure)}


def logits_by_output(model: keras.Model, names: Sequence[str],
                     from_logits: bool | Mapping[str, bool] | None) -> dict[str, bool]:
    """Whether each output is logits: as given, or read from the compiled loss.

    A loss object's `from_logits` decides; a loss given by name or function
    (e.g. `"binary_crossentropy"`) takes probabilities, as Keras' do.

    Raises:
        ValueError: `from_logits` is None and the model has no compiled loss
            to read it from (e.g. a model with its own `compute_loss`), or
            `from_logits` is none of bool, None and a mapping.
    """
    if isinstance(from_logits, bool):
        return dict.fromkeys(names, from_logits)
    if isinstance(from_logits, Mapping):
        missing = [n for n in names if n not in from_logits]
        if missing:
            raise ValueError(f"`from_logits` names no value for output(s) {missing}. "
                             f"Received: from_logits={dict(from_logits)!r}")
        return {n: bool(from_logits[n]) for n in names}
    if from_logits is not None:  # e.g. "yes": would silently read the loss instead
        raise ValueError("`from_logits` must be True, False, None (read from the compiled loss) "
                         f"or a dict per output name. Received: from_logits={from_logits!r}")
    loss = getattr(model, "loss", None)
    if loss is None:
        raise ValueError(
            "Cannot tell whether the model outputs logits or probabilities: it has no compiled "
            "loss (e.g. it computes its own in `compute_loss`). Pass `from_logits=True` or "
            f"`from_logits=False`. Received: from_logits=None, model.loss=None"
        )
    if isinstance(loss, Mapping):
        losses = [loss.get(n) for n in names]
    elif isinstance(loss, Sequence) and not isinstance(loss, str):
        losses = list(loss)[: len(names)] + [None] * (len(names) - len(loss))
    else:
        losses = [loss] * len(names)
    return {n: _loss_takes_logits(one) for n, one in zip(names, losses)}


def _loss_takes_logits(loss: object) -> bool:
    if isinstance(loss, keras.losses.Loss):
        return bool(loss.get_config().get("from_logits", False))
    return False


def to_probabilities(values: np.ndarray, from_logits: bool, where: str) -> np.ndarray:
    """Predictions as float64 probabilities: `[N]` binary or `[N, K]` multi-class.

    Logits go through a sigmoid (binary) or a softmax over the last axis
    (multi-class).

    Raises:
        ValueError: Predictions that are not `[N]`, `[N, 1]` or `[N, K]`, or
            supposed probabilities outside [0, 1] (logits, without
            `from_logits=True`), naming `where`.
    """
    values = np.asarray(values, np.float64)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim not in (1, 2):
        raise ValueError(f"{where}: predictions must be [N], [N, 1] or [N, K] (classes). "
                         f"Received: shape={values.shape}")
    if from_logits:
        if values.ndim == 1:
            return 1.0 / (1.0 + np.exp(-values))
        shifted = np.exp(values - values.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
    finite = values[np.isfinite(values)]  # NaN is the caller's to report (training diverged)
    if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
        raise ValueError(
            f"{where}: predictions lie outside [0, 1], so they are not probabilities; if the "
            "model outputs logits, pass `from_logits=True`. Received: values in "
            f"[{finite.min():g}, {finite.max():g}], from_logits=False"
        )
    return values


def model_probabilities(model: keras.Model, x: object, from_logits, batch_size: int,
                        what: str, predicted: object = None) -> Outputs:
    """A model's predictions of `x` as probabilities by output name.

    Args:
        model: The model.
        x: Its inputs, anything `model.predict` takes.
        from_logits: As `logits_by_output` takes it.
        batch_size: Of `model.predict`.
        what: Names the model in error messages.
        predicted: The model's predictions of `x` if already made.

    Raises:
        ValueError: See `logits_by_output` and `to_probabilities`.
    """
    if predicted is None:
        predicted = predict(model, x, batch_size, what)
    named = named_outputs(model, predicted)
    logits = logits_by_output(model, list(named), from_logits)
    return {name: to_probabilities(values, logits[name], f"{what}, output {name!r}")
            for name, values in named.items()}


def predict(model: keras.Model, x: object, batch_size: int, what: str) -> object:
    """`model.predict(x)`, with one clear line when `x` does not fit the model's inputs.

    Raises:
        ValueError: The model cannot predict `x` (Keras raises several types
            for mismatched inputs), naming `what` and Keras' own reason.
    """
    batches = in_memory_batches((x,), batch_size)
    try:
        if batches is None:
            return model.predict(x, batch_size=batch_size, verbose=0)
        return model.predict(batches, verbose=0)
    except Exception as error:
        raise ValueError(f"{what} cannot predict the held-out data (do its features match the "
                         f"model's inputs?). Received: {error_summary(error)}") from error


def in_memory_batches(parts: tuple, batch_size: int) -> tf.data.Dataset | None:
    """`parts` (e.g. `(x,)` or `(x, y)`) as a dataset of batches, if they are arrays in memory.

    Keras feeds NumPy arrays to `predict` and `evaluate` through a
    `Dataset.map` with `num_parallel_calls=AUTOTUNE`, which op determinism
    rewrites into a node TensorFlow logs an `E0000 ... use_unbounded_threadpool`
    line for, once per process, for nothing wrong. Batching the arrays with
    `Dataset.from_tensor_slices` instead gives the same batches (floats cast
    to Keras' float type, as Keras casts them), so the same predictions bit
    for bit, without that line.

    Args:
        parts: Arrays, or dicts, lists and tuples of them (lists become
            tuples: `from_tensor_slices` would stack a list into one tensor).
        batch_size: Examples per batch (the last one may be smaller).

    Returns:
        The batched dataset, or None when a leaf is not a NumPy array (a
        dataset, a tensor, a DataFrame, ...) or the leaves' first
        dimensions differ or are 0: the caller then hands `parts` to Keras
        as they are (and Keras reports what is wrong with them).
    """
    leaves = keras.tree.flatten(parts)
    if not leaves or not all(isinstance(leaf, np.ndarray) and leaf.ndim >= 1 for leaf in leaves):
        return None
    if len({len(leaf) for leaf in leaves}) != 1 or not len(leaves[0]):
        return None
    return tf.data.Dataset.from_tensor_slices(_sliceable(parts)).batch(batch_size)


def _sliceable(structure: object) -> object:
    """`structure` with lists as tuples and floats in Keras' float type (as Keras feeds arrays).

    The same `keras.tree` steps as Keras' own array adapter, so the containers
    (an `OrderedDict`, a namedtuple) reach the model as they do from Keras.
    """
    floatx = keras.backend.floatx()

    def as_floatx(leaf: np.ndarray) -> np.ndarray:
        if np.issubdtype(leaf.dtype, np.floating) and leaf.dtype != floatx:
            return leaf.astype(floatx)
        return leaf

    return keras.tree.lists_to_tuples(keras.tree.map_structure(as_floatx, structure))


def error_summary(error: Exception) -> str:
    """`Type: reason` of an exception, its reason being the first line that says something.

    Keras wraps layer errors in "Exception encountered when calling ..." with
    terminal colour codes; the reason is the line after.
    """
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(error)).splitlines()]
    reasons = [line for line in lines if line and not line.startswith("Exception encountered")]
    return f"{type(error).__name__}: {(reasons or [''])[0]}"


def is_multiclass(probabilities: np.ndarray) -> bool:
    """Whether `to_probabilities`' result holds class probabilities `[N, K]`."""
    return probabilities.ndim == 2


def prediction_differences(p: np.ndarray, q: np.ndarray) -> dict[str, float]:
    """PD of two models' probabilities of one output (`tf_smelu.metrics`).

    Returns:
        Binary outputs: `{"abs_pd", "rel_pd"}`; multi-class outputs:
        `{"top1_pd", "l1_pd"}`.
    """
    if is_multiclass(p):
        return {"top1_pd": metrics.top1_pd(p, q), "l1_pd": metrics.l1_pd(p, q)}
    return {"abs_pd": metrics.absolute_pd(p, q), "rel_pd": metrics.relative_pd(p, q)}
