"""Attention masks in module terms: one rule for every module that attends.

The ops take a mask that broadcasts against the scores ``(B, H, Lq, Lk)``.  A module's
caller thinks in batch rows, not heads, so every attending module (``MultiHeadAttention``,
the encoder and decoder layers, co-attention, the §5 model) reads its ``mask`` argument by
one rule, True = may attend:

* ``(Lq, Lk)``: one mask shared by the whole batch, e.g. ``ops.causal_mask(L)``;
* ``(B, Lq, Lk)``: one mask per batch row, whatever the number of heads;
* 4-D, anything that broadcasts to ``(B, H, Lq, Lk)``, e.g. the key padding mask
  ``ops.padding_mask(lengths, Lk)`` of shape ``(B, 1, 1, Lk)``.

A 2-D mask always means ``(Lq, Lk)`` and a 3-D one ``(B, Lq, Lk)``: no shape changes its
meaning when B happens to equal H or Lq.
"""

from __future__ import annotations

import numpy as np

from mmt_numpy.ops.attention import padding_mask
from mmt_numpy.validate import bool_mask

_HOW = (
    "accepted: (Lq, Lk) shared by the batch, (B, Lq, Lk) one per batch row, or 4-D broadcastable to "
    "(B, H, Lq, Lk); key padding: ops.padding_mask(lengths, Lk), shape (B, 1, 1, Lk)"
)


def module_mask(name: str, mask: object, batch: int, heads: int, Lq: int, Lk: int) -> np.ndarray | None:
    """Check a module-level mask and return it in the ops' layout (broadcastable to ``(B, H, Lq, Lk)``).

    Args:
        name: the argument's name, for the error message.
        mask: None, or a bool array of one of the shapes in the module docstring.
        batch, heads, Lq, Lk: the sizes of the attention it will restrict.

    Returns:
        None, or a 4-D view of ``mask`` (a 3-D mask gets a head axis: ``mask[:, None]``).
    """
    if mask is None:
        return None
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"{name}: expected a boolean numpy array, got {type(mask).__name__}; {_HOW}")
    if mask.ndim == 2:
        expected = (Lq, Lk)
        full = mask
    elif mask.ndim == 3:
        expected = (batch, Lq, Lk)
        full = mask[:, None]
    elif mask.ndim == 4:
        expected = (batch, heads, Lq, Lk)
        full = mask
    else:
        raise ValueError(f"{name}: expected 2, 3 or 4 dimensions, got shape {mask.shape}; {_HOW}")
    try:
        fits = np.broadcast_shapes(mask.shape, expected) == expected
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"{name}: a {mask.ndim}-D mask must broadcast to {expected}, got {mask.shape}; {_HOW}"
        )
    bool_mask(name, full, (batch, heads, Lq, Lk))  # the dtype (True = may attend)
    return full


def lengths_mask(name: str, lengths: object, batch: int, L: int) -> np.ndarray:
    """``(B, 1, 1, L)`` key padding mask from per-row lengths ``(B,)``, each in ``[0, L]``."""
    lengths = np.asarray(lengths)
    if lengths.shape != (batch,) or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(
            f"{name}: expected {batch} integer lengths (one per batch row), got shape {lengths.shape} "
            f"and dtype {lengths.dtype}"
        )
    if np.any(lengths < 0) or np.any(lengths > L):
        raise ValueError(f"{name}: expected values in [0, {L}], got {lengths.tolist()}")
    return padding_mask(lengths, L)


def combine_masks(*masks: np.ndarray | None) -> np.ndarray | None:
    """The logical and of the masks that are not None (None when all are)."""
    present = [m for m in masks if m is not None]
    if not present:
        return None
    out = present[0]
    for m in present[1:]:
        out = out & m
    return out
