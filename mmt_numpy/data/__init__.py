"""Small image–text data made in code: coloured shapes, questions about them, captions.

Nothing is downloaded.  A *scene* places two or three shapes (square, circle, triangle,
each at most once) in the cells of a ``grid x grid`` board and gives each a colour.  From
a scene come

* an RGB image ``(H, W, 3)`` in [0, 1] (one shape per cell, black background),
* questions with one-word answers, the toy visual question answering of §6.1::

      "what colour is the square ?"          -> "red"
      "is the circle left of the triangle ?" -> "yes" / "no"

* a caption (``"a red square , a blue circle and a green triangle"``) for the
  pre-training objectives of §2.2 (masked-token prediction, contrastive matching) and for
  image captioning (§6.2, :mod:`mmt_numpy.data.captions`: ``[BOS]``/``[EOS]`` appended after
  the vocabulary, so no existing id moves).

Images become token sequences the way a Vision Transformer does it: :func:`patchify` cuts
each image into ``patch x patch`` squares and flattens each square, so a model's
``image_embedding`` Linear is exactly ViT's patch embedding.  With the default sizes a
patch is one cell of the board, so "the patch of the square" is a single image token.

Everything is deterministic per seed.  Train and test sets are split by *scene*: no scene
(same shapes, cells and colours) appears in both, so a test question is never asked of an
image the model saw in training (:func:`make_vqa_splits`).
"""

from mmt_numpy.data.captions import (
    BOS_ID,
    CAPTION_LENGTH,
    CAPTION_TOKENIZER,
    EOS_ID,
    CaptionDataset,
    CaptionTokenizer,
    make_caption_dataset,
    make_caption_splits,
    teacher_forcing,
)
from mmt_numpy.data.scenes import (
    COLOURS,
    SHAPES,
    Scene,
    caption,
    patchify,
    questions,
    random_scene,
    render,
)
from mmt_numpy.data.tokenizer import (
    CLS_ID,
    IGNORE_INDEX,
    MASK_ID,
    PAD_ID,
    SEP_ID,
    SPECIAL_TOKENS,
    TOKENIZER,
    UNK_ID,
    WORDS,
    Tokenizer,
    mask_tokens,
    split_words,
)
from mmt_numpy.data.vqa import (
    ANSWERS,
    QUESTION_TYPES,
    ImageQuestions,
    VQADataset,
    make_caption_data,
    make_vqa_dataset,
    make_vqa_splits,
    question_type,
)

__all__ = [
    "ANSWERS",
    "BOS_ID",
    "CAPTION_LENGTH",
    "CAPTION_TOKENIZER",
    "EOS_ID",
    "CaptionDataset",
    "CaptionTokenizer",
    "CLS_ID",
    "COLOURS",
    "IGNORE_INDEX",
    "ImageQuestions",
    "MASK_ID",
    "PAD_ID",
    "QUESTION_TYPES",
    "SEP_ID",
    "SHAPES",
    "SPECIAL_TOKENS",
    "Scene",
    "TOKENIZER",
    "Tokenizer",
    "UNK_ID",
    "VQADataset",
    "WORDS",
    "caption",
    "make_caption_data",
    "make_caption_dataset",
    "make_caption_splits",
    "make_vqa_dataset",
    "make_vqa_splits",
    "mask_tokens",
    "patchify",
    "question_type",
    "questions",
    "random_scene",
    "render",
    "split_words",
    "teacher_forcing",
]
