"""``LongTextReader``: a small causal (decoder-only) Transformer that answers at the last token.

The model of the length-extrapolation experiment (``python -m mmt_numpy longtext``): token
ids (and, for the multimodal task, image patches placed just before the last token, the
question) run through a
stack of pre-LN Transformer layers under a causal mask, and a classifier reads the answer
from the last position, where the question ``"?"`` stands.  Where the positions enter is
the point of the experiment:

* ``position="sinusoidal"``: the fixed sin/cos code added to the inputs (Vaswani et al.);
* ``position="rope"`` or ``"alibi"``, or any :class:`~mmt_numpy.nn.PositionScheme`: inside
  every self-attention (:class:`~mmt_numpy.nn.MultiHeadAttention`'s ``position``), so the
  same trained model can be evaluated with RoPE scaling or a window with sinks
  (:meth:`LongTextReader.set_position`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mmt_numpy import ops
from mmt_numpy.nn.attention import MultiHeadAttention, PositionScheme, as_position_scheme
from mmt_numpy.nn.embedding import Embedding, EmbeddingCache, PositionCache, SinusoidalPositionalEncoding
from mmt_numpy.nn.encoder import EncoderLayerCache, TransformerEncoderLayer
from mmt_numpy.nn.kv_cache import KVCache, StreamingKVCache
from mmt_numpy.nn.layernorm import LayerNorm
from mmt_numpy.nn.linear import Linear
from mmt_numpy.nn.module import Module, RngLike, as_float_dtype, as_generator, expect_cache
from mmt_numpy.validate import grad_output, module_input, positive_int

READER_POSITIONS = ("sinusoidal", "rope", "alibi")


class ReaderCache(NamedTuple):
    tokens: EmbeddingCache
    image: ops.LinearCache | None  # the patch projection, when patches were given
    position: PositionCache | None  # the sinusoidal code, when used
    layers: tuple[EncoderLayerCache, ...]
    norm: ops.LayerNormCache
    head: ops.LinearCache
    shape: tuple[int, int, int]  # (B, L, d_model) of the sequence
    image_tokens: int

    @property
    def weights(self) -> list[np.ndarray]:
        """Every layer's attention weights, each ``(B, H, L, L)``."""
        return [c.weights for c in self.layers]


class LongTextReader(Module):
    """Tokens (image patches before the last one) -> causal layers -> answer logits at the last position.

    Submodules: ``token_embedding`` ``(vocab_size, d_model)``; ``image_embedding``
    ``Linear(patch_dim, d_model)`` (only with ``patch_dim``); ``positional`` (sinusoidal only);
    ``layers`` (pre-LN :class:`~mmt_numpy.nn.TransformerEncoderLayer`, whose ``self_attn``
    carries the position scheme); ``norm``; ``head`` ``Linear(d_model, num_answers)``.

    Args:
        vocab_size, num_answers: numbers of token ids and of answer classes.
        position: ``"sinusoidal"``, ``"rope"``, ``"alibi"`` or a :class:`PositionScheme`.
        patch_dim: width of an image patch, or None for a text-only model.
        d_model, num_heads, num_layers, d_ff: the sizes of the layers.
        max_len: the longest sequence the sinusoidal code covers (the others have no limit).
        dtype, rng: parameter dtype and initialisation generator.
    """

    def __init__(
        self,
        vocab_size: int,
        num_answers: int,
        *,
        position: str | PositionScheme = "rope",
        patch_dim: int | None = None,
        d_model: int = 64,
        num_heads: int = 4,
        num_layers: int = 2,
        d_ff: int = 128,
        max_len: int = 4096,
        dtype: object = np.float64,
        rng: RngLike = None,
    ) -> None:
        if not isinstance(position, PositionScheme) and position not in READER_POSITIONS:
            raise ValueError(
                f"position: expected one of {READER_POSITIONS} or a PositionScheme, got {position!r}"
            )
        self.dtype = as_float_dtype(dtype)
        self.d_model = positive_int("d_model", d_model)
        self.sinusoidal = position == "sinusoidal"
        gen = as_generator(rng)
        self.token_embedding = Embedding(vocab_size, d_model, dtype=self.dtype, rng=gen)
        self.image_embedding = (
            None if patch_dim is None else Linear(patch_dim, d_model, dtype=self.dtype, rng=gen)
        )
        self.positional = (
            SinusoidalPositionalEncoding(max_len, d_model, dtype=self.dtype) if self.sinusoidal else None
        )
        self.layers = []
        for _ in range(positive_int("num_layers", num_layers)):
            layer = TransformerEncoderLayer(
                d_model, num_heads, d_ff, norm_first=True, dtype=self.dtype, rng=gen
            )
            scheme = None if self.sinusoidal else as_position_scheme(position)
            layer.self_attn = MultiHeadAttention(
                d_model, num_heads, dtype=self.dtype, rng=gen, position=scheme
            )
            self.layers.append(layer)
        self.norm = LayerNorm(d_model, dtype=self.dtype)
        self.head = Linear(d_model, num_answers, dtype=self.dtype, rng=gen)

    def set_position(self, scheme: PositionScheme | None) -> None:
        """Give every self-attention this scheme (e.g. RoPE + NTK, or a window with sinks).

        A sinusoidal model keeps its absolute code; its scheme may only be ``kind="none"``
        (a window and sinks, no positions inside attention).
        """
        if self.sinusoidal and scheme is not None and scheme.kind != "none":
            raise ValueError(
                f"scheme: a sinusoidal model takes only kind='none' (a window), got {scheme.kind!r}"
            )
        for layer in self.layers:
            layer.self_attn.position = scheme

    def forward(self, ids: np.ndarray, patches: np.ndarray | None = None) -> tuple[np.ndarray, ReaderCache]:
        """``ids (B, Lt)`` and ``patches (B, Li, patch_dim)`` (or None) -> logits ``(B, A)``.

        The sequence is ``ids[:, :-1]``, the image patches, then ``ids[:, -1]`` (the question,
        which sees the picture right before it); the logits are read at its last position.
        """
        x, tokens = self.token_embedding.forward(ids)  # (B, Lt, D)
        image = None
        if patches is not None:
            if self.image_embedding is None:
                raise ValueError("patches: this reader was built without patch_dim (a text-only model)")
            module_input("patches", patches, self.image_embedding.W.shape[0], self.dtype, repr(self), ndim=3)
            if patches.shape[0] != ids.shape[0]:
                raise ValueError(
                    f"patches: expected batch size {ids.shape[0]} (as ids), got shape {patches.shape}"
                )
            img, image = self.image_embedding.forward(patches)  # (B, Li, D)
            x = np.concatenate([x[:, :-1], img, x[:, -1:]], axis=1)  # text, image, question
        position = None
        if self.positional is not None:
            x, position = self.positional.forward(x)  # x + PE[:L]
        B, L, D = x.shape
        mask = ops.causal_mask(L)
        layer_caches = []
        for layer in self.layers:
            x, c = layer.forward(x, mask)  # x = layer(x), causal
            layer_caches.append(c)
        h, norm = self.norm.forward(x[:, -1])  # the last position, where "?" stands
        logits, head = self.head.forward(h)
        image_tokens = 0 if patches is None else patches.shape[1]
        return logits, ReaderCache(
            tokens, image, position, tuple(layer_caches), norm, head, (B, L, D), image_tokens
        )

    def backward(self, d_logits: np.ndarray, cache: ReaderCache) -> tuple[np.ndarray, ...]:
        """``d_logits (B, num_answers)`` -> ``(d_patches,)`` with patches, else ``()``."""
        expect_cache(cache, ReaderCache, "LongTextReader")
        B, L, D = cache.shape
        grad_output(d_logits, (B, self.head.W.shape[1]), self.dtype, "d_logits")
        # logits = head(norm(x[:, -1]))
        (d_h,) = self.head.backward(d_logits, cache.head)
        (d_last,) = self.norm.backward(d_h, cache.norm)
        d_x = np.zeros((B, L, D), dtype=self.dtype)
        d_x[:, -1] = d_last
        for layer, c in zip(reversed(self.layers), reversed(cache.layers), strict=True):
            (d_x,) = layer.backward(d_x, c)  # x = layer(x)
        if cache.position is not None:
            (d_x,) = self.positional.backward(d_x, cache.position)  # x + PE
        Li = cache.image_tokens
        if cache.image is None:
            self.token_embedding.backward(d_x, cache.tokens)
            return ()
        # x = [text[:-1] | image | text[-1]]
        self.token_embedding.backward(
            np.concatenate([d_x[:, : L - Li - 1], d_x[:, -1:]], axis=1), cache.tokens
        )
        (d_patches,) = self.image_embedding.backward(
            np.ascontiguousarray(d_x[:, L - Li - 1 : L - 1]), cache.image
        )
        return (d_patches,)

    # ------------------------------------------------------------------ streaming (inference only)

    def new_cache(self, batch: int, *, sinks: int | None = None, window: int | None = None) -> KVCache:
        """An empty KV cache for reading a text token by token with :meth:`step`.

        Without ``window`` it keeps every token (the step-by-step run equals :meth:`forward`
        on the prefix).  With ``window`` (and ``sinks``, default 0) it is a
        :class:`~mmt_numpy.nn.kv_cache.StreamingKVCache`: memory flat with the length, and
        RoPE/ALiBi positions counted inside the cache, so a stream may run far past the
        trained length; the run equals :meth:`forward` under
        ``PositionScheme(kind, window=window, sinks=sinks)``.
        """
        attn = self.layers[0].self_attn
        shape = (len(self.layers), batch, attn.num_heads, attn.d_model // attn.num_heads)
        if window is None:
            if sinks is not None:
                raise ValueError(f"sinks: needs a window (without one every token is kept), got {sinks}")
            return KVCache.for_layers(*shape, dtype=self.dtype)
        return StreamingKVCache.for_layers(
            *shape, dtype=self.dtype, sinks=0 if sinks is None else sinks, window=window
        )

    def step(self, ids: np.ndarray, cache: KVCache) -> np.ndarray:
        """Read the next tokens ``ids (B, n)`` over ``cache``; return the logits at the last ``(B, A)``.

        Text only (a stream has no image).  A sinusoidal model adds its code at the true
        positions ``cache.seen …``, so it stops at ``max_len``; RoPE and ALiBi have no limit.
        """
        if not isinstance(cache, KVCache) or cache.num_layers != len(self.layers):
            raise TypeError(
                f"cache: expected the KVCache that new_cache() made for these {len(self.layers)} layers, "
                f"got {cache!r}"
            )
        ids = np.asarray(ids)
        if ids.ndim != 2 or ids.shape[0] != cache.batch or ids.shape[1] < 1:
            raise ValueError(
                f"ids: expected shape ({cache.batch}, n >= 1) (the cache's batch), got {ids.shape}"
            )
        x, _ = self.token_embedding.forward(ids)  # (B, n, D)
        if self.positional is not None:
            end = cache.seen + ids.shape[1]
            if end > self.positional.max_len:
                raise ValueError(
                    f"ids: a sinusoidal reader covers {self.positional.max_len} positions, this step "
                    f"reaches {end}; use a RoPE or ALiBi reader to stream further"
                )
            x = x + self.positional.table[cache.seen : end]  # x + PE at the true positions
        for i, layer in enumerate(self.layers):
            x = layer.step(x, cache, i)  # x = layer(x), causal over the cache
        cache.commit()
        return self.head(self.norm(x[:, -1]))

    def __repr__(self) -> str:
        kind = "sinusoidal" if self.sinusoidal else self.layers[0].self_attn.position
        return f"LongTextReader(d_model={self.d_model}, layers={len(self.layers)}, position={kind!r})"
