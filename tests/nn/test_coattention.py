"""CoAttentionLayer (§3.2, ViLBERT-style): PyTorch parity, masks, errors, and a gradient
check that must reject a backward missing the cross-stream path."""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy import ops
from mmt_numpy.checks import randn, randomize
from mmt_numpy.checks.multimodal import BothOutputs
from mmt_numpy.gradcheck import check_module
from mmt_numpy.nn import CoAttentionLayer
from tests.nn.torch_mapping import mha_grads_from_torch, mha_to_torch


def make_torch_layer(d_text: int, d_image: int, num_heads: int, d_ff: int):
    """The same layer from PyTorch parts: two ``nn.MultiheadAttention`` with ``kdim``/``vdim``."""
    from torch import nn

    class TorchCoAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for stream, d, other in (("text", d_text, d_image), ("image", d_image, d_text)):
                setattr(
                    self,
                    f"{stream}_cross_attn",
                    nn.MultiheadAttention(d, num_heads, kdim=other, vdim=other, batch_first=True),
                )
                setattr(self, f"{stream}_norm1", nn.LayerNorm(d))
                setattr(
                    self, f"{stream}_ff", nn.Sequential(nn.Linear(d, d_ff), nn.ReLU(), nn.Linear(d_ff, d))
                )
                setattr(self, f"{stream}_norm2", nn.LayerNorm(d))

        def stream(self, name, x, other, other_ignore):
            attended, _ = getattr(self, f"{name}_cross_attn")(x, other, other, key_padding_mask=other_ignore)
            x1 = getattr(self, f"{name}_norm1")(x + attended)
            return getattr(self, f"{name}_norm2")(x1 + getattr(self, f"{name}_ff")(x1))

        def forward(self, text, image, text_ignore, image_ignore):
            return (
                self.stream("text", text, image, image_ignore),
                self.stream("image", image, text, text_ignore),
            )

    return TorchCoAttention().double()


# ours -> (PyTorch's name without the stream prefix, transposed)
STREAM_NAMES = {
    "norm1.gamma": ("norm1.weight", False),
    "norm1.beta": ("norm1.bias", False),
    "norm2.gamma": ("norm2.weight", False),
    "norm2.beta": ("norm2.bias", False),
    "ff.linear1.W": ("ff.0.weight", True),
    "ff.linear1.b": ("ff.0.bias", False),
    "ff.linear2.W": ("ff.2.weight", True),
    "ff.linear2.b": ("ff.2.bias", False),
}


def test_matches_torch_with_padding_in_both_streams() -> None:
    torch = pytest.importorskip("torch")
    B, Lt, Li, dt, di, H, F = 2, 3, 5, 4, 6, 2, 7
    ours = randomize(CoAttentionLayer(dt, di, H, F, rng=0), 1)
    theirs = make_torch_layer(dt, di, H, F)
    params, torch_params = dict(ours.named_parameters()), dict(theirs.named_parameters())
    with torch.no_grad():
        for stream in ("text", "image"):
            mha_to_torch(getattr(ours, f"{stream}_cross_attn"), getattr(theirs, f"{stream}_cross_attn"))
            for name, (torch_name, transposed) in STREAM_NAMES.items():
                data = params[f"{stream}_{name}"].data
                data = data.T if transposed else data
                torch_params[f"{stream}_{torch_name}"].copy_(torch.from_numpy(data.copy()))
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())

    text, image = randn(2, B, Lt, dt), randn(3, B, Li, di)
    text_keep = ops.padding_mask([3, 2], Lt)[:, 0, 0]  # (B, Lt), True = real token
    image_keep = ops.padding_mask([5, 2], Li)[:, 0, 0]
    t_out, v_out = ours.forward(text, image, text_mask=text_keep, image_mask=image_keep)

    text_t = torch.from_numpy(text.copy()).requires_grad_()
    image_t = torch.from_numpy(image.copy()).requires_grad_()
    t_ref, v_ref = theirs(text_t, image_t, torch.from_numpy(~text_keep), torch.from_numpy(~image_keep))
    np.testing.assert_allclose(t_out, t_ref.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(v_out, v_ref.detach().numpy(), rtol=0, atol=1e-10)

    Gt, Gv = randn(4, *t_out.shape), randn(5, *v_out.shape)
    d_text, d_image = ours.backward(Gt, Gv)
    ((t_ref * torch.from_numpy(Gt)).sum() + (v_ref * torch.from_numpy(Gv)).sum()).backward()
    np.testing.assert_allclose(d_text, text_t.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(d_image, image_t.grad.numpy(), rtol=0, atol=1e-10)
    for stream in ("text", "image"):
        for name, g in mha_grads_from_torch(getattr(theirs, f"{stream}_cross_attn")).items():
            np.testing.assert_allclose(
                params[f"{stream}_cross_attn.{name}"].grad,
                g,
                rtol=0,
                atol=1e-10,
                err_msg=f"{stream}_cross_attn.{name}",
            )
        for name, (torch_name, transposed) in STREAM_NAMES.items():
            g = torch_params[f"{stream}_{torch_name}"].grad.numpy()
            np.testing.assert_allclose(
                params[f"{stream}_{name}"].grad,
                g.T if transposed else g,
                rtol=0,
                atol=1e-10,
                err_msg=f"{stream}_{name}",
            )


def test_masks_hide_padded_keys_and_accept_both_shapes() -> None:
    m = randomize(CoAttentionLayer(4, 6, 2, 5, rng=6), 7)
    text, image = randn(8, 2, 3, 4), randn(9, 2, 4, 6)
    lengths_t, lengths_v = [3, 1], [2, 4]
    keep_t, keep_v = ops.padding_mask(lengths_t, 3), ops.padding_mask(lengths_v, 4)  # (B, 1, 1, L)
    out_2d = m.forward(text, image, keep_t[:, 0, 0], keep_v[:, 0, 0])
    w_text = m.text_cross_attn.attn_weights  # (B, H, Lt, Li): words over patches
    w_image = m.image_cross_attn.attn_weights  # (B, H, Li, Lt): patches over words
    assert w_text.shape == (2, 2, 3, 4) and w_image.shape == (2, 2, 4, 3)
    assert np.all(w_text[0, :, :, 2:] == 0.0) and np.all(w_image[1, :, :, 1:] == 0.0)
    out_4d = m.forward(text, image, keep_t, keep_v)
    for a, b in zip(out_2d, out_4d, strict=True):
        np.testing.assert_array_equal(a, b)


def test_streams_update_from_the_inputs_not_from_each_other() -> None:
    """The image stream sees the text *input*: changing the text stream's own parameters
    (its feed-forward) changes text' but leaves image' alone."""
    m = randomize(CoAttentionLayer(4, 6, 2, 5, rng=10), 11)
    text, image = randn(12, 1, 3, 4), randn(13, 1, 2, 6)
    t1, v1 = m.forward(text, image)
    m.text_ff.linear2.b.data += randn(14, 4)  # not a constant shift, which norm2 would remove
    t2, v2 = m.forward(text, image)
    np.testing.assert_array_equal(v2, v1)
    assert not np.allclose(t2, t1)


def test_float32_in_float32_out() -> None:
    m = CoAttentionLayer(4, 6, 2, 5, dtype=np.float32, rng=14)
    t, v = m.forward(randn(15, 2, 3, 4).astype(np.float32), randn(16, 2, 2, 6).astype(np.float32))
    assert t.dtype == np.float32 and v.dtype == np.float32
    dt, dv = m.backward(np.ones_like(t), np.ones_like(v))
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
    with pytest.raises(ValueError, match=r"text_mask: expected shape \(2, 3\) or \(2, 1, 1, 3\), got \(2, 5"):
        m.forward(text, image, text_mask=np.ones((2, 5), dtype=bool))
    with pytest.raises(TypeError, match=r"image_mask: expected dtype bool"):
        m.forward(text, image, image_mask=np.ones((2, 5)))
    with pytest.raises(ValueError, match=r"num_heads: expected a divisor of d_model=6"):
        CoAttentionLayer(8, 6, 4, 5)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        CoAttentionLayer(4, 6, 2, 5).backward(np.zeros((1, 1, 4)), np.zeros((1, 1, 6)))


def _check_case():
    m = randomize(CoAttentionLayer(4, 6, 2, 5, rng=17), 18)
    inputs = {"text": randn(19, 2, 3, 4), "image": randn(20, 2, 4, 6)}
    kwargs = {"text_mask": ops.padding_mask([3, 2], 3), "image_mask": ops.padding_mask([4, 1], 4)}
    return m, inputs, kwargs


def test_checker_passes_the_real_backward() -> None:
    m, inputs, kwargs = _check_case()
    report = check_module(BothOutputs(m), inputs, kwargs=kwargs, name="co-attention")
    assert report.passed, str(report)


def test_checker_rejects_a_backward_without_the_cross_stream_path(monkeypatch) -> None:
    """Forgetting that the text was also the image stream's keys and values."""
    m, inputs, kwargs = _check_case()
    real = m.image_cross_attn.backward

    def query_only(d_out):
        d_query, d_kv = real(d_out)
        return d_query, np.zeros_like(d_kv)  # the bug: the text's key/value gradient is dropped

    monkeypatch.setattr(m.image_cross_attn, "backward", query_only)
    report = check_module(BothOutputs(m), inputs, kwargs=kwargs, name="co-attention, no kv path")
    assert {t.name for t in report.tensors if not t.passed} == {"text"}, str(report)
