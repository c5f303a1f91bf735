"""The synthetic image–text data: determinism, disjoint splits, answers that agree with
the pixels, patches, the tokenizer, token masking, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy import data


@pytest.fixture(scope="module")
def splits():
    return data.make_vqa_splits(60, 30, seed=3)


def test_same_seed_same_data_other_seed_other_data(splits):
    train, test = splits
    again_train, again_test = data.make_vqa_splits(60, 30, seed=3)
    for a, b in ((train, again_train), (test, again_test)):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.answers, b.answers)
    other, _ = data.make_vqa_splits(60, 30, seed=4)
    assert other.scenes != train.scenes


def test_train_and_test_scenes_are_disjoint():
    train, test = data.make_vqa_splits(400, 200, seed=0)
    assert len(set(train.scenes)) == 400 and len(set(test.scenes)) == 200
    assert not set(train.scenes) & set(test.scenes)


def test_colour_answers_agree_with_the_pixels(splits):
    train, _ = splits
    patches = train.patches()
    is_colour = train.ids[:, 1] == data.TOKENIZER.ids["what"]
    names = list(data.COLOURS)
    palette = np.array([data.COLOURS[c] for c in names])
    rows = np.flatnonzero(is_colour)
    key = train.key_patch()
    for n in rows:
        pixels = patches[n, key[n]].reshape(-1, 3)
        shape_pixels = pixels[pixels.sum(axis=1) > 0]  # the background is black
        nearest = np.argmin(((shape_pixels.mean(axis=0) - palette) ** 2).sum(axis=1))
        assert data.ANSWERS[train.answers[n]] == names[nearest]


def test_left_of_answers_agree_with_the_pixels(splits):
    train, _ = splits
    gh, gw = train.grid
    lit = train.patches().max(axis=-1) > 0  # (N, num_patches): patches that hold a shape
    for n in np.flatnonzero(train.ids[:, 1] == data.TOKENIZER.ids["is"]):
        words = data.TOKENIZER.decode(train.ids[n : n + 1])[0].split()  # is the A left of the B ?
        scene = train.scenes[train.image_index[n]]
        col_a, col_b = scene.find(words[2])[3], scene.find(words[6])[3]
        for shape in (words[2], words[6]):
            _, _, row, col = scene.find(shape)
            assert lit[n, row * gw + col]  # the scene's shape is drawn where it says
        assert data.ANSWERS[train.answers[n]] == ("yes" if col_a < col_b else "no")


def test_yes_and_no_are_balanced():
    train, _ = data.make_vqa_splits(1000, 10, seed=1)
    counts = np.bincount(train.answers, minlength=len(data.ANSWERS))
    yes, no = counts[data.ANSWERS.index("yes")], counts[data.ANSWERS.index("no")]
    assert abs(yes - no) < 0.1 * (yes + no)


def test_patchify_matches_a_loop():
    images = np.random.default_rng(0).random((2, 6, 9, 3))
    out = data.patchify(images, 3)
    assert out.shape == (2, 6, 27)
    for n in range(2):
        for r in range(2):
            for c in range(3):
                square = images[n, 3 * r : 3 * r + 3, 3 * c : 3 * c + 3]
                np.testing.assert_array_equal(out[n, r * 3 + c], square.ravel())


def test_patchify_bad_input():
    with pytest.raises(ValueError, match="patch: expected a divisor"):
        data.patchify(np.zeros((1, 6, 6, 3)), 4)
    with pytest.raises(ValueError, match="images: expected an array \\(N, H, W, C\\)"):
        data.patchify(np.zeros((6, 6, 3)), 3)
    with pytest.raises(ValueError, match="patch: expected a positive integer"):
        data.patchify(np.zeros((1, 6, 6, 3)), 0)


def test_tokenizer_round_trip_padding_and_unknown_words():
    tok = data.TOKENIZER
    ids, lengths = tok.encode(["what colour is the square ?", "is the circle left of the triangle ?"], 12)
    assert ids.shape == (2, 12) and ids.dtype == np.int64
    np.testing.assert_array_equal(lengths, [7, 9])
    assert (ids[:, 0] == data.CLS_ID).all() and (ids[0, 7:] == data.PAD_ID).all()
    assert tok.decode(ids) == ["what colour is the square ?", "is the circle left of the triangle ?"]
    unknown, _ = tok.encode(["what colour is the hexagon ?"])
    assert unknown[0, 5] == data.UNK_ID
    with pytest.raises(ValueError, match="length: expected at least 9"):
        tok.encode(["is the circle left of the triangle ?"], 5)
    with pytest.raises(TypeError, match="texts: expected a sequence of strings"):
        tok.encode("what colour")
    with pytest.raises(ValueError, match="words: expected distinct words"):
        data.Tokenizer(["red", "red"])


def test_mask_tokens_statistics_and_determinism():
    _, ids, lengths, _ = data.make_caption_data(400, seed=2)
    corrupted, targets = data.mask_tokens(ids, np.random.default_rng(5), prob=0.3)
    again = data.mask_tokens(ids, np.random.default_rng(5), prob=0.3)
    np.testing.assert_array_equal(corrupted, again[0])
    np.testing.assert_array_equal(targets, again[1])
    special = ids < len(data.SPECIAL_TOKENS)
    chosen = targets != data.IGNORE_INDEX
    assert not (chosen & special).any()  # [CLS] and [PAD] are never chosen
    np.testing.assert_array_equal(targets[chosen], ids[chosen])
    np.testing.assert_array_equal(corrupted[~chosen], ids[~chosen])  # unchosen tokens untouched
    rate = chosen.sum() / (~special).sum()
    assert 0.27 < rate < 0.33
    masked = (corrupted[chosen] == data.MASK_ID).mean()
    assert 0.75 < masked < 0.85  # BERT's 80% [MASK]; the rest random words or unchanged
    assert corrupted[chosen & (corrupted != data.MASK_ID)].min() >= len(data.SPECIAL_TOKENS)


def test_mask_tokens_bad_input():
    ids = np.ones((2, 3), dtype=np.int64) * 7
    with pytest.raises(ValueError, match="prob: expected a probability"):
        data.mask_tokens(ids, np.random.default_rng(0), prob=1.5)
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        data.mask_tokens(ids, 0)
    with pytest.raises(ValueError, match="ids: expected a 2-D integer array"):
        data.mask_tokens(ids.astype(np.float64), np.random.default_rng(0))


def test_split_bad_input():
    with pytest.raises(ValueError, match="num_test_scenes: expected a positive integer"):
        data.make_vqa_splits(10, 0)


def test_caption_data_excludes_given_scenes():
    _, test = data.make_vqa_splits(5, 300, seed=0)
    _, _, _, scenes = data.make_caption_data(300, seed=0, exclude=test.scenes)
    assert not set(scenes) & set(test.scenes)
