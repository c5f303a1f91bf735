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
* ``key_lengths`` ``(B,)``: j < key_lengths[b] for batch row b (right padding);
* ``sinks=s`` (with ``window``): the first s keys, j < s, stay visible to every query as
  well (still subject to ``causal``): the "attention sinks" of StreamingLLM (Xiao et al.,
  2024), the window a model keeps when it streams past its trained length.

A tile in which no (i, j) may attend is never computed: a causal mask skips about half
the tiles, and a window of w leaves only about 2w / block + 1 tiles per block row (plus
the sink tiles), so the work grows linearly in L.
``flash_attention_mask`` builds the equivalent dense mask for comparison with
``ops.attention_forward``.

ALiBi, a bias computed per tile
-------------------------------
``alibi=slopes`` adds ``− m_h |i − j|`` to the scores of head h (``ops.alibi``).  Each tile
computes its own ``(bq, bk)`` piece from the slopes and its row and column indices, in the
forward and again in the backward's recomputation, so the bias costs O(tile) memory like
the scores; the backward is otherwise unchanged (the bias is a constant).

How it is made fast (what each choice buys)
-------------------------------------------
* Each (batch, head) pair is its own 2-D problem: one ``(bq, d) @ (d, bk)`` GEMM per tile,
  no batched-matmul bookkeeping, and a tile's working set does not grow with H.
* The scale is folded into q once (an (L, d) multiply instead of one per (L, L) score).
* v carries an extra column of ones, so ``p @ [v | 1]`` returns Σ p v and the row sums
  Σ p in one GEMM: the softmax denominator costs no separate pass over the tile.
* Tiles are wide in the keys (default :func:`default_tiles`, from L and d): long rows make
  the row max a fast contiguous reduction and amortise Python's per-tile overhead, while
  a tile and its temporaries stay in a core's L2 cache.
* NumPy's element-wise work (exp, max, the masked writes) runs on one core.  With
  ``threads=T`` > 1, T Python threads work on different query blocks at once (NumPy
  releases the GIL inside BLAS and ufuncs) while BLAS itself is held at one thread
  (threadpoolctl), so both cores run exp and GEMM alike instead of one core waiting.
  Results are deterministic: the forward's blocks write disjoint rows; in the backward,
  dK and dV (which every query block adds into) go to one buffer per thread, each filled
  in a fixed order and summed in thread order; or, when the (batch, head) pairs split
  evenly, each thread owns whole heads and writes their dK, dV directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from itertools import groupby
from typing import NamedTuple

import numpy as np

from mmt_numpy.blas import available_cores, blas_controller
from mmt_numpy.ops.alibi import alibi_distance_bias, check_slopes
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
    block_size: tuple[int, int]  # (query rows, key columns) per tile
    sinks: int = 0
    alibi: np.ndarray | None = None  # (H,) float64 slopes
    threads: int = 1


class Tile(NamedTuple):
    """One (query block, key block) pair of the schedule: rows q0:q1, columns k0:k1."""

    q0: int
    q1: int
    k0: int
    k1: int
    partial: bool  # some (i, j) in the tile is masked by causal/window/sinks (so mask it)


# ----------------------------------------------------------------------------- arguments


def _check_mask_args(
    Lk: int,
    causal: object,
    window: object,
    key_lengths: object,
    batch_shape: tuple[int, ...] | None,
    sinks: object = 0,
) -> tuple[bool, int | None, np.ndarray | None, int]:
    """Validate the mask description; return (causal, window, key_lengths as int64 or None, sinks).

    ``batch_shape`` is q's leading shape ``q.shape[:-2]``; ``None`` skips the batch check
    (``flash_attention_mask`` called without tensors).
    """
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal: expected True or False, got {type(causal).__name__} {causal!r}")
    if window is not None:
        window = positive_int("window", window)
    if isinstance(sinks, (bool, np.bool_)) or not isinstance(sinks, (int, np.integer)):
        raise TypeError(f"sinks: expected an integer >= 0, got {type(sinks).__name__} {sinks!r}")
    if sinks < 0:
        raise ValueError(f"sinks: expected an integer >= 0 (the number of sink keys), got {sinks}")
    if sinks and window is None:
        raise ValueError(
            f"sinks: only meaningful with a window (without one every key is visible), got sinks={sinks}"
        )
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
    return bool(causal), window, key_lengths, int(sinks)


def _tile_shape(block_size: object) -> tuple[int, int]:
    """``block_size`` as (query rows, key columns): an int means square tiles."""
    if isinstance(block_size, tuple):
        if len(block_size) != 2:
            raise ValueError(f"block_size: expected an int or a pair (rows, columns), got {block_size!r}")
        return positive_int("block_size", block_size[0]), positive_int("block_size", block_size[1])
    size = positive_int("block_size", block_size)
    return size, size


def default_tiles(Lq: int, Lk: int, d: int) -> tuple[int, int]:
    """The default tile ``(query rows, key columns)`` for lengths Lq, Lk and head size d.

    * 512 key columns: a long contiguous row for the max and the exp, and few enough tiles
      per row that Python's per-tile overhead (~15 NumPy calls) stays a few percent;
    * 256 query rows: the ``(256, 512)`` float32 scores are 512 KiB, so the scores and the
      gradient tile of the backward fit in one core's L2 (2 MiB here) beside the q, k, v
      blocks; a larger d makes those blocks larger, so the tile shrinks as 64 / d;
    * never larger than the input, so short sequences are one tile.
    """
    shrink = max(1, d // 64)
    return max(1, min(Lq, 256 // shrink)), max(1, min(Lk, 512 // shrink))


# ----------------------------------------------------------------------------- threads

# Below this many scores per call the thread hand-off costs more than it saves.
_THREADED_SCORES = 1 << 20
_POOLS: dict[int, ThreadPoolExecutor] = {}


def _resolve_threads(threads: object, scores: int, units: int) -> int:
    """How many threads to use: ``threads`` if given, else all cores for a large enough problem."""
    if threads is not None:
        threads = positive_int("threads", threads)
    elif scores < _THREADED_SCORES:
        threads = 1
    else:
        threads = available_cores()
    threads = max(1, min(threads, units))
    if threads > 1 and blas_controller() is None:
        return 1  # without a way to hold BLAS at one thread, T BLAS pools would fight for the cores
    return threads


def _single_threaded_blas(threads: int) -> AbstractContextManager:
    controller = blas_controller() if threads > 1 else None
    return nullcontext() if controller is None else controller.limit(limits=1, user_api="blas")


def _run_in_threads(work: Callable[[int], None], threads: int) -> None:
    """``work(t)`` for t = 0 … threads − 1, on a persistent pool; errors are re-raised."""
    if threads == 1:
        work(0)
        return
    pool = _POOLS.get(threads)
    if pool is None:
        pool = _POOLS[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="flash")
    with _single_threaded_blas(threads):
        for future in [pool.submit(work, t) for t in range(threads)]:
            future.result()


# ----------------------------------------------------------------------------- masks


def _position_keep(
    i: np.ndarray, j: np.ndarray, causal: bool, window: int | None, sinks: int = 0
) -> np.ndarray | bool:
    """True where query position i may see key position j (i, j broadcast against each other)."""
    keep: np.ndarray | bool = True
    if causal:
        keep = j <= i
    if window is not None:
        near = np.abs(i - j) < window
        keep = keep & ((near | (j < sinks)) if sinks else near)
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
    sinks: int = 0,
    ndim: int = 4,
) -> np.ndarray:
    """The dense boolean mask (True = may attend) equivalent to a flash-attention call.

    ``ops.attention_forward(q, k, v, mask=flash_attention_mask(...))`` computes what
    ``flash_attention_forward(q, k, v, causal=..., window=..., key_lengths=..., sinks=...)``
    does, with O(Lq·Lk) memory.  Meant for tests, pictures and small inputs.

    Args:
        Lq, Lk: numbers of query and key positions.
        causal, window, key_lengths, sinks: as in :func:`flash_attention_forward`.
        ndim: rank of the scores ``(B, ..., Lq, Lk)`` the mask will broadcast against
            (only used with ``key_lengths``); 4 for ``(B, H, Lq, Lk)``.

    Returns:
        ``(Lq, Lk)`` bool, or ``(B, 1, ..., 1, Lq, Lk)`` with ``ndim`` dimensions when
        ``key_lengths`` is given.
    """
    Lq = positive_int("Lq", Lq)
    Lk = positive_int("Lk", Lk)
    ndim = positive_int("ndim", ndim)
    causal, window, key_lengths, sinks = _check_mask_args(Lk, causal, window, key_lengths, None, sinks)
    i = np.arange(Lq)[:, None]
    j = np.arange(Lk)[None, :]
    keep = np.ones((Lq, Lk), dtype=bool) & _position_keep(i, j, causal, window, sinks)
    if key_lengths is not None:
        if ndim < 3:
            raise ValueError(f"ndim: key_lengths needs scores with a batch dimension (ndim >= 3), got {ndim}")
        keep = keep & _length_keep(j, key_lengths, ndim)
    return keep


def tile_schedule(
    Lq: int,
    Lk: int,
    block_size: int | tuple[int, int],
    *,
    causal: bool = False,
    window: int | None = None,
    key_limit: int | None = None,
    sinks: int = 0,
) -> Iterator[Tile]:
    """The tiles that flash attention computes, query block by query block.

    ``block_size`` is an int (square tiles) or ``(rows, columns)``.  The key blocks lie on
    a fixed grid (k0 = 0, bk, 2bk, ...).  For query rows q0:q1 only keys in [lo, hi) can
    be visible, and with ``sinks`` also the keys [0, sinks):

    * causal: j <= i <= q1 − 1, so hi <= q1;
    * window w: j > i − w >= q0 − w, so lo >= q0 − w + 1; and j < i + w <= q1 − 1 + w;
    * key lengths: hi <= key_limit (the row's length).

    Every key block that meets those ranges holds at least one visible (i, j); every other
    block is skipped without being touched.  ``partial`` marks the tiles that straddle
    a causal, window or sink boundary and so need an element-wise mask.
    """
    bq, bk = _tile_shape(block_size)
    hi_all = Lk if key_limit is None else min(Lk, key_limit)
    for q0 in range(0, Lq, bq):
        q1 = min(q0 + bq, Lq)
        lo, hi = 0, hi_all
        if causal:
            hi = min(hi, q1)
        sink_hi = min(sinks, hi)  # the sink keys a row of this block can see
        if window is not None:
            lo = max(lo, q0 - window + 1)
            hi = min(hi, q1 - 1 + window)
        starts = set(range(lo // bk * bk, hi, bk)) if lo < hi else set()
        starts.update(range(0, sink_hi, bk))
        for k0 in sorted(starts):  # empty when no key is visible from this block (its rows output zeros)
            k1 = min(k0 + bk, Lk)
            # Keys k0 .. sinks − 1 are sinks (always visible); the rest must be near every row.
            near0 = max(k0, sinks)
            within_window = (
                window is None or near0 >= k1 or (q1 - 1 - near0 < window and k1 - 1 - q0 < window)
            )
            everything_visible = (not causal or k1 - 1 <= q0) and within_window
            yield Tile(q0, q1, k0, k1, not everything_visible)


def _tile_keep(
    tile: Tile, causal: bool, window: int | None, sinks: int, key_length: int
) -> np.ndarray | None:
    """The tile's keep-mask ``(bq, bk)`` for a row with ``key_length`` keys; None when all is visible."""
    i = np.arange(tile.q0, tile.q1)[:, None]
    j = np.arange(tile.k0, tile.k1)[None, :]
    keep = _position_keep(i, j, causal, window, sinks) if tile.partial else None
    if tile.k1 > key_length:
        by_length = j < key_length
        keep = by_length if keep is None else keep & by_length
    return keep


class _Problem(NamedTuple):
    """A call flattened to N independent 2-D problems (one per batch row and head)."""

    q: np.ndarray  # (N, Lq, d_k) with the scale folded in
    k: np.ndarray  # (N, Lk, d_k)
    v: np.ndarray  # (N, Lk, d_v)
    key_length: np.ndarray  # (N,) keys of problem n (its batch row's length, or Lk)
    slope: np.ndarray | None  # (N,) ALiBi slope of problem n's head
    units: list[tuple[int, list[Tile]]]  # (problem n, the tiles of one query block), in order


def _flatten(cache: FlashCache, q_scaled: np.ndarray) -> _Problem:
    q, k, v = cache.q, cache.k, cache.v
    Lq, Lk = q.shape[-2], k.shape[-2]
    batch = q.shape[:-2]
    N = math.prod(batch)
    lengths = np.full(N, Lk, dtype=np.int64)
    if cache.key_lengths is not None:
        lengths = np.repeat(cache.key_lengths, N // batch[0])  # problem n belongs to batch row n // (N/B)
    slope = None
    if cache.alibi is not None:
        heads = q.shape[-3]
        slope = cache.alibi[np.arange(N) % heads]  # the head axis is the last leading one
    units = []
    schedules: dict[int, list[tuple[int, list[Tile]]]] = {}
    for n in range(N):
        length = int(lengths[n])
        if length not in schedules:  # problems with the same length share one schedule
            tiles = tile_schedule(
                Lq,
                Lk,
                cache.block_size,
                causal=cache.causal,
                window=cache.window,
                key_limit=length,
                sinks=cache.sinks,
            )
            schedules[length] = [(q0, list(row)) for q0, row in groupby(tiles, key=lambda t: t.q0)]
        units += [(n, row) for _, row in schedules[length]]
    as_3d = (N, Lq, q.shape[-1]), (N, Lk, k.shape[-1]), (N, Lk, v.shape[-1])
    return _Problem(
        np.ascontiguousarray(q_scaled.reshape(as_3d[0])),
        np.ascontiguousarray(k.reshape(as_3d[1])),
        np.ascontiguousarray(v.reshape(as_3d[2])),
        lengths,
        slope,
        units,
    )


def _tile_scores(problem: _Problem, cache: FlashCache, n: int, tile: Tile) -> np.ndarray:
    """The tile's scores ``(bq, bk)``: (q·scale) kᵀ, plus ALiBi's bias, −inf where masked."""
    s = problem.q[n, tile.q0 : tile.q1] @ problem.k[n, tile.k0 : tile.k1].T
    if problem.slope is not None:  # s −= m_h |i − j|, computed for this tile only
        i, j = np.arange(tile.q0, tile.q1), np.arange(tile.k0, tile.k1)
        s += alibi_distance_bias(problem.slope[n : n + 1], i, j, s.dtype)[0]
    keep = _tile_keep(tile, cache.causal, cache.window, cache.sinks, int(problem.key_length[n]))
    if keep is not None:
        s[~np.broadcast_to(keep, s.shape)] = -np.inf
    return s


# ----------------------------------------------------------------------------- forward


def flash_attention_forward(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    causal: bool = False,
    window: int | None = None,
    key_lengths: np.ndarray | list[int] | None = None,
    sinks: int = 0,
    alibi: np.ndarray | list[float] | None = None,
    scale: float | None = None,
    block_size: int | tuple[int, int] | None = None,
    threads: int | None = None,
) -> tuple[np.ndarray, FlashCache]:
    """Scaled dot-product attention computed tile by tile with an online softmax.

    Same result as ``ops.attention_forward(q, k, v, mask=flash_attention_mask(...), scale,
    bias=ops.alibi_bias(...))`` (to rounding, ~1e-16 relative in float64), in
    O(L·d + tile) memory per batch-and-head instead of O(Lq·Lk).

    Args:
        q: ``(..., Lq, d_k)`` queries, e.g. ``(B, H, Lq, d_k)``.
        k: ``(..., Lk, d_k)`` keys, same leading dimensions as q.
        v: ``(..., Lk, d_v)`` values.
        causal: query i sees only keys j <= i (top-left aligned when Lq != Lk).
        window: a positive int w; query i sees only keys with |i − j| < w.  With
            ``causal`` too: the w keys i − w < j <= i.
        key_lengths: ``(B,)`` integers in [0, Lk], B = q.shape[0]; keys j >= key_lengths[b]
            are padding for batch row b.  A length of 0 masks a whole row of queries.
        sinks: with ``window``, the first ``sinks`` keys stay visible to every query too.
        alibi: ``(H,)`` ALiBi slopes, H = q.shape[-3] (``ops.alibi_slopes(H)``): adds
            ``− m_h |i − j|`` to the scores of head h, tile by tile.
        scale: multiplies the scores; default ``1/√d_k``.
        block_size: an int (square tiles) or ``(rows, columns)``; default
            :func:`default_tiles` (the last tile of a row or column may be smaller).
        threads: Python threads working on query blocks at once; default all cores for
            inputs with at least 2^20 scores, else 1 (see the module docstring).

    Returns:
        out ``(..., Lq, d_v)`` (a query with no visible key gets zeros) and a
        :class:`FlashCache` of O(L·d) size.
    """
    _check_qkv(q, k, v)
    Lq, Lk = q.shape[-2], k.shape[-2]
    causal, window, key_lengths, sinks = _check_mask_args(
        Lk, causal, window, key_lengths, q.shape[:-2], sinks
    )
    if alibi is not None:
        if q.ndim < 3:
            raise ValueError(f"alibi: needs a head axis, q must be (..., H, Lq, d_k); got shape {q.shape}")
        alibi = check_slopes("alibi", alibi, q.shape[-3])
    tiles = default_tiles(Lq, Lk, q.shape[-1]) if block_size is None else _tile_shape(block_size)
    # A Python float keeps float32 inputs float32 (NumPy 2 treats it as a weak scalar).
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else real_number("scale", scale)

    batch = q.shape[:-2]
    N, d_v = math.prod(batch), v.shape[-1]
    # The call's description (no output yet), which the tiles are computed from.
    spec = FlashCache(q, k, v, None, None, scale, causal, window, key_lengths, tiles, sinks, alibi)
    problem = _flatten(spec, q * scale)  # scale q once instead of every (L, L) score
    threads = _resolve_threads(threads, N * Lq * Lk, len(problem.units))
    out = np.zeros((N, Lq, d_v), dtype=q.dtype)
    lse = np.full((N, Lq), -np.inf, dtype=q.dtype)
    # [v | 1]: one GEMM gives Σ p v and the softmax denominator Σ p together.
    v_ones = np.concatenate([problem.v, np.ones((N, Lk, 1), dtype=v.dtype)], axis=-1)

    # Query blocks are independent: each keeps its own running (m, l, acc) over its tiles.
    def attend_rows(n: int, row_tiles: Sequence[Tile]) -> None:
        m = acc = None  # running row maximum (bq, 1) and running [Σ exp(s − m) v | Σ exp(s − m)]
        for tile in row_tiles:
            s = _tile_scores(problem, spec, n, tile)  # (bq, bk) this tile's scores
            m_new = s.max(axis=-1, keepdims=True)
            if m is not None:
                m_new = np.maximum(m, m_new)
            # A row with nothing visible yet has m_new = -inf; shift it by 0 so that
            # exp(-inf - (-inf)) = NaN never happens (its p and α are then exactly 0).
            shift = m_new if np.isfinite(m_new).all() else np.where(np.isfinite(m_new), m_new, 0.0)
            s -= shift
            p = np.exp(s, out=s)  # (bq, bk) unnormalised weights under the new shift, in place
            pv = p @ v_ones[n, tile.k0 : tile.k1]  # (bq, d_v + 1)
            if acc is None:
                acc = pv
            else:
                acc *= np.exp(m - shift)  # α rescales what was summed under the old shift
                acc += pv
            m = m_new
        # out = acc / l and lse = m + log l.  A row that saw no visible key (l = 0) keeps
        # out = 0 and lse = -inf.
        rows = slice(row_tiles[0].q0, row_tiles[0].q1)
        l_run = acc[:, -1:]
        seen = l_run > 0
        safe_l = np.where(seen, l_run, 1.0)
        out[n, rows] = np.where(seen, acc[:, :-1] / safe_l, 0.0)
        lse[n, rows] = np.where(seen, m + np.log(safe_l), -np.inf)[:, 0]

    def forward_share(t: int) -> None:  # thread t takes every threads-th query block
        for n, row_tiles in problem.units[t::threads]:
            attend_rows(n, row_tiles)

    _run_in_threads(forward_share, threads)
    out = out.reshape(batch + (Lq, d_v))
    lse = lse.reshape(batch + (Lq,))
    cache = FlashCache(q, k, v, out, lse, scale, causal, window, key_lengths, tiles, sinks, alibi, threads)
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
        cache: from :func:`flash_attention_forward` (its tiles and threads are reused).

    Returns:
        ``(dq (..., Lq, d_k), dk (..., Lk, d_k), dv (..., Lk, d_v))``; a fully masked query
        row and every masked key contribute exactly zero.
    """
    if not isinstance(cache, FlashCache):
        raise TypeError(
            f"cache: expected the FlashCache of flash_attention_forward, got {type(cache).__name__}"
        )
    q, k, v, out, scale = cache.q, cache.k, cache.v, cache.out, cache.scale
    grad_output(d_out, out.shape, out.dtype)
    batch, Lq, Lk = q.shape[:-2], q.shape[-2], k.shape[-2]
    N = math.prod(batch)
    problem = _flatten(cache, q * scale)
    threads = min(cache.threads, max(1, len(problem.units)))

    D = _rowsum_dout_out(d_out, out)  # (..., Lq, 1)
    D = D.reshape(N, Lq, 1)
    d_out3 = d_out.reshape(N, Lq, d_out.shape[-1])
    # P_ij = exp(s_ij − lse_i).  For a fully masked row lse = -inf; use +inf there so that
    # every recomputed weight of the row is exp(-inf) = 0 (no NaN, zero gradient).
    lse_col = np.where(np.isfinite(cache.lse), cache.lse, np.inf).reshape(N, Lq, 1)
    dq = np.zeros((N, Lq, q.shape[-1]), dtype=q.dtype)
    dk = np.zeros((N, Lk, k.shape[-1]), dtype=k.dtype)
    dv = np.zeros((N, Lk, v.shape[-1]), dtype=v.dtype)

    def backprop_rows(n: int, row_tiles: Sequence[Tile], dk_acc: np.ndarray, dv_acc: np.ndarray) -> None:
        rows = slice(row_tiles[0].q0, row_tiles[0].q1)
        q_blk, do_blk = problem.q[n, rows], d_out3[n, rows]
        dq_blk = np.zeros_like(q_blk)
        for tile in row_tiles:
            cols = slice(tile.k0, tile.k1)
            # Recompute the forward's tile: s = (q · scale) kᵀ (+ bias, masked), P = exp(s − lse).
            s = _tile_scores(problem, cache, n, tile)
            s -= lse_col[n, rows]
            p = np.exp(s, out=s)  # (bq, bk)
            # out = P V  ->  dV += Pᵀ dO  and  dP = dO Vᵀ
            dv_acc[n, cols] += p.T @ do_blk
            dp = do_blk @ problem.v[n, cols].T
            # P = softmax(s)  ->  dS = P ∘ (dP − D), with D_i = rowsum(dO ∘ O) for the row sum
            dp -= D[n, rows]
            ds = np.multiply(dp, p, out=dp)
            # s = (q · scale) kᵀ  ->  dQ += dS K · scale  and  dK += dSᵀ (q · scale)
            dq_blk += ds @ problem.k[n, cols]
            dk_acc[n, cols] += ds.T @ q_blk
        dq[n, rows] = dq_blk * scale

    if threads > 1 and N % threads == 0:
        # Each thread owns whole (batch, head) problems: their dK, dV rows are its alone.
        def backward_share(t: int) -> None:
            for n, row_tiles in problem.units:
                if n % threads == t:
                    backprop_rows(n, row_tiles, dk, dv)

        _run_in_threads(backward_share, threads)
    else:
        # Query blocks of one problem go to different threads; each adds into its own dK, dV
        # (thread 0 into the result), summed below in thread order: the same bits every run.
        buffers = [(dk, dv)] + [(np.zeros_like(dk), np.zeros_like(dv)) for _ in range(threads - 1)]

        def backward_share(t: int) -> None:
            for n, row_tiles in problem.units[t::threads]:
                backprop_rows(n, row_tiles, *buffers[t])

        _run_in_threads(backward_share, threads)
        for dk_t, dv_t in buffers[1:]:
            dk += dk_t
            dv += dv_t
    return dq.reshape(q.shape), dk.reshape(k.shape), dv.reshape(v.shape)


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
    i = np.arange(cache.q.shape[-2])[rows]
    j = np.arange(cache.k.shape[-2])
    s = (q * cache.scale) @ cache.k.swapaxes(-1, -2)
    if cache.alibi is not None:
        s += alibi_distance_bias(cache.alibi, i, j, s.dtype)  # (H, rows, Lk) against (..., H, rows, Lk)
    keep = np.broadcast_to(
        _position_keep(i[:, None], j[None, :], cache.causal, cache.window, cache.sinks), s.shape[-2:]
    )
    if cache.key_lengths is not None:
        keep = keep & _length_keep(j, cache.key_lengths, q.ndim)
    s = np.where(keep, s, -np.inf)
    lse = cache.lse[..., rows]
    lse = np.where(np.isfinite(lse), lse, np.inf)[..., None]  # a fully masked row: all weights 0
    return np.exp(s - lse)
