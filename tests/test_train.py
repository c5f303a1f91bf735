"""End-to-end learning on the toy VQA task (§6.1): a short run lowers the loss clearly, is
deterministic, saves parameters that reload to the same predictions, and writes its
plots; the model gives image patches 2-D positions at the scale of their features; the
loss path's gradient is checked, and a broken one is rejected."""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy import data
from mmt_numpy.__main__ import main as cli
from mmt_numpy.checks.learning import classification_case
from mmt_numpy.nn import GridPositionalEmbedding, LearnedPositionalEmbedding, load
from mmt_numpy.tasks.vqa import (
    ImageTextModel,
    TrainConfig,
    cls_logits_backward,
    predict,
    save_artifacts,
    train_vqa,
)

SMALL = dict(epochs=4, train_scenes=250, test_scenes=40, hidden_dim=16, num_heads=2, d_ff=32)


@pytest.fixture(scope="module")
def short_run():
    return train_vqa(TrainConfig(**SMALL), log=lambda line: None)


def test_loss_drops_clearly(short_run):
    losses = np.array(short_run.step_losses)
    first, last = losses[:5].mean(), losses[-5:].mean()
    assert last < 0.6 * first, (first, last)
    assert short_run.train_accuracy[-1] > 0.5  # six answers: chance is about 1/6


def test_same_seed_same_run(short_run):
    again = train_vqa(TrainConfig(**{**SMALL, "epochs": 1}), log=lambda line: None)
    n = len(again.step_losses)
    np.testing.assert_array_equal(again.step_losses, short_run.step_losses[:n])


def test_saved_parameters_reproduce_predictions(short_run, tmp_path):
    written = save_artifacts(short_run, tmp_path, log=lambda line: None)
    names = {p.name for p in written}
    assert {"params.npz", "loss_curve.png", "attention_q0_layer1.png"} <= names
    assert all(p.stat().st_size > 1000 for p in written)

    test = short_run.test_set
    patches = test.patches(np.float32)
    fresh = ImageTextModel(
        len(data.TOKENIZER),
        patches.shape[-1],
        len(data.ANSWERS),
        hidden_dim=16,
        num_heads=2,
        d_ff=32,
        max_len=9,
        image_grid=(3, 3),
        dtype=np.float32,
        rng=123,
    )
    before = fresh(test.ids, patches, test.lengths)
    load(fresh, tmp_path / "params.npz")
    after = fresh(test.ids, patches, test.lengths)
    expected = short_run.model(test.ids, patches, test.lengths)
    assert not np.array_equal(before, expected)  # the fresh model really was different
    np.testing.assert_array_equal(after, expected)
    np.testing.assert_array_equal(
        predict(fresh, test.ids, patches, test.lengths),
        predict(short_run.model, test.ids, patches, test.lengths),
    )


def test_image_positions_are_a_grid_at_the_scale_of_the_patch_features(short_run):
    """The cause of the old "left of" plateau, kept fixed: the column of a patch must be a
    shared feature (one vector per column) and not drowned by the patch content at the start."""
    model = ImageTextModel(len(data.TOKENIZER), 192, len(data.ANSWERS), max_len=9, image_grid=(3, 3), rng=0)
    position = model.transformer.image_position
    assert isinstance(position, GridPositionalEmbedding) and position.grid == (3, 3)
    assert isinstance(short_run.model.transformer.image_position, GridPositionalEmbedding)
    patches = short_run.train_set.patches()[:200]
    features = model.transformer.image_embedding(patches)
    content = features[patches.sum(-1) > 0] - model.transformer.image_embedding.b.data  # shape patches
    content_rms = np.sqrt(np.mean(content**2))
    assert 0.5 < np.sqrt(np.mean(position.table() ** 2)) / content_rms < 4
    # the §5 model's 1-D table, as ImageTextModel scales it, is about 1% of the content
    sequence = ImageTextModel(len(data.TOKENIZER), 192, len(data.ANSWERS), max_len=9, rng=0)
    assert isinstance(sequence.transformer.image_position, LearnedPositionalEmbedding)
    assert np.sqrt(np.mean(sequence.transformer.image_position.weight.data**2)) / content_rms < 0.02


def test_config_rejects_unknown_image_positions():
    with pytest.raises(ValueError, match=r"image_positions: expected one of \('grid', 'sequence'\), got '2d"):
        train_vqa(TrainConfig(**{**SMALL, "image_positions": "2d"}), log=lambda line: None)


def _at_last_position(d_logits, out_shape):
    """Broken: sends the [CLS] gradient to the last position instead of the first."""
    d_out = np.zeros(out_shape)
    d_out[:, -1] = d_logits
    return d_out


@pytest.mark.parametrize("broken", [False, True])
def test_vqa_loss_gradient(broken):
    report = classification_case(_at_last_position if broken else cls_logits_backward)
    assert report.passed != broken, str(report)


def test_cli_has_a_train_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli(["train", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "--epochs" in help_text and "runs/vqa" in help_text
