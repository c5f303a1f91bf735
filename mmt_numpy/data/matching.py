"""Image–text matching over the toy scenes: does this caption describe this picture? (§2.2, §3.2)

Each scene gives two rows: its own caption (a match) and a caption that does not describe
it (no match), drawn half of the time in each of two ways:

* ``"other scene"``: the caption of another scene of the same set, a different string;
* ``"colour changed"``: the scene's own caption with one shape's colour replaced, so the
  caption differs from the truth in exactly one word and the model has to bind each
  colour to its shape (a bag of words present in the picture is not enough).

Labels: 1 = the caption matches, 0 = it does not.  Every label is recomputed from the
scenes in a test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mmt_numpy.data.scenes import COLOURS, Scene, caption
from mmt_numpy.data.tokenizer import TOKENIZER

MATCH_KINDS = ("match", "other scene", "colour changed")
CAPTION_TOKENS = 12  # [CLS] and the longest caption of three shapes: "a red square , a … and a … triangle"


def recolour(scene: Scene, rng: np.random.Generator) -> Scene:
    """``scene`` with one shape, drawn by ``rng``, given another colour (drawn too)."""
    objects = list(scene.objects)
    k = int(rng.integers(len(objects)))
    shape, colour, row, col = objects[k]
    others = [c for c in COLOURS if c != colour]
    objects[k] = (shape, others[int(rng.integers(len(others)))], row, col)
    return Scene(tuple(sorted(objects)))


@dataclass
class MatchingSet:
    """Caption–image pairs, two per image, and whether each caption matches.

    Attributes:
        image_index: ``(N,)`` the image (scene) of each row.
        ids: ``(N, CAPTION_TOKENS)`` int64 caption token ids (``[CLS]`` first, padded).
        lengths: ``(N,)`` real tokens per caption.
        labels: ``(N,)`` int64, 1 when the caption describes the image, else 0.
        kinds: ``(N,)`` str, one of :data:`MATCH_KINDS`.
        captions: the N caption strings.
    """

    image_index: np.ndarray
    ids: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    kinds: np.ndarray
    captions: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def make_matching_set(scenes: Sequence[Scene], rng: np.random.Generator) -> MatchingSet:
    """A match and a mismatch for every scene of ``scenes`` (at least two scenes)."""
    scenes = list(scenes)
    if len(scenes) < 2:
        raise ValueError(
            f"scenes: expected at least 2 scenes (a mismatch borrows another's), got {len(scenes)}"
        )
    rows: list[tuple[int, str, int, str]] = []
    for i, scene in enumerate(scenes):
        truth = caption(scene)
        rows.append((i, truth, 1, "match"))
        if rng.random() < 0.5:
            other = truth
            while other == truth:
                other = caption(scenes[int(rng.integers(len(scenes)))])
            rows.append((i, other, 0, "other scene"))
        else:
            rows.append((i, caption(recolour(scene, rng)), 0, "colour changed"))
    texts = [r[1] for r in rows]
    ids, lengths = TOKENIZER.encode(texts, CAPTION_TOKENS)
    return MatchingSet(
        image_index=np.array([r[0] for r in rows], dtype=np.int64),
        ids=ids,
        lengths=lengths,
        labels=np.array([r[2] for r in rows], dtype=np.int64),
        kinds=np.array([r[3] for r in rows]),
        captions=texts,
    )
