"""Argument checks shared by the package, with one error format.

Every message ends in "Received: name=value", as Keras' own errors do.
"""

from __future__ import annotations

import math
import numbers

import numpy as np


def is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def require_positive_int(name: str, value: object) -> int:
    if not is_int(value) or value <= 0:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value!r}"
        )
    return int(value)


def require_non_negative_int(name: str, value: object) -> int:
    if not is_int(value) or value < 0:
        raise ValueError(
            f"`{name}` must be a non-negative integer. Received: {name}={value!r}"
        )
    return int(value)


def require_in_range(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
    is_number = isinstance(value, (int, float, np.integer, np.floating)) and (
        not isinstance(value, bool)
    )
    ok = is_number and math.isfinite(value)
    if ok and low is not None:
        ok = value >= low if low_inclusive else value > low
    if ok and high is not None:
        ok = value <= high if high_inclusive else value < high
    if not ok:
        low_text = "" if low is None else f"{low} {'<=' if low_inclusive else '<'} "
        high_text = "" if high is None else f" {'<=' if high_inclusive else '<'} {high}"
        raise ValueError(
            f"`{name}` must be a finite number with {low_text}{name}{high_text}. "
            f"Received: {name}={value!r}"
        )


def require_positive_number(name: str, value: object) -> float:
    """A real Python/NumPy number > 0 (booleans and strings rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"`{name}` must be a number > 0. Received: {name}={value!r}")
    if not value > 0:  # also rejects NaN
        raise ValueError(f"`{name}` must be > 0. Received: {name}={value}")
    return float(value)


def require_order(value: object) -> int:
    """A RESCU smoothness order: a Python integer >= 1."""
    if not is_int(value):
        raise ValueError(
            "`order` must be a Python integer >= 1. "
            f"Received: order={value!r} of type {type(value).__name__}"
        )
    if value < 1:
        raise ValueError(f"`order` must be >= 1. Received: order={value}")
    return int(value)


def require_choice(name: str, value: object, choices) -> object:
    """`value` must be one of `choices`."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {tuple(choices)}. Received: {name}={value!r}")
    return value
