"""The exercise notebooks in ``exercises/`` grade what they claim to grade.

Each notebook has one cell tagged ``exercise`` (the blank the reader fills in) and graders
(cells tagged ``grader``) that end every check with a verdict line, ``PASS: ...``, ``FAIL: ...``
or ``NOT DONE: ...``.  Each notebook is run twice with nbclient: with the library's own
solution put into the blank, every verdict must be PASS; with a deliberately wrong answer, at
least one must be FAIL.  The committed notebooks keep their blanks, so their stored outputs
must say NOT DONE and show no error.

``exercises/`` is outside the folders nbmake runs (``testpaths`` in pyproject.toml): its blanks
raise ``NotImplementedError`` on purpose.
"""

from __future__ import annotations

import os
import pathlib

import nbclient  # dev dependencies, like pytest itself: no skip
import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXERCISES = ROOT / "exercises"

# notebook -> (the library's solution, a deliberately wrong answer), each the new source of the blank
ANSWERS = {
    "ex01_softmax_backward": (
        "from mmt_numpy.ops import softmax_backward",
        "def softmax_backward(d_out, cache):\n    return d_out * cache.out  # the row-sum term dropped\n",
    ),
    "ex02_attention_backward": (
        "from mmt_numpy.ops import attention_backward",
        "from mmt_numpy import ops\n\n\n"
        "def attention_backward(d_out, cache):\n"
        "    dq, dk, dv = ops.attention_backward(d_out, cache)\n"
        "    return dq / cache.scale, dk, dv  # dq without its 1/sqrt(d_k)\n",
    ),
    "ex03_layernorm_backward": (
        "from mmt_numpy.ops import layernorm_backward",
        "def layernorm_backward(d_out, cache):\n"
        "    g = d_out * cache.gamma\n"
        "    dx = cache.rstd * (g - g.mean(axis=-1, keepdims=True))  # the path through σ² dropped\n"
        "    rows = d_out.reshape(-1, d_out.shape[-1])\n"
        "    return dx, (rows * cache.x_hat.reshape(rows.shape)).sum(axis=0), rows.sum(axis=0)\n",
    ),
    "ex04_split_merge_heads": (
        "from mmt_numpy.nn.attention import merge_heads, split_heads",
        "def split_heads(x, num_heads):\n"
        "    B, L, D = x.shape\n"
        "    return x.reshape(B, num_heads, L, D // num_heads)  # no transpose: heads get positions\n\n\n"
        "def merge_heads(x):\n"
        "    B, H, L, Dh = x.shape\n"
        "    return x.reshape(B, L, H * Dh)\n",
    ),
    "ex05_online_softmax": (
        "from mmt_numpy import ops\n\n\n"
        "def blocked_attention(q, k, v, block_size):\n"
        "    return ops.flash_attention_forward(q, k, v, block_size=block_size)[0]\n",
        "import numpy as np\n\n\n"
        "def blocked_attention(q, k, v, block_size):\n"
        "    scale = 1.0 / np.sqrt(q.shape[-1])\n"
        "    m = np.full(q.shape[:-1] + (1,), -np.inf)\n"
        "    l_sum = np.zeros(q.shape[:-1] + (1,))\n"
        "    acc = np.zeros(q.shape[:-1] + (v.shape[-1],))\n"
        "    for start in range(0, k.shape[-2], block_size):\n"
        "        stop = start + block_size\n"
        "        k_blk, v_blk = k[..., start:stop, :], v[..., start:stop, :]\n"
        "        s = (q @ k_blk.swapaxes(-1, -2)) * scale\n"
        "        m_new = np.maximum(m, s.max(axis=-1, keepdims=True))\n"
        "        p = np.exp(s - m_new)\n"
        "        l_sum = np.exp(m - m_new) * l_sum + p.sum(axis=-1, keepdims=True)\n"
        "        acc = acc + p @ v_blk  # the old sum is not rescaled by exp(m - m_new)\n"
        "        m = m_new\n"
        "    return acc / l_sum\n",
    ),
    "ex06_beam_search_step": (
        "from mmt_numpy.nn.generation import beam_search_step",
        "import numpy as np\n\n\n"
        "def beam_search_step(scores, log_probs, beam_size):\n"
        "    B, K, V = log_probs.shape\n"
        "    candidates = log_probs.reshape(B, K * V)  # the beams' own scores not added\n"
        '    best = np.argsort(-candidates, axis=-1, kind="stable")[:, :beam_size]\n'
        "    return best // V, best % V, np.take_along_axis(candidates, best, axis=-1)\n",
    ),
}

VERDICTS = ("PASS:", "FAIL:", "NOT DONE:")


def _tagged(nb, tag: str) -> list:
    return [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]


def _verdicts(cells) -> list[str]:
    """The verdict lines the grader cells printed, in order."""
    lines = []
    for cell in cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                lines += [line for line in output["text"].splitlines() if line.startswith(VERDICTS)]
    return lines


def _errors(nb) -> list[str]:
    return [
        f"{o['ename']}: {o['evalue']}"
        for c in nb.cells
        for o in c.get("outputs", [])
        if o["output_type"] == "error"
    ]


def _run_twice(name: str, sources: tuple[str, ...]) -> list[tuple[list[str], list[str]]]:
    """Execute exercise ``name`` once per source put into its blank; return each run's (verdicts, errors).

    The runs share one kernel (starting one costs more than running the notebook); each run
    executes every cell from the top, so the second answer replaces the first.
    """
    nb = nbformat.read(EXERCISES / f"{name}.ipynb", as_version=4)
    (blank,) = _tagged(nb, "exercise")
    client = nbclient.NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(EXERCISES)}},
    )
    runs = []
    with client.setup_kernel():
        for source in sources:
            blank.source = source
            for index, cell in enumerate(nb.cells):
                if cell.cell_type == "code":
                    client.execute_cell(cell, index)
            runs.append((_verdicts(_tagged(nb, "grader")), _errors(nb)))
    return runs


def test_every_exercise_notebook_has_answers_here():
    assert sorted(ANSWERS) == sorted(p.stem for p in EXERCISES.glob("ex*.ipynb"))


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_committed_notebook_keeps_its_blank(name):
    nb = nbformat.read(EXERCISES / f"{name}.ipynb", as_version=4)
    (blank,) = _tagged(nb, "exercise")
    assert "raise NotImplementedError" in blank.source
    assert _tagged(nb, "grader"), "no grader cell"
    verdicts = _verdicts(_tagged(nb, "grader"))
    assert verdicts and all(v.startswith("NOT DONE:") for v in verdicts), verdicts
    assert not _errors(nb)


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_library_solution_passes_and_wrong_answer_fails(name, monkeypatch):
    # the kernel inherits the environment: make it import this checkout's mmt_numpy
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    (verdicts, errors), (wrong_verdicts, wrong_errors) = _run_twice(name, ANSWERS[name])
    assert not errors, errors
    assert verdicts and all(v.startswith("PASS:") for v in verdicts), verdicts

    verdicts, errors = wrong_verdicts, wrong_errors
    assert not errors, errors
    assert any(v.startswith("FAIL:") for v in verdicts), verdicts
