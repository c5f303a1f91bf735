"""``UniT``: one set of weights for several tasks over several modalities (§3.2, 统一Transformer).

§3.2 names UniT (Hu & Singh, 2021, "UniT: Multimodal Multitask Learning with a Unified
Transformer"): each modality has an encoder of its own, the encoded modalities of a task
are concatenated into one *memory*, and a single Transformer decoder, shared by every
task, reads that memory through cross-attention.  What tells the decoder which task it is
doing is its input: a few learned *task queries* per task, the decoder's only input
tokens.  A small head per task reads the decoder's output::

    v = visual_encoder[modality](visual)               image (S, P, D) or video (S, T·N, D)
    t = text_encoder(ids)                              (B, Lt, D)
    m = type([v[visual_index] ; t])                    (B, Lv + Lt, D)       the task's memory
    x = queries[task] + t[:, 0]                        (B, Nq, D)            every row, every query
    h = decoder(x, m)                                  (B, Nq, D)            shared by all tasks
    logits = head[task](h.reshape(B, Nq · D))          (B, classes of the task)

One departure from the paper, measured: UniT's decoder input is the task queries alone, and
the question reaches the decoder only through the memory.  Then the first cross-attention
cannot look for "the square" before some layer has read the word, and on the toy VQA the
colour questions (VQA alone, two queries) sat at 0.56 after 600 steps; with the text's ``[CLS]``
vector added to each query (``queries_read_text=True``, the default) they were at 1.0 after the
same 600 steps.  With ``queries_read_text=False`` the model is the paper's.

What is shared and what is not:

* shared by every task: the text encoder (every task here has a text), the modality-type
  vectors, the decoder (self-attention among the queries, cross-attention into the memory,
  feed-forward, final norm);
* shared by the tasks of one modality: that modality's encoder (VQA and image-text
  matching both read the image encoder);
* one per task: its ``Nq`` query vectors and its head (:class:`TaskHead`).

So a batch of one task sends gradients into the shared parts, its modality's encoder and
its own head only; the other tasks' heads and the other modality's encoder get exactly
zero (a test checks it).  The decoder's self-attention takes no mask: the queries are not
a text being generated, each may read every other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from mmt_numpy import ops
from mmt_numpy.nn.decoder import DecoderCache, TransformerDecoder
from mmt_numpy.nn.embedding import (
    Embedding,
    EmbeddingCache,
    GridPositionalEmbedding,
    LearnedPositionalEmbedding,
    ModalityEmbedding,
    PositionCache,
    int_ids,
)
from mmt_numpy.nn.encoder import EncoderCache, TransformerEncoder
from mmt_numpy.nn.linear import Linear
from mmt_numpy.nn.masks import lengths_mask
from mmt_numpy.nn.module import Module, Parameter, RngLike, as_float_dtype, as_generator, expect_cache
from mmt_numpy.nn.video import VideoEncoder
from mmt_numpy.validate import grad_output, module_input, positive_int

VISUAL_MODALITIES = ("image", "video")
IMAGE, VIDEO, TEXT = range(3)  # the modality-type ids of the memory's tokens


class TaskSpec(NamedTuple):
    """What a task reads and predicts: its visual modality and its number of classes."""

    modality: str  # "image" or "video"
    num_classes: int


class ImageEncoderCache(NamedTuple):
    patch_embedding: ops.LinearCache
    position: PositionCache
    encoder: EncoderCache


class ImageEncoder(Module):
    """Image patches ``(S, P, patch_dim)`` -> ``(S, P, d_model)``: ViT's patch embedding, 2-D grid
    positions, pre-LN encoder layers and a final norm.

    Submodules: ``patch_embedding`` ``Linear(patch_dim, d_model)``, ``position``
    :class:`~mmt_numpy.nn.GridPositionalEmbedding` (initial spread ``grid_std``, the scale of
    the patch features), ``encoder`` :class:`~mmt_numpy.nn.TransformerEncoder`.
    """

    def __init__(
        self,
        patch_dim: int,
        grid: tuple[int, int],
        d_model: int,
        num_heads: int,
        d_ff: int,
        num_layers: int,
        *,
        grid_std: float = 0.3,
        dtype: object = np.float64,
        rng: RngLike = None,
    ) -> None:
        self.patch_dim = positive_int("patch_dim", patch_dim)
        self.dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        self.patch_embedding = Linear(self.patch_dim, d_model, dtype=self.dtype, rng=gen)
        self.position = GridPositionalEmbedding(grid, d_model, std=grid_std, dtype=self.dtype, rng=gen)
        self.encoder = TransformerEncoder(
            d_model, num_heads, d_ff, num_layers, norm_first=True, final_norm=True, dtype=self.dtype, rng=gen
        )

    def forward(self, patches: np.ndarray) -> tuple[np.ndarray, ImageEncoderCache]:
        """``patches (S, P, patch_dim)``, ``P = rows * columns`` -> ``(S, P, d_model)`` and the cache."""
        module_input("patches", patches, self.patch_dim, self.dtype, repr(self), ndim=3)
        x, c_patch = self.patch_embedding.forward(patches)  # x = patches W + b
        x, c_position = self.position.forward(x)  # x = x + row[r] + column[c]
        out, c_encoder = self.encoder.forward(x)  # out = encoder(x)
        return out, ImageEncoderCache(c_patch, c_position, c_encoder)

    def backward(self, d_out: np.ndarray, cache: ImageEncoderCache) -> tuple[np.ndarray]:
        """``d_out (S, P, d_model)`` -> ``(d_patches (S, P, patch_dim),)``."""
        expect_cache(cache, ImageEncoderCache, "ImageEncoder")
        (d_x,) = self.encoder.backward(d_out, cache.encoder)  # out = encoder(x)
        (d_x,) = self.position.backward(d_x, cache.position)  # x = x + row[r] + column[c]
        return self.patch_embedding.backward(d_x, cache.patch_embedding)  # x = patches W + b

    def __repr__(self) -> str:
        return f"ImageEncoder(patch_dim={self.patch_dim}, grid={self.position.grid})"


class TextEncoderCache(NamedTuple):
    token_embedding: EmbeddingCache
    position: PositionCache
    encoder: EncoderCache


class TextEncoder(Module):
    """Token ids ``(B, Lt)`` -> ``(B, Lt, d_model)``: word vectors, learned positions, pre-LN encoder.

    Submodules: ``token_embedding`` (started at N(0, 1/d_model) rather than N(0, 1), near the
    scale of the positions and the patch features), ``position``
    :class:`~mmt_numpy.nn.LearnedPositionalEmbedding`, ``encoder``.
    """

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        d_model: int,
        num_heads: int,
        d_ff: int,
        num_layers: int,
        *,
        dtype: object = np.float64,
        rng: RngLike = None,
    ) -> None:
        self.dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        self.token_embedding = Embedding(vocab_size, d_model, dtype=self.dtype, rng=gen)
        self.token_embedding.weight.data *= d_model**-0.5
        self.position = LearnedPositionalEmbedding(max_len, d_model, dtype=self.dtype, rng=gen)
        self.encoder = TransformerEncoder(
            d_model, num_heads, d_ff, num_layers, norm_first=True, final_norm=True, dtype=self.dtype, rng=gen
        )

    def forward(self, ids: np.ndarray, keep: np.ndarray | None = None) -> tuple[np.ndarray, TextEncoderCache]:
        """``ids (B, Lt)``, ``keep (B, 1, 1, Lt)`` key padding or None -> ``(B, Lt, d_model)``, cache."""
        x, c_tokens = self.token_embedding.forward(ids)  # x = E[ids]
        x, c_position = self.position.forward(x)  # x = x + P[:Lt]
        out, c_encoder = self.encoder.forward(x, keep)  # out = encoder(x)
        return out, TextEncoderCache(c_tokens, c_position, c_encoder)

    def backward(self, d_out: np.ndarray, cache: TextEncoderCache) -> tuple[()]:
        """``d_out (B, Lt, d_model)`` -> ``()`` (integer ids); adds into every parameter's ``.grad``."""
        expect_cache(cache, TextEncoderCache, "TextEncoder")
        (d_x,) = self.encoder.backward(d_out, cache.encoder)  # out = encoder(x)
        (d_x,) = self.position.backward(d_x, cache.position)  # x = x + P[:Lt]
        return self.token_embedding.backward(d_x, cache.token_embedding)  # x = E[ids]


class TaskHeadCache(NamedTuple):
    classifier: ops.LinearCache
    batch: int


class TaskHead(Module):
    """What belongs to one task alone: its ``num_queries`` learned query vectors and its classifier.

    Parameters: ``queries (Nq, d_model)``, initialised N(0, 1) (the decoder's first sub-layer
    normalises them, pre-LN); ``classifier`` ``Linear(Nq · d_model, num_classes)`` reads the
    decoder's outputs at the task's queries, side by side.
    """

    def __init__(
        self,
        num_queries: int,
        d_model: int,
        num_classes: int,
        *,
        dtype: object = np.float64,
        rng: RngLike = None,
    ) -> None:
        dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        self.num_queries = positive_int("num_queries", num_queries)
        self.queries = Parameter(gen.standard_normal((self.num_queries, d_model)).astype(dtype))
        self.classifier = Linear(
            self.num_queries * d_model, positive_int("num_classes", num_classes), dtype=dtype, rng=gen
        )

    def inputs(self, batch: int) -> np.ndarray:
        """``(batch, Nq, d_model)``: the task's queries, the same for every row (the decoder's input)."""
        return np.broadcast_to(self.queries.data, (batch, *self.queries.shape)).copy()

    def inputs_backward(self, d_inputs: np.ndarray) -> None:
        """Backward of :meth:`inputs`: every row used the same queries, so their gradient is the sum."""
        self.queries.grad += d_inputs.sum(axis=0)  # x[b] = queries for every b

    def forward(self, h: np.ndarray) -> tuple[np.ndarray, TaskHeadCache]:
        """``h (B, Nq, d_model)`` the decoder's output -> ``logits (B, num_classes)``."""
        B = h.shape[0]
        logits, c = self.classifier.forward(h.reshape(B, -1))  # logits = [h_1 ; … ; h_Nq] W + b
        return logits, TaskHeadCache(c, B)

    def backward(self, d_logits: np.ndarray, cache: TaskHeadCache) -> tuple[np.ndarray]:
        """``d_logits (B, num_classes)`` -> ``(d_h (B, Nq, d_model),)``."""
        expect_cache(cache, TaskHeadCache, "TaskHead")
        (d_flat,) = self.classifier.backward(d_logits, cache.classifier)
        return (d_flat.reshape(cache.batch, self.num_queries, -1),)  # the reshape of forward, undone


class TaskHeads(Module):
    """One :class:`TaskHead` per task, as attributes named by the tasks (``heads.vqa.queries`` …)."""

    def __init__(self, heads: Mapping[str, TaskHead]) -> None:
        for name, head in heads.items():
            setattr(self, name, head)

    def __getitem__(self, task: str) -> TaskHead:
        return getattr(self, task)


class DecodeCache(NamedTuple):
    task: str
    read_text: bool  # whether the queries were given the text summary
    decoder: DecoderCache
    head: TaskHeadCache


class UniTCache(NamedTuple):
    task: str
    visual_index: np.ndarray  # (B,) the image or clip of each row
    visual_shape: tuple[int, ...]  # the encoder's output shape, (S, P, D) or (S, T, N, D)
    visual: object  # ImageEncoderCache or VideoEncoderCache
    text: TextEncoderCache
    types: EmbeddingCache
    decode: DecodeCache

    @property
    def self_weights(self) -> list[np.ndarray]:
        """Every decoder layer's attention among the task queries, each ``(B, H, Nq, Nq)``."""
        return self.decode.decoder.weights

    @property
    def cross_weights(self) -> list[np.ndarray]:
        """Every decoder layer's ``(B, H, Nq, Lv + Lt)``: where each task query looked in the memory
        (the ``Lv`` visual tokens first, then the ``Lt`` text tokens)."""
        return self.decode.decoder.cross_weights


class UniT(Module):
    """A unified Transformer for several tasks: encoders per modality, a shared decoder, task queries.

    See the module docstring for the computation and what is shared.  Submodules: ``image``
    :class:`ImageEncoder` and/or ``video`` :class:`~mmt_numpy.nn.video.VideoEncoder` (only the
    modalities some task reads), ``text`` :class:`TextEncoder`, ``types``
    :class:`~mmt_numpy.nn.ModalityEmbedding` (image, video, text), ``decoder``
    :class:`~mmt_numpy.nn.TransformerDecoder` (pre-LN, final norm), ``heads``
    (:class:`TaskHeads`, one :class:`TaskHead` per task).

    Args:
        tasks: task name (a Python identifier) -> ``(modality, num_classes)``, modality
            ``"image"`` or ``"video"``; e.g. ``{"vqa": ("image", 6), "itm": ("image", 2)}``.
        vocab_size: token ids of the text encoder (one vocabulary for every task's texts).
        max_text_len: the longest text accepted.
        image_patch_dim, image_grid: each image patch's width and the ``(rows, columns)`` grid
            (needed when a task reads images).
        video_patch_dim, video_grid, max_frames: the same for clips of at most ``max_frames``
            frames (needed when a task reads video).
        d_model, num_heads, d_ff: the width, heads and feed-forward width of every stack.
        encoder_layers: depth of each modality's encoder; ``decoder_layers``: of the decoder.
        num_queries: Nq, the learned queries of each task.
        video_attention: the video encoder's space-time attention, ``"divided"`` or ``"joint"``.
        queries_read_text: add the text encoder's ``[CLS]`` output to every task query (the
            decoder's input), so the first cross-attention already knows what the text asks
            for; False is UniT's decoder input exactly, the queries alone (see the module docstring).
        dtype, rng: parameter dtype and the initialisation's generator.
    """

    def __init__(
        self,
        tasks: Mapping[str, tuple[str, int]],
        vocab_size: int,
        max_text_len: int,
        *,
        image_patch_dim: int | None = None,
        image_grid: tuple[int, int] | None = None,
        video_patch_dim: int | None = None,
        video_grid: tuple[int, int] | None = None,
        max_frames: int | None = None,
        d_model: int = 32,
        num_heads: int = 4,
        d_ff: int = 64,
        encoder_layers: int = 1,
        decoder_layers: int = 2,
        num_queries: int = 2,
        video_attention: str = "divided",
        queries_read_text: bool = True,
        dtype: object = np.float64,
        rng: RngLike = None,
    ) -> None:
        if not isinstance(tasks, Mapping) or not tasks:
            raise ValueError(
                f"tasks: expected a non-empty mapping name -> (modality, num_classes), got {tasks!r}"
            )
        self.tasks: dict[str, TaskSpec] = {}
        for name, spec in tasks.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"tasks: expected task names that are Python identifiers, got {name!r}")
            if not isinstance(spec, (tuple, list)) or len(spec) != 2 or spec[0] not in VISUAL_MODALITIES:
                raise ValueError(
                    f"tasks[{name!r}]: expected (modality, num_classes) with modality one of "
                    f"{VISUAL_MODALITIES}, got {spec!r}"
                )
            self.tasks[name] = TaskSpec(spec[0], positive_int(f"tasks[{name!r}] num_classes", spec[1]))
        self.dtype = as_float_dtype(dtype)
        self.d_model = D = positive_int("d_model", d_model)
        self.queries_read_text = bool(queries_read_text)
        gen = as_generator(rng)
        used = {spec.modality for spec in self.tasks.values()}
        for modality, needed in (
            ("image", (image_patch_dim, image_grid)),
            ("video", (video_patch_dim, video_grid, max_frames)),
        ):
            if modality in used and any(v is None for v in needed):
                names = (
                    "image_patch_dim, image_grid"
                    if modality == "image"
                    else ("video_patch_dim, video_grid, max_frames")
                )
                raise ValueError(f"{names}: expected values, since a task reads {modality}; got {needed}")
        sizes = dict(dtype=self.dtype, rng=gen)
        self.image = (
            ImageEncoder(image_patch_dim, image_grid, D, num_heads, d_ff, encoder_layers, **sizes)
            if "image" in used
            else None
        )
        self.video = (
            VideoEncoder(
                video_patch_dim,
                video_grid,
                max_frames,
                D,
                num_heads,
                d_ff,
                encoder_layers,
                attention=video_attention,
                **sizes,
            )  # fmt: skip
            if "video" in used
            else None
        )
        self.text = TextEncoder(vocab_size, max_text_len, D, num_heads, d_ff, encoder_layers, **sizes)
        self.types = ModalityEmbedding(3, D, **sizes)
        self.decoder = TransformerDecoder(
            D, num_heads, d_ff, decoder_layers, norm_first=True, final_norm=True, **sizes
        )
        self.heads = TaskHeads(
            {name: TaskHead(num_queries, D, spec.num_classes, **sizes) for name, spec in self.tasks.items()}
        )

    def spec(self, task: object) -> TaskSpec:
        """The :class:`TaskSpec` of ``task``; a ValueError listing the known tasks otherwise."""
        if not isinstance(task, str) or task not in self.tasks:
            raise ValueError(f"task: expected one of {', '.join(self.tasks)}, got {task!r}")
        return self.tasks[task]

    def parameter_groups(self) -> dict[str, list[Parameter]]:
        """The parameters by who uses them: ``"shared"`` (text encoder, types, decoder), one group
        per modality encoder (``"image"``, ``"video"``) and one per task (``"head.<task>"``).

        A step on task t changes only ``shared``, its modality's group and ``head.t``; an
        optimiser per group (as :mod:`mmt_numpy.tasks.unit` keeps) leaves the others alone,
        where one Adam over everything would still move them by their old momentum.
        """
        groups = {"shared": self.text.parameters() + self.types.parameters() + self.decoder.parameters()}
        for modality in VISUAL_MODALITIES:
            encoder = getattr(self, modality)
            if encoder is not None:
                groups[modality] = encoder.parameters()
        for task in self.tasks:
            groups[f"head.{task}"] = self.heads[task].parameters()
        return groups

    def groups_of(self, task: str) -> tuple[str, ...]:
        """The names of the :meth:`parameter_groups` a step on ``task`` sends gradients into."""
        return ("shared", self.spec(task).modality, f"head.{task}")

    def _check(
        self, task: str, ids: object, visual: object, visual_index: object
    ) -> tuple[TaskSpec, np.ndarray]:
        spec = self.spec(task)
        int_ids("ids", ids, self.text.token_embedding.num_embeddings, "the text encoder's word table")
        if ids.ndim != 2:
            raise ValueError(f"ids: expected a 2-D integer array (B, Lt), got shape {ids.shape}")
        ndim = 3 if spec.modality == "image" else 4
        layout = "(S, P, patch_dim)" if ndim == 3 else "(S, T, N, patch_dim)"
        if not isinstance(visual, np.ndarray) or visual.ndim != ndim:
            raise ValueError(
                f"visual: task {task!r} reads {spec.modality}, expected {layout}, "
                f"got {getattr(visual, 'shape', type(visual).__name__)}"
            )
        B, S = ids.shape[0], visual.shape[0]
        index = np.arange(B) if visual_index is None else np.asarray(visual_index)
        if index.shape != (B,) or not np.issubdtype(index.dtype, np.integer):
            raise ValueError(
                f"visual_index: expected {B} integers (the {spec.modality} of each row), "
                f"got shape {index.shape}, {index.dtype}"
            )
        if B and (index.min() < 0 or index.max() >= S):
            raise ValueError(
                f"visual_index: expected values in [0, {S}) ({S} inputs in visual), "
                f"got {index.min()} .. {index.max()}"
            )
        return spec, index

    def forward(
        self,
        ids: np.ndarray,
        visual: np.ndarray,
        *,
        task: str,
        text_lengths: np.ndarray | None = None,
        visual_index: np.ndarray | None = None,
    ) -> tuple[np.ndarray, UniTCache]:
        """One task's logits for B texts, each about one of S images or clips.

        Args:
            ids: ``(B, Lt)`` token ids (a question, or a caption to match).
            visual: image patches ``(S, P, patch_dim)`` or clip patches ``(S, T, N, patch_dim)``,
                as the task's modality; each is encoded once however many rows read it.
            task: one of ``self.tasks``.
            text_lengths: ``(B,)`` real tokens per row (the padding is masked as keys), or None.
            visual_index: ``(B,)`` integers in ``[0, S)``, the image or clip of each row;
                default ``arange(B)`` (S = B).

        Returns:
            ``logits (B, num_classes)`` and the cache (``cache.cross_weights``: each decoder
            layer's ``(B, H, Nq, Lv + Lt)``).
        """
        spec, index = self._check(task, ids, visual, visual_index)
        B, Lt = ids.shape
        keep_text = None if text_lengths is None else lengths_mask("text_lengths", text_lengths, B, Lt)
        encoder = getattr(self, spec.modality)
        v, c_visual = encoder.forward(visual)  # (S, P, D) or (S, T, N, D): every image or clip once
        flat = v.reshape(v.shape[0], -1, self.d_model)  # (S, Lv, D); token t·N + n is patch n of frame t
        t, c_text = self.text.forward(ids, keep_text)  # (B, Lt, D)
        Lv = flat.shape[1]
        modality = np.concatenate(
            [np.full(Lv, IMAGE if spec.modality == "image" else VIDEO), np.full(Lt, TEXT)]
        )
        memory, c_types = self.types.forward(np.concatenate([flat[index], t], axis=1), modality)
        memory_mask = None
        if keep_text is not None:  # the visual tokens are all real; the text's padding is not a key
            memory_mask = np.concatenate([np.ones((B, 1, 1, Lv), dtype=bool), keep_text], axis=3)
        logits, c_decode = self.decode(memory, task, memory_mask, t[:, 0] if self.queries_read_text else None)
        return logits, UniTCache(task, index, v.shape, c_visual, c_text, c_types, c_decode)

    def decode(
        self,
        memory: np.ndarray,
        task: str,
        memory_mask: np.ndarray | None = None,
        text_summary: np.ndarray | None = None,
    ) -> tuple[np.ndarray, DecodeCache]:
        """The shared decoder and the task's head over a memory: ``memory (B, Lm, D)`` -> logits.

        The decoder's input is the task's ``Nq`` queries for every row, plus ``text_summary
        (B, D)`` (the text encoder's output at ``[CLS]``) on each query when given.
        ``memory_mask`` is key padding ``(B, 1, 1, Lm)`` or None.  Returns ``(logits (B, C), cache)``.
        """
        head = self.heads[task]
        x = head.inputs(memory.shape[0])  # (B, Nq, D)
        if text_summary is not None:
            x = x + text_summary[:, None, :]  # x = queries + t[:, 0], every query
        h, c_decoder = self.decoder.forward(x, memory, memory_mask=memory_mask)  # h = decoder(x, memory)
        logits, c_head = head.forward(h)  # logits = head(h)
        return logits, DecodeCache(task, text_summary is not None, c_decoder, c_head)

    def decode_backward(self, d_logits: np.ndarray, cache: DecodeCache) -> tuple[np.ndarray, ...]:
        """``d_logits (B, C)`` -> ``(d_memory,)``, or ``(d_memory, d_text_summary (B, D))`` when the
        forward was given a text summary; adds into the decoder's and the task head's parameters."""
        expect_cache(cache, DecodeCache, "UniT.decode")
        head = self.heads[cache.task]
        (d_h,) = head.backward(d_logits, cache.head)  # logits = head(h)
        d_x, d_memory = self.decoder.backward(d_h, cache.decoder)  # h = decoder(x, memory)
        head.inputs_backward(d_x)  # x = queries (+ summary): the queries' share, every row
        if not cache.read_text:
            return (d_memory,)
        return d_memory, d_x.sum(axis=1)  # x = queries + summary on each of the Nq queries

    def backward(self, d_logits: np.ndarray, cache: UniTCache) -> tuple[np.ndarray]:
        """``d_logits (B, num_classes)`` -> ``(d_visual,)`` shaped as the forward's ``visual``.

        Adds into the shared parameters, the task's modality encoder and the task's head only.
        """
        expect_cache(cache, UniTCache, "UniT")
        spec = self.tasks[cache.task]
        B = len(cache.visual_index)
        grad_output(d_logits, (B, spec.num_classes), self.dtype, "d_logits")
        d_memory, *d_summary = self.decode_backward(
            d_logits, cache.decode
        )  # logits = decode(memory, t[:, 0])
        (d_memory,) = self.types.backward(d_memory, cache.types)  # memory = type([v[index] ; t])
        S, Lv = cache.visual_shape[0], int(np.prod(cache.visual_shape[1:-1]))
        d_text = d_memory[:, Lv:].copy()
        if d_summary:
            d_text[:, 0] += d_summary[0]  # the decoder's input also read t[:, 0]
        self.text.backward(d_text, cache.text)  # t = text(ids)
        # [v[index] ; ..]: each image or clip collects the gradients of every row that read it, as a
        # (S, B) one-hot matrix times (B, Lv·D); ``d[index] += rows`` would keep one row of a repeat.
        one_hot = (cache.visual_index[None, :] == np.arange(S)[:, None]).astype(self.dtype)
        d_flat = one_hot @ d_memory[:, :Lv].reshape(B, -1)
        encoder = getattr(self, spec.modality)
        return encoder.backward(d_flat.reshape(cache.visual_shape), cache.visual)  # v = encoder(visual)

    def loss_backward(self, batches: Mapping[str, TaskBatch]) -> dict[str, float]:
        """One multi-task step's gradients: for each task in ``batches``, the mean cross-entropy of
        its rows, backward added into ``.grad`` (the losses summed).  Call ``zero_grad`` first.

        Returns ``{task: loss}``.  The tasks not in ``batches`` get no gradient at all, nor does
        a modality encoder that no task of the step reads.
        """
        if not isinstance(batches, Mapping) or not batches:
            raise ValueError(f"batches: expected a non-empty mapping task -> TaskBatch, got {batches!r}")
        losses = {}
        for task, batch in batches.items():
            self.spec(task)
            if not isinstance(batch, TaskBatch):
                raise TypeError(f"batches[{task!r}]: expected a TaskBatch, got {type(batch).__name__}")
            logits, cache = self.forward(
                batch.ids,
                batch.visual,
                task=task,
                text_lengths=batch.lengths,
                visual_index=batch.visual_index,
            )
            loss, loss_cache = ops.cross_entropy_forward(logits, batch.targets)
            self.backward(ops.cross_entropy_backward(1.0, loss_cache), cache)
            losses[task] = float(loss)
        return losses

    def predict(self, batch: TaskBatch, task: str) -> np.ndarray:
        """``(B,)`` the arg-max class of every row of ``batch`` for ``task``."""
        return self(
            batch.ids, batch.visual, task=task, text_lengths=batch.lengths, visual_index=batch.visual_index
        ).argmax(-1)

    def __repr__(self) -> str:
        tasks = ", ".join(f"{k}: {v.modality}/{v.num_classes}" for k, v in self.tasks.items())
        return f"UniT(tasks={{{tasks}}}, d_model={self.d_model}, decoder_layers={self.decoder.num_layers})"


class TaskBatch(NamedTuple):
    """One task's minibatch: B texts about S images or clips, and the class of each row.

    ``ids (B, Lt)``, ``visual`` ``(S, P, patch_dim)`` or ``(S, T, N, patch_dim)``,
    ``targets (B,)``, ``lengths (B,)`` or None, ``visual_index (B,)`` or None (S = B).
    """

    ids: np.ndarray
    visual: np.ndarray
    targets: np.ndarray
    lengths: np.ndarray | None = None
    visual_index: np.ndarray | None = None
