"""ALiBi: attention with linear biases (Press, Smith & Lewis, "Train Short, Test Long", 2022).

Instead of adding position vectors to the tokens, ALiBi adds a penalty proportional to the
distance between query and key to every attention score, one slope per head:

    s_ij = q_i · k_j / √d_k − m_h · |i − j|

With a causal mask (j <= i) this is the paper's ``− m_h (i − j)``; without a mask it is the
symmetric (bidirectional) form used by encoder variants.  Nothing is learned and no position
ever goes "out of range": a distance of 2000 is penalised by the same rule as a distance of
20, which is why a model trained on short texts still reads longer ones sensibly (the
article's title question, 如何提高长文本阅读能力).  A head with a large slope looks only at its
neighbours; a head with a small slope sees far.

The slopes are a geometric sequence.  For H heads, H a power of two,

    m_h = 2^(−8h/H),   h = 1 … H        (H = 8: 1/2, 1/4, …, 1/256)

and for other H the paper takes the H' = 2^⌊log₂ H⌋ slopes of that rule and fills the
remaining H − H' heads with every other slope of the rule for 2H' heads (the ones that fall
between the first set), so the slopes still spread evenly over the same range.

The bias is a constant added to the scores, so the backward of attention is unchanged: the
weights P already include it, and dS = P ∘ (dP − D) flows to q and k as before.  Blocked
attention (``flash_attention_forward(..., alibi=slopes)``) recomputes the bias of each tile
from the slopes and the tile's indices, so no ``(L, L)`` array ever exists; the dense form
here (:func:`alibi_bias`) is for ``attention_forward(..., bias=...)``, tests and pictures.
"""

from __future__ import annotations

import math

import numpy as np

from mmt_numpy.validate import positive_int


def _power_of_two_slopes(n: int) -> list[float]:
    """2^(−8h/n) for h = 1 … n (n a power of two): a geometric sequence, start = ratio = 2^(−8/n)."""
    return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]


def alibi_slopes(num_heads: int) -> np.ndarray:
    """The paper's per-head slopes ``m_h``, ``(num_heads,)`` float64, largest first.

    >>> alibi_slopes(4).tolist()
    [0.25, 0.0625, 0.015625, 0.00390625]

    For a head count that is not a power of two (say 6): the 4 slopes of the rule for 4 heads,
    then the first 2 of the odd-numbered slopes of the rule for 8 heads (2^−1, 2^−3), which lie
    between them.
    """
    num_heads = positive_int("num_heads", num_heads)
    lower = 2 ** int(math.floor(math.log2(num_heads)))  # the largest power of two <= num_heads
    slopes = _power_of_two_slopes(lower)
    if lower < num_heads:
        slopes += _power_of_two_slopes(2 * lower)[0::2][: num_heads - lower]
    return np.array(slopes)


def check_slopes(name: str, slopes: object, num_heads: int) -> np.ndarray:
    """Validate ALiBi slopes for ``num_heads`` heads; return them as a float64 ``(H,)`` array."""
    if isinstance(slopes, (bool, np.bool_)) or not isinstance(slopes, (np.ndarray, list, tuple)):
        raise TypeError(
            f"{name}: expected a 1-D array of {num_heads} slopes (one per head, e.g. "
            f"ops.alibi_slopes({num_heads})), got {type(slopes).__name__}"
        )
    array = np.asarray(slopes)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{name}: expected real slopes, got dtype {array.dtype}")
    if array.shape != (num_heads,):
        raise ValueError(
            f"{name}: expected {num_heads} slopes (one per head, the size of the head axis), "
            f"got shape {array.shape}"
        )
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"{name}: expected finite slopes >= 0, got {array.tolist()}")
    return array.astype(np.float64)


def alibi_distance_bias(slopes: np.ndarray, i: np.ndarray, j: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``− m_h · |i − j|`` for index vectors i ``(n,)`` and j ``(m,)``: ``(H, n, m)`` in ``dtype``.

    The one place the bias is written; dense attention calls it on all indices, blocked
    attention on each tile's.
    """
    distance = np.abs(i[:, None] - j[None, :]).astype(dtype)  # (n, m)
    return -slopes.astype(dtype)[:, None, None] * distance


def alibi_bias(Lq: int, Lk: int, slopes: np.ndarray | list[float], dtype: object = np.float64) -> np.ndarray:
    """The dense ALiBi bias ``(H, Lq, Lk)``: entry ``[h, i, j] = − m_h · |i − j|``.

    Add it to the scores of every batch row: ``ops.attention_forward(q, k, v, mask, bias=alibi_bias(...))``
    with q ``(B, H, Lq, d_k)``.  Query i and key j are 0-based indices, top-left aligned as
    ``ops.causal_mask``.  With ``ops.causal_mask(Lq, Lk)`` as the mask this is the causal
    (decoder) form ``− m_h (i − j)``; without it, the bidirectional form.

    Args:
        Lq, Lk: numbers of query and key positions.
        slopes: ``(H,)`` non-negative slopes, e.g. :func:`alibi_slopes`.
        dtype: float32 or float64, the dtype of the scores it will be added to.
    """
    Lq = positive_int("Lq", Lq)
    Lk = positive_int("Lk", Lk)
    slopes = check_slopes("slopes", slopes, len(np.atleast_1d(np.asarray(slopes))))
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    return alibi_distance_bias(slopes, np.arange(Lq), np.arange(Lk), dtype)
