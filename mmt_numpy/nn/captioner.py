"""``ImageCaptioner``: an image encoder and a text decoder that writes a caption (§6.2, 图像描述).

The image, cut into patch tokens, goes through a ViT-style encoder (patch embedding, 2-D
grid positions, pre-LN encoder layers); its output is the decoder's *memory*.  The caption
is written by a Transformer decoder whose cross-attention reads that memory: at each
position the text so far (masked self-attention) and the image (cross-attention) decide the
next word.  The word embedding ``E (V, d)`` is also the output layer, ``logits = h Eᵀ + b``
(tied, :class:`~mmt_numpy.nn.TiedOutputProjection`).

Training is teacher forcing: the decoder reads the true caption ``[BOS] w1 … wn`` and every
position t is scored on predicting ``w_{t+1}`` (targets shifted by one,
:func:`mmt_numpy.data.teacher_forcing`), all positions in one forward pass thanks to the
causal mask; :class:`CaptionLoss` is that loss, with label smoothing.  Generation
(:meth:`ImageCaptioner.generate`) feeds the model its own words one at a time, reading the
KV cache of :mod:`mmt_numpy.nn.kv_cache` or recomputing the prefix.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mmt_numpy import ops
from mmt_numpy.nn.decoder import DecoderCache, TransformerDecoder
from mmt_numpy.nn.embedding import (
    Embedding,
    EmbeddingCache,
    GridPositionalEmbedding,
    LearnedPositionalEmbedding,
    PositionCache,
    TiedOutputCache,
    TiedOutputProjection,
    int_ids,
)
from mmt_numpy.nn.encoder import EncoderCache, TransformerEncoder
from mmt_numpy.nn.generation import beam_search, greedy, sample
from mmt_numpy.nn.kv_cache import KVCache
from mmt_numpy.nn.linear import Linear
from mmt_numpy.nn.masks import lengths_mask
from mmt_numpy.nn.module import Module, RngLike, as_float_dtype, as_generator, expect_cache
from mmt_numpy.validate import module_input, non_negative_number, positive_int, positive_number, real_number


class EncodeCache(NamedTuple):
    patch_embedding: ops.LinearCache
    image_position: PositionCache
    encoder: EncoderCache


class DecodeCache(NamedTuple):
    token_embedding: EmbeddingCache
    text_position: PositionCache
    decoder: DecoderCache
    output: TiedOutputCache


class CaptionerCache(NamedTuple):
    encode: EncodeCache
    decode: DecodeCache

    @property
    def cross_weights(self) -> list[np.ndarray]:
        """Every decoder layer's cross-attention weights ``(B, H, T, P)``: where each text
        position looked in the image."""
        return self.decode.decoder.cross_weights


class ImageCaptioner(Module):
    """Patches in, next-token logits at every text position out; and ``generate``.

    Submodules: ``patch_embedding`` ``Linear(patch_dim, d_model)``, ``image_position``
    :class:`~mmt_numpy.nn.GridPositionalEmbedding`, ``encoder`` (pre-LN, final norm),
    ``token_embedding`` ``Embedding(vocab_size, d_model)``, ``text_position``
    :class:`~mmt_numpy.nn.LearnedPositionalEmbedding`, ``decoder`` (pre-LN, final norm),
    ``output`` :class:`~mmt_numpy.nn.TiedOutputProjection` sharing ``token_embedding.weight``
    (listed once, under ``token_embedding.weight``) with an output bias of its own.

    Initial scales: the word table starts at N(0, 1/d_model) instead of N(0, 1), so the tied
    logits ``h Eᵀ`` of a layer-normed ``h`` start with unit variance rather than d_model; the
    grid positions at ``grid_std``, the scale of the patch features.

    Args:
        vocab_size: V, the number of token ids (the caption tokenizer's length).
        patch_dim: the width of each patch token (``patch * patch * 3``).
        grid: ``(rows, columns)`` of the patch grid; images have ``rows * columns`` patches.
        bos_id, eos_id: the start token fed first and the end token that stops generation.
        pad_id: written after the end token in generated ids.
        d_model, num_heads, d_ff: the width, heads and feed-forward width of both stacks.
        encoder_layers, decoder_layers: the depth of each stack.
        max_len: the most text positions (start token included) the decoder accepts.
        activation, dropout: of every encoder and decoder layer.
        grid_std: the initial standard deviation of the row and column vectors.
        dtype, rng: parameter dtype and the generator of initialisation and dropout.
    """

    def __init__(
        self,
        vocab_size: int,
        patch_dim: int,
        grid: tuple[int, int],
        *,
        bos_id: int,
        eos_id: int,
        pad_id: int = 0,
        d_model: int = 32,
        num_heads: int = 4,
        d_ff: int = 64,
        encoder_layers: int = 2,
        decoder_layers: int = 2,
        max_len: int = 16,
        activation: str = "relu",
        dropout: float = 0.0,
        grid_std: float = 0.3,
        dtype: object = np.float64,
        rng: RngLike = None,
    ) -> None:
        self.vocab_size = positive_int("vocab_size", vocab_size)
        self.patch_dim = positive_int("patch_dim", patch_dim)
        for name, value in (("bos_id", bos_id), ("eos_id", eos_id), ("pad_id", pad_id)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or not 0 <= value < vocab_size
            ):
                raise ValueError(f"{name}: expected a token id in [0, {vocab_size}), got {value!r}")
        self.bos_id, self.eos_id, self.pad_id = int(bos_id), int(eos_id), int(pad_id)
        self.dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        D = positive_int("d_model", d_model)
        self.patch_embedding = Linear(self.patch_dim, D, dtype=self.dtype, rng=gen)
        self.image_position = GridPositionalEmbedding(grid, D, std=grid_std, dtype=self.dtype, rng=gen)
        stack = dict(
            norm_first=True, activation=activation, dropout=dropout, final_norm=True, dtype=self.dtype
        )
        self.encoder = TransformerEncoder(D, num_heads, d_ff, encoder_layers, rng=gen, **stack)
        self.token_embedding = Embedding(self.vocab_size, D, dtype=self.dtype, rng=gen)
        self.token_embedding.weight.data *= D**-0.5
        self.text_position = LearnedPositionalEmbedding(max_len, D, dtype=self.dtype, rng=gen)
        self.decoder = TransformerDecoder(D, num_heads, d_ff, decoder_layers, rng=gen, **stack)
        self.output = TiedOutputProjection(self.token_embedding, bias=True)

    @property
    def max_len(self) -> int:
        """The most text positions the decoder reads (start token included)."""
        return self.text_position.max_len

    def _patches(self, patches: object) -> np.ndarray:
        owner = f"ImageCaptioner(patch_dim={self.patch_dim}, grid={self.image_position.grid})"
        module_input("patches", patches, self.patch_dim, self.dtype, owner, ndim=3)
        rows, columns = self.image_position.grid
        if patches.shape[1] != rows * columns:
            raise ValueError(
                f"patches: expected {rows * columns} patches per image (a {rows}x{columns} grid in reading "
                f"order) of {owner}, got shape {patches.shape}"
            )
        return patches

    def _memory_mask(self, image_lengths: object, patches: np.ndarray) -> np.ndarray | None:
        """``(B, 1, 1, P)`` key padding of the patches, or None when every patch is real."""
        if image_lengths is None:
            return None
        return lengths_mask("image_lengths", image_lengths, patches.shape[0], patches.shape[1])

    def encode(
        self, patches: np.ndarray, memory_mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, EncodeCache]:
        """``patches (B, P, patch_dim)`` -> the memory ``(B, P, d_model)`` and the cache."""
        x, c_patch = self.patch_embedding.forward(patches)  # x = patches W + b
        x, c_pos = self.image_position.forward(x)  # x = x + row[r] + column[c]
        memory, c_enc = self.encoder.forward(x, memory_mask)  # memory = encoder(x)
        return memory, EncodeCache(c_patch, c_pos, c_enc)

    def decode(
        self, ids: np.ndarray, memory: np.ndarray, memory_mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, DecodeCache]:
        """``ids (B, T)`` (start token first) over ``memory`` -> next-token logits ``(B, T, V)``, cache."""
        ids = int_ids("ids", ids, self.vocab_size, f"ImageCaptioner(vocab_size={self.vocab_size})")
        if ids.ndim != 2 or not 1 <= ids.shape[1] <= self.max_len:
            raise ValueError(
                f"ids: expected shape (B, T) with 1 <= T <= max_len={self.max_len}, got {ids.shape}"
            )
        text, c_tok = self.token_embedding.forward(ids)  # text = E[ids]
        text, c_pos = self.text_position.forward(text)  # text = text + P[:T]
        mask = ops.causal_mask(ids.shape[1])
        h, c_dec = self.decoder.forward(
            text, memory, mask=mask, memory_mask=memory_mask
        )  # h = decoder(text, memory)
        logits, c_out = self.output.forward(h)  # logits = h Eᵀ + b
        return logits, DecodeCache(c_tok, c_pos, c_dec, c_out)

    def forward(
        self, patches: np.ndarray, ids: np.ndarray, *, image_lengths: np.ndarray | None = None
    ) -> tuple[np.ndarray, CaptionerCache]:
        """Teacher forcing: logits of the next token at every text position.

        Args:
            patches: ``(B, P, patch_dim)`` the image patch tokens, ``P = rows * columns``.
            ids: ``(B, T)`` integer text so far, start token first (``teacher_forcing``'s inputs).
            image_lengths: ``(B,)`` real patches per image (the rest masked as keys), or None.

        Returns:
            ``logits (B, T, V)`` and the cache (``cache.cross_weights``: each decoder layer's
            ``(B, H, T, P)``).
        """
        patches = self._patches(patches)
        if not isinstance(ids, np.ndarray) or ids.ndim != 2 or ids.shape[0] != patches.shape[0]:
            raise ValueError(
                f"ids: expected shape ({patches.shape[0]}, T) (a text per image), "
                f"got {getattr(ids, 'shape', type(ids).__name__)}"
            )
        memory_mask = self._memory_mask(image_lengths, patches)
        memory, c_enc = self.encode(patches, memory_mask)
        logits, c_dec = self.decode(ids, memory, memory_mask)
        return logits, CaptionerCache(c_enc, c_dec)

    def backward(self, d_logits: np.ndarray, cache: CaptionerCache) -> tuple[np.ndarray]:
        """``d_logits (B, T, V)`` -> ``(d_patches (B, P, patch_dim),)`` (the integer ids get no entry).

        ``token_embedding.weight.grad`` collects both uses of the tied table.
        """
        expect_cache(cache, CaptionerCache, "ImageCaptioner")
        d_memory = self.decode_backward(d_logits, cache.decode)  # logits = decode(ids, memory)
        return self.encode_backward(d_memory, cache.encode)  # memory = encode(patches)

    def decode_backward(self, d_logits: np.ndarray, cache: DecodeCache) -> np.ndarray:
        """``d_logits (B, T, V)`` -> ``d_memory (B, Lm, d_model)``, the backward of :meth:`decode`."""
        expect_cache(cache, DecodeCache, "ImageCaptioner.decode")
        (d_h,) = self.output.backward(d_logits, cache.output)  # logits = h Eᵀ + b
        d_text, d_memory = self.decoder.backward(d_h, cache.decoder)  # h = decoder(text, memory)
        (d_text,) = self.text_position.backward(d_text, cache.text_position)  # text = text + P[:T]
        self.token_embedding.backward(d_text, cache.token_embedding)  # text = E[ids]
        return d_memory

    def encode_backward(self, d_memory: np.ndarray, cache: EncodeCache) -> tuple[np.ndarray]:
        """``d_memory (B, P, d_model)`` -> ``(d_patches (B, P, patch_dim),)``: :meth:`encode`'s backward."""
        expect_cache(cache, EncodeCache, "ImageCaptioner.encode")
        (d_x,) = self.encoder.backward(d_memory, cache.encoder)  # memory = encoder(x)
        (d_x,) = self.image_position.backward(d_x, cache.image_position)  # x = x + row[r] + column[c]
        return self.patch_embedding.backward(d_x, cache.patch_embedding)  # x = patches W + b

    def generate(
        self,
        patches: np.ndarray,
        *,
        max_len: int,
        beam_size: int = 1,
        alpha: float = 1.0,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
        rng: RngLike = None,
        image_lengths: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Write a caption for every image (:mod:`mmt_numpy.nn.generation`).

        Greedy when ``beam_size == 1`` and no sampling argument is given; beam search when
        ``beam_size > 1`` (score ``Σ log p / length**alpha``); sampling when ``temperature``,
        ``top_k`` or ``top_p`` is given (then ``beam_size`` must be 1), seeded by ``rng``.

        Args:
            patches: ``(B, P, patch_dim)`` the image patch tokens.
            max_len: the most tokens to write, end token included (at most ``self.max_len``).
            beam_size: the beam width K >= 1.
            alpha: the length-normalisation exponent of beam search, >= 0.
            temperature: > 0, divides the log-probabilities before sampling (default 1).
            top_k: sample among the k most probable tokens only.
            top_p: in (0, 1]; sample among the most probable tokens whose probability reaches it.
            use_cache: read a KV cache (True) or recompute the whole prefix every step; the
                two give the same tokens and log-probabilities.
            rng: the sampling generator (or seed); the same seed gives the same captions.
            image_lengths: ``(B,)`` real patches per image, or None.

        Returns:
            ``ids (B, T)`` the written tokens without the start token, ``pad_id`` after each
            row's end token (T <= max_len), and their summed log-probabilities ``(B,)`` under
            the model.  The start and padding tokens are never written (they are excluded
            before choosing; the sums keep the model's own log p of each written token).
            Inference only: dropout follows ``train()``/``eval()`` as in any call.
        """
        patches = self._patches(patches)
        memory_mask = self._memory_mask(image_lengths, patches)
        memory, _ = self.encode(patches, memory_mask)
        return self.generate_from_memory(
            memory,
            memory_mask,
            max_len=max_len,
            beam_size=beam_size,
            alpha=alpha,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            use_cache=use_cache,
            rng=rng,
        )

    def generate_from_memory(
        self,
        memory: np.ndarray,
        memory_mask: np.ndarray | None = None,
        *,
        max_len: int,
        beam_size: int = 1,
        alpha: float = 1.0,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
        rng: RngLike = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`generate` over a memory already encoded, ``memory (B, Lm, d_model)``.

        For a model whose memory is more than the image (the dialogue model of §6.4 encodes
        the patches and the conversation together).  ``memory_mask`` is its key padding
        ``(B, 1, 1, Lm)`` or None; the other arguments and the result are :meth:`generate`'s.
        """
        owner = f"ImageCaptioner(d_model={self.token_embedding.dim})"
        module_input("memory", memory, self.token_embedding.dim, self.dtype, owner, ndim=3)
        max_len = positive_int("max_len", max_len)
        if max_len > self.max_len:
            raise ValueError(
                f"max_len: expected at most {self.max_len} (the decoder's text positions), got {max_len}"
            )
        beam_size = positive_int("beam_size", beam_size)
        sampling = temperature is not None or top_k is not None or top_p is not None
        if sampling and beam_size > 1:
            raise ValueError(
                f"beam_size: sampling (temperature, top_k, top_p) draws one caption per image; "
                f"expected beam_size=1, got {beam_size}"
            )
        if not isinstance(use_cache, bool):
            raise TypeError(f"use_cache: expected True or False, got {use_cache!r}")
        alpha = non_negative_number("alpha", alpha)
        ids = dict(bos_id=self.bos_id, eos_id=self.eos_id, pad_id=self.pad_id, max_len=max_len)
        decoding = CaptionDecoding(self, memory, memory_mask, use_cache)
        if beam_size > 1:
            return beam_search(decoding, beam_size, alpha=alpha, **ids)
        if not sampling:
            return greedy(decoding, **ids)
        temperature = 1.0 if temperature is None else positive_number("temperature", temperature)
        if top_k is not None:
            top_k = positive_int("top_k", top_k)
        if top_p is not None:
            top_p = real_number(
                "top_p", top_p, low=0.0, high=1.0, low_open=True, what="a probability in (0, 1]"
            )
        return sample(decoding, as_generator(rng), temperature=temperature, top_k=top_k, top_p=top_p, **ids)

    def __repr__(self) -> str:
        return (
            f"ImageCaptioner(vocab_size={self.vocab_size}, patch_dim={self.patch_dim}, "
            f"grid={self.image_position.grid}, d_model={self.token_embedding.dim}, "
            f"encoder_layers={self.encoder.num_layers}, decoder_layers={self.decoder.num_layers})"
        )


class CaptionDecoding:
    """The captioner as a :class:`~mmt_numpy.nn.generation.Decoding`: next-token log-probabilities
    of the text so far, from a KV cache (``use_cache=True``) or by recomputing the whole prefix.

    The memory (the encoded image) is computed once, by the caller.  With the cache, each call
    feeds only the tokens the cache has not seen (all of them at the first call: the start token) through
    :meth:`TransformerDecoder.step`; without it, each call runs :meth:`ImageCaptioner.decode`
    on the whole prefix and reads the last position.
    """

    def __init__(
        self, model: ImageCaptioner, memory: np.ndarray, memory_mask: np.ndarray | None, use_cache: bool
    ) -> None:
        self.model = model
        self.memory = memory  # (B, Lm, d_model), model.encode's output or any memory of that width
        self.memory_mask = memory_mask
        self.cache: KVCache | None = (
            model.decoder.new_cache(self.memory, memory_mask, capacity=model.max_len) if use_cache else None
        )

    @property
    def batch(self) -> int:
        return self.memory.shape[0]

    def log_probs(self, tokens: np.ndarray) -> np.ndarray:
        """``tokens (N, t)`` -> ``(N, V)`` log-probabilities of token t + 1."""
        model = self.model
        if self.cache is None:
            logits, _ = model.decode(tokens, self.memory, self.memory_mask)
            log_probs = ops.log_softmax(logits[:, -1])
        else:
            start = self.cache.seen
            new = tokens[:, start:]  # what the cache has not seen yet
            x = (
                model.token_embedding.weight.data[new]
                + model.text_position.weight.data[start : tokens.shape[1]]
            )
            h = model.decoder.step(x, self.cache)  # (N, n, d_model)
            logits, _ = model.output.forward(h[:, -1])
            log_probs = ops.log_softmax(logits)
        # the start and padding tokens are never written: a padding id inside a caption would read
        # as its end.  -inf without renormalising, so a written token keeps the model's log p.
        log_probs[:, [model.bos_id, model.pad_id]] = -np.inf
        return log_probs

    def reorder(self, rows: np.ndarray) -> None:
        """Continue with batch rows ``rows`` (finished rows dropped, beams copied)."""
        self.memory = self.memory[rows]
        if self.memory_mask is not None:
            self.memory_mask = self.memory_mask[rows]
        if self.cache is not None:
            self.cache.reorder(rows)


class CaptionLossCache(NamedTuple):
    model: CaptionerCache
    loss: ops.CrossEntropyCache


class CaptionLoss(Module):
    """The teacher-forcing loss of a captioner as a module: ``CE(model(patches, inputs), targets)``.

    ``forward(patches, inputs, targets)`` returns the 0-d mean cross-entropy over the
    positions whose target is not ``ignore_index`` (padding), with ``label_smoothing``;
    ``backward(d_loss, cache)`` returns ``(d_patches,)`` and fills every parameter's gradient.
    ``inputs, targets = mmt_numpy.data.teacher_forcing(ids)``.

    Args:
        model: the :class:`ImageCaptioner` (its parameters are this module's).
        label_smoothing: ε in [0, 1] (``ops.cross_entropy_forward``).
    """

    def __init__(self, model: ImageCaptioner, label_smoothing: float = 0.0) -> None:
        if not isinstance(model, ImageCaptioner):
            raise TypeError(f"model: expected an ImageCaptioner, got {type(model).__name__}")
        self.model = model
        self.label_smoothing = label_smoothing

    def forward(
        self, patches: np.ndarray, inputs: np.ndarray, targets: np.ndarray
    ) -> tuple[np.ndarray, CaptionLossCache]:
        """``patches (B, P, patch_dim)``, ``inputs (B, T)``, ``targets (B, T)`` -> the loss (0-d), cache."""
        logits, c_model = self.model.forward(patches, inputs)
        loss, c_loss = ops.cross_entropy_forward(logits, targets, label_smoothing=self.label_smoothing)
        return loss, CaptionLossCache(c_model, c_loss)

    def backward(self, d_loss: np.ndarray | float, cache: CaptionLossCache) -> tuple[np.ndarray]:
        """``d_loss`` (a scalar) -> ``(d_patches,)``."""
        expect_cache(cache, CaptionLossCache, "CaptionLoss")
        d_logits = ops.cross_entropy_backward(d_loss, cache.loss)  # loss = CE(logits, targets)
        return self.model.backward(d_logits, cache.model)  # logits = model(patches, inputs)
