"""The training tasks behind ``python -m mmt_numpy train --task NAME``, one module each.

Each task module defines ``DEFAULT_EPOCHS`` and ``main(out, epochs, seed, log, **options)``,
which trains, prints a line per epoch, writes its artefacts into ``out`` (default
``runs/<task>``, so the runs of different tasks never overwrite each other) and returns the
figure it reports last (``test accuracy: X`` ...).  The command line checks every argument
before a task writes anything.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

# task name -> the module that trains it (imported only when that task runs)
TASKS = {
    "vqa": "mmt_numpy.tasks.vqa",
    "caption": "mmt_numpy.tasks.caption",
    "video": "mmt_numpy.tasks.video",
    "videobert": "mmt_numpy.tasks.videobert",
    "unit": "mmt_numpy.tasks.unit",
    "dialogue": "mmt_numpy.tasks.dialogue",
}


def task_module(name: str) -> ModuleType:
    """The module of task ``name``; a clear error listing the tasks otherwise."""
    if name not in TASKS:
        raise ValueError(f"task: expected one of {', '.join(TASKS)}, got {name!r}")
    return import_module(TASKS[name])
