"""``VideoQAModel``: a question about a clip answered from its frames and its sound (§6.3).

§6.3 says video understanding fuses video, audio and text.  Here each modality has an
encoder of its own, and a fusion stage lets the question read the other two::

    q = text_encoder(text_position(token_embedding(ids)))           (Q, Lt, D)    the question
    v = video_encoder(patches)                                      (C, T, N, D)  every clip once
    a = audio_encoder(spectrogram_patches(spectrogram))             (C, Na, D)
    w = softmax(u · time[t])                                        (K, T)        time pooling
    s = [w @ mean_n(v) ; mean(a)]                                   (C, K + 1, D) the clip's summaries
    x = [q ; s[clip_index] + [w @ time + q[:, 0] ; 0]]              (Q, Lt + K + 1, D)
    x = fusion_k(… fusion_1(x, [a ; v as (C, T·N, D)]))             the question reads the clip
    logits = classifier([norm(x[:, 0]) ; norm(x[:, Lt]) ; …])       (Q, answers)

(every token also gets a learned type vector: question, sound, sound summary, patch, video
summary).  The choices, each made for a reason measured while building it (notebook 11):

* **The clips are encoded once per batch**, not once per question: a clip with seven
  questions goes through the video encoder once, and ``clip_index (Q,)`` tells each question
  which clip's tokens to read (the backward adds the seven gradients back up).
* **Fusion by context attention** (:class:`~mmt_numpy.nn.ContextAttentionLayer`): the
  question's tokens and the summaries attend over themselves, the sound tokens and every
  patch of every frame in one softmax, as in single-stream fusion (§5), but only they are
  updated, so the cost grows as ``Lq · (Lq + Na + T·N)`` rather than ``(Lq + Na + T·N)²``.
  The questions of one clip are packed into one query sequence (a block mask keeps them
  apart) so the clip's tokens are projected to keys and values once.  ``fusion="joint"``
  runs the §5 encoder over ``[x ; context]`` per question instead.
* **K time-pooled video summaries, read side by side with [CLS].**  Read at ``[CLS]``
  alone, the clip reaches the classifier only through attention spread over ~150 tokens,
  most of them an empty board, and "which shape appears last ?" sat at chance for many
  epochs.  A summary on the residual path reaches the classifier from the first step; but a
  plain mean over the frames cannot answer questions about order ("appears last" is "in the
  clip but not in the first frame").  So summary k is a weighted mean of the frames whose
  weights ``softmax_t(u_k · time[t])`` depend on the frames' *time positions* only: with
  ``time_positions="none"`` every weight is 1/T and the model is blind to order, as the
  ablation requires.  Each ``u_k`` starts pointed at one frame, first to last (learned
  from a random start, all K drifted to the last frames, which the easy question "how many
  at the end ?" wants, and stayed there).  Each summary also starts from the question's
  ``[CLS]`` and its pooled time vector, so in the fusion it can look for the shape the
  question names at the frames it favours ("which way does the circle move ?").  The
  classifier reads the normalised ``[CLS]`` and summaries concatenated, so it can weigh
  early against late.

Built without a spectrogram shape (``spectrogram=None``), the model has no sound at all: the
ablation whose sound-only questions fall to chance.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mmt_numpy import ops
from mmt_numpy.nn.context_attention import ContextAttentionCache, ContextAttentionLayer
from mmt_numpy.nn.embedding import (
    Embedding,
    EmbeddingCache,
    LearnedPositionalEmbedding,
    ModalityEmbedding,
    PositionCache,
    int_ids,
)
from mmt_numpy.nn.encoder import EncoderCache, TransformerEncoder
from mmt_numpy.nn.layernorm import LayerNorm
from mmt_numpy.nn.linear import Linear
from mmt_numpy.nn.masks import lengths_mask
from mmt_numpy.nn.module import Module, Parameter, RngLike, as_float_dtype, as_generator, expect_cache
from mmt_numpy.nn.spectrogram import SpectrogramPatchCache, SpectrogramPatchEmbedding
from mmt_numpy.nn.video import VideoEncoder, VideoEncoderCache
from mmt_numpy.validate import grad_output, positive_int

# the type ids given to ModalityEmbedding
TEXT, SOUND, SOUND_SUMMARY, PATCH, VIDEO_SUMMARY = range(5)
FUSIONS = ("context", "joint")


class QuestionPacking(NamedTuple):
    """The Q questions' rows laid out clip by clip: ``(C, M, L)`` slots, M the most questions of a clip.

    Question q sits in slot ``slots[q]`` of clip ``clip_index[q]``; ``mask (C, M·L, M·L + Lc)``
    lets each question's tokens see its own real tokens and the clip's whole context, never
    another question's tokens, so packing changes no result: it only lets the clip's context be
    projected to keys and values once instead of once per question.
    """

    clip_index: np.ndarray  # (Q,)
    slots: np.ndarray  # (Q,)
    shape: tuple[int, int, int]  # (C, M, L)
    mask: np.ndarray  # (C, M*L, M*L + Lc) bool

    def pack(self, x: np.ndarray) -> np.ndarray:
        """``(Q, L, D)`` -> ``(C, M·L, D)``, empty slots zero."""
        C, M, L = self.shape
        out = np.zeros((C, M, L, x.shape[-1]), dtype=x.dtype)
        out[self.clip_index, self.slots] = x  # every (clip, slot) holds one question: no repeats
        return out.reshape(C, M * L, -1)

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        """``(C, M·L, D)`` -> ``(Q, L, D)``."""
        C, M, L = self.shape
        return packed.reshape(C, M, L, -1)[self.clip_index, self.slots]

    pack_backward = unpack  # the two are each other's transpose (a permutation, empty slots dropped)

    def unpack_backward(self, d: np.ndarray) -> np.ndarray:
        return self.pack(d)


def pack_questions(
    clip_index: np.ndarray, num_clips: int, keep: np.ndarray, context_len: int
) -> QuestionPacking:
    """Slots and the attention mask for the questions of ``clip_index (Q,)``; ``keep (Q, L)`` marks
    each question's real tokens (padding False); the clip's ``context_len`` tokens are all real."""
    Q, L = keep.shape
    order = np.argsort(clip_index, kind="stable")
    counts = np.bincount(clip_index, minlength=num_clips)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slots = np.empty(Q, dtype=np.int64)
    slots[order] = np.arange(Q) - np.repeat(starts, counts)  # 0, 1, ... within each clip
    M = max(int(counts.max(initial=0)), 1)
    real = np.zeros((num_clips, M, L), dtype=bool)
    real[clip_index, slots] = keep
    same_slot = np.eye(M, dtype=bool)[None, :, None, :, None]  # (1, M, 1, M, 1)
    own = same_slot & real[:, None, None, :, :]  # query (s, i) may see key (s', j): s == s', j real
    own = np.broadcast_to(own, (num_clips, M, L, M, L)).reshape(num_clips, M * L, M * L)
    mask = np.concatenate([own, np.ones((num_clips, M * L, context_len), dtype=bool)], axis=-1)
    return QuestionPacking(clip_index, slots, (num_clips, M, L), mask)


class VideoQACache(NamedTuple):
    clip_index: np.ndarray  # (Q,)
    video_shape: tuple[int, ...]  # (C, T, N, D) of the video encoder's output
    Na: int  # sound tokens per clip (0 without sound)
    packing: QuestionPacking | None  # how the questions were packed by clip (context fusion)
    pool_weights: np.ndarray  # (K, T) the time pooling's weights over the frames
    video_frames: np.ndarray  # (C, T, D) each frame's mean over its patches
    token_embedding: EmbeddingCache
    text_position: PositionCache
    text_encoder: EncoderCache | None
    video_encoder: VideoEncoderCache
    audio_embedding: SpectrogramPatchCache | None
    audio_encoder: EncoderCache | None
    clip_types: EmbeddingCache  # of [summaries ; context], per clip
    question_types: EmbeddingCache
    fusion: tuple[ContextAttentionCache, ...] | tuple[EncoderCache]
    norm: ops.LayerNormCache
    classifier: ops.LinearCache

    @property
    def num_summaries(self) -> int:
        return len(self.pool_weights) + (1 if self.Na else 0)

    @property
    def weights(self) -> list[np.ndarray]:
        """Each fusion layer's attention, one map per question: ``(Q, H, Lt + S, Lt + S + Na + T·N)``.

        Queries are the question's tokens and its S summaries; keys are ``[question ; summaries ;
        sound ; patches]`` (patch ``t·N + n`` is patch n of frame t).  With context fusion the
        packed maps are cut back out per question (a question never attends another's tokens).
        """
        if self.packing is None:  # joint fusion: the query rows of the square map
            L = self.packing_free_rows
            return [w[:, :, :L] for w in self.fusion[0].weights]
        C, M, L = self.packing.shape
        Q = len(self.clip_index)
        out = []
        for c in self.fusion:
            w = c.weights  # (C, H, M*L, M*L + Lc)
            rows = w.reshape(C, w.shape[1], M, L, -1)[
                self.packing.clip_index, :, self.packing.slots
            ]  # (Q, H, L, K)
            own = rows[..., : M * L].reshape(Q, w.shape[1], L, M, L)[np.arange(Q), :, :, self.packing.slots]
            out.append(np.concatenate([own, rows[..., M * L :]], axis=-1))  # (Q, H, L, L + Lc)
        return out

    @property
    def packing_free_rows(self) -> int:
        return self.token_embedding.ids.shape[1] + self.num_summaries


class VideoQAModel(Module):
    """Question ids + clip patches + spectrograms in, answer logits out (see the module doc).

    Submodules: ``token_embedding``, ``text_position`` (learned), ``text_encoder``
    (:class:`TransformerEncoder`, pre-LN, or None with ``text_layers=0``), ``video_encoder``
    (:class:`~mmt_numpy.nn.VideoEncoder`), ``audio_embedding``
    (:class:`~mmt_numpy.nn.SpectrogramPatchEmbedding`) and ``audio_encoder`` (None without
    sound, or with ``audio_layers=0``), ``type_embedding`` (a ``ModalityEmbedding`` over the
    five token types), the Parameter ``time_queries`` ``(K, d_model)`` of the time pooling,
    ``fusion`` (a list of :class:`~mmt_numpy.nn.ContextAttentionLayer`, or one
    ``TransformerEncoder`` with ``fusion="joint"``), ``norm``, ``classifier``
    ``Linear((1 + K + sound) · d_model, num_answers)``.

    Args:
        vocab_size: number of token ids.
        num_answers: number of answer classes.
        patch_dim, grid, frames: the clips' patch width, patch grid ``(rows, columns)`` and
            (most) frames.
        spectrogram: ``(bins, frames)`` of the spectrograms, or None for a model without sound.
        audio_patch: ``(bins, frames)`` of each spectrogram patch.
        d_model, num_heads, d_ff: the width, heads and feed-forward width of every part.
        video_layers, audio_layers, text_layers, fusion_layers: depths (audio and text may be 0).
        attention, time_positions: of the video encoder (``"divided"``/``"joint"``;
            ``"learned"``/``"sinusoidal"``/``"none"``).
        fusion: ``"context"`` (only the question and summaries are updated) or ``"joint"``.
        position_std: initial spread of the video encoder's grid and time vectors.
        video_summaries: K, the time-pooled video summaries.
        max_len: the longest question accepted.
        dtype, rng: parameter dtype and initialisation generator.
    """

    def __init__(
        self,
        vocab_size: int,
        num_answers: int,
        *,
        patch_dim: int,
        grid: tuple[int, int],
        frames: int,
        spectrogram: tuple[int, int] | None,
        audio_patch: tuple[int, int] = (64, 5),
        d_model: int = 32,
        num_heads: int = 4,
        d_ff: int = 64,
        video_layers: int = 2,
        audio_layers: int = 1,
        text_layers: int = 1,
        fusion_layers: int = 2,
        attention: str = "divided",
        time_positions: str = "learned",
        fusion: str = "context",
        position_std: float = 0.3,
        video_summaries: int = 4,
        max_len: int = 16,
        dtype: object = np.float64,
        rng: RngLike = None,
    ) -> None:
        if fusion not in FUSIONS:
            raise ValueError(f"fusion: expected one of {FUSIONS}, got {fusion!r}")
        self.dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        D = positive_int("d_model", d_model)
        self.token_embedding = Embedding(vocab_size, D, dtype=self.dtype, rng=gen)
        self.token_embedding.weight.data *= 0.3  # N(0, 1) rows would drown the positions at first
        self.text_position = LearnedPositionalEmbedding(max_len, D, dtype=self.dtype, rng=gen)
        self.text_encoder = None
        if text_layers:
            self.text_encoder = TransformerEncoder(
                D, num_heads, d_ff, text_layers, norm_first=True, final_norm=True, dtype=self.dtype, rng=gen
            )
        self.video_encoder = VideoEncoder(
            patch_dim,
            grid,
            frames,
            D,
            num_heads,
            d_ff,
            video_layers,
            attention=attention,
            time_positions=time_positions,
            position_std=position_std,
            dtype=self.dtype,
            rng=gen,
        )
        self.audio_embedding = None
        self.audio_encoder = None
        if spectrogram is not None:
            bins, spec_frames = spectrogram
            self.audio_embedding = SpectrogramPatchEmbedding(
                bins, spec_frames, audio_patch, D, dtype=self.dtype, rng=gen
            )
            if audio_layers:
                self.audio_encoder = TransformerEncoder(
                    D,
                    num_heads,
                    d_ff,
                    audio_layers,
                    norm_first=True,
                    final_norm=True,
                    dtype=self.dtype,
                    rng=gen,
                )
        self.type_embedding = ModalityEmbedding(5, D, dtype=self.dtype, rng=gen)
        K = positive_int("video_summaries", video_summaries)
        # Each summary's query starts pointed at one frame, first to last (u_k ∝ time[t_k], so its
        # weights peak there, ~0.7): from the start some summary looks at the first frame and some
        # at the last.  Learned queries drawn at random all drifted to the last frames (what the
        # easiest question, "how many at the end ?", needs) and saturated there.
        anchors = self.video_encoder.position.time_vectors(frames)
        if anchors is None:  # no time positions: the weights are uniform whatever the queries
            queries = gen.standard_normal((K, D))
        else:
            picked = anchors[np.round(np.linspace(0, frames - 1, K)).astype(int)]
            queries = 3.0 * picked / np.sum(picked**2, axis=1, keepdims=True)
        self.time_queries = Parameter(queries.astype(self.dtype))
        self.fusion_kind = fusion
        fusion_layers = positive_int("fusion_layers", fusion_layers)
        if fusion == "joint":
            self.fusion = TransformerEncoder(
                D, num_heads, d_ff, fusion_layers, norm_first=True, dtype=self.dtype, rng=gen
            )
        else:
            self.fusion = [
                ContextAttentionLayer(D, num_heads, d_ff, dtype=self.dtype, rng=gen)
                for _ in range(fusion_layers)
            ]
        self.norm = LayerNorm(D, dtype=self.dtype)
        read = 1 + K + (1 if spectrogram is not None else 0)  # [CLS], the K video summaries, the sound's
        self.classifier = Linear(
            read * D, positive_int("num_answers", num_answers), dtype=self.dtype, rng=gen
        )

    @property
    def has_sound(self) -> bool:
        return self.audio_embedding is not None

    def _check(self, ids: object, patches: object, spectrogram: object, clip_index: object) -> np.ndarray:
        """Validate the inputs' shapes against each other; return ``clip_index`` as an array."""
        int_ids("ids", ids, self.token_embedding.num_embeddings, "the token embedding")
        if ids.ndim != 2:
            raise ValueError(f"ids: expected a 2-D integer array (Q, Lt), got shape {ids.shape}")
        if not isinstance(patches, np.ndarray) or patches.ndim != 4:
            raise ValueError(
                "patches: expected (C, T, N, patch_dim), "
                f"got {getattr(patches, 'shape', type(patches).__name__)}"
            )
        C, Q = patches.shape[0], ids.shape[0]
        if self.has_sound and (
            not isinstance(spectrogram, np.ndarray) or spectrogram.ndim != 3 or spectrogram.shape[0] != C
        ):
            got = "None" if spectrogram is None else getattr(spectrogram, "shape", type(spectrogram).__name__)
            raise ValueError(
                f"spectrogram: expected ({C}, bins, frames), one per clip of {patches.shape}, got {got}"
            )
        if not self.has_sound and spectrogram is not None:
            raise ValueError("spectrogram: expected None (the model was built without sound), got an array")
        clip_index = np.arange(Q) if clip_index is None else np.asarray(clip_index)
        if clip_index.shape != (Q,) or not np.issubdtype(clip_index.dtype, np.integer):
            raise ValueError(
                f"clip_index: expected {Q} integers (one per question), "
                f"got shape {clip_index.shape}, {clip_index.dtype}"
            )
        if Q and (clip_index.min() < 0 or clip_index.max() >= C):
            raise ValueError(
                f"clip_index: expected values in [0, {C}) ({C} clips), "
                f"got {clip_index.min()} .. {clip_index.max()}"
            )
        return clip_index

    def _pool_weights(self, T: int) -> np.ndarray:
        """``(K, T)``: ``softmax_t(u_k · time[t] / √D)``, each summary's weights over the frames.

        The keys are the video encoder's time positions and nothing else, so the K summaries
        can weigh early and late frames differently (the first frame against the rest, say)
        only because the frames carry time positions: with ``time_positions="none"`` every
        weight is 1/T and each summary is the plain mean.
        """
        time = self.video_encoder.position.time_vectors(T)
        K, D = self.time_queries.shape
        if time is None:
            return np.full((K, T), 1.0 / T, dtype=self.dtype)
        weights, _ = ops.softmax_forward(self.time_queries.data @ time.T)
        return weights

    def _pool_weights_backward(self, d_weights: np.ndarray, weights: np.ndarray) -> None:
        """Add the gradients of :meth:`_pool_weights` into ``time_queries`` and the learned time table."""
        position = self.video_encoder.position
        T = weights.shape[1]
        time = position.time_vectors(T)
        if time is None:
            return
        # weights = softmax(scores), scores = u timeᵀ
        d_scores = ops.softmax_backward(d_weights.astype(self.dtype), ops.SoftmaxCache(weights))
        self.time_queries.grad += d_scores @ time
        if position.time is not None:  # learned (a sinusoidal table is a constant)
            position.time.grad[:T] += d_scores.T @ self.time_queries.data

    def _gather_backward(self, d_rows: np.ndarray, index: np.ndarray, num: int) -> np.ndarray:
        """Backward of ``rows = per_clip[index]``: ``d_rows (Q, L, D)`` -> ``(num, L, D)``.

        Each clip collects the gradients of all its questions, as one ``(num, Q)`` one-hot
        matrix times ``(Q, L·D)`` (``np.add.at`` does the same, far slower; ``d[index] += …``
        would keep only one question of a clip asked twice).
        """
        one_hot = (index[None, :] == np.arange(num)[:, None]).astype(self.dtype)
        return (one_hot @ d_rows.reshape(len(index), -1)).reshape(num, *d_rows.shape[1:])

    def forward(
        self,
        ids: np.ndarray,
        patches: np.ndarray,
        spectrogram: np.ndarray | None = None,
        clip_index: np.ndarray | None = None,
        text_lengths: np.ndarray | None = None,
    ) -> tuple[np.ndarray, VideoQACache]:
        """Answer Q questions about C clips.

        Args:
            ids: ``(Q, Lt)`` question token ids (``[CLS]`` first).
            patches: ``(C, T, N, patch_dim)`` the clips' patches.
            spectrogram: ``(C, bins, frames)`` their spectrogram features; None exactly when
                the model was built without sound.
            clip_index: ``(Q,)`` integers in ``[0, C)``, the clip of each question; default
                ``arange(Q)`` (one clip per question, C = Q).
            text_lengths: ``(Q,)`` real tokens per question; padding is not attended.

        Returns:
            ``logits (Q, num_answers)`` and the cache (``cache.weights``: the fusion attention).
        """
        clip_index = self._check(ids, patches, spectrogram, clip_index)
        v, c_video = self.video_encoder.forward(patches)  # (C, T, N, D): every clip once
        C, T, N, D = v.shape
        pool_weights = self._pool_weights(T)  # (K, T)
        frames = v.mean(axis=2)  # (C, T, D)
        summaries, tokens = [pool_weights @ frames], [v.reshape(C, T * N, D)]  # (C, K, D) pooled frames
        summary_types, token_types = [VIDEO_SUMMARY] * len(pool_weights), [np.full(T * N, PATCH)]
        c_audio_embedding = c_audio_encoder = None
        Na = 0
        if self.has_sound:
            a, c_audio_embedding = self.audio_embedding.forward(spectrogram)  # (C, Na, D)
            if self.audio_encoder is not None:
                a, c_audio_encoder = self.audio_encoder.forward(a)
            Na = a.shape[1]
            summaries.append(a.mean(axis=1)[:, None])  # the sound's summary
            summary_types.append(SOUND_SUMMARY)
            tokens.insert(0, a)
            token_types.insert(0, np.full(Na, SOUND))
        S = sum(x.shape[1] for x in summaries)  # K pooled video summaries (+ the sound's)
        # [summaries ; sound ; patches] per clip, typed
        types = np.concatenate([np.array(summary_types), *token_types])
        per_clip, c_clip_types = self.type_embedding.forward(
            np.concatenate(summaries + tokens, axis=1), types
        )

        q, c_tokens = self.token_embedding.forward(ids)  # (Q, Lt, D)
        q, c_text_position = self.text_position.forward(q)
        Q, Lt = ids.shape
        text_keep = None if text_lengths is None else lengths_mask("text_lengths", text_lengths, Q, Lt)
        c_text_encoder = None
        if self.text_encoder is not None:
            q, c_text_encoder = self.text_encoder.forward(q, text_keep)
        q, c_question_types = self.type_embedding.forward(q, TEXT)
        x = np.concatenate([q, per_clip[clip_index, :S]], axis=1)  # x = [q ; its clip's summaries]
        K = len(pool_weights)
        time = self.video_encoder.position.time_vectors(T)
        probe = np.zeros((K, D), dtype=self.dtype) if time is None else pool_weights @ time  # (K, D)
        # each video summary also starts from the question ([CLS]) and its own time: a probe
        # that can look for the asked-about shape at the frames its weights favour
        x[:, Lt : Lt + K] += probe + q[:, :1]
        keep = np.ones((Q, Lt + S), dtype=bool)  # which of x's tokens are real (keys)
        if text_keep is not None:
            keep[:, :Lt] = text_keep[:, 0, 0]
        packing = None
        if self.fusion_kind == "joint":  # one sequence [x ; context] per question, every token updated
            context = per_clip[clip_index, S:]  # (Q, Na + T*N, D)
            mask = np.concatenate([keep, np.ones(context.shape[:2], dtype=bool)], axis=1)[:, None, None, :]
            y, c = self.fusion.forward(np.concatenate([x, context], axis=1), mask)
            x, fusion_caches = y[:, : Lt + S], (c,)
        else:  # the questions of a clip packed into one query sequence; the clip's context read once
            packing = pack_questions(clip_index, C, keep, per_clip.shape[1] - S)
            x = packing.pack(x)  # (C, M * (Lt + S), D)
            fusion_caches = []
            for layer in self.fusion:
                x, c = layer.forward(x, per_clip[:, S:], packing.mask)  # x = fusion(x, context)
                fusion_caches.append(c)
            x = packing.unpack(x)  # (Q, Lt + S, D)
        read = np.concatenate([x[:, :1], x[:, Lt:]], axis=1)  # [CLS] and the summaries, (Q, 1 + S, D)
        h, c_norm = self.norm.forward(read)  # each token normalised, then side by side
        h = h.reshape(Q, -1)
        logits, c_classifier = self.classifier.forward(h)
        cache = VideoQACache(
            clip_index,
            v.shape,
            Na,
            packing,
            pool_weights,
            frames,
            c_tokens,
            c_text_position,
            c_text_encoder,
            c_video,
            c_audio_embedding,
            c_audio_encoder,
            c_clip_types,
            c_question_types,
            tuple(fusion_caches),
            c_norm,
            c_classifier,
        )
        return logits, cache

    def backward(self, d_logits: np.ndarray, cache: VideoQACache) -> tuple[np.ndarray, ...]:
        """``d_logits (Q, num_answers)`` -> ``(d_patches,)``, or ``(d_patches, d_spectrogram)`` with sound."""
        expect_cache(cache, VideoQACache, "VideoQAModel")
        Q, Lt = cache.token_embedding.ids.shape
        grad_output(d_logits, (Q, self.classifier.d_out), self.dtype, "d_logits")
        C, T, N, D = cache.video_shape
        S, Na = cache.num_summaries, cache.Na
        (d_h,) = self.classifier.backward(d_logits, cache.classifier)  # logits = classifier(h)
        (d_read,) = self.norm.backward(d_h.reshape(Q, 1 + S, D), cache.norm)  # h = norm([CLS ; summaries])
        d_x = np.zeros((Q, Lt + S, D), dtype=self.dtype)
        d_x[:, 0] = d_read[:, 0]
        d_x[:, Lt:] = d_read[:, 1:]
        if self.fusion_kind == "joint":
            d_y = np.zeros((Q, Lt + S + Na + T * N, D), dtype=self.dtype)
            d_y[:, : Lt + S] = d_x
            (d_y,) = self.fusion.backward(d_y, cache.fusion[0])  # y = fusion([x ; context])
            d_x = d_y[:, : Lt + S]
            d_context = self._gather_backward(
                d_y[:, Lt + S :], cache.clip_index, C
            )  # context = per_clip[index]
        else:
            d_packed = cache.packing.unpack_backward(d_x)  # x = unpack(packed)
            d_context = np.zeros((C, Na + T * N, D), dtype=self.dtype)
            for layer, c in zip(reversed(self.fusion), reversed(cache.fusion), strict=True):
                d_packed, d_ctx = layer.backward(d_packed, c)  # x = fusion(x, context): each layer reads it
                d_context += d_ctx
            d_x = cache.packing.pack_backward(d_packed)  # packed = pack(x)
        K = len(cache.pool_weights)
        d_probes = d_x[:, Lt : Lt + K]  # x[:, Lt:Lt+K] += probe + q[:, 0]
        d_q = d_x[:, :Lt].copy()
        d_q[:, 0] += d_probes.sum(axis=1)
        d_probe = d_probes.sum(axis=0)  # (K, D)
        time = self.video_encoder.position.time_vectors(T)
        # x = [q ; per_clip[index, :S]],  context = per_clip[:, S:]
        d_per_clip = np.concatenate(
            [self._gather_backward(d_x[:, Lt:], cache.clip_index, C), d_context], axis=1
        )
        (d_q,) = self.type_embedding.backward(np.ascontiguousarray(d_q), cache.question_types)
        if self.text_encoder is not None:
            (d_q,) = self.text_encoder.backward(d_q, cache.text_encoder)
        (d_q,) = self.text_position.backward(d_q, cache.text_position)
        self.token_embedding.backward(d_q, cache.token_embedding)  # integer ids: no gradient
        (d_seq,) = self.type_embedding.backward(d_per_clip, cache.clip_types)
        # per_clip = [mean(v) ; mean(a) ; a ; v]
        K = len(cache.pool_weights)
        d_pooled = d_seq[:, :K]  # pooled = weights @ frames, frames = mean over patches of v
        d_frames = cache.pool_weights.T @ d_pooled  # (C, T, D)
        d_weights = np.einsum("ckd,ctd->kt", d_pooled, cache.video_frames, optimize=True)
        if time is not None:  # probe = weights @ time
            d_weights += d_probe @ time.T
            if self.video_encoder.position.time is not None:
                self.video_encoder.position.time.grad[:T] += cache.pool_weights.T @ d_probe
        self._pool_weights_backward(d_weights, cache.pool_weights)
        d_v = d_seq[:, S + Na :].reshape(C, T, N, D) + d_frames[:, :, None, :] / N
        (d_patches,) = self.video_encoder.backward(d_v, cache.video_encoder)
        if not self.has_sound:
            return (d_patches,)
        d_a = d_seq[:, S : S + Na] + d_seq[:, K, None, :] / Na
        if self.audio_encoder is not None:
            (d_a,) = self.audio_encoder.backward(d_a, cache.audio_encoder)
        (d_spectrogram,) = self.audio_embedding.backward(d_a, cache.audio_embedding)
        return d_patches, d_spectrogram
