"""Gradient checks of the embeddings, the §5 MultimodalTransformer and the §3.2 co-attention
layer: every float input and every parameter, float64, parameters moved off their initial
values.  Key biases (``b_k``) have an exact gradient of 0 and are judged as
:mod:`mmt_numpy.checks.nn` explains; tensors above ``max_elements`` entries (the whole
model's larger weights) are checked along random directions.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from mmt_numpy import nn
from mmt_numpy.checks import Case, randn, randomize
from mmt_numpy.gradcheck import GradcheckReport, check_module
from mmt_numpy.nn.module import Module

ORDER = 20


def _embedding() -> GradcheckReport:
    m = randomize(nn.Embedding(5, 3, rng=30), 31)
    ids = np.array([[1, 3, 1, 1], [0, 3, 4, 1]])  # id 1 four times, id 3 twice, id 2 never
    return check_module(m, {"ids": ids}, name="Embedding (repeated ids)")


def _positional(kind: str) -> GradcheckReport:
    if kind == "sinusoidal":
        m: Module = nn.SinusoidalPositionalEncoding(6, 4)
    else:
        m = randomize(nn.LearnedPositionalEmbedding(6, 4, rng=32), 33)
    # L = 4 < max_len = 6: the rows of positions 4 and 5 must get a zero gradient.
    return check_module(m, {"x": randn(34, 2, 4, 4)}, name=f"{type(m).__name__} (L < max)")


def _modality() -> GradcheckReport:
    m = randomize(nn.ModalityEmbedding(3, 4, rng=35), 36)
    modality = np.array([0, 0, 2, 2, 2])  # two text tokens, three image patches, type 1 unused
    return check_module(m, {"x": randn(37, 2, 5, 4)}, kwargs={"modality": modality}, name="ModalityEmbedding")


def _multimodal(positional: str, norm_first: bool, hidden: int = 4) -> GradcheckReport:
    m = nn.MultimodalTransformer(
        5,
        6,
        hidden,
        2,
        2,
        3,
        d_ff=hidden + 2,
        max_len=8,
        positional=positional,
        norm_first=norm_first,
        final_norm=norm_first,
        rng=38,
    )
    randomize(m, 39)
    inputs = {"text": randn(40, 2, 4, 5), "image": randn(41, 2, 3, 6)}
    kwargs = {"text_lengths": np.array([4, 2]), "image_lengths": np.array([2, 3])}
    name = _multimodal_name(positional, norm_first, hidden)
    return check_module(m, inputs, kwargs=kwargs, name=name)


def _multimodal_name(positional: str, norm_first: bool, hidden: int) -> str:
    variant = "pre-LN" if norm_first else "post-LN"
    pe = "sin PE" if positional == "sinusoidal" else "learned PE"
    return f"Multimodal §5 ({variant}, {pe}, D={hidden})"


def _coattention() -> GradcheckReport:
    m = randomize(nn.CoAttentionLayer(4, 6, 2, 5, activation="gelu", rng=42), 43)
    inputs = {"text": randn(44, 2, 3, 4), "image": randn(45, 2, 4, 6)}
    kwargs = {"text_lengths": np.array([3, 2]), "image_lengths": np.array([4, 1])}
    return check_module(m, inputs, kwargs=kwargs, name="CoAttentionLayer (§3.2, padding)")


CASES = [
    Case("Embedding (repeated ids)", _embedding),
    Case("SinusoidalPositionalEncoding (L < max)", partial(_positional, "sinusoidal")),
    Case("LearnedPositionalEmbedding (L < max)", partial(_positional, "learned")),
    Case("ModalityEmbedding", _modality),
    # Two layers, padding in both modalities.  With D = 16 the feed-forward weights (16x18,
    # 18x16) have more than max_elements entries and are checked along random directions.
    *[
        Case(_multimodal_name(*variant), partial(_multimodal, *variant))
        for variant in (("sinusoidal", False, 4), ("learned", True, 4), ("sinusoidal", False, 16))
    ],
    Case("CoAttentionLayer (§3.2, padding)", _coattention),
]
