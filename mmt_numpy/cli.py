"""The pieces every ``python -m mmt_numpy`` command is built from.

A command checks all of its arguments before it writes anything, and a wrong argument is
one line on stderr that names it, with exit code 2::

    python -m mmt_numpy train: error: argument --epochs: expected a positive integer, got '0'

Argument types (``type=`` of ``add_argument``) do the checks argparse can do while parsing:
:func:`positive_int`, :func:`non_negative_int`, :func:`positive_float`, :func:`output_dir`
(a folder that is, or can be created as, a directory), :func:`output_file` (a file to write,
with the suffixes it may have) and :func:`input_file` (an existing readable file).  What can
only be checked later (a ``--filter`` that matches no check, a folder that cannot actually be
created) raises :class:`CommandLineError`, which ``__main__`` prints in the same one-line form.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from mmt_numpy import validate


class CommandLineError(Exception):
    """A wrong argument found after parsing; ``__main__`` prints it as one line and exits with 2.

    Args:
        argument: the option as typed, e.g. ``"--filter"``.
        message: what was expected and what arrived.
    """

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"argument {argument}: {message}")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``prog: error: message`` and exit code 2, no usage block.

    Subcommand parsers made by ``add_subparsers`` are of the same class, so theirs are too.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def _argument_type(
    name: str, parse: Callable[[str], object], check: Callable[[str, object], object], what: str
) -> Callable[[str], object]:
    """An argparse ``type=``: ``parse`` the text, then ``check`` it with a :mod:`validate` rule."""

    def convert(text: str) -> object:
        try:
            return check("value", parse(text))
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None

    convert.__name__ = name
    return convert


positive_int = _argument_type("positive_int", int, validate.positive_int, "a positive integer")
non_negative_int = _argument_type("non_negative_int", int, validate.non_negative_int, "an integer >= 0")
positive_float = _argument_type("positive_float", float, validate.positive_number, "a positive number")


def _nearest_existing(path: Path) -> Path:
    """``path`` itself if it exists, else its closest existing ancestor."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path.cwd()  # a relative path whose first part does not exist


def output_dir(text: str) -> Path:
    """An output folder: an existing directory, or a path that can be created as one.

    Refused: an empty path, an existing file, a path below a file, a place whose closest
    existing folder is not writable.  Nothing is created here (see :func:`make_output_dir`).
    """
    if not text:
        raise argparse.ArgumentTypeError("expected a folder, got ''")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"expected a folder, got {text!r}, which is a file")
    existing = _nearest_existing(path.absolute())
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"expected a folder, got {text!r}, below the file {str(existing)!r}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(
            f"expected a writable folder, got {text!r} ({str(existing)!r} is read-only)"
        )
    return path


def input_file(text: str) -> Path:
    """An existing, readable file (a saved model, a data file)."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"expected an existing file, got {text!r}, which does not exist")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"expected a file, got {text!r}, which is a folder")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"expected a readable file, got {text!r}")
    return path


def output_file(*suffixes: str) -> Callable[[str], Path]:
    """An argparse type for a file to write: ending in one of ``suffixes`` (any, if none), not a
    folder, in a folder that is or can be created (:func:`output_dir`'s rule).  Nothing is
    created here; a command calls :func:`make_output_dir` on its parent before writing."""

    def convert(text: str) -> Path:
        path = Path(text)
        if suffixes and path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(
                f"expected a file name ending in {' or '.join(suffixes)}, got {text!r}"
            )
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"expected a file, got {text!r}, which is a folder")
        try:
            output_dir(str(path.parent))
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"cannot write {text!r}: its folder: {exc}") from None
        return path

    convert.__name__ = "output_file"
    return convert


def make_output_dir(argument: str, path: Path) -> Path:
    """Create the output folder (the first thing a command writes, after every check).

    Raises:
        CommandLineError: naming ``argument`` and the path when it cannot be created (a
            read-only file system, a permission the writability check could not see).
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandLineError(argument, f"cannot create the folder {str(path)!r}: {exc.strerror}") from None
    return path
