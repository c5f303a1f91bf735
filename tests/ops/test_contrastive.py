"""Symmetric InfoNCE (§2.2): PyTorch parity, gradient checks that must catch broken
backwards, dtypes, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy import ops
from mmt_numpy.checks import randn
from mmt_numpy.gradcheck import check_op
from mmt_numpy.ops import contrastive


@pytest.mark.parametrize("temperature", [0.07, 0.5, 2.0])
def test_matches_pytorch_clip_loss(temperature):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    t_np, i_np = randn(0, 6, 5), randn(1, 6, 5)
    loss, cache = ops.info_nce_forward(t_np, i_np, temperature)
    d_t, d_i = ops.info_nce_backward(1.0, cache)

    t = torch.tensor(t_np, requires_grad=True)
    i = torch.tensor(i_np, requires_grad=True)
    logits = F.normalize(t, dim=-1) @ F.normalize(i, dim=-1).T / temperature
    labels = torch.arange(6)
    ref = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    ref.backward()
    assert abs(float(loss) - ref.item()) < 1e-10
    np.testing.assert_allclose(d_t, t.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(d_i, i.grad.numpy(), rtol=0, atol=1e-10)


def test_gradcheck_passes():
    report = check_op(
        ops.info_nce_forward,
        ops.info_nce_backward,
        {"text_emb": randn(2, 4, 3), "image_emb": randn(3, 4, 3)},
        kwargs={"temperature": 0.3},
    )
    assert report.passed, str(report)


def _without_normalize_backward(d_loss, cache):
    """Broken: treats t̂ as if it were t (drops the normalisation's Jacobian)."""
    t_hat, t_norm, i_hat, i_norm, scale, log_p_t2i, log_p_i2t = cache
    N = t_hat.shape[0]
    eye = np.eye(N)
    d_logits = (np.exp(log_p_t2i) - eye + (np.exp(log_p_i2t) - eye).T) * (d_loss / (2 * N))
    return d_logits @ i_hat * scale, d_logits.T @ t_hat * scale


def _one_direction_backward(d_loss, cache):
    """Broken: differentiates only the text->image cross-entropy (a dropped term)."""
    t_hat, t_norm, i_hat, i_norm, scale, log_p_t2i, log_p_i2t = cache
    N = t_hat.shape[0]
    d_logits = (np.exp(log_p_t2i) - np.eye(N)) * (d_loss / N)
    return (
        contrastive._normalize_backward(d_logits @ i_hat * scale, t_hat, t_norm),
        contrastive._normalize_backward(d_logits.T @ t_hat * scale, i_hat, i_norm),
    )


@pytest.mark.parametrize("broken", [_without_normalize_backward, _one_direction_backward])
def test_gradcheck_rejects_broken_backward(broken):
    report = check_op(
        ops.info_nce_forward,
        broken,
        {"text_emb": randn(4, 4, 3), "image_emb": randn(5, 4, 3)},
        kwargs={"temperature": 0.3},
    )
    assert not report.passed


def test_float32_in_float32_out():
    t, i = randn(6, 3, 4).astype(np.float32), randn(7, 3, 4).astype(np.float32)
    loss, cache = ops.info_nce_forward(t, i)
    d_t, d_i = ops.info_nce_backward(np.float32(1.0), cache)
    assert loss.dtype == d_t.dtype == d_i.dtype == np.float32
    ref, _ = ops.info_nce_forward(t.astype(np.float64), i.astype(np.float64))
    assert abs(float(loss) - float(ref)) < 1e-4


def test_scale_invariant_and_rewards_matching_pairs():
    t = randn(8, 5, 6)
    matched, _ = ops.info_nce_forward(t, 3.0 * t, 0.1)  # same directions: every pair aligned
    shuffled, _ = ops.info_nce_forward(t, t[::-1].copy(), 0.1)
    assert float(matched) < float(shuffled)
    rescaled, _ = ops.info_nce_forward(7.0 * t, t, 0.1)
    assert abs(float(rescaled) - float(matched)) < 1e-12  # only directions count


def test_logits_match_the_loss():
    t, i = randn(9, 4, 3), randn(10, 4, 3)
    S = ops.info_nce_logits(t, i, 0.2)
    diag = np.arange(4)
    expected = -0.5 * (ops.log_softmax(S)[diag, diag].mean() + ops.log_softmax(S.T)[diag, diag].mean())
    assert abs(float(ops.info_nce_forward(t, i, 0.2)[0]) - expected) < 1e-12


def test_bad_input():
    t = randn(11, 4, 3)
    with pytest.raises(ValueError, match="image_emb: expected shape \\(4, 3\\)"):
        ops.info_nce_forward(t, randn(12, 5, 3))
    with pytest.raises(ValueError, match="temperature"):
        ops.info_nce_forward(t, t, 0.0)
    with pytest.raises(TypeError, match="text_emb: expected dtype"):
        ops.info_nce_forward(np.ones((4, 3), dtype=np.int64), t)
    with pytest.raises(TypeError, match="one dtype"):
        ops.info_nce_forward(t, t.astype(np.float32))
    zero_row = t.copy()
    zero_row[2] = 0.0
    with pytest.raises(ValueError, match="text_emb: expected no row of zeros .* got zero rows \\[2\\]"):
        ops.info_nce_forward(zero_row, t)
    with pytest.raises(ValueError, match="image_emb: expected no row of zeros"):
        ops.info_nce_logits(t, zero_row)
