"""A model that answers the next question of a conversation about an image (§6.4, 多模态对话系统).

What it reads, as one sequence through one Transformer encoder (single-stream, as §5's
VisualBERT-style model):

* the image as patch tokens: ``patches W + b + row[r] + column[c]`` (ViT, the captioner's);
* the **history** (对话历史), every word of the earlier turns' questions and answers and then
  the current question, embedded by :class:`DialogueEmbedding`::

      x_l = E[w_l] + P[l] + T[turn_l] + S[speaker_l]

  word, position in the history, **turn** (counted back from the current question: 0 for
  the question being asked, 1 for the turn before, ...) and **speaker** (user or system).
  The turn vector is what lets a pronoun find *the most recent* turn that named a shape;
  the speaker vector tells a question's words from the answers' (a "no" that follows
  "is there a triangle ?" says the triangle is not there, so it cannot be "it").

The encoder's output over both is the *memory* of the captioning decoder
(:class:`~mmt_numpy.nn.ImageCaptioner`'s decoder and tied output layer, the same word table
as the history's), which writes the answer ``[BOS] w1 (w2) [EOS]`` by greedy decoding or beam
search (:meth:`DialogueModel.generate`).  Trained by teacher forcing (:class:`DialogueLoss`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mmt_numpy import ops
from mmt_numpy.nn.captioner import DecodeCache, ImageCaptioner
from mmt_numpy.nn.embedding import (
    Embedding,
    EmbeddingCache,
    LearnedPositionalEmbedding,
    ModalityEmbedding,
    PositionCache,
)
from mmt_numpy.nn.encoder import EncoderCache
from mmt_numpy.nn.masks import lengths_mask
from mmt_numpy.nn.module import Module, RngLike, as_float_dtype, as_generator, expect_cache
from mmt_numpy.validate import grad_output, positive_int


class DialogueEmbeddingCache(NamedTuple):
    token: EmbeddingCache
    position: PositionCache
    turn: EmbeddingCache
    speaker: EmbeddingCache


class DialogueEmbedding(Module):
    """The history's input vectors ``x = E[ids] + P[:L] + T[turns] + S[speakers]`` ``(B, L, dim)``.

    Submodules: ``token`` :class:`~mmt_numpy.nn.Embedding` (its own, or a table shared with a
    decoder: pass ``token_embedding``), ``position``
    :class:`~mmt_numpy.nn.LearnedPositionalEmbedding`, ``turn`` and ``speaker``
    :class:`~mmt_numpy.nn.ModalityEmbedding` (one learned vector per turn, per speaker).

    Args:
        vocab_size: V, the word ids (ignored when ``token_embedding`` is given).
        max_len: the longest history, in tokens.
        max_turns: turn labels are in ``[0, max_turns)``.
        dim: the width.
        num_speakers: speaker labels are in ``[0, num_speakers)`` (2: user and system).
        token_embedding: an existing word table to share (its ``.grad`` collects this use too).
        dtype, rng: parameter dtype and the initialisation's generator.
    """

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        max_turns: int,
        dim: int,
        *,
        num_speakers: int = 2,
        token_embedding: Embedding | None = None,
        dtype: object = np.float64,
        rng: RngLike = None,
    ) -> None:
        self.dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        self.dim = positive_int("dim", dim)
        if token_embedding is None:
            token_embedding = Embedding(vocab_size, self.dim, dtype=self.dtype, rng=gen)
        elif not isinstance(token_embedding, Embedding) or token_embedding.dim != self.dim:
            raise TypeError(
                f"token_embedding: expected an mmt_numpy.nn.Embedding of width dim={self.dim}, "
                f"got {token_embedding!r}"
            )
        self.token = token_embedding
        self.position = LearnedPositionalEmbedding(max_len, self.dim, dtype=self.dtype, rng=gen)
        self.turn = ModalityEmbedding(max_turns, self.dim, dtype=self.dtype, rng=gen)
        self.speaker = ModalityEmbedding(num_speakers, self.dim, dtype=self.dtype, rng=gen)

    def forward(
        self, ids: np.ndarray, turns: np.ndarray, speakers: np.ndarray
    ) -> tuple[np.ndarray, DialogueEmbeddingCache]:
        """``ids``, ``turns``, ``speakers`` integer ``(B, L)`` -> ``x (B, L, dim)`` and the cache."""
        for name, labels in (("turns", turns), ("speakers", speakers)):
            if not isinstance(labels, np.ndarray) or labels.shape != np.shape(ids) or np.ndim(ids) != 2:
                raise ValueError(
                    f"{name}: expected an integer array shaped like ids (B, L) {np.shape(ids)}, "
                    f"got {getattr(labels, 'shape', type(labels).__name__)}"
                )
        x, c_token = self.token.forward(ids)  # x = E[ids]
        x, c_position = self.position.forward(x)  # x = x + P[:L]
        x, c_turn = self.turn.forward(x, turns)  # x = x + T[turns]
        x, c_speaker = self.speaker.forward(x, speakers)  # x = x + S[speakers]
        return x, DialogueEmbeddingCache(c_token, c_position, c_turn, c_speaker)

    def backward(self, d_out: np.ndarray, cache: DialogueEmbeddingCache) -> tuple[()]:
        """``d_out (B, L, dim)`` -> ``()`` (the inputs are integers); adds into the four tables.

        Every term of the sum receives ``d_out`` whole: row ``r`` of a table collects
        ``d_out`` at every token whose label is ``r``.
        """
        expect_cache(cache, DialogueEmbeddingCache, "DialogueEmbedding")
        grad_output(d_out, (*cache.token.ids.shape, self.dim), self.dtype)
        (d_x,) = self.speaker.backward(d_out, cache.speaker)  # x = x + S[speakers]
        (d_x,) = self.turn.backward(d_x, cache.turn)  # x = x + T[turns]
        (d_x,) = self.position.backward(d_x, cache.position)  # x = x + P[:L]
        return self.token.backward(d_x, cache.token)  # x = E[ids]

    def __repr__(self) -> str:
        return (
            f"DialogueEmbedding(vocab_size={self.token.num_embeddings}, max_len={self.position.max_len}, "
            f"max_turns={self.turn.num_modalities}, dim={self.dim})"
        )


class DialogueEncodeCache(NamedTuple):
    patch_embedding: ops.LinearCache
    image_position: PositionCache
    history: DialogueEmbeddingCache
    encoder: EncoderCache
    num_patches: int


class DialogueCache(NamedTuple):
    encode: DialogueEncodeCache
    decode: DecodeCache

    @property
    def weights(self) -> list[np.ndarray]:
        """Every encoder layer's self-attention ``(B, H, P + L, P + L)``: patches first, then the history."""
        return self.encode.encoder.weights

    @property
    def cross_weights(self) -> list[np.ndarray]:
        """Every decoder layer's cross-attention ``(B, H, T, P + L)`` over the image and the history."""
        return self.decode.decoder.cross_weights


class DialogueModel(Module):
    """Image patches and the conversation in, the answer's next-token logits out; and ``generate``.

    Submodules: ``answerer``, an :class:`~mmt_numpy.nn.ImageCaptioner` whose patch embedding,
    grid positions, encoder, word table, answer positions, decoder and tied output layer are
    used as they are (its encoder reads the patches *and* the history), and ``history``, a
    :class:`DialogueEmbedding` sharing ``answerer.token_embedding`` (listed once).

    Args:
        vocab_size: V (the dialogue tokenizer's length).
        patch_dim, grid: the patch width and ``(rows, columns)``.
        bos_id, eos_id, pad_id: as the captioner's.
        max_history: the longest history in tokens; ``max_turns``: turn labels ``[0, max_turns)``.
        max_answer: answer positions of the decoder (``[BOS]`` included).
        d_model, num_heads, d_ff, encoder_layers, decoder_layers, dropout: as the captioner's.
        dtype, rng: parameter dtype and the generator.
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
        max_history: int = 34,
        max_turns: int = 4,
        max_answer: int = 4,
        d_model: int = 32,
        num_heads: int = 4,
        d_ff: int = 64,
        encoder_layers: int = 2,
        decoder_layers: int = 2,
        dropout: float = 0.0,
        dtype: object = np.float64,
        rng: RngLike = None,
    ) -> None:
        gen = as_generator(rng)
        self.dtype = as_float_dtype(dtype)
        self.answerer = ImageCaptioner(
            vocab_size, patch_dim, grid, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id, d_model=d_model,
            num_heads=num_heads, d_ff=d_ff, encoder_layers=encoder_layers, decoder_layers=decoder_layers,
            max_len=max_answer, dropout=dropout, dtype=self.dtype, rng=gen,
        )  # fmt: skip
        table = self.answerer.token_embedding
        self.history = DialogueEmbedding(
            vocab_size, max_history, max_turns, d_model, token_embedding=table, dtype=self.dtype, rng=gen
        )

    @property
    def max_history(self) -> int:
        return self.history.position.max_len

    def encode(
        self,
        patches: np.ndarray,
        history: np.ndarray,
        turns: np.ndarray,
        speakers: np.ndarray,
        lengths: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, DialogueEncodeCache]:
        """The memory of the decoder: image and history encoded together.

        Args:
            patches: ``(B, P, patch_dim)``.
            history, turns, speakers: ``(B, L)`` integers (:func:`mmt_numpy.data.dialogue.encode_history`).
            lengths: ``(B,)`` real history tokens (the rest is padding, masked as keys).

        Returns:
            ``memory (B, P + L, d_model)``, its key padding mask ``(B, 1, 1, P + L)`` and the cache.
        """
        model = self.answerer
        patches = model._patches(patches)
        B, P, _ = patches.shape
        if not isinstance(history, np.ndarray) or history.ndim != 2 or history.shape[0] != B:
            raise ValueError(
                f"history: expected integer ids ({B}, L) (one history per image), "
                f"got {getattr(history, 'shape', type(history).__name__)}"
            )
        L = history.shape[1]
        lengths = np.asarray(lengths)
        lengths_mask("lengths", lengths, B, L)  # the check: (B,) integers in [0, L]
        mask = ops.padding_mask(P + lengths, P + L)  # every patch is real, then the history's tokens
        image, c_patch = model.patch_embedding.forward(patches)  # image = patches W + b
        image, c_grid = model.image_position.forward(image)  # image = image + row[r] + column[c]
        text, c_history = self.history.forward(history, turns, speakers)  # text = E[w] + P + T + S
        x = np.concatenate([image, text], axis=1)  # x = [image; text]  (B, P + L, d)
        memory, c_enc = model.encoder.forward(x, mask)  # memory = encoder(x)
        return memory, mask, DialogueEncodeCache(c_patch, c_grid, c_history, c_enc, P)

    def forward(
        self,
        patches: np.ndarray,
        history: np.ndarray,
        turns: np.ndarray,
        speakers: np.ndarray,
        lengths: np.ndarray,
        answer_inputs: np.ndarray,
    ) -> tuple[np.ndarray, DialogueCache]:
        """Teacher forcing: ``answer_inputs (B, T)`` (``[BOS]`` first) -> next-token logits ``(B, T, V)``.

        The other arguments are :meth:`encode`'s.  ``cache.weights`` are the encoder's
        self-attention maps (where the pronoun looks in the history), ``cache.cross_weights``
        the decoder's.
        """
        memory, mask, c_enc = self.encode(patches, history, turns, speakers, lengths)
        logits, c_dec = self.answerer.decode(answer_inputs, memory, mask)
        return logits, DialogueCache(c_enc, c_dec)

    def backward(self, d_logits: np.ndarray, cache: DialogueCache) -> tuple[np.ndarray]:
        """``d_logits (B, T, V)`` -> ``(d_patches (B, P, patch_dim),)``; the integer inputs get none."""
        expect_cache(cache, DialogueCache, "DialogueModel")
        model, enc = self.answerer, cache.encode
        d_memory = model.decode_backward(d_logits, cache.decode)  # logits = decode(answer, memory)
        (d_x,) = model.encoder.backward(d_memory, enc.encoder)  # memory = encoder(x)
        d_image, d_text = d_x[:, : enc.num_patches], d_x[:, enc.num_patches :]  # x = [image; text]
        self.history.backward(d_text, enc.history)  # text = E[w] + P + T + S
        (d_image,) = model.image_position.backward(d_image, enc.image_position)  # image + row + column
        return model.patch_embedding.backward(d_image, enc.patch_embedding)  # image = patches W + b

    def generate(
        self,
        patches: np.ndarray,
        history: np.ndarray,
        turns: np.ndarray,
        speakers: np.ndarray,
        lengths: np.ndarray,
        *,
        max_len: int = 3,
        beam_size: int = 1,
        alpha: float = 1.0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Write the answer of every row: greedy (``beam_size=1``) or beam search.

        Returns ``ids (B, T)`` without ``[BOS]`` (``[PAD]`` after ``[EOS]``) and their summed
        log-probabilities ``(B,)``, as :meth:`ImageCaptioner.generate`.
        """
        memory, mask, _ = self.encode(patches, history, turns, speakers, lengths)
        return self.answerer.generate_from_memory(
            memory, mask, max_len=max_len, beam_size=beam_size, alpha=alpha
        )

    def __repr__(self) -> str:
        return f"DialogueModel(answerer={self.answerer!r}, history={self.history!r})"


class DialogueLossCache(NamedTuple):
    model: DialogueCache
    loss: ops.CrossEntropyCache


class DialogueLoss(Module):
    """``CE(model(patches, history, turns, speakers, lengths, answer_inputs), answer_targets)`` as a module.

    ``answer_inputs, answer_targets = mmt_numpy.data.teacher_forcing(answers)``; padding
    targets are ignored.  ``backward(d_loss, cache)`` returns ``(d_patches,)``.

    Args:
        model: the :class:`DialogueModel`.
        label_smoothing: ε in [0, 1].
    """

    def __init__(self, model: DialogueModel, label_smoothing: float = 0.0) -> None:
        if not isinstance(model, DialogueModel):
            raise TypeError(f"model: expected a DialogueModel, got {type(model).__name__}")
        self.model = model
        self.label_smoothing = label_smoothing

    def forward(
        self,
        patches: np.ndarray,
        history: np.ndarray,
        turns: np.ndarray,
        speakers: np.ndarray,
        lengths: np.ndarray,
        answer_inputs: np.ndarray,
        answer_targets: np.ndarray,
    ) -> tuple[np.ndarray, DialogueLossCache]:
        """The mean cross-entropy (0-d) over the answer positions, and the cache."""
        logits, c_model = self.model.forward(patches, history, turns, speakers, lengths, answer_inputs)
        loss, c_loss = ops.cross_entropy_forward(logits, answer_targets, label_smoothing=self.label_smoothing)
        return loss, DialogueLossCache(c_model, c_loss)

    def backward(self, d_loss: np.ndarray | float, cache: DialogueLossCache) -> tuple[np.ndarray]:
        """``d_loss`` (a scalar) -> ``(d_patches,)``."""
        expect_cache(cache, DialogueLossCache, "DialogueLoss")
        d_logits = ops.cross_entropy_backward(d_loss, cache.loss)  # loss = CE(logits, targets)
        return self.model.backward(d_logits, cache.model)  # logits = model(...)
