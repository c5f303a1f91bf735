"""Residual connection ``out = x + f(x)`` (§3.1, step 4).

Its backward is the reason residual networks train deep: the gradient reaches x twice,
once unchanged along the identity path, so it cannot vanish through the sub-layer f.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mmt_numpy.validate import float_array, grad_output, same_dtype


class ResidualCache(NamedTuple):
    shape: tuple[int, ...]
    dtype: np.dtype


def residual_forward(x: np.ndarray, fx: np.ndarray) -> tuple[np.ndarray, ResidualCache]:
    """``out = x + fx``; x, fx and out all ``(...)`` of one shape."""
    float_array("x", x)
    float_array("fx", fx)
    same_dtype(("x", "fx"), (x, fx))
    if x.shape != fx.shape:
        raise ValueError(f"fx: expected the shape of x {x.shape}, got {fx.shape}")
    return x + fx, ResidualCache(x.shape, x.dtype)


def residual_backward(d_out: np.ndarray, cache: ResidualCache) -> tuple[np.ndarray, np.ndarray]:
    """``(dx, dfx)``: out = x + fx  ->  both receive d_out unchanged.

    Both are the same array ``d_out`` (no copy): add them into new arrays, never in place.
    """
    grad_output(d_out, cache.shape, cache.dtype)
    return d_out, d_out
