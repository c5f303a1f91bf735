"""ops.losses: cross-entropy over logits with ``ignore_index`` (masked-token prediction, §2.2)."""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy.gradcheck import check_op
from mmt_numpy.ops import cross_entropy_backward, cross_entropy_forward, log_softmax

REDUCTIONS = ["mean", "sum", "none"]


def _logits_and_targets(rng, shape=(2, 4, 7), ignore_index=-100, ignored=2):
    """Random logits ``(*shape)`` and targets ``shape[:-1]`` with ``ignored`` positions ignored."""
    logits = rng.standard_normal(shape)
    targets = rng.integers(0, shape[-1], size=shape[:-1])
    flat = targets.reshape(-1)  # a view: writing into it edits targets
    flat[rng.choice(flat.size, size=ignored, replace=False)] = ignore_index
    return logits, targets


# --- gradients ---------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("shape", "ignored"), [((7,), 0), ((5, 4), 1), ((2, 4, 7), 3)], ids=str)
def test_gradcheck(rng, reduction, shape, ignored):
    logits, targets = _logits_and_targets(rng, shape, ignored=ignored)
    report = check_op(
        cross_entropy_forward,
        cross_entropy_backward,
        {"logits": logits},
        kwargs={"targets": targets, "reduction": reduction},
    )
    assert report.passed, report


def test_gradcheck_with_an_ignore_index_inside_the_classes(rng):
    logits, targets = _logits_and_targets(rng, (3, 4, 5), ignore_index=2)
    report = check_op(
        cross_entropy_forward,
        cross_entropy_backward,
        {"logits": logits},
        kwargs={"targets": targets, "ignore_index": 2},
    )
    assert report.passed, report


# Negative controls on the mean reduction: loss = Σ_valid -log p[n, t_n] / count.


def _forgets_the_one_hot(d_loss, cache):
    return np.exp(cache.log_probs) * cache.valid[..., None] * (d_loss / cache.count)


def _divides_by_every_position(d_loss, cache):
    # ignored ones counted too
    return cross_entropy_backward(d_loss, cache) * cache.count / cache.valid.size


def _ignored_positions_leak(d_loss, cache):
    one_hot = np.eye(cache.log_probs.shape[-1])[cache.safe_targets]
    return (np.exp(cache.log_probs) - one_hot) * (d_loss / cache.count)  # never multiplied by valid


def _off_by_a_tenth_of_a_percent(d_loss, cache):
    return cross_entropy_backward(d_loss, cache) * 1.001


@pytest.mark.parametrize(
    "broken",
    [_forgets_the_one_hot, _divides_by_every_position, _ignored_positions_leak, _off_by_a_tenth_of_a_percent],
)
def test_checker_rejects_a_broken_backward(rng, broken):
    logits, targets = _logits_and_targets(rng, ignored=3)
    kwargs = {"targets": targets, "reduction": "mean"}
    assert check_op(cross_entropy_forward, cross_entropy_backward, {"logits": logits}, kwargs=kwargs).passed
    assert not check_op(cross_entropy_forward, broken, {"logits": logits}, kwargs=kwargs).passed


# --- label smoothing ---------------------------------------------------------------------------


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.35, 1.0])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_label_smoothing_matches_torch(rng, torch_autograd, reduction, smoothing):
    torch = pytest.importorskip("torch")
    logits, targets = _logits_and_targets(rng, (3, 4, 6), ignored=3)
    loss, cache = cross_entropy_forward(logits, targets, reduction=reduction, label_smoothing=smoothing)
    upstream = rng.standard_normal(np.shape(loss))
    grad = cross_entropy_backward(upstream if reduction == "none" else float(upstream), cache)

    def theirs(x):
        flat = torch.nn.functional.cross_entropy(
            x.reshape(-1, 6),
            torch.from_numpy(targets.reshape(-1)),
            ignore_index=-100,
            reduction=reduction,
            label_smoothing=smoothing,
        )
        return flat.reshape(targets.shape) if reduction == "none" else flat

    loss_t, (grad_t,) = torch_autograd(theirs, [logits], upstream)
    np.testing.assert_allclose(loss, loss_t, rtol=0, atol=1e-12)
    np.testing.assert_allclose(grad, grad_t, rtol=0, atol=1e-12)


def test_label_smoothing_by_hand():
    """Three classes, target 0, ε = 0.3: q = (0.8, 0.1, 0.1), loss = −Σ q log p."""
    logits = np.array([[2.0, 0.0, -1.0]])
    p = np.exp(logits[0]) / np.exp(logits[0]).sum()
    loss, cache = cross_entropy_forward(logits, np.array([0]), label_smoothing=0.3)
    q = np.array([0.8, 0.1, 0.1])
    np.testing.assert_allclose(loss, -(q * np.log(p)).sum(), rtol=1e-14)
    np.testing.assert_allclose(cross_entropy_backward(1.0, cache), [p - q], rtol=1e-14)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_label_smoothing_gradcheck(rng, reduction):
    logits, targets = _logits_and_targets(rng, (2, 3, 5), ignored=2)
    kwargs = {"targets": targets, "reduction": reduction, "label_smoothing": 0.2}
    report = check_op(cross_entropy_forward, cross_entropy_backward, {"logits": logits}, kwargs=kwargs)
    assert report.passed, report


def _smoothing_forgotten(d_loss, cache):
    """Broken: the backward of the unsmoothed loss (softmax − onehot), ε dropped."""
    return cross_entropy_backward(d_loss, cache._replace(label_smoothing=0.0))


def _smoothing_not_spread(d_loss, cache):
    """Broken: takes ε off the target class but never spreads ε / C over the classes."""
    fixed = cross_entropy_backward(d_loss, cache)
    eps, C = cache.label_smoothing, cache.log_probs.shape[-1]
    return fixed + (eps / C) * cache.valid[..., None] * (d_loss / cache.count)


@pytest.mark.parametrize("broken", [_smoothing_forgotten, _smoothing_not_spread])
def test_checker_rejects_a_broken_label_smoothing_backward(rng, broken):
    logits, targets = _logits_and_targets(rng, ignored=2)
    kwargs = {"targets": targets, "label_smoothing": 0.2}
    assert check_op(cross_entropy_forward, cross_entropy_backward, {"logits": logits}, kwargs=kwargs).passed
    assert not check_op(cross_entropy_forward, broken, {"logits": logits}, kwargs=kwargs).passed


def test_label_smoothing_outside_0_1_is_refused(rng):
    logits, targets = _logits_and_targets(rng)
    with pytest.raises(ValueError, match=r"label_smoothing: expected a number in \[0, 1\], got 1.5"):
        cross_entropy_forward(logits, targets, label_smoothing=1.5)
    with pytest.raises(TypeError, match=r"label_smoothing: expected a number in \[0, 1\], got str"):
        cross_entropy_forward(logits, targets, label_smoothing="0.1")


# --- values and numerics -----------------------------------------------------------------------


def test_values_against_the_definition(rng):
    logits, targets = _logits_and_targets(rng, (3, 5), ignored=1)
    valid = targets != -100
    probs = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    per_row = np.where(valid, -np.log(probs[np.arange(3), np.where(valid, targets, 0)]), 0.0)
    none, _ = cross_entropy_forward(logits, targets, reduction="none")
    total, _ = cross_entropy_forward(logits, targets, reduction="sum")
    mean, _ = cross_entropy_forward(logits, targets)
    np.testing.assert_allclose(none, per_row, rtol=1e-13)
    np.testing.assert_allclose(total, per_row.sum(), rtol=1e-13)
    np.testing.assert_allclose(mean, per_row.sum() / valid.sum(), rtol=1e-13)
    assert mean.shape == total.shape == () and none.shape == (3,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logits_of_1e4_stay_finite(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype=dtype)
    targets = np.array([1, 2])
    losses, _ = cross_entropy_forward(logits, targets, reduction="none")
    np.testing.assert_allclose(losses, [2e4, np.log(3.0)], rtol=1e-6)
    mean, cache = cross_entropy_forward(logits, targets)
    grad = cross_entropy_backward(np.array(1.0, dtype=dtype), cache)
    np.testing.assert_allclose(grad, [[0.5, -0.5, 0.0], [1 / 6, 1 / 6, -1 / 3]], rtol=1e-6, atol=1e-7)
    log_probs = log_softmax(logits)
    assert np.isfinite(log_probs).all()
    np.testing.assert_allclose(np.exp(log_probs).sum(axis=-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_every_target_ignored_gives_zero_loss_and_zero_gradient(rng, reduction):
    logits = rng.standard_normal((2, 3, 4))
    targets = np.full((2, 3), -100)
    loss, cache = cross_entropy_forward(logits, targets, reduction=reduction)
    np.testing.assert_array_equal(loss, 0.0)  # PyTorch's mean gives NaN (0/0) here
    grad = cross_entropy_backward(np.ones(np.shape(loss)), cache)
    np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_float32_in_float32_out_and_agrees_with_float64(rng, reduction):
    logits, targets = _logits_and_targets(rng)
    loss64, cache64 = cross_entropy_forward(logits, targets, reduction=reduction)
    loss32, cache32 = cross_entropy_forward(logits.astype(np.float32), targets, reduction=reduction)
    assert loss32.dtype == np.float32
    np.testing.assert_allclose(loss32, loss64, rtol=1e-5, atol=1e-6)
    d_loss = rng.standard_normal(np.shape(loss64))
    grad32 = cross_entropy_backward(d_loss.astype(np.float32), cache32)
    assert grad32.dtype == np.float32
    np.testing.assert_allclose(grad32, cross_entropy_backward(d_loss, cache64), rtol=1e-5, atol=1e-6)


# --- bad input ---------------------------------------------------------------------------------


def test_bad_input_is_named(rng):
    logits, targets = _logits_and_targets(rng, (2, 4, 7))
    with pytest.raises(TypeError, match=r"targets: expected an integer array of class ids, got float64"):
        cross_entropy_forward(logits, targets.astype(np.float64))
    with pytest.raises(ValueError, match=r"targets: expected shape \(2, 4\) \(logits \(2, 4, 7\) .*\(2, 3\)"):
        cross_entropy_forward(logits, targets[:, :3])
    targets[0, 0] = 7
    with pytest.raises(ValueError, match=r"targets: expected ids in \[0, 7\) .*ignore_index -100, got \[7\]"):
        cross_entropy_forward(logits, targets)
    with pytest.raises(ValueError, match=r"reduction: expected one of \('mean', 'sum', 'none'\), got 'avg'"):
        cross_entropy_forward(logits, np.zeros((2, 4), dtype=int), reduction="avg")
    with pytest.raises(TypeError, match=r"logits: expected dtype float32 or float64, got int64"):
        cross_entropy_forward(np.ones((2, 7), dtype=np.int64), np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match=r"logits: expected at least 1 dimensions, got shape \(\)"):
        cross_entropy_forward(np.array(1.0), np.array(0))


# --- parity with PyTorch -----------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ignore_index", [-100, 3])
def test_matches_torch_cross_entropy(rng, torch_autograd, reduction, ignore_index):
    import torch
    import torch.nn.functional as F

    logits, targets = _logits_and_targets(rng, (2, 4, 6), ignore_index=ignore_index, ignored=3)
    C = logits.shape[-1]
    loss, cache = cross_entropy_forward(logits, targets, ignore_index=ignore_index, reduction=reduction)
    upstream = rng.standard_normal(np.shape(loss))
    t_targets = torch.as_tensor(targets.reshape(-1))

    def torch_loss(z):
        out = F.cross_entropy(z.reshape(-1, C), t_targets, ignore_index=ignore_index, reduction=reduction)
        return out.reshape(targets.shape) if reduction == "none" else out

    t_loss, (t_grad,) = torch_autograd(torch_loss, [logits], upstream)
    np.testing.assert_allclose(loss, t_loss, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(cross_entropy_backward(upstream, cache), t_grad, rtol=1e-10, atol=1e-10)


def test_all_ignored_mean_is_0_here_and_nan_in_torch(rng):
    torch = pytest.importorskip("torch")
    logits = rng.standard_normal((3, 5))
    targets = np.full(3, -100)
    loss, _ = cross_entropy_forward(logits, targets)
    t_loss = torch.nn.functional.cross_entropy(torch.as_tensor(logits), torch.as_tensor(targets))
    assert loss == 0.0
    assert torch.isnan(t_loss)
