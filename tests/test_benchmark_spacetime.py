"""``benchmarks/spacetime.py`` runs end to end on a small configuration: the score counts are
exact, the CSV it writes reads back, the figure is drawn, and bad arguments are refused."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "spacetime.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("spacetime_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_small_run_counts_scores_exactly_and_writes_csv_and_figure(tmp_path, capsys):
    bench = load_benchmark()
    csv, figure = tmp_path / "cost.csv", tmp_path / "cost.png"
    argv = ["--frames", "1", "2", "--batch", "1", "--repeat", "1", "--csv", str(csv), "--figure", str(figure)]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    assert "forward + backward, B=1 clips, N=16 patches a frame" in printed
    rows = bench.read_csv(csv)
    assert [r["T"] for r in rows] == [1, 2]
    # H = 4 heads, N = 16: joint (T N)^2 a head, divided N T^2 (time) + T N^2 (space) a head
    assert rows[1]["joint_scores"] == 4 * 32**2 and rows[1]["divided_scores"] == 4 * (16 * 4 + 2 * 256)
    assert all(r["joint_mib"] > 0 and r["divided_ms"] > 0 for r in rows)
    assert figure.stat().st_size > 10_000


def test_bad_arguments_are_refused(capsys):
    bench = load_benchmark()
    with pytest.raises(SystemExit):
        bench.main(["--heads", "3"])
    assert "--heads: expected a divisor of --d-model 32, got 3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--frames", "0"])
    assert "--frames: expected positive integers" in capsys.readouterr().err
