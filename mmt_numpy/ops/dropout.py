"""Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p).

The scaling keeps the expected value of every element unchanged, so nothing needs to
change at evaluation time, when dropout is the identity.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mmt_numpy.validate import float_array, grad_output, probability


class DropoutCache(NamedTuple):
    scaled_keep: np.ndarray | None  # (...) keep-mask times 1/(1-p); None when dropout was the identity
    shape: tuple[int, ...]
    dtype: np.dtype


def dropout_forward(
    x: np.ndarray,
    p: float,
    rng: np.random.Generator | None = None,
    training: bool = True,
) -> tuple[np.ndarray, DropoutCache]:
    """Apply dropout.

    Args:
        x: ``(...)``.
        p: drop probability in [0, 1].
        rng: the generator that draws the mask; required when dropout is active, so that
            runs are reproducible and no hidden global state is used.
        training: when False (or p == 0) the op is the identity.

    Returns:
        out ``(...)`` and the cache (the scaled keep-mask, or None for the identity).
    """
    float_array("x", x)
    p = probability("p", p)
    if not training or p == 0.0:
        return x, DropoutCache(None, x.shape, x.dtype)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng: expected a numpy.random.Generator when dropout is active, got {type(rng).__name__}"
        )
    # p == 1 drops everything; guard the 1/(1-p) so it does not become inf * 0 = NaN.
    keep_scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
    scaled_keep = (rng.random(x.shape) >= p).astype(x.dtype) * keep_scale
    return x * scaled_keep, DropoutCache(scaled_keep, x.shape, x.dtype)


def dropout_backward(d_out: np.ndarray, cache: DropoutCache) -> np.ndarray:
    """``dx (...)``: out = x * scaled_keep  ->  dx = d_out * scaled_keep."""
    grad_output(d_out, cache.shape, cache.dtype)
    return d_out if cache.scaled_keep is None else d_out * cache.scaled_keep
