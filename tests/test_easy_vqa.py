"""easy-VQA, the third-party dataset: the loader on small slices, its vocabulary and answers, its
own split, the preprocessing, a quick training run, and the wheel's stray ``test`` package.

The tests that read the data skip, saying why, when the optional package ``easy-vqa`` is
absent (``pip install -e ".[data]"``); ``.ci/run`` installs it, so CI runs them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import mmt_numpy
from mmt_numpy import data
from mmt_numpy.__main__ import main as cli
from mmt_numpy.data import easy_vqa
from mmt_numpy.data.image_files import average_pool, read_png
from mmt_numpy.tasks import vqa
from mmt_numpy.tasks.vqa_inputs import EASY_VQA, answer, load_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def package():
    return pytest.importorskip(
        "easy_vqa", reason='the optional easy-VQA data is not installed (pip install -e ".[data]")'
    )


@pytest.fixture(scope="module")
def test_slice(package):
    return easy_vqa.load_easy_vqa("test", limit=40)


def test_a_slice_of_the_test_split(package, test_slice):
    d = test_slice
    texts, answers, image_ids = package.get_test_questions()
    assert d.split == "test" and len(d) == 40
    assert d.questions == texts[:40]
    np.testing.assert_array_equal(d.image_ids, sorted(set(image_ids[:40])))
    S = len(d.image_ids)
    assert d.images.shape == (S, 32, 32, 3) and d.images.dtype == np.float32
    assert 0 <= d.images.min() and d.images.max() <= 1
    assert d.ids.shape == (40, easy_vqa.QUESTION_LENGTH) and (d.ids[:, 0] == data.CLS_ID).all()
    assert not (d.ids == data.UNK_ID).any()
    np.testing.assert_array_equal(d.lengths, [1 + len(data.split_words(q)) for q in texts[:40]])
    assert [easy_vqa.ANSWERS[a] for a in d.answers] == answers[:40]
    np.testing.assert_array_equal(d.image_ids[d.image_index], image_ids[:40])
    assert d.grid == (4, 4)
    assert d.patches(np.float32).shape == (40, 16, 8 * 8 * 3)
    assert d.image_patches().shape == (S, 16, 8 * 8 * 3)
    # each image is the package's PNG, read with matplotlib and shrunk 2x
    paths = package.get_test_image_paths()
    first = read_png(paths[int(d.image_ids[0])])
    assert first.shape == (64, 64, 3)
    np.testing.assert_allclose(d.images[0], average_pool(first, 2), atol=1e-6)


def test_the_train_split_is_the_packages_train_split(package, test_slice):
    train = easy_vqa.load_easy_vqa("train", limit=12)
    texts, answers, _ = package.get_train_questions()
    assert train.split == "train" and train.questions == texts[:12]
    assert train.questions != test_slice.questions[:12]
    assert [easy_vqa.ANSWERS[a] for a in train.answers] == answers[:12]


def test_the_whole_dataset_as_its_card_describes_it(package):
    train_texts, train_answers, _ = package.get_train_questions()
    test_texts, _, _ = package.get_test_questions()
    assert (len(train_texts), len(test_texts)) == (38_575, 9_673)
    assert (len(package.get_train_image_paths()), len(package.get_test_image_paths())) == (4_000, 1_000)
    assert tuple(package.get_answers()) == easy_vqa.ANSWERS and len(easy_vqa.ANSWERS) == 13
    assert sum(a in ("yes", "no") for a in train_answers) == 28_407
    words = {w for text in train_texts + test_texts for w in data.split_words(text)}
    assert words == set(easy_vqa.WORDS)
    longest = max(len(data.split_words(t)) for t in train_texts + test_texts)
    assert longest + 1 == easy_vqa.QUESTION_LENGTH


def test_the_saved_input_format_makes_the_same_patches(package, test_slice):
    """``ask`` reads a 64 x 64 PNG through VQAInputs.patches; training read the dataset: same tokens."""
    path = package.get_test_image_paths()[int(test_slice.image_ids[1])]
    from_file = EASY_VQA.patches(read_png(path)[None], np.float32)[0]
    np.testing.assert_allclose(from_file, test_slice.image_patches(np.float32)[1], atol=1e-6)


def test_question_types_are_told_apart_by_the_answer(test_slice):
    assert [data.question_type(a) for a in ("circle", "rectangle", "triangle", "square")] == ["shape"] * 4
    assert [data.question_type(a) for a in ("teal", "gray", "red")] == ["colour"] * 3
    assert [data.question_type(a) for a in ("yes", "no")] == ["yes/no"] * 2
    kinds = {data.question_type(easy_vqa.ANSWERS[a]) for a in test_slice.answers}
    assert kinds == {"shape", "colour", "yes/no"}


def test_centre_takes_away_the_background():
    image = np.full((8, 8, 3), [0.9, 0.8, 0.85])
    image[2:4, 2:5] = [1.0, 0.0, 0.0]  # a small red shape
    centred = easy_vqa.centre(image[None])[0]
    np.testing.assert_allclose(centred[0, 0], 0.0)
    np.testing.assert_allclose(centred[2, 2], [0.1, -0.8, -0.85])


def test_a_missing_package_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "easy_vqa", None)  # import easy_vqa now fails
    with pytest.raises(ModuleNotFoundError, match=r'pip install -e "\.\[data\]"'):
        easy_vqa.load_easy_vqa("test", limit=3)
    assert cli(["train", "--dataset", "easy-vqa", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m mmt_numpy train: error: argument --dataset: easy-VQA needs the optional")
    assert err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_bad_loader_arguments_are_named():
    with pytest.raises(ValueError, match="split: expected one of"):
        easy_vqa.load_easy_vqa("validation")
    with pytest.raises(ValueError, match="patch: expected a divisor of the pooled image side 64/2"):
        easy_vqa.load_easy_vqa("test", patch=5)


def test_a_quick_training_run_reports_accuracy_per_type_and_saves_a_usable_model(package, tmp_path):
    lines: list[str] = []
    accuracy = vqa.main(out=str(tmp_path), epochs=1, dataset="easy-vqa", quick=True, log=lines.append)
    assert lines[-1] == f"test accuracy: {accuracy:.4f}"
    for kind in ("shape", "colour", "yes/no"):
        assert any(line.startswith(f"test accuracy, {kind} questions: ") for line in lines), kind
    assert "dataset=easy-vqa" in lines[0] and "train_questions=1500" in lines[0]
    model, inputs, config = load_model(tmp_path / "params.npz")
    assert inputs == EASY_VQA and config["training"]["dataset"] == "easy-vqa"
    image = read_png(package.get_test_image_paths()[0])
    ranked = answer(model, inputs, image, "what shape is in the image?")
    assert {name for name, _ in ranked} == set(easy_vqa.ANSWERS)
    assert abs(sum(p for _, p in ranked) - 1) < 1e-9


def test_the_wheels_test_package_shadows_nothing_of_ours():
    """easy-vqa's wheel installs a top-level package ``test``.  Ours is ``tests``, found first,
    and nothing in mmt_numpy imports a ``test`` module."""
    import tests

    assert Path(tests.__file__).resolve().parent == REPO / "tests"
    assert Path(mmt_numpy.__file__).resolve().parent == REPO / "mmt_numpy"
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "mmt_numpy").rglob("*.py"))
    assert "import test\n" not in sources and "from test " not in sources and "from test." not in sources
    spec = importlib.util.find_spec("test")
    if spec is not None:  # the standard library's regression tests come before site-packages
        assert "site-packages" not in str(spec.origin)
