"""benchmarks/streaming.py: its stream equals the dense forward, the sinks cache holds the same bytes
at every checkpoint while the keep-all cache grows, and its positions stay below the trained length."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "streaming.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("streaming_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_memory_flat_positions_bounded_and_equal_to_dense():
    bench = load_benchmark()
    reader = bench.build()
    ids = np.random.default_rng(0).integers(0, bench.VOCAB, (1, 260))
    assert bench.check_equal_to_dense(reader, ids, at=140) < 1e-4
    checkpoints = (130, 200, 260)
    streaming = reader.new_cache(1, sinks=bench.SINKS, window=bench.WINDOW)
    sinks = bench.stream(reader, ids, streaming, checkpoints)
    keep_all = bench.stream(reader, ids, reader.new_cache(1), checkpoints)
    assert len({row["nbytes"] for row in sinks}) == 1 and len({row["allocated"] for row in sinks}) == 1
    assert [row["max_position"] for row in sinks] == [bench.SINKS + bench.WINDOW - 1] * 3
    assert [row["max_position"] for row in keep_all] == [129, 199, 259]
    assert keep_all[2]["nbytes"] == 2 * keep_all[0]["nbytes"]  # 260 tokens against 130
    text = bench.table(sinks, keep_all)
    assert "sinks+window" in text and f"{sinks[0]['nbytes']:,}" in text and len(text.splitlines()) == 4
