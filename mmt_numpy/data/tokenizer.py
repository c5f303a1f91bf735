"""The word-level tokenizer of the toy tasks and BERT's token masking (§2.2)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmt_numpy.data.scenes import COLOURS, SHAPES
from mmt_numpy.validate import probability

SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]")
PAD_ID, CLS_ID, SEP_ID, MASK_ID, UNK_ID = range(len(SPECIAL_TOKENS))
WORDS = (
    "what",
    "colour",
    "is",
    "the",
    "left",
    "of",
    "?",
    "a",
    "and",
    ",",
    *SHAPES,
    *COLOURS,
    "yes",
    "no",
)
IGNORE_INDEX = -100  # the target of a position that is not predicted (cross_entropy's default)
PUNCTUATION = ("?", ",")  # written as words of their own


def split_words(text: str) -> list[str]:
    """The words of ``text``: lower-cased, split on spaces, ``?`` and ``,`` as words of their own.

    ``"What colour is the square?"`` -> ``["what", "colour", "is", "the", "square", "?"]``, the
    form the toy questions are written in, so a question typed by hand reads the same.
    """
    text = text.lower()
    for mark in PUNCTUATION:
        text = text.replace(mark, f" {mark} ")
    return text.split()


class Tokenizer:
    """Word-level tokenizer over a fixed vocabulary: special tokens first, then the words.

    Text is split into words by :func:`split_words` (lower case, ``?`` and ``,`` as words).
    ``encode`` prepends ``[CLS]`` (the position a classifier reads, as in BERT) and pads
    with ``[PAD]`` (id 0) to a common length.

    Args:
        words: the ordinary words; ids ``len(SPECIAL_TOKENS) ...`` in this order.
    """

    def __init__(self, words: Sequence[str] = WORDS) -> None:
        vocab = [*SPECIAL_TOKENS, *words]
        if len(set(vocab)) != len(vocab):
            raise ValueError(f"words: expected distinct words not among {SPECIAL_TOKENS}, got {list(words)}")
        self.vocab = vocab
        self.ids = {w: i for i, w in enumerate(vocab)}

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def num_special(self) -> int:
        """Ids below this are special tokens, never masked or sampled as random words."""
        return len(SPECIAL_TOKENS)

    def encode(self, texts: Sequence[str], length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Token ids ``(N, length)`` (``[CLS]`` first, ``[PAD]`` after the end) and lengths ``(N,)``.

        Args:
            texts: N strings of words (:func:`split_words`); an unknown word becomes ``[UNK]``.
            length: the padded length; default the longest encoded text.  A text that does
                not fit raises ValueError (silently cutting a question would change it).
        """
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise TypeError(f"texts: expected a sequence of strings, got {type(texts).__name__}")
        rows = [[CLS_ID, *(self.ids.get(w, UNK_ID) for w in split_words(text))] for text in texts]
        longest = max((len(r) for r in rows), default=0)
        length = longest if length is None else length
        if longest > length:
            raise ValueError(f"length: expected at least {longest} (longest text with [CLS]), got {length}")
        ids = np.full((len(rows), length), PAD_ID, dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
        return ids, np.array([len(r) for r in rows], dtype=np.int64)

    def decode(self, ids: np.ndarray) -> list[str]:
        """``ids (N, L)`` -> N strings, without ``[CLS]`` and stopping at the first ``[PAD]``."""
        ids = np.asarray(ids)
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"ids: expected a 2-D integer array (N, L), got shape {ids.shape}, {ids.dtype}")
        texts = []
        for row in ids:
            words = []
            for i in row.tolist():
                if i == PAD_ID:
                    break
                if i != CLS_ID:
                    words.append(self.vocab[i])
            texts.append(" ".join(words))
        return texts


TOKENIZER = Tokenizer()


def mask_tokens(
    ids: np.ndarray,
    rng: np.random.Generator,
    prob: float = 0.15,
    *,
    vocab_size: int = len(TOKENIZER),
    num_special: int = len(SPECIAL_TOKENS),
) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt token ids for masked-token prediction (BERT's recipe, §2.2).

    Each ordinary token (id >= ``num_special``) is chosen with probability ``prob``; of the
    chosen ones 80% become ``[MASK]``, 10% a random ordinary word and 10% stay as they were
    (so the model cannot learn that only ``[MASK]`` positions matter).  Special tokens
    (``[PAD]``, ``[CLS]`` ...) are never chosen.

    Args:
        ids: ``(N, L)`` integer token ids.
        rng: the generator that decides which tokens are chosen and how they change.
        prob: probability of choosing each ordinary token, in [0, 1].

    Returns:
        ``corrupted (N, L)`` and ``targets (N, L)``: the original id where a token was chosen,
        ``IGNORE_INDEX`` (-100) everywhere else, ready for ``cross_entropy_forward``.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids: expected a 2-D integer array (N, L), got shape {ids.shape}, {ids.dtype}")
    prob = probability("prob", prob)
    chosen = (ids >= num_special) & (rng.random(ids.shape) < prob)
    action = rng.random(ids.shape)  # < 0.8: [MASK];  0.8-0.9: random word;  >= 0.9: unchanged
    random_words = rng.integers(num_special, vocab_size, size=ids.shape)
    corrupted = ids.copy()
    corrupted[chosen & (action < 0.8)] = MASK_ID
    swap = chosen & (action >= 0.8) & (action < 0.9)
    corrupted[swap] = random_words[swap]
    targets = np.where(chosen, ids, IGNORE_INDEX)
    return corrupted, targets
