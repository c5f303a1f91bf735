"""ops.activations: ReLU, GELU (erf and tanh forms) and the (masked) softmax of §3.1 and §4.1."""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy.gradcheck import check_op
from mmt_numpy.ops import (
    gelu_backward,
    gelu_forward,
    relu_backward,
    relu_forward,
    softmax_backward,
    softmax_forward,
)

GELU_FORMS = ["none", "tanh"]


def _away_from_zero(x):
    """ReLU has a kink at 0, where finite differences straddle two slopes: stay 0.1 away."""
    return np.sign(x) * (0.1 + np.abs(x))


# --- gradients ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4, 5)], ids=str)
def test_relu_gradcheck(rng, shape):
    report = check_op(relu_forward, relu_backward, {"x": _away_from_zero(rng.standard_normal(shape))})
    assert report.passed, report


@pytest.mark.parametrize("form", GELU_FORMS)
@pytest.mark.parametrize("shape", [(7,), (2, 3, 5)], ids=str)
def test_gelu_gradcheck(rng, form, shape):
    x = 3 * rng.standard_normal(shape)  # covers both tails and the curved middle
    report = check_op(gelu_forward, gelu_backward, {"x": x}, kwargs={"approximate": form})
    assert report.passed, report


def _mask_with_an_empty_row(rng, shape):
    mask = rng.random(shape) < 0.6
    mask[(0,) * (len(shape) - 1)] = False  # row 0 of batch 0: every entry masked
    return mask


@pytest.mark.parametrize(
    ("shape", "mask_kind"),
    [
        ((6,), None),
        ((3, 5), None),
        ((2, 3, 4, 5), None),
        ((2, 3, 5), "random"),
        ((2, 3, 4, 5), "random"),
        ((2, 3, 4, 5), "per key (5,)"),
        ((2, 3, 4, 5), "per row (2, 1, 4, 1)"),
    ],
    ids=str,
)
def test_softmax_gradcheck(rng, shape, mask_kind):
    kwargs = {}
    if mask_kind == "random":
        kwargs["mask"] = _mask_with_an_empty_row(rng, shape)
    elif mask_kind == "per key (5,)":
        kwargs["mask"] = np.array([True, False, True, True, False])
    elif mask_kind == "per row (2, 1, 4, 1)":
        kwargs["mask"] = rng.random((2, 1, 4, 1)) < 0.5  # whole rows masked, broadcast over heads
    report = check_op(softmax_forward, softmax_backward, {"x": rng.standard_normal(shape)}, kwargs=kwargs)
    assert report.passed, report


# Negative controls.


def _relu_lets_everything_through(d_out, cache):
    return d_out


def _relu_off_by_a_tenth_of_a_percent(d_out, cache):
    return relu_backward(d_out, cache) * 1.001


def _gelu_without_the_x_pdf_term(d_out, cache):
    form, x, cdf = cache
    return d_out * cdf  # drops x φ(x) from Φ(x) + x φ(x)


def _gelu_tanh_without_the_cubic_term(d_out, cache):
    form, x, tanh_inner = cache
    du_dx = np.sqrt(2 / np.pi)  # forgets the 3·0.044715·x² of du/dx
    return d_out * (0.5 * (1 + tanh_inner) + 0.5 * x * (1 - tanh_inner**2) * du_dx)


def _softmax_without_the_row_sum(d_out, cache):
    (y,) = cache
    return y * d_out  # drops - y Σ d_out y


def _softmax_off_by_a_tenth_of_a_percent(d_out, cache):
    return softmax_backward(d_out, cache) * 1.001


@pytest.mark.parametrize(
    ("forward", "backward", "broken", "kwargs"),
    [
        (relu_forward, relu_backward, _relu_lets_everything_through, {}),
        (relu_forward, relu_backward, _relu_off_by_a_tenth_of_a_percent, {}),
        (gelu_forward, gelu_backward, _gelu_without_the_x_pdf_term, {"approximate": "none"}),
        (gelu_forward, gelu_backward, _gelu_tanh_without_the_cubic_term, {"approximate": "tanh"}),
        (softmax_forward, softmax_backward, _softmax_without_the_row_sum, {}),
        (softmax_forward, softmax_backward, _softmax_off_by_a_tenth_of_a_percent, {}),
    ],
    ids=lambda p: getattr(p, "__name__", str(p)),
)
def test_checker_rejects_a_broken_backward(rng, forward, backward, broken, kwargs):
    inputs = {"x": _away_from_zero(rng.standard_normal((3, 5)))}
    assert check_op(forward, backward, inputs, kwargs=kwargs).passed
    assert not check_op(forward, broken, inputs, kwargs=kwargs).passed


# --- values and numerics -----------------------------------------------------------------------


def test_relu_values_and_zero_gradient_at_zero():
    x = np.array([-2.0, 0.0, 3.0])
    out, cache = relu_forward(x)
    np.testing.assert_array_equal(out, [0.0, 0.0, 3.0])
    np.testing.assert_array_equal(relu_backward(np.ones(3), cache), [0.0, 0.0, 1.0])


def test_gelu_known_values():
    # GELU(x) = x Φ(x): Φ(0) = 1/2, Φ(1) = 0.8413447460685429, Φ(-1) = 1 - Φ(1).
    x = np.array([0.0, 1.0, -1.0, 40.0, -40.0])
    out, _ = gelu_forward(x)
    np.testing.assert_allclose(
        out, [0.0, 0.8413447460685429, -0.15865525393145707, 40.0, 0.0], rtol=1e-14, atol=1e-300
    )
    tanh_out, _ = gelu_forward(x, approximate="tanh")
    np.testing.assert_allclose(tanh_out, out, atol=1e-3)  # the approximation is close, not equal


@pytest.mark.parametrize("form", GELU_FORMS)
def test_gelu_accepts_a_0d_array(form):
    # Regression: the erf form used to fail on 0-d input (frompyfunc returns a Python float).
    out, cache = gelu_forward(np.array(1.0), approximate=form)
    assert out.shape == () and abs(out - 0.8413) < 1e-3
    assert np.shape(gelu_backward(np.array(1.0), cache)) == ()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_survives_logits_of_1e4(dtype):
    x = np.array([[1e4, -1e4, 0.0, 1e4], [-1e4, -1e4, -1e4, -1e4]], dtype=dtype)
    out, cache = softmax_forward(x)
    np.testing.assert_allclose(out, [[0.5, 0.0, 0.0, 0.5], [0.25, 0.25, 0.25, 0.25]])
    dx = softmax_backward(np.ones_like(x) * np.arange(4, dtype=dtype), cache)
    assert np.isfinite(dx).all()


def test_masked_entries_are_exactly_zero_and_rows_sum_to_one(rng):
    x = rng.standard_normal((2, 3, 6))
    mask = _mask_with_an_empty_row(rng, x.shape)
    out, _ = softmax_forward(x, mask)
    assert np.all(out[~mask] == 0.0)
    sums = out.sum(axis=-1)
    has_any = mask.any(axis=-1)
    np.testing.assert_allclose(sums[has_any], 1.0, rtol=1e-14)
    np.testing.assert_array_equal(sums[~has_any], 0.0)
    # Where nothing is masked the masked softmax is the plain one.
    full_out, _ = softmax_forward(x, np.ones(x.shape, dtype=bool))
    np.testing.assert_array_equal(full_out, softmax_forward(x)[0])


def test_a_fully_masked_row_gives_zero_output_and_zero_gradient(rng):
    x = rng.standard_normal((2, 5))
    mask = np.array([[False] * 5, [True, True, False, True, False]])
    out, cache = softmax_forward(x, mask)
    dx = softmax_backward(rng.standard_normal(x.shape), cache)
    assert np.isfinite(out).all() and np.isfinite(dx).all()
    np.testing.assert_array_equal(out[0], 0.0)
    np.testing.assert_array_equal(dx[0], 0.0)
    np.testing.assert_array_equal(dx[1][~mask[1]], 0.0)  # masked keys get no gradient either


@pytest.mark.parametrize(
    ("forward", "backward", "kwargs"),
    [
        (relu_forward, relu_backward, {}),
        (gelu_forward, gelu_backward, {"approximate": "none"}),
        (gelu_forward, gelu_backward, {"approximate": "tanh"}),
        (softmax_forward, softmax_backward, {}),
        (softmax_forward, softmax_backward, {"mask": np.array([True, False, True, True, False])}),
    ],
    ids=["relu", "gelu", "gelu tanh", "softmax", "softmax mask"],
)
def test_float32_in_float32_out_and_agrees_with_float64(rng, forward, backward, kwargs):
    x64 = 2 * rng.standard_normal((2, 3, 5))
    d_out = rng.standard_normal(x64.shape)
    out64, cache64 = forward(x64, **kwargs)
    out32, cache32 = forward(x64.astype(np.float32), **kwargs)
    dx32 = backward(d_out.astype(np.float32), cache32)
    assert out32.dtype == np.float32 and dx32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx32, backward(d_out, cache64), rtol=1e-5, atol=1e-6)


# --- bad input ---------------------------------------------------------------------------------


def test_bad_input_is_named(rng):
    x = rng.standard_normal((2, 3, 4))
    with pytest.raises(TypeError, match=r"mask: expected dtype bool .*got int64"):
        softmax_forward(x, np.ones((2, 3, 4), dtype=np.int64))
    not_broadcasting = r"mask: expected a shape that broadcasts to \(2, 3, 4\), got \(5,\)"
    with pytest.raises(ValueError, match=not_broadcasting):
        softmax_forward(x, np.ones(5, dtype=bool))
    with pytest.raises(ValueError, match=r"mask: .*broadcasts to \(2, 3, 4\), got \(7, 2, 3, 4\)"):
        softmax_forward(x, np.ones((7, 2, 3, 4), dtype=bool))  # would enlarge the output
    with pytest.raises(TypeError, match=r"mask: expected a boolean numpy array, got list"):
        softmax_forward(x, [[True] * 4] * 3)
    with pytest.raises(ValueError, match=r"x: expected at least 1 dimensions, got shape \(\)"):
        softmax_forward(np.array(1.0))
    for forward in (relu_forward, gelu_forward, softmax_forward):
        with pytest.raises(TypeError, match=r"x: expected dtype float32 or float64, got int64"):
            forward(np.arange(6).reshape(2, 3))
    with pytest.raises(ValueError, match=r"approximate: expected one of \('none', 'tanh'\), got 'erf'"):
        gelu_forward(x, approximate="erf")


# --- parity with PyTorch -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["relu", "gelu none", "gelu tanh", "softmax"])
def test_matches_torch(rng, torch_autograd, name):
    import torch.nn.functional as F

    x = 3 * rng.standard_normal((2, 3, 6))
    x[0, 0, :2] = 0.0  # ReLU's gradient at exactly 0 is 0 in both
    ours = {
        "relu": (relu_forward, relu_backward, {}, F.relu),
        "gelu none": (
            gelu_forward,
            gelu_backward,
            {"approximate": "none"},
            lambda t: F.gelu(t, approximate="none"),
        ),
        "gelu tanh": (
            gelu_forward,
            gelu_backward,
            {"approximate": "tanh"},
            lambda t: F.gelu(t, approximate="tanh"),
        ),
        "softmax": (softmax_forward, softmax_backward, {}, lambda t: F.softmax(t, dim=-1)),
    }
    forward, backward, kwargs, torch_fn = ours[name]
    out, cache = forward(x, **kwargs)
    upstream = rng.standard_normal(out.shape)
    t_out, (t_dx,) = torch_autograd(torch_fn, [x], upstream)
    np.testing.assert_allclose(out, t_out, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(backward(upstream, cache), t_dx, rtol=1e-10, atol=1e-10)


def test_masked_softmax_matches_torch_masked_fill(rng, torch_autograd):
    import torch

    x = rng.standard_normal((2, 4, 5))
    mask = rng.random(x.shape) < 0.6
    mask[..., 0] = True  # no fully masked row: torch's masked_fill(-inf) would give NaN there
    out, cache = softmax_forward(x, mask)
    upstream = rng.standard_normal(x.shape)
    keep = torch.as_tensor(mask)
    t_out, (t_dx,) = torch_autograd(
        lambda t: torch.softmax(t.masked_fill(~keep, float("-inf")), dim=-1), [x], upstream
    )
    np.testing.assert_allclose(out, t_out, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(softmax_backward(upstream, cache), t_dx, rtol=1e-10, atol=1e-10)
