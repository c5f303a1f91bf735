"""``benchmarks/long_context.py`` runs end to end (its --quick smoke configuration) and its table
and verdicts say what the docstring says."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "long_context.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("long_context_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_prints_the_table_and_draws_the_figure(tmp_path, capsys):
    bench = load_benchmark()
    figure = tmp_path / "memory.png"
    bench.main(["--quick", "--figure", str(figure)])
    printed = capsys.readouterr().out
    assert figure.stat().st_size > 10_000
    assert "| 1 | 512 | 256x512 |" in printed and "| 2 | 256 |" in printed
    if bench.torch is not None:  # ours and PyTorch computed the same thing
        diffs = [float(line.rsplit("|", 2)[1]) for line in printed.splitlines() if line.startswith("| 1 |")]
        assert max(diffs) < 1e-4


def test_targets_are_judged_from_the_rows():
    bench = load_benchmark()
    rows = [
        {"H": 1, "L": 4096, "blocked_mem": 5.0, "plain_mem": 100.0, "blocked_time": 0.9, "torch_time": 1.0},
        {"H": 1, "L": 16384, "blocked_mem": 6.0, "plain_mem": 100.0, "blocked_time": 1.2, "torch_time": 1.0},
    ]
    verdicts = bench.check_targets(rows)
    assert [v.endswith("met") and "NOT" not in v for v in verdicts] == [True, True, False, False]
