"""ALiBi: the paper's slopes, the dense bias, and blocked attention that builds it per tile.

* slopes: 2^(−8h/H) for powers of two; the paper's interleaving rule otherwise;
* dense attention with ``bias=`` equals the softmax written out;
* blocked attention with ``alibi=slopes`` equals dense attention with the explicit bias to
  1e-12 in float64, forward and all three gradients, causal and bidirectional, with every
  other mask kind, Lq != Lk and tiles that do and do not divide the lengths;
* finite differences accept the backward and reject one that forgets the bias;
* PyTorch's scaled_dot_product_attention with the same float mask agrees to 1e-10;
* bad slopes and bad biases raise errors that name the argument.
"""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy import ops
from mmt_numpy.gradcheck import check_op
from mmt_numpy.ops.activations import softmax_forward


def test_slopes_for_powers_of_two_are_the_geometric_rule():
    for H in (1, 2, 4, 8, 16):
        expected = 2.0 ** (-8.0 * np.arange(1, H + 1) / H)
        np.testing.assert_allclose(ops.alibi_slopes(H), expected, rtol=1e-15)
    np.testing.assert_allclose(ops.alibi_slopes(8), [1 / 2**h for h in range(1, 9)])


def test_slopes_for_other_head_counts_interleave_the_next_power():
    # 6 heads: the 4-head slopes, then slopes 1 and 3 of the 8-head rule (2^-1, 2^-3).
    np.testing.assert_allclose(ops.alibi_slopes(6), [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3])
    # 12 heads: the 8-head slopes, then the odd-numbered slopes of the 16-head rule 2^(-h/2).
    np.testing.assert_allclose(ops.alibi_slopes(12)[8:], 2.0 ** -np.array([0.5, 1.5, 2.5, 3.5]))
    for H in (3, 5, 7, 12, 20):
        slopes = ops.alibi_slopes(H)
        assert slopes.shape == (H,) and len(set(slopes.tolist())) == H  # all distinct
        assert np.all((slopes > 0) & (slopes < 1))
    with pytest.raises(ValueError, match="num_heads: expected a positive integer"):
        ops.alibi_slopes(0)


def test_dense_bias_is_minus_slope_times_distance():
    slopes = ops.alibi_slopes(2)
    bias = ops.alibi_bias(3, 4, slopes)
    assert bias.shape == (2, 3, 4) and bias.dtype == np.float64
    for h in range(2):
        for i in range(3):
            for j in range(4):
                assert bias[h, i, j] == -slopes[h] * abs(i - j)
    assert ops.alibi_bias(3, 4, slopes, dtype=np.float32).dtype == np.float32


def _dense_reference(q, k, v, bias, mask):
    """softmax(q kᵀ/√d + bias) v with the mask, written out directly."""
    scores = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1]) + bias
    weights, _ = softmax_forward(scores, mask)
    return weights @ v


def test_dense_attention_adds_the_bias_and_keeps_its_backward():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 3, 5, 4)) for _ in range(3))
    bias = ops.alibi_bias(5, 5, ops.alibi_slopes(3))
    mask = ops.causal_mask(5)
    out, cache = ops.attention_forward(q, k, v, mask, bias=bias)
    np.testing.assert_allclose(out, _dense_reference(q, k, v, bias, mask), atol=1e-13)
    report = check_op(
        ops.attention_forward,
        ops.attention_backward,
        {"q": q, "k": k, "v": v},
        kwargs={"mask": mask, "bias": bias},
    )
    assert report.passed, str(report)


def _flash_and_dense(q, k, v, slopes, block_size, **mask_kwargs):
    out, cache = ops.flash_attention_forward(q, k, v, alibi=slopes, block_size=block_size, **mask_kwargs)
    mask = ops.flash_attention_mask(q.shape[-2], k.shape[-2], ndim=q.ndim, **mask_kwargs)
    bias = ops.alibi_bias(q.shape[-2], k.shape[-2], slopes, dtype=q.dtype)
    ref, ref_cache = ops.attention_forward(q, k, v, mask, bias=bias)
    d_out = np.random.default_rng(1).standard_normal(out.shape).astype(q.dtype)
    return (out, *ops.flash_attention_backward(d_out, cache)), (
        ref,
        *ops.attention_backward(d_out, ref_cache),
    )


MASKS = {
    "bidirectional": {},
    "causal": {"causal": True},
    "causal + window 3": {"causal": True, "window": 3},
    "window 2 + 1 sink": {"window": 2, "sinks": 1},
    "causal + key_lengths": {"causal": True, "key_lengths": [7, 0, 3]},
}


@pytest.mark.parametrize("mask_name", list(MASKS))
@pytest.mark.parametrize(("Lq", "Lk"), [(7, 7), (5, 9), (9, 4)])
@pytest.mark.parametrize("block_size", [1, 3, (2, 5), 64])
def test_blocked_alibi_equals_dense_attention_with_the_explicit_bias(mask_name, Lq, Lk, block_size):
    rng = np.random.default_rng(2)
    q = rng.standard_normal((3, 4, Lq, 5))
    k, v = rng.standard_normal((3, 4, Lk, 5)), rng.standard_normal((3, 4, Lk, 3))
    kwargs = dict(MASKS[mask_name])
    if "key_lengths" in kwargs:
        kwargs["key_lengths"] = np.minimum(kwargs["key_lengths"], Lk)
    ours, ref = _flash_and_dense(q, k, v, ops.alibi_slopes(4), block_size, **kwargs)
    for name, a, b in zip(("out", "dq", "dk", "dv"), ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12, err_msg=name)


def test_large_slopes_make_attention_local_and_float32_stays_float32():
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((1, 2, 40, 8)).astype(np.float32) for _ in range(3))
    slopes = np.array([50.0, 0.0])  # head 0: only the diagonal survives; head 1: no bias at all
    out, cache = ops.flash_attention_forward(q, k, v, alibi=slopes, causal=True, block_size=(8, 16))
    assert out.dtype == np.float32 and all(
        g.dtype == np.float32 for g in ops.flash_attention_backward(out, cache)
    )
    np.testing.assert_allclose(out[0, 0], v[0, 0], atol=1e-5)  # each query copies its own value
    plain, _ = ops.flash_attention_forward(q, k, v, causal=True, block_size=(8, 16))
    np.testing.assert_allclose(out[0, 1], plain[0, 1], atol=1e-6)
    weights = ops.flash_attention_weights(cache)
    dense = ops.attention_forward(
        q, k, v, ops.causal_mask(40), bias=ops.alibi_bias(40, 40, slopes, dtype=np.float32)
    )[1].weights
    np.testing.assert_allclose(weights, dense, atol=1e-6)


def _check_inputs():
    rng = np.random.default_rng(4)
    return {name: rng.standard_normal((2, 3, 6, 3)) for name in "qkv"}


CHECK = {"alibi": np.array([0.9, 0.3, 0.05]), "causal": True, "block_size": (2, 4)}


def test_gradcheck_passes_causal_and_bidirectional():
    for causal in (True, False):
        kwargs = {**CHECK, "causal": causal}
        report = check_op(
            ops.flash_attention_forward, ops.flash_attention_backward, _check_inputs(), kwargs=kwargs
        )
        assert report.passed, str(report)


def test_gradcheck_rejects_a_backward_that_forgets_the_bias():
    def backward_without_bias(d_out, cache):
        return ops.flash_attention_backward(d_out, cache._replace(alibi=None))

    report = check_op(ops.flash_attention_forward, backward_without_bias, _check_inputs(), kwargs=CHECK)
    assert not report.passed


def test_gradcheck_rejects_a_backward_with_the_heads_slopes_swapped():
    def backward_reversed(d_out, cache):
        return ops.flash_attention_backward(d_out, cache._replace(alibi=cache.alibi[::-1].copy()))

    report = check_op(ops.flash_attention_forward, backward_reversed, _check_inputs(), kwargs=CHECK)
    assert not report.passed


def test_matches_torch_sdpa_with_a_float_mask():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((2, 4, 9, 6)) for _ in range(3))
    slopes = ops.alibi_slopes(4)
    bias = ops.alibi_bias(9, 9, slopes) + np.where(ops.causal_mask(9), 0.0, -np.inf)
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    t_out = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=torch.tensor(bias))
    d_out = rng.standard_normal(t_out.shape)
    t_out.backward(torch.tensor(d_out))
    out, cache = ops.flash_attention_forward(q, k, v, alibi=slopes, causal=True, block_size=4)
    grads = ops.flash_attention_backward(d_out, cache)
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=0, atol=1e-10)
    for g, t in zip(grads, (tq, tk, tv), strict=True):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    ("slopes", "error", "match"),
    [
        (np.ones(3), ValueError, r"alibi: expected 4 slopes \(one per head.*got shape \(3,\)"),
        (np.ones((4, 1)), ValueError, r"alibi: expected 4 slopes.*\(4, 1\)"),
        (np.array([1.0, -1.0, 1.0, 1.0]), ValueError, "alibi: expected finite slopes >= 0"),
        (np.array([1.0, np.nan, 1.0, 1.0]), ValueError, "alibi: expected finite slopes"),
        ("0.5", TypeError, "alibi: expected a 1-D array of 4 slopes"),
        (np.array(["a"] * 4), TypeError, "alibi: expected real slopes"),
    ],
)
def test_bad_slopes(slopes, error, match):
    q = np.zeros((2, 4, 3, 2))
    with pytest.raises(error, match=match):
        ops.flash_attention_forward(q, q, q, alibi=slopes)


def test_bad_arguments_of_the_dense_forms():
    q = np.zeros((4, 3, 2))
    with pytest.raises(ValueError, match="alibi: needs a head axis"):
        ops.flash_attention_forward(q[0], q[0], q[0], alibi=[0.5])
    with pytest.raises(ValueError, match=r"bias: expected a shape that broadcasts to the scores \(4, 3, 3\)"):
        ops.attention_forward(q, q, q, bias=np.zeros((2, 3, 3)))
    with pytest.raises(TypeError, match="expected one dtype for q, bias"):
        ops.attention_forward(q, q, q, bias=np.zeros((3, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="dtype: expected float32 or float64"):
        ops.alibi_bias(3, 3, [0.5], dtype=np.int64)
    with pytest.raises(ValueError, match="Lk: expected a positive integer"):
        ops.alibi_bias(3, 0, [0.5])
