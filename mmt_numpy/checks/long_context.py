"""Gradient checks of the long-context ops: blocked (flash) attention under every mask kind,
with block sizes that do and do not divide the lengths, ALiBi's distance bias (blocked and
dense) and attention sinks, and rotary position embeddings, plain and scaled."""

from __future__ import annotations

from functools import partial

import numpy as np

from mmt_numpy import nn, ops
from mmt_numpy.checks import Case, randn, randomize
from mmt_numpy.gradcheck import GradcheckReport, check_module, check_op
from mmt_numpy.nn.attention import PositionScheme

ORDER = 30


# name -> (Lq, Lk, block_size, keyword arguments of flash_attention_forward).  Block sizes
# that divide the lengths (8 by 4, 6 by 2) and that do not (5 and 7 by 3, 7 by 4 and 2);
# "all masks" is causal + window 2 + key_lengths [5, 3] with 1x1 tiles.
_FLASH = {
    "5x7, block 3": (5, 7, 3, {}),
    "8x8, block 4": (8, 8, 4, {}),
    "causal, block 2": (6, 6, 2, {"causal": True}),
    "causal, 7x5, block 4": (7, 5, 4, {"causal": True}),
    "window 2, block 3": (7, 7, 3, {"window": 2}),
    "causal+window 3, block 2": (7, 7, 2, {"causal": True, "window": 3}),
    "lengths [0, 4], block 3": (5, 6, 3, {"key_lengths": np.array([0, 4])}),
    "all masks, block 1": (6, 6, 1, {"causal": True, "window": 2, "key_lengths": np.array([5, 3])}),
    "scale 0.3, one tile": (4, 6, 64, {"scale": 0.3}),
    "ALiBi, causal, tiles 2x3": (6, 6, (2, 3), {"alibi": np.array([0.8, 0.1]), "causal": True}),
    "ALiBi, bidirectional, 5x7": (5, 7, 3, {"alibi": np.array([0.5, 0.25])}),
    "causal+window 2+2 sinks": (7, 7, 2, {"causal": True, "window": 2, "sinks": 2}),
}


def _flash(name: str) -> GradcheckReport:
    Lq, Lk, block_size, kwargs = _FLASH[name]
    B, H, d_k, d_v = 2, 2, 3, 2
    inputs = {"q": randn(31, B, H, Lq, d_k), "k": randn(32, B, H, Lk, d_k), "v": randn(33, B, H, Lk, d_v)}
    return check_op(
        ops.flash_attention_forward,
        ops.flash_attention_backward,
        inputs,
        kwargs={**kwargs, "block_size": block_size},
        name=f"flash ({name})",
    )


def _dense_alibi() -> GradcheckReport:
    B, H, L, d = 2, 2, 5, 3
    inputs = {"q": randn(35, B, H, L, d), "k": randn(36, B, H, L, d), "v": randn(37, B, H, L, d)}
    kwargs = {"mask": ops.causal_mask(L), "bias": ops.alibi_bias(L, L, ops.alibi_slopes(H))}
    return check_op(
        ops.attention_forward, ops.attention_backward, inputs, kwargs=kwargs, name="attention (ALiBi bias)"
    )


_ROPE = {
    "positions 0..L-1": {},
    "float positions, base 100": {
        "positions": np.array([[0.0, 1.5, 3.0, 7.0, 9.5], [4.0, 5.0, 6.0, 7.0, 8.0]])[:, None, :],
        "base": 100.0,
    },
    "interpolation x4": {"scaling": "interpolation", "factor": 4.0},
    "NTK x8": {"scaling": "ntk", "factor": 8.0},
}


def _rope(kind: str) -> GradcheckReport:
    x = randn(34, 2, 3, 5, 6)
    return check_op(ops.rope_forward, ops.rope_backward, {"x": x}, kwargs=_ROPE[kind], name=f"rope ({kind})")


_SCHEMES = {
    "RoPE": PositionScheme("rope"),
    "RoPE + NTK": PositionScheme("rope", scaling="ntk", train_length=3),
    "ALiBi": PositionScheme("alibi"),
    "RoPE, window 2 + 2 sinks": PositionScheme("rope", window=2, sinks=2),
    "ALiBi, window 2 + 1 sink": PositionScheme("alibi", window=2, sinks=1),
}


def _positional_mha(name: str) -> GradcheckReport:
    mha = randomize(nn.MultiHeadAttention(8, 2, position=_SCHEMES[name], rng=38), 39)  # d_h = 4
    return check_module(
        mha,
        {"query": randn(40, 2, 6, 8)},
        kwargs={"mask": ops.causal_mask(6)},
        name=f"MultiHeadAttention ({name})",
    )


class _ReaderOnFixedText(nn.Module):
    """A reader with its token ids fixed, so the checker varies the image patches and parameters."""

    def __init__(self, reader: nn.LongTextReader, ids: np.ndarray) -> None:
        self.reader, self.ids = reader, ids

    def forward(self, patches: np.ndarray) -> tuple[np.ndarray, object]:
        return self.reader.forward(self.ids, patches)

    def backward(self, d_logits: np.ndarray, cache: object) -> tuple[np.ndarray, ...]:
        return self.reader.backward(d_logits, cache)


def _reader(position: str) -> GradcheckReport:
    from mmt_numpy.data.longtext import CODES, PATCH_DIM, VOCAB, make_longtext_batch

    reader = nn.LongTextReader(
        len(VOCAB), len(CODES), position=position, patch_dim=PATCH_DIM, d_model=8, num_heads=2, d_ff=8, rng=41
    )
    batch = make_longtext_batch("image", 8, 2, seed=42)
    model = _ReaderOnFixedText(randomize(reader, 43), batch.ids)
    return check_module(model, {"patches": batch.patches}, name=f"LongTextReader ({position}, image + text)")


CASES = [
    *[Case(f"flash ({name})", partial(_flash, name)) for name in _FLASH],
    Case("attention (ALiBi bias)", _dense_alibi),
    *[Case(f"rope ({kind})", partial(_rope, kind)) for kind in _ROPE],
    *[Case(f"MultiHeadAttention ({name})", partial(_positional_mha, name)) for name in _SCHEMES],
    *[
        Case(f"LongTextReader ({position}, image + text)", partial(_reader, position))
        for position in ("sinusoidal", "rope", "alibi")
    ],
]
