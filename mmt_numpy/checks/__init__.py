"""The catalogue of gradient checks that ``python -m mmt_numpy gradcheck`` runs.

Each part of the package contributes a list ``CASES`` of :class:`Case` from its own file
here (``checks/ops.py`` for the ops, ``checks/nn.py`` for the modules, ...; a new file is
found by itself) and an integer ``ORDER`` for its place in the table.  The test suite
runs the same catalogue, so the command and the tests can never disagree about what is
checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from pkgutil import iter_modules

from mmt_numpy.gradcheck import GradcheckReport


@dataclass(frozen=True)
class Case:
    """One named gradient check; ``run()`` builds fresh float64 inputs and checks them."""

    name: str
    run: Callable[[], GradcheckReport]


def all_cases() -> list[Case]:
    """Every registered case, ordered by each file's ``ORDER`` (ops first)."""
    parts = [import_module(f"{__name__}.{info.name}") for info in iter_modules(__path__)]
    parts.sort(key=lambda part: (part.ORDER, part.__name__))
    return [case for part in parts for case in part.CASES]
