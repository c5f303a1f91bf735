"""MultiHeadAttention and ArticleCrossAttention: PyTorch parity, masks, errors, and checks
that the gradient checker catches a broken backward."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmt_numpy import ops
from mmt_numpy.checks import randn, randomize
from mmt_numpy.gradcheck import check_module
from mmt_numpy.nn import ArticleCrossAttention, MultiHeadAttention
from mmt_numpy.torch_bridge import grads_from_torch, to_torch

# ---------------------------------------------------------------- PyTorch parity (float64)


@pytest.mark.parametrize("bias", [True, False])
def test_self_attention_matches_torch_with_both_mask_kinds(bias: bool) -> None:
    torch = pytest.importorskip("torch")
    B, L, D, H = 2, 5, 8, 2
    ours = randomize(MultiHeadAttention(D, H, bias=bias, rng=0), 1)
    theirs = to_torch(ours)
    x = randn(2, B, L, D)
    lengths = np.array([5, 3])

    # Our masks: True = may attend.  PyTorch's boolean key_padding_mask and attn_mask use
    # the opposite convention, True = "ignore this key", so each is the negation of ours.
    keep_keys = ops.padding_mask(lengths, L)  # (B, 1, 1, L), True for real tokens
    keep_causal = ops.causal_mask(L)  # (L, L), True on and below the diagonal
    torch_key_padding = torch.from_numpy(~keep_keys[:, 0, 0, :])  # (B, L), True = padding
    torch_attn_mask = torch.from_numpy(~keep_causal)  # (L, L), True = future, not allowed
    assert torch_key_padding[1].tolist() == [False, False, False, True, True]
    assert torch_attn_mask[0].tolist() == [False, True, True, True, True]

    out, cache = ours.forward(x, mask=keep_keys & keep_causal)
    xt = torch.from_numpy(x.copy()).requires_grad_()
    out_t, weights_t = theirs(
        xt, xt, xt, key_padding_mask=torch_key_padding, attn_mask=torch_attn_mask, average_attn_weights=False
    )
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(cache.weights, weights_t.detach().numpy(), rtol=0, atol=1e-10)

    G = randn(3, *out.shape)
    (dx,) = ours.backward(G, cache)
    (out_t * torch.from_numpy(G)).sum().backward()
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=0, atol=1e-10)
    torch_grads = grads_from_torch(ours, theirs)
    assert set(torch_grads) == {name for name, _ in ours.named_parameters()}
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, torch_grads[name], rtol=0, atol=1e-10, err_msg=name)


def test_cross_attention_with_other_width_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    B, Lq, Lk, D, E, H = 2, 3, 6, 8, 5, 4  # text (width 8) attends over 6 "patches" of width 5
    ours = randomize(MultiHeadAttention(D, H, kv_dim=E, rng=4), 5)
    theirs = to_torch(ours)
    text, image = randn(6, B, Lq, D), randn(7, B, Lk, E)
    keep = ops.padding_mask([6, 4], Lk)

    out, cache = ours.forward(text, image, mask=keep)
    qt = torch.from_numpy(text.copy()).requires_grad_()
    kvt = torch.from_numpy(image.copy()).requires_grad_()
    out_t, weights_t = theirs(
        qt, kvt, kvt, key_padding_mask=torch.from_numpy(~keep[:, 0, 0, :]), average_attn_weights=False
    )
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=0, atol=1e-10)
    assert cache.weights.shape == (B, H, Lq, Lk)
    np.testing.assert_allclose(cache.weights, weights_t.detach().numpy(), rtol=0, atol=1e-10)

    G = randn(8, *out.shape)
    d_text, d_image = ours.backward(G, cache)
    (out_t * torch.from_numpy(G)).sum().backward()
    np.testing.assert_allclose(d_text, qt.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(d_image, kvt.grad.numpy(), rtol=0, atol=1e-10)
    torch_grads = grads_from_torch(ours, theirs)
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, torch_grads[name], rtol=0, atol=1e-10, err_msg=name)


# ---------------------------------------------------------------- what the module computes


def test_initialisation_follows_torch() -> None:
    """Xavier bounds: √(6/4D) for the stacked (3D, D) in_proj, √(6/(D+E)) for a separate k/v."""
    D, E = 16, 48
    m = MultiHeadAttention(D, 4, rng=0)
    for W in (m.W_q, m.W_k, m.W_v):
        assert np.abs(W.data).max() <= math.sqrt(6 / (4 * D))
    assert np.abs(m.W_o.data).max() <= 1 / math.sqrt(D)
    assert all(np.all(b.data == 0) for b in (m.b_q, m.b_k, m.b_v, m.b_o))
    cross = MultiHeadAttention(D, 4, kv_dim=E, rng=0)
    assert cross.W_k.shape == (E, D) and np.abs(cross.W_k.data).max() <= math.sqrt(6 / (D + E))
    assert np.abs(cross.W_q.data).max() > math.sqrt(6 / (4 * D))  # its own (D, D) Xavier bound


def test_heads_are_contiguous_feature_slices() -> None:
    """Head h uses features h·d_h … (h+1)·d_h − 1 of Q, K and V (an explicit loop, for the reader)."""
    B, L, D, H = 2, 4, 6, 3
    m = randomize(MultiHeadAttention(D, H, rng=9), 10)
    x = randn(11, B, L, D)
    out, cache = m.forward(x)
    q, k, v = (x @ m.W_q.data + m.b_q.data, x @ m.W_k.data + m.b_k.data, x @ m.W_v.data + m.b_v.data)
    d_h = D // H
    heads = []
    for h in range(H):
        cols = slice(h * d_h, (h + 1) * d_h)
        scores = q[..., cols] @ k[..., cols].swapaxes(1, 2) / math.sqrt(d_h)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        np.testing.assert_allclose(cache.weights[:, h], weights, atol=1e-12)
        heads.append(weights @ v[..., cols])
    np.testing.assert_allclose(out, np.concatenate(heads, axis=-1) @ m.W_o.data + m.b_o.data, atol=1e-12)


def test_fully_masked_query_gives_bias_row_and_finite_gradients() -> None:
    B, Lq, Lk, D, H = 2, 3, 4, 4, 2
    m = randomize(MultiHeadAttention(D, H, kv_dim=3, rng=12), 13)
    mask = np.ones((B, 1, Lq, Lk), dtype=bool)
    mask[1, 0, 2] = False  # query 2 of batch row 1 may attend to nothing
    out, cache = m.forward(randn(14, B, Lq, D), randn(15, B, Lk, 3), mask=mask)
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(cache.weights[1, :, 2], 0.0)
    # Its attention output is 0, so only the output bias is left: 0 @ W_o + b_o.
    np.testing.assert_allclose(out[1, 2], m.b_o.data, atol=1e-15)
    d_query, d_kv = m.backward(np.ones_like(out), cache)
    assert np.all(np.isfinite(d_query)) and np.all(np.isfinite(d_kv))
    np.testing.assert_array_equal(d_query[1, 2], 0.0)  # that query influenced nothing


def test_mask_shapes_that_broadcast_are_accepted() -> None:
    m = MultiHeadAttention(4, 2, rng=0)
    x = randn(0, 2, 3, 4)
    full = np.ones((2, 2, 3, 3), dtype=bool)
    for mask in (
        np.ones((3, 3), dtype=bool),
        np.ones((2, 1, 1, 3), dtype=bool),
        np.ones((2, 3, 3), bool),
        full,
    ):
        np.testing.assert_allclose(m(x, mask=mask), m(x), atol=1e-15)


def test_a_3d_mask_is_one_per_batch_row_whatever_the_number_of_heads() -> None:
    """B = H = 2: a (B, Lq, Lk) mask hiding key 2 from batch row 0 hides it from every head of
    row 0 and from no head of row 1 (it used to be read per head when B == H)."""
    m = randomize(MultiHeadAttention(4, 2, rng=0), 1)
    x = randn(2, 2, 3, 4)
    mask = np.ones((2, 3, 3), dtype=bool)
    mask[0, :, 2] = False
    _, cache = m.forward(x, mask=mask)
    np.testing.assert_array_equal(cache.weights[0, :, :, 2], 0.0)  # both heads of row 0
    assert np.all(cache.weights[1, :, :, 2] > 0)  # no head of row 1
    # the same as the 4-D mask with a head axis of 1
    np.testing.assert_array_equal(m(x, mask=mask), m(x, mask=mask[:, None]))


def test_a_2d_mask_is_always_lq_by_lk() -> None:
    """Lq = B: a (B, Lk)-looking 2-D mask still means (Lq, Lk), the same for every batch row."""
    m = randomize(MultiHeadAttention(4, 2, kv_dim=6, rng=0), 1)
    q, kv = randn(3, 2, 2, 4), randn(4, 2, 5, 6)
    mask = np.ones((2, 5), dtype=bool)
    mask[0, 4] = False  # query 0 may not see key 4, in every batch row
    _, cache = m.forward(q, kv, mask=mask)
    np.testing.assert_array_equal(cache.weights[:, :, 0, 4], 0.0)
    assert np.all(cache.weights[:, :, 1, 4] > 0)


def test_attention_over_no_keys_gives_zeros_and_zero_gradients() -> None:
    """A batch with no image tokens (Lk = 0): the attention output is 0, as blocked attention and
    F.scaled_dot_product_attention give; the output is then b_o, and no gradient is NaN."""
    m = randomize(MultiHeadAttention(4, 2, kv_dim=6, rng=0), 1)
    q, kv = randn(5, 2, 3, 4), np.zeros((2, 0, 6))
    out, cache = m.forward(q, kv)
    np.testing.assert_allclose(out, np.broadcast_to(m.b_o.data, out.shape), atol=1e-15)
    assert cache.weights.shape == (2, 2, 3, 0)
    d_query, d_kv = m.backward(np.ones_like(out), cache)
    np.testing.assert_array_equal(d_query, 0.0)
    assert d_kv.shape == (2, 0, 6)
    assert np.all(np.isfinite(m.W_q.grad)) and np.all(m.W_k.grad == 0)


def test_article_cross_attention_is_the_formula_of_section_4_2() -> None:
    m = randomize(ArticleCrossAttention(4, d_k=3, rng=16), 17)
    x, y = randn(18, 2, 3, 4), randn(19, 2, 5, 4)
    Q, K = x @ m.W_q.data, y @ m.W_k.data
    scores = Q @ K.swapaxes(1, 2) / math.sqrt(3)
    weights = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
    out, cache = m.forward(x, y)
    np.testing.assert_allclose(out, x + weights @ y, atol=1e-12)  # V = Y, plus X
    assert cache.weights.shape == (2, 1, 3, 5)
    assert [name for name, _ in m.named_parameters()] == ["W_q", "W_k"]


# ---------------------------------------------------------------- bad input


def test_num_heads_must_divide_d_model() -> None:
    with pytest.raises(ValueError, match=r"num_heads: expected a divisor of d_model=10.*got 4"):
        MultiHeadAttention(10, 4)


@pytest.mark.parametrize(
    ("query", "key_value", "mask", "pattern"),
    [
        ((2, 3, 5), None, None, r"query: expected last dimension 4.*\(2, 3, 5\)"),
        ((3, 4), None, None, r"query: expected 3 dimensions, got shape \(3, 4\)"),
        ((2, 3, 4), (3, 5, 6), None, r"key_value: expected batch size 2.*\(3, 5, 6\)"),
        ((2, 3, 4), (2, 5, 4), None, r"key_value: expected last dimension 6.*\(2, 5, 4\)"),
        (
            (2, 3, 4),
            (2, 5, 6),
            (3, 3),
            r"mask: a 2-D mask must broadcast to \(3, 5\), got \(3, 3\); accepted",
        ),
        ((2, 3, 4), (2, 5, 6), (3, 3, 5), r"mask: a 3-D mask must broadcast to \(2, 3, 5\), got \(3, 3, 5\)"),
        ((2, 3, 4), (2, 5, 6), (2, 3, 3, 5), r"mask: a 4-D mask must broadcast to \(2, 2, 3, 5\)"),
        ((2, 3, 4), (2, 5, 6), (2, 1, 2, 3, 5), r"mask: expected 2, 3 or 4 dimensions.*padding_mask"),
    ],
)
def test_bad_shapes_name_the_argument(query, key_value, mask, pattern) -> None:
    m = MultiHeadAttention(4, 2, kv_dim=6 if key_value is not None else None, rng=0)
    args = (np.zeros(query), None if key_value is None else np.zeros(key_value))
    kwargs = {} if mask is None else {"mask": np.ones(mask, dtype=bool)}
    with pytest.raises(ValueError, match=pattern):
        m.forward(*args, **kwargs)


def test_bad_dtypes_and_missing_key_value() -> None:
    m = MultiHeadAttention(4, 2, rng=0)
    x = np.zeros((2, 3, 4))
    with pytest.raises(TypeError, match=r"mask: expected dtype bool"):
        m.forward(x, mask=np.ones((3, 3), dtype=int))
    with pytest.raises(TypeError, match=r"query: expected dtype float64.*got float32"):
        m.forward(x.astype(np.float32))
    with pytest.raises(TypeError, match=r"query: expected dtype float32 or float64, got int64"):
        m.forward(x.astype(np.int64))
    with pytest.raises(ValueError, match=r"key_value: required, since kv_dim=6"):
        MultiHeadAttention(4, 2, kv_dim=6).forward(x)


def test_article_cross_attention_refuses_y_of_another_width() -> None:
    m = ArticleCrossAttention(4)
    with pytest.raises(ValueError, match=r"y: expected last dimension 4 \(as x\): §4.2 uses V = Y"):
        m.forward(np.zeros((2, 3, 4)), np.zeros((2, 5, 6)))
    with pytest.raises(ValueError, match=r"y: expected batch size 2"):
        m.forward(np.zeros((2, 3, 4)), np.zeros((1, 5, 4)))


# ---------------------------------------------------------------- the checks can fail


def _mha_case():
    m = randomize(MultiHeadAttention(4, 2, rng=20), 21)
    return m, {"query": randn(22, 2, 3, 4)}, {"mask": ops.padding_mask([3, 2], 3)}


def test_checker_passes_the_real_backward() -> None:
    m, inputs, kwargs = _mha_case()
    report = check_module(m, inputs, kwargs=kwargs, name="mha")
    assert report.passed, str(report)
    assert report.max_rel_err < 1e-6


def test_checker_rejects_a_transposed_weight_gradient(monkeypatch) -> None:
    m, inputs, kwargs = _mha_case()
    real_backward = m.backward

    def broken_backward(d_out, cache):
        grad_before = m.W_q.grad.copy()
        grads = real_backward(d_out, cache)
        dW_q = m.W_q.grad - grad_before
        m.W_q.grad[...] = grad_before + dW_q.T  # the bug: dW_q added transposed
        return grads

    monkeypatch.setattr(m, "backward", broken_backward)
    report = check_module(m, inputs, kwargs=kwargs, name="mha, dW_q transposed")
    failed = {t.name for t in report.tensors if not t.passed}
    assert failed == {"W_q"}, str(report)


def test_checker_rejects_a_missing_scale(monkeypatch) -> None:
    """A backward that forgets the 1/√d_k of the scores is wrong for q, k, and so W_q, W_k, x."""
    m, inputs, kwargs = _mha_case()
    real = ops.attention_backward

    def unscaled(d_out, cache):
        dq, dk, dv = real(d_out, cache)
        return dq / cache.scale, dk / cache.scale, dv  # the scale 1/√d_k forgotten

    monkeypatch.setattr(ops, "attention_backward", unscaled)
    report = check_module(m, inputs, kwargs=kwargs, name="mha, no 1/sqrt(d_k)")
    failed = {t.name for t in report.tensors if not t.passed}
    assert {"query", "W_q", "W_k", "b_q"} <= failed, str(report)
    assert "W_v" not in failed and "W_o" not in failed


def test_checker_rejects_a_key_bias_gradient_that_is_not_zero(monkeypatch) -> None:
    m, inputs, kwargs = _mha_case()
    real_backward = m.backward

    def broken_backward(d_out, cache):
        grads = real_backward(d_out, cache)
        m.b_k.grad += m.b_q.grad  # a plausible slip: b_k given b_q's gradient
        return grads

    monkeypatch.setattr(m, "backward", broken_backward)
    report = check_module(m, inputs, kwargs=kwargs, name="mha, b_k wrong")
    assert [t.name for t in report.tensors if not t.passed] == ["b_k"], str(report)


def test_checker_rejects_article_attention_without_the_value_path(monkeypatch) -> None:
    """§4.2 uses Y twice (keys and V = Y); dropping dV loses part of dY."""
    m = randomize(ArticleCrossAttention(4, d_k=3, rng=23), 24)
    inputs = {"x": randn(25, 2, 3, 4), "y": randn(26, 2, 5, 4)}
    assert check_module(m, inputs).passed
    real = ops.attention_backward

    def no_value_gradient(d_out, cache):
        dq, dk, dv = real(d_out, cache)
        return dq, dk, np.zeros_like(dv)

    monkeypatch.setattr(ops, "attention_backward", no_value_gradient)
    report = check_module(m, inputs, name="article, dV dropped")
    assert [t.name for t in report.tensors if not t.passed] == ["y"], str(report)
