"""The ``train --task dialogue`` command (§6.4) on its --quick configuration: it runs from the command
line, prints what it promises (epoch lines, a dialogue beside the right answers, greedy and beam
accuracy per question kind, the final line), is deterministic, refuses bad arguments before
writing, and the no-history baseline reads the question alone."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from mmt_numpy import nn
from mmt_numpy.__main__ import main as cli
from mmt_numpy.tasks import TASKS, dialogue, task_module

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "dialogue_history.py"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dialogue")
    lines: list[str] = []
    accuracy = dialogue.main(out=str(out), log=lines.append, quick=True)
    return out, lines, accuracy


def test_the_command_prints_what_it_promises(quick_run):
    out, lines, accuracy = quick_run
    assert sum(line.startswith("epoch") for line in lines) == dialogue.QUICK["epochs"]
    assert sum(" right: " in line and " greedy: " in line for line in lines) >= 4
    for method in ("greedy ", "beam 4 "):
        assert any(
            re.match(method + r" test accuracy, needs history: \d\.\d{4} \(\d+ turns\)", x) for x in lines
        )
    assert re.fullmatch(r"test accuracy on the questions that need the history: \d\.\d{4}", lines[-2])
    final = re.fullmatch(r"test accuracy: (\d\.\d{4})", lines[-1])
    assert final and float(final[1]) == pytest.approx(accuracy, abs=5e-5)
    assert {p.name for p in out.iterdir()} == {"params.npz", "loss_curve.png"}


def test_saved_parameters_reload_to_the_same_answers(quick_run):
    out, _, _ = quick_run
    config = dialogue.DialogueConfig(**dialogue.QUICK)
    with dialogue.blas_threads(1):
        result = dialogue.train_dialogue(config, log=lambda line: None)
        answers = dialogue.answer_questions(result.model, result.test_set).answers
        fresh = dialogue.build_model(config, result.test_set)
        nn.load(fresh, out / "params.npz")
        assert dialogue.answer_questions(fresh, result.test_set).answers == answers  # same run, same weights


def test_without_history_the_model_reads_the_question_alone():
    config = dialogue.DialogueConfig(
        **{**dialogue.QUICK, "with_history": False, "epochs": 1, "train_scenes": 40, "test_scenes": 4}
    )
    result = dialogue.train_dialogue(config, log=lambda line: None)
    assert not result.train_set.with_history and (result.train_set.turns_ago == 0).all()


def test_the_task_is_on_the_command_line(capsys, tmp_path, monkeypatch):
    assert task_module("dialogue") is dialogue and "dialogue" in TASKS
    monkeypatch.setitem(dialogue.QUICK, "train_scenes", 40)
    monkeypatch.setitem(dialogue.QUICK, "test_scenes", 4)
    monkeypatch.setitem(dialogue.QUICK, "monitor_dialogues", 4)
    assert (
        cli(["train", "--task", "dialogue", "--quick", "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    )
    output = capsys.readouterr().out
    assert "config: epochs=1, seed=0, train_scenes=40" in output
    assert output.splitlines()[-1].startswith("test accuracy: ")


def test_bad_arguments_are_refused_before_anything_is_written(capsys, tmp_path):
    for kwargs, message in (
        ({"epochs": 0}, r"epochs: expected a positive integer, got 0"),
        ({"seed": -1}, r"seed: expected an integer >= 0, got -1"),
        (
            {"dataset": "easy-vqa"},
            r"dataset: expected one of \('toy',\) \(dialogues exist for the toy scenes\)",
        ),
    ):
        with pytest.raises(ValueError, match=message):
            dialogue.main(out=str(tmp_path / "run"), log=lambda line: None, **kwargs)
    assert cli(["train", "--task", "dialogue", "--dataset", "easy-vqa", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--task dialogue trains on toy, not easy-vqa" in err
    with pytest.raises(SystemExit) as exit_info:
        cli(["train", "--task", "dialog", "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert "argument --task: invalid choice: 'dialog'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_history_benchmark_prints_both_columns(capsys):
    spec = importlib.util.spec_from_file_location("dialogue_history", BENCHMARK)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.main(["--quick"])
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["held-out", "turns", "count", "with", "history", "without"]
    assert any(line.startswith("needs history") for line in table)
    assert set(results[True]) == set(results[False]) and "all turns" in results[True]
    counts = {k: c for k, (_, c) in results[True].items()}
    assert counts["needs history"] + counts["no history needed"] == counts["all turns"]


def test_the_pronoun_and_the_word_that_named_it_are_found():
    config = dialogue.DialogueConfig(**{**dialogue.QUICK, "train_scenes": 20, "test_scenes": 20})
    _, test = dialogue.dialogue_data.make_dialogue_splits(20, 20, 0)
    model = dialogue.build_model(config, test)
    rows = np.flatnonzero(test.needs_history)
    weights, position = dialogue.pronoun_attention(model, test, rows)
    L = int(test.lengths[rows].max())
    assert weights.shape == (config.encoder_layers, len(rows), L)
    assert np.all(weights.sum(-1) <= 1 + 1e-5) and np.all(weights >= 0)
    vocab = dialogue.TOKENIZER.vocab
    for r, p in zip(rows, position, strict=True):
        assert vocab[test.history[r, p]] == "it" and test.turns_ago[r, p] == 0
    named = dialogue.naming_words(test, rows, L)
    assert (named.sum(1) == 1).all()  # exactly one word named "it"
    for i, r in enumerate(rows):
        word = vocab[test.history[r, named[i].argmax()]]
        turn = test.dialogues[test.image_index[r]].turns[test.named_at[r]]
        assert word in (turn.answer, *turn.question.split())
    with pytest.raises(ValueError, match="rows: expected examples whose current question says 'it'"):
        dialogue.naming_words(test, np.flatnonzero(~test.needs_history), L)
    with pytest.raises(ValueError, match="rows: expected examples whose current question says 'it'"):
        dialogue.pronoun_attention(model, test, np.flatnonzero(~test.needs_history)[:3])
