"""ops.residual (``x + f(x)``, §3.1) and ops.dropout (inverted dropout)."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from mmt_numpy.gradcheck import check_op
from mmt_numpy.ops import dropout_backward, dropout_forward, residual_backward, residual_forward

# --- residual ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4), (2, 2, 3, 4)], ids=str)
def test_residual_gradcheck(rng, shape):
    inputs = {"x": rng.standard_normal(shape), "fx": rng.standard_normal(shape)}
    report = check_op(residual_forward, residual_backward, inputs)
    assert report.passed, report


def _residual_without_the_identity_path(d_out, cache):
    return np.zeros_like(d_out), d_out  # as if out = f(x): the skip connection forgotten


def _residual_off_by_a_tenth_of_a_percent(d_out, cache):
    return d_out, d_out * 1.001


@pytest.mark.parametrize(
    "broken", [_residual_without_the_identity_path, _residual_off_by_a_tenth_of_a_percent]
)
def test_checker_rejects_a_broken_residual_backward(rng, broken):
    inputs = {"x": rng.standard_normal((2, 3, 4)), "fx": rng.standard_normal((2, 3, 4))}
    assert check_op(residual_forward, residual_backward, inputs).passed
    assert not check_op(residual_forward, broken, inputs).passed


def test_residual_float32(rng):
    x = rng.standard_normal((2, 3)).astype(np.float32)
    out, _ = residual_forward(x, 2 * x)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, 3 * x)


def test_residual_bad_input_is_named(rng):
    x = rng.standard_normal((2, 3, 4))
    with pytest.raises(ValueError, match=r"fx: expected the shape of x \(2, 3, 4\), got \(2, 3, 5\)"):
        residual_forward(x, rng.standard_normal((2, 3, 5)))
    with pytest.raises(TypeError, match=r"x, fx.*x=float64, fx=float32"):
        residual_forward(x, x.astype(np.float32))
    with pytest.raises(TypeError, match=r"fx: expected dtype float32 or float64, got int64"):
        residual_forward(x, np.ones((2, 3, 4), dtype=np.int64))


# --- dropout -----------------------------------------------------------------------------------


def _dropout_seeded(x, p, seed=5):
    """Dropout that draws the same mask on every call, so it is a fixed function of x."""
    return dropout_forward(x, p, rng=np.random.default_rng(seed))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_gradcheck(rng, p):
    report = check_op(partial(_dropout_seeded, p=p), dropout_backward, {"x": rng.standard_normal((3, 4, 5))})
    assert report.passed, report


def _dropout_without_the_rescale(d_out, cache):
    return d_out * (cache.scaled_keep > 0)  # forgets the 1/(1-p) of the forward


def _dropout_ignoring_the_mask(d_out, cache):
    return d_out


@pytest.mark.parametrize("broken", [_dropout_without_the_rescale, _dropout_ignoring_the_mask])
def test_checker_rejects_a_broken_dropout_backward(rng, broken):
    forward = partial(_dropout_seeded, p=0.3)
    inputs = {"x": rng.standard_normal((3, 8))}
    assert check_op(forward, dropout_backward, inputs).passed
    assert not check_op(forward, broken, inputs).passed


def test_dropout_keeps_the_expected_value_and_drops_a_fraction_p():
    x = np.ones(200_000)
    out, _ = dropout_forward(x, 0.3, rng=np.random.default_rng(0))
    assert abs(np.mean(out == 0.0) - 0.3) < 0.005
    np.testing.assert_allclose(out[out != 0.0], 1 / 0.7)
    assert abs(out.mean() - 1.0) < 0.01


def test_dropout_is_reproducible_for_a_seed(rng):
    x = rng.standard_normal((4, 6))
    first, _ = dropout_forward(x, 0.5, rng=np.random.default_rng(3))
    again, _ = dropout_forward(x, 0.5, rng=np.random.default_rng(3))
    other, _ = dropout_forward(x, 0.5, rng=np.random.default_rng(4))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize(("p", "training"), [(0.0, True), (0.5, False)], ids=["p=0", "eval"])
def test_dropout_is_the_identity_when_off(rng, p, training):
    x = rng.standard_normal((3, 4))
    out, cache = dropout_forward(x, p, training=training)  # no rng needed when nothing is drawn
    np.testing.assert_array_equal(out, x)
    d_out = rng.standard_normal(x.shape)
    np.testing.assert_array_equal(dropout_backward(d_out, cache), d_out)


def test_dropout_with_p_1_drops_everything_without_nan(rng):
    x = rng.standard_normal((3, 4))
    out, cache = dropout_forward(x, 1.0, rng=rng)
    np.testing.assert_array_equal(out, 0.0)
    np.testing.assert_array_equal(dropout_backward(np.ones_like(x), cache), 0.0)


def test_dropout_float32(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    out, cache = dropout_forward(x, 0.25, rng=rng)
    assert out.dtype == np.float32
    assert dropout_backward(np.ones_like(out), cache).dtype == np.float32
    kept = out != 0
    np.testing.assert_allclose(out[kept], x[kept] / 0.75, rtol=1e-6)


def test_dropout_bad_input_is_named(rng):
    x = rng.standard_normal((3, 4))
    with pytest.raises(ValueError, match=r"p: expected a probability in \[0, 1\], got 1.5"):
        dropout_forward(x, 1.5, rng=rng)
    with pytest.raises(TypeError, match=r"rng: expected a numpy.random.Generator .*got NoneType"):
        dropout_forward(x, 0.5)
    with pytest.raises(TypeError, match=r"x: expected dtype float32 or float64, got int64"):
        dropout_forward(np.ones((3, 4), dtype=np.int64), 0.5, rng=rng)
