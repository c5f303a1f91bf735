"""Corpus BLEU (Papineni, Roukos, Ward and Zhu, 2002): how a generated caption is scored (§6.2).

For n = 1 … N (N = 4 for BLEU-4), the **modified n-gram precision** of a corpus is

    p_n = Σ_sentences Σ_ngram g  min(count_hyp(g), max_ref count_ref(g))
          ───────────────────────────────────────────────────────────
                  Σ_sentences Σ_ngram g  count_hyp(g)

each hypothesis n-gram counted at most as often as it occurs in any one reference
("clipped"), so *the the the the* earns nothing for repeating a correct word.  Counts are
pooled over the whole corpus before dividing, so a short sentence with no 4-grams at all
does not make the corpus score 0.  Precision alone rewards saying little, so a **brevity
penalty** compares the total hypothesis length ``c`` with the total reference length ``r``
(for each sentence the reference length closest to the hypothesis's, the shorter on a tie):

    BP = 1 if c > r else exp(1 − r / c)
    BLEU = BP · exp(Σ_n w_n log p_n),   w_n = 1 / N

BLEU is 0 as soon as one p_n is 0 (no smoothing: the paper's definition; sacrebleu's
``smooth_method="none"``).  Scores are in [0, 1] (sacrebleu prints 100 × this).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

Tokens = Sequence[str]


@dataclass(frozen=True)
class BleuScore:
    """A corpus BLEU score and the counts it was computed from.

    Attributes:
        score: BLEU in [0, 1].
        precisions: ``(p_1, …, p_N)``, each clipped matches / hypothesis n-grams (0 when there
            are no hypothesis n-grams of that order).
        matches, totals: the pooled numerators and denominators of the precisions.
        brevity_penalty: BP.
        hypothesis_length, reference_length: c and r.
    """

    score: float
    precisions: tuple[float, ...]
    matches: tuple[int, ...]
    totals: tuple[int, ...]
    brevity_penalty: float
    hypothesis_length: int
    reference_length: int


def ngrams(tokens: Tokens, n: int) -> Counter:
    """How often each n-gram (a tuple of n tokens) occurs in ``tokens``."""
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _tokens(name: str, sentence: object) -> list[str]:
    """A sentence as a list of string tokens; a plain string is refused (split it first)."""
    if isinstance(sentence, str):
        raise TypeError(
            f"{name}: expected a sequence of tokens (e.g. text.split()), got the string {sentence!r}"
        )
    if not isinstance(sentence, Sequence) or not all(isinstance(t, str) for t in sentence):
        raise TypeError(f"{name}: expected a sequence of string tokens, got {sentence!r}")
    return list(sentence)


def corpus_bleu(hypotheses: Sequence[object], references: Sequence[object], max_n: int = 4) -> BleuScore:
    """Corpus BLEU-``max_n`` of ``hypotheses`` against ``references`` (module docstring).

    Args:
        hypotheses: S sentences, each a sequence of tokens (``text.split()``).
        references: S entries, one per hypothesis, each a non-empty sequence of reference
            sentences (token sequences) for that hypothesis: ``[ref.split()]`` for one
            reference, as ``nltk.translate.bleu_score.corpus_bleu``.
        max_n: the longest n-gram order (4 for BLEU-4), weights 1 / max_n each.

    Returns:
        The :class:`BleuScore` (score, precisions, counts, brevity penalty, lengths).
    """
    if isinstance(max_n, bool) or not isinstance(max_n, int) or max_n < 1:
        raise ValueError(f"max_n: expected a positive integer, got {max_n!r}")
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise TypeError("hypotheses, references: expected sequences of sentences, got a single string")
    if len(hypotheses) != len(references):
        raise ValueError(
            f"references: expected one entry per hypothesis ({len(hypotheses)}), got {len(references)}"
        )
    matches, totals = [0] * max_n, [0] * max_n
    c = r = 0
    for i, (hyp, refs) in enumerate(zip(hypotheses, references, strict=True)):
        hyp = _tokens(f"hypotheses[{i}]", hyp)
        if isinstance(refs, str) or not isinstance(refs, Sequence) or not refs:
            raise TypeError(
                f"references[{i}]: expected a non-empty sequence of reference token sequences "
                f"([ref.split()] for one reference), got {refs!r}"
            )
        refs = [_tokens(f"references[{i}][{j}]", ref) for j, ref in enumerate(refs)]
        c += len(hyp)
        # the reference length closest to the hypothesis's, the shorter one on a tie
        r += min((abs(len(ref) - len(hyp)), len(ref)) for ref in refs)[1]
        for n in range(1, max_n + 1):
            counts = ngrams(hyp, n)
            most = Counter()  # for each n-gram, its largest count in any one reference
            for ref in refs:
                most |= ngrams(ref, n)
            matches[n - 1] += sum(min(k, most[g]) for g, k in counts.items())
            totals[n - 1] += sum(counts.values())
    precisions = tuple(m / t if t else 0.0 for m, t in zip(matches, totals, strict=True))
    brevity = 0.0 if c == 0 else (1.0 if c > r else math.exp(1.0 - r / c))
    if min(precisions) == 0.0:
        score = 0.0
    else:
        score = brevity * math.exp(sum(math.log(p) for p in precisions) / max_n)
    return BleuScore(score, precisions, tuple(matches), tuple(totals), brevity, c, r)
