"""Linear and LayerNorm: initialisation, PyTorch parity, errors, and broken backwards caught."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmt_numpy import ops
from mmt_numpy.checks import randn
from mmt_numpy.gradcheck import check_module
from mmt_numpy.nn import LayerNorm, Linear
from mmt_numpy.torch_bridge import to_torch


def test_linear_init_is_pytorch_uniform() -> None:
    m = Linear(9, 200, rng=0)
    assert m.W.shape == (9, 200) and m.b.shape == (200,)
    bound = 1 / math.sqrt(9)
    for p in (m.W.data, m.b.data):
        assert np.abs(p).max() <= bound
        assert np.abs(p).max() > 0.9 * bound  # spread over the whole interval, not a narrower one
    assert abs(m.W.data.std() - bound / math.sqrt(3)) < 0.02  # the std of U(-a, a) is a/√3


def test_linear_without_bias_has_only_W() -> None:
    m = Linear(3, 2, bias=False, rng=0)
    assert m.b is None
    assert [name for name, _ in m.named_parameters()] == ["W"]
    x = randn(1, 4, 3)
    np.testing.assert_allclose(m(x), x @ m.W.data, atol=1e-15)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(bias: bool) -> None:
    torch = pytest.importorskip("torch")
    ours = Linear(5, 3, bias=bias, rng=2)
    theirs = to_torch(ours)  # PyTorch stores weight (d_out, d_in), our W transposed
    x = randn(3, 2, 4, 5)
    xt = torch.from_numpy(x.copy()).requires_grad_()
    (out, cache), out_t = ours.forward(x), theirs(xt)
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=0, atol=1e-10)
    G = randn(4, *out.shape)
    (dx,) = ours.backward(G, cache)
    (out_t * torch.from_numpy(G)).sum().backward()
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(ours.W.grad, theirs.weight.grad.numpy().T, rtol=0, atol=1e-10)
    if bias:
        np.testing.assert_allclose(ours.b.grad, theirs.bias.grad.numpy(), rtol=0, atol=1e-10)


def test_layernorm_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    ours = LayerNorm(6, eps=1e-3)
    ours.gamma.data[...] = 1 + 0.5 * randn(5, 6)
    ours.beta.data[...] = randn(6, 6)
    theirs = to_torch(ours)
    assert theirs.eps == 1e-3
    x = 3 + 2 * randn(7, 2, 4, 6)
    xt = torch.from_numpy(x.copy()).requires_grad_()
    (out, cache), out_t = ours.forward(x), theirs(xt)
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=0, atol=1e-10)
    G = randn(8, *out.shape)
    (dx,) = ours.backward(G, cache)
    (out_t * torch.from_numpy(G)).sum().backward()
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(ours.gamma.grad, theirs.weight.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(ours.beta.grad, theirs.bias.grad.numpy(), rtol=0, atol=1e-10)


def test_layernorm_starts_as_plain_normalisation() -> None:
    m = LayerNorm(8)
    out = m(5 + 3 * randn(9, 4, 8))
    np.testing.assert_allclose(out.mean(-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(out.var(-1), 1.0, atol=1e-5)  # biased variance, as PyTorch


def test_bad_input_names_the_argument() -> None:
    wrong_width = r"x: expected last dimension 4 \(to match Linear\(4, 2\)\), got shape \(3, 5\)"
    with pytest.raises(ValueError, match=wrong_width):
        Linear(4, 2).forward(np.zeros((3, 5)))
    with pytest.raises(TypeError, match=r"x: expected dtype float32 or float64, got int64"):
        Linear(4, 2).forward(np.zeros((3, 4), dtype=np.int64))
    with pytest.raises(TypeError, match=r"x: expected dtype float32 \(the dtype of Linear\(4, 2\)'s"):
        Linear(4, 2, dtype=np.float32).forward(np.zeros((3, 4)))
    with pytest.raises(TypeError, match=r"x: expected a numpy array, got list"):
        Linear(1, 2).forward([[1.0]])
    with pytest.raises(ValueError, match=r"x: expected last dimension 6 \(to match LayerNorm\(6\)\)"):
        LayerNorm(6).forward(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"d_in: expected a positive integer, got 0"):
        Linear(0, 3)
    with pytest.raises(TypeError, match=r"d_out: expected a positive integer, got float 2.0"):
        Linear(3, 2.0)
    with pytest.raises(ValueError, match=r"eps: expected a positive number, got 0"):
        LayerNorm(4, eps=0)


def test_checker_rejects_a_transposed_linear_weight_gradient(monkeypatch) -> None:
    m = Linear(4, 4, rng=10)  # square, so the transposed gradient has the right shape
    inputs = {"x": randn(11, 2, 3, 4)}
    assert check_module(m, inputs).passed
    real = ops.linear_backward

    def transposed(d_out, cache):
        dx, dW, db = real(d_out, cache)
        return dx, dW.T, db

    monkeypatch.setattr(ops, "linear_backward", transposed)
    failed = [t.name for t in check_module(m, inputs).tensors if not t.passed]
    assert failed == ["W"]


def test_checker_rejects_layernorm_without_the_mean_term(monkeypatch) -> None:
    """Forgetting that μ depends on x drops the −mean(g) term of dx."""
    m = LayerNorm(5)
    m.gamma.data[...] = 1 + 0.5 * randn(12, 5)
    inputs = {"x": randn(13, 2, 3, 5)}
    assert check_module(m, inputs).passed

    real = ops.layernorm_backward

    def without_mean_term(d_out, cache):
        x_hat, rstd, gamma = cache.x_hat, cache.rstd, cache.gamma
        _, dgamma, dbeta = real(d_out, cache)
        g = d_out * gamma
        return rstd * (g - x_hat * (g * x_hat).mean(-1, keepdims=True)), dgamma, dbeta

    monkeypatch.setattr(ops, "layernorm_backward", without_mean_term)
    failed = [t.name for t in check_module(m, inputs).tensors if not t.passed]
    assert failed == ["x"]
