"""The catalogue of gradient checks that ``python -m mmt_numpy gradcheck`` runs.

Each part of the package contributes a list ``CASES`` of :class:`Case` from its own file
here (``checks/ops.py`` for the ops, ``checks/nn.py`` for the modules, ...; a new file is
found by itself) and an integer ``ORDER`` for its place in the table.  The test suite
runs the same catalogue, so the command and the tests can never disagree about what is
checked.  :func:`randn` and :func:`randomize` make the seeded inputs and parameters that the
cases (and the tests) use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from pkgutil import iter_modules

import numpy as np

from mmt_numpy.gradcheck import GradcheckReport
from mmt_numpy.nn.module import Module


@dataclass(frozen=True)
class Case:
    """One named gradient check; ``run()`` builds fresh float64 inputs and checks them."""

    name: str
    run: Callable[[], GradcheckReport]


def randn(seed: int, *shape: int) -> np.ndarray:
    """A float64 array of the given shape, standard normal, fixed by ``seed``."""
    return np.random.default_rng(seed).standard_normal(shape)


def randomize(module: Module, seed: int) -> Module:
    """Move every parameter to a random point: γ of a norm near 1, everything else N(0, 0.5²).

    Initial values hide mistakes (a zero bias hides a bias gradient added to the wrong
    tensor, γ = 1 and β = 0 hide a γ/β mix-up), so checks start from here instead.
    """
    rng = np.random.default_rng(seed)
    for name, p in module.named_parameters():
        noise = 0.5 * rng.standard_normal(p.shape)
        p.data[...] = 1.0 + noise if name.endswith("gamma") else noise
    return module


def all_cases() -> list[Case]:
    """Every registered case, ordered by each file's ``ORDER`` (ops first)."""
    parts = [import_module(f"{__name__}.{info.name}") for info in iter_modules(__path__)]
    parts.sort(key=lambda part: (part.ORDER, part.__name__))
    return [case for part in parts for case in part.CASES]
