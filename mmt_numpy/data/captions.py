"""Image–caption pairs for image captioning (§6.2): one canonical caption per scene, start and end tokens.

Every scene has exactly one right caption, :func:`~mmt_numpy.data.scenes.caption`: the
shapes named with their colours from left to right (top to bottom within a column),
``"a red square , a blue circle and a green triangle"``.  A generated caption is scored by
exact match (equal to it, word for word) and by corpus BLEU-4 (:mod:`mmt_numpy.bleu`).

A decoder needs two tokens the question tokenizer lacks: ``[BOS]``, the start token fed
before the first word, and ``[EOS]``, the token it emits to say it is done.
:class:`CaptionTokenizer` appends them *after* the vocabulary of
:data:`~mmt_numpy.data.tokenizer.TOKENIZER`, so every existing id keeps its value (the seeded
models of notebooks 07 and 08 draw their embedding tables from ``len(TOKENIZER)``, which is
unchanged too).

Teacher forcing (:func:`teacher_forcing`): a caption ``[BOS] w1 … wn [EOS]`` becomes the
decoder's input ``[BOS] w1 … wn`` and the target ``w1 … wn [EOS]``, shifted by one, so
position t is trained to predict token t+1 from tokens 0 … t.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mmt_numpy.data.scenes import Scene, caption, patchify, render
from mmt_numpy.data.tokenizer import IGNORE_INDEX, PAD_ID, WORDS, Tokenizer
from mmt_numpy.data.vqa import _make_scenes
from mmt_numpy.validate import positive_int

BOS, EOS = "[BOS]", "[EOS]"
CAPTION_LENGTH = 13  # [BOS] + the longest caption (three shapes: 11 words) + [EOS]


class CaptionTokenizer(Tokenizer):
    """The question tokenizer's vocabulary followed by ``[BOS]`` and ``[EOS]``.

    ``encode`` writes ``[BOS] w1 … wn [EOS]`` and pads with ``[PAD]`` (id 0); ``decode``
    drops ``[BOS]`` and stops at ``[EOS]`` or ``[PAD]``.  Ids below
    :attr:`~mmt_numpy.data.tokenizer.Tokenizer.num_special` and the two appended ids are
    special; ``bos_id``/``eos_id``/``pad_id`` name them.
    """

    def __init__(self, words: Sequence[str] = WORDS) -> None:
        super().__init__([*words, BOS, EOS])
        self.bos_id, self.eos_id, self.pad_id = self.ids[BOS], self.ids[EOS], PAD_ID

    def encode(self, texts: Sequence[str], length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Token ids ``(N, length)`` (``[BOS] … [EOS]``, ``[PAD]`` after) and lengths ``(N,)`` with both ends.

        Args:
            texts: N captions of space-separated words; an unknown word becomes ``[UNK]``.
            length: the padded length; default the longest.  A caption that does not fit
                raises ValueError.
        """
        ids, lengths = super().encode(texts)  # [CLS] w1 … wn [PAD] …
        N, L = ids.shape
        length = L + 1 if length is None else positive_int("length", length)
        if L + 1 > length:
            raise ValueError(
                f"length: expected at least {L + 1} (longest caption with [BOS] and [EOS]), got {length}"
            )
        out = np.full((N, length), self.pad_id, dtype=np.int64)
        out[:, :L] = ids
        out[:, 0] = self.bos_id  # [CLS] -> [BOS]
        out[np.arange(N), lengths] = self.eos_id  # the first [PAD] -> [EOS]
        return out, lengths + 1

    def decode(self, ids: np.ndarray) -> list[str]:
        """``ids (N, L)`` -> N strings, without ``[BOS]``, stopping at the first ``[EOS]`` or ``[PAD]``."""
        return [" ".join(words) for words in self.words(ids)]

    def words(self, ids: np.ndarray) -> list[list[str]]:
        """``ids (N, L)`` -> N token lists (what :func:`mmt_numpy.bleu.corpus_bleu` scores)."""
        ids = np.asarray(ids)
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"ids: expected a 2-D integer array (N, L), got shape {ids.shape}, {ids.dtype}")
        out = []
        for row in ids.tolist():
            words = []
            for i in row:
                if i in (self.eos_id, self.pad_id):
                    break
                if i != self.bos_id:
                    words.append(self.vocab[i])
            out.append(words)
        return out


CAPTION_TOKENIZER = CaptionTokenizer()
BOS_ID, EOS_ID = CAPTION_TOKENIZER.bos_id, CAPTION_TOKENIZER.eos_id


@dataclass
class CaptionDataset:
    """Scenes, their images and their captions, one row per scene.

    Attributes:
        images: ``(S, H, W, 3)`` float64 in [0, 1].
        scenes: the S scenes.
        captions: the S canonical captions (strings).
        ids: ``(S, CAPTION_LENGTH)`` int64, ``[BOS] … [EOS]`` then ``[PAD]``.
        lengths: ``(S,)`` int64 tokens of each caption, both ends included.
        patch: the patch side used by :meth:`patches`.
    """

    images: np.ndarray
    scenes: list[Scene]
    captions: list[str]
    ids: np.ndarray
    lengths: np.ndarray
    patch: int

    def __len__(self) -> int:
        return len(self.scenes)

    @property
    def grid(self) -> tuple[int, int]:
        """Patches per column and per row, ``(H/patch, W/patch)``."""
        return self.images.shape[1] // self.patch, self.images.shape[2] // self.patch

    def patches(self, dtype: object = np.float64) -> np.ndarray:
        """``(S, num_patches, patch*patch*3)``: ViT patch tokens of every image."""
        return patchify(self.images, self.patch).astype(dtype)

    def head(self, n: int) -> CaptionDataset:
        """The first ``n`` scenes as a dataset of their own (views, no copies)."""
        n = positive_int("n", n)
        return CaptionDataset(
            self.images[:n], self.scenes[:n], self.captions[:n], self.ids[:n], self.lengths[:n], self.patch
        )

    def references(self) -> list[list[list[str]]]:
        """Each caption as the one reference of BLEU: ``[[words]]`` per scene."""
        return [[c.split()] for c in self.captions]


def make_caption_dataset(
    scenes: Sequence[Scene], rng: np.random.Generator, *, grid: int = 3, cell: int = 8
) -> CaptionDataset:
    """Render ``scenes`` (jitter drawn from ``rng``) and caption each; patches are one cell."""
    images = np.stack([render(s, rng, grid, cell) for s in scenes])
    captions = [caption(s) for s in scenes]
    ids, lengths = CAPTION_TOKENIZER.encode(captions, CAPTION_LENGTH)
    return CaptionDataset(images, list(scenes), captions, ids, lengths, cell)


def make_caption_splits(
    num_train_scenes: int, num_test_scenes: int, seed: int = 0, *, grid: int = 3, cell: int = 8
) -> tuple[CaptionDataset, CaptionDataset]:
    """Train and test caption sets over disjoint scenes, deterministic per ``seed``.

    As :func:`~mmt_numpy.data.make_vqa_splits`: no (shapes, cells, colours) configuration is
    in both sets, so every test caption describes a scene never seen in training.
    """
    num_train_scenes = positive_int("num_train_scenes", num_train_scenes)
    num_test_scenes = positive_int("num_test_scenes", num_test_scenes)
    rng = np.random.default_rng(seed)
    train_scenes = _make_scenes(num_train_scenes, rng, grid)
    test_scenes = _make_scenes(num_test_scenes, rng, grid, exclude=set(train_scenes))
    return (
        make_caption_dataset(train_scenes, rng, grid=grid, cell=cell),
        make_caption_dataset(test_scenes, rng, grid=grid, cell=cell),
    )


def teacher_forcing(ids: np.ndarray, pad_id: int = PAD_ID) -> tuple[np.ndarray, np.ndarray]:
    """Decoder inputs and targets of captions ``ids (N, L)`` (``[BOS] … [EOS] [PAD] …``).

    Returns:
        ``inputs (N, L−1) = ids[:, :−1]`` and ``targets (N, L−1) = ids[:, 1:]`` with every
        ``[PAD]`` target replaced by ``IGNORE_INDEX``, so padding is never trained on.
    """
    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer) or ids.shape[1] < 2:
        raise ValueError(
            f"ids: expected a 2-D integer array (N, L) with L >= 2 ([BOS] and at least one token), "
            f"got shape {ids.shape}, {ids.dtype}"
        )
    targets = ids[:, 1:].copy()
    targets[targets == pad_id] = IGNORE_INDEX
    return ids[:, :-1], targets
