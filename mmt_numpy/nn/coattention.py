"""A ViLBERT-style co-attention layer (§3.2): two streams, each attending to the other.

Where the §5 model joins both modalities into one sequence (single-stream fusion),
ViLBERT keeps a text stream and an image stream of their own widths and lets them meet
only through *co-attention*: the text queries attend over the image's keys and values,
the image queries over the text's, both computed from the same inputs (neither stream
sees the other's update of this layer).  Each stream then runs its own feed-forward
network.  Post-LN, as BERT, on which ViLBERT is built::

    t1 = text_norm1(text + dropout(text_cross_attn(text, image)))      (B, Lt, d_text)
    t2 = text_norm2(t1 + dropout(text_ff(t1)))
    v1 = image_norm1(image + dropout(image_cross_attn(image, text)))   (B, Li, d_image)
    v2 = image_norm2(v1 + dropout(image_ff(v1)))

ViLBERT alternates such layers with ordinary self-attention layers in each stream; those
are :class:`~mmt_numpy.nn.TransformerEncoderLayer` (one of width d_text, one of d_image).
This layer is the §4.2 cross-attention with what the article's version lacks: value and
output projections, several heads, and streams of different widths.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mmt_numpy.nn.attention import MultiHeadAttention
from mmt_numpy.nn.dropout import Dropout
from mmt_numpy.nn.feedforward import FeedForward
from mmt_numpy.nn.layernorm import LayerNorm
from mmt_numpy.nn.masks import combine_masks, lengths_mask, module_mask
from mmt_numpy.nn.module import Module, RngLike, as_float_dtype, as_generator, expect_cache
from mmt_numpy.nn.sublayer import SublayerCache, sublayer_backward, sublayer_forward
from mmt_numpy.validate import module_input, positive_int, positive_number, probability


class CoAttentionCache(NamedTuple):
    """One stream's two sub-layers each: ``text_attn``, ``text_ff``, ``image_attn``, ``image_ff``."""

    text_attn: SublayerCache  # .sublayer: text queries over image keys and values
    text_ff: SublayerCache
    image_attn: SublayerCache  # .sublayer: image queries over text keys and values
    image_ff: SublayerCache

    @property
    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        """``(text -> image (B, H, Lt, Li), image -> text (B, H, Li, Lt))`` attention weights."""
        return self.text_attn.weights, self.image_attn.weights


class CoAttentionLayer(Module):
    """Two-stream co-attention + feed-forward, each sub-layer with a residual and a LayerNorm.

    Submodules, per stream (``text_*`` of width d_text, ``image_*`` of width d_image):
        ``text_cross_attn`` ``MultiHeadAttention(d_text, num_heads, kv_dim=d_image)``,
        ``text_norm1``, ``text_ff`` ``FeedForward(d_text, d_ff)``, ``text_norm2``, and the
        parameter-free ``text_dropout1``/``text_dropout2``; the same for ``image_*`` with
        ``image_cross_attn`` ``MultiHeadAttention(d_image, num_heads, kv_dim=d_text)``.
        The forward's ``cache.weights`` holds ``(B, H, Lt, Li)`` (which patches each word
        looked at) and ``(B, H, Li, Lt)`` (the reverse).

    Args:
        d_text: width of the text stream.
        d_image: width of the image stream.
        num_heads: heads of both cross-attentions; must divide d_text and d_image.
        d_ff: hidden width of both feed-forward networks.
        activation: ``"relu"``, ``"gelu"`` (exact, as BERT) or ``"gelu_tanh"``.
        dropout: probability for the residual dropouts and inside the feed-forward networks.
        layer_norm_eps: eps of the four LayerNorms.
        dtype, rng: parameter dtype and the generator for initialisation and dropout masks.
    """

    def __init__(
        self,
        d_text: int,
        d_image: int,
        num_heads: int,
        d_ff: int,
        *,
        activation: str = "relu",
        dropout: float = 0.0,
        layer_norm_eps: float = 1e-5,
        dtype: object = np.float64,
        rng: RngLike = None,
    ) -> None:
        self.d_text = positive_int("d_text", d_text)
        self.d_image = positive_int("d_image", d_image)
        self.d_ff = positive_int("d_ff", d_ff)
        dropout = probability("dropout", dropout)
        layer_norm_eps = positive_number("layer_norm_eps", layer_norm_eps)
        self.dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        dt, di = self.d_text, self.d_image
        kw = {"dtype": self.dtype, "rng": gen}
        self.text_cross_attn = MultiHeadAttention(dt, num_heads, kv_dim=di, **kw)
        self.image_cross_attn = MultiHeadAttention(di, num_heads, kv_dim=dt, **kw)
        self.text_norm1 = LayerNorm(dt, layer_norm_eps, dtype=self.dtype)
        self.text_ff = FeedForward(dt, self.d_ff, activation, dropout, **kw)
        self.text_norm2 = LayerNorm(dt, layer_norm_eps, dtype=self.dtype)
        self.image_norm1 = LayerNorm(di, layer_norm_eps, dtype=self.dtype)
        self.image_ff = FeedForward(di, self.d_ff, activation, dropout, **kw)
        self.image_norm2 = LayerNorm(di, layer_norm_eps, dtype=self.dtype)
        self.text_dropout1, self.text_dropout2 = Dropout(dropout, rng=gen), Dropout(dropout, rng=gen)
        self.image_dropout1, self.image_dropout2 = Dropout(dropout, rng=gen), Dropout(dropout, rng=gen)

    def forward(
        self,
        text: np.ndarray,
        image: np.ndarray,
        text_mask: np.ndarray | None = None,
        image_mask: np.ndarray | None = None,
        text_lengths: np.ndarray | None = None,
        image_lengths: np.ndarray | None = None,
    ) -> tuple[tuple[np.ndarray, np.ndarray], CoAttentionCache]:
        """Update both streams from each other.

        Masks follow the module rule of :mod:`mmt_numpy.nn.masks` (True = may attend) and are
        named after the keys they restrict:

        Args:
            text: ``(B, Lt, d_text)``.
            image: ``(B, Li, d_image)``.
            text_mask: what the *image* queries may see of the text keys: ``(Li, Lt)``,
                ``(B, Li, Lt)`` or 4-D broadcastable to ``(B, H, Li, Lt)``; text padding is
                ``ops.padding_mask(text_lengths, Lt)``, ``(B, 1, 1, Lt)``.
            image_mask: what the *text* queries may see of the image keys: ``(Lt, Li)``,
                ``(B, Lt, Li)`` or 4-D broadcastable to ``(B, H, Lt, Li)``.
            text_lengths, image_lengths: ``(B,)`` integers, the real tokens of each row; the
                padding they imply is hidden from the other stream's queries (and combined
                with the masks by logical and).

        Returns:
            ``((text' (B, Lt, d_text), image' (B, Li, d_image)), cache)``; ``cache.weights``
            is ``(text -> image (B, H, Lt, Li), image -> text (B, H, Li, Lt))``.
        """
        owner = f"CoAttentionLayer(d_text={self.d_text}, d_image={self.d_image})"
        module_input("text", text, self.d_text, self.dtype, owner, ndim=3)
        module_input("image", image, self.d_image, self.dtype, owner, ndim=3)
        B, Lt, _ = text.shape
        if image.shape[0] != B:
            raise ValueError(
                f"image: expected batch size {B} (as text {text.shape}), got shape {image.shape}"
            )
        Li = image.shape[1]
        H = self.text_cross_attn.num_heads
        text_keys = combine_masks(
            module_mask("text_mask", text_mask, B, H, Li, Lt),
            None if text_lengths is None else lengths_mask("text_lengths", text_lengths, B, Lt),
        )
        image_keys = combine_masks(
            module_mask("image_mask", image_mask, B, H, Lt, Li),
            None if image_lengths is None else lengths_mask("image_lengths", image_lengths, B, Li),
        )

        # Text stream: t1 = the cross-attention sub-layer (text -> image), t2 = the feed-forward one
        t1, text_attn = sublayer_forward(
            text,
            lambda t: self.text_cross_attn.forward(t, image, image_keys),
            self.text_norm1,
            self.text_dropout1,
            False,
        )
        t2, text_ff = sublayer_forward(t1, self.text_ff.forward, self.text_norm2, self.text_dropout2, False)
        # Image stream, the mirror image: queries from the image, keys and values from the text
        v1, image_attn = sublayer_forward(
            image,
            lambda v: self.image_cross_attn.forward(v, text, text_keys),
            self.image_norm1,
            self.image_dropout1,
            False,
        )
        v2, image_ff = sublayer_forward(
            v1, self.image_ff.forward, self.image_norm2, self.image_dropout2, False
        )
        return (t2, v2), CoAttentionCache(text_attn, text_ff, image_attn, image_ff)

    def backward(
        self, d_out: tuple[np.ndarray, np.ndarray], cache: CoAttentionCache
    ) -> tuple[np.ndarray, np.ndarray]:
        """Backward of both streams; adds into every parameter's ``.grad``.

        Args:
            d_out: ``(d_text' (B, Lt, d_text), d_image' (B, Li, d_image))``, shaped like the
                output.
            cache: what that forward returned.

        Returns:
            ``(d_text (B, Lt, d_text), d_image (B, Li, d_image))``.  Each input was used in
            its own stream (residual, queries) and in the other (keys and values), so each
            gradient is the sum of the two streams' contributions.
        """
        expect_cache(cache, CoAttentionCache, "CoAttentionLayer")
        if not isinstance(d_out, tuple) or len(d_out) != 2:
            raise TypeError(
                "d_out: expected a pair (d_text_out, d_image_out), shaped like the output, "
                f"got {type(d_out).__name__}"
            )
        d_text_out, d_image_out = d_out
        # t2 = feed-forward sub-layer(t1),  t1 = cross-attention sub-layer(text; image)
        (d_t1,) = sublayer_backward(
            d_text_out, cache.text_ff, self.text_ff.backward, self.text_norm2, self.text_dropout2
        )
        d_text, d_image_kv = sublayer_backward(
            d_t1, cache.text_attn, self.text_cross_attn.backward, self.text_norm1, self.text_dropout1
        )
        # v2 = feed-forward sub-layer(v1),  v1 = cross-attention sub-layer(image; text)
        (d_v1,) = sublayer_backward(
            d_image_out, cache.image_ff, self.image_ff.backward, self.image_norm2, self.image_dropout2
        )
        d_image, d_text_kv = sublayer_backward(
            d_v1, cache.image_attn, self.image_cross_attn.backward, self.image_norm1, self.image_dropout1
        )
        return d_text + d_text_kv, d_image + d_image_kv

    def __repr__(self) -> str:
        return (
            f"CoAttentionLayer(d_text={self.d_text}, d_image={self.d_image}, "
            f"num_heads={self.text_cross_attn.num_heads}, d_ff={self.d_ff})"
        )
