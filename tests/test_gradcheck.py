"""Tests of the checker itself (mmt_numpy/gradcheck.py).

A gradient check is only worth something if it can fail, so most tests here hand the
checker a gradient that is wrong by a known small amount and assert it says so, next to
the same setup with the right gradient, which it must accept.
"""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy import nn, ops
from mmt_numpy.gradcheck import (
    MAX_ELEMENTS,
    NUM_DIRECTIONS,
    RTOL,
    GradcheckReport,
    TensorReport,
    check_module,
    check_op,
    check_tensor,
    format_table,
)


def _sin_problem(rng: np.random.Generator, size: int):
    """L(x) = Σ sin(x) ⊙ G, whose exact gradient is cos(x) ⊙ G."""
    x = rng.standard_normal(size)
    G = rng.standard_normal(size)

    def loss() -> float:
        return float(np.sum(np.sin(x) * G))

    return x, np.cos(x) * G, loss


# --- check_tensor: both modes accept the truth and reject a 0.1% error ------------------------


@pytest.mark.parametrize(
    ("size", "mode", "checked"),
    [(50, "elements", 50), (MAX_ELEMENTS + 44, "directions", NUM_DIRECTIONS)],
)
def test_check_tensor_accepts_a_correct_gradient(rng, size, mode, checked):
    x, grad, loss = _sin_problem(rng, size)
    report = check_tensor(loss, "x", x, grad)
    assert report.mode == mode
    assert report.checked == checked
    assert report.passed, report
    assert report.max_rel_err < 1e-7


@pytest.mark.parametrize("size", [50, MAX_ELEMENTS + 44], ids=["elements", "directions"])
def test_check_tensor_rejects_a_gradient_off_by_a_tenth_of_a_percent(rng, size):
    x, grad, loss = _sin_problem(rng, size)
    report = check_tensor(loss, "x", x, grad * 1.001)
    assert not report.passed
    # The error measure reads the 0.1% directly: well above rtol, and about 1e-3.
    assert 5e-4 < report.max_rel_err < 2e-3


def test_element_mode_finds_one_wrong_entry(rng):
    x, grad, loss = _sin_problem(rng, 40)
    grad[17] *= 1.001
    assert not check_tensor(loss, "x", x, grad).passed


def test_direction_mode_is_used_above_max_elements_and_rejects_a_transposed_gradient(rng):
    A = rng.standard_normal((20, 20))
    X = rng.standard_normal((20, 20))

    def loss() -> float:
        return float(np.sum(A * X * X))  # dL/dX = 2 A ⊙ X, not symmetric

    good = check_tensor(loss, "X", X, 2 * A * X)
    bad = check_tensor(loss, "X", X, (2 * A * X).T)
    assert good.mode == bad.mode == "directions"
    assert good.passed and not bad.passed


def test_a_nan_or_zero_gradient_is_rejected(rng):
    x, grad, loss = _sin_problem(rng, 10)
    with_nan = grad.copy()
    with_nan[3] = np.nan
    assert not check_tensor(loss, "x", x, with_nan).passed
    assert not check_tensor(loss, "x", x, np.zeros_like(grad)).passed


def test_the_tolerance_decides_the_verdict(rng):
    x, grad, loss = _sin_problem(rng, 10)
    assert check_tensor(loss, "x", x, grad * 1.001, rtol=1e-2).passed
    assert not check_tensor(loss, "x", x, grad * 1.001, rtol=RTOL).passed


def test_check_tensor_restores_the_tensor(rng):
    for size in (30, MAX_ELEMENTS + 1):
        x, grad, loss = _sin_problem(rng, size)
        before = x.copy()
        check_tensor(loss, "x", x, grad)
        np.testing.assert_array_equal(x, before)


def test_check_tensor_refuses_float32_wrong_shapes_and_views(rng):
    x, grad, loss = _sin_problem(rng, 12)
    with pytest.raises(TypeError, match=r"x: gradient checks need float64, got float32"):
        check_tensor(loss, "x", x.astype(np.float32), grad)
    with pytest.raises(ValueError, match=r"x: gradient has shape \(11,\), tensor has \(12,\)"):
        check_tensor(loss, "x", x, grad[:11])
    with pytest.raises(ValueError, match=r"x: tensor must be C-contiguous"):
        check_tensor(loss, "x", x.reshape(3, 4).T, grad.reshape(3, 4).T)


# --- check_op ----------------------------------------------------------------------------------


def test_check_op_refuses_float32_inputs(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    with pytest.raises(TypeError, match=r"x: gradient checks need float64, got float32"):
        check_op(ops.relu_forward, ops.relu_backward, {"x": x})


def test_check_op_report_fields(rng):
    inputs = {"x": rng.standard_normal((2, 3, 4)), "W": rng.standard_normal((4, 5))}
    report = check_op(ops.linear_forward, ops.linear_backward, inputs, name="lin")
    assert isinstance(report, GradcheckReport)
    assert report.name == "lin"
    # The bias gradient is None without a bias: skipped, not compared.
    assert [t.name for t in report.tensors] == ["x", "W"]
    assert [t.shape for t in report.tensors] == [(2, 3, 4), (4, 5)]
    assert all(isinstance(t, TensorReport) and t.mode == "elements" for t in report.tensors)
    assert report.checked == 24 + 20
    assert all(t.rtol == RTOL for t in report.tensors)
    assert report.max_rel_err == max(t.max_rel_err for t in report.tensors)
    assert report.max_abs_err == max(t.max_abs_err for t in report.tensors)
    assert 0 <= report.max_rel_err < 1e-6 and 0 <= report.max_abs_err < 1e-7
    assert report.passed
    text = str(report)
    assert text.splitlines()[0] == "lin: PASS"
    assert len(text.splitlines()) == 3 and text.count(" ok") == 2


def test_check_op_defaults_its_name_to_the_forward(rng):
    report = check_op(ops.relu_forward, ops.relu_backward, {"x": rng.standard_normal(5) + 3})
    assert report.name == "relu_forward"


def test_check_op_rejects_a_scaled_backward_and_reports_the_tensor(rng):
    inputs = {"x": rng.standard_normal((2, 3, 4)), "W": rng.standard_normal((4, 4))}

    def backward_dW_off(d_out, cache):
        dx, dW, db = ops.linear_backward(d_out, cache)
        return dx, dW * 1.001, db

    report = check_op(ops.linear_forward, backward_dW_off, inputs)
    assert not report.passed
    verdicts = {t.name: t.passed for t in report.tensors}
    assert verdicts == {"x": True, "W": False}
    assert "FAIL" in str(report) and "WRONG" in str(report)


def test_check_op_is_deterministic_for_a_seed(rng):
    inputs = {"x": rng.standard_normal((3, 5))}
    first = check_op(ops.softmax_forward, ops.softmax_backward, inputs, seed=3)
    again = check_op(ops.softmax_forward, ops.softmax_backward, inputs, seed=3)
    assert first.max_abs_err == again.max_abs_err


def test_check_op_complains_when_backward_returns_too_few_gradients(rng):
    inputs = {"x": rng.standard_normal((2, 3)), "fx": rng.standard_normal((2, 3))}

    def backward_one_gradient(d_out, cache):
        return d_out

    with pytest.raises(ValueError, match=r"backward returned 1 gradients for 2 inputs"):
        check_op(ops.residual_forward, backward_one_gradient, inputs)


def test_check_op_direction_mode_on_a_large_input(rng):
    inputs = {"x": rng.standard_normal((4, 100))}
    report = check_op(ops.softmax_forward, ops.softmax_backward, inputs)
    assert report.tensors[0].mode == "directions" and report.passed

    def backward_off(d_out, cache):
        return ops.softmax_backward(d_out, cache) * 1.001

    assert not check_op(ops.softmax_forward, backward_off, inputs).passed


# --- check_module ------------------------------------------------------------------------------


class _LinearForgetsBias(nn.Linear):
    """A broken module: its backward never adds into b.grad."""

    def backward(self, d_out: np.ndarray, cache: ops.LinearCache) -> tuple[np.ndarray]:
        dx, dW, _ = ops.linear_backward(d_out, cache)
        self.W.grad += dW
        return (dx,)


def test_check_module_checks_inputs_and_every_parameter(rng):
    layer = nn.Linear(4, 3, rng=0)
    report = check_module(layer, {"x": rng.standard_normal((2, 5, 4))})
    assert [t.name for t in report.tensors] == ["x", "W", "b"]
    assert report.passed, report


def test_check_module_rejects_a_module_that_forgets_a_parameter_gradient(rng):
    report = check_module(_LinearForgetsBias(4, 3, rng=0), {"x": rng.standard_normal((2, 5, 4))})
    assert not report.passed
    assert {t.name for t in report.tensors if not t.passed} == {"b"}


def _shift_invariant_problem(rng: np.random.Generator):
    """L(x, c) = Σ softmax(x + c) ⊙ G: c shifts every row by one constant, so ∂L/∂c = 0 exactly."""
    x = rng.standard_normal((3, 4))
    c = np.array([0.7])

    def forward(x, c):
        out, cache = ops.softmax_forward(x + c)
        return out, cache

    def backward(d_out, cache):
        dx = ops.softmax_backward(d_out, cache)
        return dx, np.zeros(1)

    return {"x": x, "c": c}, forward, backward


def test_an_exactly_zero_gradient_passes_against_the_checks_scale(rng):
    """b_k of attention is the real case: its numerical derivative is pure rounding noise."""
    inputs, forward, backward = _shift_invariant_problem(rng)
    report = check_op(forward, backward, inputs)
    assert report.passed, report
    assert report.tensors[1].max_abs_err < 1e-8  # noise only


def test_the_key_bias_of_attention_needs_the_scale_floor(rng):
    """∂L/∂b_k = 0 exactly; its finite difference is rounding noise that fails against 0 alone."""
    mha = nn.MultiHeadAttention(4, 2, rng=0)
    for p in mha.parameters():
        p.data[...] = rng.standard_normal(p.shape)
    x = rng.standard_normal((2, 3, 4))
    upstream = rng.standard_normal((2, 3, 4))
    mha.zero_grad()
    _, cache = mha.forward(x)
    mha.backward(upstream, cache)

    def loss() -> float:
        return float(np.sum(mha(x) * upstream))

    alone = check_tensor(loss, "b_k", mha.b_k.data, mha.b_k.grad.copy())
    assert not alone.passed and alone.max_abs_err < 1e-8  # noise divided by noise
    assert check_module(mha, {"x": x}).passed


def test_a_nonzero_gradient_where_the_truth_is_zero_is_rejected(rng):
    inputs, forward, backward = _shift_invariant_problem(rng)

    def leaky_backward(d_out, cache):
        dx, _ = backward(d_out, cache)
        return dx, np.array([1e-2 * np.max(np.abs(dx))])  # 1% of the scale leaks into dc

    report = check_op(forward, leaky_backward, inputs)
    assert [t.name for t in report.tensors if not t.passed] == ["c"], report


# --- the table ---------------------------------------------------------------------------------


def test_format_table_has_a_row_per_report_with_its_verdict(rng):
    x = rng.standard_normal((2, 3))
    good = check_op(ops.relu_forward, ops.relu_backward, {"x": x + 5}, name="good relu")
    bad = check_op(ops.relu_forward, lambda d, c: 2 * ops.relu_backward(d, c), {"x": x + 5}, name="bad relu")
    lines = format_table([good, bad]).splitlines()
    assert len(lines) == 4  # header, rule, two rows
    assert lines[2].startswith("good relu") and lines[2].endswith("PASS")
    assert lines[3].startswith("bad relu") and lines[3].endswith("FAIL")
