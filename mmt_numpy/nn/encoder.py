"""The Transformer encoder layer of §3.1 and a stack of them.

§3.1 lists the pieces in order: multi-head self-attention, the feed-forward network, the
residual connection, layer normalisation.  Each of the two sub-layers (attention, then
feed-forward) gets a residual connection and a layer norm; where the norm sits gives the
two variants ``torch.nn.TransformerEncoderLayer`` offers:

    post-LN (norm_first=False, the 2017 paper and §3.1's order):
        x = norm1(x + dropout1(self_attn(x)))
        x = norm2(x + dropout2(ff(x)))
    pre-LN (norm_first=True, GPT-2 and most large models; trains more stably when deep):
        x = x + dropout1(self_attn(norm1(x)))
        x = x + dropout2(ff(norm2(x)))

with ``ff(x) = linear2(dropout(activation(linear1(x))))``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mmt_numpy.nn.attention import MultiHeadAttention
from mmt_numpy.nn.dropout import Dropout
from mmt_numpy.nn.feedforward import Activation, FeedForwardCache, feed_forward, feed_forward_backward
from mmt_numpy.nn.kv_cache import KVCache
from mmt_numpy.nn.layernorm import LayerNorm
from mmt_numpy.nn.linear import Linear
from mmt_numpy.nn.module import Module, RngLike, as_float_dtype, as_generator, expect_cache
from mmt_numpy.nn.sublayer import SublayerCache, sublayer_backward, sublayer_forward
from mmt_numpy.validate import module_input, positive_int, positive_number, probability


class EncoderLayerCache(NamedTuple):
    attn: SublayerCache  # the self-attention sub-layer (its .sublayer is a MultiHeadAttentionCache)
    ff: SublayerCache  # the feed-forward sub-layer

    @property
    def weights(self) -> np.ndarray:
        """``(B, H, L, L)``: this layer's self-attention weights."""
        return self.attn.weights


class EncoderCache(NamedTuple):
    layers: tuple[EncoderLayerCache, ...]
    norm: object  # the final LayerNormCache, or None

    @property
    def weights(self) -> list[np.ndarray]:
        """Every layer's self-attention weights, each ``(B, H, L, L)``, first layer first."""
        return [c.weights for c in self.layers]


class TransformerEncoderLayer(Module):
    """One encoder layer: self-attention and feed-forward sub-layers, each with residual + norm.

    Submodules carry PyTorch's names, so ``named_parameters()`` lines up with
    ``nn.TransformerEncoderLayer.named_parameters()``: ``self_attn`` (W_q … b_o),
    ``linear1``, ``linear2``, ``norm1``, ``norm2``; and the parameter-free ``dropout``
    (inside the feed-forward), ``dropout1``, ``dropout2``, ``activation``.

    Difference from PyTorch: ``dropout`` is not applied to the attention weights
    (``self_attn`` has no dropout), so the two agree exactly when ``dropout=0`` or in
    evaluation mode, and otherwise differ only by that one dropout.

    Args:
        d_model: the width of x.
        num_heads: attention heads, dividing d_model.
        d_ff: hidden width of the feed-forward network.
        norm_first: False = post-LN, True = pre-LN (see the module docstring).
        activation: ``"relu"``, ``"gelu"`` (exact) or ``"gelu_tanh"``.
        dropout: probability for dropout1, dropout2 and the feed-forward dropout.
        layer_norm_eps: eps of both norms.
        dtype, rng: parameter dtype and the generator for initialisation and dropout masks.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        norm_first: bool = False,
        activation: str = "relu",
        dropout: float = 0.0,
        layer_norm_eps: float = 1e-5,
        *,
        dtype: object = np.float64,
        rng: RngLike = None,
    ) -> None:
        self.d_model = positive_int("d_model", d_model)
        self.d_ff = positive_int("d_ff", d_ff)
        dropout = probability("dropout", dropout)
        layer_norm_eps = positive_number("layer_norm_eps", layer_norm_eps)
        self.norm_first = bool(norm_first)
        dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        self.self_attn = MultiHeadAttention(self.d_model, num_heads, dtype=dtype, rng=gen)
        self.linear1 = Linear(self.d_model, self.d_ff, dtype=dtype, rng=gen)
        self.activation = Activation(activation)
        self.dropout = Dropout(dropout, rng=gen)
        self.linear2 = Linear(self.d_ff, self.d_model, dtype=dtype, rng=gen)
        self.norm1 = LayerNorm(self.d_model, layer_norm_eps, dtype=dtype)
        self.norm2 = LayerNorm(self.d_model, layer_norm_eps, dtype=dtype)
        self.dropout1 = Dropout(dropout, rng=gen)
        self.dropout2 = Dropout(dropout, rng=gen)

    def forward(self, x: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, EncoderLayerCache]:
        """Run the layer.

        Args:
            x: ``(B, L, d_model)``.
            mask: bool, True = may attend, by the module rule of :mod:`mmt_numpy.nn.masks`:
                ``(L, L)`` (``ops.causal_mask(L)``), ``(B, L, L)``, or 4-D broadcastable to
                ``(B, H, L, L)`` (``ops.padding_mask(lengths, L)``).

        Returns:
            ``(B, L, d_model)`` and the cache; ``cache.weights`` holds ``(B, H, L, L)``.
        """
        owner = f"TransformerEncoderLayer(d_model={self.d_model})"
        module_input("x", x, self.d_model, self.norm1.dtype, owner, ndim=3)
        # x1 = the self-attention sub-layer of x,  x2 = the feed-forward sub-layer of x1
        x1, attn_cache = sublayer_forward(
            x, lambda h: self.self_attn.forward(h, mask=mask), self.norm1, self.dropout1, self.norm_first
        )
        x2, ff_cache = sublayer_forward(x1, self._feed_forward, self.norm2, self.dropout2, self.norm_first)
        return x2, EncoderLayerCache(attn_cache, ff_cache)

    def backward(self, d_out: np.ndarray, cache: EncoderLayerCache) -> tuple[np.ndarray]:
        """``d_out (B, L, d_model)`` -> ``(dx (B, L, d_model),)``; adds into every parameter's ``.grad``."""
        expect_cache(cache, EncoderLayerCache, "TransformerEncoderLayer")
        # x2 = feed-forward sub-layer(x1)
        (d_x1,) = sublayer_backward(d_out, cache.ff, self._feed_forward_backward, self.norm2, self.dropout2)
        # x1 = self-attention sub-layer(x)
        (d_x,) = sublayer_backward(d_x1, cache.attn, self.self_attn.backward, self.norm1, self.dropout1)
        return (d_x,)

    def step(self, x: np.ndarray, cache: KVCache, layer: int) -> np.ndarray:
        """Inference on new positions only, the layer used causally (a decoder-only stack).

        The self-attention appends the keys and values of ``x``'s positions to ``cache`` (layer
        ``layer``) and attends causally over what it keeps (:meth:`KVCache.attend`, at the
        cache's positions when the attention has a position scheme).  Equals the last rows of
        :meth:`forward` on the whole prefix under ``ops.causal_mask`` while nothing was evicted.

        Args:
            x: ``(B, n, d_model)`` the new positions.
            cache: a :class:`~mmt_numpy.nn.kv_cache.KVCache` (e.g. ``KVCache.for_layers``).
            layer: this layer's index in the stack.

        Returns:
            ``(B, n, d_model)``.
        """
        owner = f"TransformerEncoderLayer(d_model={self.d_model})"
        module_input("x", x, self.d_model, self.norm1.dtype, owner, ndim=3)
        x, _ = sublayer_forward(
            x,
            lambda h: (cache.attend(layer, self.self_attn, h), None),
            self.norm1,
            self.dropout1,
            self.norm_first,
        )
        x, _ = sublayer_forward(x, self._feed_forward, self.norm2, self.dropout2, self.norm_first)
        return x

    def _feed_forward(self, x: np.ndarray) -> tuple[np.ndarray, FeedForwardCache]:
        return feed_forward(x, self.linear1, self.activation, self.dropout, self.linear2)

    def _feed_forward_backward(self, d_out: np.ndarray, cache: FeedForwardCache) -> tuple[np.ndarray]:
        return (
            feed_forward_backward(d_out, cache, self.linear1, self.activation, self.dropout, self.linear2),
        )

    def __repr__(self) -> str:
        return (
            f"TransformerEncoderLayer(d_model={self.d_model}, num_heads={self.self_attn.num_heads}, "
            f"d_ff={self.d_ff}, norm_first={self.norm_first}, "
            f"activation={self.activation.name!r}, dropout={self.dropout.p})"
        )


class TransformerEncoder(Module):
    """``num_layers`` encoder layers in sequence, then an optional final LayerNorm.

    Submodules: ``layers`` (a list: parameters ``layers.0.self_attn.W_q`` …) and ``norm``
    (``None`` unless ``final_norm``).  A pre-LN stack wants ``final_norm=True``: its last
    residual sum is otherwise never normalised.  Every layer draws its own initial
    parameters from ``rng`` (PyTorch instead deep-copies one layer, so all its layers start
    equal); the same seed gives the same parameters.

    Args:
        d_model, num_heads, d_ff, norm_first, activation, dropout: as
            :class:`TransformerEncoderLayer`, for every layer.
        num_layers: how many layers.
        final_norm: add ``norm = LayerNorm(d_model)`` after the last layer.
        share_layers: one layer applied ``num_layers`` times (ALBERT): a deep stack with the
            parameters of one layer.
        dtype, rng: parameter dtype and the generator.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        num_layers: int,
        norm_first: bool = False,
        activation: str = "relu",
        dropout: float = 0.0,
        final_norm: bool = False,
        *,
        share_layers: bool = False,
        dtype: object = np.float64,
        rng: RngLike = None,
    ) -> None:
        self.num_layers = positive_int("num_layers", num_layers)
        dropout = probability("dropout", dropout)
        self.share_layers = bool(share_layers)
        dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        distinct = 1 if self.share_layers else self.num_layers
        made = [
            TransformerEncoderLayer(
                d_model, num_heads, d_ff, norm_first, activation, dropout, dtype=dtype, rng=gen
            )
            for _ in range(distinct)
        ]
        # With share_layers the list holds one layer num_layers times (ALBERT's cross-layer
        # sharing): its Parameters are listed once, under layers.0.
        self.layers = made * self.num_layers if self.share_layers else made
        self.norm = LayerNorm(d_model, dtype=dtype) if final_norm else None

    def forward(self, x: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, EncoderCache]:
        """``x (B, L, d_model)``, mask as the layer's -> ``(B, L, d_model)`` and the cache.

        ``cache.weights`` lists every layer's attention weights, each ``(B, H, L, L)``.
        """
        layer_caches = []
        for layer in self.layers:
            x, c = layer.forward(x, mask)  # x = layer(x, mask)
            layer_caches.append(c)
        norm_cache = None
        if self.norm is not None:
            x, norm_cache = self.norm.forward(x)  # x = norm(x)
        return x, EncoderCache(tuple(layer_caches), norm_cache)

    def backward(self, d_out: np.ndarray, cache: EncoderCache) -> tuple[np.ndarray]:
        """``d_out (B, L, d_model)`` -> ``(dx (B, L, d_model),)``: the layers in reverse order.

        A layer shared by several positions of the stack (``share_layers=True``) is called
        once per position, each call with its own cache, so its gradients add up.
        """
        expect_cache(cache, EncoderCache, "TransformerEncoder")
        if self.norm is not None:
            (d_out,) = self.norm.backward(d_out, cache.norm)  # x = norm(x)
        for layer, c in zip(reversed(self.layers), reversed(cache.layers), strict=True):
            (d_out,) = layer.backward(d_out, c)  # x = layer(x, mask)
        return (d_out,)

    def __repr__(self) -> str:
        return (
            f"TransformerEncoder(num_layers={self.num_layers}, layer={self.layers[0]!r}, norm={self.norm!r})"
        )
