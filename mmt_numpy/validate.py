"""Argument checking for the public entry points.

Every error names the argument and says what was expected and what arrived, so a reader
sees ``ValueError: k: expected last dimension 8 (to match q), got shape (2, 5, 4)``
instead of a NumPy broadcasting message from deep inside a matmul.
"""

from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def float_array(name: str, x: object, ndim: int | None = None, min_ndim: int = 0) -> np.ndarray:
    """Return ``x`` if it is a float32/float64 ndarray of the right rank, else raise.

    Integer or boolean arrays are refused (TypeError) rather than silently cast: a model
    fed token ids where it expects features is a bug worth hearing about.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(x).__name__}")
    if x.dtype.type not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {x.shape}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name}: expected at least {min_ndim} dimensions, got shape {x.shape}")
    return x


def same_dtype(names: tuple[str, ...], arrays: tuple[np.ndarray, ...]) -> None:
    """Refuse mixed float32/float64 inputs: the result's precision would be ambiguous."""
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) > 1:
        listed = ", ".join(f"{n}={a.dtype}" for n, a in zip(names, arrays, strict=True))
        raise TypeError(f"expected one dtype for {', '.join(names)}, got {listed}")


def last_dim(name: str, x: np.ndarray, size: int, against: str) -> None:
    """Check that ``x.shape[-1] == size`` (``against`` names where ``size`` came from)."""
    if x.shape[-1] != size:
        raise ValueError(f"{name}: expected last dimension {size} (to match {against}), got shape {x.shape}")


def bool_mask(name: str, mask: object, target_shape: tuple[int, ...]) -> np.ndarray:
    """Check a boolean mask (True = may attend) that broadcasts to ``target_shape``."""
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"{name}: expected a boolean numpy array, got {type(mask).__name__}")
    if mask.dtype != np.bool_:
        raise TypeError(
            f"{name}: expected dtype bool (True = may attend), got {mask.dtype}; "
            "build one with causal_mask/padding_mask or compare, e.g. ids != pad_id"
        )
    try:
        np.broadcast_shapes(mask.shape, target_shape)
        broadcast_ok = np.broadcast_shapes(mask.shape, target_shape) == tuple(target_shape)
    except ValueError:
        broadcast_ok = False
    if not broadcast_ok:
        raise ValueError(
            f"{name}: expected a shape that broadcasts to {tuple(target_shape)}, got {mask.shape}"
        )
    return mask


def grad_output(d_out: object, shape: tuple[int, ...], dtype: np.dtype, name: str = "d_out") -> np.ndarray:
    """Check the upstream gradient of a backward: an ndarray of the forward output's shape and dtype.

    A broadcastable ``d_out`` of another shape would give gradients of the wrong shape, and a
    float64 ``d_out`` into a float32 op would silently promote every gradient to float64.
    """
    if not isinstance(d_out, np.ndarray):
        raise TypeError(
            f"{name}: expected a numpy array shaped like the forward output {tuple(shape)}, "
            f"got {type(d_out).__name__}"
        )
    if d_out.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)} (the forward output's), got {d_out.shape}")
    if d_out.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype)} (the forward output's), got {d_out.dtype}")
    return d_out


def grad_scalar(d_loss: object, dtype: np.dtype, name: str = "d_loss") -> np.ndarray:
    """The upstream gradient of a scalar loss: a finite real number or a 0-d array, as a 0-d
    array of ``dtype`` (the loss's own dtype, so a float32 loss's gradients stay float32)."""
    if isinstance(d_loss, np.ndarray) and d_loss.shape != ():
        raise ValueError(
            f"{name}: expected a scalar or a 0-d array (the loss is a scalar), got shape {d_loss.shape}"
        )
    return np.asarray(real_number(name, d_loss, what="a real number (the loss is a scalar)"), dtype=dtype)


def _scalar(value: object) -> object:
    """A 0-d array's element (``np.asarray(0.07)`` -> ``np.float64(0.07)``); anything else unchanged."""
    if isinstance(value, np.ndarray) and value.shape == ():
        return value[()]
    return value


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    """How a range reads in a message: ``"> 0"``, ``">= 0"``, ``"in [0, 1)"``, ``""`` for any."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def real_number(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    what: str | None = None,
) -> float:
    """``value`` as a Python float if it is a finite real number in the given range, else raise.

    The one scalar check behind every hyperparameter of the package (temperature, scale, eps,
    dropout p, learning rates, RoPE base ...).  Accepted: Python ints and floats, NumPy
    integer and floating scalars (``np.float32(0.07)``) and 0-d arrays of them.  Refused with
    a TypeError: bools (``True`` is an int to Python, but never a meant number), strings,
    complex numbers, arrays with dimensions.  Refused with a ValueError: NaN, ±inf, and values
    outside ``[low, high]`` (an end is excluded with ``low_open`` / ``high_open``).

    Args:
        name: the argument's name, the first word of every message.
        what: how the expectation reads, e.g. ``"a probability in [0, 1]"``; by default
            ``"a number"`` followed by the range.
    """
    if what is None:
        what = f"a number {_interval(low, high, low_open, high_open)}".rstrip()
    scalar = _scalar(value)
    if isinstance(scalar, (bool, np.bool_)) or not isinstance(scalar, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected {what}, got {type(value).__name__} {value!r}")
    number = float(scalar)
    if not np.isfinite(number):
        raise ValueError(f"{name}: expected {what} (finite), got {value!r}")
    below = low is not None and (number <= low if low_open else number < low)
    above = high is not None and (number >= high if high_open else number > high)
    if below or above:
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    return number


def positive_number(name: str, value: object) -> float:
    """``value`` as a float if it is a finite real number > 0 (see :func:`real_number`)."""
    return real_number(name, value, low=0.0, low_open=True, what="a positive number")


def non_negative_number(name: str, value: object) -> float:
    """``value`` as a float if it is a finite real number >= 0 (see :func:`real_number`)."""
    return real_number(name, value, low=0.0, what="a number >= 0")


def probability(name: str, value: object) -> float:
    """``value`` as a float if it is a real number in [0, 1] (see :func:`real_number`)."""
    return real_number(name, value, low=0.0, high=1.0, what="a probability in [0, 1]")


def integer(name: str, value: object, *, low: int | None = None, what: str | None = None) -> int:
    """``value`` as a Python int if it is an integer >= ``low``, else raise naming ``name``.

    Accepted: Python ints, NumPy integer scalars and 0-d integer arrays.  Refused with a
    TypeError: bools and floats, even integral ones such as ``2.0`` (a float where a count is
    expected is usually a computation gone wrong, e.g. ``d / 2`` instead of ``d // 2``).
    """
    if what is None:
        what = "an integer" if low is None else f"an integer >= {low}"
    scalar = _scalar(value)
    if isinstance(scalar, (bool, np.bool_)) or not isinstance(scalar, (int, np.integer)):
        raise TypeError(f"{name}: expected {what}, got {type(value).__name__} {value!r}")
    if low is not None and scalar < low:
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    return int(scalar)


def positive_int(name: str, value: object) -> int:
    """``value`` as an int if it is an integer >= 1 (see :func:`integer`)."""
    return integer(name, value, low=1, what="a positive integer")


def non_negative_int(name: str, value: object) -> int:
    """``value`` as an int if it is an integer >= 0 (see :func:`integer`)."""
    return integer(name, value, low=0, what="an integer >= 0")


def module_input(
    name: str, x: object, width: int, dtype: np.dtype, owner: str, ndim: int | None = None
) -> np.ndarray:
    """Check an array fed to a module: float, right rank, last dimension ``width``, ``dtype``.

    ``owner`` describes where ``width`` and ``dtype`` come from, e.g. ``"Linear(4, 8)"``, so
    the message says what the module expected and what arrived.
    """
    x = float_array(name, x, ndim=ndim, min_ndim=1)
    last_dim(name, x, width, owner)
    if x.dtype != dtype:
        raise TypeError(
            f"{name}: expected dtype {dtype} (the dtype of {owner}'s parameters), got {x.dtype}; "
            f"convert with x.astype(np.{dtype}) or build the module with dtype=np.{x.dtype}"
        )
    return x
