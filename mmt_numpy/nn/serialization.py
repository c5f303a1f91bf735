"""Saving and loading a module's parameters as a ``.npz`` archive (``torch.save(model.state_dict())``).

The file holds one array per parameter, keyed by its dotted name from
``named_parameters()`` (``"encoder.layers.0.self_attn.W_q"``), and, when ``save`` is given a
``config``, one more entry under :data:`CONFIG_KEY`: the model's configuration as JSON text in
a NumPy string array, so that a command can rebuild the model that made the file
(:func:`load_config`).  No code, no pickles.  Loading uses ``np.load(..., allow_pickle=False)``,
so a file from an untrusted source can at worst hold wrong numbers, never run anything.
Loading is strict: a missing, unexpected, mis-shaped or wrongly typed array is refused, all
of them named in one message, and nothing is copied unless everything fits.

``save(m, "weights")`` writes ``weights.npz`` (NumPy's rule) and ``load(m, "weights")`` reads
it back: both spellings round-trip.  :func:`read_arrays` is the reading half alone (a dict
of arrays by key), for code that stores more than parameters in the same archive.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from mmt_numpy.nn.module import Module


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


SUFFIX = ".npz"
# The archive entry holding the configuration; no parameter name can clash with it, since
# ``named_parameters`` names are dotted attribute paths and never start with an underscore.
CONFIG_KEY = "__config__"


def npz_path(path: str | os.PathLike) -> Path:
    """The file that ``save(module, path)`` writes: ``path`` itself when it ends in ``.npz``,
    else ``path`` with ``.npz`` appended (NumPy's own rule in ``np.savez``)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    text = os.fspath(path)
    return Path(text if text.endswith(SUFFIX) else text + SUFFIX)


def save(module: Module, path: str | os.PathLike, config: dict | None = None) -> Path:
    """Write ``state_dict(module)`` to a ``.npz`` archive (uncompressed); return the path written.

    ``save(m, "weights")`` writes ``weights.npz``, and ``load(m, "weights")`` reads that same
    file, so either spelling round-trips.

    ``config``, an optional JSON-serialisable dict (sizes, vocabulary, answers ...), is stored
    beside the parameters as one string under :data:`CONFIG_KEY` (a 0-d unicode array, not a
    pickle); :func:`load_config` reads it back and :func:`load` skips it.
    """
    state = state_dict(module)
    if config is not None:
        if not isinstance(config, dict):
            raise TypeError(f"config: expected a dict (JSON object), got {type(config).__name__}")
        state[CONFIG_KEY] = np.array(json.dumps(config, sort_keys=True))
    target = npz_path(path)
    np.savez(target, **state)
    return target


def _resolve(path: str | os.PathLike) -> Path:
    """The file :func:`load` reads: the one :func:`save` would write, else ``path`` as given."""
    target = npz_path(path)
    if target.is_file():
        return target
    given = Path(os.fspath(path))
    if given.is_file():  # an archive renamed without its suffix
        return given
    if given.is_dir():
        raise IsADirectoryError(
            f"path: {given} is a folder; expected a .npz file such as {given / 'params.npz'}"
        )
    tried = f"{target}" if given == target else f"{target} (nor {given})"
    raise FileNotFoundError(f"path: no such file {tried}")


def read_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of a ``.npz`` archive, by key, read without unpickling anything.

    Raises:
        FileNotFoundError: neither ``path`` nor ``path + ".npz"`` exists.
        ValueError: the file is not a ``.npz`` archive, or an array in it holds Python
            objects (``dtype=object``; reading it would need pickle, which can run code), the
            message naming that key.
    """
    target = _resolve(path)
    try:
        loaded = np.load(target, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"path: {target} is not a .npz archive written by save() ({exc})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"path: expected a .npz archive written by save(), got a single array in {target}")
    arrays = {}
    with loaded as archive:
        for name in archive.files:
            try:
                arrays[name] = archive[name]
            except ValueError as exc:
                if "allow_pickle" not in str(exc):
                    raise
                raise ValueError(
                    f"{target}: array {name!r} holds Python objects (dtype=object); refused, because "
                    "reading it would unpickle, which can run code (allow_pickle=False)"
                ) from None
    return arrays


def load(module: Module, path: str | os.PathLike) -> None:
    """Read a ``.npz`` written by :func:`save` into ``module`` (see :func:`load_state_dict`).

    ``path`` is spelled as for :func:`save`: with or without the ``.npz`` suffix.  A stored
    configuration (:func:`load_config`) is skipped: it is not a parameter.
    """
    state = read_arrays(path)
    state.pop(CONFIG_KEY, None)
    load_state_dict(module, state)


def load_config(path: str | os.PathLike) -> dict | None:
    """The configuration :func:`save` stored in ``path``, or None when the file has none.

    Raises:
        FileNotFoundError, ValueError: as :func:`read_arrays`; ValueError also when the entry
            is not one JSON string describing an object.
    """
    entry = read_arrays(path).get(CONFIG_KEY)
    if entry is None:
        return None
    if entry.dtype.kind != "U" or entry.shape != ():
        raise ValueError(
            f"path: expected {CONFIG_KEY} to be one JSON string, got {entry.dtype} {entry.shape}"
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
