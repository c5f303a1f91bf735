"""The Module API that every module shares: names, caches that are values, gradients that add
up (reuse, shared layers, tied weights), seeds, dtypes, and train/eval mode."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from mmt_numpy import nn, ops
from mmt_numpy.checks import nn as nn_checks
from mmt_numpy.checks import randn, randomize
from mmt_numpy.checks import reuse as reuse_checks
from mmt_numpy.gradcheck import check_module
from mmt_numpy.optim import Adam

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
def test_backward_without_its_cache_is_a_clear_error(name: str) -> None:
    module, inputs = build(name)
    out, _ = module.forward(*inputs)
    with pytest.raises(TypeError, match=r"cache: expected the \w+ that \w+\.forward returned"):
        module.backward(np.ones_like(out), out)  # the output passed where the cache goes


@pytest.mark.parametrize("name", MODULES)
def test_backward_returns_one_gradient_per_float_input_as_a_tuple(name: str) -> None:
    module, inputs = build(name)
    out, cache = module.forward(*inputs)
    grads = module.backward(np.ones_like(out), cache)
    assert isinstance(grads, tuple) and len(grads) == len(inputs)
    assert [g.shape for g in grads] == [x.shape for x in inputs]


def test_integer_inputs_get_no_gradient_entry() -> None:
    emb = nn.Embedding(5, 3, rng=0)
    out, cache = emb.forward(np.array([[1, 2], [4, 1]]))
    assert emb.backward(np.ones_like(out), cache) == ()


@pytest.mark.parametrize("name", MODULES)
def test_a_module_keeps_nothing_of_a_call(name: str) -> None:
    """No attribute appears or changes in forward: the cache is the only record of a call."""
    module, inputs = build(name)
    before = {m_id: dict(vars(m)) for m_id, m in enumerate(module.modules())}
    out, cache = module.forward(*inputs)
    module(*inputs)
    after = {m_id: dict(vars(m)) for m_id, m in enumerate(module.modules())}
    assert before.keys() == after.keys()
    for m_id in before:
        assert before[m_id].keys() == after[m_id].keys()
        assert all(before[m_id][k] is after[m_id][k] for k in before[m_id])


@pytest.mark.parametrize("name", MODULES)
def test_calling_a_module_is_inference_and_equals_forward(name: str) -> None:
    module, inputs = build(name)
    out, _ = module.forward(*inputs)
    np.testing.assert_array_equal(module(*inputs), out)


def test_ten_thousand_inference_calls_keep_memory_flat() -> None:
    layer = nn.TransformerEncoderLayer(16, 2, 32, rng=0)
    x = randn(1, 1, 8, 16)
    for _ in range(50):  # warm up allocator pools
        layer(x)
    tracemalloc.start()
    try:
        for _ in range(200):
            layer(x)
        early, _ = tracemalloc.get_traced_memory()
        for _ in range(10_000 - 250):
            layer(x)
        late, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert late - early < 64 * 1024, f"memory grew by {late - early} bytes over 10,000 calls"


@pytest.mark.parametrize("name", MODULES)
def test_gradients_add_across_backward_calls_and_zero_grad_resets(name: str) -> None:
    module, inputs = build(name)
    for p in module.parameters():  # random parameters so that no gradient is 0 by accident
        p.data[...] = 0.5 * np.random.default_rng(1).standard_normal(p.shape)
    out, cache = module.forward(*inputs)
    G = randn(2, *out.shape)
    first_input_grads = module.backward(G, cache)
    once = [p.grad.copy() for p in module.parameters()]
    assert any(np.abs(g).max() > 1e-3 for g in once)
    _, cache = module.forward(*inputs)
    second_input_grads = module.backward(G, cache)
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
    with pytest.raises(
        TypeError, match=r"rng: expected a numpy.random.Generator or an integer seed >= 0, got str"
    ):
        nn.Linear(3, 3, rng="seed")
    with pytest.raises(TypeError, match=r"dtype: expected float32 or float64, got int32"):
        nn.MultiHeadAttention(4, 2, dtype=np.int32)


@pytest.mark.parametrize("name", MODULES)
def test_float32_in_float32_out(name: str) -> None:
    module32, inputs32 = build(name, dtype=np.float32)
    module64, inputs64 = build(name, dtype=np.float64)
    assert all(p.data.dtype == np.float32 for p in module32.parameters())
    (out32, cache32), (out64, cache64) = module32.forward(*inputs32), module64.forward(*inputs64)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-5)
    G = randn(3, *out32.shape)
    grads32 = module32.backward(G.astype(np.float32), cache32)
    grads64 = module64.backward(G, cache64)
    with pytest.raises(
        TypeError, match=r"d_out: expected dtype float32 \(the forward output's\), got float64"
    ):
        module32.backward(G, cache32)
    for g32, g64 in zip(grads32, grads64, strict=True):
        assert g32.dtype == np.float32
        np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-4)
    assert all(p.grad.dtype == np.float32 for p in module32.parameters())


def test_dropout_train_and_eval() -> None:
    drop = nn.Dropout(0.25, rng=6)
    x = np.ones((200, 50))
    out, cache = drop.forward(x)
    kept = out != 0
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_allclose(out[kept], 1 / 0.75)  # survivors scaled so the mean stays 1
    G = randn(7, *x.shape)
    np.testing.assert_allclose(drop.backward(G, cache)[0], G * out)  # same mask, same scale as the forward
    assert not np.array_equal(drop(x), out)  # calling it in training mode drops too, a fresh mask
    drop.eval()
    out, cache = drop.forward(x)
    assert out is x and np.array_equal(drop.backward(G, cache)[0], G)
    assert drop(x) is x
    assert np.array_equal(nn.Dropout(0.0)(x), x)
    with pytest.raises(ValueError, match=r"p: expected a probability in \[0, 1\], got 1.5"):
        nn.Dropout(1.5)
    with pytest.raises(TypeError, match=r"p: expected a probability in \[0, 1\], got str '0.1'"):
        nn.Dropout("0.1")


def test_encoder_layer_dropout_only_in_training() -> None:
    x = randn(8, 2, 5, 8)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.3, rng=9)
    plain = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, rng=9)  # same seed, same parameters
    train_a, train_b = layer(x), layer(x)
    assert not np.allclose(train_a, train_b)  # a fresh mask every call
    layer.eval()
    assert not any(m.training for m in layer.modules())
    np.testing.assert_allclose(layer(x), plain(x), atol=1e-15)
    layer.train()
    assert layer.dropout1.training and layer.self_attn.training


@pytest.mark.parametrize("case", nn_checks.CASES, ids=lambda case: case.name)
def test_every_module_gradient_check_passes(case) -> None:
    """The module part of ``python -m mmt_numpy gradcheck``; every input and parameter."""
    report = case.run()
    assert report.passed, str(report)
    assert len(report.tensors) >= 2  # an input and at least one parameter were compared


# ---------------------------------------------------------------- reuse is correct by construction


class LastCallWins(nn.Linear):
    """The old contract, for contrast: the module keeps the cache of its last forward and its
    backward ignores the cache it is given.  Used twice before backward, it is wrong."""

    def forward(self, x):
        out, self._last = super().forward(x)
        return out, self._last

    def backward(self, d_out, cache):
        return super().backward(d_out, self._last)


def test_a_module_used_twice_gets_the_sum_of_both_gradients() -> None:
    """Linear on x1 then x2, backward d2 then d1: W.grad = x1ᵀ d1 + x2ᵀ d2 (measured 3.8 off before)."""
    m = nn.Linear(4, 3, rng=0)
    x1, x2, d1, d2 = randn(1, 2, 5, 4), randn(2, 7, 4), randn(3, 2, 5, 3), randn(4, 7, 3)
    _, c1 = m.forward(x1)
    _, c2 = m.forward(x2)
    (dx2,) = m.backward(d2, c2)
    (dx1,) = m.backward(d1, c1)
    expected = x1.reshape(-1, 4).T @ d1.reshape(-1, 3) + x2.T @ d2
    np.testing.assert_allclose(m.W.grad, expected, rtol=1e-13)
    np.testing.assert_allclose(dx1, d1 @ m.W.data.T, rtol=1e-13)
    np.testing.assert_allclose(dx2, d2 @ m.W.data.T, rtol=1e-13)


@pytest.mark.parametrize("case", reuse_checks.CASES, ids=lambda case: case.name)
def test_every_reuse_gradient_check_passes(case) -> None:
    report = case.run()
    assert report.passed, str(report)


def test_the_checker_rejects_a_module_that_keeps_its_last_cache() -> None:
    m = reuse_checks.UsedTwice(LastCallWins(4, 3, rng=0))
    report = check_module(m, {"x1": randn(1, 2, 3, 4), "x2": randn(2, 2, 3, 4)})
    assert not report.passed


class EncoderWithStaleLayerCaches(nn.TransformerEncoder):
    """Broken: back-propagates every position of a shared stack with the last call's cache."""

    def backward(self, d_out, cache):
        (d_out,) = self.norm.backward(d_out, cache.norm)
        for layer in reversed(self.layers):
            (d_out,) = layer.backward(d_out, cache.layers[-1])
        return (d_out,)


def test_albert_encoder_lists_one_layer_and_rejects_stale_caches() -> None:
    enc = randomize(nn.TransformerEncoder(4, 2, 6, 3, True, final_norm=True, share_layers=True, rng=0), 1)
    assert enc.layers[0] is enc.layers[1] is enc.layers[2]
    names = [n for n, _ in enc.named_parameters()]
    assert all(not n.startswith(("layers.1.", "layers.2.")) for n in names) and len(names) == 16 + 2
    single = nn.TransformerEncoderLayer(4, 2, 6).num_parameters() + 2 * 4
    assert enc.num_parameters() == single
    broken = EncoderWithStaleLayerCaches(4, 2, 6, 3, True, final_norm=True, share_layers=True, rng=0)
    randomize(broken, 1)
    assert not check_module(broken, {"x": randn(2, 2, 3, 4)}).passed


class ForgetsTheTiedGradient(nn.TiedOutputProjection):
    """Broken: the output projection's gradient never reaches the shared table."""

    def backward(self, d_logits, cache):
        dh, _, db = ops.linear_backward(d_logits, cache.linear)
        self.b.grad += db
        return (dh,)


def test_tied_weights_are_one_parameter_with_both_gradients() -> None:
    lm = reuse_checks.TiedLanguageModel(6, 4, rng=0)
    assert lm.output.weight is lm.embedding.weight
    names = [n for n, _ in lm.named_parameters()]
    assert names == ["embedding.weight", "hidden.W", "hidden.b", "output.b"]
    assert lm.num_parameters() == 6 * 4 + 4 * 4 + 4 + 6
    Adam(lm.parameters())  # accepted: the shared table is listed once
    lm.output = ForgetsTheTiedGradient(lm.embedding, bias=True)
    randomize(lm, 2)
    report = check_module(lm, {"ids": np.array([[1, 3, 1], [0, 5, 2]])})
    assert not report.passed
    assert [t.name for t in report.tensors if not t.passed] == ["embedding.weight"]


def test_a_shared_parameter_is_saved_once_and_restored_everywhere(tmp_path) -> None:
    lm = randomize(reuse_checks.TiedLanguageModel(6, 4, rng=0), 3)
    nn.save(lm, tmp_path / "lm.npz")
    with np.load(tmp_path / "lm.npz") as archive:
        assert sorted(archive.files) == ["embedding.weight", "hidden.W", "hidden.b", "output.b"]
    fresh = reuse_checks.TiedLanguageModel(6, 4, rng=9)
    nn.load(fresh, tmp_path / "lm.npz")
    assert fresh.output.weight is fresh.embedding.weight
    np.testing.assert_array_equal(fresh.output.weight.data, lm.embedding.weight.data)
    ids = np.array([[1, 2, 3]])
    np.testing.assert_array_equal(fresh(ids), lm(ids))
