"""What broke when the project was tried from outside, one test (at least) per finding.

The backward audit below runs every case of the gradient-check catalogue a second time with
the checker replaced by a probe: each op and module the catalogue exercises is handed a
wrong upstream gradient (float32 where the forward was float64, an extra axis, an axis of
1 that would broadcast, a list) and must refuse it with a TypeError or ValueError, and a
module must not have added anything into ``.grad`` before refusing.  A new op or module
gets this audit by being in the catalogue, which the project's checklist already asks.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from importlib import import_module
from pathlib import Path
from pkgutil import iter_modules

import numpy as np
import pytest

import mmt_numpy.checks
import mmt_numpy.gradcheck
from mmt_numpy import data, nn, ops
from mmt_numpy.checks import all_cases, randn
from mmt_numpy.gradcheck import GradcheckReport, check_tensor
from mmt_numpy.nn import ImageTextModel
from mmt_numpy.optim import SGD, Adam, AdamW

# ----------------------------------------------------------------------------- d_out audit


def _wrong_like(out: np.ndarray) -> Iterator[tuple[str, object]]:
    """Upstream gradients that a backward must refuse, for a forward output ``out``."""
    if out.ndim == 0:  # a scalar loss: Python and NumPy scalars are fine, other shapes are not
        yield "shape (1,) for a scalar loss", np.ones(1, dtype=out.dtype)
        yield "shape (2,) for a scalar loss", np.ones(2, dtype=out.dtype)
        yield "a string", "1.0"
        return
    other = np.float32 if out.dtype == np.float64 else np.float64
    yield f"dtype {np.dtype(other)}", np.ones(out.shape, dtype=other)
    yield "a list", np.ones(out.shape).tolist()
    yield f"shape {(1, *out.shape)} (an extra axis)", np.ones((1, *out.shape), dtype=out.dtype)
    if out.ndim >= 2:
        yield f"shape {out.shape[1:]} (an axis fewer)", np.ones(out.shape[1:], dtype=out.dtype)
    for axis, size in enumerate(out.shape):
        if size > 1:
            shape = out.shape[:axis] + (1,) + out.shape[axis + 1 :]
            yield f"shape {shape} (broadcasts to {out.shape})", np.ones(shape, dtype=out.dtype)


def _wrong_upstreams(out: object) -> Iterator[tuple[str, object]]:
    """As :func:`_wrong_like`, for one output or a tuple of several (each slot in turn)."""
    if not isinstance(out, tuple):
        yield from _wrong_like(out)
        return
    good = tuple(np.zeros_like(o) for o in out)
    yield "one gradient for a tuple output", good[0]
    yield "a tuple one gradient short", good[:-1]
    for i, o in enumerate(out):
        for label, bad in _wrong_like(o):
            yield f"output {i}: {label}", good[:i] + (bad,) + good[i + 1 :]


def _verdict(backward, bad, cache) -> str | None:
    """None when ``backward`` refuses ``bad`` with a TypeError or ValueError, else what it did."""
    try:
        backward(bad, cache)
    except (TypeError, ValueError):
        return None
    except Exception as exc:  # noqa: BLE001 - any other exception is a crash, not a refusal
        return f"crashed with {type(exc).__name__}"
    return "accepted"


class _Probe:
    """Stands in for ``check_op`` / ``check_module``: probes the backward instead of checking it."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.probed: list[str] = []

    def check_op(self, forward, backward, inputs, *, kwargs=None, name=None, **_) -> GradcheckReport:
        name = name or forward.__name__
        values, kwargs = list(inputs.values()), kwargs or {}
        out, _ = forward(*values, **kwargs)
        for label, bad in _wrong_upstreams(out):
            _, cache = forward(*values, **kwargs)  # a fresh cache: a backward may work in place
            verdict = _verdict(backward, bad, cache)
            if verdict:
                self.problems.append(f"{name}: {verdict} d_out of {label}")
        self.probed.append(name)
        return GradcheckReport(name)

    def check_module(self, module, inputs, *, kwargs=None, name=None, **_) -> GradcheckReport:
        name = name or type(module).__name__
        values, kwargs = list(inputs.values()), kwargs or {}
        out, _ = module.forward(*values, **kwargs)
        for label, bad in _wrong_upstreams(out):
            _, cache = module.forward(*values, **kwargs)
            module.zero_grad()
            verdict = _verdict(module.backward, bad, cache)
            if verdict:
                self.problems.append(f"{name}: {verdict} d_out of {label}")
            touched = [n for n, p in module.named_parameters() if p.grad.any()]
            if touched:
                self.problems.append(f"{name}: d_out of {label} refused only after adding into {touched}")
        self.probed.append(name)
        return GradcheckReport(name)


def probe_catalogue() -> _Probe:
    """Run every catalogue case once with the checker replaced by a :class:`_Probe`."""
    monkeypatch = pytest.MonkeyPatch()
    result = _Probe()
    parts = [mmt_numpy.gradcheck]
    parts += [import_module(f"mmt_numpy.checks.{i.name}") for i in iter_modules(mmt_numpy.checks.__path__)]
    for part in parts:
        for attribute in ("check_op", "check_module"):
            if hasattr(part, attribute):
                monkeypatch.setattr(part, attribute, getattr(result, attribute))
    try:
        for case in all_cases():
            case.run()
    finally:
        monkeypatch.undo()
    return result


@pytest.fixture(scope="module")
def probe() -> _Probe:
    return probe_catalogue()


def test_the_probe_reached_every_case(probe) -> None:
    assert len(probe.probed) == len(all_cases())


def test_every_backward_in_the_catalogue_checks_d_out(probe) -> None:
    """Item 5: the shape and dtype of d_out are checked in every op and module backward."""
    assert probe.problems == []


def test_a_float64_d_out_into_a_float32_linear_is_refused() -> None:
    """Item 5 as reported: it used to return a float64 dx and cast silently into .grad."""
    layer = nn.Linear(3, 2, dtype=np.float32, rng=0)
    out, cache = layer.forward(randn(0, 4, 3).astype(np.float32))
    expected = r"d_out: expected dtype float32 \(the forward output's\), got float64"
    with pytest.raises(TypeError, match=expected):
        layer.backward(np.ones(out.shape), cache)
    assert not layer.W.grad.any()


def test_a_float64_d_out_into_float32_linear_op_is_refused() -> None:
    """The op beneath Linear: a float64 d_out used to come back as a float64 dx and dW."""
    x, W, b = (randn(i, *shape).astype(np.float32) for i, shape in enumerate([(4, 3), (3, 2), (2,)]))
    out, cache = ops.linear_forward(x, W, b)
    with pytest.raises(TypeError, match=r"d_out: expected dtype float32"):
        ops.linear_backward(np.ones(out.shape), cache)


def test_dense_attention_refuses_a_broadcastable_d_out() -> None:
    """Item 5 as reported: a d_out of shape (1, H, Lq, d_v) used to broadcast against the batch of
    2 and return gradients computed from the wrong upstream."""
    q, k, v = randn(0, 2, 2, 3, 4), randn(1, 2, 2, 5, 4), randn(2, 2, 2, 5, 4)
    out, cache = ops.attention_forward(q, k, v)
    with pytest.raises(ValueError, match=r"d_out: expected shape \(2, 2, 3, 4\)"):
        ops.attention_backward(np.ones((1, 2, 3, 4)), cache)


def test_the_probe_catches_an_unchecked_backward_and_a_late_check() -> None:
    """Negative controls: a backward without the d_out check, and one that adds into .grad first."""
    probe = _Probe()
    x = randn(0, 2, 3)
    probe.check_op(ops.relu_forward, lambda d_out, cache: d_out * cache.positive, {"x": x}, name="bare relu")
    assert any(p.startswith("bare relu: accepted d_out of dtype float32") for p in probe.problems)
    assert any("(broadcasts to (2, 3))" in p for p in probe.problems)

    class AddsFirst(nn.Linear):
        def backward(self, d_out, cache):
            self.b.grad += np.sum(d_out, axis=tuple(range(np.ndim(d_out) - 1)))  # before any check
            return super().backward(d_out, cache)

    probe = _Probe()
    probe.check_module(AddsFirst(3, 2, rng=0), {"x": x}, name="adds first")
    assert any("refused only after adding into ['b']" in p for p in probe.problems)


# ----------------------------------------------------------------------------- item 2: no keys


def test_dense_attention_over_no_keys_gives_zeros_like_blocked_attention() -> None:
    """k of shape (B, H, 0, d): zeros (it crashed in np.fmax.reduce), zero gradients, as blocked attention."""
    q, k, v = randn(0, 2, 2, 3, 4), np.zeros((2, 2, 0, 4)), np.zeros((2, 2, 0, 5))
    out, cache = ops.attention_forward(q, k, v)
    assert out.shape == (2, 2, 3, 5) and not out.any()
    blocked, _ = ops.flash_attention_forward(q, k, v, block_size=2)
    np.testing.assert_array_equal(out, blocked)
    dq, dk, dv = ops.attention_backward(randn(1, *out.shape), cache)
    assert not dq.any() and dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape


def test_dense_attention_over_no_keys_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    q, k, v = randn(0, 2, 2, 3, 4), np.zeros((2, 2, 0, 4)), np.zeros((2, 2, 0, 5))
    theirs = torch.nn.functional.scaled_dot_product_attention(*map(torch.from_numpy, (q, k, v)))
    np.testing.assert_array_equal(ops.attention_forward(q, k, v)[0], theirs.numpy())


def test_multi_head_attention_over_an_empty_key_value_gives_the_output_bias() -> None:
    """A batch with no image tokens: attention contributes 0, so the output is b_o in every row."""
    m = nn.MultiHeadAttention(4, 2, kv_dim=6, rng=0)
    m.b_o.data[...] = randn(1, 4)
    out = m(randn(2, 2, 3, 4), np.zeros((2, 0, 6)))
    np.testing.assert_allclose(out, np.broadcast_to(m.b_o.data, (2, 3, 4)), atol=1e-15)


# ----------------------------------------------------------------------------- item 3: InfoNCE underflow


@pytest.mark.parametrize("dtype, tiny", [(np.float64, 1e-170), (np.float32, 1e-23)])
def test_info_nce_of_rows_whose_squares_underflow_is_finite(dtype, tiny) -> None:
    """Non-zero rows whose squared norm underflows to 0 used to give NaN; two equal directions
    give log 2 (each text matches both images equally), as torch's 0.69."""
    emb = np.full((2, 3), tiny, dtype=dtype)
    assert np.sum(emb * emb) == 0  # the squares really underflow
    loss, cache = ops.info_nce_forward(emb, emb.copy())
    assert loss.dtype == dtype
    np.testing.assert_allclose(loss, np.log(2.0), rtol=1e-6)
    d_text, d_image = ops.info_nce_backward(1.0, cache)
    assert np.all(np.isfinite(d_text)) and np.all(np.isfinite(d_image))


@pytest.mark.parametrize("dtype, tiny", [(np.float64, 1e-170), (np.float32, 1e-23)])
def test_info_nce_of_tiny_rows_matches_torch(dtype, tiny) -> None:
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    emb = np.full((2, 3), tiny, dtype=dtype)
    t = F.normalize(torch.from_numpy(emb), dim=-1)
    logits = t @ t.T / 0.07
    target = torch.arange(2)
    theirs = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    assert np.isfinite(theirs.item())
    np.testing.assert_allclose(ops.info_nce_forward(emb, emb.copy())[0], theirs.item(), rtol=1e-6)


# ----------------------------------------------------------------------------- item 4: module masks


def test_a_3d_mask_is_per_batch_row_when_batch_equals_heads() -> None:
    """B = H = 2: a (B, Lq, Lk) mask hiding key 2 from row 0 changes row 0 only (it used to be
    applied per head: key 2 hidden from head 0 of every row)."""
    m = nn.MultiHeadAttention(4, 2, kv_dim=6, rng=0)
    q, kv = randn(1, 2, 3, 4), randn(2, 2, 5, 6)
    mask = np.ones((2, 3, 5), dtype=bool)
    mask[0, :, 2] = False
    out = m(q, kv, mask=mask)
    np.testing.assert_allclose(out[0], m(q[:1], kv[:1, [0, 1, 3, 4]])[0], atol=1e-12)
    np.testing.assert_allclose(out[1], m(q[1:], kv[1:])[0], atol=1e-12)


def test_a_2d_mask_is_queries_by_keys_even_when_lq_equals_batch() -> None:
    """Lq = B = 2: a 2-D mask is (Lq, Lk), shared by the batch, never (B, Lk) padding."""
    m = nn.MultiHeadAttention(4, 2, kv_dim=6, rng=0)
    q, kv = randn(1, 2, 2, 4), randn(2, 2, 5, 6)
    mask = np.ones((2, 5), dtype=bool)
    mask[0, 4] = False  # query 0 may not see key 4, in every batch row
    out = m(q, kv, mask=mask)
    np.testing.assert_allclose(out[:, 0], m(q, kv[:, :4])[:, 0], atol=1e-12)
    np.testing.assert_allclose(out[:, 1], m(q, kv)[:, 1], atol=1e-12)


def test_co_attention_reads_a_2d_mask_as_queries_by_keys() -> None:
    """image_mask (Lt, Li): word 0 sees patch 0 only, in every row; it used to be (B, Li) padding."""
    m = nn.CoAttentionLayer(4, 6, 2, 5, rng=6)
    text, image = randn(8, 2, 3, 4), randn(9, 2, 4, 6)
    word_sees = np.ones((3, 4), dtype=bool)
    word_sees[0, 1:] = False
    other_image = image.copy()
    other_image[:, 1:] += 1.0  # patches word 0 may not see
    text_out, _ = m(text, image, image_mask=word_sees)
    other_text_out, _ = m(text, other_image, image_mask=word_sees)
    np.testing.assert_allclose(text_out[:, 0], other_text_out[:, 0], atol=1e-12)
    assert not np.allclose(text_out[:, 1:], other_text_out[:, 1:])


def test_a_mask_of_a_shape_without_meaning_lists_the_accepted_shapes() -> None:
    m = nn.MultiHeadAttention(4, 2, rng=0)
    with pytest.raises(ValueError, match=r"mask: .*\(Lq, Lk\).*\(B, Lq, Lk\).*padding_mask"):
        m(randn(0, 2, 3, 4), mask=np.ones((3, 3, 3), dtype=bool))


# ----------------------------------------------------------------------------- item 6: scalars

_X = randn(0, 2, 3, 4)
_EMB = randn(1, 3, 4)


def _params() -> list[nn.Parameter]:
    return [nn.Parameter(np.ones(3))]


# (argument name as the message names it, a call taking the value, a good value).  Real numbers
# first, then integers; every scalar hyperparameter of the package is here.
REAL_ARGUMENTS = [
    ("temperature", lambda v: ops.info_nce_forward(_EMB, _EMB + 1, temperature=v), 0.07),
    ("temperature", lambda v: ops.info_nce_logits(_EMB, _EMB + 1, temperature=v), 0.07),
    ("scale", lambda v: ops.attention_forward(_X, _X, _X, scale=v), 0.3),
    ("scale", lambda v: ops.flash_attention_forward(_X, _X, _X, scale=v), 0.3),
    ("eps", lambda v: ops.layernorm_forward(_X, np.ones(4), np.zeros(4), eps=v), 1e-5),
    ("eps", lambda v: nn.LayerNorm(4, eps=v), 1e-5),
    ("p", lambda v: ops.dropout_forward(_X, v, np.random.default_rng(0)), 0.3),
    ("p", lambda v: nn.Dropout(v), 0.3),
    ("base", lambda v: ops.rope_forward(_X, base=v), 100.0),
    ("lr", lambda v: SGD(_params(), lr=v), 0.1),
    ("momentum", lambda v: SGD(_params(), lr=0.1, momentum=v), 0.9),
    ("weight_decay", lambda v: SGD(_params(), lr=0.1, weight_decay=v), 0.1),
    ("lr", lambda v: Adam(_params(), lr=v), 1e-3),
    ("betas[0]", lambda v: Adam(_params(), betas=(v, 0.999)), 0.9),
    ("betas[1]", lambda v: AdamW(_params(), betas=(0.9, v)), 0.999),
    ("eps", lambda v: Adam(_params(), eps=v), 1e-8),
    ("weight_decay", lambda v: AdamW(_params(), weight_decay=v), 0.01),
    ("std", lambda v: nn.GridPositionalEmbedding((2, 2), 4, std=v), 0.02),
    ("grid_std", lambda v: ImageTextModel(10, 4, 3, image_grid=(2, 2), grid_std=v), 0.3),
    ("dropout", lambda v: nn.FeedForward(4, 8, dropout=v), 0.1),
    ("dropout", lambda v: nn.TransformerEncoderLayer(4, 2, 8, dropout=v), 0.1),
    ("layer_norm_eps", lambda v: nn.TransformerEncoderLayer(4, 2, 8, layer_norm_eps=v), 1e-5),
    ("dropout", lambda v: nn.TransformerEncoder(4, 2, 8, 2, dropout=v), 0.1),
    ("dropout", lambda v: nn.MultimodalTransformer(3, 4, 8, 2, 1, 5, dropout=v), 0.1),
    ("dropout", lambda v: nn.CoAttentionLayer(4, 6, 2, 5, dropout=v), 0.1),
    ("layer_norm_eps", lambda v: nn.CoAttentionLayer(4, 6, 2, 5, layer_norm_eps=v), 1e-5),
    ("prob", lambda v: data.mask_tokens(np.array([[5, 6, 7]]), np.random.default_rng(0), prob=v), 0.15),
    ("eps", lambda v: check_tensor(lambda: 0.0, "x", np.zeros(2), np.zeros(2), eps=v), 1e-6),
    ("rtol", lambda v: check_tensor(lambda: 0.0, "x", np.zeros(2), np.zeros(2), rtol=v), 1e-6),
]
INT_ARGUMENTS = [
    ("block_size", lambda v: ops.flash_attention_forward(_X, _X, _X, block_size=v), 2),
    ("window", lambda v: ops.flash_attention_forward(_X, _X, _X, window=v), 2),
    ("Lq", lambda v: ops.causal_mask(v), 3),
    ("L", lambda v: ops.padding_mask([1, 2], v), 3),
    ("ignore_index", lambda v: ops.cross_entropy_forward(_EMB, np.array([0, 1, 2]), ignore_index=v), -100),
    ("num_heads", lambda v: nn.MultiHeadAttention(4, v), 2),
    ("d_in", lambda v: nn.Linear(v, 2), 3),
    ("num_layers", lambda v: nn.TransformerEncoder(4, 2, 8, v), 2),
    ("rng", lambda v: nn.Linear(3, 2, rng=v), 7),
    ("patch", lambda v: data.patchify(np.zeros((1, 4, 4, 3)), v), 2),
    ("num_test_scenes", lambda v: data.make_vqa_splits(2, v), 1),
]
_ALL = REAL_ARGUMENTS + INT_ARGUMENTS
_IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(_ALL)]


@pytest.mark.parametrize("name, call, good", _ALL, ids=_IDS)
def test_scalars_accept_python_and_numpy_scalars_and_0d_arrays(name, call, good) -> None:
    """np.float32(0.07) as a temperature used to be refused; one check now takes every spelling."""
    kind = np.float32 if isinstance(good, float) else np.int64
    for value in (good, kind(good), np.asarray(good)):
        call(value)


@pytest.mark.parametrize("name, call, good", _ALL, ids=_IDS)
def test_scalars_refuse_bools_and_strings_naming_the_argument(name, call, good) -> None:
    for value in (True, np.bool_(False), np.asarray(True), str(good), [good]):
        with pytest.raises(TypeError, match=rf"^{re.escape(name)}: expected "):
            call(value)


@pytest.mark.parametrize("name, call, good", REAL_ARGUMENTS, ids=_IDS[: len(REAL_ARGUMENTS)])
def test_real_scalars_refuse_nan_and_inf_naming_the_argument(name, call, good) -> None:
    for value in (float("nan"), float("inf"), np.float32("-inf"), np.asarray(float("nan"))):
        with pytest.raises(ValueError, match=rf"^{re.escape(name)}: expected .*\(finite\)"):
            call(value)


@pytest.mark.parametrize("name, call, good", INT_ARGUMENTS, ids=_IDS[len(REAL_ARGUMENTS) :])
def test_integer_scalars_refuse_floats_naming_the_argument(name, call, good) -> None:
    with pytest.raises(TypeError, match=rf"^{re.escape(name)}: expected .*integer"):
        call(float(good))


def test_scalar_messages_say_what_was_expected() -> None:
    with pytest.raises(ValueError, match=r"^temperature: expected a positive number, got -0.5$"):
        ops.info_nce_forward(_EMB, _EMB + 1, temperature=-0.5)
    with pytest.raises(ValueError, match=r"^momentum: expected a number in \[0, 1\), got 1.0$"):
        SGD(_params(), lr=0.1, momentum=1.0)
    with pytest.raises(ValueError, match=r"^p: expected a probability in \[0, 1\], got 1.5$"):
        nn.Dropout(1.5)
    with pytest.raises(ValueError, match=r"^block_size: expected a positive integer, got 0$"):
        ops.flash_attention_forward(_X, _X, _X, block_size=0)
    with pytest.raises(
        TypeError, match=r"^temperature: expected a positive number, got ndarray array\(\[0.07\]\)"
    ):
        ops.info_nce_forward(_EMB, _EMB + 1, temperature=np.array([0.07]))


# ----------------------------------------------------------------------------- item 12: torch per test

_TESTS = Path(__file__).parent


def _module_level_skips(path: Path) -> list[int]:
    """Line numbers of ``pytest.importorskip`` calls outside any function: they skip a whole file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inside.update(id(n) for n in ast.walk(node))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "importorskip"
        and id(node) not in inside
    ]


def test_no_test_file_skips_as_a_whole_when_torch_is_absent() -> None:
    """Item 12: tests/test_optim.py skipped all its tests without torch, 13 of which need none."""
    offenders = {
        str(p.relative_to(_TESTS)): lines
        for p in sorted(_TESTS.rglob("*.py"))
        if (lines := _module_level_skips(p))
    }
    assert offenders == {}, "skip per test (pytest.importorskip inside the test or a fixture), not per module"


# ----------------------------------------------------------------------------- item 13: CI lints

_ROOT = _TESTS.parent
README_TEST_COMMAND = 'pip install torch==2.13.0 && pip install -e ".[dev,parity]" && python -m pytest'


def _run_ci(tmp_path: Path, **statuses: int) -> tuple[int, list[str], str]:
    """Run ``.ci/run`` with ``apt-get``, ``pip``, ``ruff`` and ``python`` replaced by stubs that
    log their arguments and exit with the given statuses (``ruff=1``, ``python=5`` ...)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "log"
    for tool in ("apt-get", "pip", "ruff", "python"):
        stub = bin_dir / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{log}"\nexit {statuses.get(tool, 0)}\n')
        stub.chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        ["bash", str(_ROOT / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return result.returncode, calls, result.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_ci_lints_then_runs_the_readme_test_command(tmp_path) -> None:
    """Item 13: .ci/run ran no linter; now ruff check and ruff format --check come before pytest."""
    assert README_TEST_COMMAND in (_ROOT / "README.md").read_text(encoding="utf-8")
    script = (_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "set -euo pipefail" in script and README_TEST_COMMAND in script
    status, calls, _ = _run_ci(tmp_path)
    assert status == 0
    assert calls == [
        "apt-get update -qq",  # Chromium and its driver, for the explorer's browser test
        "apt-get install -y -qq chromium chromium-driver",
        "pip install -e .[data]",  # easy-VQA, for its tests
        "pip install -e .[dev]",
        "ruff check .",
        "ruff format --check .",
        "pip install torch==2.13.0",
        "pip install -e .[dev,parity]",
        "python -m pytest",
    ], calls


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_ci_stops_on_lint_and_never_passes_without_tests(tmp_path) -> None:
    """A lint error stops CI before the tests; pytest's exit 5 (no tests collected) fails it loudly."""
    status, calls, _ = _run_ci(tmp_path / "lint", ruff=1)
    assert status == 1 and not any(call.startswith("python") for call in calls)
    status, calls, stderr = _run_ci(tmp_path / "empty", python=5)
    assert status == 5 and "collected no tests" in stderr
