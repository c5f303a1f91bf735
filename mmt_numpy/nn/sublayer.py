"""The residual + layer-norm wrapper around every sub-layer (§3.1, steps 4 and 5), written once.

Every block of a Transformer wraps each of its sub-layers ``f`` (self-attention,
cross-attention, the feed-forward network) the same way; only where the norm sits differs:

    post-LN (norm_first=False, the 2017 paper and §3.1's order):  out = norm(x + dropout(f(x)))
    pre-LN  (norm_first=True, GPT-2 and most large models):        out = x + dropout(f(norm(x)))

The encoder layer, the decoder layer and co-attention call :func:`sublayer_forward` /
:func:`sublayer_backward` with their own norm, dropout and ``f``, so the submodules keep
their PyTorch names (``norm1``, ``dropout1`` ...) on the layer itself.

``f`` is given as a function ``x -> (y, cache)`` and its backward as ``(d_y, cache) ->
(d_x, *others)``: a cross-attention's ``f`` also reads the other modality, and the
gradient of that second input comes back in ``others``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from mmt_numpy import ops
from mmt_numpy.nn.dropout import Dropout
from mmt_numpy.nn.layernorm import LayerNorm
from mmt_numpy.nn.module import expect_cache

Forward = Callable[[np.ndarray], tuple[np.ndarray, Any]]
Backward = Callable[[np.ndarray, Any], tuple[np.ndarray, ...]]


class SublayerCache(NamedTuple):
    """The caches of one wrapped sub-layer: its own, the norm's, the dropout's, the residual's."""

    norm_first: bool
    sublayer: Any  # whatever f returned, e.g. a MultiHeadAttentionCache
    norm: ops.LayerNormCache
    dropout: ops.DropoutCache
    residual: ops.ResidualCache

    @property
    def weights(self) -> np.ndarray:
        """The attention weights of an attention sub-layer (``self.sublayer.weights``)."""
        return self.sublayer.weights


def sublayer_forward(
    x: np.ndarray, f: Forward, norm: LayerNorm, dropout: Dropout, norm_first: bool
) -> tuple[np.ndarray, SublayerCache]:
    """``norm(x + dropout(f(x)))`` (post-LN) or ``x + dropout(f(norm(x)))`` (pre-LN).

    Args:
        x: ``(B, L, d_model)``.
        f: the sub-layer, ``x -> (y (B, L, d_model), cache)``.
        norm, dropout: the layer's own LayerNorm and Dropout for this sub-layer.
        norm_first: pre-LN when True.

    Returns:
        ``(B, L, d_model)`` and the :class:`SublayerCache`.
    """
    if norm_first:
        normed, norm_cache = norm.forward(x)  # n = norm(x)
        y, f_cache = f(normed)  # y = f(n)
        y, drop_cache = dropout.forward(y)  # y = dropout(y)
        out, res_cache = ops.residual_forward(x, y)  # out = x + y
    else:
        y, f_cache = f(x)  # y = f(x)
        y, drop_cache = dropout.forward(y)  # y = dropout(y)
        h, res_cache = ops.residual_forward(x, y)  # h = x + y
        out, norm_cache = norm.forward(h)  # out = norm(h)
    return out, SublayerCache(norm_first, f_cache, norm_cache, drop_cache, res_cache)


def sublayer_backward(
    d_out: np.ndarray, cache: SublayerCache, f_backward: Backward, norm: LayerNorm, dropout: Dropout
) -> tuple[np.ndarray, ...]:
    """Backward of :func:`sublayer_forward`: ``(dx, *the other input gradients of f)``.

    The residual sends the gradient two ways, the identity path and the sub-layer path, and
    the two meet again at x.
    """
    expect_cache(cache, SublayerCache, "sublayer_forward")
    if cache.norm_first:
        d_x, d_y = ops.residual_backward(d_out, cache.residual)  # out = x + y
        (d_y,) = dropout.backward(d_y, cache.dropout)  # y = dropout(y)
        d_normed, *others = f_backward(d_y, cache.sublayer)  # y = f(n)
        (d_x_through_f,) = norm.backward(d_normed, cache.norm)  # n = norm(x)
    else:
        (d_h,) = norm.backward(d_out, cache.norm)  # out = norm(h)
        d_x, d_y = ops.residual_backward(d_h, cache.residual)  # h = x + y
        (d_y,) = dropout.backward(d_y, cache.dropout)  # y = dropout(y)
        d_x_through_f, *others = f_backward(d_y, cache.sublayer)  # y = f(x)
    return (d_x + d_x_through_f, *others)
