"""Gradient checks of multimodal dialogue (§6.4): the history's embedding (word, position, turn,
speaker) and the dialogue model's teacher-forcing loss (patches and history through one encoder,
the captioning decoder over that memory, the word table shared by the history, the answer's input
and the output layer).  Float64, parameters moved off their initial values; two histories of
different lengths (padding masked), every turn and speaker label used more than once.
"""

from __future__ import annotations

import numpy as np

from mmt_numpy import nn
from mmt_numpy.checks import Case, randn, randomize
from mmt_numpy.gradcheck import GradcheckReport, check_module

ORDER = 47

# two histories of 5 tokens over a vocabulary of 7: the second padded after 3 tokens
HISTORY = {
    "ids": np.array([[1, 2, 3, 4, 1], [2, 2, 5, 0, 0]]),
    "turns": np.array([[2, 2, 1, 1, 0], [1, 1, 0, 0, 0]]),
    "speakers": np.array([[0, 1, 0, 1, 0], [0, 1, 0, 0, 0]]),
}


def dialogue_embedding_case(embedding: type[nn.DialogueEmbedding] = nn.DialogueEmbedding) -> GradcheckReport:
    """``E[ids] + P[:L] + T[turns] + S[speakers]``: every table (max_len 6 > L = 5, max_turns 4 > 3 used,
    so unused rows must get zero)."""
    m = randomize(embedding(7, 6, 4, 3, rng=110), 111)
    return check_module(m, dict(HISTORY), name=f"{embedding.__name__} (word + position + turn + speaker)")


def dialogue_loss_case() -> GradcheckReport:
    """The dialogue model's loss: two 2x2-patch images, the histories above, answers of 3 positions
    (the second ends early: an ignored target)."""
    model = nn.DialogueModel(
        7, 6, (2, 2), bos_id=5, eos_id=6, max_history=6, max_turns=3, max_answer=3, d_model=4,
        num_heads=2, d_ff=6, encoder_layers=1, decoder_layers=1, rng=112,
    )  # fmt: skip
    randomize(model, 113)
    inputs = {
        "patches": randn(114, 2, 4, 6),
        **HISTORY,
        "lengths": np.array([5, 3]),
        "answer_inputs": np.array([[5, 1, 2], [5, 3, 6]]),
        "answer_targets": np.array([[1, 2, 6], [3, 6, -100]]),
    }
    return check_module(nn.DialogueLoss(model), inputs, name="DialogueModel loss (shared word table)")


CASES = [
    Case("DialogueEmbedding (word + position + turn + speaker)", dialogue_embedding_case),
    Case("DialogueModel loss (shared word table)", dialogue_loss_case),
]
