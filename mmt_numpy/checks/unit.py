"""Gradient checks of UniT (§3.2): the task-query decoder over a memory of two modalities, the
per-modality encoders, and the gather that lets several rows read one image or clip.

The UniT case is one multi-task step: a batch of an image task and a batch of a video task
through one model, both losses together, so every shared parameter (text encoder, type
vectors, decoder) must hold the sum of the two tasks' contributions, and each modality
encoder and each head its own task's alone.  Every input and every parameter in float64,
from parameters moved off their initial values; each task has B = 3 rows over S = 2 images
or clips (one read twice, so a gradient that kept one of the two readers fails), padded
texts (key padding in the text encoder and in the decoder's memory) and Nq = 2 queries over
Lv + Lt != Nq memory tokens.  The model is as small as a check allows (one layer per stack,
width 4): finite differences cost two forwards per parameter entry.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mmt_numpy.checks import Case, randn, randomize
from mmt_numpy.gradcheck import GradcheckReport, check_module
from mmt_numpy.nn.module import Module
from mmt_numpy.nn.unit import TaskHead, UniT, UniTCache
from mmt_numpy.validate import grad_output

ORDER = 55

IDS = np.array([[1, 2, 3, 4], [1, 5, 6, 0], [1, 7, 0, 0]])
LENGTHS = np.array([4, 3, 2])
INDEX = np.array([1, 0, 1])  # rows 0 and 2 read the same image / clip


def tiny_unit(seed: int = 110, decoder_layers: int = 1) -> UniT:
    """A two-task UniT small enough for finite differences: ``pictures`` reads 2x1-patch images,
    ``clips`` reads clips of 2 frames of 1x2 patches; vocabulary 8, texts of at most 4 tokens."""
    model = UniT(
        {"pictures": ("image", 3), "clips": ("video", 2)}, 8, 4, image_patch_dim=3, image_grid=(2, 1),
        video_patch_dim=3, video_grid=(1, 2), max_frames=2, d_model=4, num_heads=2, d_ff=4,
        decoder_layers=decoder_layers, num_queries=2, rng=seed,
    )  # fmt: skip
    return randomize(model, seed + 1)


class MixedStepCache(NamedTuple):
    pictures: UniTCache
    clips: UniTCache


class MixedStep(Module):
    """Both tasks of :func:`tiny_unit` in one step: ``(pictures logits, clips logits)``."""

    def __init__(self, model: UniT) -> None:
        self.model = model

    def forward(
        self, ids_pictures: np.ndarray, pictures: np.ndarray, ids_clips: np.ndarray, clips: np.ndarray
    ) -> tuple[tuple[np.ndarray, np.ndarray], MixedStepCache]:
        common = {"text_lengths": LENGTHS, "visual_index": INDEX}
        a, ca = self.model.forward(ids_pictures, pictures, task="pictures", **common)
        b, cb = self.model.forward(ids_clips, clips, task="clips", **common)
        return (a, b), MixedStepCache(ca, cb)

    def backward(self, d_out: tuple[np.ndarray, np.ndarray], cache: MixedStepCache) -> tuple[np.ndarray, ...]:
        if not isinstance(d_out, tuple) or len(d_out) != 2:
            raise TypeError(f"d_out: expected a pair (d_pictures, d_clips), got {type(d_out).__name__}")
        for d, c, name in zip(d_out, cache, ("d_out[0]", "d_out[1]"), strict=True):  # both before either adds
            grad_output(
                d, (len(c.visual_index), self.model.tasks[c.task].num_classes), self.model.dtype, name
            )
        (d_pictures,) = self.model.backward(d_out[0], cache.pictures)
        (d_clips,) = self.model.backward(d_out[1], cache.clips)  # adds on top: the shared parts sum
        return d_pictures, d_clips


def mixed_step_case() -> GradcheckReport:
    inputs = {"ids_pictures": IDS, "pictures": randn(112, 2, 2, 3), "ids_clips": IDS[::-1].copy(),
              "clips": randn(113, 2, 2, 2, 3)}  # fmt: skip
    return check_module(MixedStep(tiny_unit()), inputs, name="UniT (image task + video task, one step)")


def task_head_case() -> GradcheckReport:
    """A task's head alone: the classifier over its Nq = 3 decoder outputs side by side."""
    head = randomize(TaskHead(3, 4, 5, rng=114), 115)
    return check_module(head, {"h": randn(116, 2, 3, 4)}, name="TaskHead (3 queries, 5 classes)")


CASES = [
    Case("TaskHead (3 queries, 5 classes)", task_head_case),
    Case("UniT (image task + video task, one step)", mixed_step_case),
]
