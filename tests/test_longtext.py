"""``python -m mmt_numpy longtext``: the experiment's quick configuration end to end, its table,
plot and files, its argument errors (one line, exit 2, nothing written), and the pieces it is
built from (the schemes it evaluates, the reader's contract)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmt_numpy import nn
from mmt_numpy.__main__ import main
from mmt_numpy.data.longtext import CODES, PATCH_DIM, VOCAB, make_longtext_batch
from mmt_numpy.nn.attention import PositionScheme
from mmt_numpy.tasks import longtext


def test_quick_run_writes_the_table_the_plot_and_the_results(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["longtext", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert (out / "accuracy.png").stat().st_size > 10_000
    table = (out / "table.md").read_text()
    assert table in printed
    for task in ("passkey", "image"):
        assert f"task: {task}" in table
        for scheme in longtext.SCHEMES:
            accs = results["accuracy"][f"{task}/{scheme}"]
            errs = results["stderr"][f"{task}/{scheme}"]
            assert len(accs) == len(errs) == 2 and all(0 <= a <= 1 for a in accs)
            for a, e in zip(accs, errs, strict=True):  # the standard error is √(p(1 − p)/n)
                assert e == pytest.approx(np.sqrt(a * (1 - a) / 4))
            assert f"| {scheme} | " in table


def test_the_same_seed_gives_the_same_table(tmp_path):
    config = longtext.LongTextConfig.quick()
    config.tasks = ("passkey",)
    first = longtext.run_experiment(config, log=lambda _: None, threads=2)
    second = longtext.run_experiment(config, log=lambda _: None, threads=1)
    assert first["accuracy"] == second["accuracy"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seed", "-1"], "argument --seed: expected an integer >= 0, got '-1'"),
        (["--out", "FILE"], "argument --out:"),
        (["--tasks", "story"], "argument --tasks: invalid choice: 'story'"),
    ],
)
def test_bad_arguments_are_one_line_exit_2_and_nothing_is_written(tmp_path, capsys, argv, message):
    existing = tmp_path / "a_file"
    existing.write_text("keep me")
    argv = [str(existing) if a == "FILE" else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(["longtext", "--quick", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m mmt_numpy longtext: error: " + message) and "\n" not in err
    assert existing.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_evaluation_schemes():
    assert longtext.eval_scheme("RoPE", 128) is None and longtext.eval_scheme("ALiBi", 128) is None
    assert longtext.eval_scheme("RoPE + NTK", 128) == PositionScheme("rope", scaling="ntk", train_length=128)
    sinks = longtext.eval_scheme("window + sinks", 128)
    assert sinks.window + sinks.sinks == 128  # the cache holds as many tokens as training saw


def test_reader_reads_the_last_position_and_refuses_bad_input():
    reader = nn.LongTextReader(
        len(VOCAB), len(CODES), position="alibi", patch_dim=PATCH_DIM, d_model=8, num_heads=2, d_ff=8, rng=0
    )
    batch = make_longtext_batch("image", 12, 3, seed=0)
    logits, cache = reader.forward(batch.ids, batch.patches)
    assert logits.shape == (3, len(CODES)) and cache.weights[0].shape == (3, 2, 12, 12)
    # An earlier token reaches the answer at the last position.
    ids = batch.ids.copy()
    ids[:, 3] = (ids[:, 3] + 1) % len(VOCAB)
    assert not np.allclose(reader(ids, batch.patches), logits)
    (d_patches,) = reader.backward(np.ones_like(logits), cache)
    assert d_patches.shape == batch.patches.shape
    with pytest.raises(ValueError, match="patches: this reader was built without patch_dim"):
        nn.LongTextReader(len(VOCAB), len(CODES), d_model=8, num_heads=2, rng=0).forward(
            batch.ids, batch.patches
        )
    with pytest.raises(ValueError, match="position: expected one of"):
        nn.LongTextReader(len(VOCAB), len(CODES), position="learned")
    sinusoidal = nn.LongTextReader(
        len(VOCAB), len(CODES), position="sinusoidal", d_model=8, num_heads=2, rng=0
    )
    with pytest.raises(ValueError, match="scheme: a sinusoidal model takes only kind='none'"):
        sinusoidal.set_position(PositionScheme("rope"))
    sinusoidal.set_position(PositionScheme("none", window=4, sinks=1))
    assert sinusoidal(batch.ids).shape == (3, len(CODES))
