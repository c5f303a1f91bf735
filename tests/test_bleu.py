"""Corpus BLEU: worked examples counted by hand, and agreement with sacrebleu (a test-only
dependency; the comparison skips when it is not installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmt_numpy.bleu import corpus_bleu, ngrams


def s(text: str) -> list[str]:
    return text.split()


def test_one_sentence_by_hand():
    """hyp  a red square and a blue  circle
    ref  a red square and a green circle
    1-grams: a a red square and circle match, blue does not          6/7
    2-grams: a·red red·square square·and and·a match (a·blue, blue·circle not)   4/6
    3-grams: a·red·square red·square·and square·and·a                 3/5
    4-grams: a·red·square·and red·square·and·a                        2/4
    c = r = 7, so BP = 1 and BLEU = (6/7 · 4/6 · 3/5 · 2/4)^(1/4) = (6/35)^(1/4)."""
    result = corpus_bleu([s("a red square and a blue circle")], [[s("a red square and a green circle")]])
    assert result.matches == (6, 4, 3, 2) and result.totals == (7, 6, 5, 4)
    assert result.brevity_penalty == 1.0
    assert result.score == pytest.approx((6 / 35) ** 0.25, rel=1e-15)


def test_counts_pool_over_the_corpus_and_short_output_pays_the_brevity_penalty():
    """Add a second pair: hyp "a blue circle" (3 tokens) against a 7-token reference.  Alone it
    has no 4-gram (0/0), yet the corpus has p_4 = (2 + 0) / (4 + 0).  Pooled:
    p = 9/10, 6/8, 4/6, 2/4;  c = 10, r = 14, BP = exp(1 − 14/10) = exp(−0.4)."""
    hyps = [s("a red square and a blue circle"), s("a blue circle")]
    refs = [[s("a red square and a green circle")], [s("a blue circle and a red square")]]
    result = corpus_bleu(hyps, refs)
    assert result.matches == (9, 6, 4, 2) and result.totals == (10, 8, 6, 4)
    assert (result.hypothesis_length, result.reference_length) == (10, 14)
    assert result.brevity_penalty == pytest.approx(math.exp(-0.4), rel=1e-15)
    expected = math.exp(-0.4) * (9 / 10 * 6 / 8 * 4 / 6 * 2 / 4) ** 0.25
    assert result.score == pytest.approx(expected, rel=1e-15)
    # not the mean of the sentence scores: the second sentence alone scores 0 (no 4-gram)
    assert corpus_bleu(hyps[1:], refs[1:]).score == 0.0


def test_papineni_clipping_and_several_references():
    """The paper's example: "the" seven times.  It occurs at most twice in one reference, so the
    modified unigram precision is 2/7; no bigram matches, so BLEU is 0."""
    refs = [[s("the cat is on the mat"), s("there is a cat on the mat")]]
    result = corpus_bleu([["the"] * 7], refs)
    assert result.precisions[:2] == (2 / 7, 0.0)
    assert result.score == 0.0
    assert result.reference_length == 7  # the closer of 6 and 7 to the hypothesis's 7


def test_closest_reference_length_prefers_the_shorter_on_a_tie():
    result = corpus_bleu([s("a b c d e")], [[s("a b c d"), s("a b c d e f")]])
    assert result.reference_length == 4 and result.brevity_penalty == 1.0


def test_perfect_and_empty():
    refs = [[s("a red square and a blue circle")]]
    assert corpus_bleu([s("a red square and a blue circle")], refs).score == 1.0
    empty = corpus_bleu([[]], refs)
    assert empty.score == 0.0 and empty.brevity_penalty == 0.0
    assert ngrams(s("a b a b"), 2) == {("a", "b"): 2, ("b", "a"): 1}


def test_bad_input_is_named():
    with pytest.raises(
        TypeError, match=r"hypotheses\[0\]: expected a sequence of tokens \(e.g. text.split\(\)\)"
    ):
        corpus_bleu(["a red square"], [[s("a red square")]])
    with pytest.raises(TypeError, match=r"references\[0\]\[0\]: expected a sequence of tokens"):
        corpus_bleu([s("a red square")], [s("a red square")])  # one list too few
    with pytest.raises(ValueError, match=r"references: expected one entry per hypothesis \(2\), got 1"):
        corpus_bleu([s("a"), s("b")], [[s("a")]])
    with pytest.raises(ValueError, match=r"max_n: expected a positive integer, got 0"):
        corpus_bleu([s("a")], [[s("a")]], max_n=0)


def _random_corpus(seed: int):
    """Two references per sentence and a hypothesis made from the first by random edits (a word
    replaced, dropped or repeated), so that matches of every order occur."""
    rng = np.random.default_rng(seed)
    words = ["a", "red", "blue", "square", "circle", "and", ","]
    hyps, refs = [], []
    for _ in range(20):
        pair = [list(rng.choice(words, rng.integers(3, 12))) for _ in range(2)]
        hyp = []
        for w in pair[0]:
            edit = rng.random()
            if edit < 0.1:
                hyp.append(str(rng.choice(words)))
            elif edit < 0.2:
                hyp += [w, w]
            elif edit >= 0.3:
                hyp.append(w)  # else: dropped
        hyps.append(hyp)
        refs.append(pair)
    return hyps, refs


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_sacrebleu(seed):
    sacrebleu = pytest.importorskip("sacrebleu")
    hyps, refs = _random_corpus(seed)
    ours = corpus_bleu(hyps, refs)
    streams = [[" ".join(r[k]) for r in refs] for k in range(2)]  # sacrebleu: one list per reference
    theirs = sacrebleu.corpus_bleu(
        [" ".join(h) for h in hyps], streams, tokenize="none", smooth_method="none", force=True
    )
    assert list(ours.matches) == theirs.counts and list(ours.totals) == theirs.totals
    assert (ours.hypothesis_length, ours.reference_length) == (theirs.sys_len, theirs.ref_len)
    assert ours.score * 100 == pytest.approx(theirs.score, rel=1e-12, abs=1e-12)
    assert ours.score > 0  # a comparison of two zeros would prove little
