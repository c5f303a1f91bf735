"""Affine map ``y = x @ W + b`` (the projections X W^Q, X W^K, X W^V of §4.1).

``W`` has shape ``(d_in, d_out)`` so that the code reads as the article's algebra;
``torch.nn.functional.linear`` takes the transpose ``(d_out, d_in)``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mmt_numpy.validate import float_array, grad_output, last_dim, same_dtype


class LinearCache(NamedTuple):
    """What :func:`linear_backward` needs: the input, the weight, and whether there was a bias."""

    x: np.ndarray  # (..., d_in)
    W: np.ndarray  # (d_in, d_out)
    has_bias: bool


def linear_forward(
    x: np.ndarray, W: np.ndarray, b: np.ndarray | None = None
) -> tuple[np.ndarray, LinearCache]:
    """Compute ``x @ W + b``.

    Args:
        x: ``(..., d_in)`` any number of leading dimensions, e.g. ``(B, L, d_in)``.
        W: ``(d_in, d_out)``.
        b: ``(d_out,)`` or None.

    Returns:
        out ``(..., d_out)`` and the cache for :func:`linear_backward`.
    """
    float_array("x", x, min_ndim=1)
    float_array("W", W, ndim=2)
    last_dim("x", x, W.shape[0], f"W.shape[0] of W {W.shape}")
    if b is not None:
        float_array("b", b, ndim=1)
        if b.shape[0] != W.shape[1]:
            raise ValueError(f"b: expected shape ({W.shape[1]},) to match W {W.shape}, got {b.shape}")
        same_dtype(("x", "W", "b"), (x, W, b))
    else:
        same_dtype(("x", "W"), (x, W))
    # Fold every leading dimension into the rows: one (rows, d_in) @ (d_in, d_out) GEMM runs
    # 1.5-2x faster than the loop of B smaller ones that numpy's batched matmul makes.
    out = x.reshape(-1, W.shape[0]) @ W
    if b is not None:
        out += b  # in place: no second (rows, d_out) array
    return out.reshape(*x.shape[:-1], W.shape[1]), LinearCache(x, W, b is not None)


def linear_backward(
    d_out: np.ndarray, cache: LinearCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients of ``out = x @ W + b``.

    Args:
        d_out: ``(..., d_out)``, the gradient of the loss with respect to ``out``.

    Returns:
        ``(dx (..., d_in), dW (d_in, d_out), db (d_out,) or None when there was no bias)``.
    """
    x, W = cache.x, cache.W
    grad_output(d_out, (*x.shape[:-1], W.shape[1]), x.dtype)
    # out = x @ W  ->  dx = d_out @ W^T and dW = x^T @ d_out, with every leading
    # dimension of x folded into the rows so that each is one 2-D GEMM (dW sums over batch
    # and time inside it).  W.T and x_rows.T are views: BLAS reads them transposed, no copy.
    x_rows = x.reshape(-1, x.shape[-1])
    d_rows = d_out.reshape(-1, d_out.shape[-1])
    dx = (d_rows @ W.T).reshape(x.shape)
    dW = x_rows.T @ d_rows
    # out += b (broadcast over rows)  ->  db = sum of d_out over all rows.
    db = d_rows.sum(axis=0) if cache.has_bias else None
    return dx, dW, db
