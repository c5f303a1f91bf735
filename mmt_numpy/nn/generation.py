"""Writing a sequence token by token (§6.2): greedy decoding, beam search and sampling.

All three drive a :class:`Decoding`: an object that, given every token written so far
``(N, t)`` (starting with the start token), returns the log-probabilities of the next token
``(N, V)``, and that can keep, drop or repeat rows (:meth:`Decoding.reorder`: finished rows
leave, beams are copied).  Whether it recomputes the whole prefix or reads a KV cache is its
own business (:meth:`mmt_numpy.nn.ImageCaptioner.generate`, ``use_cache``); a hand-made
table of probabilities is a Decoding too (the four-word example of notebook 10).

* **Greedy**: at every step take the most probable token; stop a row at the end token.
* **Beam search** keeps the ``K`` best partial sequences by summed log-probability.  One step
  (:func:`beam_search_step`): extend each of the K by every token, ``K·V`` candidates, and keep
  the K best.  A candidate that ends with the end token is finished and leaves the beam; the
  finished sequence with the best **length-normalised** score
  ``score(y) = Σ_t log p(y_t | y_<t) / |y|^α`` wins (|y| counts the end token; α = 0 prefers
  short sequences, which sum fewer negative terms; α = 1 is the mean log-probability).  With
  K = 1 it is greedy decoding; with K at least the number of prefixes it is exhaustive search.
* **Sampling** draws each token from ``softmax(log p / temperature)``, optionally restricted
  to the ``top_k`` most probable tokens and then to the smallest set whose probability reaches
  ``top_p`` (nucleus sampling, Holtzman et al. 2020), renormalised.

Every method returns the token ids ``(B, T)`` (``T`` = the longest sequence written, at most
``max_len``; ``pad_id`` after a row's end token) and each sequence's summed log-probability
**under the model** (the unmodified ``log p``, whatever temperature or truncation sampled it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

import numpy as np


class Decoding(Protocol):
    """What generation needs from a model (see the module docstring)."""

    batch: int  # the number of rows it currently decodes

    def log_probs(self, tokens: np.ndarray) -> np.ndarray:
        """``tokens (N, t)`` every token so far, start token first -> ``(N, V)`` next-token log-probs."""
        ...

    def reorder(self, rows: np.ndarray) -> None:
        """Continue with rows ``rows (N',)`` of the current batch, in that order (repeats allowed)."""
        ...


class TableDecoding:
    """A language model written out as a table: the next-token distribution after each prefix.

    ``table[prefix]`` is a probability vector over the V tokens for the tokens written so far
    ``prefix`` (a tuple of ids, the start token left out: ``table[()]`` is the first step).  For
    worked examples (notebook 10) and tests: greedy and beam search on it can be followed by hand.

    Args:
        table: ``{prefix: probabilities (V,)}``; every prefix that decoding reaches must be there.
    """

    def __init__(self, table: dict[tuple[int, ...], Sequence[float]]) -> None:
        self.table = {tuple(k): np.asarray(v, dtype=np.float64) for k, v in table.items()}
        sizes = {v.shape for v in self.table.values()}
        if len(sizes) != 1 or len(next(iter(sizes))) != 1:
            raise ValueError(
                f"table: expected probability vectors of one length V, got shapes {sorted(sizes)}"
            )
        for prefix, probs in self.table.items():
            if probs.min() < 0 or abs(probs.sum() - 1) > 1e-9:
                raise ValueError(
                    f"table[{prefix}]: expected probabilities summing to 1, got {probs.tolist()}"
                )
        self.batch = 1

    def log_probs(self, tokens: np.ndarray) -> np.ndarray:
        rows = []
        for row in np.asarray(tokens)[:, 1:].tolist():
            if tuple(row) not in self.table:
                raise KeyError(f"tokens: the table has no distribution after the prefix {tuple(row)}")
            rows.append(self.table[tuple(row)])
        with np.errstate(divide="ignore"):  # a probability of 0 is a log-probability of -inf
            return np.log(np.array(rows))

    def reorder(self, rows: np.ndarray) -> None:
        self.batch = len(rows)


class BeamStep(NamedTuple):
    """The K best candidates of one beam-search step, best first, for every batch row."""

    parents: np.ndarray  # (B, K) which beam each candidate extends
    tokens: np.ndarray  # (B, K) the token it appends
    scores: np.ndarray  # (B, K) its summed log-probability (-inf for an empty slot)


def beam_search_step(scores: np.ndarray, log_probs: np.ndarray, beam_size: int) -> BeamStep:
    """One step of beam search: extend every beam by every token and keep the ``beam_size`` best.

    Args:
        scores: ``(B, K)`` the summed log-probability of each live beam; ``-inf`` marks an
            empty slot (at the first step only beam 0 holds the start token).
        log_probs: ``(B, K, V)`` each beam's next-token log-probabilities.
        beam_size: how many candidates to keep (``<= K·V``).

    Returns:
        :class:`BeamStep`: for every row the ``beam_size`` candidates with the largest
        ``scores[b, k] + log_probs[b, k, v]``, best first (ties: lower beam, then lower token),
        as parent beam, token and new score.
    """
    B, K, V = log_probs.shape
    candidates = (scores[:, :, None] + log_probs).reshape(B, K * V)  # (B, K·V)
    best = np.argsort(-candidates, axis=-1, kind="stable")[:, :beam_size]  # (B, beam_size)
    return BeamStep(best // V, best % V, np.take_along_axis(candidates, best, axis=-1))


def _trim(ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``ids (B, max_len)`` cut to the longest written length (at least 1)."""
    return ids[:, : max(int(lengths.max()), 1)]


def _one_per_row(
    decoding: Decoding,
    choose: Callable[[np.ndarray], np.ndarray],
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_len: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy decoding and sampling: one sequence per row; ``choose(log_probs (N, V)) -> (N,)`` picks."""
    B = decoding.batch
    out = np.full((B, max_len), pad_id, dtype=np.int64)
    total = np.zeros(B, dtype=np.float64)
    lengths = np.zeros(B, dtype=np.int64)
    rows = np.arange(B)  # which original rows are still writing
    tokens = np.full((B, 1), bos_id, dtype=np.int64)
    for t in range(max_len):
        log_probs = decoding.log_probs(tokens)  # (len(rows), V)
        nxt = choose(log_probs)
        total[rows] += log_probs[np.arange(len(rows)), nxt]
        out[rows, t] = nxt
        lengths[rows] = t + 1
        writing = nxt != eos_id
        if not writing.any() or t == max_len - 1:
            break
        if not writing.all():  # finished rows leave the batch
            kept = np.flatnonzero(writing)
            decoding.reorder(kept)
            rows, tokens, nxt = rows[kept], tokens[kept], nxt[kept]
        tokens = np.concatenate([tokens, nxt[:, None]], axis=1)
    return _trim(out, lengths), total


def greedy(
    decoding: Decoding, *, bos_id: int, eos_id: int, pad_id: int, max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy decoding: the most probable token at every step (the lowest id on a tie).

    Returns:
        ``ids (B, T)`` and the summed log-probabilities ``(B,)`` (module docstring).
    """
    return _one_per_row(
        decoding, lambda lp: lp.argmax(axis=-1), bos_id=bos_id, eos_id=eos_id, pad_id=pad_id, max_len=max_len
    )


def sampling_distribution(
    log_probs: np.ndarray,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> np.ndarray:
    """The distribution sampling draws from, ``(N, V)`` probabilities summing to 1 per row.

    ``softmax(log_probs / temperature)``; then, with ``top_k``, zero outside the k most
    probable tokens; then, with ``top_p``, keep the most probable tokens until their
    probability reaches ``top_p`` (the token that crosses it included) and zero the rest;
    renormalise after each cut.  The most probable token always survives.
    """
    scaled = log_probs / temperature
    probs = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    order = np.argsort(-probs, axis=-1, kind="stable")  # most probable first
    ranked = np.take_along_axis(probs, order, axis=-1)
    keep = np.ones_like(ranked, dtype=bool)
    if top_k is not None:
        keep[:, top_k:] = False
        ranked = np.where(keep, ranked, 0.0)
        ranked /= ranked.sum(axis=-1, keepdims=True)
    if top_p is not None:
        before = np.cumsum(ranked, axis=-1) - ranked  # probability of the tokens ranked above
        keep &= before < top_p
    ranked = np.where(keep, ranked, 0.0)
    ranked /= ranked.sum(axis=-1, keepdims=True)
    out = np.empty_like(probs)
    np.put_along_axis(out, order, ranked, axis=-1)
    return out


def sample(
    decoding: Decoding,
    rng: np.random.Generator,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_len: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sampling from :func:`sampling_distribution` at every step, one uniform number per row from ``rng``.

    Returns:
        ``ids (B, T)`` and the summed log-probabilities under the model ``(B,)``.
    """

    def choose(log_probs: np.ndarray) -> np.ndarray:
        cdf = np.cumsum(sampling_distribution(log_probs, temperature, top_k, top_p), axis=-1)
        u = rng.random(len(log_probs))[:, None] * cdf[:, -1:]
        return np.argmax(cdf > u, axis=-1)  # the first token whose cumulative probability passes u

    return _one_per_row(decoding, choose, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id, max_len=max_len)


def beam_search(
    decoding: Decoding,
    beam_size: int,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_len: int,
    alpha: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Beam search of width ``beam_size`` with the length-normalised score ``Σ log p / |y|^alpha``.

    Each row's beams are rows ``b·K … b·K + K − 1`` of the decoding (it is reordered to that
    layout first).  A step takes the K best of the K·V candidates (:func:`beam_search_step`);
    those ending with ``eos_id`` are finished (length = their tokens, end token included),
    the others form the next beam; at ``max_len`` the live ones are finished as they are.  A
    row stops early once no live beam can still beat its best finished sequence: a live
    beam's summed log-probability only falls, so its best possible score is
    ``score / max_len^alpha`` (this needs ``alpha >= 0``), and stopping then changes nothing.

    Returns:
        ``ids (B, T)`` of the best finished sequence of every row and its summed
        log-probability ``(B,)`` (not divided by the length).
    """
    B, K = decoding.batch, beam_size
    decoding.reorder(np.repeat(np.arange(B), K))
    tokens = np.full((B * K, 1), bos_id, dtype=np.int64)
    scores = np.full((B, K), -np.inf)
    scores[:, 0] = 0.0  # at first, one beam holds the start token; the other slots are empty
    best_norm = np.full(B, -np.inf)
    best_total = np.zeros(B)
    best_ids = np.full((B, max_len), pad_id, dtype=np.int64)
    best_len = np.zeros(B, dtype=np.int64)
    rows_of = np.arange(B)[:, None] * K
    for t in range(max_len):
        log_probs = decoding.log_probs(tokens).reshape(B, K, -1)
        step = beam_search_step(scores, log_probs, K)
        rows = (rows_of + step.parents).reshape(-1)  # the beam each candidate extends, as a decoding row
        ends = (step.tokens == eos_id) | (t == max_len - 1)
        finished = ends & np.isfinite(step.scores)
        normalised = np.where(finished, step.scores / (t + 1) ** alpha, -np.inf)
        j = normalised.argmax(axis=-1)  # each row's best candidate finishing now
        better = normalised[np.arange(B), j] > best_norm
        for b in np.flatnonzero(better):
            row = rows_of[b, 0] + step.parents[b, j[b]]
            best_ids[b] = pad_id
            best_ids[b, :t] = tokens[row, 1:]
            best_ids[b, t] = step.tokens[b, j[b]]
            best_norm[b], best_total[b], best_len[b] = normalised[b, j[b]], step.scores[b, j[b]], t + 1
        scores = np.where(ends, -np.inf, step.scores)  # finished candidates leave the beam
        bound = scores.max(axis=-1) / max_len**alpha  # the best a live beam could still reach
        if t == max_len - 1 or np.all(best_norm >= bound):
            break
        tokens = np.concatenate([tokens[rows], step.tokens.reshape(-1, 1)], axis=1)
        decoding.reorder(rows)
    return _trim(best_ids, best_len), best_total
