"""Retrieval from long texts: a pass key hidden in filler, and a sentence that describes an image.

The article's title asks how a model can read long texts (如何提高长文本阅读能力).  Reading
here means retrieval: the answer sits far from the question, and a model must find it
however long the text is.  Two tasks, each a sequence of L tokens ending in ``"?"`` whose
answer is one of the :data:`CODES` (chance = 1/16):

* **pass key** (Mohtashami & Jaggi, 2023, in miniature): filler words, among them code
  words as distractors, and exactly once the phrase ``key <code>``; the answer is that code.
  A model must find the one code preceded by ``key``, which takes a relation between
  neighbouring positions (the previous token) and then a look-up across the whole text.
* **image** (the multimodal variant): a text of sentences ``<shape> <colour> <code> .``
  among filler, then one image token (a rendered shape, :mod:`mmt_numpy.data.scenes`, as
  one ViT patch) and ``"?"``, as a user hands over a long document, then a picture and a
  question.  Exactly one sentence describes the image (its shape and its colour; every
  other sentence names another colour), and the answer is its code.  A model must match
  the picture's colour to the words and read the code after them.

Every sample records ``answer_position``, the index of the answer's token in the sequence,
so tests can check the answer is where the generator claims and plots can show how far it
was from the question.  Everything is deterministic per seed.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mmt_numpy.data.scenes import COLOURS, SHAPES, Scene, patchify, render
from mmt_numpy.validate import positive_int

FILLER = (
    "the grass is tall and the sky is clear . the sun is warm here , we go there and back again . "
    "a long river runs past an old town"
).split()
CODES = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa"
).split()
KEY, QUESTION = "key", "?"
VOCAB = tuple(dict.fromkeys([*FILLER, *CODES, *COLOURS, *SHAPES, KEY, QUESTION]))
TOKEN_ID = {word: i for i, word in enumerate(VOCAB)}
CODE_IDS = np.array([TOKEN_ID[c] for c in CODES])
FILLER_IDS = np.array([TOKEN_ID[w] for w in dict.fromkeys(FILLER)])
TASKS = ("passkey", "image")
IMAGE_TOKENS = 1  # the image is one 8 x 8 patch, one token
PATCH_DIM = 8 * 8 * 3
DISTRACTOR_RATE = 0.15  # share of filler positions that hold a code word (pass key task)
SENTENCE_EVERY = 12  # the image task has about one sentence per this many text tokens


class LongTextBatch(NamedTuple):
    """N samples of one length L (image token included)."""

    ids: np.ndarray  # (N, L_text) int64 token ids of the text, ending in "?"
    patches: np.ndarray | None  # (N, 1, PATCH_DIM) the image token (image task), else None
    answers: np.ndarray  # (N,) int64 index into CODES
    answer_position: np.ndarray  # (N,) the answer token's index in the sequence (the image comes after it)

    @property
    def length(self) -> int:
        return self.ids.shape[1] + (0 if self.patches is None else self.patches.shape[1])


def decode(ids: np.ndarray) -> str:
    """The words of a row of token ids, for reading a sample."""
    return " ".join(VOCAB[i] for i in ids)


def _passkey(rng: np.random.Generator, L: int) -> tuple[np.ndarray, int, int]:
    ids = rng.choice(FILLER_IDS, size=L)
    distractors = rng.random(L) < DISTRACTOR_RATE
    ids[distractors] = rng.choice(CODE_IDS, size=int(distractors.sum()))
    answer = int(rng.integers(len(CODES)))
    at = int(rng.integers(1, L - 1))  # the code's position; "key" sits just before it
    ids[at - 1], ids[at] = TOKEN_ID[KEY], CODE_IDS[answer]
    ids[-1] = TOKEN_ID[QUESTION]
    return ids, answer, at


def _image(rng: np.random.Generator, L_text: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    colours = list(COLOURS)
    colour, shape = colours[rng.integers(len(colours))], SHAPES[rng.integers(len(SHAPES))]
    patch = patchify(render(Scene(((shape, colour, 0, 0),)), rng, grid=1, cell=8)[None], 8)[0]  # (1, 192)
    ids = rng.choice(FILLER_IDS, size=L_text)
    ids[-1] = TOKEN_ID[QUESTION]
    # Sentence slots of 4 tokens on a grid, so that sentences never overlap; one is the target.
    slots = (L_text - 1) // 4
    n_sentences = max(1, min(slots, round(L_text / SENTENCE_EVERY)))
    chosen = rng.choice(slots, size=n_sentences, replace=False) * 4
    others = [(c, s) for c in colours for s in SHAPES if c != colour]
    answer = int(rng.integers(len(CODES)))
    target = int(rng.integers(n_sentences))
    for n, start in enumerate(chosen):
        c, s = (colour, shape) if n == target else others[rng.integers(len(others))]
        code = answer if n == target else int(rng.integers(len(CODES)))
        ids[start : start + 4] = [TOKEN_ID[s], TOKEN_ID[c], CODE_IDS[code], TOKEN_ID["."]]
    return ids, patch, answer, int(chosen[target]) + 2


def make_longtext_batch(task: str, length: int, n: int, seed: int) -> LongTextBatch:
    """``n`` samples of ``task`` (``"passkey"`` or ``"image"``), each ``length`` tokens long.

    Args:
        task: one of :data:`TASKS`.
        length: tokens per sample, the image token included (at least 8).  The sequence a
            model reads is ``ids[:-1]``, the image token(s), then ``ids[-1]`` (``"?"``).
        n: number of samples.
        seed: the generator's seed (a different seed, different samples).
    """
    if task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
    length = positive_int("length", length)
    n = positive_int("n", n)
    if length < 8:
        raise ValueError(
            f"length: expected at least 8 tokens (a sentence, filler and the question), got {length}"
        )
    rng = np.random.default_rng(seed)
    if task == "passkey":
        rows = [_passkey(rng, length) for _ in range(n)]
        ids, answers, positions = (np.array(x) for x in zip(*rows, strict=True))
        return LongTextBatch(ids.astype(np.int64), None, answers.astype(np.int64), positions.astype(np.int64))
    rows = [_image(rng, length - IMAGE_TOKENS) for _ in range(n)]
    ids, patches, answers, positions = (np.array(x) for x in zip(*rows, strict=True))
    return LongTextBatch(ids.astype(np.int64), patches, answers.astype(np.int64), positions.astype(np.int64))
