"""``train --task video`` and ``train --task videobert`` in their small configurations (seconds):
the loss drops, runs are deterministic, saved parameters reproduce predictions, the command's
last line is ``test accuracy: X``, options are checked before anything is written, and the
VideoBERT pieces (features, sequences, masking, retrieval) do what they say."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from mmt_numpy.data import video as vdata
from mmt_numpy.data.tokenizer import CLS_ID, IGNORE_INDEX, MASK_ID, SEP_ID
from mmt_numpy.nn import load
from mmt_numpy.tasks import TASKS, task_module
from mmt_numpy.tasks import video as task
from mmt_numpy.tasks import videobert as vb

ABLATIONS = Path(__file__).resolve().parents[1] / "benchmarks" / "video_ablations.py"


@pytest.fixture(scope="module")
def quick_run():
    return task.train_video(task.make_config(3, 0, quick=True), log=lambda line: None)


def test_the_tasks_are_registered():
    assert TASKS["video"] == "mmt_numpy.tasks.video" and task_module("video") is task
    assert task_module("videobert") is vb
    assert task.DEFAULT_EPOCHS >= 1 and vb.DEFAULT_EPOCHS >= 1


def test_the_loss_drops_and_the_run_is_deterministic(quick_run):
    losses = np.array(quick_run.step_losses)
    assert losses[-5:].mean() < 0.8 * losses[:5].mean()
    again = task.train_video(task.make_config(1, 0, quick=True), log=lambda line: None)
    np.testing.assert_array_equal(again.step_losses, quick_run.step_losses[: len(again.step_losses)])
    assert set(quick_run.test_by_kind[-1]) == {"all", *vdata.KINDS}


def test_saved_parameters_reproduce_the_predictions(quick_run, tmp_path):
    written = task.save_artifacts(quick_run, tmp_path)
    assert [p.name for p in written] == ["params.npz", "loss_curve.png"] and all(
        p.stat().st_size > 1000 for p in written
    )
    fresh = task.build_model(quick_run.config, quick_run.train_set)
    batches = task.ClipBatches(quick_run.test_set, fresh.dtype, True)
    before = batches.predict(fresh)
    load(fresh, tmp_path / "params.npz")
    np.testing.assert_array_equal(batches.predict(fresh), batches.predict(quick_run.model))
    assert not np.array_equal(before, batches.predict(quick_run.model))


def test_batches_hold_whole_clips_with_all_their_questions(quick_run):
    batches = task.ClipBatches(quick_run.train_set, np.float32, True)
    ids, patches, spec, local, lengths, answers = batches.inputs(np.array([4, 1]))
    d = quick_run.train_set
    assert patches.shape == (2, 8, 16, 256) and spec.shape == (2, *task.SPECTROGRAM)  # RGB + silhouette
    assert len(ids) == np.sum(d.clip_index == 4) + np.sum(d.clip_index == 1)
    np.testing.assert_array_equal(np.sort(answers[local == 0]), np.sort(d.answers[d.clip_index == 4]))


def test_audio_features_are_zero_on_the_noise_floor_and_positive_on_a_beep():
    clip = vdata.Clip((vdata.Track("square", "red", 0, 8, (0, 0), "still"),), (vdata.Beep(0.4, 1),))
    feats = task.audio_features(vdata.sound_track(clip, np.random.default_rng(0))[None])[0]
    assert feats.shape == task.SPECTROGRAM
    beep_bin = int(vdata.PITCHES[1] / (vdata.SAMPLE_RATE / task.N_FFT))
    frame = int(0.45 * vdata.SAMPLE_RATE / task.HOP)
    assert feats[beep_bin, frame] > 2.0
    assert np.median(feats) < 0.3  # most bins hold nothing but the floor


def test_main_reports_and_ends_with_the_test_accuracy(tmp_path):
    lines: list[str] = []
    accuracy = task.main(str(tmp_path / "run"), epochs=1, seed=0, log=lines.append, quick=True)
    assert lines[-1] == f"test accuracy: {accuracy:.4f}"
    assert any(line.startswith("with the sound tracks silenced") for line in lines)
    assert (tmp_path / "run" / "params.npz").exists()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"colour": True}, r"colour: not an option of the video task"),
        ({"time_positions": "relative"}, r"time_positions: expected learned, sinusoidal or none"),
        ({"sound": "no"}, r"sound: expected a bool"),
        ({"train_clips": 0}, r"train_clips: expected a positive integer"),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(tmp_path, options, match):
    with pytest.raises(ValueError, match=match):
        task.main(str(tmp_path / "run"), epochs=1, log=lambda line: None, quick=True, **options)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="epochs: expected a positive integer"):
        task.main(str(tmp_path / "run"), epochs=0, log=lambda line: None, quick=True)


def test_the_ablation_script_runs_three_trainings_side_by_side(capsys):
    spec = importlib.util.spec_from_file_location("video_ablations", ABLATIONS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    chance = module.chance(*vdata.make_video_splits(200, 100, seed=0))
    assert chance["meet"] == pytest.approx(0.5) and 0.2 < chance["direction"] < 0.3
    assert module.main(["--quick", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("full", "no time positions", "no sound", "sound silenced", "chance"):
        assert name in out
    with pytest.raises(SystemExit):
        module.main(["--quick", "--jobs", "4"])
    assert "--jobs: expected 1 to 3, got 4" in capsys.readouterr().err


# ---------------------------------------------------------------------- VideoBERT


def test_frame_features_are_colour_histograms():
    frames = np.zeros((1, 2, 32, 32, 3))
    frames[0, 0, :8, :8] = (0.9, 0.1, 0.1)  # 64 red pixels
    frames[0, 1, :16, :16] = (0.1, 0.2, 0.9)  # 256 blue pixels
    f = vb.frame_features(frames)
    assert f.shape == (1, 2, 8)
    assert f[0, 0, 4] == pytest.approx(64 / 1024) and f[0, 0].sum() == pytest.approx(64 / 1024)
    assert f[0, 1, 1] == pytest.approx(256 / 1024)


def test_joint_sequences_are_cls_caption_sep_words_then_padding():
    train, _ = vdata.make_video_splits(6, 2, seed=0)
    centroids = vb.frame_features(train.frames).reshape(-1, 8)[:5]
    data = vb.make_data(train, centroids, 30, 100)
    for i in range(6):
        n = data.caption_lengths[i]
        row, modality = data.joint_ids[i], data.joint_modality[i]
        assert row[0] == CLS_ID and row[n] == SEP_ID
        np.testing.assert_array_equal(row[n + 1 : n + 9], data.words[i] + 100)
        assert np.all(modality[n + 1 : n + 9] == 1) and np.all(modality[: n + 1] == 0)
        assert data.joint_lengths[i] == n + 9 and np.all(row[n + 9 :] == 0)
        np.testing.assert_array_equal(data.video_ids[i], [CLS_ID, *(data.words[i] + 100)])


def test_masking_visual_words_masks_all_of_some_rows_and_nothing_else():
    ids = np.tile(np.arange(20), (400, 1))
    modality = np.tile(np.r_[np.zeros(12, int), np.ones(8, int)], (400, 1))
    corrupted, targets = vb.mask_visual_words(ids, modality, np.random.default_rng(0))
    assert np.all(corrupted[:, :12] == ids[:, :12]) and np.all(targets[:, :12] == IGNORE_INDEX)
    chosen = targets[:, 12:] != IGNORE_INDEX
    assert np.all(corrupted[:, 12:][chosen] == MASK_ID)
    every = chosen.all(axis=1).mean()
    assert 0.4 < every < 0.6  # about half the rows: every word masked


def test_retrieval_recall_counts_ranks_both_ways():
    e = np.eye(4)
    perfect = vb.retrieval_recall(e, e)
    assert all(v == 1.0 for v in perfect.values())
    shifted = vb.retrieval_recall(e, np.roll(e, 1, axis=0))  # caption n matches clip n+1
    assert shifted["text->video R@1"] == 0.0 and shifted["video->text R@1"] == 0.0
    assert vb.retrieval_recall(e, np.roll(e, 1, axis=0), ks=(4,))["text->video R@4"] == 1.0


def test_videobert_quick_run_learns_and_reports(tmp_path):
    lines: list[str] = []
    accuracy = vb.main(str(tmp_path / "vb"), epochs=2, log=lines.append, quick=True)
    assert lines[-1] == f"test accuracy: {accuracy:.4f}"
    assert any(line.startswith("masked visual words from the text") for line in lines)
    assert (tmp_path / "vb" / "centroids.npy").exists()
    with pytest.raises(ValueError, match="colour: not an option of the videobert task"):
        vb.main(str(tmp_path / "other"), epochs=1, log=lambda line: None, colour=1)
    assert not (tmp_path / "other").exists()
