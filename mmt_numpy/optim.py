"""Optimisers that update ``Parameter.data`` from ``Parameter.grad``: SGD, Adam, AdamW.

Each one follows the update rule of its ``torch.optim`` namesake line for line (the tests
run both for several steps and compare), so a reader can move between the two freely.
With ``g`` the gradient, ``θ`` a parameter, ``λ`` the weight decay and ``t`` the step
number (1, 2, ...):

SGD (``momentum`` μ)::

    g ← g + λ θ                     (L2 penalty: weight decay enters the gradient)
    b ← g            at t = 1,     b ← μ b + g   afterwards      (only when μ > 0)
    θ ← θ − lr · b                  (b = g when μ = 0)

Adam (Kingma & Ba, 2015)::

    g ← g + λ θ                     (L2 penalty, as torch.optim.Adam)
    m ← β1 m + (1 − β1) g           v ← β2 v + (1 − β2) g²
    θ ← θ − lr / (1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)

AdamW (Loshchilov & Hutter, 2019) is Adam with the decay *decoupled* from the gradient:
first ``θ ← θ (1 − lr λ)``, then the Adam step with ``λ = 0``.  With Adam's L2 form the
decay is divided by ``√v`` like any gradient, so parameters with large gradients are
barely decayed; AdamW shrinks every parameter by the same factor.

The dtype of every parameter is kept: the step sizes are Python floats, which NumPy 2
treats as weak scalars, so float32 parameters stay float32.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable

import numpy as np

from mmt_numpy.nn.module import Parameter
from mmt_numpy.validate import non_negative_number, real_number


def _decay_rate(name: str, value: object) -> float:
    """A momentum or moment-decay factor in [0, 1): 1 would never forget the first gradient."""
    return real_number(name, value, low=0.0, high=1.0, high_open=True)


class Optimizer(ABC):
    """The shared part: the parameter list, ``zero_grad`` and the step counter.

    Args:
        params: an iterable of :class:`~mmt_numpy.nn.module.Parameter`, e.g.
            ``model.parameters()``; each one appears once.
    """

    def __init__(self, params: Iterable[Parameter]) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("params: expected at least one Parameter, got an empty list")
        for i, p in enumerate(self.params):
            if not isinstance(p, Parameter):
                raise TypeError(f"params[{i}]: expected a Parameter, got {type(p).__name__}")
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError("params: a Parameter appears more than once; it would be updated twice")
        self.t = 0  # the number of steps taken so far

    def zero_grad(self) -> None:
        """Reset every parameter's ``.grad`` to zeros (before the next backward adds into it)."""
        for p in self.params:
            p.grad[...] = 0

    def step(self) -> None:
        """Update every parameter once from its current ``.grad``."""
        self.t += 1
        for i, p in enumerate(self.params):
            self._update(i, p)

    @abstractmethod
    def _update(self, i: int, p: Parameter) -> None:
        """Apply one step of the rule to parameter number ``i`` (``self.t`` is already counted)."""


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and L2 weight decay (``torch.optim.SGD``).

    Args:
        params: the parameters to update.
        lr: learning rate, ≥ 0.
        momentum: μ in [0, 1); 0 is plain gradient descent.
        weight_decay: λ ≥ 0, added to the gradient as ``λ θ``.
    """

    def __init__(
        self, params: Iterable[Parameter], lr: float, momentum: float = 0.0, weight_decay: float = 0.0
    ) -> None:
        super().__init__(params)
        self.lr = non_negative_number("lr", lr)
        self.momentum = _decay_rate("momentum", momentum)
        self.weight_decay = non_negative_number("weight_decay", weight_decay)
        self.buffers: list[np.ndarray | None] = [None] * len(self.params)

    def _update(self, i: int, p: Parameter) -> None:
        g = p.grad
        if self.weight_decay:
            g = g + self.weight_decay * p.data  # g ← g + λθ
        if self.momentum:
            if self.buffers[i] is None:
                self.buffers[i] = g.copy()  # b ← g on the first step (as PyTorch, no (1 − μ))
            else:
                self.buffers[i] = self.momentum * self.buffers[i] + g  # b ← μ b + g
            g = self.buffers[i]
        p.data -= self.lr * g  # θ ← θ − lr · b

    def __repr__(self) -> str:
        return f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay})"


class Adam(Optimizer):
    """Adam with bias-corrected moment estimates (``torch.optim.Adam``, ``amsgrad=False``).

    Args:
        params: the parameters to update.
        lr: learning rate, ≥ 0.
        betas: ``(β1, β2)``, the decay rates of the first and second moment, each in [0, 1).
        eps: ε ≥ 0 added to the denominator ``√v̂`` (as PyTorch, 0 is allowed).
        weight_decay: λ ≥ 0 as an L2 penalty added to the gradient (see :class:`AdamW`
            for the decoupled form).
    """

    decoupled = False

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params)
        self.lr = non_negative_number("lr", lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas: expected a pair (beta1, beta2), got {betas!r}")
        self.beta1 = _decay_rate("betas[0]", betas[0])
        self.beta2 = _decay_rate("betas[1]", betas[1])
        self.eps = non_negative_number("eps", eps)
        self.weight_decay = non_negative_number("weight_decay", weight_decay)
        self.m = [np.zeros_like(p.data) for p in self.params]  # first moment, per parameter
        self.v = [np.zeros_like(p.data) for p in self.params]  # second moment

    def _update(self, i: int, p: Parameter) -> None:
        g = p.grad
        if self.weight_decay:
            if self.decoupled:
                p.data *= 1.0 - self.lr * self.weight_decay  # AdamW: θ ← θ (1 − lr λ)
            else:
                g = g + self.weight_decay * p.data  # Adam: g ← g + λθ
        m, v = self.m[i], self.v[i]
        m *= self.beta1
        m += (1.0 - self.beta1) * g  # m ← β1 m + (1 − β1) g
        v *= self.beta2
        v += (1.0 - self.beta2) * g * g  # v ← β2 v + (1 − β2) g²
        bias_correction1 = 1.0 - self.beta1**self.t
        bias_correction2 = 1.0 - self.beta2**self.t
        # θ ← θ − lr/(1 − β1ᵗ) · m / (√v/√(1 − β2ᵗ) + ε): PyTorch's arrangement, in which ε is
        # added to the bias-corrected √v̂ (not to the raw √v).
        denom = np.sqrt(v) / math.sqrt(bias_correction2) + self.eps
        p.data -= (self.lr / bias_correction1) * (m / denom)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(lr={self.lr}, betas=({self.beta1}, {self.beta2}), "
            f"eps={self.eps}, weight_decay={self.weight_decay})"
        )


class AdamW(Adam):
    """Adam with decoupled weight decay (``torch.optim.AdamW``).

    Before the Adam step every parameter is shrunk, ``θ ← θ (1 − lr λ)``, and the gradient
    itself is left alone.  Same arguments as :class:`Adam`; the default ``weight_decay`` is
    0.01, as PyTorch's.
    """

    decoupled = True

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)
