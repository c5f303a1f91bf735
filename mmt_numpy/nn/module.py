"""``Parameter`` and ``Module``: the small part of ``torch.nn.Module`` a reader needs.

A module owns Parameters, keeps what its backward needs from the last ``forward``, and
``backward(d_out)`` returns the gradients of its array inputs while **adding** into each
parameter's ``.grad`` (so a module used twice, or gradients over several batches,
accumulate as in PyTorch).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

RngLike = np.random.Generator | int | None


def as_generator(rng: RngLike) -> np.random.Generator:
    """An ``np.random.Generator`` from a Generator, an int seed, or None (seed 0)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(0 if rng is None else int(rng))
    raise TypeError(f"rng: expected a numpy.random.Generator or an int seed, got {type(rng).__name__}")


def as_float_dtype(dtype: Any) -> np.dtype:
    """``np.dtype('float32')`` or ``np.dtype('float64')``; anything else is a TypeError."""
    try:
        resolved = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}") from exc
    if resolved not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {resolved}")
    return resolved


class Parameter:
    """A trainable array ``data`` and the gradient ``grad`` accumulated into it (same shape)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = np.ascontiguousarray(data)
        self.grad = np.zeros_like(self.data)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class: parameter walking, train/eval, and the forward-before-backward rule.

    Subclasses assign Parameters, Modules and lists of Modules as attributes (their order
    of assignment is the order of ``named_parameters``), implement ``forward`` and
    ``backward``, and store the backward's cache with ``self._cache = ...`` in forward,
    read back with ``self._saved()``.
    """

    training: bool = True
    _cache: Any = None

    def __call__(self, *inputs: Any, **kwargs: Any) -> Any:
        return self.forward(*inputs, **kwargs)  # every subclass defines forward and backward

    def _saved(self) -> Any:
        """The cache of the last forward; a clear error when there was none."""
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward: run forward first")
        return self._cache

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """Direct submodules by attribute name; a list of modules gives ``name.0``, ``name.1`` ..."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Module) for v in value):
                for i, child in enumerate(value):
                    yield f"{name}.{i}", child

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Every Parameter with its dotted name, e.g. ``"encoder.layers.0.self_attn.W_q"``."""
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child.named_parameters(prefix + name + ".")

    def parameters(self) -> list[Parameter]:
        """The Parameters alone, in ``named_parameters`` order."""
        return [p for _, p in self.named_parameters()]

    def modules(self) -> Iterator[Module]:
        """This module and every submodule, depth first."""
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    def zero_grad(self) -> None:
        """Reset every parameter's ``.grad`` to zeros."""
        for p in self.parameters():
            p.grad[...] = 0

    def train(self, mode: bool = True) -> Module:
        """Set training mode (dropout active) here and in every submodule."""
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> Module:
        """Evaluation mode: dropout becomes the identity."""
        return self.train(False)

    def num_parameters(self) -> int:
        """Total number of scalar parameters."""
        return sum(p.data.size for p in self.parameters())
