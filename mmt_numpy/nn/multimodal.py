"""The multimodal Transformer of §5, with the gaps of the article's code filled in.

The model is single-stream fusion (§2.1.1): both modalities are projected into one hidden
space, laid side by side in one sequence, and a plain Transformer encoder lets every token
attend to every other, text to image and image to text alike::

    t = text_position(text_embedding(text))              (B, Lt, hidden)
    v = image_position(image_embedding(image))           (B, Li, hidden)
    x = modality_embedding([t ; v], [0]*Lt + [1]*Li)     (B, Lt + Li, hidden)
    h = encoder(x, mask)                                 (B, Lt + Li, hidden)
    out = output_layer(h)                                (B, Lt + Li, output_dim)

What differs from the code printed in §5, and why:

* ``output_dim`` is an argument; the article's ``__init__`` uses it without defining it.
* Positions are added (sinusoidal or learned), separately for each modality so that the
  image's positions do not depend on how long the text is.  The article's closing remark
  itself names positional encoding as missing: without it the encoder cannot tell word
  order, since self-attention is blind to permutations.
* A modality ("type") embedding is added, so the encoder can tell a text token from an
  image patch even when their projections happen to look alike.
* The layout is batch-first, ``(B, L, hidden)``, and the two modalities are joined along
  the sequence axis 1.  The article also concatenates on ``dim=1``, but it builds
  ``nn.TransformerEncoderLayer`` with the default ``batch_first=False``, which reads a
  tensor as ``(L, B, hidden)``: there dim 1 is the *batch*, so ``torch.cat(..., dim=1)``
  of two ``(L, B, ·)`` tensors would stack text and image samples as extra batch rows
  (and needs Lt == Li), and fed batch-first tensors the encoder would attend across the
  batch instead of along the sequence.
* Padding is handled: ``text_lengths``/``image_lengths`` build a key mask so that no query
  attends to a padded text token or a padded image patch.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mmt_numpy import ops
from mmt_numpy.nn.embedding import (
    EmbeddingCache,
    LearnedPositionalEmbedding,
    ModalityEmbedding,
    PositionCache,
    SinusoidalPositionalEncoding,
)
from mmt_numpy.nn.encoder import EncoderCache, TransformerEncoder
from mmt_numpy.nn.linear import Linear
from mmt_numpy.nn.masks import combine_masks, lengths_mask, module_mask
from mmt_numpy.nn.module import Module, RngLike, as_float_dtype, as_generator, expect_cache
from mmt_numpy.validate import module_input, positive_int, probability

TEXT, IMAGE = 0, 1  # the modality ids given to ModalityEmbedding

POSITIONAL = ("sinusoidal", "learned")


class MultimodalCache(NamedTuple):
    Lt: int  # the text length, where the joint sequence splits
    text_embedding: ops.LinearCache
    text_position: PositionCache
    image_embedding: ops.LinearCache
    image_position: PositionCache
    modality_embedding: EmbeddingCache
    encoder: EncoderCache
    output_layer: ops.LinearCache

    @property
    def weights(self) -> list[np.ndarray]:
        """Each encoder layer's attention weights ``(B, H, Lt+Li, Lt+Li)``, first layer first."""
        return self.encoder.weights


class MultimodalTransformer(Module):
    """Single-stream text + image Transformer (§5), batch-first, with positions and padding masks.

    Submodules (the first and last two keep the article's names):
        ``text_embedding`` ``Linear(text_dim, hidden_dim)``,
        ``image_embedding`` ``Linear(image_dim, hidden_dim)``,
        ``text_position``, ``image_position`` (:class:`SinusoidalPositionalEncoding`, no
        parameters, or :class:`LearnedPositionalEmbedding`),
        ``modality_embedding`` ``ModalityEmbedding(2, hidden_dim)`` (text = 0, image = 1),
        ``encoder`` ``TransformerEncoder`` (its attention maps are in the forward's cache,
        ``cache.weights[i]``, ``(B, H, Lt+Li, Lt+Li)``),
        ``output_layer`` ``Linear(hidden_dim, output_dim)``.

    Args:
        text_dim: width of the text features (e.g. word vectors).
        image_dim: width of the image features (e.g. patch or region vectors).
        hidden_dim: the shared width inside the encoder.
        num_heads: attention heads, dividing ``hidden_dim``.
        num_layers: encoder layers.
        output_dim: width of each output vector (the article leaves it undefined).
        d_ff: hidden width of each feed-forward network; default ``4 * hidden_dim``.
        max_len: the longest text and the longest image sequence accepted.
        positional: ``"sinusoidal"`` (fixed) or ``"learned"``.
        norm_first: post-LN (False, as ``nn.TransformerEncoderLayer``'s default) or pre-LN.
        activation: ``"relu"``, ``"gelu"`` or ``"gelu_tanh"``.
        dropout: the encoder layers' dropout probability.
        final_norm: a LayerNorm after the last encoder layer (advisable with pre-LN).
        dtype, rng: parameter dtype and the generator for every initialisation and dropout.
    """

    def __init__(
        self,
        text_dim: int,
        image_dim: int,
        hidden_dim: int,
        num_heads: int,
        num_layers: int,
        output_dim: int,
        *,
        d_ff: int | None = None,
        max_len: int = 512,
        positional: str = "sinusoidal",
        norm_first: bool = False,
        activation: str = "relu",
        dropout: float = 0.0,
        final_norm: bool = False,
        dtype: object = np.float64,
        rng: RngLike = None,
    ) -> None:
        self.text_dim = positive_int("text_dim", text_dim)
        self.image_dim = positive_int("image_dim", image_dim)
        self.hidden_dim = positive_int("hidden_dim", hidden_dim)
        self.output_dim = positive_int("output_dim", output_dim)
        self.max_len = positive_int("max_len", max_len)
        d_ff = 4 * self.hidden_dim if d_ff is None else positive_int("d_ff", d_ff)
        dropout = probability("dropout", dropout)
        if positional not in POSITIONAL:
            raise ValueError(f"positional: expected one of {POSITIONAL}, got {positional!r}")
        self.positional = positional
        self.dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        D = self.hidden_dim
        self.text_embedding = Linear(self.text_dim, D, dtype=self.dtype, rng=gen)
        self.image_embedding = Linear(self.image_dim, D, dtype=self.dtype, rng=gen)
        if positional == "sinusoidal":
            self.text_position = SinusoidalPositionalEncoding(self.max_len, D, dtype=self.dtype)
            self.image_position = SinusoidalPositionalEncoding(self.max_len, D, dtype=self.dtype)
        else:
            self.text_position = LearnedPositionalEmbedding(self.max_len, D, dtype=self.dtype, rng=gen)
            self.image_position = LearnedPositionalEmbedding(self.max_len, D, dtype=self.dtype, rng=gen)
        self.modality_embedding = ModalityEmbedding(2, D, dtype=self.dtype, rng=gen)
        self.encoder = TransformerEncoder(
            D,
            num_heads,
            d_ff,
            num_layers,
            norm_first,
            activation,
            dropout,
            final_norm,
            dtype=self.dtype,
            rng=gen,
        )
        self.output_layer = Linear(D, self.output_dim, dtype=self.dtype, rng=gen)

    @property
    def num_heads(self) -> int:
        return self.encoder.layers[0].self_attn.num_heads

    def key_mask(
        self,
        batch: int,
        Lt: int,
        Li: int,
        text_lengths: np.ndarray | None = None,
        image_lengths: np.ndarray | None = None,
    ) -> np.ndarray:
        """The ``(B, 1, 1, Lt + Li)`` keep-mask over keys built from the two length arrays.

        Key j of row b may be attended (True) when it is a real text token
        (``j < text_lengths[b]``) or a real image patch (``Lt <= j < Lt + image_lengths[b]``).
        A missing length array means that modality has no padding.  The mask is the same for
        every head and every query, padded queries included: their outputs are computed
        (from real keys) but carry no meaning, so a loss should skip them.
        """
        text_keep = np.ones((batch, 1, 1, Lt), dtype=bool)
        image_keep = np.ones((batch, 1, 1, Li), dtype=bool)
        if text_lengths is not None:
            text_keep = lengths_mask("text_lengths", text_lengths, batch, Lt)
        if image_lengths is not None:
            image_keep = lengths_mask("image_lengths", image_lengths, batch, Li)
        return np.concatenate([text_keep, image_keep], axis=-1)

    def forward(
        self,
        text: np.ndarray,
        image: np.ndarray,
        mask: np.ndarray | None = None,
        text_lengths: np.ndarray | None = None,
        image_lengths: np.ndarray | None = None,
    ) -> tuple[np.ndarray, MultimodalCache]:
        """Encode a batch of text and image sequences together.

        Args:
            text: ``(B, Lt, text_dim)``, padded to a common length Lt.
            image: ``(B, Li, image_dim)``, padded to a common length Li.
            mask: optional bool over the joint sequence (text positions first), True = may
                attend, by the module rule of :mod:`mmt_numpy.nn.masks`: ``(L, L)``,
                ``(B, L, L)`` or 4-D broadcastable to ``(B, H, L, L)`` with ``L = Lt + Li``;
                combined with the padding masks by logical and.
            text_lengths: ``(B,)`` integers, the number of real text tokens of each row.
            image_lengths: ``(B,)`` integers, the number of real image patches of each row.

        Returns:
            ``(B, Lt + Li, output_dim)`` (rows ``:Lt`` belong to the text tokens, ``Lt:`` to
            the image patches) and the cache; ``cache.weights`` lists each encoder layer's
            attention weights ``(B, H, Lt+Li, Lt+Li)``.
        """
        owner = (
            f"MultimodalTransformer(text_dim={self.text_dim}, image_dim={self.image_dim}, "
            f"hidden_dim={self.hidden_dim})"
        )
        module_input("text", text, self.text_dim, self.dtype, owner, ndim=3)
        module_input("image", image, self.image_dim, self.dtype, owner, ndim=3)
        B, Lt, _ = text.shape
        Li = image.shape[1]
        if image.shape[0] != B:
            raise ValueError(
                f"image: expected batch size {B} (as text {text.shape}), got shape {image.shape}"
            )
        for name, x in (("text", text), ("image", image)):
            if x.shape[1] > self.max_len:
                raise ValueError(
                    f"{name}: sequence length {x.shape[1]} exceeds max_len={self.max_len}, "
                    f"got shape {x.shape}"
                )
        L = Lt + Li
        keep = None
        if text_lengths is not None or image_lengths is not None:
            keep = self.key_mask(B, Lt, Li, text_lengths, image_lengths)
        keep = combine_masks(module_mask("mask", mask, B, self.num_heads, L, L), keep)

        # t = text_position(text_embedding(text)),  v = image_position(image_embedding(image))
        t, c_text = self.text_embedding.forward(text)
        t, c_text_pos = self.text_position.forward(t)
        v, c_image = self.image_embedding.forward(image)
        v, c_image_pos = self.image_position.forward(v)
        # x = modality_embedding([t ; v]): joined along the sequence axis, then typed
        modality = np.concatenate([np.full(Lt, TEXT), np.full(Li, IMAGE)])
        x, c_modality = self.modality_embedding.forward(np.concatenate([t, v], axis=1), modality)
        # out = output_layer(encoder(x, mask))
        h, c_encoder = self.encoder.forward(x, keep)
        out, c_out = self.output_layer.forward(h)
        cache = MultimodalCache(Lt, c_text, c_text_pos, c_image, c_image_pos, c_modality, c_encoder, c_out)
        return out, cache

    def backward(self, d_out: np.ndarray, cache: MultimodalCache) -> tuple[np.ndarray, np.ndarray]:
        """``d_out (B, Lt + Li, output_dim)`` -> ``(d_text (B, Lt, text_dim), d_image (B, Li, image_dim))``.

        Adds into every parameter's ``.grad``.
        """
        expect_cache(cache, MultimodalCache, "MultimodalTransformer")
        (d_h,) = self.output_layer.backward(d_out, cache.output_layer)  # out = output_layer(h)
        (d_x,) = self.encoder.backward(d_h, cache.encoder)  # h = encoder(x)
        (d_x,) = self.modality_embedding.backward(
            d_x, cache.modality_embedding
        )  # x = modality_embedding([t ; v])
        d_t, d_v = d_x[:, : cache.Lt], d_x[:, cache.Lt :]  # [t ; v] = concatenate: its backward splits
        (d_t,) = self.text_position.backward(d_t, cache.text_position)  # t = text_position(t)
        (d_text,) = self.text_embedding.backward(d_t, cache.text_embedding)  # t = text_embedding(text)
        (d_v,) = self.image_position.backward(d_v, cache.image_position)  # v = image_position(v)
        (d_image,) = self.image_embedding.backward(d_v, cache.image_embedding)  # v = image_embedding(image)
        return d_text, d_image

    def __repr__(self) -> str:
        return (
            f"MultimodalTransformer(text_dim={self.text_dim}, image_dim={self.image_dim}, "
            f"hidden_dim={self.hidden_dim}, num_heads={self.num_heads}, "
            f"num_layers={self.encoder.num_layers}, output_dim={self.output_dim}, "
            f"positional={self.positional!r})"
        )
