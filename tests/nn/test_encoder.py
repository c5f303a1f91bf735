"""TransformerEncoderLayer, TransformerEncoder and FeedForward: PyTorch parity, the two
residual layouts, errors, and checks that a broken backward is caught."""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy import ops
from mmt_numpy.checks import randn, randomize
from mmt_numpy.gradcheck import check_module
from mmt_numpy.nn import FeedForward, TransformerEncoder, TransformerEncoderLayer
from mmt_numpy.torch_bridge import grads_from_torch, to_torch, torch_mask


def assert_grads_match(ours, theirs) -> None:
    """Every parameter gradient of ours equals its PyTorch twin's (through the bridge) within 1e-10."""
    torch_grads = grads_from_torch(ours, theirs)
    assert set(torch_grads) == {name for name, _ in ours.named_parameters()}
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, torch_grads[name], rtol=0, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_tanh"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_layer_matches_torch(norm_first: bool, activation: str) -> None:
    torch = pytest.importorskip("torch")
    B, L, D, H, F = 2, 5, 8, 2, 12
    ours = randomize(TransformerEncoderLayer(D, H, F, norm_first=norm_first, activation=activation, rng=0), 1)
    theirs = to_torch(ours)
    assert isinstance(theirs, torch.nn.TransformerEncoderLayer) and theirs.norm_first == norm_first
    x = randn(2, B, L, D)
    keep = ops.padding_mask([5, 3], L)  # True = real token; PyTorch's src_key_padding_mask is ~keep

    out, cache = ours.forward(x, mask=keep)
    xt = torch.from_numpy(x.copy()).requires_grad_()
    out_t = theirs(xt, src_key_padding_mask=torch_mask(keep[:, 0, 0, :]))
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=0, atol=1e-10)

    G = randn(3, *out.shape)
    (dx,) = ours.backward(G, cache)
    (out_t * torch.from_numpy(G)).sum().backward()
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=0, atol=1e-10)
    assert_grads_match(ours, theirs)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_two_layer_encoder_with_final_norm_matches_torch(norm_first: bool) -> None:
    torch = pytest.importorskip("torch")
    B, L, D, H, F = 2, 4, 8, 4, 16
    ours = randomize(
        TransformerEncoder(D, H, F, num_layers=2, norm_first=norm_first, final_norm=True, rng=4), 5
    )
    theirs = to_torch(ours)
    x = randn(6, B, L, D)
    causal = ops.causal_mask(L)  # PyTorch's boolean mask= is ~causal (True = not allowed)

    out, cache = ours.forward(x, mask=causal)
    xt = torch.from_numpy(x.copy()).requires_grad_()
    out_t = theirs(xt, mask=torch_mask(causal))
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=0, atol=1e-10)

    G = randn(7, *out.shape)
    (dx,) = ours.backward(G, cache)
    (out_t * torch.from_numpy(G)).sum().backward()
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=0, atol=1e-10)
    assert_grads_match(ours, theirs)
    assert len(cache.weights) == 2 and cache.weights[1].shape == (B, H, L, L)


def test_parameter_count_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    ours = TransformerEncoderLayer(16, 4, 32)
    theirs = torch.nn.TransformerEncoderLayer(16, 4, 32, batch_first=True)
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())


def test_a_shared_layer_stack_has_no_torch_twin() -> None:
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match="TransformerEncoder shares Parameters between submodules"):
        to_torch(TransformerEncoder(8, 2, 16, 2, share_layers=True))


# ---------------------------------------------------------------- structure


def test_post_ln_output_is_normalised_and_pre_ln_is_not() -> None:
    """Post-LN ends with norm2 (each row: mean β, std |γ|); pre-LN ends with a residual sum."""
    x = 3.0 + 2.0 * randn(8, 2, 4, 8)
    post = TransformerEncoderLayer(8, 2, 16, norm_first=False, rng=9)(x)
    pre = TransformerEncoderLayer(8, 2, 16, norm_first=True, rng=9)(x)
    np.testing.assert_allclose(post.mean(-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(post.std(-1), 1.0, atol=1e-4)
    assert np.abs(pre.mean(-1)).min() > 0.5  # x's mean of 3 survives along the identity path


def test_feedforward_is_linear_activation_linear() -> None:
    ff = randomize(FeedForward(4, 6, activation="relu", rng=10), 11)
    x = randn(12, 2, 3, 4)
    hidden = np.maximum(x @ ff.linear1.W.data + ff.linear1.b.data, 0.0)
    np.testing.assert_allclose(ff(x), hidden @ ff.linear2.W.data + ff.linear2.b.data, atol=1e-12)


# ---------------------------------------------------------------- bad input


def test_bad_input_names_the_argument() -> None:
    layer = TransformerEncoderLayer(8, 2, 16)
    with pytest.raises(ValueError, match=r"x: expected last dimension 8.*got shape \(2, 3, 6\)"):
        layer.forward(np.zeros((2, 3, 6)))
    with pytest.raises(ValueError, match=r"x: expected 3 dimensions, got shape \(3, 8\)"):
        layer.forward(np.zeros((3, 8)))
    with pytest.raises(ValueError, match=r"mask: a 2-D mask must broadcast to \(3, 3\), got \(4, 4\)"):
        layer.forward(np.zeros((2, 3, 8)), mask=np.ones((4, 4), dtype=bool))
    with pytest.raises(ValueError, match=r"activation: expected one of .*got 'tanh'"):
        TransformerEncoderLayer(8, 2, 16, activation="tanh")
    with pytest.raises(ValueError, match=r"num_heads: expected a divisor of d_model=8"):
        TransformerEncoder(8, 3, 16, num_layers=2)
    with pytest.raises(ValueError, match=r"num_layers: expected a positive integer, got 0"):
        TransformerEncoder(8, 2, 16, num_layers=0)


# ---------------------------------------------------------------- the checks can fail


def _layer_case(norm_first: bool):
    layer = randomize(TransformerEncoderLayer(4, 2, 6, norm_first=norm_first, rng=13), 14)
    return layer, {"x": randn(15, 2, 3, 4)}


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_checker_rejects_a_dropped_residual_path(monkeypatch, norm_first: bool) -> None:
    layer, inputs = _layer_case(norm_first)
    assert check_module(layer, inputs, name="layer").passed

    def residual_backward_without_identity(d_out, cache):
        # out = x + f(x), but the bug sends nothing along the identity path
        return np.zeros_like(d_out), d_out

    monkeypatch.setattr(ops, "residual_backward", residual_backward_without_identity)
    report = check_module(layer, inputs, name="layer, no identity path")
    assert not report.passed
    assert "x" in {t.name for t in report.tensors if not t.passed}, str(report)


def test_checker_rejects_a_forgotten_activation_derivative(monkeypatch) -> None:
    """Treating ReLU's backward as the identity is wrong wherever the ReLU was off."""
    ff = randomize(FeedForward(4, 6, rng=16), 17)
    inputs = {"x": randn(18, 2, 3, 4)}
    assert check_module(ff, inputs).passed
    monkeypatch.setattr(ops, "relu_backward", lambda d_out, cache: d_out)
    failed = {t.name for t in check_module(ff, inputs).tensors if not t.passed}
    assert {"x", "linear1.W", "linear1.b"} <= failed
    assert "linear2.b" not in failed  # downstream of the ReLU, still right
