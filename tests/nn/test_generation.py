"""Generation (§6.2): greedy, beam search and sampling.  Beam 1 is greedy; a beam as wide as every
prefix is exhaustive search, a narrower one misses on a constructed case; cached and uncached
generation agree for every method; sampling follows its seed and its distribution; the returned
log-probabilities are the model's; bad arguments are named."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mmt_numpy import ops
from mmt_numpy.checks import randn
from mmt_numpy.nn import ImageCaptioner
from mmt_numpy.nn.generation import (
    TableDecoding,
    beam_search,
    beam_search_step,
    greedy,
    sample,
    sampling_distribution,
)

BOS, EOS, PAD = 1, 2, 0


def captioner(
    vocab: int = 9,
    max_len: int = 8,
    seed: int = 0,
    dtype=np.float64,
    scale: float = 1.0,
    eos_bias: float = 0.3,
):
    """A small untrained captioner (PyTorch-style initial values; moved off them, a random tied
    table makes every token repeat itself).  ``scale`` sharpens its distributions, ``eos_bias``
    makes the end token likelier: with the defaults its rows end after 3, 4 or 8 tokens."""
    m = ImageCaptioner(
        vocab, 6, (2, 3), bos_id=BOS, eos_id=EOS, pad_id=PAD, d_model=8, num_heads=2, d_ff=12,
        max_len=max_len, dtype=dtype, rng=seed,
    )  # fmt: skip
    m.output.b.data[EOS] += eos_bias
    m.decoder.norm.gamma.data *= scale
    return m


def teacher_forced_log_prob(model, patches, ids):
    """Σ log p of each row of ``ids`` (up to and with its end token) by one full forward pass."""
    B, T = ids.shape
    inputs = np.concatenate([np.full((B, 1), BOS), ids[:, :-1]], axis=1)
    inputs = np.where(inputs == PAD, BOS, inputs)  # positions after the end are not scored anyway
    log_probs = ops.log_softmax(model(patches, inputs))
    picked = np.take_along_axis(log_probs, ids[..., None], axis=-1)[..., 0]
    ended = np.cumsum(ids == EOS, axis=1) - (ids == EOS)  # 1 after the end token
    return np.where((ended == 0) & (ids != PAD), picked, 0.0).sum(axis=1)


@pytest.fixture(scope="module")
def model_and_images():
    return captioner(), randn(3, 4, 6, 6)


METHODS = {
    "greedy": {},
    "beam 3": {"beam_size": 3},
    "beam 4, alpha 0": {"beam_size": 4, "alpha": 0.0},
    "sampling, temperature 0.8": {"temperature": 0.8, "rng": 5},
    "sampling, top-k 3": {"top_k": 3, "rng": 6},
    "sampling, top-p 0.7": {"top_p": 0.7, "rng": 7},
}


@pytest.mark.parametrize("method", METHODS)
def test_cached_and_uncached_generation_agree(model_and_images, method):
    model, patches = model_and_images
    ids, log_p = model.generate(patches, max_len=8, **METHODS[method])
    ids2, log_p2 = model.generate(patches, max_len=8, use_cache=False, **METHODS[method])
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_allclose(log_p, log_p2, rtol=0, atol=1e-12)
    # and the log-probabilities are the model's, as one teacher-forced pass computes them
    np.testing.assert_allclose(log_p, teacher_forced_log_prob(model, patches, ids), rtol=0, atol=1e-12)


def test_ids_end_with_the_end_token_and_are_padded_after(model_and_images):
    model, patches = model_and_images
    ids, _ = model.generate(patches, max_len=8)
    lengths = []
    for row in ids.tolist():
        n = row.index(EOS) + 1 if EOS in row else len(row)
        assert all(t == PAD for t in row[n:])
        assert PAD not in row[:n] and BOS not in row[:n]  # never written
        lengths.append(n)
    assert ids.shape[1] == max(lengths) <= 8
    assert len(set(lengths)) > 1  # the rows really end at different steps


def test_beam_of_one_is_greedy(model_and_images):
    model, patches = model_and_images
    for use_cache in (True, False):
        g_ids, g_log_p = model.generate(patches, max_len=8, use_cache=use_cache)
        b_ids, b_log_p = model.generate(patches, max_len=8, beam_size=1, use_cache=use_cache)
        from mmt_numpy.nn.captioner import CaptionDecoding

        decoding = CaptionDecoding(model, model.encode(patches)[0], None, use_cache)
        bs_ids, bs_log_p = beam_search(decoding, 1, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_len=8)
        np.testing.assert_array_equal(bs_ids, g_ids)
        np.testing.assert_allclose(bs_log_p, g_log_p, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(b_ids, g_ids)


def _exhaustive_best(model, patches, max_len, alpha):
    """Every sequence of at most max_len tokens that ends at its first end token (or is cut at
    max_len), scored Σ log p / length^alpha; the best per image."""
    writable = [t for t in range(model.vocab_size) if t not in (BOS, PAD)]
    best = [(-np.inf, None, None)] * len(patches)
    sequences = []
    for n in range(1, max_len + 1):
        for seq in itertools.product(writable, repeat=n):
            if EOS in seq[:-1] or (n < max_len and seq[-1] != EOS):
                continue
            sequences.append(seq)
    for seq in sequences:
        ids = np.full((len(patches), max_len), PAD)
        ids[:, : len(seq)] = seq
        log_p = teacher_forced_log_prob(model, patches, ids)
        for b in range(len(patches)):
            score = log_p[b] / len(seq) ** alpha
            if score > best[b][0]:
                best[b] = (score, seq, log_p[b])
    return best, len(sequences)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_a_beam_of_every_prefix_is_exhaustive_search(alpha):
    """A vocabulary of 4 writable tokens (3 words and [EOS]; [PAD] and [BOS] are never written),
    length 3: a beam of 16 keeps every two-token prefix, so it must return the sequence that
    enumerating all of them scores highest."""
    model = captioner(vocab=6, max_len=3, seed=10, scale=3.0, eos_bias=1.0)
    patches = randn(11, 3, 6, 6)
    best, count = _exhaustive_best(model, patches, 3, alpha)
    assert count == 1 + 3 + 9 * 4  # [EOS]; w [EOS]; w w then any of the 4
    for use_cache in (True, False):
        ids, log_p = model.generate(patches, max_len=3, beam_size=16, alpha=alpha, use_cache=use_cache)
        for b in range(len(patches)):
            _, seq, seq_log_p = best[b]
            assert tuple(t for t in ids[b].tolist()[: len(seq)]) == seq
            assert (ids[b, len(seq) :] == PAD).all()
            assert log_p[b] == pytest.approx(seq_log_p, abs=1e-12)
    if alpha == 1.0:  # not a trivial win: on image 1 greedy and a beam of 2 miss the best
        assert best[1][1] == (3, 3, 3)
        assert model.generate(patches[1:2], max_len=3)[0].tolist() == [[EOS]]
        assert model.generate(patches[1:2], max_len=3, beam_size=2)[0].tolist() == [[5, 3, 3]]


# A constructed case: tokens 0 a, 1 b, 2 [EOS] of the module constants... here with its own table.
A, B_, C, X, Y, END = range(6)


def trap_table() -> TableDecoding:
    """The best sequence, c y [EOS] (p = 0.25), starts with the *least* likely first word.

    first word: a 0.40, b 0.35, c 0.25;  a -> x 0.9;  b -> x 0.9;  c -> y 1.0;
    a x -> [EOS] 0.5 (p = 0.18), b x -> [EOS] 0.5 (0.1575), c y -> [EOS] 1.0 (0.25).
    Greedy and a beam of 2 drop c at the first step; a beam of 3 keeps it."""

    def p(**kw):
        v = np.zeros(6)
        for k, val in kw.items():
            v["a b c x y end".split().index(k)] = val
        return v

    rest = p(x=0.2, y=0.2, end=0.5, a=0.1)
    return TableDecoding(
        {
            (): p(a=0.4, b=0.35, c=0.25),
            (A,): p(x=0.9, y=0.1),
            (B_,): p(x=0.9, y=0.1),
            (C,): p(y=1.0),
            **{(f, s): rest for f in (A, B_) for s in (X, Y)},
            (C, Y): p(end=1.0),
        }
    )


@pytest.mark.parametrize(
    ("beam", "expected", "prob"), [(1, (A, X, END), 0.18), (2, (A, X, END), 0.18), (3, (C, Y, END), 0.25)]
)
def test_a_narrow_beam_misses_the_best_sequence(beam, expected, prob):
    ids, log_p = beam_search(trap_table(), beam, bos_id=-1, eos_id=END, pad_id=-2, max_len=3, alpha=0.0)
    assert tuple(ids[0].tolist()) == expected
    assert np.exp(log_p[0]) == pytest.approx(prob, rel=1e-12)
    g_ids, _ = greedy(trap_table(), bos_id=-1, eos_id=END, pad_id=-2, max_len=3)
    assert tuple(g_ids[0].tolist()) == (A, X, END)


def test_beam_search_step_by_hand():
    """Two beams (log p −1 and −2) over three tokens: the candidates are their sums."""
    scores = np.array([[-1.0, -2.0]])
    log_probs = np.log(np.array([[[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]]]))
    step = beam_search_step(scores, log_probs, 3)
    candidates = scores[0][:, None] + log_probs[0]
    order = np.argsort(-candidates.ravel())[:3]
    assert step.parents[0].tolist() == (order // 3).tolist() == [0, 1, 0]
    assert step.tokens[0].tolist() == (order % 3).tolist() == [0, 0, 1]
    np.testing.assert_allclose(step.scores[0], candidates.ravel()[order])
    # an empty slot (-inf) is never chosen while a live candidate remains
    empty = beam_search_step(np.array([[0.0, -np.inf]]), log_probs, 3)
    assert empty.parents[0].tolist() == [0, 0, 0]


def test_sampling_is_reproducible_from_a_seed(model_and_images):
    model, patches = model_and_images
    first = model.generate(patches, max_len=8, temperature=1.5, rng=42)
    again = model.generate(patches, max_len=8, temperature=1.5, rng=np.random.default_rng(42))
    other = model.generate(patches, max_len=8, temperature=1.5, rng=43)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_sampling_distribution_by_hand():
    log_p = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    np.testing.assert_allclose(sampling_distribution(log_p), np.exp(log_p))
    np.testing.assert_allclose(sampling_distribution(log_p, top_k=2), [[0.625, 0.375, 0, 0]])
    # 0.5 + 0.3 passes 0.75: the nucleus is the first two
    np.testing.assert_allclose(sampling_distribution(log_p, top_p=0.75), [[0.625, 0.375, 0, 0]])
    np.testing.assert_allclose(
        sampling_distribution(log_p, top_p=0.81), [[0.5, 0.3, 0.15, 0]] / np.float64(0.95)
    )
    np.testing.assert_allclose(
        sampling_distribution(log_p, top_p=0.1), [[1.0, 0, 0, 0]]
    )  # the first always stays
    cold = sampling_distribution(log_p, temperature=0.5)
    np.testing.assert_allclose(
        cold, [np.array([0.5, 0.3, 0.15, 0.05]) ** 2 / np.sum(np.array([0.5, 0.3, 0.15, 0.05]) ** 2)]
    )
    assert sampling_distribution(log_p, temperature=1e-3)[0, 0] == pytest.approx(1.0)


def test_samples_follow_the_distribution():
    """20,000 one-token samples from a table: frequencies within 4 standard errors."""
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    table = TableDecoding({(): np.r_[probs, 0.0]})
    table.batch = 20_000
    ids, _ = sample(table, np.random.default_rng(0), bos_id=9, eos_id=4, pad_id=9, max_len=1, top_p=0.9)
    expected = np.array([0.5, 0.3, 0.15, 0.0]) / 0.95
    freq = np.bincount(ids[:, 0], minlength=4) / len(ids)
    assert np.all(np.abs(freq - expected) < 4 * np.sqrt(expected * (1 - expected) / len(ids)) + 1e-12)
    assert freq[3] == 0  # outside the nucleus: never drawn


def test_float32_generation():
    model = captioner(dtype=np.float32)
    patches = randn(3, 2, 6, 6).astype(np.float32)
    for kw in ({}, {"beam_size": 3}, {"top_k": 4, "rng": 0}):
        a, la = model.generate(patches, max_len=6, **kw)
        b, lb = model.generate(patches, max_len=6, use_cache=False, **kw)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(la, lb, atol=1e-4)


def test_bad_arguments_are_named(model_and_images):
    model, patches = model_and_images
    cases = [
        (dict(max_len=8, beam_size=0), ValueError, r"beam_size: expected a positive integer, got 0"),
        (dict(max_len=0), ValueError, r"max_len: expected a positive integer, got 0"),
        (dict(max_len=9), ValueError, r"max_len: expected at most 8 \(the decoder's text positions\), got 9"),
        (dict(max_len=8, top_p=0.0), ValueError, r"top_p: expected a probability in \(0, 1\], got 0.0"),
        (dict(max_len=8, top_p=1.5), ValueError, r"top_p: expected a probability in \(0, 1\], got 1.5"),
        (dict(max_len=8, top_k=0), ValueError, r"top_k: expected a positive integer, got 0"),
        (dict(max_len=8, temperature=-1.0), ValueError, r"temperature: expected a positive number, got -1.0"),
        (
            dict(max_len=8, beam_size=2, top_k=3),
            ValueError,
            r"beam_size: sampling .* expected beam_size=1, got 2",
        ),
        (dict(max_len=8, alpha=-0.5), ValueError, r"alpha: expected a number >= 0, got -0.5"),
        (dict(max_len=8, use_cache=1), TypeError, r"use_cache: expected True or False, got 1"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            model.generate(patches, **kwargs)
    with pytest.raises(
        ValueError, match=r"patches: expected 6 patches per image \(a 2x3 grid .*got shape \(4, 5, 6\)"
    ):
        model.generate(patches[:, :5], max_len=8)
    with pytest.raises(ValueError, match=r"patches: expected last dimension 6 .*got shape \(4, 6, 7\)"):
        model.generate(randn(0, 4, 6, 7), max_len=8)
    with pytest.raises(ValueError, match=r"patches: expected 3 dimensions"):
        model.generate(patches[0], max_len=8)
    with pytest.raises(KeyError, match=r"the table has no distribution after the prefix \(4,\)"):
        greedy(TableDecoding({(): [0, 0, 0, 0, 1.0]}), bos_id=0, eos_id=3, pad_id=0, max_len=2)
