"""Rotary position embeddings (RoPE; Su et al., RoFormer, 2021).

The article's §5 model has no positional encoding (位置编码) at all, and its closing note
says one should be added.  For long texts the choice matters: a learned table of absolute
positions stops at the longest length seen in training, while RoPE encodes position as a
rotation and makes attention scores depend on the *distance* between tokens.

Split the feature vector x ∈ R^d (d even) into d/2 pairs (x_{2i}, x_{2i+1}) and turn pair i
of the token at position p by the angle p θ_i, with frequencies θ_i = base^(−2i/d):

    [out_{2i}  ]   [cos pθ_i  −sin pθ_i] [x_{2i}  ]
    [out_{2i+1}] = [sin pθ_i   cos pθ_i] [x_{2i+1}]

(the interleaved pairing of the RoFormer paper; GPT-NeoX and the Hugging Face LLaMA code
pair feature i with feature i + d/2 instead, a fixed permutation of the same idea).

Why only relative positions survive: write R(a) for the block-diagonal rotation by the
angles a θ_i.  Rotations compose by adding angles and Rᵀ(a) = R(−a), so for a query at
position m and a key at position n

    (R(m) q) · (R(n) k) = qᵀ R(m)ᵀ R(n) k = qᵀ R(n − m) k,

a function of n − m alone.  RoPE is applied to q and k (never to v), after their
projections and before the scores.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mmt_numpy.validate import float_array, grad_output, positive_number


class RopeCache(NamedTuple):
    cos: np.ndarray  # (..., L, d/2), broadcastable against x's pairs
    sin: np.ndarray  # (..., L, d/2)
    shape: tuple[int, ...]  # x's shape
    dtype: np.dtype


def rope_angles(positions: np.ndarray, d: int, base: float = 10000.0) -> np.ndarray:
    """The rotation angles p·θ_i, ``(..., L, d/2)`` float64, for positions ``(..., L)``."""
    inv_freq = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)  # θ_i, (d/2,)
    return np.asarray(positions, dtype=np.float64)[..., None] * inv_freq


def rope_forward(
    x: np.ndarray, positions: np.ndarray | None = None, base: float = 10000.0
) -> tuple[np.ndarray, RopeCache]:
    """Rotate each feature pair of every position by its angle.

    Args:
        x: ``(..., L, d)`` with d even, e.g. queries or keys ``(B, H, L, d_k)``.
        positions: integer or float positions broadcastable to ``(..., L)``: ``(L,)`` for
            one sequence layout shared by the batch, ``(B, 1, L)`` per batch row with heads.
            Default ``0, 1, ..., L − 1``.
        base: the frequency base (10000 in the RoFormer paper; larger values stretch the
            wavelengths, as long-context models do).

    Returns:
        out ``(..., L, d)`` in x's dtype, and the :class:`RopeCache` (``cos`` and ``sin``, each
        ``(..., L, d/2)``).
    """
    float_array("x", x, min_ndim=2)
    L, d = x.shape[-2], x.shape[-1]
    if d % 2:
        raise ValueError(f"x: expected an even last dimension (features come in pairs), got shape {x.shape}")
    base = positive_number("base", base)
    if positions is None:
        positions = np.arange(L)
    positions = np.asarray(positions)
    if not (np.issubdtype(positions.dtype, np.integer) or np.issubdtype(positions.dtype, np.floating)):
        raise TypeError(f"positions: expected integer or float positions, got dtype {positions.dtype}")
    try:
        fits = np.broadcast_shapes(positions.shape, x.shape[:-1]) == x.shape[:-1]
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"positions: expected a shape that broadcasts to {x.shape[:-1]} (x without its "
            f"feature axis), got {positions.shape}"
        )

    angles = rope_angles(positions, d, base)  # (..., L, d/2), float64 for accuracy
    cos = np.cos(angles).astype(x.dtype)
    sin = np.sin(angles).astype(x.dtype)
    x_even, x_odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x_even * cos - x_odd * sin
    out[..., 1::2] = x_even * sin + x_odd * cos
    return out, RopeCache(cos, sin, x.shape, x.dtype)


def rope_backward(d_out: np.ndarray, cache: RopeCache) -> np.ndarray:
    """``dx (..., L, d)``: rotate the upstream gradient back by the same angles.

    out = R x with R orthogonal, so dx = Rᵀ d_out = R(−angle) d_out: the backward of a
    rotation is the inverse rotation (cos unchanged, sin negated).
    """
    cos, sin = cache.cos, cache.sin
    grad_output(d_out, cache.shape, cache.dtype)
    d_even, d_odd = d_out[..., 0::2], d_out[..., 1::2]
    dx = np.empty_like(d_out)
    # out_even = x_even cos − x_odd sin,  out_odd = x_even sin + x_odd cos
    #   ->  dx_even = d_even cos + d_odd sin,  dx_odd = −d_even sin + d_odd cos
    dx[..., 0::2] = d_even * cos + d_odd * sin
    dx[..., 1::2] = d_odd * cos - d_even * sin
    return dx
