"""Element-wise activations and the softmax (§3.1 feed-forward network, §4.1 attention).

* ``relu(x) = max(x, 0)``
* ``gelu(x) = x Φ(x)`` with Φ the standard normal CDF (exact, "erf" form, as ``nn.GELU()``),
  or its tanh approximation ``0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³)))``
  (``nn.GELU(approximate="tanh")``).
* ``softmax(x)_i = exp(x_i) / Σ_j exp(x_j)`` over the last axis, with an optional boolean
  mask (True = keep).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from mmt_numpy.validate import bool_mask, float_array, grad_output


class ReluCache(NamedTuple):
    positive: np.ndarray  # (...) bool, where x > 0
    dtype: np.dtype  # x's dtype


class GeluCache(NamedTuple):
    approximate: str  # "none" (erf form) or "tanh"
    x: np.ndarray  # (...)
    saved: np.ndarray  # (...) Φ(x) for "none", tanh(u) for "tanh"


class SoftmaxCache(NamedTuple):
    out: np.ndarray  # (..., N) the softmax itself; its backward needs nothing else


# NumPy has no erf ufunc; math.erf is exact to double precision, so we map it over the
# array.  That costs ~50 ns an element: slower than a ufunc, but the exact GELU matches
# PyTorch to 1e-15 and the benchmarks use ReLU (the article's default) anyway.
_erf = np.frompyfunc(math.erf, 1, 1)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_FORMS = ("none", "tanh")


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, ReluCache]:
    """``out = max(x, 0)``; x and out have any shape ``(...)``."""
    float_array("x", x)
    positive = x > 0
    return x * positive, ReluCache(positive, x.dtype)


def relu_backward(d_out: np.ndarray, cache: ReluCache) -> np.ndarray:
    """``dx (...)``: the gradient passes where x > 0 (we take 0 at x == 0, as PyTorch)."""
    grad_output(d_out, cache.positive.shape, cache.dtype)
    # out = x * positive  ->  dx = d_out * positive
    return d_out * cache.positive


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    """Φ(x) = (1 + erf(x / √2)) / 2, computed in float64 and returned in x's dtype."""
    # np.asarray, not .astype: on a 0-d input frompyfunc returns a plain Python float,
    # which has no .astype (gelu_forward(np.array(0.5)) used to raise AttributeError).
    erf = np.asarray(_erf(x.astype(np.float64) / math.sqrt(2.0)), dtype=np.float64)
    return (0.5 * (1.0 + erf)).astype(x.dtype)


def gelu_forward(x: np.ndarray, approximate: str = "none") -> tuple[np.ndarray, GeluCache]:
    """GELU; ``approximate="none"`` is the exact erf form, ``"tanh"`` the tanh form.

    Args:
        x: ``(...)``.
        approximate: ``"none"`` or ``"tanh"`` (the names ``torch.nn.functional.gelu`` uses).
    """
    float_array("x", x)
    if approximate not in _GELU_FORMS:
        raise ValueError(f"approximate: expected one of {_GELU_FORMS}, got {approximate!r}")
    if approximate == "none":
        cdf = _normal_cdf(x)
        return x * cdf, GeluCache("none", x, cdf)
    inner = _SQRT_2_OVER_PI * (x + 0.044715 * x**3)
    tanh_inner = np.tanh(inner)
    return 0.5 * x * (1.0 + tanh_inner), GeluCache("tanh", x, tanh_inner)


def gelu_backward(d_out: np.ndarray, cache: GeluCache) -> np.ndarray:
    """``dx (...)`` for either GELU form."""
    form, x, saved = cache.approximate, cache.x, cache.saved
    grad_output(d_out, x.shape, x.dtype)
    if form == "none":
        cdf = saved
        # out = x Φ(x)  ->  d out/dx = Φ(x) + x φ(x), with φ the normal density.
        pdf = _INV_SQRT_2PI * np.exp(-0.5 * x * x)
        return d_out * (cdf + x * pdf)
    tanh_inner = saved
    # out = 0.5 x (1 + tanh(u)), u = √(2/π)(x + 0.044715 x³)
    #  ->  d out/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh² u) du/dx
    du_dx = _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x * x)
    return d_out * (0.5 * (1.0 + tanh_inner) + 0.5 * x * (1.0 - tanh_inner**2) * du_dx)


def _check_out(out: np.ndarray | None, like: np.ndarray, like_name: str) -> None:
    """``out``, when given, must be an ndarray of ``like``'s shape and dtype."""
    if out is not None and not (
        isinstance(out, np.ndarray) and out.shape == like.shape and out.dtype == like.dtype
    ):
        got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(
            f"out: expected None or an array of {like_name}'s dtype and shape "
            f"{like.dtype} {like.shape}, got {got}"
        )


def softmax_forward(
    x: np.ndarray, mask: np.ndarray | None = None, *, out: np.ndarray | None = None
) -> tuple[np.ndarray, SoftmaxCache]:
    """Softmax over the last axis, optionally restricted to ``mask``.

    Args:
        x: ``(..., N)`` logits; in attention ``(B, H, Lq, Lk)`` scores.
        mask: bool, broadcastable to ``x.shape``; True = keep.  Masked entries get
            probability exactly 0.  A row with every entry masked gives all zeros (not the
            NaN that ``exp(-inf) / 0`` would give), and zero gradient.
        out: where to write the result: None for a new array, or an array of x's shape and
            dtype, e.g. ``x`` itself when the caller has no further use for the logits
            (attention passes its scores, saving one ``(B, H, Lq, Lk)`` array).

    Returns:
        out ``(..., N)`` (each unmasked row sums to 1) and the cache.
    """
    float_array("x", x, min_ndim=1)
    _check_out(out, x, "x")
    if mask is not None:
        bool_mask("mask", mask, x.shape)
        # Add 0 where kept and -inf where masked: a broadcast add of the (small) mask-shaped
        # bias is ~3x faster than np.where over the full (..., N) logits.
        x = x + np.where(mask, 0.0, -np.inf).astype(x.dtype)
    # Subtracting the row maximum leaves the softmax unchanged and keeps exp() <= 1, so
    # logits of 1e4 do not overflow.  A fully masked row has max -inf: use 0 instead so
    # that -inf - (-inf) = NaN never happens.
    # (np.fmax skips np.max's NaN bookkeeping, ~1.5x faster; a NaN logit still makes its row
    # NaN, through exp below.)
    # initial=-inf: a softmax over zero entries (attention with no keys) is an empty row.
    row_max = np.fmax.reduce(x, axis=-1, keepdims=True, initial=-np.inf)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0).astype(x.dtype)
    out = np.subtract(x, row_max, out=out)  # the one (..., N) result; exp and / work in it
    np.exp(out, out=out)
    total = out.sum(axis=-1, keepdims=True)
    out /= np.where(total > 0, total, 1.0).astype(x.dtype)
    return out, SoftmaxCache(out)


def softmax_backward(d_out: np.ndarray, cache: SoftmaxCache, *, out: np.ndarray | None = None) -> np.ndarray:
    """``dx (..., N)``: the softmax Jacobian-vector product.

    With y = softmax(x), dy_i/dx_j = y_i (δ_ij - y_j), so
    dx_j = Σ_i d_out_i y_i (δ_ij - y_j) = y_j (d_out_j - Σ_i d_out_i y_i).
    Masked entries have y = 0 and so get zero gradient; so does a fully masked row.

    ``out``: None for a new array, or an array of d_out's shape and dtype to write dx into,
    e.g. ``d_out`` itself when the caller has no further use for it.
    """
    y = cache.out
    grad_output(d_out, y.shape, y.dtype)
    _check_out(out, d_out, "d_out")
    # The row sums Σ_i d_out_i y_i as a row-wise dot product: einsum forms no
    # (..., N) product array (two operands: no contraction order for optimize= to pick).
    row_dot = np.einsum("...i,...i->...", d_out, y)[..., None]
    dx = np.subtract(d_out, row_dot, out=out)
    dx *= y  # in place: y (d_out - row_dot) without a second (..., N) array
    return dx
