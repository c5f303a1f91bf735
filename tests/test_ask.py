"""``python -m mmt_numpy ask``: a saved toy-VQA model answers a question about a PNG.

The model is the one ``train --quick`` saves.  ``ask`` prints the answer, its probability
and the top three alternatives; its answer is the model's (the same as ``predict`` on the
same picture), a question typed by hand reads like the dataset's, and every bad argument
is refused in one line naming it.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from matplotlib import image as mpimg

from mmt_numpy import data
from mmt_numpy.__main__ import main
from mmt_numpy.data.image_files import read_png
from mmt_numpy.nn import save
from mmt_numpy.tasks.vqa import dataset_config, predict
from mmt_numpy.tasks.vqa_inputs import TOY, answer, load_model

PROBABILITY = r"(0\.\d{3}|1\.000|\d\.\de-\d\d)"  # 0.123, or 4.2e-05 below 0.001
ANSWER = re.compile(rf"^answer: (\w+) \(probability {PROBABILITY}\)$")
ALTERNATIVE = re.compile(rf"^  (\d)\. (\w+) \({PROBABILITY}\)$")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A toy model saved by ``train --quick`` (the command's own code), and a test picture as a PNG."""
    folder = tmp_path_factory.mktemp("ask")
    assert main(["train", "--quick", "--out", str(folder)]) == 0
    quick = dataset_config("toy", quick=True)
    _, test = data.make_vqa_splits(quick.train_scenes, quick.test_scenes, quick.seed)  # the run's test set
    q = int(np.flatnonzero(test.ids[:, 1] == data.TOKENIZER.ids["what"])[0])
    png = folder / "scene.png"
    mpimg.imsave(png, test.images[test.image_index[q]])
    return folder / "params.npz", png, test, q


def _ask(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["ask", *argv])
    except SystemExit as exit_info:  # argparse's own refusals (a missing file, --top -1)
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_ask_prints_the_answer_its_probability_and_three_alternatives(saved, capsys):
    params, png, test, q = saved
    question = data.TOKENIZER.decode(test.ids[q : q + 1])[0]
    code, out, err = _ask(capsys, "--params", str(params), "--image", str(png), "--question", question)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"question: {question}"
    best, p = ANSWER.match(lines[1]).groups()
    alternatives = [ALTERNATIVE.match(line).groups() for line in lines[2:]]
    assert [int(rank) for rank, _, _ in alternatives] == [2, 3, 4]
    probabilities = [float(p)] + [float(x) for _, _, x in alternatives]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.0005
    names = [best] + [name for _, name, _ in alternatives]
    assert len(set(names)) == 4 and set(names) <= set(data.ANSWERS)
    # the model's own answer on the picture as ask read it
    model, inputs, _ = load_model(params)
    ids, lengths = inputs.encode([question])
    logits = model(ids, inputs.patches(read_png(png)[None], model.dtype), lengths)[0, 0]
    assert best == data.ANSWERS[int(logits.argmax())]


def test_answer_agrees_with_predict_on_the_test_set(saved):
    params, _, test, _ = saved
    model, inputs, config = load_model(params)
    assert inputs == TOY and config["training"]["train_scenes"] == 200
    rows = np.arange(12)
    expected = predict(model, test.ids[rows], test.patches(model.dtype)[rows], test.lengths[rows])
    for row, best in zip(rows, expected, strict=True):
        question = data.TOKENIZER.decode(test.ids[row : row + 1])[0]
        ranked = answer(model, inputs, test.images[test.image_index[row]], question)
        assert ranked[0][0] == data.ANSWERS[best]


def test_a_question_typed_by_hand_reads_like_the_datasets():
    assert data.split_words("What colour is the Square?") == ["what", "colour", "is", "the", "square", "?"]
    typed, _ = TOY.encode(["Is the circle left of the triangle?"])
    written, _ = TOY.encode(["is the circle left of the triangle ?"])
    np.testing.assert_array_equal(typed, written)


def test_unknown_words_are_named(saved, capsys):
    params, png, _, _ = saved
    code, out, _ = _ask(
        capsys, "--params", str(params), "--image", str(png), "--question", "what hue is the square?"
    )
    assert code == 0
    assert "note: words this model never saw, read as [UNK]: hue" in out


def test_top_zero_prints_the_answer_only(saved, capsys):
    params, png, _, _ = saved
    code, out, _ = _ask(
        capsys,
        "--params",
        str(params),
        "--image",
        str(png),
        "--question",
        "what colour is the circle ?",
        "--top",
        "0",
    )
    assert code == 0 and len(out.splitlines()) == 2


def test_bad_arguments_are_refused_in_one_line(saved, capsys, tmp_path):
    params, png, _, _ = saved
    bare = tmp_path / "bare.npz"
    save(load_model(params)[0], bare)  # the same parameters, without the configuration
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    big = tmp_path / "big.png"
    mpimg.imsave(big, np.zeros((30, 24, 3)))
    q = "what colour is the square ?"
    base = ["--params", str(params), "--image", str(png), "--question", q]
    cases = [
        (
            ["--params", str(tmp_path / "none.npz"), "--image", str(png), "--question", q],
            "--params: expected an existing",
        ),
        (["--params", str(bare), "--image", str(png), "--question", q], "--params: "),
        (
            ["--params", str(params), "--image", str(tmp_path / "none.png"), "--question", q],
            "--image: expected an existing",
        ),
        (["--params", str(params), "--image", str(text), "--question", q], "--image: cannot read"),
        (
            ["--params", str(params), "--image", str(big), "--question", q],
            "--image: expected a 24x24 picture",
        ),
        ([*base[:-1], " "], "--question: expected a question"),
        ([*base[:-1], q + " and two more"], "--question: expected at most 8"),
        ([*base, "--top", "-1"], "--top: expected an integer >= 0"),
    ]
    for argv, message in cases:
        code, out, err = _ask(capsys, *argv)
        assert code == 2 and out == "", argv
        assert err.startswith(f"python -m mmt_numpy ask: error: argument {message}"), (argv, err)
        assert err.count("\n") == 1, err
