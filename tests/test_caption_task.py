"""The ``train --task caption`` command (§6.2) on a small configuration: it learns, is
deterministic, prints what the issue asks (an epoch line, captions beside references, greedy
against beam search, the final line), and writes parameters that reload to the same captions
and the cross-attention maps of generated captions."""

from __future__ import annotations

import re
from functools import partial

import numpy as np
import pytest

from mmt_numpy import data, nn
from mmt_numpy.__main__ import main as cli
from mmt_numpy.tasks import TASKS, caption, task_module

SMALL = {k: v for k, v in caption.QUICK.items() if k != "epochs"}  # the --quick configuration


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("caption")
    lines: list[str] = []
    exact = caption.main(out=str(out), seed=0, log=lines.append, quick=True)
    return out, lines, exact


def test_the_command_prints_what_it_promises(small_run):
    _, lines, exact = small_run
    epochs = [line for line in lines if line.startswith("epoch")]
    assert len(epochs) == 3 and "held-out exact match (greedy, 24 scenes)" in epochs[0]
    assert sum(line.startswith("  reference: ") for line in lines) == 4
    assert sum(line.startswith("  beam 4   : ") for line in lines) == 4
    assert any(
        re.match(r"greedy  on 24 test scenes: exact match \d\.\d{4}  BLEU-4 \d\.\d{4}", line)
        for line in lines
    )
    assert any(line.startswith("beam 4  on 24 test scenes") for line in lines)
    final = re.fullmatch(r"test exact match: (\d\.\d{4})  BLEU-4: (\d\.\d{4})", lines[-1])
    assert final and float(final.group(1)) == pytest.approx(exact, abs=5e-5)


def test_the_loss_falls(small_run):
    _, lines, _ = small_run
    losses = [
        float(re.search(r"loss (\d+\.\d+)", line).group(1)) for line in lines if line.startswith("epoch")
    ]
    assert losses[-1] < 0.8 * losses[0], losses


def test_saved_parameters_write_the_same_captions(small_run):
    out, _, _ = small_run
    names = {p.name for p in out.iterdir()}
    assert names == {"params.npz", "loss_curve.png", "cross_attention_0.png"}
    assert all((out / n).stat().st_size > 1000 for n in names)
    config = caption.CaptionConfig(**SMALL)
    _, test = data.make_caption_splits(config.train_scenes, config.test_scenes, config.seed)
    patches = test.patches(np.float32)
    trained = caption.build_model(config, test.grid, patches.shape[-1])
    fresh_ids = trained.generate(patches, max_len=12)[0]
    nn.load(trained, out / "params.npz")
    again = caption.caption_images(trained, test)
    assert not np.array_equal(fresh_ids, again.ids[:, : fresh_ids.shape[1]])  # the load changed the model
    with caption.blas_threads(1):  # as the command ran: the rounding of a product depends on the threads
        rerun = caption.train_captioner(caption.CaptionConfig(epochs=3, **SMALL), log=lambda line: None)
    np.testing.assert_array_equal(again.ids, caption.caption_images(rerun.model, test).ids)


def test_same_seed_same_run():
    config = caption.CaptionConfig(epochs=1, **SMALL)
    a = caption.train_captioner(config, log=lambda line: None)
    b = caption.train_captioner(config, log=lambda line: None)
    np.testing.assert_array_equal(a.step_losses, b.step_losses)


def test_cross_attention_of_generated_words():
    config = caption.CaptionConfig(**SMALL)
    _, test = data.make_caption_splits(30, 4, 0)
    patches = test.patches(np.float32)
    model = caption.build_model(config, test.grid, patches.shape[-1])
    ids, _ = model.generate(patches, max_len=12)
    weights = caption.cross_attention(model, patches, ids)
    assert weights.shape == (4, ids.shape[1], 9)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)


def test_learning_rate_schedule():
    lr = partial(caption.learning_rate, total=1000, peak=1e-3, warmup=100)
    assert lr(0) == pytest.approx(1e-5) and lr(99) == pytest.approx(1e-3)
    assert lr(100) == pytest.approx(1e-3)
    assert lr(550) == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5))
    assert lr(1000) == pytest.approx(5e-5)


def test_the_task_is_on_the_command_line(capsys, monkeypatch, tmp_path):
    assert "caption" in TASKS and task_module("caption") is caption
    with pytest.raises(SystemExit) as exit_info:
        cli(["train", "--help"])
    assert exit_info.value.code == 0
    assert "caption" in capsys.readouterr().out
    monkeypatch.setitem(caption.QUICK, "train_scenes", 64)  # quicker still
    monkeypatch.setitem(caption.QUICK, "test_scenes", 4)
    monkeypatch.setitem(caption.QUICK, "monitor_scenes", 4)
    assert (
        cli(["train", "--task", "caption", "--quick", "--out", str(tmp_path / "run"), "--epochs", "1"]) == 0
    )
    out = capsys.readouterr().out
    assert "config: epochs=1, seed=0, train_scenes=64" in out
    assert out.splitlines()[-1].startswith("test exact match: ")
    assert (tmp_path / "run" / "params.npz").exists()


def test_bad_arguments_are_refused_before_anything_is_written(capsys, tmp_path):
    for kwargs, message in (
        ({"epochs": 0}, r"epochs: expected a positive integer, got 0"),
        ({"seed": -1}, r"seed: expected an integer >= 0, got -1"),
        (
            {"dataset": "easy-vqa"},
            r"dataset: expected one of \('toy',\) \(captions exist for the toy scenes\)",
        ),
    ):
        with pytest.raises(ValueError, match=message):
            caption.main(out=str(tmp_path / "run"), log=lambda line: None, **kwargs)
    assert not (tmp_path / "run").exists()
    assert cli(["train", "--task", "caption", "--dataset", "easy-vqa", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --dataset: --task caption trains on toy, not easy-vqa" in err
    assert not (tmp_path / "run").exists()
