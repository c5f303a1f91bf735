"""The long-text retrieval data: the answer is where the generator says, and nowhere else.

* pass key: ``key`` occurs exactly once, right before the answer's code, at
  ``answer_position``; code words elsewhere are distractors; the text ends in ``?``;
* image: exactly one sentence names the image's colour (read back from the rendered
  pixels) and it names the image's shape too; its code is the answer, at
  ``answer_position`` (the image token comes after the text, just before the question);
* deterministic per seed, different across seeds; bad arguments are refused.
"""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy.data import longtext as lt
from mmt_numpy.data.scenes import COLOURS, SHAPES


@pytest.mark.parametrize("length", [8, 128, 2048])
def test_passkey_sits_where_the_generator_claims(length):
    batch = lt.make_longtext_batch("passkey", length, 32, seed=1)
    assert batch.ids.shape == (32, length) and batch.patches is None and batch.length == length
    key, question = lt.TOKEN_ID[lt.KEY], lt.TOKEN_ID[lt.QUESTION]
    for row, answer, at in zip(batch.ids, batch.answers, batch.answer_position, strict=True):
        assert row[at] == lt.CODE_IDS[answer]
        assert row[at - 1] == key and np.count_nonzero(row == key) == 1
        assert row[-1] == question and np.count_nonzero(row == question) == 1
    if length >= 128:  # distractor codes are there, so "the only code word" is no shortcut
        assert np.isin(batch.ids, lt.CODE_IDS).sum(axis=1).min() > 5
    depths = batch.answer_position / length
    assert depths.min() < 0.3 and depths.max() > 0.7  # the key is placed at every depth


def _image_words(patch):
    """The colour of the rendered shape, read back from its pixels (the brightest ones)."""
    pixels = patch.reshape(-1, 3)
    lit = pixels[pixels.sum(axis=1) > 0.3]
    mean = lit.mean(axis=0)
    return min(COLOURS, key=lambda c: np.abs(np.array(COLOURS[c]) - mean).sum())


@pytest.mark.parametrize("length", [16, 128, 1024])
def test_exactly_one_sentence_describes_the_image(length):
    batch = lt.make_longtext_batch("image", length, 24, seed=2)
    assert batch.ids.shape == (24, length - 1) and batch.patches.shape == (24, 1, lt.PATCH_DIM)
    assert batch.length == length
    colour_ids = {lt.TOKEN_ID[c] for c in COLOURS}
    shape_ids = {lt.TOKEN_ID[s] for s in SHAPES}
    for row, patch, answer, at in zip(
        batch.ids, batch.patches, batch.answers, batch.answer_position, strict=True
    ):
        text_at = at  # the image token comes after the text, just before "?"
        shape, colour = lt.VOCAB[row[text_at - 2]], lt.VOCAB[row[text_at - 1]]
        assert row[text_at] == lt.CODE_IDS[answer] and lt.VOCAB[row[text_at + 1]] == "."
        assert colour == _image_words(patch) and shape in SHAPES
        sentences = [
            (row[i], row[i + 1])
            for i in range(len(row) - 1)
            if row[i] in shape_ids and row[i + 1] in colour_ids
        ]
        assert [c for _, c in sentences].count(lt.TOKEN_ID[colour]) == 1  # the only one of its colour
        assert len(sentences) >= max(1, round((length - 1) / lt.SENTENCE_EVERY)) - 1


def test_deterministic_per_seed_and_bad_arguments():
    a = lt.make_longtext_batch("image", 64, 3, seed=5)
    b = lt.make_longtext_batch("image", 64, 3, seed=5)
    c = lt.make_longtext_batch("image", 64, 3, seed=6)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.patches, b.patches)
    assert not np.array_equal(a.ids, c.ids)
    assert "key" in lt.decode(lt.make_longtext_batch("passkey", 20, 1, seed=0).ids[0]).split()
    with pytest.raises(ValueError, match="task: expected one of"):
        lt.make_longtext_batch("story", 64, 3, seed=0)
    with pytest.raises(ValueError, match="length: expected at least 8"):
        lt.make_longtext_batch("passkey", 5, 3, seed=0)
    with pytest.raises(TypeError, match="n: expected a positive integer"):
        lt.make_longtext_batch("passkey", 64, 2.0, seed=0)
