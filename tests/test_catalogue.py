"""Every case of the gradient-check catalogue (``python -m mmt_numpy gradcheck``) passes.

The cases are collected from ``mmt_numpy.checks.all_cases()``, so a check that another part
of the package registers is tested here without editing this file.  The catalogue runs
once per session, under a profiler hook that records which functions ran, so that the
last test can also prove that every backward of ``mmt_numpy.ops`` is exercised by some
case (an op added without a check fails there).
"""

from __future__ import annotations

import sys
import traceback
from types import CodeType

import pytest

from mmt_numpy import ops
from mmt_numpy.checks import all_cases
from mmt_numpy.gradcheck import RTOL, GradcheckReport

CASES = all_cases()


class _CatalogueRun:
    """The outcome of running every case once: a report or a traceback per case name."""

    def __init__(self) -> None:
        self.reports: dict[str, GradcheckReport] = {}
        self.errors: dict[str, str] = {}
        self.called: set[CodeType] = set()

    def _record(self, frame, event, arg) -> None:
        if event == "call":
            self.called.add(frame.f_code)

    def run(self) -> _CatalogueRun:
        for case in CASES:
            previous = sys.getprofile()
            sys.setprofile(self._record)
            try:
                self.reports[case.name] = case.run()
            except Exception:  # reported by the case's own test below, with its traceback
                self.errors[case.name] = traceback.format_exc()
            finally:
                sys.setprofile(previous)
        return self


@pytest.fixture(scope="module")
def catalogue() -> _CatalogueRun:
    return _CatalogueRun().run()


def test_case_names_are_unique():
    names = [case.name for case in CASES]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"two catalogue cases share a name: {duplicates}"


def test_the_ops_cases_come_first():
    # checks/ops.py has ORDER 0: the table starts with the building blocks.
    assert CASES[0].name == "linear"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_case_passes(case, catalogue):
    if case.name in catalogue.errors:
        pytest.fail(f"{case.name} raised:\n{catalogue.errors[case.name]}")
    report = catalogue.reports[case.name]
    # A case that compares nothing would pass vacuously.
    assert report.tensors and report.checked > 0, f"{case.name} checked no values"
    assert all(t.rtol <= RTOL for t in report.tensors), f"{case.name} loosened the tolerance"
    assert report.passed, f"\n{report}"


def test_every_op_backward_is_exercised_by_the_catalogue(catalogue):
    backward_names = [name for name in ops.__all__ if name.endswith("_backward")]
    unchecked = [name for name in backward_names if getattr(ops, name).__code__ not in catalogue.called]
    assert not unchecked, (
        f"no gradient-check case in mmt_numpy/checks/ calls {unchecked}: add one so that "
        "`python -m mmt_numpy gradcheck` proves it"
    )
