"""Gradient checks of image captioning (§6.2): the decoder layer and stack (a causal mask over the
text, key padding over the memory), cross-entropy with label smoothing, and the captioner's
teacher-forcing loss (image encoder, decoder, tied input/output embedding, smoothed
cross-entropy over the shifted targets).  Every input and parameter, float64, parameters moved
off their initial values; text and memory lengths differ (T != Lm) so a transposed gradient
cannot hide behind equal shapes.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from mmt_numpy import nn, ops
from mmt_numpy.checks import Case, randn, randomize
from mmt_numpy.gradcheck import GradcheckReport, check_module, check_op

ORDER = 45


def decoder_layer_case(norm_first: bool, activation: str) -> GradcheckReport:
    """One decoder layer, B = 2, T = 3 text positions over Lm = 5 memory positions, the second
    row's memory padded to 2."""
    m = randomize(
        nn.TransformerDecoderLayer(4, 2, 6, norm_first=norm_first, activation=activation, rng=90), 91
    )
    inputs = {"x": randn(92, 2, 3, 4), "memory": randn(93, 2, 5, 4)}
    kwargs = {"mask": ops.causal_mask(3), "memory_mask": ops.padding_mask([5, 2], 5)}
    variant = "pre-LN" if norm_first else "post-LN"
    return check_module(m, inputs, kwargs=kwargs, name=f"TransformerDecoderLayer ({variant}, {activation})")


def decoder_case() -> GradcheckReport:
    """Two pre-LN layers and a final norm: the memory's gradient is the sum of both layers' shares."""
    m = randomize(nn.TransformerDecoder(4, 2, 6, 2, norm_first=True, final_norm=True, rng=94), 95)
    inputs = {"x": randn(96, 2, 4, 4), "memory": randn(97, 2, 3, 4)}
    kwargs = {"mask": ops.causal_mask(4), "memory_mask": ops.padding_mask([3, 1], 3)}
    return check_module(m, inputs, kwargs=kwargs, name="TransformerDecoder (2 pre-LN + norm)")


def smoothed_cross_entropy_case(reduction: str) -> GradcheckReport:
    logits = randn(98, 2, 4, 5)
    targets = randn(99, 2, 4).argsort(-1) % 5  # ids in [0, 5) ...
    targets[0, 1] = targets[1, 3] = -100  # ... and two ignored positions
    kwargs = {"targets": targets, "reduction": reduction, "label_smoothing": 0.1}
    return check_op(
        ops.cross_entropy_forward,
        ops.cross_entropy_backward,
        {"logits": logits},
        kwargs=kwargs,
        name=f"cross_entropy ({reduction}, smoothing 0.1)",
    )


def caption_loss_case(label_smoothing: float = 0.1) -> GradcheckReport:
    """The captioner's training loss on two 2x2-patch images and texts of 4 positions, the second
    text padded (ignored targets), through the image encoder, the decoder and the tied word table."""
    model = nn.ImageCaptioner(
        7, 6, (2, 2), bos_id=5, eos_id=6, d_model=4, num_heads=2, d_ff=6, encoder_layers=1,
        decoder_layers=1, max_len=5, rng=100,
    )  # fmt: skip
    randomize(model, 101)
    inputs = np.array([[5, 1, 2, 3], [5, 4, 1, 0]])  # [BOS] w w w
    targets = np.array([[1, 2, 3, 6], [4, 1, 6, -100]])  # shifted by one; the padding ignored
    loss = nn.CaptionLoss(model, label_smoothing)
    patches = {"patches": randn(102, 2, 4, 6)}
    name = f"ImageCaptioner loss (tied, ε={label_smoothing})"
    return check_module(loss, {**patches, "inputs": inputs, "targets": targets}, name=name)


CASES = [
    *[
        Case(
            f"TransformerDecoderLayer ({'pre-LN' if nf else 'post-LN'}, {a})",
            partial(decoder_layer_case, nf, a),
        )
        for nf, a in ((False, "relu"), (False, "gelu"), (True, "relu"), (True, "gelu"))
    ],
    Case("TransformerDecoder (2 pre-LN + norm)", decoder_case),
    *[
        Case(f"cross_entropy ({r}, smoothing 0.1)", partial(smoothed_cross_entropy_case, r))
        for r in ("mean", "none")
    ],
    Case("ImageCaptioner loss (tied, ε=0.1)", caption_loss_case),
]
