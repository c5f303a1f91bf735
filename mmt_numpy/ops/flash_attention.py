"""Memory-efficient attention for long inputs: the same softmax(Q Kᵀ · s) V, block by block.

The article's title asks how a model can read *long* texts (如何提高长文本阅读能力), and §3.1
and §4.1 credit self-attention with capturing long-range dependencies (长距离依赖).  The
price is the ``(Lq, Lk)`` score matrix: plain attention (``ops.attention_forward``) builds
it, keeps the weights for the backward pass, and so needs O(L²) memory; at L = 16384 one
float32 copy is already 1 GiB.  This file computes the identical result while holding only
one ``(block, block)`` tile of scores at a time (FlashAttention, Dao et al. 2022; the
loop order of FlashAttention-2, 2023).

Forward: the online softmax
---------------------------
For one query row with scores s_1, s_2, ... arriving one key block at a time, keep three
running quantities:

    m   = max of the scores seen so far                       (the usual max shift)
    l   = Σ exp(s_j − m) over the keys seen so far           (the softmax denominator)
    acc = Σ exp(s_j − m) v_j                                 (the unnormalised output)

When a new block brings scores s' with maximum m', set m_new = max(m, m') and rescale
what was accumulated under the old shift by α = exp(m − m_new):

    l   ← α l   + Σ exp(s'_j − m_new)
    acc ← α acc + Σ exp(s'_j − m_new) v'_j

After the last block, out = acc / l, exactly softmax(s) V (the shift cancels in the ratio).
We also keep the row's log-sum-exp  lse = m + log l = log Σ_j exp(s_j): one number per
query row, and all the backward pass needs to rebuild any weight, P_ij = exp(s_ij − lse_i).

Backward: recompute instead of store
------------------------------------
With P = softmax(S), S = Q Kᵀ · s, O = P V and upstream dO, plain attention's backward is

    dV = Pᵀ dO,   dP = dO Vᵀ,   dS_ij = P_ij (dP_ij − Σ_k P_ik dP_ik),   dQ = s dS K,   dK = s dSᵀ Q.

The row sum looks as if it needs a whole row of P, but
Σ_k P_ik dP_ik = Σ_k P_ik (dO_i · v_k) = dO_i · (Σ_k P_ik v_k) = dO_i · O_i =: D_i,
an O(L·d) quantity computed once from dO and the saved output.  So each tile is
independent: recompute P for the tile from lse, then add its share into dQ, dK and dV.
The cache therefore holds q, k, v, out and lse: O(L·d), never O(L²).

Masks, described rather than materialised
-----------------------------------------
Query i (0-based) may attend to key j (0-based; the same indices even when Lq != Lk) when
all the requested conditions hold (True = "may attend", as everywhere in mmt_numpy):

* ``causal``: j <= i (top-left aligned, as ``ops.causal_mask``);
* ``window=w``: |i − j| < w, so 2w − 1 keys centred on i (fewer at the edges); with
  ``causal`` as well that leaves the last w keys, i − w < j <= i;
* ``key_lengths`` ``(B,)``: j < key_lengths[b] for batch row b (right padding).

A tile in which no (i, j) may attend is never computed: a causal mask skips about half
the tiles, and a window of w leaves only about 2w / block + 1 tiles per block row, so the
work grows linearly in L.
``flash_attention_mask`` builds the equivalent dense mask for comparison with
``ops.attention_forward``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from itertools import groupby
from typing import NamedTuple

import numpy as np

from mmt_numpy.ops.attention import _check_qkv
from mmt_numpy.validate import grad_output, positive_int, real_number


class FlashCache(NamedTuple):
    """What the backward pass needs: O(L·d) arrays and the mask description, no weights."""

    q: np.ndarray  # (..., Lq, d_k)
    k: np.ndarray  # (..., Lk, d_k)
    v: np.ndarray  # (..., Lk, d_v)
    out: np.ndarray  # (..., Lq, d_v)
    lse: np.ndarray  # (..., Lq) log Σ_j exp(s_ij) over allowed keys; -inf for a fully masked row
    scale: float
    causal: bool
    window: int | None
    key_lengths: np.ndarray | None  # (B,) int64
    block_size: int


class Tile(NamedTuple):
    """One (query block, key block) pair of the schedule: rows q0:q1, columns k0:k1."""

    q0: int
    q1: int
    k0: int
    k1: int
    partial: bool  # some (i, j) in the tile is masked by causal/window (so mask it)


# ----------------------------------------------------------------------------- arguments


def _check_mask_args(
    Lk: int,
    causal: object,
    window: object,
    key_lengths: object,
    batch_shape: tuple[int, ...] | None,
) -> tuple[bool, int | None, np.ndarray | None]:
    """Validate the mask description; return (causal, window, key_lengths as int64 or None).

    ``batch_shape`` is q's leading shape ``q.shape[:-2]``; ``None`` skips the batch check
    (``flash_attention_mask`` called without tensors).
    """
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal: expected True or False, got {type(causal).__name__} {causal!r}")
    if window is not None:
        window = positive_int("window", window)
    if key_lengths is not None:
        lengths = np.asarray(key_lengths)
        if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.integer):
            raise TypeError(
                "key_lengths: expected a 1-D integer array (one length per batch row), "
                f"got dtype {lengths.dtype} and shape {lengths.shape}"
            )
        if batch_shape is not None:
            if len(batch_shape) == 0:
                raise ValueError(
                    "key_lengths: needs a batch dimension, q must be (B, ..., Lq, d_k); "
                    "got q with no leading dimensions"
                )
            if lengths.shape[0] != batch_shape[0]:
                raise ValueError(
                    f"key_lengths: expected {batch_shape[0]} lengths (the batch size, q.shape[0]), "
                    f"got shape {lengths.shape}"
                )
        if np.any(lengths < 0) or np.any(lengths > Lk):
            raise ValueError(f"key_lengths: expected values in [0, {Lk}], got {lengths.tolist()}")
        key_lengths = lengths.astype(np.int64)
    return bool(causal), window, key_lengths


# ----------------------------------------------------------------------------- masks


def _position_keep(i: np.ndarray, j: np.ndarray, causal: bool, window: int | None) -> np.ndarray | bool:
    """True where query position i may see key position j (i, j broadcast against each other)."""
    keep: np.ndarray | bool = True
    if causal:
        keep = j <= i
    if window is not None:
        keep = keep & (np.abs(i - j) < window)
    return keep


def _length_keep(j: np.ndarray, key_lengths: np.ndarray, ndim: int) -> np.ndarray:
    """``(B, 1, ..., 1, len(j))`` with ``ndim`` dims: True where key j < key_lengths[b]."""
    lengths = key_lengths.reshape((-1,) + (1,) * (ndim - 1))
    return j.reshape(-1) < lengths


def flash_attention_mask(
    Lq: int,
    Lk: int,
    *,
    causal: bool = False,
    window: int | None = None,
    key_lengths: np.ndarray | list[int] | None = None,
    ndim: int = 4,
) -> np.ndarray:
    """The dense boolean mask (True = may attend) equivalent to a flash-attention call.

    ``ops.attention_forward(q, k, v, mask=flash_attention_mask(...))`` computes what
    ``flash_attention_forward(q, k, v, causal=..., window=..., key_lengths=...)`` does,
    with O(Lq·Lk) memory.  Meant for tests, pictures and small inputs.

    Args:
        Lq, Lk: numbers of query and key positions.
        causal, window, key_lengths: as in :func:`flash_attention_forward`.
        ndim: rank of the scores ``(B, ..., Lq, Lk)`` the mask will broadcast against
            (only used with ``key_lengths``); 4 for ``(B, H, Lq, Lk)``.

    Returns:
        ``(Lq, Lk)`` bool, or ``(B, 1, ..., 1, Lq, Lk)`` with ``ndim`` dimensions when
        ``key_lengths`` is given.
    """
    Lq = positive_int("Lq", Lq)
    Lk = positive_int("Lk", Lk)
    ndim = positive_int("ndim", ndim)
    causal, window, key_lengths = _check_mask_args(Lk, causal, window, key_lengths, None)
    i = np.arange(Lq)[:, None]
    j = np.arange(Lk)[None, :]
    keep = np.ones((Lq, Lk), dtype=bool) & _position_keep(i, j, causal, window)
    if key_lengths is not None:
        if ndim < 3:
            raise ValueError(f"ndim: key_lengths needs scores with a batch dimension (ndim >= 3), got {ndim}")
        keep = keep & _length_keep(j, key_lengths, ndim)
    return keep


def tile_schedule(
    Lq: int,
    Lk: int,
    block_size: int,
    *,
    causal: bool = False,
    window: int | None = None,
    key_limit: int | None = None,
) -> Iterator[Tile]:
    """The tiles that flash attention computes, query block by query block.

    The key blocks lie on a fixed grid (k0 = 0, b, 2b, ...).  For query rows q0:q1 only
    keys in [lo, hi) can be visible:

    * causal: j <= i <= q1 − 1, so hi <= q1;
    * window w: j > i − w >= q0 − w, so lo >= q0 − w + 1; and j < i + w <= q1 − 1 + w;
    * key lengths: hi <= key_limit (the longest row; shorter rows are masked inside).

    Every key block that meets [lo, hi) holds at least one visible (i, j); every other
    block is skipped without being touched.  ``partial`` marks the tiles that straddle
    a causal or window boundary and so need an element-wise mask.
    """
    block_size = positive_int("block_size", block_size)
    hi_all = Lk if key_limit is None else min(Lk, key_limit)
    for q0 in range(0, Lq, block_size):
        q1 = min(q0 + block_size, Lq)
        lo, hi = 0, hi_all
        if causal:
            hi = min(hi, q1)
        if window is not None:
            lo = max(lo, q0 - window + 1)
            hi = min(hi, q1 - 1 + window)
        if lo >= hi:  # no key is visible from this query block (its rows output zeros)
            continue
        for k0 in range(lo // block_size * block_size, hi, block_size):
            k1 = min(k0 + block_size, Lk)
            everything_visible = (not causal or k1 - 1 <= q0) and (
                window is None or (q1 - 1 - k0 < window and k1 - 1 - q0 < window)
            )
            yield Tile(q0, q1, k0, k1, not everything_visible)


def _tile_mask(
    tile: Tile, causal: bool, window: int | None, key_lengths: np.ndarray | None, ndim: int
) -> np.ndarray | None:
    """The tile's keep-mask ``(bq, bk)`` or ``(B, 1, .., bq, bk)``; None when all is visible."""
    i = np.arange(tile.q0, tile.q1)[:, None]
    j = np.arange(tile.k0, tile.k1)[None, :]
    keep = _position_keep(i, j, causal, window) if tile.partial else None
    if key_lengths is not None and tile.k1 > key_lengths.min():
        by_length = _length_keep(j, key_lengths, ndim)
        keep = by_length if keep is None else keep & by_length
    return keep


# ----------------------------------------------------------------------------- forward


def flash_attention_forward(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    causal: bool = False,
    window: int | None = None,
    key_lengths: np.ndarray | list[int] | None = None,
    scale: float | None = None,
    block_size: int = 64,
) -> tuple[np.ndarray, FlashCache]:
    """Scaled dot-product attention computed tile by tile with an online softmax.

    Same result as ``ops.attention_forward(q, k, v, mask=flash_attention_mask(...), scale)``
    (to rounding, ~1e-16 relative in float64), in O(L·d + block_size²) memory per
    batch-and-head instead of O(Lq·Lk).

    Args:
        q: ``(..., Lq, d_k)`` queries, e.g. ``(B, H, Lq, d_k)``.
        k: ``(..., Lk, d_k)`` keys, same leading dimensions as q.
        v: ``(..., Lk, d_v)`` values.
        causal: query i sees only keys j <= i (top-left aligned when Lq != Lk).
        window: a positive int w; query i sees only keys with |i − j| < w.  With
            ``causal`` too: the w keys i − w < j <= i.
        key_lengths: ``(B,)`` integers in [0, Lk], B = q.shape[0]; keys j >= key_lengths[b]
            are padding for batch row b.  A length of 0 masks a whole row of queries.
        scale: multiplies the scores; default ``1/√d_k``.
        block_size: rows and columns per tile (the last tile may be smaller).

    Returns:
        out ``(..., Lq, d_v)`` (a query with no visible key gets zeros) and a
        :class:`FlashCache` of O(L·d) size.
    """
    _check_qkv(q, k, v)
    Lq, Lk = q.shape[-2], k.shape[-2]
    causal, window, key_lengths = _check_mask_args(Lk, causal, window, key_lengths, q.shape[:-2])
    block_size = positive_int("block_size", block_size)
    # A Python float keeps float32 inputs float32 (NumPy 2 treats it as a weak scalar).
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else real_number("scale", scale)

    batch = q.shape[:-2]
    out = np.zeros(batch + (Lq, v.shape[-1]), dtype=q.dtype)
    lse = np.full(batch + (Lq,), -np.inf, dtype=q.dtype)
    key_limit = None if key_lengths is None else int(key_lengths.max())
    tiles = tile_schedule(Lq, Lk, block_size, causal=causal, window=window, key_limit=key_limit)

    # Query blocks are independent: each keeps its own running (m, l, acc) over its tiles.
    for (q0, q1), row_tiles in groupby(tiles, key=lambda t: (t.q0, t.q1)):
        rows = slice(q0, q1)
        q_blk = q[..., rows, :]
        m = np.full(batch + (q1 - q0, 1), -np.inf, dtype=q.dtype)  # running row maximum
        l_run = np.zeros(batch + (q1 - q0, 1), dtype=q.dtype)  # running Σ exp(s − m)
        acc = np.zeros(batch + (q1 - q0, v.shape[-1]), dtype=q.dtype)  # running Σ exp(s − m) v
        for tile in row_tiles:
            k_blk = k[..., tile.k0 : tile.k1, :]
            v_blk = v[..., tile.k0 : tile.k1, :]
            s = (q_blk @ k_blk.swapaxes(-1, -2)) * scale  # (..., bq, bk) this tile's scores
            keep = _tile_mask(tile, causal, window, key_lengths, q.ndim)
            if keep is not None:
                s = np.where(keep, s, -np.inf)
            m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
            # A row with nothing visible yet has m_new = -inf; shift it by 0 so that
            # exp(-inf - (-inf)) = NaN never happens (its p and α are then exactly 0).
            shift = np.where(np.isfinite(m_new), m_new, 0.0)
            p = np.exp(s - shift)  # (..., bq, bk) unnormalised weights under the new shift
            alpha = np.exp(m - shift)  # (..., bq, 1) rescales what was summed under the old shift
            l_run = alpha * l_run + p.sum(axis=-1, keepdims=True)
            acc = alpha * acc + p @ v_blk
            m = m_new
        # out = acc / l and lse = m + log l.  A row that saw no visible key (l = 0) keeps
        # out = 0 and lse = -inf.
        seen = l_run > 0
        safe_l = np.where(seen, l_run, 1.0)
        out[..., rows, :] = np.where(seen, acc / safe_l, 0.0)
        lse[..., rows] = np.where(seen, m + np.log(safe_l), -np.inf)[..., 0]

    cache = FlashCache(q, k, v, out, lse, scale, causal, window, key_lengths, block_size)
    return out, cache


# ----------------------------------------------------------------------------- backward


def _rowsum_dout_out(d_out: np.ndarray, out: np.ndarray) -> np.ndarray:
    """D_i = dO_i · O_i  ``(..., Lq, 1)``, which equals Σ_j P_ij dP_ij (module docstring)."""
    return (d_out * out).sum(axis=-1, keepdims=True)


def flash_attention_backward(
    d_out: np.ndarray, cache: FlashCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of flash attention, recomputing each tile's weights from the saved lse.

    Args:
        d_out: ``(..., Lq, d_v)``, the gradient of the loss with respect to ``out``.
        cache: from :func:`flash_attention_forward`.

    Returns:
        ``(dq (..., Lq, d_k), dk (..., Lk, d_k), dv (..., Lk, d_v))``; a fully masked query
        row and every masked key contribute exactly zero.
    """
    q, k, v, out, lse, scale, causal, window, key_lengths, block_size = cache
    grad_output(d_out, out.shape, out.dtype)
    Lq, Lk = q.shape[-2], k.shape[-2]

    D = _rowsum_dout_out(d_out, out)  # (..., Lq, 1)
    # P_ij = exp(s_ij − lse_i).  For a fully masked row lse = -inf; use +inf there so that
    # every recomputed weight of the row is exp(-inf) = 0 (no NaN, zero gradient).
    lse_col = np.where(np.isfinite(lse), lse, np.inf)[..., None]  # (..., Lq, 1)
    dq = np.zeros_like(q)
    dk = np.zeros_like(k)
    dv = np.zeros_like(v)
    key_limit = None if key_lengths is None else int(key_lengths.max())
    for tile in tile_schedule(Lq, Lk, block_size, causal=causal, window=window, key_limit=key_limit):
        rows, cols = slice(tile.q0, tile.q1), slice(tile.k0, tile.k1)
        q_blk, k_blk, v_blk = q[..., rows, :], k[..., cols, :], v[..., cols, :]
        do_blk = d_out[..., rows, :]

        # Recompute the forward's tile: s = q kᵀ · scale (masked), P = exp(s − lse).
        s = (q_blk @ k_blk.swapaxes(-1, -2)) * scale
        keep = _tile_mask(tile, causal, window, key_lengths, q.ndim)
        if keep is not None:
            s = np.where(keep, s, -np.inf)
        p = np.exp(s - lse_col[..., rows, :])  # (..., bq, bk)
        # out = P V  ->  dV += Pᵀ dO  and  dP = dO Vᵀ
        dv[..., cols, :] += p.swapaxes(-1, -2) @ do_blk
        dp = do_blk @ v_blk.swapaxes(-1, -2)
        # P = softmax(s)  ->  dS = P ∘ (dP − D), with D_i = rowsum(dO ∘ O) for the row sum
        ds = p * (dp - D[..., rows, :])
        # s = q kᵀ · scale  ->  dQ += dS K · scale  and  dK += dSᵀ Q · scale
        dq[..., rows, :] += (ds @ k_blk) * scale
        dk[..., cols, :] += (ds.swapaxes(-1, -2) @ q_blk) * scale
    return dq, dk, dv


def flash_attention_weights(cache: FlashCache, rows: slice | None = None) -> np.ndarray:
    """Rebuild the attention weights ``P = exp(s − lse)`` of a blocked call, for plotting.

    Blocked attention never stores its ``(Lq, Lk)`` weights; the saved row log-sum-exp gives
    them back exactly (module docstring: P_ij = exp(s_ij − lse_i)).  This builds the dense
    array, so ask for a few query ``rows`` of a long input.

    Args:
        cache: from :func:`flash_attention_forward`.
        rows: the query rows to rebuild (default all).

    Returns:
        ``(..., len(rows), Lk)`` weights in the inputs' dtype; masked keys and fully masked
        query rows are exactly 0.
    """
    rows = slice(None) if rows is None else rows
    q = cache.q[..., rows, :]
    i = np.arange(cache.q.shape[-2])[rows][:, None]
    j = np.arange(cache.k.shape[-2])[None, :]
    s = (q @ cache.k.swapaxes(-1, -2)) * cache.scale
    keep = np.broadcast_to(_position_keep(i, j, cache.causal, cache.window), s.shape[-2:])
    if cache.key_lengths is not None:
        keep = keep & _length_keep(j, cache.key_lengths, q.ndim)
    s = np.where(keep, s, -np.inf)
    lse = cache.lse[..., rows]
    lse = np.where(np.isfinite(lse), lse, np.inf)[..., None]  # a fully masked row: all weights 0
    return np.exp(s - lse)
