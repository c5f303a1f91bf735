"""A layer whose queries are one sequence and whose keys are that sequence joined with a context.

Single-stream fusion (§2.1.1, §5) puts every modality in one sequence and updates every
token in every layer.  When only a few tokens are read at the end (the ``[CLS]`` of a
question) and the others come from encoders of their own (a clip's 128 patch vectors, its
sound's tokens), updating those others again is wasted work: this layer keeps the
single-stream softmax, every query sees every token, but only the query sequence is
updated::

    pre-LN (norm_first=True):
        h = x + dropout1(attn(norm1(x), key_value=[norm1(x) ; norm_context(context)]))
        out = h + dropout2(ff(norm2(h)))

The cost of the attention is ``Lx · (Lx + Lc)`` scores instead of ``(Lx + Lc)²``, and the
feed-forward runs on Lx tokens instead of ``Lx + Lc``.  It is the §4.2 cross-attention with
the query sequence itself among the keys (so it also does the self-attention), and what
UniT's decoder and Perceiver's latent array do with their queries.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mmt_numpy import ops
from mmt_numpy.nn.attention import MultiHeadAttention, MultiHeadAttentionCache
from mmt_numpy.nn.dropout import Dropout
from mmt_numpy.nn.feedforward import FeedForward
from mmt_numpy.nn.layernorm import LayerNorm
from mmt_numpy.nn.masks import module_mask
from mmt_numpy.nn.module import Module, RngLike, as_float_dtype, as_generator, expect_cache
from mmt_numpy.nn.sublayer import SublayerCache, sublayer_backward, sublayer_forward
from mmt_numpy.validate import module_input, positive_int


class ContextAttentionCache(NamedTuple):
    Lx: int  # where the joined keys [x ; context] split
    context_norm: ops.LayerNormCache
    attn: SublayerCache  # .sublayer is the MultiHeadAttentionCache (queries x, keys [x ; context])
    ff: SublayerCache

    @property
    def weights(self) -> np.ndarray:
        """``(B, H, Lx, Lx + Lc)``: each query's attention over ``[x ; context]``."""
        return self.attn.weights


class ContextAttentionLayer(Module):
    """Queries ``x`` attend over ``[x ; context]``; then a feed-forward network (see the module doc).

    Submodules: ``attn`` :class:`MultiHeadAttention` ``(d_model, num_heads)``, ``norm1``,
    ``norm_context``, ``norm2``, ``ff`` :class:`~mmt_numpy.nn.FeedForward`, and ``dropout1``,
    ``dropout2``.  (With ``norm_first=False``, post-LN, x
    enters the attention un-normalised and ``out = norm2(h + ff(h))`` with
    ``h = norm1(x + attn(...))``; the context is normalised by ``norm_context`` either way.)

    Args:
        d_model, num_heads, d_ff: widths and heads; x and context have width d_model.
        norm_first: pre-LN (default) or post-LN.
        activation, dropout: of the feed-forward network and the residual branches.
        dtype, rng: parameter dtype and the generator for initialisation and dropout.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        *,
        norm_first: bool = True,
        activation: str = "relu",
        dropout: float = 0.0,
        dtype: object = np.float64,
        rng: RngLike = None,
    ) -> None:
        self.d_model = positive_int("d_model", d_model)
        self.d_ff = positive_int("d_ff", d_ff)
        self.norm_first = bool(norm_first)
        dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        self.attn = MultiHeadAttention(self.d_model, num_heads, dtype=dtype, rng=gen)
        self.ff = FeedForward(self.d_model, self.d_ff, activation, dropout, dtype=dtype, rng=gen)
        self.norm1 = LayerNorm(self.d_model, dtype=dtype)
        self.norm_context = LayerNorm(self.d_model, dtype=dtype)
        self.norm2 = LayerNorm(self.d_model, dtype=dtype)
        self.dropout1 = Dropout(dropout, rng=gen)
        self.dropout2 = Dropout(dropout, rng=gen)

    def forward(
        self, x: np.ndarray, context: np.ndarray, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, ContextAttentionCache]:
        """Update ``x`` from itself and ``context``.

        Args:
            x: ``(B, Lx, d_model)``, the queries (e.g. a question's tokens).
            context: ``(B, Lc, d_model)``, read but not updated (e.g. a clip's tokens).
            mask: bool over the joined keys, True = may attend, by the module rule of
                :mod:`mmt_numpy.nn.masks` with ``Lq = Lx``, ``Lk = Lx + Lc``: e.g.
                ``ops.padding_mask``-style ``(B, 1, 1, Lx + Lc)`` for padded questions.

        Returns:
            ``(B, Lx, d_model)`` and the cache; ``cache.weights`` is ``(B, H, Lx, Lx + Lc)``.
        """
        owner = f"ContextAttentionLayer(d_model={self.d_model})"
        dtype = self.norm1.dtype
        module_input("x", x, self.d_model, dtype, owner, ndim=3)
        module_input("context", context, self.d_model, dtype, owner, ndim=3)
        if context.shape[0] != x.shape[0]:
            raise ValueError(
                f"context: expected batch size {x.shape[0]} (as x {x.shape}), got shape {context.shape}"
            )
        B, Lx, _ = x.shape
        mask = module_mask("mask", mask, B, self.attn.num_heads, Lx, Lx + context.shape[1])
        ctx, c_ctx = self.norm_context.forward(context)  # ctx = norm_context(context)

        def attend(h: np.ndarray) -> tuple[np.ndarray, MultiHeadAttentionCache]:
            return self.attn.forward(h, key_value=np.concatenate([h, ctx], axis=1), mask=mask)

        # h = x + attn(norm1(x), [norm1(x) ; ctx]),  out = h + ff(norm2(h))   (pre-LN)
        h, c_attn = sublayer_forward(x, attend, self.norm1, self.dropout1, self.norm_first)
        out, c_ff = sublayer_forward(h, self.ff.forward, self.norm2, self.dropout2, self.norm_first)
        return out, ContextAttentionCache(Lx, c_ctx, c_attn, c_ff)

    def backward(self, d_out: np.ndarray, cache: ContextAttentionCache) -> tuple[np.ndarray, np.ndarray]:
        """``d_out (B, Lx, d_model)`` -> ``(dx (B, Lx, d_model), d_context (B, Lc, d_model))``."""
        expect_cache(cache, ContextAttentionCache, "ContextAttentionLayer")
        Lx = cache.Lx

        def attend_backward(d_y: np.ndarray, c: MultiHeadAttentionCache) -> tuple[np.ndarray, np.ndarray]:
            # y = attn(h, key_value=[h ; ctx]): h is the query and the first Lx keys, so its two
            # gradients add; the rest of the key gradient belongs to ctx.
            d_h, d_kv = self.attn.backward(d_y, c)
            d_h += d_kv[:, :Lx]
            return d_h, d_kv[:, Lx:]

        (d_h,) = sublayer_backward(d_out, cache.ff, self.ff.backward, self.norm2, self.dropout2)
        d_x, d_ctx = sublayer_backward(d_h, cache.attn, attend_backward, self.norm1, self.dropout1)
        (d_context,) = self.norm_context.backward(np.ascontiguousarray(d_ctx), cache.context_norm)
        return d_x, d_context

    def __repr__(self) -> str:
        return (
            f"ContextAttentionLayer(d_model={self.d_model}, num_heads={self.attn.num_heads}, "
            f"d_ff={self.d_ff}, norm_first={self.norm_first})"
        )
