"""The toy VQA dataset of §6.1 and the image–caption pairs of §2.2, split by scene."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mmt_numpy.data.scenes import COLOURS, Scene, caption, patchify, questions, random_scene, render
from mmt_numpy.data.tokenizer import TOKENIZER
from mmt_numpy.validate import positive_int

ANSWERS = (*COLOURS, "yes", "no")  # the classes of the VQA task, in this order
QUESTION_TYPES = ("colour", "shape", "yes/no")
SHAPE_NAMES = ("circle", "rectangle", "square", "triangle")  # the shapes of the toy scenes and of easy-VQA


def question_type(answer: str) -> str:
    """What kind of question an answer belongs to: ``"yes/no"``, ``"shape"`` or ``"colour"``.

    The VQA datasets here ask three kinds of question and every answer belongs to one kind
    (a colour never answers "what shape"), so the answer tells the kind apart.
    """
    if answer in ("yes", "no"):
        return "yes/no"
    return "shape" if answer in SHAPE_NAMES else "colour"


@dataclass
class ImageQuestions:
    """Questions about images, one row per question (several questions share an image).

    The common shape of every VQA dataset here (the toy scenes of :class:`VQADataset`, the
    easy-VQA images of :mod:`mmt_numpy.data.easy_vqa`), which is all that training needs.

    Attributes:
        images: ``(S, H, W, 3)`` float, the S distinct images, RGB in [0, 1].
        image_index: ``(N,)`` which image each question is about.
        ids: ``(N, Lt)`` int64 question token ids (``[CLS]`` first, padded).
        lengths: ``(N,)`` int64 number of real tokens in each question.
        answers: ``(N,)`` int64 index into the dataset's answer list.
        patch: the patch side used by :meth:`patches`.
    """

    images: np.ndarray
    image_index: np.ndarray
    ids: np.ndarray
    lengths: np.ndarray
    answers: np.ndarray
    patch: int

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def grid(self) -> tuple[int, int]:
        """Patches per column and per row, ``(H/patch, W/patch)``."""
        return self.images.shape[1] // self.patch, self.images.shape[2] // self.patch

    def image_patches(self, dtype: object = np.float64) -> np.ndarray:
        """``(S, num_patches, patch*patch*3)``: the patch tokens of each image, once per image.

        Index it with ``image_index[rows]`` for a minibatch: the per-question copy of
        :meth:`patches` would hold each image once per question asked about it.
        """
        return patchify(self.images, self.patch).astype(dtype)

    def patches(self, dtype: object = np.float64) -> np.ndarray:
        """``(N, num_patches, patch*patch*3)``: the patch tokens of each question's image."""
        return self.image_patches(dtype)[self.image_index]


@dataclass
class VQADataset(ImageQuestions):
    """The toy VQA questions of §6.1 about rendered scenes (see :class:`ImageQuestions`).

    Attributes (besides those of :class:`ImageQuestions`, where ``images`` are float64 and
    ``answers`` index ``ANSWERS``):
        scenes: the S scenes drawn in ``images``.
        key_shape: ``(N,)`` str, the shape each question names first.
    """

    scenes: list[Scene]
    key_shape: np.ndarray

    def key_patch(self) -> np.ndarray:
        """``(N,)`` the index of the patch holding each question's key shape (reading order)."""
        gw = self.grid[1]
        out = np.empty(len(self), dtype=np.int64)
        for n, (i, s) in enumerate(zip(self.image_index, self.key_shape, strict=True)):
            _, _, row, col = self.scenes[i].find(str(s))
            out[n] = row * gw + col  # with patch == cell, one shape is one patch
        return out


def _make_scenes(
    num_scenes: int, rng: np.random.Generator, grid: int, exclude: set[Scene] | None = None
) -> list[Scene]:
    """``num_scenes`` distinct scenes, none of them in ``exclude``."""
    seen = set(exclude or ())
    scenes: list[Scene] = []
    attempts = 0
    while len(scenes) < num_scenes:
        attempts += 1
        if attempts > 50 * num_scenes + 1000:
            raise ValueError(f"num_scenes: cannot draw {num_scenes} distinct scenes on a {grid}x{grid} board")
        scene = random_scene(rng, grid)
        if scene not in seen:
            seen.add(scene)
            scenes.append(scene)
    return scenes


def make_vqa_dataset(
    scenes: Sequence[Scene],
    rng: np.random.Generator,
    *,
    grid: int = 3,
    cell: int = 8,
    patch: int | None = None,
    length: int = 9,
) -> VQADataset:
    """Render ``scenes`` and ask every question of :func:`questions` about each.

    Args:
        scenes: S scenes on a ``grid x grid`` board.
        rng: the generator of the rendering jitter.
        grid, cell: board size in cells and cell size in pixels (images are ``grid*cell`` square).
        patch: patch side for :meth:`VQADataset.patches`; default ``cell``, one board cell per
            patch (``VQADataset.key_patch`` assumes that).
        length: padded question length in tokens, ``[CLS]`` included.
    """
    patch = cell if patch is None else patch
    images = np.stack([render(s, rng, grid, cell) for s in scenes])
    rows = [(i, q, a, k) for i, s in enumerate(scenes) for q, a, k in questions(s)]
    ids, lengths = TOKENIZER.encode([q for _, q, _, _ in rows], length)
    return VQADataset(
        images=images,
        scenes=list(scenes),
        image_index=np.array([i for i, _, _, _ in rows], dtype=np.int64),
        ids=ids,
        lengths=lengths,
        answers=np.array([ANSWERS.index(a) for _, _, a, _ in rows], dtype=np.int64),
        key_shape=np.array([k for _, _, _, k in rows]),
        patch=patch,
    )


def make_vqa_splits(
    num_train_scenes: int, num_test_scenes: int, seed: int = 0, *, grid: int = 3, cell: int = 8
) -> tuple[VQADataset, VQADataset]:
    """Train and test VQA sets over disjoint scenes, deterministic per ``seed``.

    The test scenes are drawn after the training scenes and any scene already used for
    training is redrawn, so no (shapes, cells, colours) configuration is in both sets.
    """
    num_train_scenes = positive_int("num_train_scenes", num_train_scenes)
    num_test_scenes = positive_int("num_test_scenes", num_test_scenes)
    rng = np.random.default_rng(seed)
    train_scenes = _make_scenes(num_train_scenes, rng, grid)
    test_scenes = _make_scenes(num_test_scenes, rng, grid, exclude=set(train_scenes))
    train = make_vqa_dataset(train_scenes, rng, grid=grid, cell=cell)
    test = make_vqa_dataset(test_scenes, rng, grid=grid, cell=cell)
    return train, test


def make_caption_data(
    num_scenes: int, seed: int = 0, *, grid: int = 3, cell: int = 8, exclude: Sequence[Scene] = ()
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Scene]]:
    """Image–caption pairs for pre-training.

    Returns ``(patches (S, P, patch_dim), ids (S, Lt), lengths (S,), scenes)``.

    The patches have ``patch = cell``; the ids are the captions of :func:`caption`.

    ``exclude`` keeps given scenes (e.g. a VQA test set's) out of the pre-training data.
    """
    rng = np.random.default_rng(seed)
    scenes = _make_scenes(num_scenes, rng, grid, exclude=set(exclude))
    images = np.stack([render(s, rng, grid, cell) for s in scenes])
    ids, lengths = TOKENIZER.encode([caption(s) for s in scenes])
    return patchify(images, cell), ids, lengths, scenes
