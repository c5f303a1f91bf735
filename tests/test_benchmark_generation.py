"""benchmarks/generation.py: the three decoders it times write the same tokens, on its own model
scaled down so that the test takes a second, and its table is what the README quotes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "generation.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("generation_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.MODEL = dict(
        d_model=16, num_heads=4, d_ff=32, encoder_layers=1, decoder_layers=2, vocab=50, grid=(2, 2)
    )
    return module


def test_every_run_writes_exactly_n_tokens_and_cache_equals_recompute():
    bench = load_benchmark()
    model, patches = bench.build(np.float64, 12)
    cached = bench.ours_fn(model, patches, 12, True)()
    assert cached.shape == (1, 12) and bench.EOS not in cached  # the end token is unreachable
    np.testing.assert_array_equal(cached, bench.ours_fn(model, patches, 12, False)())


def test_torch_writes_the_same_tokens():
    pytest.importorskip("torch")
    bench = load_benchmark()
    bench.check_same_tokens([5, 12])  # raises when they differ
    model, patches = bench.build(np.float64, 12)
    np.testing.assert_array_equal(
        bench.torch_fn(model, patches, 12)(), bench.ours_fn(model, patches, 12, True)()
    )


def test_table_reports_rates_and_ratios():
    bench = load_benchmark()
    rows = [{"tokens": 16, "cached": 0.01, "recompute": 0.08, "torch": 0.04}]
    text = bench.table(rows)
    assert "1600 tok/s" in text and "8.0x" in text and "4.0x" in text
