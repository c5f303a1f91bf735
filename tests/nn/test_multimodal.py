"""MultimodalTransformer (§5): parity with the article's model written in PyTorch with its
fixes, padding masks, the batch-first layout, bad input, seeds, and a broken backward
that the gradient check must catch."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmt_numpy import ops
from mmt_numpy.checks import randn, randomize
from mmt_numpy.gradcheck import check_module
from mmt_numpy.nn import MultimodalTransformer
from mmt_numpy.torch_bridge import grads_from_torch, to_torch

# ---------------------------------------------------------------- the §5 model in PyTorch, fixed


@pytest.mark.parametrize(
    "positional, norm_first",
    [("sinusoidal", False), ("learned", True)],
    ids=["post-LN, sinusoidal", "pre-LN + final norm, learned"],
)
def test_matches_the_fixed_section_5_model_in_torch(positional: str, norm_first: bool) -> None:
    """The bridge's twin is the article's §5 model with mmt_numpy's fixes: ``output_dim`` an
    argument, ``batch_first=True`` so that ``dim=1`` of ``torch.cat`` really is the sequence,
    positions per modality and a modality embedding, padding as ``src_key_padding_mask``."""
    torch = pytest.importorskip("torch")
    text_dim, image_dim, D, H, layers, out_dim, F, max_len = 5, 7, 8, 2, 2, 3, 12, 16
    B, Lt, Li = 3, 4, 6
    ours = MultimodalTransformer(
        text_dim,
        image_dim,
        D,
        H,
        layers,
        out_dim,
        d_ff=F,
        max_len=max_len,
        positional=positional,
        norm_first=norm_first,
        final_norm=norm_first,
        rng=0,
    )
    randomize(ours, 1)
    theirs = to_torch(ours)
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())

    text, image = randn(2, B, Lt, text_dim), randn(3, B, Li, image_dim)
    text_lengths, image_lengths = np.array([4, 2, 3]), np.array([6, 1, 4])

    out, cache = ours.forward(text, image, text_lengths=text_lengths, image_lengths=image_lengths)
    text_t = torch.from_numpy(text.copy()).requires_grad_()
    image_t = torch.from_numpy(image.copy()).requires_grad_()
    out_t = theirs(text_t, image_t, torch.from_numpy(text_lengths), torch.from_numpy(image_lengths))
    assert out.shape == (B, Lt + Li, out_dim)
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=0, atol=1e-10)

    G = randn(4, *out.shape)
    ours.zero_grad()
    d_text, d_image = ours.backward(G, cache)
    (out_t * torch.from_numpy(G)).sum().backward()
    np.testing.assert_allclose(d_text, text_t.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(d_image, image_t.grad.numpy(), rtol=0, atol=1e-10)
    torch_grads = grads_from_torch(ours, theirs)
    assert set(torch_grads) == {name for name, _ in ours.named_parameters()}
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, torch_grads[name], rtol=0, atol=1e-10, err_msg=name)


def test_sinusoidal_positions_are_the_same_table_for_both_modalities() -> None:
    m = MultimodalTransformer(3, 4, 6, 2, 1, 2, max_len=10)
    assert not any("position" in name for name, _ in m.named_parameters())  # a fixed table
    np.testing.assert_array_equal(m.text_position.table, m.image_position.table)
    assert m.text_position.table[0, 1] == 1.0 and m.text_position.table[0, 0] == 0.0  # cos 0, sin 0


# ---------------------------------------------------------------- layout and padding


def _small_model(seed: int = 5, **kwargs) -> MultimodalTransformer:
    m = MultimodalTransformer(3, 4, 8, 2, 2, 5, d_ff=16, max_len=12, rng=seed, **kwargs)
    return randomize(m, seed + 1)


def test_batch_rows_are_independent() -> None:
    """Batch-first, so changing sample 1 leaves sample 0's output alone.  (Run with
    ``batch_first=False`` as printed in §5, PyTorch would read dim 0 as the sequence and mix
    the samples of a batch.)"""
    m = _small_model()
    text, image = randn(7, 2, 3, 3), randn(8, 2, 4, 4)
    out = m(text, image)
    text2, image2 = text.copy(), image.copy()
    text2[1] += 1.0
    image2[1] -= 1.0
    out2 = m(text2, image2)
    np.testing.assert_allclose(out2[0], out[0], rtol=0, atol=1e-12)
    assert not np.allclose(out2[1], out[1])


def test_the_article_layout_mixes_the_samples_of_a_batch_in_torch() -> None:
    """§5 as printed: ``nn.TransformerEncoderLayer`` with its default ``batch_first=False`` fed
    the ``(B, Lt + Li, hidden)`` tensor that ``torch.cat(..., dim=1)`` makes.  PyTorch reads
    dim 0 as the sequence, so sample 0's output depends on sample 1 — the bug the
    batch-first model above does not have."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0)  # batch_first=False
    encoder = torch.nn.TransformerEncoder(layer, 1, enable_nested_tensor=False).double()
    x = torch.from_numpy(randn(26, 2, 5, 8))  # (B, Lt + Li, hidden)
    x2 = x.clone()
    x2[1] += 1.0
    assert not torch.allclose(encoder(x)[0], encoder(x2)[0])


def test_padding_is_invisible_to_the_real_tokens() -> None:
    """Whatever sits in the padded slots, the outputs of real tokens do not change, and no
    query puts weight on a padded key."""
    m = _small_model()
    text, image = randn(9, 2, 4, 3), randn(10, 2, 5, 4)
    lengths = {"text_lengths": np.array([4, 2]), "image_lengths": np.array([5, 3])}
    out = m(text, image, **lengths)
    text[1, 2:] = 100.0 * randn(11, 2, 3)
    image[1, 3:] = -50.0
    out2, cache = m.forward(text, image, **lengths)
    real = np.r_[0:2, 4:7]  # row 1: text tokens 0, 1 and image patches 0, 1, 2 (at 4, 5, 6)
    np.testing.assert_allclose(out2[1, real], out[1, real], rtol=0, atol=1e-12)
    np.testing.assert_allclose(out2[0], out[0], rtol=0, atol=1e-12)
    for w in cache.weights:  # (B, H, Lt+Li, Lt+Li) each
        assert np.all(w[1, :, :, [2, 3, 7, 8]] == 0.0)
        np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-12)


def test_user_mask_is_combined_with_padding() -> None:
    m = _small_model()
    text, image = randn(12, 2, 3, 3), randn(13, 2, 2, 4)
    causal = ops.causal_mask(5)
    _, cache = m.forward(text, image, mask=causal, image_lengths=np.array([2, 1]))
    w = cache.weights[0]
    assert np.all(w[:, :, ~causal] == 0.0)  # the mask's own zeros
    assert np.all(w[1, :, :, 4] == 0.0)  # row 1's padded image patch (joint position 4)
    assert np.all(w[0, :, 4, 4] > 0.0)  # row 0's last patch is real and visible to itself


def test_modality_embedding_tells_identical_tokens_apart() -> None:
    """A text token and an image patch with the same features, the same projection and the
    same position get the same output unless their type vectors differ."""
    m = MultimodalTransformer(2, 2, 4, 2, 1, 4, max_len=4, rng=14)
    m.image_embedding.W.data[...] = m.text_embedding.W.data
    m.image_embedding.b.data[...] = m.text_embedding.b.data
    x = randn(15, 1, 1, 2)
    out = m(x, x)
    assert not np.allclose(out[0, 0], out[0, 1])
    m.modality_embedding.weight.data[1] = m.modality_embedding.weight.data[0]
    out = m(x, x)
    np.testing.assert_allclose(out[0, 0], out[0, 1], rtol=0, atol=1e-12)


def test_float32_in_float32_out() -> None:
    m = MultimodalTransformer(3, 4, 8, 2, 1, 5, dtype=np.float32, positional="learned", rng=16)
    out, cache = m.forward(
        randn(17, 2, 3, 3).astype(np.float32),
        randn(18, 2, 2, 4).astype(np.float32),
        text_lengths=np.array([3, 1]),
    )
    assert out.dtype == np.float32
    d_text, d_image = m.backward(np.ones_like(out), cache)
    assert d_text.dtype == np.float32 and d_image.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in m.parameters())


def test_same_seed_same_parameters() -> None:
    def params(seed):
        return [
            p.data
            for p in MultimodalTransformer(3, 4, 8, 2, 2, 5, positional="learned", rng=seed).parameters()
        ]

    a, b, c = params(3), params(3), params(4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_defaults_follow_the_description() -> None:
    m = MultimodalTransformer(3, 4, 8, 2, 2, 5)
    assert m.encoder.layers[0].d_ff == 32  # d_ff = 4 * hidden_dim
    assert len(m.encoder.layers) == 2 and m.output_layer.d_out == 5
    assert m.encoder.layers[1].self_attn is not m.encoder.layers[0].self_attn


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "text_shape, image_shape, kwargs, error, pattern",
    [
        ((2, 3, 3), (3, 2, 4), {}, ValueError, r"image: expected batch size 2 \(as text \(2, 3, 3\)\)"),
        ((2, 3, 5), (2, 2, 4), {}, ValueError, r"text: expected last dimension 3 .*got shape \(2, 3, 5\)"),
        ((2, 3, 3), (2, 2, 6), {}, ValueError, r"image: expected last dimension 4 .*got shape \(2, 2, 6\)"),
        ((2, 3), (2, 2, 4), {}, ValueError, r"text: expected 3 dimensions"),
        ((2, 13, 3), (2, 2, 4), {}, ValueError, r"text: sequence length 13 exceeds max_len=12"),
        (
            (2, 3, 3),
            (2, 2, 4),
            {"text_lengths": np.array([3, 1, 2])},
            ValueError,
            r"text_lengths: expected 2 integer lengths \(one per batch row\), got shape \(3,\)",
        ),
        (
            (2, 3, 3),
            (2, 2, 4),
            {"image_lengths": np.array([3, 1])},
            ValueError,
            r"image_lengths: expected values in \[0, 2\]",
        ),
        (
            (2, 3, 3),
            (2, 2, 4),
            {"text_lengths": np.array([3.0, 1.0])},
            ValueError,
            r"text_lengths: expected 2 integer lengths .*dtype float64",
        ),
        ((2, 3, 3), (2, 2, 4), {"mask": np.ones((5, 5))}, TypeError, r"mask: expected dtype bool"),
        (
            (2, 3, 3),
            (2, 2, 4),
            {"mask": np.ones((3, 3), dtype=bool)},
            ValueError,
            r"mask: a 2-D mask must broadcast to \(5, 5\), got \(3, 3\)",
        ),
    ],
)
def test_bad_input_names_the_argument(text_shape, image_shape, kwargs, error, pattern) -> None:
    m = MultimodalTransformer(3, 4, 8, 2, 1, 5, max_len=12)
    with pytest.raises(error, match=pattern):
        m.forward(np.zeros(text_shape), np.zeros(image_shape), **kwargs)


def test_bad_dtype_and_constructor_arguments() -> None:
    m = MultimodalTransformer(3, 4, 8, 2, 1, 5)
    with pytest.raises(TypeError, match=r"image: expected dtype float64 .*got float32"):
        m.forward(np.zeros((1, 2, 3)), np.zeros((1, 2, 4), dtype=np.float32))
    with pytest.raises(TypeError, match=r"text: expected dtype float32 or float64, got int64"):
        m.forward(np.zeros((1, 2, 3), dtype=np.int64), np.zeros((1, 2, 4)))
    with pytest.raises(ValueError, match=r"positional: expected one of .*got 'rope'"):
        MultimodalTransformer(3, 4, 8, 2, 1, 5, positional="rope")
    with pytest.raises(ValueError, match=r"num_heads: expected a divisor of d_model=8"):
        MultimodalTransformer(3, 4, 8, 3, 1, 5)
    with pytest.raises(ValueError, match=r"output_dim: expected a positive integer, got 0"):
        MultimodalTransformer(3, 4, 8, 2, 1, 0)
    with pytest.raises(TypeError, match="cache: expected the MultimodalCache"):
        MultimodalTransformer(3, 4, 8, 2, 1, 5).backward(np.zeros((1, 4, 5)), None)


# ---------------------------------------------------------------- the checks can fail


def _check_case(positional: str = "learned"):
    m = MultimodalTransformer(3, 4, 4, 2, 2, 3, d_ff=6, max_len=6, positional=positional, rng=20)
    randomize(m, 21)
    inputs = {"text": randn(22, 2, 3, 3), "image": randn(23, 2, 2, 4)}
    kwargs = {"text_lengths": np.array([3, 2]), "image_lengths": np.array([1, 2])}
    return m, inputs, kwargs


def test_checker_passes_the_real_backward() -> None:
    m, inputs, kwargs = _check_case()
    report = check_module(m, inputs, kwargs=kwargs, name="model")
    assert report.passed, str(report)
    assert report.max_rel_err < 1e-5


def test_checker_rejects_a_dropped_positional_path(monkeypatch) -> None:
    """A learned-position backward that passes dx on but forgets its own weight gradient."""
    m, inputs, kwargs = _check_case()
    monkeypatch.setattr(m.image_position, "backward", lambda d_out, cache: (d_out,))
    report = check_module(m, inputs, kwargs=kwargs, name="model, no image position grad")
    failed = {t.name for t in report.tensors if not t.passed}
    assert failed == {"image_position.weight"}, str(report)


def test_checker_rejects_a_missing_modality_gradient(monkeypatch) -> None:
    m, inputs, kwargs = _check_case("sinusoidal")
    monkeypatch.setattr(m.modality_embedding, "backward", lambda d_out, cache: (d_out,))
    report = check_module(m, inputs, kwargs=kwargs, name="model, no modality grad")
    failed = {t.name for t in report.tensors if not t.passed}
    assert failed == {"modality_embedding.weight"}, str(report)


def test_attention_weights_of_every_layer_are_readable() -> None:
    m = _small_model()
    _, cache = m.forward(randn(24, 2, 3, 3), randn(25, 2, 4, 4))
    shapes = [w.shape for w in cache.weights]
    assert shapes == [(2, 2, 7, 7)] * 2
    assert math.isclose(float(cache.weights[0].sum()), 2 * 2 * 7, rel_tol=1e-12)
