"""Property-based tests of the ops with the most shape logic (hypothesis).

Hand-picked shapes test the cases someone thought of; here hypothesis draws them: batch and
head counts, query and key lengths (including no keys at all), widths, masks (causal,
sliding windows, per-row key lengths, random boolean masks), block sizes and magnitudes.
Three implementations must agree on every draw:

* a plain reference written for this file from the formula alone (dense scores, masked
  entries left out of the softmax, a query with no visible key giving zeros);
* ``ops.attention_forward`` / ``attention_backward`` (dense, the §4.1 op);
* ``ops.flash_attention_forward`` / ``flash_attention_backward`` (blocked, online softmax).

Layer norm is checked over random leading shapes against its formula, and against itself
on the same rows flattened to ``(N, D)`` (the leading shape must not matter).

Each test is capped at a few dozen examples and no deadline, so the file runs in seconds.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mmt_numpy import ops

FEW = settings(max_examples=60, deadline=None)


# ----------------------------------------------------------------------------- a plain reference


def reference_attention(q, k, v, keep, scale):
    """softmax over the visible keys of (q kᵀ · scale), times v; zeros where nothing is visible.

    ``keep`` broadcasts to ``(..., Lq, Lk)``.  Written without the ops' tricks (no in-place
    softmax, no masked max), in float64.
    """
    scores = np.einsum("...qd,...kd->...qk", q.astype(np.float64), k.astype(np.float64)) * scale
    keep = np.broadcast_to(keep, scores.shape)
    if scores.shape[-1] == 0:
        return np.zeros((*scores.shape[:-1], v.shape[-1]))
    top = np.max(np.where(keep, scores, -np.inf), axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    exp = np.where(keep, np.exp(scores - top), 0.0)
    total = exp.sum(axis=-1, keepdims=True)
    weights = np.divide(exp, total, out=np.zeros_like(exp), where=total > 0)
    return weights @ v.astype(np.float64)


def mask_of(Lq, Lk, B, causal, window, key_lengths):
    """``(B, 1, Lq, Lk)`` True = may attend, for the mask description flash attention takes."""
    i, j = np.arange(Lq)[:, None], np.arange(Lk)[None, :]
    keep = np.ones((Lq, Lk), dtype=bool)
    if causal:
        keep &= j <= i
    if window is not None:
        keep &= np.abs(i - j) < window
    keep = np.broadcast_to(keep, (B, 1, Lq, Lk))
    if key_lengths is not None:
        keep = keep & (j < np.asarray(key_lengths)[:, None, None, None])
    return keep


# ----------------------------------------------------------------------------- strategies


@st.composite
def attention_problems(draw):
    """Shapes, a mask description, a block size, a magnitude and a seed."""
    B = draw(st.integers(1, 3))
    H = draw(st.integers(1, 3))
    Lq = draw(st.integers(1, 9))
    Lk = draw(st.integers(0, 9))
    d = draw(st.integers(1, 6))
    dv = draw(st.integers(1, 5))
    causal = draw(st.booleans())
    window = draw(st.one_of(st.none(), st.integers(1, 6)))
    key_lengths = draw(st.one_of(st.none(), st.lists(st.integers(0, Lk), min_size=B, max_size=B)))
    block_size = draw(st.integers(1, 10))
    magnitude = draw(st.sampled_from([1e-3, 1.0, 30.0]))  # 30: scores in the hundreds, softmax saturates
    scale = draw(st.one_of(st.none(), st.floats(0.05, 2.0)))
    seed = draw(st.integers(0, 2**16))
    return B, H, Lq, Lk, d, dv, causal, window, key_lengths, block_size, magnitude, scale, seed


def _tensors(B, H, Lq, Lk, d, dv, magnitude, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    q = (magnitude * rng.standard_normal((B, H, Lq, d))).astype(dtype)
    k = rng.standard_normal((B, H, Lk, d)).astype(dtype)
    v = rng.standard_normal((B, H, Lk, dv)).astype(dtype)
    d_out = rng.standard_normal((B, H, Lq, dv)).astype(dtype)
    return q, k, v, d_out


# ----------------------------------------------------------------------------- attention


@FEW
@given(attention_problems())
def test_dense_and_blocked_attention_agree_with_the_reference(problem) -> None:
    B, H, Lq, Lk, d, dv, causal, window, key_lengths, block_size, magnitude, scale, seed = problem
    q, k, v, d_out = _tensors(B, H, Lq, Lk, d, dv, magnitude, seed)
    keep = mask_of(Lq, Lk, B, causal, window, key_lengths)
    used_scale = 1.0 / np.sqrt(d) if scale is None else scale
    expected = reference_attention(q, k, v, keep, used_scale)

    dense, dense_cache = ops.attention_forward(q, k, v, mask=keep, scale=scale)
    blocked, blocked_cache = ops.flash_attention_forward(
        q, k, v, causal=causal, window=window, key_lengths=key_lengths, scale=scale, block_size=block_size
    )
    np.testing.assert_allclose(dense, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(blocked, expected, rtol=1e-10, atol=1e-12)
    # a query that sees no key: exactly zero in both
    blind = ~np.broadcast_to(keep, (B, H, Lq, Lk)).any(axis=-1)
    assert not dense[blind].any() and not blocked[blind].any()

    dense_grads = ops.attention_backward(d_out, dense_cache)
    blocked_grads = ops.flash_attention_backward(d_out, blocked_cache)
    for name, a, b, x in zip(("dq", "dk", "dv"), dense_grads, blocked_grads, (q, k, v), strict=True):
        assert a.shape == b.shape == x.shape, name
        assert np.all(np.isfinite(a)) and np.all(np.isfinite(b)), name
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-10 * max(1.0, magnitude), err_msg=name)


@FEW
@given(attention_problems(), st.floats(0.1, 0.9))
def test_dense_attention_takes_any_boolean_mask(problem, density) -> None:
    """A random mask (rows fully masked included) against the reference; gradients stay finite
    and masked keys get nothing."""
    B, H, Lq, Lk, d, dv, _, _, _, _, magnitude, scale, seed = problem
    q, k, v, d_out = _tensors(B, H, Lq, Lk, d, dv, magnitude, seed)
    rng = np.random.default_rng(seed + 1)
    shapes = [(B, H, Lq, Lk), (B, 1, Lq, Lk), (Lq, Lk), (B, 1, 1, Lk)]
    keep = rng.random(shapes[rng.integers(len(shapes))]) < density
    used_scale = 1.0 / np.sqrt(d) if scale is None else scale
    out, cache = ops.attention_forward(q, k, v, mask=keep, scale=scale)
    np.testing.assert_allclose(out, reference_attention(q, k, v, keep, used_scale), rtol=1e-10, atol=1e-12)
    dq, dk, dv_ = ops.attention_backward(d_out, cache)
    assert all(np.all(np.isfinite(g)) for g in (dq, dk, dv_))
    unseen = ~np.broadcast_to(keep, (B, H, Lq, Lk)).any(axis=-2)  # (B, H, Lk): keys no query sees
    assert not dk[unseen].any() and not dv_[unseen].any()


@FEW
@given(attention_problems())
def test_float32_attention_stays_float32_and_near_float64(problem) -> None:
    B, H, Lq, Lk, d, dv, causal, window, key_lengths, block_size, _, scale, seed = problem
    q, k, v, _ = _tensors(B, H, Lq, Lk, d, dv, 1.0, seed, dtype=np.float32)
    keep = mask_of(Lq, Lk, B, causal, window, key_lengths)
    expected = reference_attention(q, k, v, keep, 1.0 / np.sqrt(d) if scale is None else scale)
    dense, _ = ops.attention_forward(q, k, v, mask=keep, scale=scale)
    blocked, _ = ops.flash_attention_forward(
        q, k, v, causal=causal, window=window, key_lengths=key_lengths, scale=scale, block_size=block_size
    )
    for out in (dense, blocked):
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- layer norm


@st.composite
def layernorm_problems(draw):
    leading = tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=3)))
    D = draw(st.integers(1, 9))
    eps = draw(st.sampled_from([1e-5, 1e-3, 0.5]))
    offset = draw(st.sampled_from([0.0, 1e3]))  # a large common offset: the mean must be taken out first
    spread = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    constant_row = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return leading, D, eps, offset, spread, constant_row, seed


@FEW
@given(layernorm_problems())
def test_layer_norm_over_any_leading_shape(problem) -> None:
    leading, D, eps, offset, spread, constant_row, seed = problem
    rng = np.random.default_rng(seed)
    x = offset + spread * rng.standard_normal((*leading, D))
    if constant_row:
        x.reshape(-1, D)[0] = offset  # x̂ = 0 there, not 0/0
    gamma, beta = rng.standard_normal(D), rng.standard_normal(D)
    d_out = rng.standard_normal(x.shape)

    out, cache = ops.layernorm_forward(x, gamma, beta, eps=eps)
    centred = x - x.mean(axis=-1, keepdims=True)
    expected = centred / np.sqrt((centred**2).mean(axis=-1, keepdims=True) + eps) * gamma + beta
    assert out.shape == x.shape
    np.testing.assert_allclose(out, expected, rtol=1e-9, atol=1e-9)

    # the same rows as (N, D): the leading shape changes nothing, forward or backward
    flat_out, flat_cache = ops.layernorm_forward(x.reshape(-1, D), gamma, beta, eps=eps)
    np.testing.assert_array_equal(flat_out.reshape(x.shape), out)
    dx, dgamma, dbeta = ops.layernorm_backward(d_out, cache)
    flat_dx, flat_dgamma, flat_dbeta = ops.layernorm_backward(d_out.reshape(-1, D), flat_cache)
    np.testing.assert_allclose(dx, flat_dx.reshape(x.shape), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dgamma, flat_dgamma, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dbeta, flat_dbeta, rtol=1e-12, atol=1e-12)
    assert np.all(np.isfinite(dx))
    # each row of dx sums to 0: shifting a row by a constant does not change its output
    np.testing.assert_allclose(dx.sum(axis=-1), 0.0, atol=1e-8 * max(1.0, np.abs(dx).max()))


def test_layer_norm_of_one_feature_is_beta() -> None:
    """The smallest width hypothesis reaches, pinned: with D = 1 every row is its own mean."""
    out, _ = ops.layernorm_forward(np.arange(3.0).reshape(3, 1), np.full(1, 2.0), np.full(1, 0.5))
    np.testing.assert_array_equal(out, 0.5)
