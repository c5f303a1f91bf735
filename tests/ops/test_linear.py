"""ops.linear: ``out = x @ W + b`` with W of shape (d_in, d_out) (§4.1 projections)."""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy.gradcheck import check_op
from mmt_numpy.ops import linear_backward, linear_forward

SHAPES = [(5, 4), (2, 3, 4), (2, 2, 3, 4)]  # (L, d_in), (B, L, d_in), (B, H, L, d_in)


def _inputs(rng, x_shape=(2, 3, 4), d_out=4, bias=True):
    inputs = {"x": rng.standard_normal(x_shape), "W": rng.standard_normal((x_shape[-1], d_out))}
    if bias:
        inputs["b"] = rng.standard_normal(d_out)
    return inputs


# --- gradients ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no bias"])
@pytest.mark.parametrize("x_shape", SHAPES, ids=str)
def test_gradcheck(rng, x_shape, bias):
    report = check_op(linear_forward, linear_backward, _inputs(rng, x_shape, d_out=3, bias=bias))
    assert report.passed, report
    assert len(report.tensors) == (3 if bias else 2)


def test_no_bias_gives_no_bias_gradient(rng):
    out, cache = linear_forward(**_inputs(rng, bias=False))
    assert linear_backward(np.ones_like(out), cache)[2] is None


# Negative controls: each backward is wrong in one way the checker must notice.


def _transposed_dW(d_out, cache):
    dx, dW, db = linear_backward(d_out, cache)
    return dx, dW.T, db  # W is square here, so only the values can give it away


def _bias_without_the_sum(d_out, cache):
    dx, dW, db = linear_backward(d_out, cache)
    return dx, dW, d_out.reshape(-1, d_out.shape[-1])[0]  # the first row only, not Σ over rows


def _dx_with_W_instead_of_W_transposed(d_out, cache):
    x, W, _ = cache
    dx, dW, db = linear_backward(d_out, cache)
    return d_out @ W, dW, db


def _dx_off_by_a_tenth_of_a_percent(d_out, cache):
    dx, dW, db = linear_backward(d_out, cache)
    return dx * 1.001, dW, db


@pytest.mark.parametrize(
    "broken",
    [
        _transposed_dW,
        _bias_without_the_sum,
        _dx_with_W_instead_of_W_transposed,
        _dx_off_by_a_tenth_of_a_percent,
    ],
)
def test_checker_rejects_a_broken_backward(rng, broken):
    inputs = _inputs(rng, d_out=4)  # square W (4, 4) so every broken gradient has the right shape
    assert check_op(linear_forward, linear_backward, inputs).passed
    assert not check_op(linear_forward, broken, inputs).passed


# --- numerics and dtypes -----------------------------------------------------------------------


def test_values_match_an_explicit_sum(rng):
    x, W, b = _inputs(rng, (2, 3, 4), d_out=5).values()
    out, _ = linear_forward(x, W, b)
    expected = np.einsum("bli,io->blo", x, W) + b
    np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-13)


def test_float32_in_float32_out_and_agrees_with_float64(rng):
    inputs64 = _inputs(rng, (2, 3, 4), d_out=5)
    out64, cache64 = linear_forward(*inputs64.values())
    out32, cache32 = linear_forward(*(a.astype(np.float32) for a in inputs64.values()))
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-5, atol=1e-5)
    d_out = rng.standard_normal(out64.shape)
    for g32, g64 in zip(
        linear_backward(d_out.astype(np.float32), cache32), linear_backward(d_out, cache64), strict=True
    ):
        assert g32.dtype == np.float32
        np.testing.assert_allclose(g32, g64, rtol=1e-5, atol=1e-5)


# --- bad input ---------------------------------------------------------------------------------


def test_bad_input_is_named(rng):
    x = rng.standard_normal((2, 3, 4))
    W = rng.standard_normal((4, 5))
    b = rng.standard_normal(5)
    with pytest.raises(ValueError, match=r"x: expected last dimension 4 .*W \(4, 5\).*got shape \(2, 3, 6\)"):
        linear_forward(rng.standard_normal((2, 3, 6)), W, b)
    with pytest.raises(ValueError, match=r"W: expected 2 dimensions, got shape \(4,\)"):
        linear_forward(x, W[:, 0], None)
    with pytest.raises(ValueError, match=r"x: expected at least 1 dimensions, got shape \(\)"):
        linear_forward(np.array(1.0), W, b)
    with pytest.raises(ValueError, match=r"b: expected shape \(5,\) to match W \(4, 5\), got \(4,\)"):
        linear_forward(x, W, b[:4])
    with pytest.raises(TypeError, match=r"x: expected dtype float32 or float64, got int64"):
        linear_forward(np.ones((2, 3, 4), dtype=np.int64), W, b)
    with pytest.raises(TypeError, match=r"x, W, b.*x=float32, W=float64, b=float64"):
        linear_forward(x.astype(np.float32), W, b)
    with pytest.raises(TypeError, match=r"W: expected a numpy array, got list"):
        linear_forward(x, W.tolist(), b)


# --- parity with PyTorch -----------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no bias"])
def test_matches_torch_linear(rng, torch_autograd, bias):
    import torch.nn.functional as F

    x, W = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5))
    b = rng.standard_normal(5)
    out, cache = linear_forward(x, W, b if bias else None)
    upstream = rng.standard_normal(out.shape)
    grads = linear_backward(upstream, cache)
    # torch keeps weight as (d_out, d_in) = our Wᵀ; its weight gradient is our dWᵀ.
    if bias:
        t_out, (t_dx, t_dWT, t_db) = torch_autograd(
            lambda x, WT, b: F.linear(x, WT, b), [x, W.T.copy(), b], upstream
        )
        np.testing.assert_allclose(grads[2], t_db, rtol=1e-10, atol=1e-10)
    else:
        t_out, (t_dx, t_dWT) = torch_autograd(lambda x, WT: F.linear(x, WT), [x, W.T.copy()], upstream)
    np.testing.assert_allclose(out, t_out, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grads[0], t_dx, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grads[1], t_dWT.T, rtol=1e-10, atol=1e-10)
