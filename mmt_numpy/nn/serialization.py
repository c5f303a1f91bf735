"""Saving and loading a module's parameters as a ``.npz`` archive (``torch.save(model.state_dict())``).

The file holds one array per parameter, keyed by its dotted name from
``named_parameters()`` (``"encoder.layers.0.self_attn.W_q"``), and, when ``save`` is given a
``config``, one more entry under :data:`CONFIG_KEY`: the model's configuration as JSON text in
a NumPy string array, so that a command can rebuild the model that made the file
(:func:`load_config`).  No code, no pickles.  Loading uses ``np.load(..., allow_pickle=False)``,
so a file from an untrusted source can at worst hold wrong numbers, never run anything.
Loading is strict: a missing, unexpected, mis-shaped or wrongly typed array is refused, all
of them named in one message, and nothing is copied unless everything fits.
"""

from __future__ import annotations

import json
import os

import numpy as np

from mmt_numpy.nn.module import Module

# The archive entry holding the configuration; no parameter name can clash with it, since
# ``named_parameters`` names are dotted attribute paths and never start with an underscore.
CONFIG_KEY = "__config__"


def _check_module(module: object) -> Module:
    if not isinstance(module, Module):
        raise TypeError(f"module: expected an mmt_numpy.nn.Module, got {type(module).__name__}")
    return module


def state_dict(module: Module) -> dict[str, np.ndarray]:
    """A copy of every parameter array, keyed by its dotted name, in ``named_parameters`` order."""
    return {name: p.data.copy() for name, p in _check_module(module).named_parameters()}


def load_state_dict(module: Module, state: dict[str, np.ndarray]) -> None:
    """Copy the arrays of ``state`` into ``module``'s parameters, in place.

    In place (``p.data[...] = array``) so that an optimiser holding the Parameters keeps
    working on the loaded values.

    Raises:
        ValueError: naming every missing name, unexpected name, and array whose shape or
            dtype differs from the parameter's; nothing is copied in that case.
    """
    params = dict(_check_module(module).named_parameters())
    if not isinstance(state, dict):
        raise TypeError(f"state: expected a dict of name -> array, got {type(state).__name__}")
    missing = [name for name in params if name not in state]
    unexpected = [name for name in state if name not in params]
    mismatched = []
    for name, p in params.items():
        if name not in state:
            continue
        array = state[name]
        if not isinstance(array, np.ndarray):
            mismatched.append(f"{name}: expected a numpy array, got {type(array).__name__}")
        elif array.shape != p.shape:
            mismatched.append(f"{name}: expected shape {p.shape}, got {array.shape}")
        elif array.dtype != p.data.dtype:
            mismatched.append(f"{name}: expected dtype {p.data.dtype}, got {array.dtype}")
    if missing or unexpected or mismatched:
        lines = [f"cannot load the state into {type(module).__name__}:"]
        if missing:
            lines.append(f"  missing: {', '.join(missing)}")
        if unexpected:
            lines.append(f"  unexpected: {', '.join(unexpected)}")
        lines.extend(f"  {m}" for m in mismatched)
        raise ValueError("\n".join(lines))
    for name, p in params.items():
        p.data[...] = state[name]


def save(module: Module, path: str | os.PathLike, config: dict | None = None) -> None:
    """Write ``state_dict(module)`` to ``path``, a ``.npz`` archive (uncompressed).

    NumPy appends ``.npz`` when ``path`` does not end with it.

    Args:
        module: the model whose parameters are written.
        path: the file to write.
        config: optional JSON-serialisable dict (sizes, vocabulary, answers ...) stored beside
            the parameters as a string array under :data:`CONFIG_KEY`; read back with
            :func:`load_config`.  :func:`load` ignores it.
    """
    state = state_dict(module)
    if config is not None:
        if not isinstance(config, dict):
            raise TypeError(f"config: expected a dict (JSON object), got {type(config).__name__}")
        state[CONFIG_KEY] = np.array(json.dumps(config, sort_keys=True))  # a 0-d unicode array, not a pickle
    np.savez(path, **state)


def load_config(path: str | os.PathLike) -> dict | None:
    """The configuration :func:`save` stored in ``path``, or None when the file has none.

    Raises:
        ValueError: the entry is not JSON text describing an object.
    """
    with np.load(path, allow_pickle=False) as archive:
        if CONFIG_KEY not in archive.files:
            return None
        entry = archive[CONFIG_KEY]
    if entry.dtype.kind != "U" or entry.shape != ():
        raise ValueError(
            f"path: expected {CONFIG_KEY} to be one JSON string in {path}, got {entry.dtype} {entry.shape}"
        )
    try:
        config = json.loads(str(entry))
    except json.JSONDecodeError as error:
        raise ValueError(f"path: {CONFIG_KEY} in {path} is not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ValueError(
            f"path: expected {CONFIG_KEY} in {path} to hold a JSON object, got {type(config).__name__}"
        )
    return config


def load(module: Module, path: str | os.PathLike) -> None:
    """Read a ``.npz`` written by :func:`save` into ``module`` (see :func:`load_state_dict`).

    A stored configuration (:func:`load_config`) is skipped: it is not a parameter.
    """
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"path: expected a .npz archive written by save(), got a single array in {path}")
    with loaded as archive:
        state = {name: archive[name] for name in archive.files if name != CONFIG_KEY}
    load_state_dict(module, state)
