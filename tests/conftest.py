"""Shared test setup: a headless matplotlib backend and a seeded random generator."""

from __future__ import annotations

import os

# Set before any test imports matplotlib: figures are drawn to files, never to a window.
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh generator with a fixed seed, so every test sees the same numbers on every run."""
    return np.random.default_rng(1234)


@pytest.fixture
def torch_autograd():
    """``run(fn, arrays, upstream) -> (out, grads)``: PyTorch's answer for a parity test.

    ``fn`` takes one float64 tensor per array (each with ``requires_grad``); the output is
    back-propagated with ``upstream`` and the output and the gradient of every array come
    back as NumPy arrays.  Skips the test when PyTorch is not installed.
    """
    torch = pytest.importorskip("torch")

    def run(fn, arrays, upstream):
        tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
        out = fn(*tensors)
        out.backward(torch.as_tensor(upstream))
        return out.detach().numpy(), [t.grad.numpy() for t in tensors]

    return run
