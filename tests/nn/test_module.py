"""The Module API that every module shares: names, gradients that add up, the
forward-before-backward rule, seeds, dtypes, and train/eval mode."""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy import nn
from mmt_numpy.checks import nn as nn_checks
from mmt_numpy.checks import randn

# Every module of this part, built small, with its inputs: name -> (constructor, input shapes).
MODULES = {
    "Linear": (lambda **kw: nn.Linear(4, 3, **kw), [(2, 3, 4)]),
    "LayerNorm": (lambda **kw: nn.LayerNorm(4, dtype=kw.get("dtype", np.float64)), [(2, 3, 4)]),
    "MultiHeadAttention (self)": (lambda **kw: nn.MultiHeadAttention(4, 2, **kw), [(2, 3, 4)]),
    "MultiHeadAttention (cross)": (
        lambda **kw: nn.MultiHeadAttention(4, 2, kv_dim=6, **kw),
        [(2, 3, 4), (2, 5, 6)],
    ),
    "ArticleCrossAttention": (lambda **kw: nn.ArticleCrossAttention(4, **kw), [(2, 3, 4), (2, 5, 4)]),
    "FeedForward (gelu)": (lambda **kw: nn.FeedForward(4, 6, activation="gelu", **kw), [(2, 3, 4)]),
    "TransformerEncoderLayer": (lambda **kw: nn.TransformerEncoderLayer(4, 2, 6, **kw), [(2, 3, 4)]),
    "TransformerEncoder": (
        lambda **kw: nn.TransformerEncoder(4, 2, 6, 2, final_norm=True, **kw),
        [(2, 3, 4)],
    ),
}
WITH_RNG = [name for name in MODULES if name != "LayerNorm"]


def build(name: str, dtype=np.float64, seed: int = 0):
    make, shapes = MODULES[name]
    kwargs = {"dtype": dtype} if name == "LayerNorm" else {"dtype": dtype, "rng": seed}
    inputs = [randn(10 + i, *shape).astype(dtype) for i, shape in enumerate(shapes)]
    return make(**kwargs), inputs


def as_tuple(grads):
    return grads if isinstance(grads, tuple) else (grads,)


def test_named_parameters_use_pytorch_like_dotted_names() -> None:
    enc = nn.TransformerEncoder(4, 2, 6, num_layers=2, final_norm=True)
    names = [name for name, _ in enc.named_parameters()]
    layer = [
        "self_attn.W_q",
        "self_attn.W_k",
        "self_attn.W_v",
        "self_attn.W_o",
        "self_attn.b_q",
        "self_attn.b_k",
        "self_attn.b_v",
        "self_attn.b_o",
        "linear1.W",
        "linear1.b",
        "linear2.W",
        "linear2.b",
        "norm1.gamma",
        "norm1.beta",
        "norm2.gamma",
        "norm2.beta",
    ]
    assert names == [f"layers.{i}.{n}" for i in range(2) for n in layer] + ["norm.gamma", "norm.beta"]
    assert enc.parameters() == [p for _, p in enc.named_parameters()]
    assert nn.TransformerEncoder(4, 2, 6, num_layers=1).norm is None


@pytest.mark.parametrize("name", MODULES)
def test_backward_before_forward_is_a_clear_error(name: str) -> None:
    module, inputs = build(name)
    with pytest.raises(RuntimeError, match=r"backward called before forward"):
        module.backward(np.ones((2, 3, 4)))


@pytest.mark.parametrize("name", MODULES)
def test_gradients_add_across_backward_calls_and_zero_grad_resets(name: str) -> None:
    module, inputs = build(name)
    for p in module.parameters():  # random parameters so that no gradient is 0 by accident
        p.data[...] = 0.5 * np.random.default_rng(1).standard_normal(p.shape)
    G = randn(2, *module.forward(*inputs).shape)
    first_input_grads = as_tuple(module.backward(G))
    once = [p.grad.copy() for p in module.parameters()]
    assert any(np.abs(g).max() > 1e-3 for g in once)
    module.forward(*inputs)
    second_input_grads = as_tuple(module.backward(G))
    for p, g in zip(module.parameters(), once, strict=True):
        np.testing.assert_allclose(p.grad, 2 * g, rtol=1e-12, atol=1e-15)
    for a, b in zip(first_input_grads, second_input_grads, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)  # input gradients do not accumulate
    module.zero_grad()
    assert all(np.all(p.grad == 0) for p in module.parameters())


@pytest.mark.parametrize("name", WITH_RNG)
def test_same_seed_same_parameters(name: str) -> None:
    a, _ = build(name, seed=3)
    b, _ = build(name, seed=3)
    c, _ = build(name, seed=4)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert na == nb
        np.testing.assert_array_equal(pa.data, pb.data)
    assert any(
        not np.array_equal(pa.data, pc.data) for pa, pc in zip(a.parameters(), c.parameters(), strict=True)
    )


def test_a_generator_is_used_and_advanced() -> None:
    gen = np.random.default_rng(5)
    first, second = nn.Linear(3, 3, rng=gen), nn.Linear(3, 3, rng=gen)
    assert not np.array_equal(first.W.data, second.W.data)
    np.testing.assert_array_equal(first.W.data, nn.Linear(3, 3, rng=5).W.data)
    with pytest.raises(TypeError, match=r"rng: expected a numpy.random.Generator or an int seed, got str"):
        nn.Linear(3, 3, rng="seed")
    with pytest.raises(TypeError, match=r"dtype: expected float32 or float64, got int32"):
        nn.MultiHeadAttention(4, 2, dtype=np.int32)


@pytest.mark.parametrize("name", MODULES)
def test_float32_in_float32_out(name: str) -> None:
    module32, inputs32 = build(name, dtype=np.float32)
    module64, inputs64 = build(name, dtype=np.float64)
    assert all(p.data.dtype == np.float32 for p in module32.parameters())
    out32, out64 = module32.forward(*inputs32), module64.forward(*inputs64)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-5)
    G = randn(3, *out32.shape)
    grads32 = as_tuple(module32.backward(G.astype(np.float32)))
    grads64 = as_tuple(module64.backward(G))
    for g32, g64 in zip(grads32, grads64, strict=True):
        assert g32.dtype == np.float32
        np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-4)
    assert all(p.grad.dtype == np.float32 for p in module32.parameters())


def test_dropout_train_and_eval() -> None:
    drop = nn.Dropout(0.25, rng=6)
    x = np.ones((200, 50))
    out = drop.forward(x)
    kept = out != 0
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_allclose(out[kept], 1 / 0.75)  # survivors scaled so the mean stays 1
    G = randn(7, *x.shape)
    np.testing.assert_allclose(drop.backward(G), G * out)  # same mask, same scale as the forward
    drop.eval()
    assert drop.forward(x) is x and np.array_equal(drop.backward(G), G)
    assert np.array_equal(nn.Dropout(0.0).forward(x), x)
    with pytest.raises(ValueError, match=r"p: expected a probability in \[0, 1\], got 1.5"):
        nn.Dropout(1.5)
    with pytest.raises(TypeError, match=r"p: expected a probability in \[0, 1\], got str '0.1'"):
        nn.Dropout("0.1")


def test_encoder_layer_dropout_only_in_training() -> None:
    x = randn(8, 2, 5, 8)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.3, rng=9)
    plain = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, rng=9)  # same seed, same parameters
    train_a, train_b = layer.forward(x), layer.forward(x)
    assert not np.allclose(train_a, train_b)  # a fresh mask every call
    layer.eval()
    assert not any(m.training for m in layer.modules())
    np.testing.assert_allclose(layer.forward(x), plain.forward(x), atol=1e-15)
    layer.train()
    assert layer.dropout1.training and layer.self_attn.training


@pytest.mark.parametrize("case", nn_checks.CASES, ids=lambda case: case.name)
def test_every_module_gradient_check_passes(case) -> None:
    """The module part of ``python -m mmt_numpy gradcheck``; every input and parameter."""
    report = case.run()
    assert report.passed, str(report)
    assert len(report.tensors) >= 2  # an input and at least one parameter were compared
