"""What a VQA model reads, written beside its parameters so that a saved model can be used again.

A trained :class:`~mmt_numpy.nn.ImageTextModel` is only half of a usable model: its
inputs also depend on the words of its vocabulary, the names of its answers, the size of
the pictures, how they are shrunk and cut into patches, and the padded question length.
:class:`VQAInputs` holds those facts; :func:`saved_config` puts them, the model's sizes and
the training settings into the JSON configuration that ``save(..., config=)`` stores in
``params.npz``, and :func:`load_model` rebuilds the very model that made the file.  The
commands ``ask`` and ``explore --params`` use it.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import asdict, dataclass

import numpy as np

from mmt_numpy import data
from mmt_numpy.data import easy_vqa
from mmt_numpy.data.image_files import average_pool
from mmt_numpy.nn import ImageTextModel, load, load_config
from mmt_numpy.ops import softmax_forward

CONFIG_FORMAT = 1  # the version of the configuration's layout
DATASETS = ("toy", "easy-vqa")


@dataclass(frozen=True)
class VQAInputs:
    """How a VQA model turns a picture and a question into its inputs.

    Attributes:
        dataset: ``"toy"`` (the scenes of §6.1) or ``"easy-vqa"``.
        words: the ordinary words of the vocabulary (the special tokens come first).
        answers: the name of each output class, in order.
        image_size: ``(H, W)`` of the pictures the model was trained on, before pooling.
        pool: the factor the pictures are shrunk by (average pooling) before cutting.
        patch: the side of a square patch, in pixels after pooling.
        centre: subtract each picture's median colour (its background) first.
        question_length: the padded number of tokens, ``[CLS]`` included.
    """

    dataset: str
    words: tuple[str, ...]
    answers: tuple[str, ...]
    image_size: tuple[int, int]
    pool: int
    patch: int
    centre: bool
    question_length: int

    @property
    def tokenizer(self) -> data.Tokenizer:
        return data.Tokenizer(self.words)

    @property
    def grid(self) -> tuple[int, int]:
        """Patches per column and per row."""
        H, W = self.image_size
        return H // self.pool // self.patch, W // self.pool // self.patch

    def encode(self, questions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(ids (N, question_length), lengths (N,))``; a question too long raises ValueError."""
        return self.tokenizer.encode(questions, self.question_length)

    def patches(self, images: np.ndarray, dtype: object = np.float32) -> np.ndarray:
        """``images (N, H, W, 3)`` at ``image_size`` -> the patch tokens ``(N, P, patch*patch*3)``.

        The same steps the training data went through: pool, centre, cut.
        """
        if images.ndim != 4 or tuple(images.shape[1:3]) != tuple(self.image_size) or images.shape[-1] != 3:
            H, W = self.image_size
            raise ValueError(f"images: expected (N, {H}, {W}, 3) RGB pictures, got shape {images.shape}")
        images = average_pool(images.astype(np.float64), self.pool)
        if self.centre:
            images = easy_vqa.centre(images)
        return data.patchify(images, self.patch).astype(dtype)

    def to_dict(self) -> dict:
        return {**asdict(self), "words": list(self.words), "answers": list(self.answers)}

    @classmethod
    def from_dict(cls, fields: dict) -> VQAInputs:
        return cls(
            dataset=str(fields["dataset"]),
            words=tuple(fields["words"]),
            answers=tuple(fields["answers"]),
            image_size=(int(fields["image_size"][0]), int(fields["image_size"][1])),
            pool=int(fields["pool"]),
            patch=int(fields["patch"]),
            centre=bool(fields["centre"]),
            question_length=int(fields["question_length"]),
        )


TOY = VQAInputs(
    dataset="toy",
    words=data.WORDS,
    answers=data.ANSWERS,
    image_size=(24, 24),  # the 3 x 3 board of 8-pixel cells that make_vqa_splits draws
    pool=1,
    patch=8,
    centre=False,
    question_length=9,
)
EASY_VQA = VQAInputs(
    dataset="easy-vqa",
    words=easy_vqa.WORDS,
    answers=easy_vqa.ANSWERS,
    image_size=(easy_vqa.IMAGE_SIZE, easy_vqa.IMAGE_SIZE),
    pool=easy_vqa.POOL,
    patch=easy_vqa.PATCH,
    centre=True,
    question_length=easy_vqa.QUESTION_LENGTH,
)
INPUTS = {"toy": TOY, "easy-vqa": EASY_VQA}


def saved_config(model: ImageTextModel, inputs: VQAInputs, training: dict) -> dict:
    """The configuration stored in ``params.npz``: the model's sizes, its inputs, how it was trained."""
    return {
        "format": CONFIG_FORMAT,
        "task": "vqa",
        "model": model.config,
        "inputs": inputs.to_dict(),
        "training": training,
    }


def load_model(path: str | os.PathLike) -> tuple[ImageTextModel, VQAInputs, dict]:
    """Rebuild the model saved at ``path`` by ``train --task vqa``: ``(model, inputs, config)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file has no configuration (saved before configurations were stored)
            or it is not a VQA model's.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"params: no such file {os.fspath(path)!r}")
    try:
        config = load_config(path)
    except (OSError, ValueError, zipfile.BadZipFile) as error:  # not an .npz, or a damaged one
        raise ValueError(f"params: cannot read {os.fspath(path)} as a .npz archive ({error})") from None
    if config is None:
        raise ValueError(
            f"params: {os.fspath(path)} holds parameters but no configuration "
            "(saved by an older version); train again to get one"
        )
    if config.get("task") != "vqa" or config.get("format") != CONFIG_FORMAT:
        raise ValueError(
            f"params: expected a VQA model's configuration (task 'vqa', format {CONFIG_FORMAT}), "
            f"got task {config.get('task')!r}, format {config.get('format')!r}"
        )
    model = ImageTextModel.from_config(config["model"])
    load(model, path)
    return model, VQAInputs.from_dict(config["inputs"]), config


def answer(
    model: ImageTextModel, inputs: VQAInputs, image: np.ndarray, question: str
) -> list[tuple[str, float]]:
    """Every answer with its probability, most likely first, for one ``image (H, W, 3)`` and question."""
    ids, lengths = inputs.encode([question])
    patches = inputs.patches(image[None], model.dtype)
    logits = model(ids, patches, lengths)[0, 0].astype(np.float64)  # the answer is read at [CLS]
    probabilities, _ = softmax_forward(logits)
    order = np.argsort(-probabilities, kind="stable")
    return [(inputs.answers[i], float(probabilities[i])) for i in order]
