"""``Parameter`` and ``Module``: the small part of ``torch.nn.Module`` a reader needs.

The contract every module follows (the ops' pattern, one level up):

* ``out, cache = m.forward(*inputs, **options)`` computes the output and returns, as a
  value, everything its backward will need.  The module itself keeps nothing of the call.
* ``grads = m.backward(d_out, cache)`` returns a tuple with one gradient per
  floating-point array input of that forward, in order (integer ids and inputs left as
  None get no entry), and **adds** the parameter gradients into each ``.grad``.
* ``m(*inputs, **options)`` is inference: the output alone, the cache dropped at once.

Because the cache is a value, using a module twice is safe by construction: each call has
its own cache, each backward adds its share, and a module (or a Parameter shared by two
modules) used k times in one graph ends with the sum of its k contributions, as in
PyTorch.  Caches are ``NamedTuple``s with named fields (nested for containers), so nothing
indexes them by position; attention caches expose ``.weights`` for plotting.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from mmt_numpy.validate import integer

RngLike = np.random.Generator | int | None


def as_generator(rng: RngLike) -> np.random.Generator:
    """An ``np.random.Generator`` from a Generator, an int seed, or None (seed 0)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng(0)
    return np.random.default_rng(
        integer("rng", rng, low=0, what="a numpy.random.Generator or an integer seed >= 0")
    )


def as_float_dtype(dtype: Any) -> np.dtype:
    """``np.dtype('float32')`` or ``np.dtype('float64')``; anything else is a TypeError."""
    try:
        resolved = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}") from exc
    if resolved not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {resolved}")
    return resolved


def expect_cache(cache: object, cache_type: type, owner: str) -> Any:
    """Refuse a cache that is not what ``owner.forward`` returns (e.g. the output passed by mistake)."""
    if not isinstance(cache, cache_type):
        raise TypeError(
            f"cache: expected the {cache_type.__name__} that {owner}.forward returned with its output, "
            f"got {type(cache).__name__}; call `out, cache = module.forward(...)` and pass that cache"
        )
    return cache


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
    """Base class: parameter walking, train/eval, and inference by calling the module.

    Subclasses assign Parameters, Modules and lists of Modules as attributes (their order of
    assignment is the order of ``named_parameters``) and define ``forward`` returning
    ``(out, cache)`` and ``backward(d_out, cache)`` returning a tuple of input gradients.
    """

    training: bool = True

    def __call__(self, *inputs: Any, **kwargs: Any) -> Any:
        """Inference: ``forward``'s output only; the cache is dropped, so nothing is kept."""
        out, _ = self.forward(*inputs, **kwargs)  # every subclass defines forward and backward
        return out

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """Direct submodules by attribute name; a list of modules gives ``name.0``, ``name.1`` ..."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Module) for v in value):
                for i, child in enumerate(value):
                    yield f"{name}.{i}", child

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Every Parameter with its dotted name, e.g. ``"encoder.layers.0.self_attn.W_q"``.

        A Parameter reachable under several names (a layer used twice, an embedding table
        that is also the output projection) is listed once, under the first name met.
        """
        seen: set[int] = set()
        for name, p in self._walk_parameters(prefix):
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def _walk_parameters(self, prefix: str) -> Iterator[tuple[str, Parameter]]:
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child._walk_parameters(prefix + name + ".")

    def parameters(self) -> list[Parameter]:
        """The Parameters alone, in ``named_parameters`` order, each once."""
        return [p for _, p in self.named_parameters()]

    def modules(self) -> Iterator[Module]:
        """This module and every submodule, depth first, each once."""
        seen: set[int] = set()
        stack: list[Module] = [self]
        while stack:
            m = stack.pop(0)
            if id(m) in seen:
                continue
            seen.add(id(m))
            yield m
            stack[:0] = [child for _, child in m.named_children()]

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
        """Total number of scalar parameters, a shared Parameter counted once."""
        return sum(p.data.size for p in self.parameters())
