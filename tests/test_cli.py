"""The command line ``python -m mmt_numpy gradcheck``: its table, its summary and its exit code."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

import mmt_numpy.checks
from mmt_numpy import ops
from mmt_numpy.__main__ import main
from mmt_numpy.checks import Case, all_cases
from mmt_numpy.gradcheck import check_op

SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed \(central differences in float64", re.MULTILINE)


def _relu_case(name: str, broken: bool) -> Case:
    """A tiny case; ``broken`` doubles the gradient, which the checker must reject."""

    def backward(d_out, cache):
        dx = ops.relu_backward(d_out, cache)
        return 2 * dx if broken else dx

    def run():
        x = np.random.default_rng(0).standard_normal((2, 3)) + 5.0  # far from the kink
        return check_op(ops.relu_forward, backward, {"x": x}, name=name)

    return Case(name, run)


def test_gradcheck_runs_every_case_and_exits_0(capsys):
    names = [case.name for case in all_cases()]
    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.endswith(("PASS", "FAIL"))]
    assert len(rows) == len(names)
    for name, row in zip(names, rows, strict=True):
        assert row.startswith(name) and row.endswith("PASS"), row
    assert SUMMARY.search(out).groups() == (str(len(names)), "0")


def test_a_failing_case_gives_exit_code_1(capsys, monkeypatch):
    cases = [_relu_case("good relu", broken=False), _relu_case("broken relu", broken=True)]
    monkeypatch.setattr(mmt_numpy.checks, "all_cases", lambda: cases)
    assert main(["gradcheck"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^good relu .* PASS$", out, re.MULTILINE)
    assert re.search(r"^broken relu .* FAIL$", out, re.MULTILINE)
    assert SUMMARY.search(out).groups() == ("1", "1")


def test_filter_and_verbose(capsys, monkeypatch):
    cases = [_relu_case("relu a", broken=False), _relu_case("other", broken=True)]
    monkeypatch.setattr(mmt_numpy.checks, "all_cases", lambda: cases)
    assert main(["gradcheck", "--filter", "relu", "-v"]) == 0  # the broken case is filtered out
    out = capsys.readouterr().out
    assert "other" not in out
    assert "relu a: PASS" in out  # the verbose per-case report ...
    assert re.search(r"^  x +\(2, 3\) +elements +6 .* ok$", out, re.MULTILINE)  # ... a line per tensor
    assert SUMMARY.search(out).groups() == ("1", "0")


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-command"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "mmt_numpy", "gradcheck", "--filter", "residual"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert SUMMARY.search(result.stdout).groups()[1] == "0"
