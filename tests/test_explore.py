"""The attention explorer page (without a browser): its structure, its data, its size, the command.

The page must be self-contained (no network: no external scripts, styles, fonts or URLs),
carry valid JSON whose weights are the model's to within the one-byte quantisation, mark
padded tokens, stay under 2 MB for a two-layer, four-head model on 100 tokens, and be
shown by Jupyter through ``_repr_html_``.
"""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pytest

from mmt_numpy import data, viz
from mmt_numpy.__main__ import main
from mmt_numpy.explorer import ExplorerPage, dequantise, explore, quantise
from mmt_numpy.explorer.page import DATA_ID
from mmt_numpy.nn import ImageTextModel


def _toy_batch(count: int = 8):
    _, test = data.make_vqa_splits(20, 6, seed=3)
    rows = np.arange(count)
    images = test.images[test.image_index[rows]]
    return test.ids[rows], test.patches(np.float32)[rows], images, test.lengths[rows], test.answers[rows]


def _toy_model(**kwargs) -> ImageTextModel:
    return ImageTextModel(
        len(data.TOKENIZER),
        192,
        len(data.ANSWERS),
        max_len=9,
        image_grid=(3, 3),
        dtype=np.float32,
        rng=0,
        **kwargs,
    )


def _toy_page(build=explore) -> tuple[ExplorerPage, ImageTextModel, tuple]:
    model = _toy_model()
    batch = _toy_batch()
    ids, patches, images, lengths, answers = batch
    page = build(
        model,
        ids,
        patches,
        images,
        lengths,
        vocab=data.TOKENIZER.vocab,
        answers=data.ANSWERS,
        targets=answers,
        title="toy <page> & §5",
        source="seeded",
    )
    return page, model, batch


@pytest.fixture(scope="module")
def toy_page() -> tuple[ExplorerPage, ImageTextModel, tuple]:
    return _toy_page()


def _payload(page_html: str) -> dict:
    match = re.search(rf'<script type="application/json" id="{DATA_ID}">(.*?)</script>', page_html, re.S)
    assert match, "no JSON data block"
    return json.loads(match.group(1))


def test_the_page_is_self_contained(toy_page):
    page, _, _ = toy_page
    text = page.html
    assert text.startswith("<!DOCTYPE html>")
    assert text.isascii()
    for view in ("head-view", "model-view", "cross-view"):
        assert f'id="{view}"' in text
    assert text.count("<script") == 2  # the JSON block and the inline script
    assert "<script src" not in text and "<link" not in text and "@import" not in text
    # No URL of any kind: only data: URIs (the pictures) may appear.
    assert not re.search(r"https?:|ftp:|//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I)
    assert re.findall(r"url\(", text) == []
    assert set(re.findall(r'"(data:[a-z/]+);base64,', text)) == {"data:image/png"}
    # The title is escaped (and its non-ASCII § kept as a character reference).
    assert "<title>toy &lt;page&gt; &amp; &#167;5</title>" in text


def test_the_json_holds_the_model_weights(toy_page):
    page, model, (ids, patches, images, lengths, answers) = toy_page
    payload = _payload(page.html)
    assert payload == page.data
    assert payload["model"] == {"layers": 2, "heads": 4, "hidden_dim": 32}
    out, cache = model.forward(ids, patches, lengths)
    L = ids.shape[1] + patches.shape[1]
    assert len(payload["examples"]) == 8
    for b, example in enumerate(payload["examples"]):
        assert len(example["tokens"]) == L and example["num_text"] == ids.shape[1]
        assert example["tokens"][0] == "[CLS]" and example["tokens"][-1] == "img 2,2"
        assert example["keep"] == [t < lengths[b] for t in range(ids.shape[1])] + [True] * 9
        assert example["question"] == data.TOKENIZER.decode(ids[b : b + 1])[0]
        weights = dequantise(example["weights"], (2, 4, L, L))
        expected = np.stack([w[b] for w in cache.weights])
        np.testing.assert_allclose(weights, expected, atol=0.5 / 255 + 1e-7)
        assert example["prediction"] == data.ANSWERS[int(out[b, 0].argmax())]
        assert example["truth"] == data.ANSWERS[answers[b]]
        assert 0 < example["probability"] <= 1
    padded = [t for t, kept in enumerate(payload["examples"][0]["keep"]) if not kept]
    assert padded and all(payload["examples"][0]["tokens"][t] == "[PAD]" for t in padded)


def test_quantisation_round_trip():
    w = np.random.default_rng(0).dirichlet(np.ones(7), size=(3, 5))
    back = dequantise(quantise(w), w.shape)
    assert np.abs(back - w).max() <= 0.5 / 255 + 1e-12
    assert quantise(np.array([0.0, 1.0])) == "AP8="  # bytes 0 and 255


def test_two_layers_four_heads_100_tokens_under_2_mb():
    """The size the issue budgets: 8 examples of 10 text tokens + a 9 x 10 patch grid."""
    rng = np.random.default_rng(1)
    model = ImageTextModel(
        len(data.TOKENIZER), 12, 6, num_heads=4, num_layers=2, max_len=90, image_grid=(9, 10)
    )
    ids = rng.integers(5, len(data.TOKENIZER), size=(8, 10))
    ids[:, 0] = data.CLS_ID
    patches = rng.standard_normal((8, 90, 12))
    images = rng.uniform(size=(8, 18, 20, 3))
    page = explore(model, ids, patches, images, np.full(8, 10), vocab=data.TOKENIZER.vocab)
    assert len(page.data["examples"][0]["tokens"]) == 100
    assert page.nbytes == len(page.html.encode()) < 2_000_000
    assert page.nbytes > 8 * 2 * 4 * 100 * 100 * 4 / 3  # the weights really are in it
    assert "prediction" not in page.data["examples"][0]  # no answer names, no prediction shown


def test_jupyter_displays_it_in_an_iframe(toy_page):
    page, _, _ = toy_page
    shown = page._repr_html_()
    assert shown.startswith("<iframe srcdoc=") and shown.endswith("</iframe>")
    srcdoc = re.match(r'<iframe srcdoc="([^"]*)"', shown).group(1)
    assert html.unescape(srcdoc) == page.html
    assert "8 examples" in repr(page)


def test_viz_explore_is_the_same_page(toy_page):
    page, _, _ = toy_page
    again, _, _ = _toy_page(build=viz.explore)
    assert isinstance(again, ExplorerPage) and again.html == page.html


def test_save_writes_the_page(toy_page, tmp_path):
    page, _, _ = toy_page
    path = page.save(tmp_path / "sub" / "explorer.html")
    assert path.read_text(encoding="ascii") == page.html


def test_bad_arguments_are_named():
    model = _toy_model()
    ids, patches, images, lengths, _ = _toy_batch(2)
    vocab = data.TOKENIZER.vocab
    with pytest.raises(TypeError, match="model: expected an mmt_numpy.nn.ImageTextModel"):
        explore("model", ids, patches, images, lengths, vocab=vocab)
    with pytest.raises(TypeError, match="ids: expected a 2-D integer array"):
        explore(model, ids.astype(float), patches, images, lengths, vocab=vocab)
    with pytest.raises(ValueError, match=r"images: expected \(B=2, H, W, 3\)"):
        explore(model, ids, patches, images[:1], lengths, vocab=vocab)
    with pytest.raises(ValueError, match=r"images: expected float RGB values in \[0, 1\]"):
        explore(model, ids, patches, images * 255, lengths, vocab=vocab)
    with pytest.raises(ValueError, match=r"lengths: expected values in \[1, 9\]"):
        explore(model, ids, patches, images, np.array([3, 12]), vocab=vocab)
    with pytest.raises(ValueError, match=r"grid: expected rows \* columns = 9"):
        explore(model, ids, patches, images, lengths, vocab=vocab, grid=(2, 4))
    with pytest.raises(ValueError, match="vocab: expected a word for every id"):
        explore(model, ids, patches, images, lengths, vocab=vocab[:5])
    with pytest.raises(ValueError, match="answers: expected 6 names"):
        explore(model, ids, patches, images, lengths, vocab=vocab, answers=["a", "b"])


# ----------------------------------------------------------------------------- the command


def test_explore_command_writes_a_seeded_page(tmp_path, capsys):
    out = tmp_path / "page.html"
    assert main(["explore", "--out", str(out), "--examples", "3"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    payload = _payload(out.read_text(encoding="ascii"))
    assert len(payload["examples"]) == 3
    assert "untrained model, seeded with 0" in payload["source"]
    # varied question types (colour, yes/no, colour), each about another picture
    assert [e["question"].split()[0] for e in payload["examples"]] == ["what", "is", "what"]
    assert len({e["image"] for e in payload["examples"]}) == 3


def _one_line_error(capsys, argv: list[str]) -> str:
    """Run ``main(argv)``: exit code 2 (raised by argparse or returned), one line on stderr."""
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--examples", "0"], "argument --examples: expected a positive integer, got '0'"),
        (["--examples", "65"], "argument --examples: expected at most 64, got 65"),
        (["--out", "page.txt"], "argument --out: expected a file name ending in .html or .htm"),
        (["--params", "missing.npz"], "argument --params: expected an existing file"),
        (["--screenshot", "shot.jpg"], "argument --screenshot: expected a file name ending in .png"),
    ],
)
def test_explore_command_refuses_bad_arguments_in_one_line(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = _one_line_error(capsys, ["explore", *argv])
    assert err.startswith(f"python -m mmt_numpy explore: error: {message}"), err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_explore_command_refuses_a_folder_and_a_file_without_configuration(tmp_path, capsys):
    (tmp_path / "dir.html").mkdir()
    err = _one_line_error(capsys, ["explore", "--out", str(tmp_path / "dir.html")])
    assert "argument --out: expected a file, got" in err and "which is a folder" in err
    bare = tmp_path / "bare.npz"
    from mmt_numpy.nn import save

    save(_toy_model(), bare)  # parameters only, as train wrote them before configurations
    err = _one_line_error(capsys, ["explore", "--params", str(bare), "--out", str(tmp_path / "p.html")])
    assert "argument --params: " in err and "no configuration" in err
    assert not (tmp_path / "p.html").exists()
