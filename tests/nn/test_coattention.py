"""CoAttentionLayer (§3.2, ViLBERT-style): PyTorch parity, masks, errors, and a gradient
check that must reject a backward missing the cross-stream path."""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy import ops
from mmt_numpy.checks import randn, randomize
from mmt_numpy.gradcheck import check_module
from mmt_numpy.nn import CoAttentionLayer
from mmt_numpy.torch_bridge import grads_from_torch, to_torch


def test_matches_torch_with_padding_in_both_streams() -> None:
    torch = pytest.importorskip("torch")
    B, Lt, Li, dt, di, H, F = 2, 3, 5, 4, 6, 2, 7
    ours = randomize(CoAttentionLayer(dt, di, H, F, rng=0), 1)
    theirs = to_torch(ours)  # two nn.MultiheadAttention with kdim/vdim, LayerNorms, Sequentials
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())

    text, image = randn(2, B, Lt, dt), randn(3, B, Li, di)
    lengths = {"text_lengths": np.array([3, 2]), "image_lengths": np.array([5, 2])}
    (t_out, v_out), cache = ours.forward(text, image, **lengths)

    text_t = torch.from_numpy(text.copy()).requires_grad_()
    image_t = torch.from_numpy(image.copy()).requires_grad_()
    t_ref, v_ref = theirs(text_t, image_t, **lengths)
    np.testing.assert_allclose(t_out, t_ref.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(v_out, v_ref.detach().numpy(), rtol=0, atol=1e-10)

    Gt, Gv = randn(4, *t_out.shape), randn(5, *v_out.shape)
    d_text, d_image = ours.backward((Gt, Gv), cache)
    ((t_ref * torch.from_numpy(Gt)).sum() + (v_ref * torch.from_numpy(Gv)).sum()).backward()
    np.testing.assert_allclose(d_text, text_t.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(d_image, image_t.grad.numpy(), rtol=0, atol=1e-10)
    torch_grads = grads_from_torch(ours, theirs)
    assert set(torch_grads) == {name for name, _ in ours.named_parameters()}
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, torch_grads[name], rtol=0, atol=1e-10, err_msg=name)


def test_masks_hide_padded_keys_given_as_lengths_or_padding_masks() -> None:
    m = randomize(CoAttentionLayer(4, 6, 2, 5, rng=6), 7)
    text, image = randn(8, 2, 3, 4), randn(9, 2, 4, 6)
    lengths_t, lengths_v = np.array([3, 1]), np.array([2, 4])
    keep_t, keep_v = ops.padding_mask(lengths_t, 3), ops.padding_mask(lengths_v, 4)  # (B, 1, 1, L)
    out_lengths, cache = m.forward(text, image, text_lengths=lengths_t, image_lengths=lengths_v)
    w_text, w_image = cache.weights  # (B, H, Lt, Li) words over patches, (B, H, Li, Lt) patches over words
    assert w_text.shape == (2, 2, 3, 4) and w_image.shape == (2, 2, 4, 3)
    assert np.all(w_text[0, :, :, 2:] == 0.0) and np.all(w_image[1, :, :, 1:] == 0.0)
    out_masks = m(text, image, text_mask=keep_t, image_mask=keep_v)
    for a, b in zip(out_lengths, out_masks, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_2d_mask_is_queries_by_keys_not_padding() -> None:
    """``image_mask`` of shape (Lt, Li) restricts which patches each *word* sees, for every batch
    row; it is never read as (B, Li) padding (which it used to be)."""
    m = randomize(CoAttentionLayer(4, 6, 2, 5, rng=6), 7)
    text, image = randn(8, 2, 3, 4), randn(9, 2, 4, 6)
    word_sees = np.ones((3, 4), dtype=bool)
    word_sees[0, 1:] = False  # word 0 sees patch 0 only
    _, cache = m.forward(text, image, image_mask=word_sees)
    w_text, _ = cache.weights
    np.testing.assert_allclose(w_text[:, :, 0, 0], 1.0)
    assert np.all(w_text[:, :, 1:, 1:] > 0)


def test_streams_update_from_the_inputs_not_from_each_other() -> None:
    """The image stream sees the text *input*: changing the text stream's own parameters
    (its feed-forward) changes text' but leaves image' alone."""
    m = randomize(CoAttentionLayer(4, 6, 2, 5, rng=10), 11)
    text, image = randn(12, 1, 3, 4), randn(13, 1, 2, 6)
    t1, v1 = m(text, image)
    m.text_ff.linear2.b.data += randn(14, 4)  # not a constant shift, which norm2 would remove
    t2, v2 = m(text, image)
    np.testing.assert_array_equal(v2, v1)
    assert not np.allclose(t2, t1)


def test_float32_in_float32_out() -> None:
    m = CoAttentionLayer(4, 6, 2, 5, dtype=np.float32, rng=14)
    (t, v), cache = m.forward(randn(15, 2, 3, 4).astype(np.float32), randn(16, 2, 2, 6).astype(np.float32))
    assert t.dtype == np.float32 and v.dtype == np.float32
    dt, dv = m.backward((np.ones_like(t), np.ones_like(v)), cache)
    assert dt.dtype == np.float32 and dv.dtype == np.float32


def test_same_seed_same_parameters() -> None:
    a, b = CoAttentionLayer(4, 6, 2, 5, rng=3), CoAttentionLayer(4, 6, 2, 5, rng=3)
    assert all(np.array_equal(p.data, q.data) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_bad_input_names_the_argument() -> None:
    m = CoAttentionLayer(4, 6, 2, 5)
    text, image = np.zeros((2, 3, 4)), np.zeros((2, 5, 6))
    with pytest.raises(ValueError, match=r"image: expected batch size 2 \(as text \(2, 3, 4\)\)"):
        m.forward(text, np.zeros((3, 5, 6)))
    with pytest.raises(ValueError, match=r"image: expected last dimension 6 .*got shape \(2, 5, 4\)"):
        m.forward(text, np.zeros((2, 5, 4)))
    with pytest.raises(ValueError, match=r"text_mask: a 2-D mask must broadcast to \(5, 3\), got \(2, 5\)"):
        m.forward(text, image, text_mask=np.ones((2, 5), dtype=bool))
    with pytest.raises(ValueError, match=r"image_lengths: expected values in \[0, 5\]"):
        m.forward(text, image, image_lengths=np.array([6, 1]))
    with pytest.raises(TypeError, match=r"image_mask: expected dtype bool"):
        m.forward(text, image, image_mask=np.ones((3, 5)))
    with pytest.raises(ValueError, match=r"num_heads: expected a divisor of d_model=6"):
        CoAttentionLayer(8, 6, 4, 5)
    with pytest.raises(TypeError, match="cache: expected the CoAttentionCache"):
        CoAttentionLayer(4, 6, 2, 5).backward((np.zeros((1, 1, 4)), np.zeros((1, 1, 6))), None)
    _, cache = m.forward(text, image)
    with pytest.raises(TypeError, match=r"d_out: expected a pair \(d_text_out, d_image_out\)"):
        m.backward(np.zeros((2, 3, 4)), cache)


def _check_case():
    m = randomize(CoAttentionLayer(4, 6, 2, 5, rng=17), 18)
    inputs = {"text": randn(19, 2, 3, 4), "image": randn(20, 2, 4, 6)}
    kwargs = {"text_lengths": np.array([3, 2]), "image_lengths": np.array([4, 1])}
    return m, inputs, kwargs


def test_checker_passes_the_real_backward() -> None:
    m, inputs, kwargs = _check_case()
    report = check_module(m, inputs, kwargs=kwargs, name="co-attention")
    assert report.passed, str(report)


def test_checker_rejects_a_backward_without_the_cross_stream_path(monkeypatch) -> None:
    """Forgetting that the text was also the image stream's keys and values."""
    m, inputs, kwargs = _check_case()
    real = m.image_cross_attn.backward

    def query_only(d_out, cache):
        d_query, d_kv = real(d_out, cache)
        return d_query, np.zeros_like(d_kv)  # the bug: the text's key/value gradient is dropped

    monkeypatch.setattr(m.image_cross_attn, "backward", query_only)
    report = check_module(m, inputs, kwargs=kwargs, name="co-attention, no kv path")
    assert {t.name for t in report.tensors if not t.passed} == {"text"}, str(report)
