"""The Transformer decoder layer and a stack of them: the text side of image captioning (§6.2).

A decoder layer has three sub-layers, each wrapped in the residual + layer norm of §3.1
(:mod:`mmt_numpy.nn.sublayer`); with ``h`` the text so far and ``m`` the encoder's memory
(the image patches, encoded):

    post-LN (norm_first=False):
        h = norm1(h + self_attn(h, mask))             masked (causal) self-attention
        h = norm2(h + cross_attn(h, m, memory_mask))  cross-attention over the image
        h = norm3(h + ff(h))
    pre-LN (norm_first=True):
        h = h + self_attn(norm1(h), mask)
        h = h + cross_attn(norm2(h), m, memory_mask)  (the memory itself is not normed here)
        h = h + ff(norm3(h))

as ``torch.nn.TransformerDecoderLayer``.  Why the self-attention is masked: the model is
trained to predict token t+1 from tokens 0 … t at every position at once (teacher forcing).
If position t could attend to position t+1 it would read the answer, so the causal mask
``ops.causal_mask(T)`` lets query t see keys 0 … t only.  The same mask is what makes a
KV cache exact: no position ever depends on a later one, so what was computed for the
prefix stays valid when a token is appended (:mod:`mmt_numpy.nn.kv_cache`, :meth:`step`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mmt_numpy.nn.attention import MultiHeadAttention
from mmt_numpy.nn.dropout import Dropout
from mmt_numpy.nn.encoder import TransformerEncoderLayer
from mmt_numpy.nn.feedforward import Activation
from mmt_numpy.nn.kv_cache import EvictionPolicy, KVCache, StreamingKVCache
from mmt_numpy.nn.layernorm import LayerNorm
from mmt_numpy.nn.linear import Linear
from mmt_numpy.nn.masks import module_mask
from mmt_numpy.nn.module import Module, RngLike, as_float_dtype, as_generator, expect_cache
from mmt_numpy.nn.sublayer import SublayerCache, sublayer_backward, sublayer_forward
from mmt_numpy.validate import module_input, positive_int


class DecoderLayerCache(NamedTuple):
    self_attn: SublayerCache  # its .sublayer is a MultiHeadAttentionCache
    cross_attn: SublayerCache
    ff: SublayerCache

    @property
    def weights(self) -> np.ndarray:
        """``(B, H, T, T)``: the masked self-attention weights."""
        return self.self_attn.weights

    @property
    def cross_weights(self) -> np.ndarray:
        """``(B, H, T, Lm)``: where each text position looks in the memory (the image)."""
        return self.cross_attn.weights


class DecoderCache(NamedTuple):
    layers: tuple[DecoderLayerCache, ...]
    norm: object  # the final LayerNormCache, or None

    @property
    def weights(self) -> list[np.ndarray]:
        """Every layer's self-attention weights, each ``(B, H, T, T)``, first layer first."""
        return [c.weights for c in self.layers]

    @property
    def cross_weights(self) -> list[np.ndarray]:
        """Every layer's cross-attention weights, each ``(B, H, T, Lm)``, first layer first."""
        return [c.cross_weights for c in self.layers]


def _memory(memory: object, x: np.ndarray, d_model: int, dtype: np.dtype, owner: str) -> np.ndarray:
    """Check the encoder output ``memory (B, Lm, d_model)`` against the text ``x (B, T, d_model)``."""
    module_input("memory", memory, d_model, dtype, owner, ndim=3)
    if memory.shape[0] != x.shape[0]:
        raise ValueError(
            f"memory: expected batch size {x.shape[0]} (as x {x.shape}), got shape {memory.shape}"
        )
    return memory


class TransformerDecoderLayer(Module):
    """One decoder layer: masked self-attention, cross-attention, feed-forward (module docstring).

    Submodules carry PyTorch's names (``torch_bridge`` maps ``cross_attn`` to PyTorch's
    ``multihead_attn``): ``self_attn``, ``cross_attn``, ``linear1``, ``linear2``, ``norm1``,
    ``norm2``, ``norm3``, and the parameter-free ``activation``, ``dropout`` (inside the
    feed-forward), ``dropout1``, ``dropout2``, ``dropout3``.

    As the encoder layer, attention weights get no dropout, so the layer equals PyTorch's
    with ``dropout=0`` or in ``eval()``.

    Args:
        d_model: the width of the text and of the memory.
        num_heads: attention heads, dividing d_model (both attentions).
        d_ff: hidden width of the feed-forward network.
        norm_first: False = post-LN, True = pre-LN.
        activation: ``"relu"``, ``"gelu"`` (exact) or ``"gelu_tanh"``.
        dropout: probability of dropout1-3 and of the feed-forward dropout.
        layer_norm_eps: eps of the three norms.
        dtype, rng: parameter dtype and the generator for initialisation and dropout masks.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        *,
        norm_first: bool = False,
        activation: str = "relu",
        dropout: float = 0.0,
        layer_norm_eps: float = 1e-5,
        dtype: object = np.float64,
        rng: RngLike = None,
    ) -> None:
        self.d_model = positive_int("d_model", d_model)
        self.d_ff = positive_int("d_ff", d_ff)
        self.norm_first = bool(norm_first)
        self.dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        self.self_attn = MultiHeadAttention(self.d_model, num_heads, dtype=self.dtype, rng=gen)
        self.cross_attn = MultiHeadAttention(self.d_model, num_heads, dtype=self.dtype, rng=gen)
        self.linear1 = Linear(self.d_model, self.d_ff, dtype=self.dtype, rng=gen)
        self.activation = Activation(activation)
        self.dropout = Dropout(dropout, rng=gen)
        self.linear2 = Linear(self.d_ff, self.d_model, dtype=self.dtype, rng=gen)
        self.norm1 = LayerNorm(self.d_model, layer_norm_eps, dtype=self.dtype)
        self.norm2 = LayerNorm(self.d_model, layer_norm_eps, dtype=self.dtype)
        self.norm3 = LayerNorm(self.d_model, layer_norm_eps, dtype=self.dtype)
        self.dropout1 = Dropout(dropout, rng=gen)
        self.dropout2 = Dropout(dropout, rng=gen)
        self.dropout3 = Dropout(dropout, rng=gen)

    def forward(
        self,
        x: np.ndarray,
        memory: np.ndarray,
        *,
        mask: np.ndarray | None = None,
        memory_mask: np.ndarray | None = None,
    ) -> tuple[np.ndarray, DecoderLayerCache]:
        """Run the layer over a whole text (training, or recomputing a prefix).

        Args:
            x: ``(B, T, d_model)`` the text so far (embedded).
            memory: ``(B, Lm, d_model)`` the encoder's output (the image).
            mask: the self-attention mask by the module rule of :mod:`mmt_numpy.nn.masks`,
                usually ``ops.causal_mask(T)`` ``(T, T)``; None lets every position see every
                other (not a language model then).
            memory_mask: the cross-attention mask, ``(B, 1, 1, Lm)`` key padding of the memory
                (``ops.padding_mask(image_lengths, Lm)``), ``(B, T, Lm)``, or ``(T, Lm)``.

        Returns:
            ``(B, T, d_model)`` and the cache (``.weights`` ``(B, H, T, T)``, ``.cross_weights``
            ``(B, H, T, Lm)``).
        """
        owner = f"TransformerDecoderLayer(d_model={self.d_model})"
        module_input("x", x, self.d_model, self.dtype, owner, ndim=3)
        _memory(memory, x, self.d_model, self.dtype, owner)
        # x1 = self-attention sub-layer(x), x2 = cross-attention sub-layer(x1), x3 = feed-forward(x2)
        x1, self_cache = sublayer_forward(
            x, lambda h: self.self_attn.forward(h, mask=mask), self.norm1, self.dropout1, self.norm_first
        )
        x2, cross_cache = sublayer_forward(
            x1,
            lambda h: self.cross_attn.forward(h, memory, mask=memory_mask),
            self.norm2,
            self.dropout2,
            self.norm_first,
        )
        x3, ff_cache = sublayer_forward(x2, self._feed_forward, self.norm3, self.dropout3, self.norm_first)
        return x3, DecoderLayerCache(self_cache, cross_cache, ff_cache)

    def backward(self, d_out: np.ndarray, cache: DecoderLayerCache) -> tuple[np.ndarray, np.ndarray]:
        """``d_out (B, T, d_model)`` -> ``(dx (B, T, d_model), d_memory (B, Lm, d_model))``."""
        expect_cache(cache, DecoderLayerCache, "TransformerDecoderLayer")
        # x3 = feed-forward sub-layer(x2)
        (d_x2,) = sublayer_backward(d_out, cache.ff, self._feed_forward_backward, self.norm3, self.dropout3)
        # x2 = cross-attention sub-layer(x1, memory): the memory's gradient comes back as the second entry
        d_x1, d_memory = sublayer_backward(
            d_x2, cache.cross_attn, self.cross_attn.backward, self.norm2, self.dropout2
        )
        # x1 = self-attention sub-layer(x)
        (d_x,) = sublayer_backward(d_x1, cache.self_attn, self.self_attn.backward, self.norm1, self.dropout1)
        return d_x, d_memory

    def step(self, x: np.ndarray, cache: KVCache, layer: int) -> np.ndarray:
        """Inference on new positions only, over what ``cache`` holds for this layer.

        The self-attention projects the keys and values of ``x``'s positions, appends them
        to the cache (layer ``layer``), and lets the new queries attend over everything kept
        (:func:`~mmt_numpy.nn.kv_cache.step_mask`, at the cache's positions when the
        self-attention has a position scheme); the cross-attention uses the image's keys and values that the
        cache computed once.  Equals the last rows of :meth:`forward` on the whole prefix with
        a causal mask (while nothing was evicted).

        Args:
            x: ``(B, n, d_model)`` the new positions (n = 1 when generating token by token).
            cache: the decoder's :class:`~mmt_numpy.nn.kv_cache.KVCache`.
            layer: this layer's index in the decoder.

        Returns:
            ``(B, n, d_model)``.
        """
        module_input(
            "x", x, self.d_model, self.dtype, f"TransformerDecoderLayer(d_model={self.d_model})", ndim=3
        )

        def self_attention(h: np.ndarray) -> tuple[np.ndarray, None]:
            return cache.attend(layer, self.self_attn, h), None  # append h's keys/values, attend causally

        def cross_attention(h: np.ndarray) -> tuple[np.ndarray, None]:
            keys, values = cache.cross[layer]
            return self.cross_attn.attend(h, keys, values, cache.memory_mask), None

        x, _ = sublayer_forward(x, self_attention, self.norm1, self.dropout1, self.norm_first)
        x, _ = sublayer_forward(x, cross_attention, self.norm2, self.dropout2, self.norm_first)
        x, _ = sublayer_forward(x, self._feed_forward, self.norm3, self.dropout3, self.norm_first)
        return x

    # The position-wise network over this layer's linear1, activation, dropout, linear2: the
    # encoder layer's two methods, which read exactly those submodules.
    _feed_forward = TransformerEncoderLayer._feed_forward
    _feed_forward_backward = TransformerEncoderLayer._feed_forward_backward

    def __repr__(self) -> str:
        return (
            f"TransformerDecoderLayer(d_model={self.d_model}, num_heads={self.self_attn.num_heads}, "
            f"d_ff={self.d_ff}, norm_first={self.norm_first}, "
            f"activation={self.activation.name!r}, dropout={self.dropout.p})"
        )


class TransformerDecoder(Module):
    """``num_layers`` decoder layers in sequence, each reading the same memory, then an optional norm.

    Submodules: ``layers`` (``layers.0.self_attn.W_q`` …) and ``norm`` (None unless
    ``final_norm``; a pre-LN stack wants it, as ``nn.TransformerDecoder(norm=...)``).  Every
    layer draws its own initial parameters from ``rng``.

    Two ways to run it: :meth:`forward` / :meth:`backward` over whole texts (training,
    teacher forcing), and :meth:`new_cache` + :meth:`step` for generation, one new
    position at a time over a :class:`~mmt_numpy.nn.kv_cache.KVCache` (inference only).

    Args:
        d_model, num_heads, d_ff, norm_first, activation, dropout: as
            :class:`TransformerDecoderLayer`, for every layer.
        num_layers: how many layers.
        final_norm: add ``norm = LayerNorm(d_model)`` after the last layer.
        dtype, rng: parameter dtype and the generator.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        num_layers: int,
        *,
        norm_first: bool = False,
        activation: str = "relu",
        dropout: float = 0.0,
        final_norm: bool = False,
        dtype: object = np.float64,
        rng: RngLike = None,
    ) -> None:
        self.num_layers = positive_int("num_layers", num_layers)
        self.dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        self.layers = [
            TransformerDecoderLayer(
                d_model,
                num_heads,
                d_ff,
                norm_first=norm_first,
                activation=activation,
                dropout=dropout,
                dtype=self.dtype,
                rng=gen,
            )
            for _ in range(self.num_layers)
        ]
        self.d_model = self.layers[0].d_model
        self.norm = LayerNorm(self.d_model, dtype=self.dtype) if final_norm else None

    def forward(
        self,
        x: np.ndarray,
        memory: np.ndarray,
        *,
        mask: np.ndarray | None = None,
        memory_mask: np.ndarray | None = None,
    ) -> tuple[np.ndarray, DecoderCache]:
        """``x (B, T, d_model)``, ``memory (B, Lm, d_model)``, masks as the layer's -> ``(B, T, d_model)``.

        ``cache.weights`` / ``cache.cross_weights`` list every layer's attention weights.
        """
        layer_caches = []
        for layer in self.layers:
            x, c = layer.forward(x, memory, mask=mask, memory_mask=memory_mask)  # x = layer(x, memory)
            layer_caches.append(c)
        norm_cache = None
        if self.norm is not None:
            x, norm_cache = self.norm.forward(x)  # x = norm(x)
        return x, DecoderCache(tuple(layer_caches), norm_cache)

    def backward(self, d_out: np.ndarray, cache: DecoderCache) -> tuple[np.ndarray, np.ndarray]:
        """``d_out (B, T, d_model)`` -> ``(dx (B, T, d_model), d_memory (B, Lm, d_model))``.

        Every layer reads the memory, so its gradient is the sum of the layers' shares.
        """
        expect_cache(cache, DecoderCache, "TransformerDecoder")
        if self.norm is not None:
            (d_out,) = self.norm.backward(d_out, cache.norm)  # x = norm(x)
        d_memory = None
        for layer, c in zip(reversed(self.layers), reversed(cache.layers), strict=True):
            d_out, d_mem = layer.backward(d_out, c)  # x = layer(x, memory)
            d_memory = d_mem if d_memory is None else d_memory + d_mem
        return d_out, d_memory

    def new_cache(
        self,
        memory: np.ndarray,
        memory_mask: np.ndarray | None = None,
        *,
        policy: EvictionPolicy | None = None,
        capacity: int = 16,
        sinks: int | None = None,
        window: int | None = None,
    ) -> KVCache:
        """An empty KV cache for generating over ``memory``: the image's cross-attention keys and
        values projected once, per layer.

        With ``window`` (and ``sinks``, default 0) it is a
        :class:`~mmt_numpy.nn.kv_cache.StreamingKVCache` (attention sinks plus a sliding window,
        memory flat with the length).  It counts positions inside the cache, which a position
        scheme of the self-attention (``layer.self_attn.position``, RoPE or ALiBi) uses; an
        absolute position embedding added to the inputs by the caller cannot be re-counted.

        Args:
            memory: ``(B, Lm, d_model)`` the encoder's output.
            memory_mask: None, or key padding of the memory that every query shares,
                ``(B, 1, 1, Lm)`` (``ops.padding_mask(image_lengths, Lm)``).
            policy: an eviction policy (:mod:`mmt_numpy.nn.kv_cache`), None to keep everything.
            capacity: initial room for self-attention entries.
        """
        owner = f"TransformerDecoder(d_model={self.d_model})"
        module_input("memory", memory, self.d_model, self.dtype, owner, ndim=3)
        B, Lm, _ = memory.shape
        if memory_mask is not None:
            H = self.layers[0].cross_attn.num_heads
            if not (
                isinstance(memory_mask, np.ndarray) and memory_mask.ndim == 4 and memory_mask.shape[2] == 1
            ):
                raise ValueError(
                    f"memory_mask: expected key padding shared by every query, shape ({B}, 1, 1, {Lm}) "
                    f"(ops.padding_mask(image_lengths, {Lm})), "
                    f"got {getattr(memory_mask, 'shape', type(memory_mask).__name__)}"
                )
            module_mask("memory_mask", memory_mask, B, H, 1, Lm)
        cross = [layer.cross_attn.keys_values(memory) for layer in self.layers]
        if window is None:
            if sinks is not None:
                raise ValueError(f"sinks: needs a window (without one every token is kept), got {sinks}")
            return KVCache(cross, memory_mask, policy=policy, capacity=capacity)
        if policy is not None:
            raise ValueError("policy: a streaming cache (window=...) brings its own; pass one or the other")
        return StreamingKVCache(cross, memory_mask, sinks=0 if sinks is None else sinks, window=window)

    def step(self, x: np.ndarray, cache: KVCache) -> np.ndarray:
        """Inference on the new positions ``x (B, n, d_model)`` -> ``(B, n, d_model)``.

        Runs every layer's :meth:`TransformerDecoderLayer.step`, the final norm, then commits
        the step to the cache (which may evict).  Position-dependent inputs (a position
        embedding of ``x``) are the caller's: ``cache.seen`` is the position of ``x[:, 0]``.
        """
        if not isinstance(cache, KVCache) or cache.num_layers != self.num_layers:
            raise TypeError(
                f"cache: expected the KVCache that new_cache() made for these {self.num_layers} layers, "
                f"got {cache!r}"
            )
        module_input("x", x, self.d_model, self.dtype, f"TransformerDecoder(d_model={self.d_model})", ndim=3)
        if x.shape[0] != cache.batch or x.shape[1] < 1:
            raise ValueError(
                f"x: expected shape ({cache.batch}, n >= 1, {self.d_model}) (the cache's batch), "
                f"got {x.shape}"
            )
        for i, layer in enumerate(self.layers):
            x = layer.step(x, cache, i)
        if self.norm is not None:
            x = self.norm(x)
        cache.commit()
        return x

    def __repr__(self) -> str:
        return (
            f"TransformerDecoder(num_layers={self.num_layers}, layer={self.layers[0]!r}, norm={self.norm!r})"
        )
