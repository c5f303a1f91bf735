"""The command line: ``gradcheck``'s table, summary and exit code; one-line errors naming the
argument (exit 2) for every command, with nothing written; the argument types of ``mmt_numpy.cli``."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mmt_numpy.checks
from mmt_numpy import cli, ops
from mmt_numpy.__main__ import COMMANDS, Command, main
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


# ----------------------------------------------------------------------------- one-line errors


def _one_line_error(capsys, argv: list[str], expected: str) -> str:
    """Run ``main(argv)``: exit code 2 (raised or returned), stderr one line matching ``expected``."""
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.endswith("\n"), err  # one line: no usage block
    assert re.match(expected, err), err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["train", "--epochs", "0"],
            r"python -m mmt_numpy train: error: argument --epochs: expected a positive",
        ),
        (["train", "--epochs", "-3"], r".*argument --epochs: expected a positive integer, got '-3'"),
        (["train", "--epochs", "1.5"], r".*argument --epochs: expected a positive integer, got '1.5'"),
        (["train", "--seed", "-5"], r".*argument --seed: expected an integer >= 0, got '-5'"),
        (["train", "--seed", "x"], r".*argument --seed: expected an integer >= 0, got 'x'"),
        (["train", "--task", "nosuch"], r".*argument --task: invalid choice: 'nosuch'"),
        (["train", "--nosuch"], r".*error: unrecognized arguments: --nosuch"),
        ([], r"python -m mmt_numpy: error: the following arguments are required: COMMAND"),
        (["nosuch"], r".*argument COMMAND: invalid choice: 'nosuch'"),
    ],
)
def test_wrong_arguments_are_one_line_naming_the_argument(capsys, argv, expected) -> None:
    _one_line_error(capsys, argv, expected)


def test_train_with_a_wrong_argument_writes_nothing(tmp_path, capsys) -> None:
    """Item 8: --epochs 0 used to write an untrained params.npz and plots over an earlier run."""
    fresh = tmp_path / "fresh"
    _one_line_error(capsys, ["train", "--epochs", "0", "--out", str(fresh)], r".*argument --epochs")
    assert not fresh.exists()
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "params.npz").write_bytes(b"an earlier run")
    # --out comes first and is valid; the bad --seed after it must still stop everything
    _one_line_error(capsys, ["train", "--out", str(earlier), "--seed", "-5"], r".*argument --seed")
    assert [p.name for p in earlier.iterdir()] == ["params.npz"]
    assert (earlier / "params.npz").read_bytes() == b"an earlier run"


def test_the_train_task_refuses_zero_epochs_before_writing(tmp_path) -> None:
    """The same check when the task is called from Python rather than the command line."""
    from mmt_numpy.tasks import vqa

    with pytest.raises(ValueError, match="epochs: expected a positive integer, got 0"):
        vqa.main(out=str(tmp_path / "run"), epochs=0, log=lambda line: None)
    with pytest.raises(ValueError, match="seed: expected an integer >= 0, got -5"):
        vqa.main(out=str(tmp_path / "run"), seed=-5, log=lambda line: None)
    assert not (tmp_path / "run").exists()


def test_gradcheck_filter_that_matches_nothing_is_an_error_listing_the_names(capsys) -> None:
    """Item 9: a typo used to print '0 passed, 0 failed' and exit 0."""
    err = _one_line_error(
        capsys, ["gradcheck", "--filter", "nosuch"], r".*argument --filter: no check name contains 'nosuch'"
    )
    assert all(case.name in err for case in all_cases())


@pytest.mark.parametrize("where", ["a file", "below a file", "an uncreatable place"])
def test_figures_out_that_cannot_be_a_folder_is_one_line_naming_the_path(tmp_path, capsys, where) -> None:
    """Item 10: --out naming a file (or a place that cannot be written) ended in a traceback."""
    afile = tmp_path / "figure.png"
    afile.write_bytes(b"not a folder")
    if where == "a file":
        out = afile
    elif where == "below a file":
        out = afile / "figures"
    else:
        if not Path("/proc/self").is_dir():
            pytest.skip("needs /proc, where no folder can be created")
        out = Path("/proc/mmt_numpy_figures")
    err = _one_line_error(
        capsys, ["figures", "--out", str(out), "--only", "self_attention"], r".*argument --out"
    )
    assert str(out) in err
    assert afile.read_bytes() == b"not a folder"


def test_figures_out_in_a_read_only_folder_is_refused(tmp_path, capsys) -> None:
    if os.geteuid() == 0:
        pytest.skip("root may write into a read-only folder")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        _one_line_error(
            capsys, ["figures", "--out", str(locked / "figs")], r".*argument --out: expected a writable"
        )
    finally:
        locked.chmod(0o700)


def test_top_level_help_lists_each_command_once_without_markup(capsys) -> None:
    """Item 11: the help showed the module docstring's ``reST`` and the commands twice."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for markup in ("``", ":func:", ":class:", ":mod:", "{gradcheck"):
        assert markup not in text
    for name in COMMANDS:
        assert len(re.findall(rf"^\s+{name}\s", text, re.MULTILINE)) == 1, name


def test_a_new_command_is_one_entry_in_the_table(capsys, monkeypatch) -> None:
    """How another command plugs in: two functions and one COMMANDS entry."""

    def arguments(parser):
        parser.add_argument("--count", type=cli.positive_int, default=1)

    def run(args):
        print("hello " * args.count)
        return 0

    monkeypatch.setitem(COMMANDS, "hello", Command("say hello", arguments, run))
    assert main(["hello", "--count", "2"]) == 0
    assert capsys.readouterr().out.strip() == "hello hello"
    _one_line_error(capsys, ["hello", "--count", "0"], r"python -m mmt_numpy hello: error: argument --count")


# ----------------------------------------------------------------------------- argument types


@pytest.mark.parametrize(
    "convert, text, value",
    [
        (cli.positive_int, "3", 3),
        (cli.non_negative_int, "0", 0),
        (cli.positive_float, "0.5", 0.5),
        (cli.positive_float, "1e-3", 1e-3),
    ],
)
def test_number_types_convert(convert, text, value) -> None:
    assert convert(text) == value


@pytest.mark.parametrize(
    "convert, text",
    [
        (cli.positive_int, "0"),
        (cli.positive_int, "2.0"),
        (cli.positive_int, ""),
        (cli.non_negative_int, "-1"),
        (cli.positive_float, "0"),
        (cli.positive_float, "nan"),
        (cli.positive_float, "inf"),
        (cli.positive_float, "x"),
    ],
)
def test_number_types_refuse(convert, text) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=rf"^expected .*, got {re.escape(repr(text))}$"):
        convert(text)


def test_output_dir_and_input_file(tmp_path) -> None:
    afile = tmp_path / "a.npz"
    afile.write_bytes(b"x")
    assert cli.output_dir(str(tmp_path)) == tmp_path
    assert cli.output_dir(str(tmp_path / "new" / "deeper")) == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checked, not created
    for bad in (str(afile), str(afile / "sub"), ""):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a folder"):
            cli.output_dir(bad)
    assert cli.input_file(str(afile)) == afile
    with pytest.raises(argparse.ArgumentTypeError, match="which does not exist"):
        cli.input_file(str(tmp_path / "missing.npz"))
    with pytest.raises(argparse.ArgumentTypeError, match="which is a folder"):
        cli.input_file(str(tmp_path))
    made = cli.make_output_dir("--out", tmp_path / "made" / "here")
    assert made.is_dir()
    with pytest.raises(cli.CommandLineError, match=r"^argument --out: cannot create the folder"):
        cli.make_output_dir("--out", afile / "sub")


def test_train_passes_checked_arguments_to_the_task(tmp_path, monkeypatch) -> None:
    """After the checks, train creates the output folder and hands the values to the task."""
    from mmt_numpy.tasks import vqa

    calls = []
    monkeypatch.setattr(vqa, "main", lambda **kwargs: calls.append(kwargs) or 1.0)
    assert main(["train", "--out", str(tmp_path / "a" / "b"), "--epochs", "2", "--seed", "3"]) == 0
    assert calls == [{"out": str(tmp_path / "a" / "b"), "epochs": 2, "seed": 3}]
    assert (tmp_path / "a" / "b").is_dir()
    monkeypatch.chdir(tmp_path)
    assert main(["train"]) == 0  # the default folder, runs/<task>, relative to the working folder
    assert calls[-1] == {"out": str(Path("runs/vqa")), "epochs": None, "seed": 0}
    assert (tmp_path / "runs" / "vqa").is_dir()
