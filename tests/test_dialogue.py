"""Multimodal dialogue (§6.4): the generator's answers recomputed from the scene, clear errors for
malformed dialogues, the history's tokens and labels, the turn/speaker embedding's gradients (with
negative controls), and the dialogue model (shared word table, greedy = beam of one, input checks)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mmt_numpy import nn
from mmt_numpy.checks import dialogue as dialogue_checks
from mmt_numpy.checks import randn, randomize
from mmt_numpy.data import SHAPES, Scene
from mmt_numpy.data import dialogue as D

ROWS, COLS = ("top", "middle", "bottom"), ("left", "centre", "right")


def recompute(scene: Scene, turns) -> list[str]:
    """The answers, worked out here from the scene's objects alone (not with the package's code)."""
    objects = {shape: (colour, row, col) for shape, colour, row, col in scene.objects}
    it, answers = None, []
    for turn in turns:
        q = turn.question
        if m := re.fullmatch(r"is there a (\w+) \?", q):
            answer = "yes" if m[1] in objects else "no"
            it = m[1] if m[1] in objects else it
        elif m := re.fullmatch(r"what colour is the (\w+) \?", q):
            answer, it = objects[m[1]][0], m[1]
        elif q == "what colour is it ?":
            answer = objects[it][0]
        elif q == "where is it ?":
            answer = f"{ROWS[objects[it][1]]} {COLS[objects[it][2]]}"
        else:
            side = re.fullmatch(r"what shape is (left|right) of it \?", q)[1]
            col = objects[it][2]
            found = [s for s, (_, _, c) in objects.items() if (c < col if side == "left" else c > col)]
            assert len(found) == 1, (scene, q)  # exactly one right answer
            answer = it = found[0]
        answers.append(answer)
    return answers


def test_every_generated_answer_is_the_one_the_scene_gives():
    train, test = D.make_dialogue_splits(400, 100, seed=3)
    kinds = set()
    for dataset in (train, test):
        for dialogue in dataset.dialogues:
            assert len(dialogue.turns) == 4
            assert [t.answer for t in dialogue.turns] == recompute(dialogue.scene, dialogue.turns)
            assert D.answer_turns(dialogue) == [t.answer for t in dialogue.turns]
        kinds |= set(dataset.kinds)
    assert kinds == set(D.QUESTION_KINDS)  # every kind is asked
    assert 0.4 < train.needs_history.mean() < 0.7
    assert not {d.scene for d in train.dialogues} & {d.scene for d in test.dialogues}


def test_it_never_comes_before_a_shape_was_named_and_named_at_points_at_that_turn():
    dataset, _ = D.make_dialogue_splits(300, 10, seed=4)
    for r in np.flatnonzero(dataset.needs_history):
        dialogue = dataset.dialogues[dataset.image_index[r]]
        named = dialogue.turns[dataset.named_at[r]]
        assert 0 <= dataset.named_at[r] < dataset.turn[r]
        # the naming turn names a shape that is there, in its question or its answer
        assert (
            named.answer in SHAPES or named.answer == "yes" or named.question.startswith("what colour is the")
        )
    assert (dataset.named_at[~dataset.needs_history] == -1).all()
    back = (dataset.turn - dataset.named_at)[dataset.needs_history]
    assert set(back) == {1, 2, 3}  # some pronouns reach back further than the previous turn


def test_same_seed_same_dialogues_with_and_without_history():
    a, _ = D.make_dialogue_splits(50, 5, seed=1)
    b, _ = D.make_dialogue_splits(50, 5, seed=1, with_history=False)
    assert a.dialogues == b.dialogues and a.answer_text == b.answer_text
    np.testing.assert_array_equal(a.images, b.images)
    assert (b.lengths <= 7).all() and (b.turns_ago == 0).all()  # the question alone
    assert (a.lengths > b.lengths).any()


def test_the_history_tokens_carry_turn_and_speaker():
    turns = [
        D.Turn("is there a square ?", "yes"),
        D.Turn("where is it ?", "top left"),
        D.Turn("what colour is it ?", "red"),
    ]
    ids, ago, speakers, n = D.encode_history(turns, 20)
    words = [D.DIALOGUE_TOKENIZER.vocab[i] for i in ids[:n]]
    assert words == "is there a square ? yes where is it ? top left what colour is it ?".split()
    assert ago[:n].tolist() == [2] * 6 + [1] * 6 + [0] * 5
    assert speakers[:n].tolist() == [0] * 5 + [1] + [0] * 4 + [1, 1] + [0] * 5
    assert (ids[n:] == 0).all()
    with pytest.raises(ValueError, match="length: expected at least 17"):
        D.encode_history(turns, 10)
    assert D.history_length(4) >= max(len(w) for w in [words])


SQUARE_LEFT = Scene((("circle", "blue", 0, 2), ("square", "red", 1, 0)))


@pytest.mark.parametrize(
    "turns, message",
    [
        ((), "expected at least one turn"),
        ((D.Turn("what colour is it ?", "red"),), "turn 1: .*'it' before any shape"),
        (
            (D.Turn("is there a triangle ?", "no"), D.Turn("what colour is it ?", "red")),
            "turn 2: .*'it' before",
        ),
        (
            (D.Turn("is there a square ?", "no"),),
            "turn 1: 'is there a square \\?' has the answer 'yes', got 'no'",
        ),
        ((D.Turn("how big is the square ?", "big"),), "turn 1: question: expected one of the forms"),
        (
            (D.Turn("what colour is the triangle ?", "red"),),
            "turn 1: .*asks about a triangle, and the scene has none",
        ),
        (
            (D.Turn("is there a square ?", "yes"), D.Turn("what shape is left of it ?", "circle")),
            "turn 2: .*has 0 shapes on that side",
        ),
        (
            (D.Turn("is there a circle ?", "yes"), D.Turn("what colour is it ?", "red")),
            "turn 2: .*answer 'blue', got 'red'",
        ),
    ],
)
def test_malformed_dialogues_are_refused_naming_the_turn(turns, message):
    dialogue = D.Dialogue(SQUARE_LEFT, turns)
    with pytest.raises(ValueError, match=message):
        D.answer_turns(dialogue)
    if turns:
        with pytest.raises(ValueError, match=r"dialogues\[0\]: " + message):
            D.dialogue_dataset(np.zeros((1, 24, 24, 3)), [dialogue], num_turns=4)


def test_dataset_and_turn_types_are_checked():
    with pytest.raises(TypeError, match="dialogue: expected a Dialogue"):
        D.answer_turns([("is there a square ?", "yes")])
    with pytest.raises(TypeError, match="turn 1: expected a Turn"):
        D.answer_turns(D.Dialogue(SQUARE_LEFT, (("is there a square ?", "yes"),)))
    good = D.Dialogue(SQUARE_LEFT, (D.Turn("is there a square ?", "yes"),) * 2)
    with pytest.raises(ValueError, match="expected at most num_turns=1 turns, got 2"):
        D.dialogue_dataset(np.zeros((1, 24, 24, 3)), [good], num_turns=1)
    with pytest.raises(ValueError, match="images: expected an array .* S = 1"):
        D.dialogue_dataset(np.zeros((2, 24, 24, 3)), [good], num_turns=4)


# --- the turn and speaker embedding --------------------------------------------------------------


def test_dialogue_embedding_is_the_sum_of_its_four_tables():
    m = randomize(nn.DialogueEmbedding(7, 6, 4, 3, rng=0), 1)
    h = dialogue_checks.HISTORY
    x, _ = m.forward(h["ids"], h["turns"], h["speakers"])
    expected = (
        m.token.weight.data[h["ids"]]
        + m.position.weight.data[:5]
        + m.turn.weight.data[h["turns"]]
        + m.speaker.weight.data[h["speakers"]]
    )
    np.testing.assert_allclose(x, expected, rtol=0, atol=1e-15)


def test_dialogue_embedding_passes_the_gradient_check():
    report = dialogue_checks.dialogue_embedding_case()
    assert report.passed, report
    assert [t.name for t in report.tensors] == [
        "token.weight",
        "position.weight",
        "turn.weight",
        "speaker.weight",
    ]


class _SpeakerByTurn(nn.DialogueEmbedding):
    """Broken: the speaker table's gradient is gathered by the turn labels (a label mix-up)."""

    def backward(self, d_out, cache):
        cache = cache._replace(speaker=cache.speaker._replace(ids=np.minimum(cache.turn.ids, 1)))
        return super().backward(d_out, cache)


class _ForgetsTurn(nn.DialogueEmbedding):
    """Broken: the turn table gets no gradient (a dropped term)."""

    def backward(self, d_out, cache):
        grad = self.turn.weight.grad.copy()
        out = super().backward(d_out, cache)
        self.turn.weight.grad[...] = grad
        return out


@pytest.mark.parametrize("broken, wrong", [(_SpeakerByTurn, "speaker.weight"), (_ForgetsTurn, "turn.weight")])
def test_the_checker_rejects_a_broken_dialogue_embedding(broken, wrong):
    report = dialogue_checks.dialogue_embedding_case(broken)
    assert not report.passed
    assert {t.name for t in report.tensors if not t.passed} == {wrong}


def test_dialogue_embedding_shares_a_word_table_and_checks_its_labels():
    table = nn.Embedding(7, 3, rng=0)
    m = nn.DialogueEmbedding(7, 6, 4, 3, token_embedding=table, rng=1)
    assert m.token is table
    h = dialogue_checks.HISTORY
    with pytest.raises(
        ValueError, match=r"turns: expected an integer array shaped like ids \(B, L\) \(2, 5\)"
    ):
        m.forward(h["ids"], h["turns"][:, :4], h["speakers"])
    with pytest.raises(ValueError, match=r"modality: expected ids in \[0, 2\)"):
        m.forward(h["ids"], h["turns"], h["speakers"] + 1)
    with pytest.raises(ValueError, match=r"modality: expected ids in \[0, 4\)"):
        m.forward(h["ids"], h["turns"] + 2, h["speakers"])
    with pytest.raises(TypeError, match="token_embedding: expected an mmt_numpy.nn.Embedding of width dim=4"):
        nn.DialogueEmbedding(7, 6, 4, 4, token_embedding=table)


# --- the dialogue model ---------------------------------------------------------------------------


def small_model(dtype=np.float64):
    return nn.DialogueModel(
        7, 6, (2, 2), bos_id=5, eos_id=6, max_history=6, max_turns=3, max_answer=3, d_model=8,
        num_heads=2, d_ff=12, encoder_layers=1, decoder_layers=1, dtype=dtype, rng=0,
    )  # fmt: skip


def inputs(dtype=np.float64):
    h = dialogue_checks.HISTORY
    return randn(1, 2, 4, 6).astype(dtype), h["ids"], h["turns"], h["speakers"], np.array([5, 3])


def test_one_word_table_for_history_answer_and_output():
    model = small_model()
    names = [n for n, _ in model.named_parameters()]
    assert "answerer.token_embedding.weight" in names
    assert not any(n.startswith("history.token") for n in names)  # the shared table is listed once
    assert model.history.token.weight is model.answerer.output.weight


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_padding_of_the_history_changes_nothing(dtype):
    model = small_model(dtype)
    patches, ids, turns, speakers, lengths = inputs(dtype)
    answer = np.array([[5, 1, 2], [5, 3, 4]])
    logits, cache = model.forward(patches, ids, turns, speakers, lengths, answer)
    assert logits.dtype == dtype and logits.shape == (2, 3, 7)
    assert cache.weights[0].shape == (2, 2, 9, 9) and cache.cross_weights[0].shape == (2, 2, 3, 9)
    other = ids.copy()
    other[1, 3:] = 4  # different words in the padding of row 1
    again, _ = model.forward(patches, other, turns, speakers, lengths, answer)
    np.testing.assert_array_equal(again[1], logits[1])
    assert np.all(cache.weights[0][1, :, :, 4 + 3 :] == 0)  # nobody attends to the padding


def test_greedy_is_beam_of_one_and_answers_end():
    model = randomize(small_model(), 2)
    greedy, log_p = model.generate(*inputs(), max_len=3)
    beam, beam_log_p = model.generate(*inputs(), max_len=3, beam_size=1)
    np.testing.assert_array_equal(greedy, beam)
    np.testing.assert_allclose(log_p, beam_log_p, atol=1e-12)
    wide, wide_log_p = model.generate(*inputs(), max_len=3, beam_size=4)
    assert wide.shape[0] == 2 and np.all(np.isfinite(wide_log_p))


def test_the_dialogue_model_checks_its_inputs():
    model = small_model()
    patches, ids, turns, speakers, lengths = inputs()
    answer = np.array([[5, 1], [5, 3]])
    with pytest.raises(ValueError, match=r"history: expected integer ids \(2, L\)"):
        model.forward(patches, ids[:1], turns, speakers, lengths, answer)
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, 5\]"):
        model.forward(patches, ids, turns, speakers, np.array([6, 3]), answer)
    with pytest.raises(ValueError, match="lengths: expected 2 integer lengths"):
        model.forward(patches, ids, turns, speakers, np.array([5]), answer)
    with pytest.raises(ValueError, match="patches: expected 4 patches per image"):
        model.forward(patches[:, :3], ids, turns, speakers, lengths, answer)
    with pytest.raises(ValueError, match=r"sequence length 5 exceeds max_len=4"):
        nn.DialogueModel(7, 6, (2, 2), bos_id=5, eos_id=6, max_history=4, d_model=8, rng=0).forward(
            patches, ids, turns, speakers, lengths, answer
        )
    with pytest.raises(TypeError, match="model: expected a DialogueModel"):
        nn.DialogueLoss(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="cache: expected"):
        model.backward(np.zeros((2, 2, 7)), None)
