"""UniT (§3.2): a multi-task step sends gradients only where its tasks reach (exactly zero
elsewhere), the shared parts sum the tasks' contributions, broken backwards are rejected by
the checker, the task-query decoder and head match PyTorch, and bad input is refused clearly."""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy import ops
from mmt_numpy.checks import randn, randomize
from mmt_numpy.checks.unit import IDS, INDEX, LENGTHS, tiny_unit
from mmt_numpy.gradcheck import check_module
from mmt_numpy.nn import unit as unit_module
from mmt_numpy.nn.unit import TaskBatch, TaskHead, UniT
from mmt_numpy.torch_bridge import to_torch
from tests.nn.test_encoder import assert_grads_match


def three_tasks(seed: int = 0) -> UniT:
    """Two image tasks and a video task, so 'the other head' and 'the other modality' both exist."""
    model = UniT(
        {"pictures": ("image", 3), "captions": ("image", 2), "clips": ("video", 2)}, 8, 4,
        image_patch_dim=3, image_grid=(2, 1), video_patch_dim=3, video_grid=(1, 2), max_frames=2,
        d_model=4, num_heads=2, d_ff=4, num_queries=2, rng=seed,
    )  # fmt: skip
    return randomize(model, seed + 1)


def batch(task: str, seed: int) -> TaskBatch:
    visual = randn(seed, 2, 2, 3) if task != "clips" else randn(seed, 2, 2, 2, 3)
    classes = {"pictures": 3, "captions": 2, "clips": 2}[task]
    return TaskBatch(IDS, visual, np.arange(3) % classes, LENGTHS, INDEX)


def grads_by_group(model: UniT) -> dict[str, float]:
    return {
        name: sum(float(np.abs(p.grad).sum()) for p in ps) for name, ps in model.parameter_groups().items()
    }


@pytest.mark.parametrize(
    "tasks", [("pictures",), ("clips",), ("pictures", "captions"), ("captions", "clips")]
)
def test_a_step_gives_exactly_zero_gradient_to_what_its_tasks_do_not_use(tasks) -> None:
    model = three_tasks()
    model.zero_grad()
    losses = model.loss_backward({t: batch(t, i) for i, t in enumerate(tasks)})
    assert set(losses) == set(tasks) and all(np.isfinite(v) for v in losses.values())
    reached = {g for t in tasks for g in model.groups_of(t)}
    for name, params in model.parameter_groups().items():
        if name in reached:
            assert sum(np.abs(p.grad).sum() for p in params) > 0, name
        else:
            assert all(np.all(p.grad == 0) for p in params), f"{name} got a gradient from {tasks}"


def test_every_parameter_is_in_exactly_one_group() -> None:
    model = three_tasks()
    grouped = [id(p) for ps in model.parameter_groups().values() for p in ps]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    assert model.groups_of("captions") == ("shared", "image", "head.captions")


def test_a_mixed_step_is_the_sum_of_its_tasks_steps() -> None:
    model = three_tasks()
    b1, b2 = batch("pictures", 5), batch("clips", 6)
    model.zero_grad()
    model.loss_backward({"pictures": b1, "clips": b2})
    together = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    model.loss_backward({"pictures": b1})
    model.loss_backward({"clips": b2})  # adds into .grad: the module contract
    for a, p in zip(together, model.parameters(), strict=True):
        np.testing.assert_allclose(a, p.grad, rtol=0, atol=1e-14)


def test_rows_reading_one_image_equal_rows_with_a_copy_each() -> None:
    """visual_index is a gather: rows 0 and 2 read image 1 once, as if each had its own copy."""
    model = three_tasks()
    visual = randn(7, 2, 2, 3)
    shared = model(IDS, visual, task="pictures", text_lengths=LENGTHS, visual_index=INDEX)
    copied = model(IDS, visual[INDEX], task="pictures", text_lengths=LENGTHS)
    np.testing.assert_allclose(shared, copied, rtol=0, atol=1e-13)


def test_padded_text_tokens_change_nothing() -> None:
    model = three_tasks()
    visual = randn(8, 2, 2, 3)
    junk = IDS.copy()
    junk[2, 2:] = 5  # beyond length 2
    a = model(IDS, visual, task="pictures", text_lengths=LENGTHS, visual_index=INDEX)
    b = model(junk, visual, task="pictures", text_lengths=LENGTHS, visual_index=INDEX)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)


def test_the_task_is_told_apart_by_its_queries() -> None:
    """Two tasks over the same inputs and classes give different outputs: only their queries and heads
    differ, and the cross-attention weights of their queries differ too."""
    model = three_tasks()
    visual = randn(9, 2, 2, 3)
    _, ca = model.forward(IDS, visual, task="pictures", visual_index=INDEX)
    _, cb = model.forward(IDS, visual, task="captions", visual_index=INDEX)
    assert ca.cross_weights[0].shape == (3, 2, 2, 2 + 4)  # (B, H, Nq, Lv + Lt)
    assert np.abs(ca.cross_weights[0] - cb.cross_weights[0]).max() > 1e-3
    np.testing.assert_allclose(ca.cross_weights[0].sum(-1), 1.0, atol=1e-12)


# ---------------------------------------------------------------- broken backwards are rejected


def _small() -> UniT:
    """One image task, width 2: a check of a second or two."""
    model = UniT({"pictures": ("image", 3)}, 8, 4, image_patch_dim=3, image_grid=(2, 1), d_model=2,
                 num_heads=1, d_ff=2, decoder_layers=1, num_queries=2, rng=3)  # fmt: skip
    return randomize(model, 4)


def _check(model: UniT):
    inputs = {"ids": IDS, "visual": randn(10, 2, 2, 3)}
    kwargs = {"task": "pictures", "text_lengths": LENGTHS, "visual_index": INDEX}
    return check_module(model, inputs, kwargs=kwargs)


def test_the_small_model_passes_before_it_is_broken() -> None:
    assert _check(_small()).passed


def test_a_query_gradient_averaged_over_the_batch_is_rejected(monkeypatch) -> None:
    """Missing scale: the queries are used by every row, their gradient is the sum, not the mean."""
    monkeypatch.setattr(
        TaskHead, "inputs_backward", lambda self, d: self.queries.grad.__iadd__(d.mean(axis=0))
    )
    report = _check(_small())
    assert not report.passed
    assert [t.name for t in report.tensors if not t.passed] == ["heads.pictures.queries"]


def test_a_dropped_text_summary_gradient_is_rejected(monkeypatch) -> None:
    """Dropped term: the decoder's input also read the text's [CLS] output."""
    original = UniT.decode_backward
    monkeypatch.setattr(UniT, "decode_backward", lambda self, d, c: original(self, d, c)[:1])
    report = _check(_small())
    failed = {t.name for t in report.tensors if not t.passed}
    assert not report.passed and any(name.startswith("text.") for name in failed)
    assert not any(name.startswith("image.") or name.startswith("heads.") for name in failed)


def test_a_transposed_head_gradient_is_rejected(monkeypatch) -> None:
    """Transposed: the head's (B, Nq·D) gradient reshaped as (B, D, Nq) and swapped back."""

    def backward(self, d_logits, cache):
        (d_flat,) = self.classifier.backward(d_logits, cache.classifier)
        return (d_flat.reshape(cache.batch, -1, self.num_queries).transpose(0, 2, 1).copy(),)

    monkeypatch.setattr(TaskHead, "backward", backward)
    assert not _check(_small()).passed


# ---------------------------------------------------------------- PyTorch parity of the decoder part


def test_the_task_query_decoder_and_head_match_torch() -> None:
    """decode(): queries + text summary through the shared decoder (no self-attention mask, key
    padding over the memory) and the task head, against torch.nn.TransformerDecoder and nn.Linear:
    logits, the memory's and the summary's gradients, the queries' and every parameter's."""
    torch = pytest.importorskip("torch")
    model = randomize(tiny_unit(20, decoder_layers=2), 21)
    head = model.heads["pictures"]
    B, Lm, D = 3, 6, 4
    memory, summary = randn(22, B, Lm, D), randn(23, B, D)
    keep = ops.padding_mask([6, 4, 5], Lm)
    logits, cache = model.decode(memory, "pictures", keep, summary)
    G = randn(24, *logits.shape)
    model.zero_grad()
    d_memory, d_summary = model.decode_backward(G, cache)

    decoder, classifier = to_torch(model.decoder), to_torch(head.classifier)
    queries = torch.from_numpy(head.queries.data.copy()).requires_grad_()
    mt = torch.from_numpy(memory.copy()).requires_grad_()
    st = torch.from_numpy(summary.copy()).requires_grad_()
    x = queries.expand(B, *queries.shape) + st[:, None, :]
    h = decoder(x, mt, memory_key_padding_mask=torch.from_numpy(~keep[:, 0, 0]))
    out = classifier(h.reshape(B, -1))
    np.testing.assert_allclose(logits, out.detach().numpy(), rtol=0, atol=1e-10)
    (out * torch.from_numpy(G)).sum().backward()
    np.testing.assert_allclose(d_memory, mt.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(d_summary, st.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(head.queries.grad, queries.grad.numpy(), rtol=0, atol=1e-10)
    assert_grads_match(model.decoder, decoder)
    assert_grads_match(head.classifier, classifier)


# ---------------------------------------------------------------- errors


def test_unknown_task_names_are_refused_listing_the_tasks() -> None:
    model = three_tasks()
    with pytest.raises(ValueError, match="task: expected one of pictures, captions, clips, got 'vqa'"):
        model(IDS, randn(0, 2, 2, 3), task="vqa")
    with pytest.raises(ValueError, match="task: expected one of"):
        model.loss_backward({"nope": batch("pictures", 0)})
    with pytest.raises(ValueError, match="task: expected one of"):
        model.groups_of("nope")


def test_bad_inputs_are_refused_naming_the_argument() -> None:
    model = three_tasks()
    with pytest.raises(
        ValueError, match=r"visual: task 'clips' reads video, expected \(S, T, N, patch_dim\)"
    ):
        model(IDS, randn(0, 2, 2, 3), task="clips")
    with pytest.raises(ValueError, match=r"visual_index: expected values in \[0, 2\)"):
        model(IDS, randn(0, 2, 2, 3), task="pictures", visual_index=np.array([0, 2, 1]))
    with pytest.raises(ValueError, match="visual_index: expected 3 integers"):
        model(IDS, randn(0, 2, 2, 3), task="pictures", visual_index=np.array([0, 1]))
    with pytest.raises(ValueError, match="text_lengths"):
        model(IDS, randn(0, 2, 2, 3), task="pictures", text_lengths=np.array([5, 1, 1]), visual_index=INDEX)
    with pytest.raises(TypeError, match="batches\\['pictures'\\]: expected a TaskBatch"):
        model.loss_backward({"pictures": (IDS,)})
    with pytest.raises(ValueError, match="d_logits"):
        _, cache = model.forward(IDS, randn(0, 2, 2, 3), task="pictures", visual_index=INDEX)
        model.backward(np.zeros((3, 2)), cache)  # pictures has 3 classes


def test_bad_task_specs_are_refused() -> None:
    with pytest.raises(ValueError, match="tasks: expected a non-empty mapping"):
        UniT({}, 8, 4)
    with pytest.raises(ValueError, match=r"tasks\['a'\]: expected \(modality, num_classes\)"):
        UniT({"a": ("audio", 2)}, 8, 4)
    with pytest.raises(ValueError, match="Python identifiers"):
        UniT({"two words": ("image", 2)}, 8, 4, image_patch_dim=3, image_grid=(1, 1))
    with pytest.raises(ValueError, match="image_patch_dim, image_grid: expected values"):
        UniT({"a": ("image", 2)}, 8, 4)


def test_float32_in_float32_out() -> None:
    model = UniT({"a": ("image", 2)}, 8, 4, image_patch_dim=3, image_grid=(2, 1), d_model=4, num_heads=2,
                 d_ff=4, dtype=np.float32, rng=0)  # fmt: skip
    logits, cache = model.forward(IDS, randn(0, 3, 2, 3).astype(np.float32), task="a")
    assert logits.dtype == np.float32
    (d_visual,) = model.backward(np.ones_like(logits), cache)
    assert d_visual.dtype == np.float32 and unit_module.UniTCache is type(cache)
