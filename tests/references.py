"""Independent NumPy references, written from the formulas in the docstrings.

They share no code with the package: values and derivatives come from the
textbook piecewise definitions in float64.
"""

from math import comb, factorial

import numpy as np


def smelu(x, beta=1.0):
    x = np.asarray(x, np.float64)
    return np.where(
        x <= -beta, 0.0, np.where(x >= beta, x, (x + beta) ** 2 / (4 * beta))
    )


def smelu_grad(x, beta=1.0):
    x = np.asarray(x, np.float64)
    return np.clip((x + beta) / (2 * beta), 0.0, 1.0)


def _truncated_power(z, power):
    """(z)_+ ** power, with the Heaviside convention (z > 0) for power 0."""
    return np.where(z > 0, 1.0, 0.0) if power == 0 else np.maximum(z, 0.0) ** power


def rescu_derivative(x, beta=1.0, order=2, k=0):
    """k-th derivative of RESCU of `order` (k = 0 is the value)."""
    x = np.asarray(x, np.float64)
    n = order
    h = 2.0 * beta / n
    u = (x + beta) / h
    power = n + 1 - k
    band = sum(
        (-1) ** j * comb(n, j) * _truncated_power(u - j, power) for j in range(n + 1)
    ) * (h ** (1 - k) / factorial(power))
    left = 0.0
    right = x if k == 0 else (1.0 if k == 1 else 0.0)
    return np.where(x <= -beta, left, np.where(x >= beta, right, band))


def generalized_smelu(x, alpha=1.0, beta=1.0, g_minus=0.0, g_plus=1.0, t=0.0):
    x = np.asarray(x, np.float64)
    a = (g_plus - g_minus) / (2 * (alpha + beta))
    b = (alpha * g_plus + beta * g_minus) / (alpha + beta)
    c = t + (alpha**2 * (g_plus + g_minus) + 2 * alpha * beta * g_minus) / (
        2 * (alpha + beta)
    )
    right_value = a * beta**2 + b * beta + c
    return np.where(
        x <= -alpha,
        g_minus * (x + alpha) + t,
        np.where(x >= beta, g_plus * (x - beta) + right_value, a * x**2 + b * x + c),
    )


def generalized_smelu_grad(x, alpha=1.0, beta=1.0, g_minus=0.0, g_plus=1.0, t=0.0):
    x = np.asarray(x, np.float64)
    a = (g_plus - g_minus) / (2 * (alpha + beta))
    b = (alpha * g_plus + beta * g_minus) / (alpha + beta)
    return np.where(x <= -alpha, g_minus, np.where(x >= beta, g_plus, 2 * a * x + b))
