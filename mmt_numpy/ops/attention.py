"""Scaled dot-product attention (§4.1) and the masks that restrict it.

    Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V

Masks are boolean and **True means "may attend"**, the convention of
``torch.nn.functional.scaled_dot_product_attention``.  (``nn.MultiheadAttention``'s
``key_padding_mask`` uses the opposite: True there means "ignore this key".)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from mmt_numpy.ops.activations import SoftmaxCache, softmax_backward, softmax_forward
from mmt_numpy.validate import (
    float_array,
    grad_output,
    non_negative_int,
    positive_int,
    real_number,
    same_dtype,
)


class AttentionCache(NamedTuple):
    """What :func:`attention_backward` needs; ``weights`` is also what attention maps plot."""

    q: np.ndarray  # (..., Lq, d_k)
    k: np.ndarray  # (..., Lk, d_k)
    v: np.ndarray  # (..., Lk, d_v)
    weights: np.ndarray  # (..., Lq, Lk) softmax(q kᵀ · scale), 0 where masked
    scale: float


def causal_mask(Lq: int, Lk: int | None = None) -> np.ndarray:
    """``(Lq, Lk)`` bool, True where key j <= query i (no looking ahead).

    When ``Lq != Lk`` the triangle is aligned at the top-left corner, as PyTorch's
    ``is_causal=True`` does: query i sees keys 0..i.
    """
    Lq = positive_int("Lq", Lq)
    Lk = Lq if Lk is None else positive_int("Lk", Lk)
    return np.tril(np.ones((Lq, Lk), dtype=bool))


def padding_mask(lengths: np.ndarray | list[int], L: int) -> np.ndarray:
    """``(B, 1, 1, L)`` bool, True for the first ``lengths[b]`` keys of batch row b.

    The shape broadcasts against scores ``(B, H, Lq, L)``: every head and every query of
    row b ignores that row's padding keys.
    """
    L = non_negative_int("L", L)
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.integer):
        raise TypeError(
            f"lengths: expected a 1-D integer array (one length per batch row), "
            f"got dtype {lengths.dtype} and shape {lengths.shape}"
        )
    if np.any(lengths < 0) or np.any(lengths > L):
        raise ValueError(f"lengths: expected values in [0, {L}], got {lengths.tolist()}")
    keep = np.arange(L)[None, :] < lengths[:, None]
    return keep[:, None, None, :]


def _check_qkv(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> None:
    float_array("q", q, min_ndim=2)
    float_array("k", k, min_ndim=2)
    float_array("v", v, min_ndim=2)
    same_dtype(("q", "k", "v"), (q, k, v))
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(
            f"k: expected last dimension {q.shape[-1]} (d_k of q {q.shape}), got shape {k.shape}"
        )
    if v.shape[-2] != k.shape[-2]:
        raise ValueError(f"v: expected {k.shape[-2]} positions (Lk of k {k.shape}), got shape {v.shape}")
    for name, x in (("k", k), ("v", v)):
        if x.shape[:-2] != q.shape[:-2]:
            raise ValueError(
                f"{name}: expected leading (batch/head) dimensions {q.shape[:-2]} as q "
                f"{q.shape}, got shape {x.shape}"
            )


def attention_forward(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: np.ndarray | None = None,
    scale: float | None = None,
) -> tuple[np.ndarray, AttentionCache]:
    """Scaled dot-product attention.

    Args:
        q: ``(..., Lq, d_k)`` queries, e.g. ``(B, H, Lq, d_k)``.
        k: ``(..., Lk, d_k)`` keys; same leading dimensions as q.
        v: ``(..., Lk, d_v)`` values.
        mask: bool broadcastable to ``(..., Lq, Lk)``, True = may attend.  A query whose
            keys are all masked gets a zero output row and zero gradients.
        scale: multiplies the scores; default ``1/√d_k``.

    Returns:
        out ``(..., Lq, d_v)`` and the :class:`AttentionCache`; ``cache.weights`` holds the
        attention weights ``(..., Lq, Lk)`` (a fully masked row is all zeros; with no keys at
        all, Lk = 0, the output is zeros).
    """
    _check_qkv(q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else real_number("scale", scale)
    # A Python float keeps float32 inputs float32 (NumPy 2 treats it as a weak scalar).
    # Scaling q rather than the scores multiplies (Lq, d_k) numbers instead of (Lq, Lk).
    # k.swapaxes is a view: BLAS reads k transposed, no copy.
    scores = (q * scale) @ k.swapaxes(-1, -2)
    # In place: the scores are not needed once the weights exist (one (Lq, Lk) array fewer).
    weights, _ = softmax_forward(scores, mask, out=scores)
    out = weights @ v
    return out, AttentionCache(q, k, v, weights, scale)


def attention_backward(d_out: np.ndarray, cache: AttentionCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of attention.

    Args:
        d_out: ``(..., Lq, d_v)``.

    Returns:
        ``(dq (..., Lq, d_k), dk (..., Lk, d_k), dv (..., Lk, d_v))``.
    """
    q, k, v, weights, scale = cache.q, cache.k, cache.v, cache.weights, cache.scale
    grad_output(d_out, (*weights.shape[:-1], v.shape[-1]), q.dtype)
    # out = weights @ v  ->  d_weights = d_out @ vᵀ,  dv = weightsᵀ @ d_out
    d_weights = d_out @ v.swapaxes(-1, -2)
    dv = weights.swapaxes(-1, -2) @ d_out
    # weights = softmax(scores)  ->  the softmax Jacobian-vector product (zero where masked),
    # written over d_weights, which is not needed again
    d_scores = softmax_backward(d_weights, SoftmaxCache(weights), out=d_weights)
    # scores = (q * scale) @ kᵀ  ->  dq = d_scores @ k * scale,  dk = d_scoresᵀ @ q * scale
    # (scale applied to the small (L, d_k) results, not to the (Lq, Lk) d_scores)
    dq = d_scores @ k
    dq *= scale
    dk = d_scores.swapaxes(-1, -2) @ q
    dk *= scale
    return dq, dk, dv
