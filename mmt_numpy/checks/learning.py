"""Gradient checks of what learning adds on top of the model: the contrastive InfoNCE loss
(§2.2), the three fusion strategies (§2.1.1), the 2-D patch positions of the VQA model, the
masked-token-prediction loss path (token embedding -> §5 model -> cross-entropy over masked
text positions only) and the VQA loss path (-> cross-entropy at ``[CLS]``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import numpy as np

from mmt_numpy import data, nn, ops
from mmt_numpy.checks import Case, randn, randomize
from mmt_numpy.gradcheck import GradcheckReport, check_module, check_op
from mmt_numpy.nn.image_text import ImageTextCache, ImageTextModel, cls_logits_backward
from mmt_numpy.nn.module import Module

ORDER = 40


def _info_nce(temperature: float) -> GradcheckReport:
    inputs = {"text_emb": randn(50, 5, 4), "image_emb": randn(51, 5, 4)}
    return check_op(
        ops.info_nce_forward,
        ops.info_nce_backward,
        inputs,
        kwargs={"temperature": temperature},
        name=f"info_nce (τ={temperature})",
    )


def _feature_fusion() -> GradcheckReport:
    inputs = {"a": randn(52, 2, 3, 4), "b": randn(53, 2, 5, 4)}
    return check_module(nn.FeatureFusion(), inputs, name="FeatureFusion (§2.1.1)")


def _vector_fusion(mode: str) -> GradcheckReport:
    d2 = 3 if mode == "concat" else 4
    inputs = {"v1": randn(54, 3, 4), "v2": randn(55, 3, d2)}
    return check_module(nn.VectorFusion(mode), inputs, name=f"VectorFusion ({mode})")


def _tensor_fusion(d_out: int | None) -> GradcheckReport:
    m = nn.TensorFusion(3, 4, d_out, rng=56)
    if d_out is not None:
        randomize(m, 57)
    inputs = {"v1": randn(58, 2, 3), "v2": randn(59, 2, 4)}
    name = "TensorFusion" + ("" if d_out is None else f" (+ Linear to {d_out})")
    return check_module(m, inputs, name=name)


def grid_position_case() -> GradcheckReport:
    """:class:`~mmt_numpy.nn.GridPositionalEmbedding` on a 2x3 grid (rows != columns, so a
    row/column mix-up cannot hide behind equal shapes), from a random point."""
    m = randomize(nn.GridPositionalEmbedding((2, 3), 4, rng=65), 66)
    return check_module(m, {"x": randn(67, 2, 6, 4)}, name="GridPositionalEmbedding (2-D)")


class LossCache(NamedTuple):
    model: ImageTextCache
    loss: ops.CrossEntropyCache
    out_shape: tuple[int, ...]


class MaskedLMLoss(Module):
    """The masked-token-prediction loss of an :class:`ImageTextModel` as a one-output module.

    ``forward(patches)`` returns the 0-d loss ``CE(out[:, :Lt], targets)`` over the masked
    text positions of fixed corrupted ids; ``backward(d_loss, cache)`` returns
    ``(d_patches,)``.  The check therefore covers the whole path: word embedding, §5 model,
    the slice to text positions and the cross-entropy with ``ignore_index``.
    """

    def __init__(
        self, model: ImageTextModel, ids: np.ndarray, lengths: np.ndarray, targets: np.ndarray
    ) -> None:
        self.model, self.ids, self.lengths, self.targets = model, ids, lengths, targets

    def forward(self, patches: np.ndarray) -> tuple[np.ndarray, LossCache]:
        out, cache = self.model.forward(self.ids, patches, self.lengths)
        Lt = self.ids.shape[1]
        loss, loss_cache = ops.cross_entropy_forward(out[:, :Lt], self.targets)  # loss = CE(out[:, :Lt])
        return loss, LossCache(cache, loss_cache, out.shape)

    def backward(self, d_loss: np.ndarray, cache: LossCache) -> tuple[np.ndarray]:
        d_out = np.zeros(cache.out_shape)
        d_out[:, : self.ids.shape[1]] = ops.cross_entropy_backward(d_loss, cache.loss)  # out[:, :Lt]
        return self.model.backward(d_out, cache.model)


class ClassificationLoss(MaskedLMLoss):
    """The VQA loss of a training step, ``CE(out[:, 0], answers)`` at ``[CLS]``, as a module.

    ``to_out(d_logits (B, C), out_shape)`` places the logits' gradient into the model's
    output; a test swaps in a broken one to show the check rejects it.
    """

    def __init__(
        self,
        model: ImageTextModel,
        ids: np.ndarray,
        lengths: np.ndarray,
        answers: np.ndarray,
        to_out: Callable[[np.ndarray, tuple[int, ...]], np.ndarray] = cls_logits_backward,
    ) -> None:
        super().__init__(model, ids, lengths, answers)
        self.to_out = to_out

    def forward(self, patches: np.ndarray) -> tuple[np.ndarray, LossCache]:
        out, cache = self.model.forward(self.ids, patches, self.lengths)
        loss, loss_cache = ops.cross_entropy_forward(out[:, 0], self.targets)  # loss = CE(out[:, 0])
        return loss, LossCache(cache, loss_cache, out.shape)

    def backward(self, d_loss: np.ndarray, cache: LossCache) -> tuple[np.ndarray]:
        d_logits = ops.cross_entropy_backward(d_loss, cache.loss)
        return self.model.backward(self.to_out(d_logits, cache.out_shape), cache.model)  # logits = out[:, 0]


def classification_case(to_out: Callable = cls_logits_backward) -> GradcheckReport:
    """Gradient check of the [CLS] classification loss on two toy questions (2x2-pixel patches),
    through the model ``train_vqa`` builds: 2-D (row + column) image positions."""
    train, _ = data.make_vqa_splits(2, 1, seed=7, grid=2, cell=2)
    model = ImageTextModel(
        len(data.TOKENIZER),
        12,
        len(data.ANSWERS),
        hidden_dim=4,
        num_heads=2,
        num_layers=1,
        d_ff=6,
        max_len=9,
        image_grid=train.grid,
        rng=8,
    )
    randomize(model, 20)
    rows = np.arange(2)
    patches = train.patches()[rows] + 0.3 * randn(10, 2, 4, 12)
    loss = ClassificationLoss(model, train.ids[rows], train.lengths[rows], train.answers[rows], to_out)
    return check_module(loss, {"patches": patches}, name="VQA loss at [CLS] (§6.1)")


def _masked_lm() -> GradcheckReport:
    patches, ids, lengths, _ = data.make_caption_data(2, seed=60, grid=2, cell=2)
    ids, lengths = ids[:, :6], np.minimum(lengths, 6)
    corrupted, targets = data.mask_tokens(ids, np.random.default_rng(61), prob=0.5)
    targets[0, 1] = ids[0, 1]  # at least one target, and ...
    targets[1, :] = data.IGNORE_INDEX  # ... a row with none, which must get no gradient
    model = ImageTextModel(
        len(data.TOKENIZER),
        patches.shape[-1],
        len(data.TOKENIZER),
        hidden_dim=4,
        num_heads=2,
        num_layers=1,
        d_ff=6,
        max_len=6,
        rng=62,
    )
    randomize(model, 63)
    return check_module(
        MaskedLMLoss(model, corrupted, lengths, targets),
        {"patches": patches + 0.1 * randn(64, *patches.shape)},
        name="masked-token loss (§2.2)",
    )


CASES = [
    Case("info_nce (τ=0.07)", partial(_info_nce, 0.07)),
    Case("info_nce (τ=1.0)", partial(_info_nce, 1.0)),
    Case("FeatureFusion (§2.1.1)", _feature_fusion),
    *[Case(f"VectorFusion ({mode})", partial(_vector_fusion, mode)) for mode in nn.fusion.VECTOR_MODES],
    Case("TensorFusion", partial(_tensor_fusion, None)),
    Case("TensorFusion (+ Linear to 3)", partial(_tensor_fusion, 3)),
    Case("GridPositionalEmbedding (2-D)", grid_position_case),
    Case("masked-token loss (§2.2)", _masked_lm),
    Case("VQA loss at [CLS] (§6.1)", classification_case),
]
