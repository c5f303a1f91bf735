"""Training a model to answer the next question of a conversation about a scene (§6.4, 多模态对话系统).

``python -m mmt_numpy train --task dialogue [--out DIR] [--epochs N] [--seed S] [--quick]``
builds train and test dialogues over disjoint scenes (:mod:`mmt_numpy.data.dialogue`: later
questions say "it" for a shape named earlier), trains a :class:`~mmt_numpy.nn.DialogueModel`
(image patches and the history, with turn and speaker embeddings, through one encoder; the
captioning decoder writes the answer) by teacher forcing with Adam, prints a line per epoch,
answers every held-out turn by greedy decoding and by beam search, reports exact-match
accuracy per question kind and on the questions that need the history, and ends with
``test accuracy: X`` (greedy, every held-out turn).  Into ``DIR`` (default ``runs/dialogue``):

* ``params.npz``: every parameter by its dotted name (the shared word table once);
* ``loss_curve.png``: training loss per step and held-out accuracy per epoch.

:func:`train_dialogue` with ``with_history=False`` trains the same model on the current
question alone, the baseline of ``benchmarks/dialogue_history.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mmt_numpy import data
from mmt_numpy.blas import blas_threads
from mmt_numpy.data import SHAPES, split_words
from mmt_numpy.data import dialogue as dialogue_data
from mmt_numpy.nn import DialogueLoss, DialogueModel, save
from mmt_numpy.nn.module import as_float_dtype
from mmt_numpy.optim import Adam
from mmt_numpy.tasks.caption import learning_rate, loss_curve_figure
from mmt_numpy.validate import non_negative_int, positive_int

DEFAULT_EPOCHS = 10
DATASETS = ("toy",)
TOKENIZER = dialogue_data.DIALOGUE_TOKENIZER


@dataclass
class DialogueConfig:
    """Everything that decides a dialogue run."""

    epochs: int = DEFAULT_EPOCHS
    seed: int = 0
    train_scenes: int = 3000
    test_scenes: int = 500
    num_turns: int = 4
    with_history: bool = True
    batch_size: int = 64
    lr: float = 2e-3
    d_model: int = 48
    num_heads: int = 4
    d_ff: int = 96
    encoder_layers: int = 3
    decoder_layers: int = 2
    label_smoothing: float = 0.0
    warmup_steps: int = 100
    beam_size: int = 4
    monitor_dialogues: int = 150  # test dialogues answered (greedy) after every epoch
    blas_threads: int = 1  # small matrices: one BLAS thread is fastest (mmt_numpy.blas)
    dtype: str = "float32"


# train --task dialogue --quick: a smoke run of a few seconds (what the tests run)
QUICK = dict(
    epochs=2,
    train_scenes=300,
    test_scenes=30,
    monitor_dialogues=30,
    d_model=16,
    d_ff=32,
    encoder_layers=1,
    decoder_layers=1,
    warmup_steps=5,
    lr=5e-3,
)


@dataclass
class AnswerScore:
    """Answers written for a dataset by one decoding method, and how many are right."""

    method: str
    answers: list[str]
    correct: np.ndarray  # (N,) bool, exact match

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())


@dataclass
class DialogueResult:
    model: DialogueModel
    train_set: dialogue_data.DialogueDataset
    test_set: dialogue_data.DialogueDataset
    step_losses: list[float] = field(default_factory=list)
    monitor_accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0


def build_model(config: DialogueConfig, dataset: dialogue_data.DialogueDataset) -> DialogueModel:
    return DialogueModel(
        len(TOKENIZER),
        dataset.patch**2 * 3,
        dataset.grid,
        bos_id=TOKENIZER.bos_id,
        eos_id=TOKENIZER.eos_id,
        pad_id=TOKENIZER.pad_id,
        max_history=dataset.history.shape[1],
        max_turns=config.num_turns,
        max_answer=dialogue_data.ANSWER_LENGTH - 1,
        d_model=config.d_model,
        num_heads=config.num_heads,
        d_ff=config.d_ff,
        encoder_layers=config.encoder_layers,
        decoder_layers=config.decoder_layers,
        dtype=as_float_dtype(config.dtype),
        rng=config.seed,
    )


def model_inputs(dataset: dialogue_data.DialogueDataset, rows: np.ndarray, patches: np.ndarray) -> tuple:
    """``(patches, history, turns, speakers, lengths)`` of examples ``rows``, the history cut to
    the longest among them (less padding, less work)."""
    L = max(int(dataset.lengths[rows].max()), 1)
    return (
        patches[dataset.image_index[rows]],
        dataset.history[rows, :L],
        dataset.turns_ago[rows, :L],
        dataset.speakers[rows, :L],
        dataset.lengths[rows],
    )


def answer_questions(
    model: DialogueModel,
    dataset: dialogue_data.DialogueDataset,
    beam_size: int = 1,
    batch_size: int = 500,
    rows: np.ndarray | None = None,
) -> AnswerScore:
    """Answer the examples ``rows`` (default all) of ``dataset``; exact match against the right answers."""
    rows = np.arange(len(dataset)) if rows is None else rows
    patches = dataset.patches(model.dtype)
    answers: list[str] = []
    for s in range(0, len(rows), batch_size):
        chunk = rows[s : s + batch_size]
        ids, _ = model.generate(
            *model_inputs(dataset, chunk, patches),
            max_len=dialogue_data.ANSWER_LENGTH - 1,
            beam_size=beam_size,
        )
        answers += TOKENIZER.decode(ids)
    correct = np.array([a == dataset.answer_text[r] for a, r in zip(answers, rows, strict=True)])
    return AnswerScore("greedy" if beam_size == 1 else f"beam {beam_size}", answers, correct)


def train_dialogue(config: DialogueConfig, log: Callable[[str], None] = print) -> DialogueResult:
    """Teacher forcing on the answers, Adam with the captioner's warm-up and cosine schedule,
    minibatches of turns in a seeded order; a line per epoch."""
    train_set, test_set = dialogue_data.make_dialogue_splits(
        config.train_scenes,
        config.test_scenes,
        config.seed,
        num_turns=config.num_turns,
        with_history=config.with_history,
    )
    dtype = as_float_dtype(config.dtype)
    patches = train_set.patches(dtype)
    inputs, targets = data.teacher_forcing(train_set.answers)
    model = build_model(config, train_set)
    loss_fn = DialogueLoss(model, config.label_smoothing)
    optimizer = Adam(model.parameters(), lr=config.lr)
    monitor = np.flatnonzero(test_set.image_index < config.monitor_dialogues)
    result = DialogueResult(model, train_set, test_set)
    order_rng = np.random.default_rng(config.seed + 1)
    steps_per_epoch = -(-len(train_set) // config.batch_size)
    total, step = config.epochs * steps_per_epoch, 0
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        order = order_rng.permutation(len(train_set))
        losses = []
        for s in range(0, len(order), config.batch_size):
            rows = order[s : s + config.batch_size]
            optimizer.lr = learning_rate(step, total, config.lr, config.warmup_steps)
            step += 1
            batch = model_inputs(train_set, rows, patches)
            loss, cache = loss_fn.forward(*batch, inputs[rows], targets[rows])
            optimizer.zero_grad()
            loss_fn.backward(1.0, cache)
            optimizer.step()
            losses.append(float(loss))
        result.step_losses.extend(losses)
        accuracy = answer_questions(model, test_set, rows=monitor).accuracy
        result.monitor_accuracy.append(accuracy)
        log(
            f"epoch {epoch:>3}  loss {np.mean(losses):.4f}  held-out accuracy (greedy, {len(monitor)} turns) "
            f"{accuracy:.3f}  time {time.perf_counter() - start:.1f}s"
        )
    result.seconds = time.perf_counter() - start
    return result


def pronoun_attention(
    model: DialogueModel, dataset: dialogue_data.DialogueDataset, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Where the current question's "it" looks in the history, every encoder layer, heads averaged.

    Args:
        rows: ``(N,)`` examples whose question says "it" (:attr:`DialogueDataset.needs_history`).

    Returns:
        ``weights (layers, N, L)``: the attention of the "it" token over the L history positions
        (its share of the image's patches left out, so a row sums to at most 1), and
        ``position (N,)``, where that token is in each history.
    """
    rows = np.asarray(rows)
    it = TOKENIZER.ids["it"]
    current = (dataset.history[rows] == it) & (dataset.turns_ago[rows] == 0)
    if not current[np.arange(len(rows)), current.argmax(axis=1)].all():
        raise ValueError("rows: expected examples whose current question says 'it' (dataset.needs_history)")
    position = current.argmax(axis=1)
    batch = model_inputs(dataset, rows, dataset.patches(model.dtype))
    inputs = np.full((len(rows), 1), TOKENIZER.bos_id)
    _, cache = model.forward(*batch, inputs)
    P = batch[0].shape[1]
    weights = np.stack([w.mean(axis=1) for w in cache.weights])  # (layers, N, P + L, P + L)
    return weights[:, np.arange(len(rows)), P + position, P:], position


def naming_words(dataset: dialogue_data.DialogueDataset, rows: np.ndarray, length: int) -> np.ndarray:
    """``(N, length)`` bool: the history token that named the shape "it" refers to, for each of ``rows``.

    That is the shape word of the naming turn (:attr:`DialogueDataset.named_at`): the answer when
    the answer is a shape ("what shape is left of it ?" -> "circle"), otherwise the shape the
    question names ("is there a square ?", "what colour is the square ?").
    """
    rows = np.asarray(rows)
    if (dataset.named_at[rows] < 0).any():
        raise ValueError("rows: expected examples whose current question says 'it' (dataset.needs_history)")
    out = np.zeros((len(rows), length), dtype=bool)
    for i, r in enumerate(rows):
        turn = dataset.dialogues[dataset.image_index[r]].turns[dataset.named_at[r]]
        words = [turn.answer] if turn.answer in SHAPES else split_words(turn.question)
        shape = next(w for w in words if w in SHAPES)
        back = dataset.turn[r] - dataset.named_at[r]
        is_shape = dataset.history[r, :length] == TOKENIZER.ids[shape]
        out[i] = (dataset.turns_ago[r, :length] == back) & is_shape
    return out


def pronoun_shares(
    model: DialogueModel, dataset: dialogue_data.DialogueDataset, rows: np.ndarray
) -> tuple[dict[str, np.ndarray], float]:
    """Where the current question's "it" looks, averaged over ``rows``, per encoder layer.

    Returns ``({part: (layers,)}, chance)``: the mean attention of "it" on the image's patches, on
    its own question, and (with the history) on the word that named it (:func:`naming_words`) and
    per other shape word of the earlier turns (rows that have one); ``chance`` is one token's share
    if attention were spread evenly over the patches and the real history tokens.
    """
    weights, _ = pronoun_attention(model, dataset, rows)
    rows = np.asarray(rows)
    L = weights.shape[-1]
    ago, ids = dataset.turns_ago[rows, :L], dataset.history[rows, :L]
    real = np.arange(L) < dataset.lengths[rows][:, None]
    table = {
        "image": (1 - weights.sum(-1)).mean(-1),
        "current question": (weights * (real & (ago == 0))).sum(-1).mean(-1),
    }
    if dataset.with_history:
        named = naming_words(dataset, rows, L)
        other = np.isin(ids, [TOKENIZER.ids[s] for s in SHAPES]) & (ago > 0) & real & ~named
        has_other = other.any(1)
        table["naming word"] = (weights * named).sum(-1).mean(-1)
        on_other = (weights * other).sum(-1)[:, has_other] / other.sum(1)[has_other]
        table["per other shape word"] = on_other.mean(-1)
    num_patches = dataset.grid[0] * dataset.grid[1]
    return table, float((1 / (dataset.lengths[rows] + num_patches)).mean())


def accuracy_by_kind(
    dataset: dialogue_data.DialogueDataset, score: AnswerScore
) -> dict[str, tuple[float, int]]:
    """``{kind: (accuracy, count)}`` for every question kind present, then ``"needs history"`` and
    ``"no history needed"``."""
    kinds = np.array(dataset.kinds)
    groups = {k: kinds == k for k in dialogue_data.QUESTION_KINDS if (kinds == k).any()}
    groups["needs history"] = dataset.needs_history
    groups["no history needed"] = ~dataset.needs_history
    return {k: (float(score.correct[m].mean()), int(m.sum())) for k, m in groups.items() if m.any()}


def save_artifacts(result: DialogueResult, out: Path, log: Callable[[str], None] = print) -> list[Path]:
    """``params.npz`` and ``loss_curve.png``."""
    import matplotlib

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "params.npz", out / "loss_curve.png"]
    save(result.model, written[0])
    fig = loss_curve_figure(
        result.step_losses,
        result.monitor_accuracy,
        loss_label="cross-entropy of the answer",
        monitor_label="held-out turns, greedy",
        monitor_title="answers equal to the right one",
    )
    fig.savefig(written[1], dpi=110)
    for path in written:
        log(f"wrote {path}")
    return written


def main(
    out: str = "runs/dialogue",
    epochs: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
    dataset: str = "toy",
    quick: bool = False,
    **options: object,
) -> float:
    """The ``train --task dialogue`` command: train, answer the held-out turns, report, save.

    ``quick`` picks :data:`QUICK` (a smoke run of a few seconds); ``options`` override fields
    of :class:`DialogueConfig`; ``epochs``, when given, replaces the number of epochs.  Every
    argument is checked before anything is written.  Returns the greedy test accuracy.
    """
    if dataset not in DATASETS:
        raise ValueError(
            f"dataset: expected one of {DATASETS} (dialogues exist for the toy scenes), got {dataset!r}"
        )
    config = DialogueConfig(**{**(QUICK if quick else {}), **options, "seed": non_negative_int("seed", seed)})
    if epochs is not None:
        config.epochs = positive_int("epochs", epochs)  # 0 would save an untrained model
    log("config: " + ", ".join(f"{k}={v}" for k, v in asdict(config).items()))
    with blas_threads(config.blas_threads) as limits:
        if limits is None:
            log("threadpoolctl is not installed: BLAS keeps its own thread count (slower on small matrices)")
        result = train_dialogue(config, log)
        greedy = answer_questions(result.model, result.test_set)
        beam = answer_questions(result.model, result.test_set, beam_size=config.beam_size)
    test = result.test_set
    for d in range(2):
        log(f"  dialogue {d}: {', '.join(f'{s} {c}' for s, c, *_ in test.dialogues[d].scene.objects)}")
        for r in np.flatnonzero(test.image_index == d):
            turn = test.dialogues[d].turns[test.turn[r]]
            log(f"    {turn.question:<28} right: {turn.answer:<13} greedy: {greedy.answers[r]}")
    for score in (greedy, beam):
        for kind, (accuracy, count) in accuracy_by_kind(test, score).items():
            log(f"{score.method:<7} test accuracy, {kind}: {accuracy:.4f} ({count} turns)")
    shares, chance = pronoun_shares(result.model, test, np.flatnonzero(test.needs_history))
    pairs = zip(shares["naming word"], shares["per other shape word"], strict=True)
    for k, (named, other) in enumerate(pairs):
        log(
            f"encoder layer {k}: 'it' -> the word that named it, mean attention {named:.3f} "
            f"(per other shape word {other:.3f}; one token if spread evenly {chance:.3f})"
        )
    save_artifacts(result, Path(out), log)
    log(f"trained in {result.seconds:.1f}s")
    history = accuracy_by_kind(test, greedy)["needs history"][0]
    log(f"test accuracy on the questions that need the history: {history:.4f}")
    log(f"test accuracy: {greedy.accuracy:.4f}")
    return greedy.accuracy
