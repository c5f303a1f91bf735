"""Conversations about a scene (§6.4, 多模态对话系统): questions that refer back to earlier turns.

A dialogue is a few *turns* over one scene; in each the user asks and the system answers::

    user  : is there a square ?          system: yes
    user  : what colour is it ?          system: red        ("it" = the square)
    user  : what shape is left of it ?   system: circle     (the circle is now "it")
    user  : where is it ?                system: top left

The pronoun **"it" is the shape named most recently that is in the scene**: by a question
("is there a square ?" answered yes, "what colour is the circle ?") or by an answer ("what
shape is left of it ?" -> "circle").  A shape asked about and answered "no" is not there, so
it never becomes "it".  A question with "it" *needs the history*: the same words asked of
the same image have different answers in different dialogues.

Every question has exactly one right answer, computed from the scene:

* ``is there a S ?`` -> ``yes`` / ``no``;
* ``what colour is it ?``, ``what colour is the S ?`` -> the colour;
* ``where is it ?`` -> ``<row> <column>``, e.g. ``top left`` (:data:`ROW_NAMES`, :data:`COLUMN_NAMES`);
* ``what shape is left of it ?`` / ``... right of it ?`` -> the one shape in a column further
  left (right), in any row; asked only when exactly one shape is there.

:func:`answer_turns` recomputes every answer of a dialogue from its scene, and refuses a
malformed dialogue with a ValueError naming the turn (an unknown question, "it" before
anything was named, a "left of it" with no or two answers, a wrong answer).

For a model, each turn becomes one example (:func:`encode_history`): the history, i.e. the
earlier turns' questions and answers and then the current question, as word ids with
two integer labels per token, the **turn** (how many turns before the current one: 0 for the
current question) and the **speaker** (:data:`USER` or :data:`SYSTEM`); and the answer,
``[BOS] w1 (w2) [EOS]``, which a decoder writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mmt_numpy.data.captions import CaptionTokenizer
from mmt_numpy.data.scenes import SHAPES, Scene, patchify, render
from mmt_numpy.data.tokenizer import PAD_ID, WORDS, split_words
from mmt_numpy.data.vqa import _make_scenes
from mmt_numpy.validate import positive_int

ROW_NAMES = ("top", "middle", "bottom")
COLUMN_NAMES = ("left", "centre", "right")
GRID = 3  # where-answers name three rows and three columns
USER, SYSTEM = 0, 1  # speaker labels
DIALOGUE_WORDS = ("there", "shape", "right", "it", "where", "top", "middle", "bottom", "centre")
DIALOGUE_TOKENIZER = CaptionTokenizer([*WORDS, *DIALOGUE_WORDS])
ANSWER_LENGTH = 4  # [BOS] + at most two words + [EOS]
QUESTION_KINDS = ("exists", "colour of it", "where is it", "left of it", "right of it", "colour of shape")
HISTORY_KINDS = ("colour of it", "where is it", "left of it", "right of it")  # the questions with "it"


@dataclass(frozen=True)
class Turn:
    """One user question and the system's answer (space-separated words)."""

    question: str
    answer: str


@dataclass(frozen=True)
class Dialogue:
    """A scene and the turns asked about it, first turn first."""

    scene: Scene
    turns: tuple[Turn, ...]


def where(obj: tuple[str, str, int, int]) -> str:
    """``"<row> <column>"`` of a scene object, e.g. ``"top left"``."""
    return f"{ROW_NAMES[obj[2]]} {COLUMN_NAMES[obj[3]]}"


def beside(scene: Scene, shape: str, side: str) -> list[str]:
    """The shapes of ``scene`` in a column left (``side="left"``) or right of ``shape``'s, any row."""
    col = scene.find(shape)[3]
    return [s for s, _, _, c in scene.objects if (c < col if side == "left" else c > col)]


def question_kind(question: str) -> tuple[str, str | None]:
    """``(kind, shape)`` of a question in one of the six forms (``shape`` None for the "it" forms).

    Raises ValueError for anything else, naming the question.
    """
    w = split_words(question)
    if len(w) == 5 and w[:3] == ["is", "there", "a"] and w[3] in SHAPES and w[4] == "?":
        return "exists", w[3]
    if w == ["what", "colour", "is", "it", "?"]:
        return "colour of it", None
    if w == ["where", "is", "it", "?"]:
        return "where is it", None
    if (
        len(w) == 7
        and w[:3] == ["what", "shape", "is"]
        and w[3] in ("left", "right")
        and w[4:]
        == [
            "of",
            "it",
            "?",
        ]
    ):
        return f"{w[3]} of it", None
    if len(w) == 6 and w[:4] == ["what", "colour", "is", "the"] and w[4] in SHAPES and w[5] == "?":
        return "colour of shape", w[4]
    raise ValueError(
        f"question: expected one of the forms 'is there a S ?', 'what colour is it ?', 'where is it ?', "
        f"'what shape is left/right of it ?', 'what colour is the S ?' (S in {SHAPES}), got {question!r}"
    )


def answer_question(scene: Scene, question: str, referent: str | None) -> tuple[str, str | None]:
    """The one right answer to ``question`` about ``scene`` when "it" is ``referent``, and the new referent.

    Raises ValueError when the question has no single answer: "it" with no referent, or a
    "left/right of it" with no shape or two shapes on that side.
    """
    kind, shape = question_kind(question)
    present = {s for s, *_ in scene.objects}
    if kind == "exists":
        return ("yes", shape) if shape in present else ("no", referent)
    if kind == "colour of shape":
        if shape not in present:
            raise ValueError(f"question: {question!r} asks about a {shape}, and the scene has none")
        return scene.find(shape)[1], shape
    if referent is None:
        raise ValueError(f"question: {question!r} says 'it' before any shape in the scene was named")
    if kind == "colour of it":
        return scene.find(referent)[1], referent
    if kind == "where is it":
        return where(scene.find(referent)), referent
    side = kind.split()[0]
    found = beside(scene, referent, side)
    if len(found) != 1:
        raise ValueError(
            f"question: {question!r} (it = the {referent}) has {len(found)} shapes on that side, "
            f"expected exactly one"
        )
    return found[0], found[0]


def answer_turns(dialogue: Dialogue) -> list[str]:
    """Every turn's right answer, recomputed from the scene; ValueError for a malformed dialogue.

    Malformed: no turns, an unknown question, a question without a single answer
    (:func:`answer_question`), or a turn whose answer is not the right one.  The error names
    the turn (counted from 1).
    """
    if not isinstance(dialogue, Dialogue):
        raise TypeError(f"dialogue: expected a Dialogue, got {type(dialogue).__name__}")
    if not dialogue.turns:
        raise ValueError("dialogue: expected at least one turn, got none")
    referent, answers = None, []
    for n, turn in enumerate(dialogue.turns, 1):
        if not isinstance(turn, Turn):
            raise TypeError(f"turn {n}: expected a Turn(question, answer), got {type(turn).__name__}")
        try:
            answer, referent = answer_question(dialogue.scene, turn.question, referent)
        except ValueError as error:
            raise ValueError(f"turn {n}: {error}") from None
        if turn.answer != answer:
            raise ValueError(f"turn {n}: {turn.question!r} has the answer {answer!r}, got {turn.answer!r}")
        answers.append(answer)
    return answers


def make_dialogue(
    scene: Scene, rng: np.random.Generator, num_turns: int = 4, p_history: float = 0.85
) -> Dialogue:
    """A dialogue of ``num_turns`` turns over ``scene``, each question with one right answer.

    The first question asks whether a random shape is there.  After it, while no shape has
    been named (the answer was "no"), the next one names a shape that is there; then, with
    probability ``p_history``, a question with "it" (any that has one answer), otherwise one
    that names a shape ("is there a S ?" about another shape, "what colour is the S ?").
    """
    present = [s for s, *_ in scene.objects]
    referent: str | None = None
    turns = []
    asked: set[tuple[str, str | None]] = set()  # (question, referent): never the same question twice
    for n in range(num_turns):
        options = []
        if referent is not None:
            options = ["what colour is it ?", "where is it ?"]
            options += [
                f"what shape is {side} of it ?"
                for side in ("left", "right")
                if len(beside(scene, referent, side)) == 1
            ]
            options = [q for q in options if (q, referent) not in asked]
        if n == 0:
            question = f"is there a {SHAPES[rng.integers(len(SHAPES))]} ?"
        elif options and rng.random() < p_history:
            question = options[rng.integers(len(options))]
        else:
            others = [s for s in SHAPES if s != referent]
            shape = others[rng.integers(len(others))]
            if referent is None or shape not in present or rng.random() < 0.5:
                if referent is None:  # name a shape that is there, so that "it" means something
                    shape = present[rng.integers(len(present))]
                question = f"is there a {shape} ?"
            else:
                question = f"what colour is the {shape} ?"
        asked.add((question, referent))
        answer, referent = answer_question(scene, question, referent)
        turns.append(Turn(question, answer))
    return Dialogue(scene, tuple(turns))


def history_length(num_turns: int) -> int:
    """The most history tokens of a turn: ``num_turns - 1`` earlier turns (question of at most 7
    words and an answer of at most 2) and the current question."""
    return 9 * (num_turns - 1) + 7


def encode_history(
    turns: Sequence[Turn], length: int, *, with_history: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The tokens a model reads for the last turn of ``turns``: earlier turns, then its question.

    Args:
        turns: the turns so far; the last one's answer is what is asked for (not encoded).
        length: the padded length.
        with_history: False keeps only the current question (the no-history baseline).

    Returns:
        ``ids (length,)`` word ids (``[PAD]`` after the end), ``turns_ago (length,)`` (0 for the
        current question, 1 for the turn before ...; 0 on padding), ``speakers (length,)``
        (:data:`USER` / :data:`SYSTEM`; 0 on padding) and the number of real tokens.
    """
    tokens: list[tuple[str, int, int]] = []
    last = len(turns) - 1
    for n, turn in enumerate(turns):
        if n < last and not with_history:
            continue
        tokens += [(w, last - n, USER) for w in split_words(turn.question)]
        if n < last:
            tokens += [(w, last - n, SYSTEM) for w in split_words(turn.answer)]
    if len(tokens) > length:
        raise ValueError(f"length: expected at least {len(tokens)} (this history's tokens), got {length}")
    ids = np.full(length, PAD_ID, dtype=np.int64)
    ago = np.zeros(length, dtype=np.int64)
    speakers = np.zeros(length, dtype=np.int64)
    vocab = DIALOGUE_TOKENIZER.ids
    for i, (word, turn_ago, speaker) in enumerate(tokens):
        if word not in vocab:
            raise ValueError(f"turns: the word {word!r} is not in the dialogue vocabulary")
        ids[i], ago[i], speakers[i] = vocab[word], turn_ago, speaker
    return ids, ago, speakers, len(tokens)


@dataclass
class DialogueDataset:
    """Every turn of a set of dialogues as one example.

    Attributes:
        images: ``(S, H, W, 3)`` one image per dialogue.
        dialogues: the S dialogues.
        image_index: ``(N,)`` which image each example is asked about.
        history: ``(N, Lh)`` word ids of the history (:func:`encode_history`).
        turns_ago: ``(N, Lh)`` each history token's turn, counted back from the current one.
        speakers: ``(N, Lh)`` each history token's speaker.
        lengths: ``(N,)`` real history tokens.
        answers: ``(N, ANSWER_LENGTH)`` ``[BOS] … [EOS]`` then ``[PAD]``.
        answer_text: the N right answers.
        kinds: the N question kinds (:data:`QUESTION_KINDS`).
        turn: ``(N,)`` the turn each example asks (0 = first).
        named_at: ``(N,)`` for a question with "it", the turn that named the shape "it" is
            (its question or its answer); -1 for the other questions.
        patch: the patch side of :meth:`patches`.
        with_history: whether the history holds the earlier turns (False: the question alone).
    """

    images: np.ndarray
    dialogues: list[Dialogue]
    image_index: np.ndarray
    history: np.ndarray
    turns_ago: np.ndarray
    speakers: np.ndarray
    lengths: np.ndarray
    answers: np.ndarray
    answer_text: list[str]
    kinds: list[str]
    turn: np.ndarray
    named_at: np.ndarray
    patch: int
    with_history: bool = True

    def __len__(self) -> int:
        return len(self.answer_text)

    @property
    def grid(self) -> tuple[int, int]:
        """Patches per column and per row."""
        return self.images.shape[1] // self.patch, self.images.shape[2] // self.patch

    @property
    def needs_history(self) -> np.ndarray:
        """``(N,)`` bool: the question says "it" (:data:`HISTORY_KINDS`)."""
        return np.array([k in HISTORY_KINDS for k in self.kinds])

    def patches(self, dtype: object = np.float64) -> np.ndarray:
        """``(S, P, patch*patch*3)``: one row per *image*; index with :attr:`image_index`."""
        return patchify(self.images, self.patch).astype(dtype)


def make_dialogue_dataset(
    scenes: Sequence[Scene],
    rng: np.random.Generator,
    *,
    num_turns: int = 4,
    with_history: bool = True,
    cell: int = 8,
) -> DialogueDataset:
    """One dialogue per scene (drawn from ``rng``), rendered, every turn an example."""
    num_turns = positive_int("num_turns", num_turns)
    dialogues = [make_dialogue(s, rng, num_turns) for s in scenes]
    images = np.stack([render(s, rng, GRID, cell) for s in scenes])
    return dialogue_dataset(images, dialogues, num_turns=num_turns, with_history=with_history, cell=cell)


def dialogue_dataset(
    images: np.ndarray,
    dialogues: Sequence[Dialogue],
    *,
    num_turns: int,
    with_history: bool = True,
    cell: int = 8,
) -> DialogueDataset:
    """The examples of given dialogues over their images ``(S, H, W, 3)``; each dialogue is
    checked by :func:`answer_turns` first (a malformed one raises ValueError naming it)."""
    if not isinstance(images, np.ndarray) or images.ndim != 4 or len(images) != len(dialogues):
        raise ValueError(
            f"images: expected an array (S, H, W, 3) with S = {len(dialogues)} (one per dialogue), "
            f"got {getattr(images, 'shape', type(images).__name__)}"
        )
    length = history_length(num_turns)
    rows: list[tuple] = []
    for d, dialogue in enumerate(dialogues):
        try:
            answer_turns(dialogue)
        except (TypeError, ValueError) as error:
            raise ValueError(f"dialogues[{d}]: {error}") from None
        if len(dialogue.turns) > num_turns:
            raise ValueError(
                f"dialogues[{d}]: expected at most num_turns={num_turns} turns, got {len(dialogue.turns)}"
            )
        named = -1  # the turn that named the current "it"
        for n, turn in enumerate(dialogue.turns):
            encoded = encode_history(dialogue.turns[: n + 1], length, with_history=with_history)
            kind = question_kind(turn.question)[0]
            rows.append((d, *encoded, turn.answer, kind, n, named if kind in HISTORY_KINDS else -1))
            if kind in ("colour of shape", "left of it", "right of it") or turn.answer == "yes":
                named = n  # this turn named a shape that is there: "it" from now on
    index, history, ago, speakers, lengths, answer_text, kinds, turn, named_at = zip(*rows, strict=True)
    answers, _ = DIALOGUE_TOKENIZER.encode(list(answer_text), ANSWER_LENGTH)
    return DialogueDataset(
        images,
        list(dialogues),
        np.array(index),
        np.stack(history),
        np.stack(ago),
        np.stack(speakers),
        np.array(lengths),
        answers,
        list(answer_text),
        list(kinds),
        np.array(turn),
        np.array(named_at),
        cell,
        with_history,
    )


def make_dialogue_splits(
    num_train_scenes: int,
    num_test_scenes: int,
    seed: int = 0,
    *,
    num_turns: int = 4,
    with_history: bool = True,
) -> tuple[DialogueDataset, DialogueDataset]:
    """Train and test dialogues over disjoint scenes (no scene in both), deterministic per ``seed``.

    The same seed gives the same scenes, images and dialogues with and without the history:
    only what the model reads differs.
    """
    num_train_scenes = positive_int("num_train_scenes", num_train_scenes)
    num_test_scenes = positive_int("num_test_scenes", num_test_scenes)
    rng = np.random.default_rng(seed)
    train_scenes = _make_scenes(num_train_scenes, rng, GRID)
    test_scenes = _make_scenes(num_test_scenes, rng, GRID, exclude=set(train_scenes))
    options = dict(num_turns=num_turns, with_history=with_history)
    return (
        make_dialogue_dataset(train_scenes, rng, **options),
        make_dialogue_dataset(test_scenes, rng, **options),
    )


__all__ = [
    "ANSWER_LENGTH",
    "COLUMN_NAMES",
    "DIALOGUE_TOKENIZER",
    "Dialogue",
    "DialogueDataset",
    "HISTORY_KINDS",
    "QUESTION_KINDS",
    "ROW_NAMES",
    "SYSTEM",
    "Turn",
    "USER",
    "answer_question",
    "answer_turns",
    "dialogue_dataset",
    "encode_history",
    "make_dialogue",
    "make_dialogue_dataset",
    "make_dialogue_splits",
    "question_kind",
]
