"""Streaming a text past the trained length: bytes held and time per token, flat with the sinks cache.

    python benchmarks/streaming.py            (to 20 000 tokens, about a minute)
    python benchmarks/streaming.py --quick    (to 2 000 tokens, a few seconds)

The model is the reader of the length-extrapolation experiment (``python -m mmt_numpy
longtext``): a :class:`~mmt_numpy.nn.LongTextReader` with RoPE, width 64, 4 heads, 2 layers,
d_ff 128, float32, batch 1, random weights (speed and memory do not depend on them).  It reads
one token per step, through two caches side by side in one run:

* ``sinks + window``: :class:`~mmt_numpy.nn.StreamingKVCache` with the experiment's 4 sinks
  and a window of 124 tokens, so that every position it counts stays below the trained
  length 128, however far the stream runs;
* ``keep all``: a plain :class:`~mmt_numpy.nn.KVCache` that keeps every token (the exact
  causal model; its RoPE positions run to the stream's length).

At each checkpoint it prints, per cache, the bytes of keys and values held (``nbytes``; the
streaming cache's buffer never grows past ``allocated_bytes``), the largest position RoPE was
given, and the time per token over the segment since the previous checkpoint (wall clock,
BLAS held at one thread: the products are too small for two).  Before timing, the streaming
run's logits at token 300 are checked against the dense forward under
``PositionScheme("rope", window=124, sinks=4)`` over the whole prefix (the script stops if they
differ by more than 1e-4 in float32).
"""

from __future__ import annotations

import argparse
import copy
import time
from contextlib import nullcontext

import numpy as np

from mmt_numpy.nn import KVCache, LongTextReader, PositionScheme
from mmt_numpy.ops.flash_attention import blas_controller

MODEL = dict(d_model=64, num_heads=4, num_layers=2, d_ff=128)
VOCAB, ANSWERS = 64, 10
SINKS, WINDOW = 4, 124  # sinks + window = 128, the experiment's trained length
CHECKPOINTS = (1_000, 2_000, 5_000, 10_000, 20_000)
QUICK_CHECKPOINTS = (250, 500, 1_000, 2_000)
CHECK_AT = 300  # the token at which the stream is compared with the dense forward


def build() -> LongTextReader:
    reader = LongTextReader(VOCAB, ANSWERS, position="rope", dtype=np.float32, rng=0, **MODEL)
    reader.eval()
    return reader


def check_equal_to_dense(reader: LongTextReader, ids: np.ndarray, at: int = CHECK_AT) -> float:
    """Largest difference between the stream's logits at token ``at`` and the scheme's dense forward."""
    cache = reader.new_cache(1, sinks=SINKS, window=WINDOW)
    for t in range(at):
        streamed = reader.step(ids[:, t : t + 1], cache)
    dense = copy.deepcopy(reader)
    dense.set_position(PositionScheme("rope", window=WINDOW, sinks=SINKS))
    return float(np.abs(streamed - dense(ids[:, :at])).max())


def record_positions(cache: KVCache) -> list[int]:
    """Make ``cache`` note the largest position it hands to RoPE; returns the (growing) record."""
    largest = [0]
    positions = cache.attend_positions

    def recording(layer: int) -> tuple[np.ndarray, np.ndarray]:
        query_positions, key_positions = positions(layer)
        largest[0] = max(largest[0], int(key_positions.max()))
        return query_positions, key_positions

    cache.attend_positions = recording
    return largest


def stream(
    reader: LongTextReader, ids: np.ndarray, cache: KVCache, checkpoints: tuple[int, ...]
) -> list[dict]:
    """Feed ``ids (1, N)`` one token per step through ``cache``; one row per checkpoint."""
    largest = record_positions(cache)
    rows, done = [], 0
    start = time.perf_counter()
    for t in range(ids.shape[1]):
        logits = reader.step(ids[:, t : t + 1], cache)
        if t + 1 in checkpoints:
            seconds = time.perf_counter() - start
            if not np.isfinite(logits).all():
                raise SystemExit(f"non-finite logits after {t + 1} tokens")
            rows.append(
                {
                    "tokens": t + 1,
                    "nbytes": cache.nbytes,
                    "allocated": cache.allocated_bytes,
                    "max_position": largest[0],
                    "ms_per_token": 1e3 * seconds / (t + 1 - done),
                }
            )
            done = t + 1
            start = time.perf_counter()
    return rows


def table(streaming: list[dict], keep_all: list[dict]) -> str:
    lines = [
        f"{'tokens':>7} | {'sinks+window: bytes held':>24} {'buffer':>8} {'max pos':>7} {'ms/token':>8} | "
        f"{'keep all: bytes held':>20} {'max pos':>7} {'ms/token':>8}"
    ]
    for s, k in zip(streaming, keep_all, strict=True):
        lines.append(
            f"{s['tokens']:>7} | {s['nbytes']:>24,} {s['allocated']:>8,} {s['max_position']:>7} "
            f"{s['ms_per_token']:>8.3f} | {k['nbytes']:>20,} {k['max_position']:>7} {k['ms_per_token']:>8.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="stream 2 000 tokens instead of 20 000")
    args = parser.parse_args(argv)
    checkpoints = QUICK_CHECKPOINTS if args.quick else CHECKPOINTS
    reader = build()
    ids = np.random.default_rng(1).integers(0, VOCAB, (1, checkpoints[-1]))
    controller = blas_controller()
    limit = nullcontext() if controller is None else controller.limit(limits=1, user_api="blas")
    with limit:
        difference = check_equal_to_dense(reader, ids)
        if difference > 1e-4:
            raise SystemExit(
                f"the stream differs from the dense forward by {difference:.2e} at token {CHECK_AT}"
            )
        streaming = stream(reader, ids, reader.new_cache(1, sinks=SINKS, window=WINDOW), checkpoints)
        keep_all = stream(reader, ids, reader.new_cache(1), checkpoints)
    c = MODEL
    print(
        f"streaming a LongTextReader (RoPE, width {c['d_model']}, {c['num_heads']} heads, {c['num_layers']} "
        f"layers, float32, batch 1) one token per step; sinks {SINKS} + window {WINDOW}; stream equals the "
        f"dense PositionScheme forward at token {CHECK_AT} to {difference:.1e}"
    )
    print(table(streaming, keep_all))
    ratio = streaming[-1]["ms_per_token"] / streaming[0]["ms_per_token"]
    print(
        f"sinks+window: bytes held at {streaming[-1]['tokens']:,} tokens / at {streaming[0]['tokens']:,}: "
        f"{streaming[-1]['nbytes'] / streaming[0]['nbytes']:.2f}; time per token: {ratio:.2f}; "
        f"keep all / sinks+window at {keep_all[-1]['tokens']:,}: bytes "
        f"{keep_all[-1]['nbytes'] / streaming[-1]['nbytes']:.0f}x, time "
        f"{keep_all[-1]['ms_per_token'] / streaming[-1]['ms_per_token']:.2f}x"
    )


if __name__ == "__main__":
    main()
