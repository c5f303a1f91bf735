"""Residual connection ``out = x + f(x)`` (§3.1, step 4).

Its backward is the reason residual networks train deep: the gradient reaches x twice,
once unchanged along the identity path, so it cannot vanish through the sub-layer f.
"""

from __future__ import annotations

import numpy as np

from mmt_numpy.validate import float_array, same_dtype


def residual_forward(x: np.ndarray, fx: np.ndarray) -> tuple[np.ndarray, tuple]:
    """``out = x + fx``; x, fx and out all ``(...)`` of one shape."""
    float_array("x", x)
    float_array("fx", fx)
    same_dtype(("x", "fx"), (x, fx))
    if x.shape != fx.shape:
        raise ValueError(f"fx: expected the shape of x {x.shape}, got {fx.shape}")
    return x + fx, ()


def residual_backward(d_out: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray]:
    """``(dx, dfx)``: out = x + fx  ->  both receive d_out unchanged."""
    return d_out, d_out
