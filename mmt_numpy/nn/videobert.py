"""VideoBERT (§3.2): one BERT encoder over a caption and a video's visual words.

VideoBERT (Sun et al., 2019) quantises each short stretch of video into a *visual word*
(the nearest k-means centroid of its features, :mod:`mmt_numpy.kmeans`), so that a video
reads as a sentence.  Text tokens and visual words then share one vocabulary and one
sequence, ``[CLS] caption [SEP] w_1 … w_T``, and BERT's masked-token prediction (§2.2) is
run on both: a masked word is predicted from the other words *and* the video, a masked
visual word from the other visual words *and* the caption.

    x = token_embedding(ids) + position[l] + modality[m_l]       (B, L, D), m = 0 text, 1 video
    h = encoder(x, padding mask)                                 (B, L, D)
    logits = h Eᵀ + b                                            (B, L, V_text + k), ``mlm_head``

The output layer is tied to the input table (``mlm_head`` is a
:class:`~mmt_numpy.nn.TiedOutputProjection`), so a visual word's output vector is the same
as its input vector.  For clip–caption retrieval with the contrastive loss of §2.2 the same
encoder reads the caption alone and the visual words alone; ``text_projection`` and
``video_projection`` map their ``[CLS]`` outputs into a shared space for InfoNCE.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mmt_numpy import ops
from mmt_numpy.nn.embedding import (
    Embedding,
    EmbeddingCache,
    LearnedPositionalEmbedding,
    ModalityEmbedding,
    PositionCache,
    TiedOutputCache,
    TiedOutputProjection,
)
from mmt_numpy.nn.encoder import EncoderCache, TransformerEncoder
from mmt_numpy.nn.linear import Linear
from mmt_numpy.nn.masks import lengths_mask
from mmt_numpy.nn.module import Module, RngLike, as_float_dtype, as_generator, expect_cache
from mmt_numpy.validate import grad_scalar, positive_int

TEXT, VIDEO = 0, 1  # the modality ids: caption tokens (and [CLS], [SEP]), visual words


class VideoBERTCache(NamedTuple):
    tokens: EmbeddingCache
    position: PositionCache
    modality: EmbeddingCache
    encoder: EncoderCache

    @property
    def weights(self) -> list[np.ndarray]:
        """Each layer's self-attention ``(B, H, L, L)``."""
        return self.encoder.weights


class VideoBERT(Module):
    """A BERT encoder over a joint vocabulary of text tokens and visual words (see the module doc).

    Ids ``0 … text_vocab − 1`` are text tokens, ``text_vocab + w`` is visual word w.

    Submodules: ``token_embedding`` ``Embedding(text_vocab + visual_words, d_model)``,
    ``position`` (learned), ``modality`` ``ModalityEmbedding(2, d_model)``, ``encoder``
    (pre-LN, final norm), ``mlm_head`` (tied to ``token_embedding``, with a bias),
    ``text_projection`` and ``video_projection`` ``Linear(d_model, projection_dim)``.

    Args:
        text_vocab: number of text token ids.
        visual_words: k, the number of visual words.
        d_model, num_heads, d_ff, num_layers: the encoder's sizes.
        max_len: the longest sequence accepted.
        projection_dim: width of the retrieval embeddings.
        dtype, rng: parameter dtype and initialisation generator.
    """

    def __init__(
        self,
        text_vocab: int,
        visual_words: int,
        *,
        d_model: int = 32,
        num_heads: int = 4,
        d_ff: int = 64,
        num_layers: int = 2,
        max_len: int = 48,
        projection_dim: int = 32,
        dtype: object = np.float64,
        rng: RngLike = None,
    ) -> None:
        self.text_vocab = positive_int("text_vocab", text_vocab)
        self.visual_words = positive_int("visual_words", visual_words)
        self.dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        D = positive_int("d_model", d_model)
        self.token_embedding = Embedding(self.vocab_size, D, dtype=self.dtype, rng=gen)
        self.token_embedding.weight.data *= 0.3  # BERT starts its tables small
        self.position = LearnedPositionalEmbedding(max_len, D, dtype=self.dtype, rng=gen)
        self.modality = ModalityEmbedding(2, D, dtype=self.dtype, rng=gen)
        self.encoder = TransformerEncoder(
            D, num_heads, d_ff, num_layers, norm_first=True, final_norm=True, dtype=self.dtype, rng=gen
        )
        self.mlm_head = TiedOutputProjection(self.token_embedding, bias=True)
        self.text_projection = Linear(D, projection_dim, dtype=self.dtype, rng=gen)
        self.video_projection = Linear(D, projection_dim, dtype=self.dtype, rng=gen)

    @property
    def vocab_size(self) -> int:
        """``text_vocab + visual_words``: the joint vocabulary."""
        return self.text_vocab + self.visual_words

    def word_ids(self, words: np.ndarray) -> np.ndarray:
        """Visual word indices ``(…)`` in ``[0, k)`` -> their ids in the joint vocabulary."""
        words = np.asarray(words)
        if not np.issubdtype(words.dtype, np.integer) or (
            words.size and (words.min() < 0 or words.max() >= self.visual_words)
        ):
            span = f" from {words.min()} to {words.max()}" if words.size else ""
            raise ValueError(f"words: expected integers in [0, {self.visual_words}), got {words.dtype}{span}")
        return words + self.text_vocab

    def forward(
        self, ids: np.ndarray, modality: np.ndarray, lengths: np.ndarray | None = None
    ) -> tuple[np.ndarray, VideoBERTCache]:
        """Encode sequences of text tokens and visual words.

        Args:
            ids: ``(B, L)`` ids in the joint vocabulary.
            modality: ``(L,)`` or ``(B, L)`` 0 for a text position, 1 for a visual word.
            lengths: ``(B,)`` real positions per row (the rest is padding, never attended).

        Returns:
            ``h (B, L, d_model)`` and the cache; ``mlm_head.forward(h)`` gives the logits.
        """
        x, c_tokens = self.token_embedding.forward(ids)  # x = E[ids]
        x, c_position = self.position.forward(x)  # + position[l]
        x, c_modality = self.modality.forward(x, modality)  # + modality[m_l]
        keep = None if lengths is None else lengths_mask("lengths", lengths, ids.shape[0], ids.shape[1])
        h, c_encoder = self.encoder.forward(x, keep)  # h = encoder(x)
        return h, VideoBERTCache(c_tokens, c_position, c_modality, c_encoder)

    def backward(self, d_h: np.ndarray, cache: VideoBERTCache) -> tuple[()]:
        """``d_h (B, L, d_model)`` -> ``()`` (the ids are integers); adds into every parameter's ``.grad``."""
        expect_cache(cache, VideoBERTCache, "VideoBERT")
        (d_x,) = self.encoder.backward(d_h, cache.encoder)  # h = encoder(x)
        (d_x,) = self.modality.backward(d_x, cache.modality)
        (d_x,) = self.position.backward(d_x, cache.position)
        return self.token_embedding.backward(d_x, cache.tokens)  # x = E[ids]

    def __repr__(self) -> str:
        return (
            f"VideoBERT(text_vocab={self.text_vocab}, visual_words={self.visual_words}, "
            f"num_layers={self.encoder.num_layers})"
        )


class PretrainingCache(NamedTuple):
    mlm: ops.CrossEntropyCache
    joint: VideoBERTCache
    head: TiedOutputCache
    nce: ops.InfoNCECache
    text: VideoBERTCache
    text_projection: ops.LinearCache
    video: VideoBERTCache
    video_projection: ops.LinearCache
    shapes: tuple[tuple[int, ...], tuple[int, ...]]  # the caption's and the words' encoder outputs
    parts: tuple[float, float]  # (masked-token loss, contrastive loss), for the log


class VideoBERTPretraining(Module):
    """VideoBERT's pre-training loss as one module: ``loss = CE_masked + w · InfoNCE``.

    * **masked tokens**: the joint sequence ``[CLS] caption [SEP] words`` with some tokens
      replaced by ``[MASK]``; cross-entropy over the joint vocabulary at the masked
      positions (``targets`` hold the true id there, ``IGNORE_INDEX`` elsewhere);
    * **contrastive** (§2.2): the caption read alone and the visual words read alone, each
      ``[CLS]`` projected (``text_projection``, ``video_projection``); symmetric InfoNCE over
      the batch, clip n's caption against clip n's words.

    The encoder runs three times in one forward, each call with its own cache, so its
    gradients from the three uses add up in ``backward``.

    Submodule: ``model`` (the :class:`VideoBERT`, whose parameters are this module's).

    Args:
        model: the VideoBERT to train.
        temperature: τ of InfoNCE.
        contrastive_weight: w, the weight of the contrastive term.
    """

    def __init__(self, model: VideoBERT, temperature: float = 0.1, contrastive_weight: float = 1.0) -> None:
        if not isinstance(model, VideoBERT):
            raise TypeError(f"model: expected a VideoBERT, got {type(model).__name__}")
        self.model = model
        self.temperature = temperature
        self.contrastive_weight = float(contrastive_weight)

    def forward(
        self,
        joint_ids: np.ndarray,
        joint_modality: np.ndarray,
        joint_lengths: np.ndarray,
        targets: np.ndarray,
        caption_ids: np.ndarray,
        caption_lengths: np.ndarray,
        video_ids: np.ndarray,
        video_modality: np.ndarray,
    ) -> tuple[np.ndarray, PretrainingCache]:
        """The loss of one batch of B clips.

        Args:
            joint_ids, joint_modality, joint_lengths: ``(B, L)`` the corrupted joint
                sequences, their modality ids and ``(B,)`` lengths.
            targets: ``(B, L)`` ids to predict at masked positions, ``IGNORE_INDEX`` elsewhere.
            caption_ids, caption_lengths: ``(B, Lc)`` and ``(B,)``, the captions alone.
            video_ids, video_modality: ``(B, T + 1)`` ``[CLS] w_1 … w_T`` and their modality ids.

        Returns:
            the 0-d loss and the cache.
        """
        m = self.model
        h, c_joint = m.forward(joint_ids, joint_modality, joint_lengths)  # the joint sequence
        logits, c_head = m.mlm_head.forward(h)  # (B, L, V) over the joint vocabulary
        mlm, c_mlm = ops.cross_entropy_forward(logits, targets)
        h_text, c_text = m.forward(caption_ids, TEXT, caption_lengths)  # the caption alone
        t, c_tp = m.text_projection.forward(h_text[:, 0])
        h_video, c_video = m.forward(video_ids, video_modality)  # the visual words alone
        v, c_vp = m.video_projection.forward(h_video[:, 0])
        nce, c_nce = ops.info_nce_forward(t, v, self.temperature)
        loss = mlm + self.contrastive_weight * nce  # loss = CE + w · InfoNCE
        shapes = (h_text.shape, h_video.shape)
        cache = PretrainingCache(
            c_mlm, c_joint, c_head, c_nce, c_text, c_tp, c_video, c_vp, shapes, (float(mlm), float(nce))
        )
        return np.asarray(loss, dtype=m.dtype), cache

    def backward(self, d_loss: np.ndarray | float, cache: PretrainingCache) -> tuple[()]:
        """``d_loss`` (a scalar) -> ``()`` (every input is integer); adds into every parameter's ``.grad``."""
        expect_cache(cache, PretrainingCache, "VideoBERTPretraining")
        m = self.model
        d_loss = grad_scalar(d_loss, m.dtype)
        # loss = CE(mlm_head(h)) + w · InfoNCE(t, v)
        d_logits = ops.cross_entropy_backward(d_loss, cache.mlm)
        (d_h,) = m.mlm_head.backward(d_logits, cache.head)
        m.backward(d_h, cache.joint)
        d_t, d_v = ops.info_nce_backward(d_loss * self.contrastive_weight, cache.nce)
        for d_emb, projection, c_projection, c_encoder, shape in (
            (d_t, m.text_projection, cache.text_projection, cache.text, cache.shapes[0]),
            (d_v, m.video_projection, cache.video_projection, cache.video, cache.shapes[1]),
        ):
            (d_cls,) = projection.backward(d_emb, c_projection)  # emb = projection(h[:, 0])
            d_h = np.zeros(shape, dtype=m.dtype)
            d_h[:, 0] = d_cls  # only [CLS] was read
            m.backward(d_h, c_encoder)
        return ()
