"""ops.attention: softmax(Q Kᵀ · scale) V (§4.1) and the causal / padding masks (True = may attend)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmt_numpy.gradcheck import check_op
from mmt_numpy.ops import (
    SoftmaxCache,
    attention_backward,
    attention_forward,
    causal_mask,
    padding_mask,
    softmax_backward,
    softmax_forward,
)


def _qkv(rng, lead=(2, 3), Lq=4, Lk=5, d_k=3, d_v=2):
    """q (*lead, Lq, d_k), k (*lead, Lk, d_k), v (*lead, Lk, d_v)."""
    return {
        "q": rng.standard_normal((*lead, Lq, d_k)),
        "k": rng.standard_normal((*lead, Lk, d_k)),
        "v": rng.standard_normal((*lead, Lk, d_v)),
    }


def _random_mask_with_an_empty_row(rng, shape):
    mask = rng.random(shape) < 0.6
    mask[(0,) * (len(shape) - 2) + (1,)] = False  # query 1 of the first batch/head sees nothing
    return mask


# (lead dims, Lq, Lk, d_k, d_v, mask kind, scale)
CONFIGS = {
    "2-D (Lq, d), Lq < Lk": ((), 3, 4, 2, 3, None, None),
    "3-D (B, L, d), Lq > Lk": ((2,), 5, 3, 4, 2, None, None),
    "(B, H, L, d), Lq != Lk": ((2, 3), 4, 5, 3, 2, None, None),
    "causal square": ((2, 2), 4, 4, 3, 3, "causal", None),
    "causal Lq < Lk (top-left)": ((2, 2), 3, 5, 3, 2, "causal", None),
    "causal Lq > Lk (top-left)": ((2, 2), 5, 3, 3, 2, "causal", None),
    "padding, one row of length 0": ((2, 2), 3, 4, 3, 2, "padding", None),
    "per-head mask, a fully masked row": ((2, 3), 4, 5, 3, 2, "random", None),
    "scale 0.3": ((2, 2), 3, 4, 3, 2, None, 0.3),
    "causal and scale 1.7": ((1, 2), 4, 4, 2, 2, "causal", 1.7),
}


@pytest.mark.parametrize("config", list(CONFIGS), ids=list(CONFIGS))
def test_gradcheck(rng, config):
    lead, Lq, Lk, d_k, d_v, mask_kind, scale = CONFIGS[config]
    kwargs: dict = {"scale": scale}
    if mask_kind == "causal":
        kwargs["mask"] = causal_mask(Lq, Lk)
    elif mask_kind == "padding":
        kwargs["mask"] = padding_mask([Lk - 1, 0], Lk)
    elif mask_kind == "random":
        kwargs["mask"] = _random_mask_with_an_empty_row(rng, (*lead, Lq, Lk))
    report = check_op(attention_forward, attention_backward, _qkv(rng, lead, Lq, Lk, d_k, d_v), kwargs=kwargs)
    assert report.passed, report
    assert [t.name for t in report.tensors] == ["q", "k", "v"]


# Negative controls: Lq == Lk and d_k == d_v == 4 so that every broken gradient keeps its shape.


def _dq_without_the_scale(d_out, cache):
    dq, dk, dv = attention_backward(d_out, cache)
    return dq / cache.scale, dk, dv  # the 1/√d_k forgotten in dq


def _no_scale_anywhere(d_out, cache):
    dq, dk, dv = attention_backward(d_out, cache)
    return dq / cache.scale, dk / cache.scale, dv


def _dk_without_the_transpose(d_out, cache):
    dq, _, dv = attention_backward(d_out, cache)
    d_scores = softmax_backward(d_out @ cache.v.swapaxes(-1, -2), SoftmaxCache(cache.weights))
    return dq, (d_scores @ cache.q) * cache.scale, dv


def _dv_without_the_transpose(d_out, cache):
    dq, dk, _ = attention_backward(d_out, cache)
    return dq, dk, cache.weights @ d_out


def _softmax_jacobian_dropped(d_out, cache):
    _, _, dv = attention_backward(d_out, cache)
    d_scores = cache.weights * (d_out @ cache.v.swapaxes(-1, -2))  # y ⊙ g, missing - y Σ g y
    return (d_scores @ cache.k) * cache.scale, (d_scores.swapaxes(-1, -2) @ cache.q) * cache.scale, dv


def _backward_forgets_the_mask(d_out, cache):
    unmasked, _ = softmax_forward((cache.q @ cache.k.swapaxes(-1, -2)) * cache.scale)
    return attention_backward(d_out, cache._replace(weights=unmasked))


def _dk_off_by_a_tenth_of_a_percent(d_out, cache):
    dq, dk, dv = attention_backward(d_out, cache)
    return dq, dk * 1.001, dv


@pytest.mark.parametrize(
    "broken",
    [
        _dq_without_the_scale,
        _no_scale_anywhere,
        _dk_without_the_transpose,
        _dv_without_the_transpose,
        _softmax_jacobian_dropped,
        _backward_forgets_the_mask,
        _dk_off_by_a_tenth_of_a_percent,
    ],
)
def test_checker_rejects_a_broken_backward(rng, broken):
    inputs = _qkv(rng, (2, 2), Lq=4, Lk=4, d_k=4, d_v=4)
    kwargs = {"mask": causal_mask(4)}
    assert check_op(attention_forward, attention_backward, inputs, kwargs=kwargs).passed
    assert not check_op(attention_forward, broken, inputs, kwargs=kwargs).passed


# --- masks -------------------------------------------------------------------------------------


def test_causal_mask_is_lower_triangular_and_top_left_aligned():
    np.testing.assert_array_equal(causal_mask(3), np.tril(np.ones((3, 3), dtype=bool)))
    np.testing.assert_array_equal(causal_mask(2, 4), [[1, 0, 0, 0], [1, 1, 0, 0]])
    np.testing.assert_array_equal(causal_mask(3, 2), [[1, 0], [1, 1], [1, 1]])
    assert causal_mask(3).dtype == np.bool_


def test_padding_mask_shape_and_values():
    mask = padding_mask(np.array([3, 1, 0]), 4)
    assert mask.shape == (3, 1, 1, 4) and mask.dtype == np.bool_
    np.testing.assert_array_equal(mask[:, 0, 0], [[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])


def test_mask_helpers_refuse_bad_arguments():
    with pytest.raises(ValueError, match=r"Lq: expected a positive integer, got 0"):
        causal_mask(0)
    with pytest.raises(TypeError, match=r"Lk: expected a positive integer, got float 2.5"):
        causal_mask(3, 2.5)
    with pytest.raises(TypeError, match=r"lengths: expected a 1-D integer array .*float64.*\(2,\)"):
        padding_mask(np.array([1.0, 2.0]), 4)
    with pytest.raises(TypeError, match=r"lengths: .*shape \(1, 2\)"):
        padding_mask(np.array([[1, 2]]), 4)
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, 4\], got \[5, 2\]"):
        padding_mask([5, 2], 4)


# --- what the masks do to the output -----------------------------------------------------------


def test_causal_output_ignores_later_positions(rng):
    qkv = _qkv(rng, (2, 2), Lq=5, Lk=5)
    out, _ = attention_forward(**qkv, mask=causal_mask(5))
    qkv["k"][..., 3:, :] += 10.0  # change keys and values of positions 3 and 4 only
    qkv["v"][..., 3:, :] -= 10.0
    changed, _ = attention_forward(**qkv, mask=causal_mask(5))
    np.testing.assert_array_equal(changed[..., :3, :], out[..., :3, :])
    assert not np.allclose(changed[..., 3:, :], out[..., 3:, :])


def test_padding_keys_have_no_effect_and_get_no_gradient(rng):
    qkv = _qkv(rng, (2, 3), Lq=4, Lk=5)
    mask = padding_mask([5, 3], 5)
    out, cache = attention_forward(**qkv, mask=mask)
    qkv["k"][1, :, 3:] = 1e3  # batch row 1's padding keys and values
    qkv["v"][1, :, 3:] = -1e3  # (finite garbage: a NaN value would still leak through 0 · NaN)
    out2, _ = attention_forward(**qkv, mask=mask)
    np.testing.assert_array_equal(out2, out)
    _, dk, dv = attention_backward(rng.standard_normal(out.shape), cache)
    np.testing.assert_array_equal(dk[1, :, 3:], 0.0)
    np.testing.assert_array_equal(dv[1, :, 3:], 0.0)


def test_attention_weights_in_the_cache(rng):
    mask = _random_mask_with_an_empty_row(rng, (2, 3, 4, 5))
    _, cache = attention_forward(**_qkv(rng), mask=mask)
    weights = cache[3]
    assert weights.shape == (2, 3, 4, 5)
    assert np.all(weights[~mask] == 0.0)
    expected = np.where(mask.any(axis=-1), 1.0, 0.0)
    np.testing.assert_allclose(weights.sum(axis=-1), expected, rtol=1e-14, atol=0)


def test_default_scale_is_one_over_sqrt_dk(rng):
    qkv = _qkv(rng, d_k=9)
    default, _ = attention_forward(**qkv)
    explicit, _ = attention_forward(**qkv, scale=1 / 3)
    unscaled, _ = attention_forward(**qkv, scale=1.0)
    np.testing.assert_allclose(default, explicit, rtol=1e-14)
    assert not np.allclose(default, unscaled)


# --- numerics ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scores_of_1e4_stay_finite(dtype):
    q = np.array([[100.0, 0.0], [-100.0, 0.0]], dtype=dtype)
    k = np.array([[100.0, 0.0], [-100.0, 0.0], [0.0, 100.0]], dtype=dtype)  # scores ±1e4 and 0
    v = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=dtype)
    out, cache = attention_forward(q, k, v, scale=1.0)
    np.testing.assert_allclose(out, [[1.0, 2.0], [3.0, 4.0]])  # each query picks its matching key
    grads = attention_backward(np.ones_like(out), cache)
    assert all(np.isfinite(g).all() for g in grads)


def test_a_fully_masked_row_gives_zero_output_and_zero_gradients(rng):
    qkv = _qkv(rng)
    mask = _random_mask_with_an_empty_row(rng, (2, 3, 4, 5))  # query 1 of (batch 0, head 0)
    out, cache = attention_forward(**qkv, mask=mask)
    d_out = rng.standard_normal(out.shape)
    dq, dk, dv = attention_backward(d_out, cache)
    assert np.isfinite(out).all() and all(np.isfinite(g).all() for g in (dq, dk, dv))
    np.testing.assert_array_equal(out[0, 0, 1], 0.0)
    np.testing.assert_array_equal(dq[0, 0, 1], 0.0)
    # That query's upstream gradient reaches no key and no value.
    d_out[0, 0, 1] = 1e6
    _, dk2, dv2 = attention_backward(d_out, cache)
    np.testing.assert_array_equal(dk2, dk)
    np.testing.assert_array_equal(dv2, dv)


def test_float32_in_float32_out_and_agrees_with_float64(rng):
    qkv64 = _qkv(rng)
    mask = _random_mask_with_an_empty_row(rng, (2, 3, 4, 5))
    out64, cache64 = attention_forward(**qkv64, mask=mask)
    out32, cache32 = attention_forward(**{n: a.astype(np.float32) for n, a in qkv64.items()}, mask=mask)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-5, atol=1e-6)
    d_out = rng.standard_normal(out64.shape)
    for g32, g64 in zip(
        attention_backward(d_out.astype(np.float32), cache32), attention_backward(d_out, cache64), strict=True
    ):
        assert g32.dtype == np.float32
        np.testing.assert_allclose(g32, g64, rtol=1e-5, atol=1e-6)


# --- bad input ---------------------------------------------------------------------------------


_q, _k, _v = _qkv(np.random.default_rng(0), (2,), Lq=3, Lk=5, d_k=4, d_v=2).values()

# (what is wrong, exception, message pattern, call) for each kind of bad input.
BAD_CALLS = [
    (
        "q 1-D",
        ValueError,
        r"q: expected at least 2 dimensions, got shape \(4,\)",
        lambda: attention_forward(_q[0, 0], _k, _v),
    ),
    (
        "k wrong d_k",
        ValueError,
        r"k: expected last dimension 4 \(d_k of q \(2, 3, 4\)\), got shape \(2, 5, 3\)",
        lambda: attention_forward(_q, _k[..., :3], _v),
    ),
    (
        "v wrong Lk",
        ValueError,
        r"v: expected 5 positions \(Lk of k \(2, 5, 4\)\), got shape \(2, 4, 2\)",
        lambda: attention_forward(_q, _k, _v[:, :4]),
    ),
    (
        "k wrong batch",
        ValueError,
        r"k: expected leading \(batch/head\) dimensions \(2,\) .*got shape \(1, 5, 4\)",
        lambda: attention_forward(_q, _k[:1], _v[:1]),
    ),
    (
        "mask not bool",
        TypeError,
        r"mask: expected dtype bool .*got float64",
        lambda: attention_forward(_q, _k, _v, mask=np.ones((3, 5))),
    ),
    (
        "mask not broadcasting",
        ValueError,
        r"mask: expected a shape that broadcasts to \(2, 3, 5\), got \(5, 3\)",
        lambda: attention_forward(_q, _k, _v, mask=np.ones((5, 3), dtype=bool)),
    ),
    (
        "mixed float32/float64",
        TypeError,
        r"q, k, v.*q=float32, k=float64, v=float64",
        lambda: attention_forward(_q.astype(np.float32), _k, _v),
    ),
    (
        "integer v",
        TypeError,
        r"v: expected dtype float32 or float64, got int64",
        lambda: attention_forward(_q, _k, np.ones((2, 5, 2), dtype=np.int64)),
    ),
]


@pytest.mark.parametrize(("what", "error", "pattern", "call"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_input_is_named(what, error, pattern, call):
    with pytest.raises(error, match=pattern):
        call()


# --- parity with PyTorch -----------------------------------------------------------------------


def _torch_sdpa(torch_autograd, qkv, upstream, **sdpa_kwargs):
    import torch.nn.functional as F

    return torch_autograd(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **sdpa_kwargs), list(qkv.values()), upstream
    )


def _assert_same(ours_out, ours_grads, theirs):
    t_out, t_grads = theirs
    np.testing.assert_allclose(ours_out, t_out, rtol=1e-10, atol=1e-10)
    for g, t_g in zip(ours_grads, t_grads, strict=True):
        np.testing.assert_allclose(g, t_g, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("scale", [None, 0.3])
def test_matches_torch_sdpa_without_a_mask(rng, torch_autograd, scale):
    qkv = _qkv(rng, (2, 3), Lq=4, Lk=6, d_k=5, d_v=3)
    out, cache = attention_forward(**qkv, scale=scale)
    upstream = rng.standard_normal(out.shape)
    _assert_same(
        out, attention_backward(upstream, cache), _torch_sdpa(torch_autograd, qkv, upstream, scale=scale)
    )


def test_matches_torch_sdpa_with_a_boolean_mask(rng, torch_autograd):
    import torch

    qkv = _qkv(rng, (2, 3), Lq=4, Lk=6)
    mask = rng.random((2, 1, 4, 6)) < 0.5  # broadcast over heads; True = may attend in both
    mask[..., 0] = True  # no fully masked row here (see the test below)
    out, cache = attention_forward(**qkv, mask=mask)
    upstream = rng.standard_normal(out.shape)
    _assert_same(
        out,
        attention_backward(upstream, cache),
        _torch_sdpa(torch_autograd, qkv, upstream, attn_mask=torch.as_tensor(mask)),
    )


@pytest.mark.parametrize(("Lq", "Lk"), [(4, 4), (3, 6), (6, 3)])
def test_causal_mask_matches_torch_is_causal(rng, torch_autograd, Lq, Lk):
    qkv = _qkv(rng, (2, 2), Lq=Lq, Lk=Lk)
    out, cache = attention_forward(**qkv, mask=causal_mask(Lq, Lk))
    upstream = rng.standard_normal(out.shape)
    _assert_same(
        out, attention_backward(upstream, cache), _torch_sdpa(torch_autograd, qkv, upstream, is_causal=True)
    )


def test_fully_masked_row_differs_from_the_textbook_formula(rng, torch_autograd):
    """Documents the one deliberate difference from the masked_fill(-inf) recipe.

    ``softmax(scores.masked_fill(~mask, -inf))`` gives NaN for a query with no allowed key
    (exp(-inf) / 0); we give a zero row and zero gradients.  Recent torch SDPA kernels also
    return 0 there, older ones NaN: either way the other rows must agree with ours.
    """
    import torch

    qkv = _qkv(rng, (1, 1), Lq=3, Lk=4, d_k=4, d_v=2)
    mask = np.ones((3, 4), dtype=bool)
    mask[1] = False
    out, cache = attention_forward(**qkv, mask=mask)
    upstream = rng.standard_normal(out.shape)
    dq, dk, dv = attention_backward(upstream, cache)
    np.testing.assert_array_equal(out[..., 1, :], 0.0)
    np.testing.assert_array_equal(dq[..., 1, :], 0.0)

    keep = torch.as_tensor(mask)

    def textbook(q, k, v):
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        return torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1) @ v

    t_out, _ = torch_autograd(textbook, list(qkv.values()), upstream)
    assert np.isnan(t_out[..., 1, :]).all()
    np.testing.assert_allclose(out[..., [0, 2], :], t_out[..., [0, 2], :], rtol=1e-10, atol=1e-10)

    s_out, (s_dq, s_dk, s_dv) = _torch_sdpa(torch_autograd, qkv, upstream, attn_mask=keep)
    empty_row = s_out[..., 1, :]
    assert np.isnan(empty_row).all() or np.all(empty_row == 0.0)
    np.testing.assert_allclose(out[..., [0, 2], :], s_out[..., [0, 2], :], rtol=1e-10, atol=1e-10)
    if np.all(empty_row == 0.0):  # this torch version agrees with us everywhere
        for ours, theirs in ((dq, s_dq), (dk, s_dk), (dv, s_dv)):
            np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10)
