"""Losses over logits.

Cross-entropy is the loss of classification and of masked-token prediction (§2.2): the
positions that were not masked carry ``ignore_index`` and contribute nothing.  With
``label_smoothing`` ε (Szegedy et al. 2016, used by the original Transformer and by caption
models, §6.2) the target is no longer the one-hot vector but

    q = (1 − ε) · onehot(t) + ε / C · 1          (C classes)

so the loss ``−Σ_c q_c log p_c`` is ``(1 − ε)·(−log p_t) + ε·(−mean_c log p_c)``: the model is
rewarded for the right class and mildly penalised for pushing any class's probability to 0,
which keeps its logits from growing without bound on data it can fit perfectly.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mmt_numpy.validate import float_array, grad_output, grad_scalar, integer, real_number


class CrossEntropyCache(NamedTuple):
    log_probs: np.ndarray  # (..., C)
    safe_targets: np.ndarray  # (...) the targets with ignored positions set to 0
    valid: np.ndarray  # (...) bool, targets != ignore_index
    count: int  # the number of valid targets
    reduction: str
    label_smoothing: float = 0.0  # ε: the target is (1 − ε) onehot + ε / C


_REDUCTIONS = ("mean", "sum", "none")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """``(..., C)`` log-probabilities, computed stably as x - max - log Σ exp(x - max)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def cross_entropy_forward(
    logits: np.ndarray,
    targets: np.ndarray,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> tuple[np.ndarray, CrossEntropyCache]:
    """Cross-entropy ``-log softmax(logits)[target]``, averaged over non-ignored targets.

    Args:
        logits: ``(..., C)`` unnormalised scores, e.g. ``(B, L, vocab)``.
        targets: ``(...)`` integer class ids in ``[0, C)`` or ``ignore_index``.
        ignore_index: targets equal to it contribute neither loss nor gradient.
        reduction: ``"mean"`` (over non-ignored targets), ``"sum"`` or ``"none"``.
        label_smoothing: ε in [0, 1]; the loss of a position is
            ``(1 − ε)·(−log p_t) + ε·(−mean_c log p_c)``, as
            ``F.cross_entropy(label_smoothing=ε)`` (module docstring).

    Returns:
        loss (a 0-d array, or ``(...)`` for ``"none"``) and the cache.  When every target
        is ignored the mean is 0 with zero gradient (PyTorch returns NaN there).
    """
    float_array("logits", logits, min_ndim=1)
    targets = np.asarray(targets)
    if not np.issubdtype(targets.dtype, np.integer):
        raise TypeError(f"targets: expected an integer array of class ids, got {targets.dtype}")
    if targets.shape != logits.shape[:-1]:
        raise ValueError(
            f"targets: expected shape {logits.shape[:-1]} (logits {logits.shape} without "
            f"its class axis), got {targets.shape}"
        )
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {_REDUCTIONS}, got {reduction!r}")
    ignore_index = integer("ignore_index", ignore_index)
    smoothing = real_number("label_smoothing", label_smoothing, low=0.0, high=1.0)
    C = logits.shape[-1]
    valid = targets != ignore_index
    out_of_range = valid & ((targets < 0) | (targets >= C))
    if np.any(out_of_range):
        bad = np.unique(targets[out_of_range]).tolist()
        raise ValueError(
            f"targets: expected ids in [0, {C}) (C = logits.shape[-1] of {logits.shape}) or "
            f"ignore_index {ignore_index}, got {bad}"
        )
    safe_targets = np.where(valid, targets, 0)
    log_probs = log_softmax(logits)
    picked = np.take_along_axis(log_probs, safe_targets[..., None], axis=-1)[..., 0]
    if smoothing:
        # −Σ_c q_c log p_c with q = (1 − ε) onehot + ε/C:  (1 − ε)(−log p_t) + ε(−mean_c log p_c)
        picked = (1.0 - smoothing) * picked + smoothing * log_probs.mean(axis=-1)
    losses = np.where(valid, -picked, 0.0).astype(logits.dtype)
    count = int(valid.sum())
    if reduction == "none":
        loss = losses
    elif reduction == "sum":
        loss = losses.sum()
    else:
        loss = losses.sum() / max(count, 1)
    return np.asarray(loss, dtype=logits.dtype), CrossEntropyCache(
        log_probs, safe_targets, valid, count, reduction, smoothing
    )


def cross_entropy_backward(d_loss: np.ndarray | float, cache: CrossEntropyCache) -> np.ndarray:
    """``d_logits (..., C)`` (the integer targets have no gradient).

    loss_n = -Σ_t q[n, t] log_probs[n, t] and d log_probs[n, t] / d logits[n, c] = δ_tc - softmax_c;
    since Σ_t q[n, t] = 1, d loss_n / d logits[n] = softmax(logits[n]) - q[n], zero where ignored.
    Without smoothing q[n] = onehot(t_n); with ε, q[n] = (1 − ε) onehot(t_n) + ε / C.
    """
    log_probs, safe_targets, valid = cache.log_probs, cache.safe_targets, cache.valid
    count, reduction = cache.count, cache.reduction
    if reduction == "none":
        d_loss = grad_output(d_loss, valid.shape, log_probs.dtype, "d_loss")
    else:
        d_loss = grad_scalar(d_loss, log_probs.dtype)
    smoothing = cache.label_smoothing
    grad = np.exp(log_probs)
    if smoothing:
        grad -= smoothing / grad.shape[-1]  # − ε/C on every class
    np.put_along_axis(
        grad,
        safe_targets[..., None],
        np.take_along_axis(grad, safe_targets[..., None], axis=-1) - (1.0 - smoothing),
        axis=-1,
    )  # − (1 − ε) on the target class
    grad *= valid[..., None]
    if reduction == "none":
        return grad * d_loss[..., None]
    if reduction == "mean":
        # loss = Σ losses / count  ->  each loss_n gets d_loss / count
        d_loss = d_loss / max(count, 1)
    return grad * d_loss
