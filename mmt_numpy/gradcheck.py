"""Finite-difference gradient checking: the proof behind every hand-written backward.

The scalar loss is ``L = Σ forward(...) ⊙ G`` for a fixed random upstream gradient ``G``,
so ``∂L/∂x`` is exactly what ``backward(G, cache)`` must return for every input x (and,
for a module, what it must add into every parameter's ``.grad``).

Numerical derivative (central differences, float64, step ``eps = 1e-6``)::

    n = (L(θ + eps·u) − L(θ − eps·u)) / (2 eps)

* **element by element** (``u`` = each unit vector) when a tensor has at most
  ``max_elements`` entries: every entry of the analytic gradient ``a`` is compared;
* **random directions** (``u`` = a random unit vector, ``num_directions`` of them) for
  larger tensors: ``n`` is compared with ``a = <∇L, u>``.

Error measure: for each compared value ``e = |a − n| / max(|a|, |n|, floor)`` where
``floor = 1e-3 · max(max|n| over that tensor, scale)`` and ``scale`` is the largest analytic
gradient entry of the whole check (every input and parameter of the op or module).  So an
entry that is zero up to rounding is judged against the size of the gradients around it, not
against 0: the key bias ``b_k`` of an attention has an exact gradient of 0 (a constant added
to a whole row of scores does not change its softmax), and the numerical derivative of 0 is
rounding noise of about 1e-10; measured against 0 that noise would fail any tolerance, while
a backward that wrote anything of the module's gradient size into ``b_k.grad`` still fails.
The check passes when ``max e <= rtol`` (default ``1e-5``).  Why that tolerance: central differences err by
O(eps²) ≈ 1e-12 from truncation and by about 1e-16·|L|/eps ≈ 1e-10·|L| from rounding, so a
correct float64 backward lands near 1e-8 or below, while a gradient that is wrong by as
little as 0.1% scores 1e-3 — two orders of magnitude on either side of the line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mmt_numpy.validate import non_negative_int, positive_int, positive_number

EPS = 1e-6
RTOL = 1e-5
MAX_ELEMENTS = 256
NUM_DIRECTIONS = 8


@dataclass
class TensorReport:
    """How one tensor's analytic gradient compared with finite differences."""

    name: str
    shape: tuple[int, ...]
    mode: str  # "elements" or "directions"
    checked: int
    max_abs_err: float
    max_rel_err: float
    rtol: float

    @property
    def passed(self) -> bool:
        return bool(self.max_rel_err <= self.rtol)


@dataclass
class GradcheckReport:
    """The reports of every tensor of one op or module; ``passed`` when all of them pass."""

    name: str
    tensors: list[TensorReport] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.tensors)

    @property
    def max_rel_err(self) -> float:
        return max((t.max_rel_err for t in self.tensors), default=0.0)

    @property
    def max_abs_err(self) -> float:
        return max((t.max_abs_err for t in self.tensors), default=0.0)

    @property
    def checked(self) -> int:
        return sum(t.checked for t in self.tensors)

    def __str__(self) -> str:
        lines = [f"{self.name}: {'PASS' if self.passed else 'FAIL'}"]
        for t in self.tensors:
            lines.append(
                f"  {t.name:<28} {str(t.shape):<18} {t.mode:<10} {t.checked:>6} "
                f"abs {t.max_abs_err:.1e}  rel {t.max_rel_err:.1e}  "
                f"{'ok' if t.passed else 'WRONG'}"
            )
        return "\n".join(lines)


def _relative_errors(analytic: np.ndarray, numeric: np.ndarray, scale: float) -> np.ndarray:
    floor = 1e-3 * max(float(np.max(np.abs(numeric), initial=0.0)), scale) + 1e-300
    denom = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), floor)
    return np.abs(analytic - numeric) / denom


def check_tensor(
    loss_fn: Callable[[], float],
    name: str,
    x: np.ndarray,
    grad: np.ndarray,
    *,
    eps: float = EPS,
    rtol: float = RTOL,
    max_elements: int = MAX_ELEMENTS,
    num_directions: int = NUM_DIRECTIONS,
    rng: np.random.Generator | None = None,
    scale: float = 0.0,
) -> TensorReport:
    """Compare ``grad`` with central differences of ``loss_fn`` with respect to ``x``.

    ``x`` is perturbed in place (and restored), so ``loss_fn`` must read it each call.

    Args:
        loss_fn: computes the scalar loss from the current contents of ``x``.
        x: ``(...)`` float64 tensor, an input or a parameter's ``.data``.
        grad: ``(...)`` the analytic gradient of the loss with respect to ``x``.
        scale: the largest analytic gradient entry of the whole check (0: this tensor alone);
            errors are judged against at least ``1e-3 · scale`` (module doc).
    """
    eps, rtol = positive_number("eps", eps), positive_number("rtol", rtol)
    max_elements = non_negative_int("max_elements", max_elements)  # 0: random directions only
    num_directions = positive_int("num_directions", num_directions)
    if x.dtype != np.float64:
        raise TypeError(f"{name}: gradient checks need float64, got {x.dtype}")
    grad = np.asarray(grad, dtype=np.float64)
    if grad.shape != x.shape:
        raise ValueError(f"{name}: gradient has shape {grad.shape}, tensor has {x.shape}")
    rng = np.random.default_rng(0) if rng is None else rng
    if not x.flags.c_contiguous:
        raise ValueError(f"{name}: tensor must be C-contiguous so it can be perturbed in place")
    flat = x.reshape(-1)  # a view of x: writing into it perturbs x

    if x.size <= max_elements:
        mode = "elements"
        numeric = np.empty(x.size)
        for i in range(x.size):
            saved = flat[i]
            flat[i] = saved + eps
            plus = loss_fn()
            flat[i] = saved - eps
            minus = loss_fn()
            flat[i] = saved
            numeric[i] = (plus - minus) / (2 * eps)
        analytic = grad.reshape(-1)
    else:
        mode = "directions"
        directions = [rng.standard_normal(x.size) for _ in range(num_directions)]
        directions = [u / np.linalg.norm(u) for u in directions]
        saved = flat.copy()
        numeric = np.empty(num_directions)
        for i, u in enumerate(directions):
            flat[:] = saved + eps * u
            plus = loss_fn()
            flat[:] = saved - eps * u
            minus = loss_fn()
            numeric[i] = (plus - minus) / (2 * eps)
        flat[:] = saved
        analytic = np.array([grad.reshape(-1) @ u for u in directions])

    errors = _relative_errors(analytic, numeric, scale)
    return TensorReport(
        name=name,
        shape=tuple(x.shape),
        mode=mode,
        checked=int(numeric.size),
        max_abs_err=float(np.max(np.abs(analytic - numeric), initial=0.0)),
        max_rel_err=float(np.max(errors, initial=0.0)),
        rtol=rtol,
    )


def _require_float64(inputs: dict[str, object]) -> None:
    """Finite differences at eps = 1e-6 need float64: refuse a float32 input before running anything."""
    for name, x in inputs.items():
        if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating) and x.dtype != np.float64:
            raise TypeError(f"{name}: gradient checks need float64, got {x.dtype}")


def _as_tuple(grads: object) -> tuple:
    return grads if isinstance(grads, tuple) else (grads,)


def _scale(grads: list[np.ndarray | None]) -> float:
    """The largest analytic gradient entry over every tensor of one check."""
    return max((float(np.max(np.abs(g), initial=0.0)) for g in grads if g is not None), default=0.0)


def check_op(
    forward: Callable[..., tuple[np.ndarray, tuple]],
    backward: Callable[[np.ndarray, tuple], object],
    inputs: dict[str, np.ndarray],
    *,
    kwargs: dict | None = None,
    name: str | None = None,
    seed: int = 0,
    **tolerances: float,
) -> GradcheckReport:
    """Gradient-check an op pair ``forward(*inputs, **kwargs) -> (out, cache)`` / ``backward``.

    Args:
        forward, backward: the op, e.g. ``attention_forward`` and ``attention_backward``.
        inputs: the differentiable float64 inputs by name, in argument order; ``backward``
            must return their gradients in that order (a ``None`` entry, such as the bias
            gradient of a bias-free linear, is skipped).
        kwargs: the non-differentiable arguments (masks, scale, eps ...).
        tolerances: ``eps``, ``rtol``, ``max_elements``, ``num_directions`` (see module doc).
    """
    kwargs = kwargs or {}
    _require_float64(inputs)
    rng = np.random.default_rng(seed)
    values = list(inputs.values())
    out, cache = forward(*values, **kwargs)
    upstream = rng.standard_normal(np.shape(out))
    grads = _as_tuple(backward(upstream, cache))
    if len(grads) < len(values):
        raise ValueError(f"backward returned {len(grads)} gradients for {len(values)} inputs")

    def loss() -> float:
        return float(np.sum(forward(*values, **kwargs)[0] * upstream))

    report = GradcheckReport(name or getattr(forward, "__name__", "op"))
    scale = _scale(list(grads[: len(values)]))
    for (input_name, x), g in zip(inputs.items(), grads, strict=False):
        if g is None:
            continue
        report.tensors.append(check_tensor(loss, input_name, x, g, rng=rng, scale=scale, **tolerances))
    return report


def _is_float_array(x: object) -> bool:
    return isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating)


def _outputs(out: object) -> tuple[np.ndarray, ...]:
    """A module's output as a tuple of arrays (one output, or a tuple of several)."""
    return tuple(out) if isinstance(out, tuple) else (out,)


def check_module(
    module: object,
    inputs: dict[str, np.ndarray],
    *,
    kwargs: dict | None = None,
    name: str | None = None,
    seed: int = 0,
    **tolerances: float,
) -> GradcheckReport:
    """Gradient-check a module: every float input and every parameter.

    The module follows the package's module contract (``mmt_numpy.nn.module``):
    ``out, cache = forward(*inputs, **kwargs)`` (deterministic: dropout off) where ``out`` is
    an array or a tuple of arrays; ``backward(d_out, cache)`` takes an upstream gradient
    shaped like ``out`` and returns a tuple with one gradient per float input, in order
    (integer inputs such as token ids get none), adding into each parameter's ``.grad``;
    ``zero_grad()``; ``named_parameters()`` yielding ``(name, Parameter)``.

    The loss is ``Σ_outputs Σ out ⊙ G`` with one random ``G`` per output.
    """
    kwargs = kwargs or {}
    _require_float64(inputs)
    rng = np.random.default_rng(seed)
    values = list(inputs.values())
    out, cache = module.forward(*values, **kwargs)
    several = isinstance(out, tuple)
    upstream = tuple(rng.standard_normal(np.shape(o)) for o in _outputs(out))
    module.zero_grad()
    input_grads = module.backward(upstream if several else upstream[0], cache)
    if not isinstance(input_grads, tuple):
        raise TypeError(f"backward: expected a tuple of input gradients, got {type(input_grads).__name__}")
    float_inputs = [(n, x) for n, x in inputs.items() if _is_float_array(x)]
    if len(input_grads) != len(float_inputs):
        raise ValueError(
            f"backward: returned {len(input_grads)} gradients for {len(float_inputs)} float inputs "
            f"({', '.join(n for n, _ in float_inputs) or 'none'})"
        )

    def loss() -> float:
        outs = _outputs(module(*values, **kwargs))
        return float(sum(np.sum(o * u) for o, u in zip(outs, upstream, strict=True)))

    report = GradcheckReport(name or type(module).__name__)
    params = [(n, p.data, p.grad.copy()) for n, p in module.named_parameters()]
    scale = _scale(list(input_grads) + [g for _, _, g in params])
    for (input_name, x), g in zip(float_inputs, input_grads, strict=True):
        report.tensors.append(check_tensor(loss, input_name, x, g, rng=rng, scale=scale, **tolerances))
    for param_name, data, grad in params:
        report.tensors.append(check_tensor(loss, param_name, data, grad, rng=rng, scale=scale, **tolerances))
    return report


def format_table(reports: list[GradcheckReport]) -> str:
    """One row per op or module: tensors, values checked, worst errors, verdict."""
    header = f"{'check':<40} {'tensors':>7} {'values':>7} {'max abs err':>12} {'max rel err':>12}  result"
    rows = [header, "-" * len(header)]
    for r in reports:
        rows.append(
            f"{r.name:<40} {len(r.tensors):>7} {r.checked:>7} {r.max_abs_err:>12.2e} "
            f"{r.max_rel_err:>12.2e}  {'PASS' if r.passed else 'FAIL'}"
        )
    return "\n".join(rows)
