"""Blocked (flash) attention: the same numbers as plain attention, in O(L·d) memory.

* values and all three gradients equal ``ops.attention_forward/backward`` with the
  equivalent dense mask to 1e-12 in float64, for every mask kind and combination, block
  sizes that do and do not divide the lengths, Lq != Lk and several batch layouts;
* the dense-mask helper agrees with ``causal_mask``/``padding_mask`` and the window rule;
* the tile schedule skips exactly the fully masked tiles;
* fully masked rows give zeros and zero gradients, no NaN and no floating-point warnings;
* the cache holds no (Lq, Lk) array;
* finite differences accept the backward and reject deliberately broken ones;
* bad arguments raise errors that name the argument; float32 stays float32.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mmt_numpy import ops
from mmt_numpy.gradcheck import check_op
from mmt_numpy.ops import flash_attention as fa

MASKS = {
    "none": {},
    "causal": {"causal": True},
    "window 1": {"window": 1},
    "window 3": {"window": 3},
    "causal + window 2": {"causal": True, "window": 2},
    "key_lengths": {"key_lengths": [4, 0, 9]},
    "causal + key_lengths": {"causal": True, "key_lengths": [4, 0, 9]},
    "window 3 + key_lengths": {"window": 3, "key_lengths": [4, 0, 9]},
    "causal + window 4 + key_lengths": {"causal": True, "window": 4, "key_lengths": [4, 0, 9]},
}
SHAPES = [(8, 8), (5, 9), (9, 5), (1, 6)]  # (Lq, Lk): square, wide, tall, a single query
BLOCK_SIZES = [1, 3, 4, 64]  # 3 divides none of the lengths, 4 divides 8, 64 is one tile


def _inputs(rng, batch, Lq, Lk, d_k=4, d_v=3, dtype=np.float64):
    q = rng.standard_normal(batch + (Lq, d_k)).astype(dtype)
    k = rng.standard_normal(batch + (Lk, d_k)).astype(dtype)
    v = rng.standard_normal(batch + (Lk, d_v)).astype(dtype)
    return q, k, v


def _both(q, k, v, block_size=4, scale=None, **mask_kwargs):
    """Flash and plain attention on the same inputs: (out_flash, grads_flash, out_plain, grads_plain)."""
    out, cache = ops.flash_attention_forward(q, k, v, block_size=block_size, scale=scale, **mask_kwargs)
    mask = ops.flash_attention_mask(q.shape[-2], k.shape[-2], ndim=q.ndim, **mask_kwargs)
    ref, ref_cache = ops.attention_forward(q, k, v, mask=mask, scale=scale)
    d_out = np.random.default_rng(99).standard_normal(out.shape).astype(q.dtype)
    return out, ops.flash_attention_backward(d_out, cache), ref, ops.attention_backward(d_out, ref_cache)


@pytest.mark.parametrize("mask_name", list(MASKS))
def test_values_and_gradients_match_plain_attention(mask_name):
    rng = np.random.default_rng(0)
    for (Lq, Lk), block_size in itertools.product(SHAPES, BLOCK_SIZES):
        kwargs = dict(MASKS[mask_name])
        if "key_lengths" in kwargs:
            kwargs["key_lengths"] = np.minimum(kwargs["key_lengths"], Lk)
        q, k, v = _inputs(rng, (3, 2), Lq, Lk)
        out, grads, ref, ref_grads = _both(q, k, v, block_size, **kwargs)
        label = f"{mask_name}, Lq={Lq}, Lk={Lk}, block={block_size}"
        assert out.shape == ref.shape
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12, err_msg=label)
        for name, g, r in zip(("dq", "dk", "dv"), grads, ref_grads, strict=True):
            assert g.shape == r.shape
            np.testing.assert_allclose(g, r, rtol=0, atol=1e-12, err_msg=f"{name}: {label}")


@pytest.mark.parametrize("batch", [(), (2,), (2, 3), (2, 1, 3)])
def test_any_leading_dimensions(batch):
    rng = np.random.default_rng(1)
    q, k, v = _inputs(rng, batch, 7, 10)
    kwargs = {"causal": True, "window": 3}
    if batch:
        kwargs["key_lengths"] = np.arange(batch[0]) + 5
    out, grads, ref, ref_grads = _both(q, k, v, block_size=3, **kwargs)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)
    for g, r in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(g, r, rtol=0, atol=1e-12)


def test_large_scores_do_not_overflow():
    # Scores of several hundred: exp() overflows without the running max; the online
    # rescaling must keep every intermediate finite and still agree with plain attention.
    rng = np.random.default_rng(2)
    q, k, v = _inputs(rng, (2,), 9, 11)
    out, grads, ref, ref_grads = _both(30 * q, 30 * k, v, block_size=2, causal=True)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)
    for g, r in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-9)


def test_explicit_scale():
    rng = np.random.default_rng(3)
    q, k, v = _inputs(rng, (2,), 6, 6)
    out, grads, ref, ref_grads = _both(q, k, v, block_size=4, scale=0.37, window=2)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)
    for g, r in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(g, r, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ the dense mask helper


def test_dense_mask_agrees_with_existing_helpers_and_the_window_rule():
    np.testing.assert_array_equal(ops.flash_attention_mask(6, 4, causal=True), ops.causal_mask(6, 4))
    lengths = np.array([3, 0, 5])
    np.testing.assert_array_equal(
        ops.flash_attention_mask(4, 5, key_lengths=lengths),
        np.broadcast_to(ops.padding_mask(lengths, 5), (3, 1, 4, 5)),
    )
    for causal, w in [(False, 1), (False, 3), (True, 1), (True, 3)]:
        mask = ops.flash_attention_mask(7, 9, causal=causal, window=w)
        expected = np.array(
            [[(abs(i - j) < w) and (j <= i or not causal) for j in range(9)] for i in range(7)]
        )
        np.testing.assert_array_equal(mask, expected)
        if causal:  # the last w keys: i − w < j <= i (fewer at the start)
            assert mask.sum(axis=1).tolist() == [min(i + 1, w) for i in range(7)]
    assert ops.flash_attention_mask(3, 2, key_lengths=[1, 2], ndim=3).shape == (2, 3, 2)
    assert ops.flash_attention_mask(3, 2).all()


# ------------------------------------------------------------------ the tile schedule


@pytest.mark.parametrize(
    ("Lq", "Lk", "block", "kwargs"),
    [
        (16, 16, 4, {}),
        (16, 16, 4, {"causal": True}),
        (17, 13, 3, {"causal": True}),
        (20, 20, 4, {"window": 3}),
        (20, 20, 4, {"causal": True, "window": 5}),
        (12, 3, 2, {"window": 2}),  # queries 4.. see no key at all
        (10, 10, 3, {"key_limit": 4}),
    ],
)
def test_schedule_skips_exactly_the_fully_masked_tiles(Lq, Lk, block, kwargs):
    key_limit = kwargs.pop("key_limit", None)
    keep = ops.flash_attention_mask(Lq, Lk, **kwargs)
    if key_limit is not None:
        keep = keep & (np.arange(Lk) < key_limit)
    tiles = {(t.q0, t.k0): t for t in fa.tile_schedule(Lq, Lk, block, key_limit=key_limit, **kwargs)}
    for q0, k0 in itertools.product(range(0, Lq, block), range(0, Lk, block)):
        tile_keep = keep[q0 : q0 + block, k0 : k0 + block]
        assert ((q0, k0) in tiles) == bool(tile_keep.any()), (q0, k0)
        if (q0, k0) in tiles:
            position_keep = ops.flash_attention_mask(Lq, Lk, **kwargs)[q0 : q0 + block, k0 : k0 + block]
            assert tiles[(q0, k0)].partial == (not position_keep.all()), (q0, k0)


def test_causal_and_window_skip_most_tiles():
    n_tiles = 16 * 16
    assert len(list(fa.tile_schedule(1024, 1024, 64))) == n_tiles
    assert len(list(fa.tile_schedule(1024, 1024, 64, causal=True))) == 16 * 17 // 2
    assert len(list(fa.tile_schedule(1024, 1024, 64, window=64))) == 16 + 2 * 15  # a band of 3


# ------------------------------------------------------------------ masked rows and the cache


def test_fully_masked_rows_give_zeros_and_zero_gradients_without_warnings():
    rng = np.random.default_rng(4)
    q, k, v = _inputs(rng, (3, 2), 12, 3)
    with np.errstate(all="raise"):  # any 0/0, inf − inf or log(0) would raise here
        out, cache = ops.flash_attention_forward(q, k, v, window=2, key_lengths=[3, 0, 2], block_size=2)
        dq, dk, dv = ops.flash_attention_backward(np.ones_like(out), cache)
    # batch row 1 has no keys; in every row, queries i >= Lk − 1 + 2 = 4 are too far from all keys.
    assert np.all(out[1] == 0) and np.all(dq[1] == 0) and np.all(dk[1] == 0) and np.all(dv[1] == 0)
    assert np.all(out[:, :, 4:] == 0) and np.all(dq[:, :, 4:] == 0)
    assert np.all(cache.lse[1] == -np.inf)
    assert np.all(dk[2, :, 2:] == 0) and np.all(dv[2, :, 2:] == 0)  # padding keys of row 2
    for x in (out, dq, dk, dv):
        assert np.all(np.isfinite(x))


def test_cache_holds_no_score_matrix():
    rng = np.random.default_rng(5)
    Lq, Lk = 40, 48
    q, k, v = _inputs(rng, (2, 3), Lq, Lk)
    _, cache = ops.flash_attention_forward(q, k, v, causal=True, block_size=8)
    arrays = [x for x in cache if isinstance(x, np.ndarray)]
    assert sum(a.size for a in arrays) == q.size + k.size + v.size + 2 * 3 * Lq * 3 + 2 * 3 * Lq
    assert cache.lse.shape == (2, 3, Lq)
    for a in arrays:
        assert a.size <= 2 * 3 * max(Lq, Lk) * 4  # O(L·d), never Lq·Lk = 1920 per head


# ------------------------------------------------------------------ gradient checks


def _check_inputs(seed=6):
    rng = np.random.default_rng(seed)
    q, k, v = _inputs(rng, (2, 2), 7, 6, d_k=3, d_v=2)
    return {"q": q, "k": k, "v": v}


CHECK_KWARGS = {"causal": True, "window": 3, "key_lengths": np.array([6, 0]), "block_size": 3}


def test_gradcheck_passes():
    report = check_op(
        ops.flash_attention_forward, ops.flash_attention_backward, _check_inputs(), kwargs=CHECK_KWARGS
    )
    assert report.passed, str(report)
    assert report.max_rel_err < 1e-6


def test_gradcheck_rejects_a_backward_without_the_D_term(monkeypatch):
    # dS = P ∘ (dP − D): dropping D (the softmax's row-sum term) is the classic mistake.
    monkeypatch.setattr(fa, "_rowsum_dout_out", lambda d_out, out: np.zeros(out.shape[:-1] + (1,)))
    report = check_op(
        ops.flash_attention_forward, ops.flash_attention_backward, _check_inputs(), kwargs=CHECK_KWARGS
    )
    assert not report.passed
    assert [t.passed for t in report.tensors] == [False, False, True]  # dv does not use D


def test_gradcheck_rejects_a_backward_that_forgets_the_scale():
    def backward_without_scale(d_out, cache):
        dq, dk, dv = ops.flash_attention_backward(d_out, cache)
        return dq / cache.scale, dk / cache.scale, dv  # as if s = q kᵀ had no 1/√d_k

    report = check_op(
        ops.flash_attention_forward, backward_without_scale, _check_inputs(), kwargs=CHECK_KWARGS
    )
    assert [t.passed for t in report.tensors] == [False, False, True]


def test_gradcheck_rejects_a_backward_that_recomputes_weights_without_the_mask():
    def backward_ignoring_causal(d_out, cache):
        return ops.flash_attention_backward(d_out, cache._replace(causal=False))

    report = check_op(
        ops.flash_attention_forward, backward_ignoring_causal, _check_inputs(), kwargs=CHECK_KWARGS
    )
    assert not report.passed


def test_gradcheck_rejects_a_backward_with_a_stale_log_sum_exp():
    def backward_with_shifted_lse(d_out, cache):
        return ops.flash_attention_backward(d_out, cache._replace(lse=cache.lse + 0.05))

    report = check_op(
        ops.flash_attention_forward, backward_with_shifted_lse, _check_inputs(), kwargs=CHECK_KWARGS
    )
    assert not report.passed


# ------------------------------------------------------------------ float32 and bad arguments


def test_float32_in_float32_out():
    rng = np.random.default_rng(7)
    q, k, v = _inputs(rng, (2, 2), 33, 33)
    kwargs = {"causal": True, "window": 9, "key_lengths": [30, 12], "block_size": 8}
    out32, cache = ops.flash_attention_forward(
        q.astype(np.float32), k.astype(np.float32), v.astype(np.float32), **kwargs
    )
    grads32 = ops.flash_attention_backward(np.ones_like(out32), cache)
    out64, cache64 = ops.flash_attention_forward(q, k, v, **kwargs)
    grads64 = ops.flash_attention_backward(np.ones_like(out64), cache64)
    assert out32.dtype == np.float32 and cache.lse.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads32)
    np.testing.assert_allclose(out32, out64, atol=1e-5)
    for g32, g64 in zip(grads32, grads64, strict=True):
        np.testing.assert_allclose(g32, g64, atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"window": 0}, ValueError, "window: expected a positive integer"),
        ({"window": -2}, ValueError, "window"),
        ({"window": 2.5}, TypeError, "window"),
        ({"window": True}, TypeError, "window"),
        ({"block_size": 0}, ValueError, "block_size: expected a positive integer"),
        ({"block_size": "8"}, TypeError, "block_size"),
        ({"causal": "yes"}, TypeError, "causal"),
        ({"key_lengths": [3, 3, 3]}, ValueError, r"key_lengths: expected 2 lengths .* got shape \(3,\)"),
        ({"key_lengths": [3.0, 2.0]}, TypeError, "key_lengths: expected a 1-D integer array.*float64"),
        ({"key_lengths": np.array([[3, 2]])}, TypeError, "key_lengths.*shape"),
        ({"key_lengths": [3, 7]}, ValueError, r"key_lengths: expected values in \[0, 6\]"),
        ({"key_lengths": [-1, 2]}, ValueError, "key_lengths"),
        ({"scale": "0.5"}, TypeError, "scale"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    q, k, v = _inputs(np.random.default_rng(8), (2, 3), 5, 6)
    with pytest.raises(error, match=match):
        ops.flash_attention_forward(q, k, v, **kwargs)


def test_bad_shapes_and_dtypes():
    rng = np.random.default_rng(9)
    q, k, v = _inputs(rng, (2, 3), 5, 6)
    with pytest.raises(ValueError, match="k: expected last dimension 4"):
        ops.flash_attention_forward(q, k[..., :3], v)
    with pytest.raises(ValueError, match="v: expected 6 positions"):
        ops.flash_attention_forward(q, k, v[..., :5, :])
    with pytest.raises(ValueError, match=r"k: expected leading \(batch/head\) dimensions \(2, 3\)"):
        ops.flash_attention_forward(q, k[:1], v[:1])
    with pytest.raises(TypeError, match="q: expected dtype float32 or float64"):
        ops.flash_attention_forward(q.astype(int), k, v)
    with pytest.raises(TypeError, match="expected one dtype for q, k, v"):
        ops.flash_attention_forward(q.astype(np.float32), k, v)
    with pytest.raises(ValueError, match="key_lengths: needs a batch dimension"):
        ops.flash_attention_forward(q[0, 0], k[0, 0], v[0, 0], key_lengths=[3])
    out, cache = ops.flash_attention_forward(q, k, v)
    with pytest.raises(ValueError, match=r"d_out: expected shape \(2, 3, 5, 3\)"):
        ops.flash_attention_backward(out[..., :2], cache)
    with pytest.raises(TypeError, match="d_out: expected dtype float64"):
        ops.flash_attention_backward(out.astype(np.float32), cache)
    with pytest.raises(ValueError, match="Lq: expected a positive integer"):
        ops.flash_attention_mask(0, 3)
