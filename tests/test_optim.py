"""SGD, Adam and AdamW against torch.optim, step for step, and their argument checks.

Only the parity tests need PyTorch: they take the ``torch`` fixture, which skips that test
alone when torch is absent, so the rest of the module still runs.
"""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy.nn import Parameter
from mmt_numpy.optim import SGD, Adam, AdamW

STEPS = 5


@pytest.fixture
def torch():
    """The torch module, or a skip of the one test that asked for it."""
    return pytest.importorskip("torch")


def _quadratic_problem(torch):
    """Two parameters and the loss ½‖A θ1 − y‖² + ½ Σ θ2² ⊙ c, gradients written out."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((4, 3))
    y = rng.standard_normal(4)
    c = rng.uniform(0.5, 2.0, (2, 2))
    theta1 = rng.standard_normal(3)
    theta2 = rng.standard_normal((2, 2))

    def grads(t1: np.ndarray, t2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return A.T @ (A @ t1 - y), c * t2

    def torch_loss(t1, t2):
        return (
            0.5 * ((torch.from_numpy(A) @ t1 - torch.from_numpy(y)) ** 2).sum()
            + 0.5 * (torch.from_numpy(c) * t2**2).sum()
        )

    return (theta1, theta2), grads, torch_loss


def _run_both(torch, ours_cls, theirs_cls, **hyper) -> None:
    (theta1, theta2), grads, torch_loss = _quadratic_problem(torch)
    params = [Parameter(theta1.copy()), Parameter(theta2.copy())]
    opt = ours_cls(params, **hyper)
    t_params = [torch.tensor(theta1, requires_grad=True), torch.tensor(theta2, requires_grad=True)]
    t_opt = theirs_cls(t_params, **hyper)
    for step in range(STEPS):
        opt.zero_grad()
        g1, g2 = grads(params[0].data, params[1].data)
        params[0].grad += g1
        params[1].grad += g2
        opt.step()
        t_opt.zero_grad()
        torch_loss(*t_params).backward()
        t_opt.step()
        for ours, theirs in zip(params, t_params, strict=True):
            np.testing.assert_allclose(
                ours.data,
                theirs.detach().numpy(),
                rtol=0,
                atol=1e-10,
                err_msg=f"{ours_cls.__name__} {hyper}, step {step + 1}",
            )
    # The run must have moved the parameters, or the comparison proved nothing.
    assert not np.allclose(params[0].data, theta1)


@pytest.mark.parametrize(
    "hyper",
    [
        {"lr": 0.1},
        {"lr": 0.1, "momentum": 0.9},
        {"lr": 0.05, "momentum": 0.5, "weight_decay": 0.1},
        {"lr": 0.1, "weight_decay": 0.3},
    ],
)
def test_sgd_matches_torch(torch, hyper) -> None:
    _run_both(torch, SGD, torch.optim.SGD, **hyper)


@pytest.mark.parametrize(
    "hyper",
    [
        {"lr": 0.1},
        {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-6},
        {"lr": 0.1, "weight_decay": 0.2},
    ],
)
def test_adam_matches_torch(torch, hyper) -> None:
    _run_both(torch, Adam, torch.optim.Adam, **hyper)


@pytest.mark.parametrize(
    "hyper",
    [
        {"lr": 0.1},  # default weight_decay 0.01 on both sides
        {"lr": 0.05, "betas": (0.8, 0.99), "weight_decay": 0.3},
    ],
)
def test_adamw_matches_torch(torch, hyper) -> None:
    _run_both(torch, AdamW, torch.optim.AdamW, **hyper)


def test_adam_and_adamw_differ_only_by_where_the_decay_enters() -> None:
    """Same λ: L2 (Adam) and decoupled (AdamW) decay give different steps; λ = 0 gives the same."""
    g = np.array([1.0, -2.0, 0.5])
    results = {}
    for cls, wd in ((Adam, 0.5), (AdamW, 0.5), (Adam, 0.0), (AdamW, 0.0)):
        p = Parameter(np.array([1.0, 2.0, -3.0]))
        p.grad[...] = g
        opt = cls([p], lr=0.1, weight_decay=wd)
        opt.step()
        opt.step()
        results[cls.__name__, wd] = p.data
    assert not np.allclose(results["Adam", 0.5], results["AdamW", 0.5])
    np.testing.assert_array_equal(results["Adam", 0.0], results["AdamW", 0.0])


def test_float32_parameters_stay_float32() -> None:
    for cls in (SGD, Adam, AdamW):
        p = Parameter(np.ones((2, 3), dtype=np.float32))
        p.grad[...] = 0.5
        kwargs = {"momentum": 0.9, "weight_decay": 0.1} if cls is SGD else {"weight_decay": 0.1}
        opt = cls([p], lr=0.1, **kwargs)
        opt.step()
        opt.step()
        assert p.data.dtype == np.float32 and p.grad.dtype == np.float32, cls.__name__
        assert opt.params[0] is p


def test_zero_grad_resets_every_gradient() -> None:
    params = [Parameter(np.ones(3)), Parameter(np.ones((2, 2)))]
    for p in params:
        p.grad[...] = 7.0
    SGD(params, lr=0.1).zero_grad()
    assert all(not p.grad.any() for p in params)


def test_training_a_model_lowers_its_loss() -> None:
    """Fit y = x W* with a Linear and Adam: the loss must fall by orders of magnitude."""
    from mmt_numpy.nn import Linear

    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 3))
    y = x @ rng.standard_normal((3, 2))
    model = Linear(3, 2, rng=2)
    opt = Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(200):
        out, cache = model.forward(x)
        err = out - y
        losses.append(float(np.mean(err**2)))
        opt.zero_grad()
        model.backward(2 * err / err.size, cache)
        opt.step()
    assert losses[-1] < 1e-3 * losses[0]


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda p: SGD(p, lr=-0.1), r"lr: expected a number >= 0, got -0.1"),
        (lambda p: SGD(p, lr=0.1, momentum=1.0), r"momentum: expected a number in \[0, 1\)"),
        (lambda p: Adam(p, betas=(0.9, 1.0)), r"betas\[1\]"),
        (lambda p: Adam(p, betas=0.9), "betas: expected a pair"),
        (lambda p: AdamW(p, weight_decay=-1.0), "weight_decay"),
        (lambda p: Adam(p, eps=float("nan")), "eps"),
        (lambda p: SGD([], lr=0.1), "params: expected at least one Parameter"),
        (lambda p: SGD([np.ones(3)], lr=0.1), r"params\[0\]: expected a Parameter, got ndarray"),
        (lambda p: SGD(p + p, lr=0.1), "more than once"),
    ],
)
def test_bad_arguments_are_named(make, pattern) -> None:
    params = [Parameter(np.ones(3))]
    with pytest.raises((TypeError, ValueError), match=pattern):
        make(params)
