"""``train --task unit`` in its small configuration (seconds): the losses drop, the run is
deterministic, a round-robin step leaves the other tasks' heads untouched, the command ends
with one ``<task> test accuracy: X`` line per task, options and task names are checked before
anything is written; the matching data's labels are recomputed from the scenes; the
shared-vs-single benchmark runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from mmt_numpy import data
from mmt_numpy.__main__ import main as cli_main
from mmt_numpy.data.matching import MATCH_KINDS, make_matching_set, recolour
from mmt_numpy.nn import load
from mmt_numpy.tasks import TASKS, task_module
from mmt_numpy.tasks import unit as task

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "unit_vs_single.py"


@pytest.fixture(scope="module")
def quick_run():
    return task.train_unit(task.make_config(quick=True), log=lambda line: None)


def test_the_task_is_registered():
    assert TASKS["unit"] == "mmt_numpy.tasks.unit" and task_module("unit") is task


def test_every_task_trains_and_the_run_is_deterministic(quick_run):
    for name in task.TASK_NAMES:
        losses = np.array(quick_run.step_losses[name])
        assert len(losses) == 3 * task.QUICK["steps_per_epoch"] and np.all(np.isfinite(losses))
    assert np.mean(quick_run.step_losses["vqa"][-3:]) < np.mean(quick_run.step_losses["vqa"][:3])
    again = task.train_unit(task.make_config(1, quick=True), log=lambda line: None)
    for name in task.TASK_NAMES:
        n = len(again.step_losses[name])
        np.testing.assert_array_equal(again.step_losses[name], quick_run.step_losses[name][:n])


def test_a_round_robin_step_moves_only_what_its_task_reached():
    """One optimiser per parameter group, stepped only when the group got a gradient: a step of
    video_qa leaves the image encoder and the other heads exactly where they were."""
    config = task.make_config(1, quick=True, steps_per_epoch=1, tasks="video_qa,itm")
    result = task.train_unit(config, log=lambda line: None)  # one video_qa step, then one itm step
    fresh = task.build_model(config)
    groups_after, groups_before = result.model.parameter_groups(), fresh.parameter_groups()
    # the image encoder and the itm head moved only in the itm step, the video ones only in the video step;
    # both moved, and nothing else than these groups exists
    assert set(groups_after) == {"shared", "image", "video", "head.video_qa", "head.itm"}
    for name in groups_after:
        moved = any(
            not np.array_equal(a.data, b.data)
            for a, b in zip(groups_after[name], groups_before[name], strict=True)
        )
        assert moved, name
    model = task.build_model(config)
    sets = task.load_data(config)
    before = {n: [p.data.copy() for p in ps] for n, ps in model.parameter_groups().items()}
    optimizers = {n: task.Adam(ps, lr=1e-2) for n, ps in model.parameter_groups().items()}
    model.zero_grad()
    model.loss_backward({"video_qa": sets.train["video_qa"].batch(np.array([0, 1]))[1]})
    for n in model.groups_of("video_qa"):
        optimizers[n].step()
    for name, params in model.parameter_groups().items():
        same = all(np.array_equal(p.data, b) for p, b in zip(params, before[name], strict=True))
        assert same == (name not in model.groups_of("video_qa")), name


def test_saved_parameters_reproduce_the_predictions(quick_run, tmp_path):
    written = task.save_artifacts(quick_run, tmp_path)
    assert [p.name for p in written] == ["params.npz", "loss_curve.png"]
    fresh = task.build_model(quick_run.config)
    load(fresh, tmp_path / "params.npz")
    for name, rows in quick_run.data.test.items():
        np.testing.assert_array_equal(
            task.predict(fresh, name, rows)[0], task.predict(quick_run.model, name, rows)[0]
        )


def test_accuracy_by_kind_covers_every_row(quick_run):
    kinds = task.accuracy_by_kind(quick_run)
    assert set(kinds["itm"]) == set(MATCH_KINDS) and set(kinds["video_qa"]) <= set(task.FRAME_KINDS)
    for name, rows in quick_run.data.test.items():
        assert sum(n for _, n in kinds[name].values()) == len(rows)


def test_video_rows_are_the_frame_questions_only(quick_run):
    rows = quick_run.data.test["video_qa"]
    assert set(rows.dataset.kinds[rows.rows]) <= set(task.FRAME_KINDS)
    assert not set(rows.dataset.kinds[rows.rows]) & {"beeps", "second tone"}
    ids, batch = rows.batch(np.array([2, 0]))
    np.testing.assert_array_equal(batch.targets, rows.dataset.answers[ids])
    np.testing.assert_array_equal(rows.dataset.clip_index[ids], np.array([2, 0])[batch.visual_index])


def test_main_ends_with_one_accuracy_line_per_task(tmp_path):
    lines: list[str] = []
    final = task.main(str(tmp_path / "run"), log=lines.append, quick=True)
    assert lines[-3:] == [f"{t} test accuracy: {final[t]:.4f}" for t in task.TASK_NAMES]
    assert (tmp_path / "run" / "params.npz").exists()


def test_the_command_line_trains_the_task(tmp_path, capsys):
    assert (
        cli_main(["train", "--task", "unit", "--quick", "--epochs", "1", "--out", str(tmp_path / "r")]) == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" test accuracy: ")[0] for line in out[-3:]] == list(task.TASK_NAMES)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tasks": "vqa,nope"}, "tasks: expected distinct names among vqa, video_qa, itm"),
        ({"tasks": "vqa,vqa"}, "tasks: expected distinct names"),
        ({"schedule": "random"}, "schedule: expected one of round-robin, mixed, got 'random'"),
        ({"lr_typo": 1.0}, "lr_typo: not an option of the unit task"),
        ({"batch_size": 0}, "batch_size: expected a positive integer, got 0"),
        ({"epochs": 0}, "epochs: expected a positive integer, got 0"),
        ({"seed": -1}, "seed: expected an integer >= 0, got -1"),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        task.main(str(tmp_path / "run"), log=lambda line: None, **options)
    assert not (tmp_path / "run").exists()


def test_the_paper_s_decoder_input_is_an_option():
    config = task.make_config(1, quick=True, queries_read_text=False)
    assert task.build_model(config).queries_read_text is False
    assert task.build_model(task.make_config(1, quick=True)).queries_read_text is True


def test_a_mixed_schedule_trains_every_task_each_step():
    result = task.train_unit(task.make_config(1, quick=True, schedule="mixed"), log=lambda line: None)
    assert all(len(v) == task.QUICK["steps_per_epoch"] for v in result.step_losses.values())


def test_matching_labels_are_recomputed_from_the_scenes():
    train, _ = data.make_vqa_splits(40, 5, 3)
    m = make_matching_set(train.scenes, np.random.default_rng(0))
    assert len(m) == 2 * len(train.scenes) and set(m.kinds) == set(MATCH_KINDS)
    for i, text, label, kind in zip(m.image_index, m.captions, m.labels, m.kinds, strict=True):
        truth = data.caption(train.scenes[i])
        assert label == int(text == truth) and (kind == "match") == bool(label)
        if kind == "colour changed":  # one word differs, and it is a colour
            diff = [(a, b) for a, b in zip(text.split(), truth.split(), strict=True) if a != b]
            assert len(diff) == 1 and diff[0][0] in data.COLOURS and diff[0][1] in data.COLOURS
    np.testing.assert_array_equal(data.TOKENIZER.decode(m.ids), m.captions)
    scene = train.scenes[0]
    assert recolour(scene, np.random.default_rng(1)) != scene
    with pytest.raises(ValueError, match="scenes: expected at least 2 scenes"):
        make_matching_set(train.scenes[:1], np.random.default_rng(0))


def test_the_benchmark_prints_unit_and_single_per_task(capsys):
    spec = importlib.util.spec_from_file_location("unit_vs_single", BENCHMARK)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    table = bench.main(["--quick", "--epochs", "1"])
    assert set(table) == set(task.TASK_NAMES)
    for row in table.values():
        assert (
            0 <= row["unit"] <= 1
            and 0 <= row["single"] <= 1
            and row["steps"] == task.QUICK["steps_per_epoch"]
        )
        assert row["single params"] < row["unit params"]
    assert "UniT - alone" in capsys.readouterr().out
