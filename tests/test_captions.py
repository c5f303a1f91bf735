"""Caption data (§6.2): [BOS]/[EOS] appended without moving an existing id, captions encoded and
decoded, teacher forcing shifts by one, train and test scenes are disjoint."""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy import data
from mmt_numpy.data import CAPTION_TOKENIZER, TOKENIZER


def test_existing_ids_do_not_move():
    """The question tokenizer (and so the seeded models of notebooks 07 and 08) is unchanged."""
    assert len(TOKENIZER) == 24
    assert TOKENIZER.vocab[:5] == ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"]
    assert CAPTION_TOKENIZER.vocab[: len(TOKENIZER)] == TOKENIZER.vocab
    for word, i in TOKENIZER.ids.items():
        assert CAPTION_TOKENIZER.ids[word] == i
    assert (data.BOS_ID, data.EOS_ID) == (24, 25) and len(CAPTION_TOKENIZER) == 26
    ids, _ = TOKENIZER.encode(["what colour is the square ?"])
    assert ids.tolist() == [[1, 5, 6, 7, 8, 15, 11]]


def test_encode_and_decode():
    ids, lengths = CAPTION_TOKENIZER.encode(["a red square and a blue circle", "a red square"], 10)
    bos, eos, pad = data.BOS_ID, data.EOS_ID, data.PAD_ID
    red, square = TOKENIZER.ids["red"], TOKENIZER.ids["square"]
    assert ids[1].tolist() == [bos, TOKENIZER.ids["a"], red, square, eos, pad, pad, pad, pad, pad]
    assert lengths.tolist() == [9, 5]
    assert CAPTION_TOKENIZER.decode(ids) == ["a red square and a blue circle", "a red square"]
    assert CAPTION_TOKENIZER.words(ids[1:]) == [["a", "red", "square"]]
    with pytest.raises(ValueError, match=r"length: expected at least 9 .*got 8"):
        CAPTION_TOKENIZER.encode(["a red square and a blue circle"], 8)


def test_every_caption_fits_caption_length():
    rng = np.random.default_rng(0)
    scenes = [data.random_scene(rng) for _ in range(300)]
    lengths = [len(data.caption(s).split()) + 2 for s in scenes]
    assert max(lengths) == data.CAPTION_LENGTH and min(lengths) == 9  # three shapes, two shapes


def test_captions_name_shapes_left_to_right():
    scene = data.Scene((("circle", "blue", 0, 2), ("square", "red", 2, 0), ("triangle", "green", 1, 2)))
    assert data.caption(scene) == "a red square , a blue circle and a green triangle"


def test_teacher_forcing_shifts_by_one():
    ids, _ = CAPTION_TOKENIZER.encode(["a red square", "a red square and a blue circle"])
    inputs, targets = data.teacher_forcing(ids)
    np.testing.assert_array_equal(inputs, ids[:, :-1])
    np.testing.assert_array_equal(targets[1], ids[1, 1:])  # the longest: no padding target
    assert targets[0].tolist()[:4] == ids[0, 1:5].tolist()  # a red square [EOS]
    assert (targets[0, 4:] == data.IGNORE_INDEX).all()  # [PAD] targets are ignored
    assert inputs[0, 0] == data.BOS_ID and data.EOS_ID not in inputs[1]
    with pytest.raises(ValueError, match=r"ids: expected a 2-D integer array \(N, L\) with L >= 2"):
        data.teacher_forcing(ids[:, :1])


def test_splits_are_disjoint_and_deterministic():
    train, test = data.make_caption_splits(200, 50, seed=3)
    assert len(train) == 200 and len(test) == 50
    assert not set(train.scenes) & set(test.scenes)
    assert train.patches(np.float32).shape == (200, 9, 192) and train.patches(np.float32).dtype == np.float32
    assert train.grid == (3, 3)
    assert CAPTION_TOKENIZER.decode(train.ids) == train.captions
    assert train.references()[0] == [train.captions[0].split()]
    again, _ = data.make_caption_splits(200, 50, seed=3)
    np.testing.assert_array_equal(again.images, train.images)
    with pytest.raises(ValueError, match=r"num_test_scenes: expected a positive integer, got 0"):
        data.make_caption_splits(10, 0)
