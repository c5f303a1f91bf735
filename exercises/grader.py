"""The graders of the exercise notebooks: the project's gradient checker, and equality tests.

Every grader prints one line per check and ends with one verdict line:

* ``PASS: <what>`` when every check passed;
* ``FAIL: <what>`` with the reason (which tensor's gradient is wrong and by how much, which
  entries differ, what your function raised);
* ``NOT DONE: <what>`` while the function still raises ``NotImplementedError``.

The gradient checks are :func:`mmt_numpy.gradcheck.check_op`: central differences in float64,
a gradient passing when its worst relative error is at most ``1e-5`` (``gradcheck.RTOL``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mmt_numpy.gradcheck import RTOL, GradcheckReport, check_op


def _verdict(what: str, failures: list[str], checks: int) -> None:
    if failures:
        print(f"FAIL: {what} ({len(failures)} of {checks} check{'' if checks == 1 else 's'} failed)")
        for reason in failures:
            print(f"  - {reason}")
    else:
        print(f"PASS: {what} ({checks} check{'' if checks == 1 else 's'})")


class _BlankError(Exception):
    """The reader's function still raises NotImplementedError: the blank is not filled in yet."""


_RAISED = object()  # what _call returns when the reader's code raised


def _call(what: str, name: str, call: Callable[[], object], failures: list[str]) -> object:
    """``call()``, or ``_RAISED`` after noting what the reader's code raised; ``_BlankError`` for a blank."""
    try:
        return call()
    except NotImplementedError:
        print(f"NOT DONE: {what}: NotImplementedError (write the body above, then run this cell)")
        raise _BlankError from None
    except Exception as err:  # noqa: BLE001 - the reader's code may raise anything; say what
        failures.append(f"{name}: your code raised {type(err).__name__}: {err}")
        print(f"  {name}: raised {type(err).__name__}")
        return _RAISED


def _wrong_tensors(report: GradcheckReport) -> str:
    wrong = [t for t in report.tensors if not t.passed]
    return ", ".join(f"d{t.name} (worst relative error {t.max_rel_err:.1e}, allowed {RTOL:g})" for t in wrong)


def grade_backward(
    what: str,
    forward: Callable,
    backward: Callable,
    cases: list[tuple[str, dict[str, np.ndarray], dict]],
) -> None:
    """Check ``backward`` against central differences of ``forward`` on every case.

    Args:
        what: the function graded, for the verdict line.
        forward: the op's forward, ``forward(*inputs, **kwargs) -> (out, cache)``.
        backward: the reader's ``backward(d_out, cache) -> gradients`` (one per input, in order).
        cases: ``(name, inputs, kwargs)``: float64 inputs by name, in the forward's argument order.
    """
    failures: list[str] = []
    for name, inputs, kwargs in cases:
        try:
            check = lambda i=inputs, k=kwargs, n=name: check_op(forward, backward, i, kwargs=k, name=n)  # noqa: E731
            report = _call(what, name, check, failures)
        except _BlankError:
            return
        if report is _RAISED:
            continue
        print(
            f"  {name}: {'ok' if report.passed else 'WRONG'} (worst relative error {report.max_rel_err:.1e})"
        )
        if not report.passed:
            failures.append(f"{name}: wrong gradient for {_wrong_tensors(report)}")
    _verdict(what, failures, len(cases))


def grade_equal(
    what: str, cases: list[tuple[str, Callable[[], np.ndarray], np.ndarray]], atol: float = 1e-10
) -> None:
    """Compare the reader's results with the expected arrays.

    Args:
        what: the function graded, for the verdict line.
        cases: ``(name, compute, expected)``: ``compute()`` calls the reader's function.
        atol: the largest absolute difference accepted.
    """
    failures: list[str] = []
    for name, compute, expected in cases:
        try:
            got = _call(what, name, compute, failures)
        except _BlankError:
            return
        if got is _RAISED:
            continue
        got = np.asarray(got)
        if got.shape != expected.shape:
            failures.append(f"{name}: shape {got.shape}, expected {expected.shape}")
            print(f"  {name}: WRONG shape")
            continue
        if not np.all(np.isfinite(got)):
            failures.append(f"{name}: {int(np.sum(~np.isfinite(got)))} entries are NaN or infinite")
            print(f"  {name}: WRONG (not finite)")
            continue
        error = float(np.max(np.abs(got - expected), initial=0.0))
        print(f"  {name}: {'ok' if error <= atol else 'WRONG'} (max |yours - expected| = {error:.1e})")
        if error > atol:
            where = tuple(int(i) for i in np.unravel_index(np.argmax(np.abs(got - expected)), got.shape))
            failures.append(
                f"{name}: max |yours - expected| = {error:.2e} at index {where} "
                f"(yours {got[where]:.6g}, expected {expected[where]:.6g})"
            )
    _verdict(what, failures, len(cases))


def grade_peak_memory(what: str, compute: Callable[[], object], limit_bytes: int, description: str) -> None:
    """Run ``compute()`` under ``tracemalloc`` and require its peak of new allocations below ``limit_bytes``.

    NumPy reports its array buffers to ``tracemalloc``, so the peak counts every temporary array.
    """
    import tracemalloc

    failures: list[str] = []
    tracemalloc.start()
    try:
        result = _call(what, description, compute, failures)
    except _BlankError:
        return
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    if result is _RAISED:
        _verdict(what, failures, 1)
        return
    mib, limit = peak / 2**20, limit_bytes / 2**20
    print(f"  {description}: peak {mib:.1f} MiB, limit {limit:.0f} MiB")
    failures = (
        []
        if peak < limit_bytes
        else [f"{description}: peak {mib:.1f} MiB is over the limit of {limit:.0f} MiB"]
    )
    _verdict(what, failures, 1)
