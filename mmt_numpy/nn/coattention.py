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

import numpy as np

from mmt_numpy import ops
from mmt_numpy.nn.attention import MultiHeadAttention
from mmt_numpy.nn.dropout import Dropout
from mmt_numpy.nn.feedforward import FeedForward
from mmt_numpy.nn.layernorm import LayerNorm
from mmt_numpy.nn.module import Module, RngLike, as_float_dtype, as_generator
from mmt_numpy.validate import module_input, positive_int


def _key_mask(name: str, mask: object, batch: int, L: int) -> np.ndarray:
    """A keep-mask over one stream's positions as ``(B, 1, 1, L)`` (True = real token).

    Accepts ``(B, L)`` (e.g. ``ids != pad_id``) or the ``(B, 1, 1, L)`` of ``ops.padding_mask``.
    """
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"{name}: expected a boolean numpy array, got {type(mask).__name__}")
    if mask.dtype != np.bool_:
        raise TypeError(f"{name}: expected dtype bool (True = real token), got {mask.dtype}")
    if mask.shape == (batch, L):
        return mask[:, None, None, :]
    if mask.shape == (batch, 1, 1, L):
        return mask
    raise ValueError(f"{name}: expected shape ({batch}, {L}) or ({batch}, 1, 1, {L}), got {mask.shape}")


class CoAttentionLayer(Module):
    """Two-stream co-attention + feed-forward, each sub-layer with a residual and a LayerNorm.

    Submodules, per stream (``text_*`` of width d_text, ``image_*`` of width d_image):
        ``text_cross_attn`` ``MultiHeadAttention(d_text, num_heads, kv_dim=d_image)``,
        ``text_norm1``, ``text_ff`` ``FeedForward(d_text, d_ff)``, ``text_norm2``, and the
        parameter-free ``text_dropout1``/``text_dropout2``; the same for ``image_*`` with
        ``image_cross_attn`` ``MultiHeadAttention(d_image, num_heads, kv_dim=d_text)``.
        ``text_cross_attn.attn_weights`` ``(B, H, Lt, Li)`` shows which patches each word
        looked at; ``image_cross_attn.attn_weights`` ``(B, H, Li, Lt)`` the reverse.

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
    ) -> tuple[np.ndarray, np.ndarray]:
        """Update both streams from each other.

        Args:
            text: ``(B, Lt, d_text)``.
            image: ``(B, Li, d_image)``.
            text_mask: bool ``(B, Lt)`` or ``(B, 1, 1, Lt)``, True = real text token; the
                image queries do not attend to padded text tokens.
            image_mask: bool ``(B, Li)`` or ``(B, 1, 1, Li)``, True = real image patch; the
                text queries do not attend to padded patches.

        Returns:
            ``(text' (B, Lt, d_text), image' (B, Li, d_image))``.
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
        text_keys = None if text_mask is None else _key_mask("text_mask", text_mask, B, Lt)
        image_keys = None if image_mask is None else _key_mask("image_mask", image_mask, B, Li)

        # Text stream: t1 = norm1(text + drop1(cross_attn(text -> image))), t2 = norm2(t1 + drop2(ff(t1)))
        attended = self.text_dropout1.forward(self.text_cross_attn.forward(text, image, image_keys))
        h, text_res1 = ops.residual_forward(text, attended)
        t1 = self.text_norm1.forward(h)
        h, text_res2 = ops.residual_forward(t1, self.text_dropout2.forward(self.text_ff.forward(t1)))
        t2 = self.text_norm2.forward(h)
        # Image stream, the mirror image: queries from the image, keys and values from the text
        attended = self.image_dropout1.forward(self.image_cross_attn.forward(image, text, text_keys))
        h, image_res1 = ops.residual_forward(image, attended)
        v1 = self.image_norm1.forward(h)
        h, image_res2 = ops.residual_forward(v1, self.image_dropout2.forward(self.image_ff.forward(v1)))
        v2 = self.image_norm2.forward(h)
        self._cache = (text_res1, text_res2, image_res1, image_res2)
        return t2, v2

    def backward(self, d_text_out: np.ndarray, d_image_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Backward of both streams; adds into every parameter's ``.grad``.

        Args:
            d_text_out: ``(B, Lt, d_text)``, the gradient of the loss with respect to text'.
            d_image_out: ``(B, Li, d_image)``, with respect to image'.

        Returns:
            ``(d_text (B, Lt, d_text), d_image (B, Li, d_image))``.  Each input was used in
            its own stream (residual, queries) and in the other (keys and values), so each
            gradient is the sum of the two streams' contributions.
        """
        text_res1, text_res2, image_res1, image_res2 = self._saved()
        # t2 = norm2(h),  h = t1 + drop2(ff(t1))
        d_t1, d_ff = ops.residual_backward(self.text_norm2.backward(d_text_out), text_res2)
        d_t1 = d_t1 + self.text_ff.backward(self.text_dropout2.backward(d_ff))
        # t1 = norm1(h),  h = text + drop1(text_cross_attn(text, image))
        d_text, d_attn = ops.residual_backward(self.text_norm1.backward(d_t1), text_res1)
        d_text_query, d_image_kv = self.text_cross_attn.backward(self.text_dropout1.backward(d_attn))
        # v2 = norm2(h),  h = v1 + drop2(ff(v1))
        d_v1, d_ff = ops.residual_backward(self.image_norm2.backward(d_image_out), image_res2)
        d_v1 = d_v1 + self.image_ff.backward(self.image_dropout2.backward(d_ff))
        # v1 = norm1(h),  h = image + drop1(image_cross_attn(image, text))
        d_image, d_attn = ops.residual_backward(self.image_norm1.backward(d_v1), image_res1)
        d_image_query, d_text_kv = self.image_cross_attn.backward(self.image_dropout1.backward(d_attn))
        return d_text + d_text_query + d_text_kv, d_image + d_image_query + d_image_kv

    def __repr__(self) -> str:
        return (
            f"CoAttentionLayer(d_text={self.d_text}, d_image={self.d_image}, "
            f"num_heads={self.text_cross_attn.num_heads}, d_ff={self.d_ff})"
        )
