"""Tests of ``python -m mmt_numpy figures`` and of the set-ups its pictures claim to show."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from mmt_numpy import figures
from mmt_numpy.__main__ import main

matplotlib.use("Agg")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_figures_command_writes_every_png_and_leaves_other_files_alone(tmp_path, capsys):
    foreign = tmp_path / "long_context_memory.png"  # made by another command
    foreign.write_bytes(b"not ours")
    assert main(["figures", "--out", str(tmp_path)]) == 0
    expected = {filename for filename, _ in figures.FIGURES.values()}
    for filename in expected:
        data = (tmp_path / filename).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000, filename
    assert foreign.read_bytes() == b"not ours"
    assert {p.name for p in tmp_path.iterdir()} == expected | {foreign.name}
    assert capsys.readouterr().out.count("wrote ") == len(expected)


def test_figures_are_byte_for_byte_reproducible(tmp_path):
    for folder in ("first", "second"):
        assert main(["figures", "--out", str(tmp_path / folder), "--only", "self_attention", "rollout"]) == 0
    for filename in ("attention_self_masked.png", "attention_rollout.png"):
        assert (tmp_path / "first" / filename).read_bytes() == (tmp_path / "second" / filename).read_bytes()
    assert len(list((tmp_path / "first").iterdir())) == 2  # --only made only those two


def test_figures_command_rejects_an_unknown_name(tmp_path, capsys):
    assert main(["figures", "--out", str(tmp_path), "--only", "heatmap"]) == 2
    assert "choose among self_attention" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="unknown"):
        figures.make_figures(tmp_path, ["heatmap"])


# The pictures teach only if the hand-set models do what the titles say.


def test_masked_sentence_head_follows_its_rules_and_its_mask():
    weights, tokens, keep = figures.masked_sentence_attention()
    looks_at = {tokens[i]: tokens[j] for i, j in enumerate(weights.argmax(axis=1)) if tokens[i] != "<pad>"}
    assert looks_at["circle"] == "red" and looks_at["square"] == "blue" and looks_at["above"] == "circle"
    assert np.all(weights[~keep] == 0)
    assert not keep[:, tokens.index("<pad>") :].any()  # no query may look at padding
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)


def test_encoder_heads_follow_their_rules():
    encoder, x, tokens = figures.structured_encoder()
    L = len(tokens)
    layer0, layer1 = (w[0] for w in encoder.forward(x)[1].weights)  # (H, L, L) each
    np.testing.assert_array_equal(layer0[0].argmax(axis=1)[1:], np.arange(L - 1))  # previous token
    np.testing.assert_array_equal(layer1[1].argmax(axis=1)[:-1], np.arange(1, L))  # next token
    assert np.all(layer0[2].argmax(axis=1) == 0)  # first token
    same_word = layer0[1]
    for i, word in enumerate(tokens):  # same word: all the weight on copies of the word
        copies = [j for j, other in enumerate(tokens) if other == word]
        assert same_word[i, copies].sum() > 0.85
    for layer_weights in (layer0, layer1):  # a sharp rule, an untrained (near-uniform) head
        assert layer_weights[0].max(axis=1).mean() > 0.85
        assert layer_weights[3].max() < 0.5


def test_rollout_encoder_reaches_two_tokens_back():
    from mmt_numpy.viz import attention_rollout

    encoder, x, tokens = figures.structured_encoder(figures.ROLLOUT_RULES)
    rollout = attention_rollout(encoder.forward(x)[1].weights)[0]
    for i in range(2, len(tokens)):
        assert rollout[i, i - 2 : i + 1].sum() > 0.85  # tokens i-2, i-1, i carry the weight


def test_cross_modal_words_find_their_patches():
    weights, image, tokens = figures.cross_modal_attention()
    _, masks = figures.synthetic_scene()
    cover = figures.patch_features(masks)  # (64, 6)
    for word in ("red", "circle", "blue", "square"):
        on_feature = cover[:, figures.PATCH_FEATURES.index(word)] > 0
        assert weights[tokens.index(word), on_feature].sum() > 0.9, word
    np.testing.assert_allclose(weights[tokens.index("a")], 1 / 64)  # no query: uniform
    assert image.shape == (64, 64, 3) and 0 <= image.min() and image.max() <= 1
