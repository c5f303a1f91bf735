"""How many threads BLAS may use: one place for it, since several parts of the project need it.

Two different reasons to hold OpenBLAS at one thread:

* **Small matrices** (every training task here: widths of 32 to 64).  Splitting a product of
  64 x 48 by 48 x 48 over two threads costs more in synchronisation than it saves; measured on
  a 2-core machine, a captioning step took 13 ms of CPU on one thread and 170 ms on two, and on
  a busy machine two-thread BLAS waits for its second thread on every call (a VQA epoch was
  measured at 18 s on one thread and up to 30x that on two).  One thread also fixes the order
  of float32 sums, so a seeded run prints the same digits on any machine.
* **Our own threads** (blocked attention, the long-text experiment): when each core already
  runs a Python thread of ours, a BLAS pool per thread would fight for the same cores.

threadpoolctl is a runtime dependency; the functions still degrade to doing nothing if it is
missing, so that a minimal install keeps working (only slower).
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext

from mmt_numpy.validate import positive_int

_CONTROLLER: list = []  # the threadpoolctl controller, made on first use (it scans the loaded libraries)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def blas_controller() -> object | None:
    """threadpoolctl's view of the BLAS libraries, or None when threadpoolctl is missing."""
    if not _CONTROLLER:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _CONTROLLER.append(None)
        else:
            _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


def blas_threads(n: int) -> AbstractContextManager:
    """A context in which BLAS uses ``n`` threads; it yields None when threadpoolctl is missing.

    ``with blas_threads(1) as limits: ...``; ``limits is None`` tells the caller that the
    library's own thread count is in force.
    """
    n = positive_int("n", n)
    controller = blas_controller()
    return nullcontext() if controller is None else controller.limit(limits=n, user_api="blas")
