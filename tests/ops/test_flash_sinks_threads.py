"""Blocked attention: attention sinks, rectangular tiles, and threads.

* ``sinks=s`` with a window keeps the first s keys visible: equal to dense attention with
  the dense mask, the schedule skips exactly the fully masked tiles, bad values are refused;
* ``block_size=(rows, columns)`` and the default tiles give the same numbers;
* ``threads=2`` equals ``threads=1`` to rounding, gives identical bits on every run, in both
  ways the backward splits its work (whole heads per thread, or query blocks with a dK/dV
  buffer per thread).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mmt_numpy import ops
from mmt_numpy.gradcheck import check_op
from mmt_numpy.ops import flash_attention as fa


def _inputs(seed, batch, Lq, Lk, d=4):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal(batch + (Lq, d)),
        rng.standard_normal(batch + (Lk, d)),
        rng.standard_normal(batch + (Lk, 3)),
    )


def _run(q, k, v, **kwargs):
    out, cache = ops.flash_attention_forward(q, k, v, **kwargs)
    d_out = np.random.default_rng(9).standard_normal(out.shape)
    return (out, *ops.flash_attention_backward(d_out, cache))


def test_sink_mask_follows_its_rule():
    mask = ops.flash_attention_mask(9, 9, causal=True, window=3, sinks=2)
    expected = np.array([[j <= i and (i - j < 3 or j < 2) for j in range(9)] for i in range(9)])
    np.testing.assert_array_equal(mask, expected)
    assert mask[8].tolist() == [True, True] + [False] * 4 + [True] * 3  # 2 sinks + the last 3


@pytest.mark.parametrize("kwargs", [{"causal": True, "window": 3, "sinks": 2}, {"window": 2, "sinks": 5}])
@pytest.mark.parametrize("block_size", [1, 2, (3, 2), 64])
def test_sinks_equal_dense_attention_with_the_mask(kwargs, block_size):
    q, k, v = _inputs(0, (2, 3), 11, 11)
    ours = _run(q, k, v, block_size=block_size, **kwargs)
    mask = ops.flash_attention_mask(11, 11, **kwargs)
    ref_out, ref_cache = ops.attention_forward(q, k, v, mask)
    d_out = np.random.default_rng(9).standard_normal(ref_out.shape)
    for a, b in zip(ours, (ref_out, *ops.attention_backward(d_out, ref_cache)), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("L", "block", "kwargs"),
    [
        (24, 4, {"causal": True, "window": 5, "sinks": 3}),
        (24, (3, 5), {"window": 4, "sinks": 6}),
        (20, 4, {"causal": True, "window": 2, "sinks": 1}),
    ],
)
def test_schedule_with_sinks_skips_exactly_the_fully_masked_tiles(L, block, kwargs):
    keep = ops.flash_attention_mask(L, L, **kwargs)
    bq, bk = fa._tile_shape(block)
    tiles = {(t.q0, t.k0): t for t in fa.tile_schedule(L, L, block, **kwargs)}
    for q0, k0 in itertools.product(range(0, L, bq), range(0, L, bk)):
        tile_keep = keep[q0 : q0 + bq, k0 : k0 + bk]
        assert ((q0, k0) in tiles) == bool(tile_keep.any()), (q0, k0)
        if (q0, k0) in tiles:
            assert tiles[(q0, k0)].partial == (not tile_keep.all()), (q0, k0)
    # Work stays linear in L: one band plus the sink column.
    assert len(list(fa.tile_schedule(1024, 1024, 64, causal=True, window=64, sinks=4))) == 16 + 15 + 14


def test_gradcheck_with_sinks_and_its_negative_control():
    q, k, v = _inputs(1, (2, 2), 7, 7, d=3)
    kwargs = {"causal": True, "window": 2, "sinks": 2, "block_size": 3}
    inputs = {"q": q, "k": k, "v": v}
    assert check_op(ops.flash_attention_forward, ops.flash_attention_backward, inputs, kwargs=kwargs).passed

    def backward_forgetting_the_sinks(d_out, cache):
        return ops.flash_attention_backward(d_out, cache._replace(sinks=0))

    assert not check_op(
        ops.flash_attention_forward, backward_forgetting_the_sinks, inputs, kwargs=kwargs
    ).passed


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"window": 3, "sinks": -1}, ValueError, "sinks: expected an integer >= 0"),
        ({"window": 3, "sinks": 1.5}, TypeError, "sinks: expected an integer"),
        ({"window": 3, "sinks": True}, TypeError, "sinks"),
        ({"sinks": 2}, ValueError, "sinks: only meaningful with a window"),
        ({"block_size": (2, 0)}, ValueError, "block_size: expected a positive integer"),
        ({"block_size": (2, 3, 4)}, ValueError, "block_size: expected an int or a pair"),
        ({"threads": 0}, ValueError, "threads: expected a positive integer"),
        ({"threads": 1.5}, TypeError, "threads"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    q, k, v = _inputs(2, (2,), 5, 5)
    with pytest.raises(error, match=match):
        ops.flash_attention_forward(q, k, v, **kwargs)


def test_rectangular_and_default_tiles_give_the_same_numbers():
    q, k, v = _inputs(3, (2, 2), 37, 29)
    reference = _run(q, k, v, causal=True, block_size=1)
    assert fa.default_tiles(37, 29, 4) == (37, 29)  # short inputs are one tile
    assert fa.default_tiles(4096, 4096, 64) == (256, 512) and fa.default_tiles(4096, 4096, 128) == (128, 256)
    for block_size in ((4, 9), (16, 3), None):
        for a, b in zip(_run(q, k, v, causal=True, block_size=block_size), reference, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "batch", [(1, 1), (2, 2), (3, 1)]
)  # N = 1 and 3: per-thread buffers; N = 4: whole heads
def test_threads_agree_with_one_thread_and_are_deterministic(batch):
    pytest.importorskip("threadpoolctl")
    q, k, v = _inputs(4, batch, 45, 45)
    kwargs = {
        "causal": True,
        "window": 20,
        "sinks": 2,
        "alibi": ops.alibi_slopes(batch[1]),
        "block_size": (8, 16),
    }
    single = _run(q, k, v, threads=1, **kwargs)
    first = _run(q, k, v, threads=2, **kwargs)
    again = _run(q, k, v, threads=2, **kwargs)
    _, cache = ops.flash_attention_forward(q, k, v, threads=2, **kwargs)
    assert cache.threads == 2
    for a, b, c in zip(single, first, again, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(b, c)  # the same bits every run


def test_small_inputs_stay_on_one_thread_and_large_ones_use_the_cores():
    q, k, v = _inputs(5, (1, 1), 16, 16)
    assert ops.flash_attention_forward(q, k, v)[1].threads == 1
    assert fa._resolve_threads(None, 1 << 24, 64) == (
        min(fa.available_cores(), 64) if fa.blas_controller() else 1
    )
    assert fa._resolve_threads(8, 1 << 24, 3) <= 3  # never more threads than query blocks
