"""ops.layernorm: normalise the last axis, then γ ⊙ x̂ + β (§3.1), with PyTorch's biased variance."""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy.gradcheck import check_op
from mmt_numpy.ops import layernorm_backward, layernorm_forward


def _inputs(rng, shape=(2, 3, 6)):
    D = shape[-1]
    return {"x": rng.standard_normal(shape), "gamma": rng.standard_normal(D), "beta": rng.standard_normal(D)}


# --- gradients ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(6,), (5, 6), (2, 3, 6), (2, 2, 3, 4)], ids=str)
def test_gradcheck(rng, shape):
    report = check_op(layernorm_forward, layernorm_backward, _inputs(rng, shape))
    assert report.passed, report


def test_gradcheck_far_from_zero_and_with_a_large_eps(rng):
    inputs = _inputs(rng)
    inputs["x"] = 50.0 + 3.0 * inputs["x"]  # the mean must really be subtracted
    report = check_op(layernorm_forward, layernorm_backward, inputs, kwargs={"eps": 0.5})
    assert report.passed, report


def test_gradcheck_through_a_constant_row(rng):
    # A constant row has variance 0: only eps keeps x̂ = 0 / √eps defined.  The function
    # is smooth there, so finite differences and the backward must still agree.
    inputs = _inputs(rng, (3, 6))
    inputs["x"][1] = 2.5
    report = check_op(layernorm_forward, layernorm_backward, inputs)
    assert report.passed, report


# Negative controls: each drops one path of dx = r (g - mean(g) - x̂ mean(g x̂)) or breaks dγ.


def _without_the_mean_path(d_out, cache):
    x_hat, rstd, gamma = cache
    _, dgamma, dbeta = layernorm_backward(d_out, cache)
    g = d_out * gamma
    return rstd * (g - x_hat * (g * x_hat).mean(axis=-1, keepdims=True)), dgamma, dbeta


def _without_the_variance_path(d_out, cache):
    x_hat, rstd, gamma = cache
    _, dgamma, dbeta = layernorm_backward(d_out, cache)
    g = d_out * gamma
    return rstd * (g - g.mean(axis=-1, keepdims=True)), dgamma, dbeta


def _dgamma_without_x_hat(d_out, cache):
    dx, _, dbeta = layernorm_backward(d_out, cache)
    return dx, dbeta.copy(), dbeta  # Σ d_out, forgetting the factor x̂


def _dx_off_by_a_tenth_of_a_percent(d_out, cache):
    dx, dgamma, dbeta = layernorm_backward(d_out, cache)
    return dx * 1.001, dgamma, dbeta


@pytest.mark.parametrize(
    "broken",
    [
        _without_the_mean_path,
        _without_the_variance_path,
        _dgamma_without_x_hat,
        _dx_off_by_a_tenth_of_a_percent,
    ],
)
def test_checker_rejects_a_broken_backward(rng, broken):
    inputs = _inputs(rng)
    assert check_op(layernorm_forward, layernorm_backward, inputs).passed
    assert not check_op(layernorm_forward, broken, inputs).passed


# --- values and numerics -----------------------------------------------------------------------


def test_rows_have_zero_mean_and_unit_variance_before_the_affine(rng):
    x = 4.0 + 3.0 * rng.standard_normal((2, 3, 64))
    out, _ = layernorm_forward(x, np.ones(64), np.zeros(64), eps=1e-12)
    np.testing.assert_allclose(out.mean(axis=-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=-1), 1.0, rtol=1e-9)  # biased variance, as PyTorch


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_constant_row_stays_finite(rng, dtype):
    x = np.full((2, 5), 7.0, dtype=dtype)
    gamma = rng.standard_normal(5).astype(dtype)
    beta = rng.standard_normal(5).astype(dtype)
    out, cache = layernorm_forward(x, gamma, beta)
    np.testing.assert_array_equal(out, np.broadcast_to(beta, x.shape))  # x̂ = 0 exactly
    grads = layernorm_backward(rng.standard_normal(x.shape).astype(dtype), cache)
    assert all(np.isfinite(g).all() for g in grads)


def test_float32_in_float32_out_and_agrees_with_float64(rng):
    inputs64 = _inputs(rng)
    out64, cache64 = layernorm_forward(*inputs64.values())
    out32, cache32 = layernorm_forward(*(a.astype(np.float32) for a in inputs64.values()))
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-5, atol=1e-5)
    d_out = rng.standard_normal(out64.shape)
    for g32, g64 in zip(
        layernorm_backward(d_out.astype(np.float32), cache32), layernorm_backward(d_out, cache64), strict=True
    ):
        assert g32.dtype == np.float32
        np.testing.assert_allclose(g32, g64, rtol=1e-5, atol=1e-5)


# --- bad input ---------------------------------------------------------------------------------


def test_bad_input_is_named(rng):
    x, gamma, beta = _inputs(rng, (2, 3, 6)).values()
    with pytest.raises(ValueError, match=r"gamma: expected shape \(6,\) to match x \(2, 3, 6\), got \(5,\)"):
        layernorm_forward(x, gamma[:5], beta)
    with pytest.raises(ValueError, match=r"beta: expected 1 dimensions, got shape \(1, 6\)"):
        layernorm_forward(x, gamma, beta[None])
    with pytest.raises(ValueError, match=r"x: expected at least 1 dimensions, got shape \(\)"):
        layernorm_forward(np.array(1.0), gamma, beta)
    with pytest.raises(TypeError, match=r"x: expected dtype float32 or float64, got int64"):
        layernorm_forward(np.ones((2, 6), dtype=np.int64), gamma, beta)
    with pytest.raises(TypeError, match=r"x, gamma, beta.*x=float64, gamma=float32, beta=float64"):
        layernorm_forward(x, gamma.astype(np.float32), beta)
    with pytest.raises(ValueError, match=r"eps: expected a positive number, got 0"):
        layernorm_forward(x, gamma, beta, eps=0)


# --- parity with PyTorch -----------------------------------------------------------------------


@pytest.mark.parametrize("eps", [1e-5, 0.1])
def test_matches_torch_layer_norm(rng, torch_autograd, eps):
    import torch.nn.functional as F

    inputs = _inputs(rng, (2, 3, 8))
    inputs["x"][0, 1] = -1.5  # a constant row too
    out, cache = layernorm_forward(*inputs.values(), eps=eps)
    upstream = rng.standard_normal(out.shape)
    t_out, t_grads = torch_autograd(
        lambda x, g, b: F.layer_norm(x, (8,), g, b, eps), list(inputs.values()), upstream
    )
    np.testing.assert_allclose(out, t_out, rtol=1e-10, atol=1e-10)
    for ours, theirs in zip(layernorm_backward(upstream, cache), t_grads, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10)
