"""TransformerDecoderLayer and TransformerDecoder: PyTorch parity (both norm placements, relu and
gelu, a causal tgt_mask and a memory key padding mask), the structure of the three sub-layers,
errors, and checks that a broken backward is caught."""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy import ops
from mmt_numpy.checks import randn, randomize
from mmt_numpy.checks.decoder import decoder_case, decoder_layer_case
from mmt_numpy.gradcheck import check_module
from mmt_numpy.nn import TransformerDecoder, TransformerDecoderLayer
from mmt_numpy.torch_bridge import to_torch, torch_mask
from tests.nn.test_encoder import assert_grads_match

B, T, Lm, D, H, F = 2, 5, 4, 8, 2, 12


def _compare_with_torch(ours, seed: int) -> None:
    """Output, both input gradients and every parameter gradient equal the twin's within 1e-10."""
    torch = pytest.importorskip("torch")
    theirs = to_torch(ours)
    x, memory = randn(seed, B, T, D), randn(seed + 1, B, Lm, D)
    causal = ops.causal_mask(T)
    keep = ops.padding_mask([4, 2], Lm)  # True = real patch; PyTorch's key padding mask is ~keep

    out, cache = ours.forward(x, memory, mask=causal, memory_mask=keep)
    xt = torch.from_numpy(x.copy()).requires_grad_()
    mt = torch.from_numpy(memory.copy()).requires_grad_()
    out_t = theirs(xt, mt, tgt_mask=torch_mask(causal), memory_key_padding_mask=torch_mask(keep[:, 0, 0]))
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=0, atol=1e-10)

    G = randn(seed + 2, *out.shape)
    ours.zero_grad()
    dx, d_memory = ours.backward(G, cache)
    (out_t * torch.from_numpy(G)).sum().backward()
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(d_memory, mt.grad.numpy(), rtol=0, atol=1e-10)
    assert_grads_match(ours, theirs)


@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_tanh"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_layer_matches_torch(norm_first: bool, activation: str) -> None:
    torch = pytest.importorskip("torch")
    ours = randomize(TransformerDecoderLayer(D, H, F, norm_first=norm_first, activation=activation, rng=0), 1)
    twin = to_torch(ours)
    assert isinstance(twin, torch.nn.TransformerDecoderLayer) and twin.norm_first == norm_first
    _compare_with_torch(ours, 2)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_two_layer_decoder_with_final_norm_matches_torch(norm_first: bool, activation: str) -> None:
    torch = pytest.importorskip("torch")
    ours = randomize(
        TransformerDecoder(D, H, F, 2, norm_first=norm_first, activation=activation, final_norm=True, rng=3),
        4,
    )
    assert isinstance(to_torch(ours), torch.nn.TransformerDecoder)
    _compare_with_torch(ours, 5)


def test_parameter_count_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    ours = TransformerDecoderLayer(16, 4, 32)
    theirs = torch.nn.TransformerDecoderLayer(16, 4, 32, batch_first=True)
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())
    names = [n for n, _ in ours.named_parameters()]
    assert names[0] == "self_attn.W_q" and "cross_attn.W_o" in names
    assert [n for n in names if n.startswith("norm")] == [
        f"norm{i}.{p}" for i in (1, 2, 3) for p in ("gamma", "beta")
    ]


# ---------------------------------------------------------------- structure


def test_the_causal_mask_hides_the_future() -> None:
    """With the causal mask, changing token t changes no output before t."""
    layer = randomize(TransformerDecoderLayer(D, H, F, rng=6), 7)
    x, memory = randn(8, B, T, D), randn(9, B, Lm, D)
    out = layer(x, memory, mask=ops.causal_mask(T))
    x2 = x.copy()
    x2[:, 3] += 1.0
    out2 = layer(x2, memory, mask=ops.causal_mask(T))
    np.testing.assert_array_equal(out[:, :3], out2[:, :3])
    assert np.abs(out[:, 3:] - out2[:, 3:]).min() > 0
    # without it, every position sees token 3
    assert np.abs(layer(x, memory)[:, :3] - layer(x2, memory)[:, :3]).min() > 0


def test_padded_patches_change_nothing() -> None:
    """Memory positions masked out by memory_mask may hold anything."""
    dec = randomize(TransformerDecoder(D, H, F, 2, norm_first=True, final_norm=True, rng=10), 11)
    x, memory = randn(12, B, T, D), randn(13, B, Lm, D)
    keep = ops.padding_mask([4, 2], Lm)
    junk = memory.copy()
    junk[1, 2:] = 1e3
    np.testing.assert_allclose(
        dec(x, memory, mask=ops.causal_mask(T), memory_mask=keep),
        dec(x, junk, mask=ops.causal_mask(T), memory_mask=keep),
        rtol=0,
        atol=1e-13,
    )


def test_a_memory_mask_per_text_position_equals_key_padding() -> None:
    """memory_mask (B, T, Lm), one row per text position, against the same padding as (B, 1, 1, Lm)."""
    dec = randomize(TransformerDecoder(D, H, F, 2, rng=24), 25)
    x, memory = randn(26, B, T, D), randn(27, B, Lm, D)
    keep = ops.padding_mask([4, 2], Lm)
    per_position = np.broadcast_to(keep[:, 0], (B, T, Lm)).copy()
    np.testing.assert_allclose(
        dec(x, memory, mask=ops.causal_mask(T), memory_mask=per_position),
        dec(x, memory, mask=ops.causal_mask(T), memory_mask=keep),
        rtol=0,
        atol=1e-14,
    )


def test_weights_of_both_attentions_are_in_the_cache() -> None:
    dec = TransformerDecoder(D, H, F, 2, rng=14)
    _, cache = dec.forward(randn(15, B, T, D), randn(16, B, Lm, D), mask=ops.causal_mask(T))
    assert [w.shape for w in cache.weights] == [(B, H, T, T)] * 2
    assert [w.shape for w in cache.cross_weights] == [(B, H, T, Lm)] * 2
    np.testing.assert_array_equal(np.triu(cache.weights[0][0, 0], 1), 0.0)
    np.testing.assert_allclose(cache.cross_weights[1].sum(-1), 1.0, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_in_dtype_out(dtype) -> None:
    dec = TransformerDecoder(D, H, F, 2, final_norm=True, dtype=dtype, rng=17)
    x, memory = randn(18, B, T, D).astype(dtype), randn(19, B, Lm, D).astype(dtype)
    out, cache = dec.forward(x, memory, mask=ops.causal_mask(T))
    dx, d_memory = dec.backward(np.ones_like(out), cache)
    assert {out.dtype, dx.dtype, d_memory.dtype} == {np.dtype(dtype)}
    assert {p.grad.dtype for p in dec.parameters()} == {np.dtype(dtype)}


# ---------------------------------------------------------------- bad input


def test_bad_input_names_the_argument() -> None:
    layer = TransformerDecoderLayer(D, H, F)
    x, memory = np.zeros((B, T, D)), np.zeros((B, Lm, D))
    with pytest.raises(ValueError, match=r"memory: expected last dimension 8.*got shape \(2, 4, 6\)"):
        layer.forward(x, np.zeros((B, Lm, 6)))
    with pytest.raises(
        ValueError, match=r"memory: expected batch size 2 \(as x \(2, 5, 8\)\), got shape \(3, 4, 8\)"
    ):
        layer.forward(x, np.zeros((3, Lm, D)))
    with pytest.raises(TypeError, match=r"memory: expected dtype float64"):
        layer.forward(x, memory.astype(np.float32))
    with pytest.raises(ValueError, match=r"x: expected 3 dimensions"):
        layer.forward(x[0], memory)
    with pytest.raises(ValueError, match=r"mask: a 2-D mask must broadcast to \(5, 5\), got \(4, 4\)"):
        layer.forward(x, memory, mask=ops.causal_mask(4))
    with pytest.raises(
        ValueError, match=r"mask: a 4-D mask must broadcast to \(2, 2, 5, 4\), got \(2, 1, 1, 5\)"
    ):
        layer.forward(x, memory, memory_mask=ops.padding_mask([5, 5], 5))
    with pytest.raises(TypeError, match=r"cache: expected the DecoderLayerCache"):
        layer.backward(np.zeros((B, T, D)), object())
    with pytest.raises(TypeError, match=r"norm_first|unexpected keyword|positional"):
        TransformerDecoderLayer(D, H, F, True)  # the options are keyword-only
    with pytest.raises(ValueError, match=r"num_layers: expected a positive integer, got 0"):
        TransformerDecoder(D, H, F, 0)


# ---------------------------------------------------------------- the checks can fail


def test_catalogue_cases_pass() -> None:
    assert decoder_layer_case(False, "relu").passed
    assert decoder_case().passed


def test_checker_rejects_a_memory_gradient_from_the_last_layer_only(monkeypatch) -> None:
    """Every layer reads the memory; a backward that keeps only one layer's share is wrong."""

    def last_layer_only(self, d_out, cache):
        d_out = self.norm.backward(d_out, cache.norm)[0] if self.norm is not None else d_out
        d_memory = None
        for layer, c in zip(reversed(self.layers), reversed(cache.layers), strict=True):
            d_out, d_mem = layer.backward(d_out, c)
            d_memory = d_mem if d_memory is None else d_memory
        return d_out, d_memory

    monkeypatch.setattr(TransformerDecoder, "backward", last_layer_only)
    report = decoder_case()
    assert not report.passed
    assert {t.name for t in report.tensors if not t.passed} == {"memory"}, str(report)


def test_checker_rejects_attention_that_forgets_its_value_path(monkeypatch) -> None:
    """out = weights @ v: a backward that drops dv leaves the memory's value path out."""
    assert decoder_layer_case(True, "gelu").passed
    real = ops.attention_backward

    def no_value_gradient(d_out, cache):
        dq, dk, dv = real(d_out, cache)
        return dq, dk, np.zeros_like(dv)

    monkeypatch.setattr(ops, "attention_backward", no_value_gradient)
    failed = {t.name for t in decoder_layer_case(True, "gelu").tensors if not t.passed}
    assert {"x", "memory", "cross_attn.W_v", "self_attn.W_v"} <= failed


def test_checker_rejects_a_dropped_third_residual(monkeypatch) -> None:
    layer = randomize(TransformerDecoderLayer(4, 2, 6, rng=20), 21)
    inputs = {"x": randn(22, 2, 3, 4), "memory": randn(23, 2, 5, 4)}
    assert check_module(layer, inputs, kwargs={"mask": ops.causal_mask(3)}).passed
    real = ops.residual_backward
    calls = []

    def drop_first_identity(d_out, cache):
        calls.append(1)
        d_x, d_y = real(d_out, cache)
        # the first residual met in the backward is the feed-forward's (h = x2 + ff(x2))
        return (np.zeros_like(d_x) if len(calls) % 3 == 1 else d_x), d_y

    monkeypatch.setattr(ops, "residual_backward", drop_first_identity)
    assert not check_module(layer, inputs, kwargs={"mask": ops.causal_mask(3)}).passed
