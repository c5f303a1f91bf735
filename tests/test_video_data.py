"""The synthetic clips of §6.3: seeds reproduce, splits are disjoint, every answer is recomputed
here from the clip's description by a second implementation, the frames and the sound track show
what the description says, and clips of the wrong shape are refused by name."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from mmt_numpy.data import video as vd
from mmt_numpy.data.tokenizer import UNK_ID
from mmt_numpy.ops.stft import stft


@pytest.fixture(scope="module")
def splits():
    return vd.make_video_splits(60, 20, seed=5)


def test_same_seed_same_clips_other_seed_other_clips(splits):
    train, test = splits
    again_train, again_test = vd.make_video_splits(60, 20, seed=5)
    for a, b in ((train, again_train), (test, again_test)):
        assert a.clips == b.clips
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_array_equal(a.audio, b.audio)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.answers, b.answers)
    other, _ = vd.make_video_splits(60, 20, seed=6)
    assert other.clips != train.clips


def test_train_and_test_clips_are_disjoint_and_meetings_balanced():
    train, test = vd.make_video_splits(300, 100, seed=0)
    assert len(set(train.clips)) == 300 and len(set(test.clips)) == 100
    assert not set(train.clips) & set(test.clips)
    for d in (train, test):
        meets = [bool(c.meetings()) for c in d.clips]
        assert sum(meets) == len(meets) // 2


def _cells(track: vd.Track, frames: int) -> list[tuple[int, tuple[int, int]]]:
    """(frame, cell) of every visible frame, walked step by step (a second implementation)."""
    out, cell = [], track.start
    step = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0), "still": (0, 0)}[track.direction]
    for t in range(track.appear, track.vanish):
        if t > track.appear and (t - track.appear) % vd.STEP_EVERY == 0:
            cell = (cell[0] + step[0], cell[1] + step[1])
        out.append((t, cell))
    return out


def _expected_answers(clip: vd.Clip) -> dict[str, str | list[str]]:
    """Every answer of the clip, recomputed from the description alone."""
    answers: dict[str, str | list[str]] = {}
    directions = []
    for tr in clip.tracks:
        path = _cells(tr, clip.frames)
        (r0, c0), (r1, c1) = path[0][1], path[-1][1]
        moved = {(0, -1): "left", (0, 1): "right", (-1, 0): "up", (1, 0): "down"}
        d = (int(np.sign(r1 - r0)), int(np.sign(c1 - c0)))
        directions.append("nowhere" if d == (0, 0) else moved[d])
    answers["direction"] = directions
    latest = max(tr.appear for tr in clip.tracks)
    answers["appears last"] = [tr.shape for tr in clip.tracks if tr.appear == latest][0]
    answers["count at end"] = ("one", "two", "three")[sum(tr.vanish == clip.frames for tr in clip.tracks) - 1]
    positions = {tr.shape: dict(_cells(tr, clip.frames)) for tr in clip.tracks}
    meet = False
    for t in range(1, clip.frames):
        for a in positions:
            for b in positions:
                if a < b and all(t in positions[s] and t - 1 in positions[s] for s in (a, b)):
                    touching = [
                        sum(abs(np.subtract(positions[a][u], positions[b][u]))) == 1 for u in (t - 1, t)
                    ]
                    meet |= touching[1] and not touching[0]
    answers["meet"] = "yes" if meet else "no"
    answers["beeps"] = ("one", "two", "three")[len(clip.beeps) - 1]
    if len(clip.beeps) >= 2:
        answers["second tone"] = (
            "yes" if vd.PITCHES[clip.beeps[1].pitch] > vd.PITCHES[clip.beeps[0].pitch] else "no"
        )
    return answers


def test_every_answer_matches_the_description_recomputed(splits):
    for d in splits:
        for i, clip in enumerate(d.clips):
            expected = _expected_answers(clip)
            rows = np.flatnonzero(d.clip_index == i)
            got = collections.defaultdict(list)
            for r in rows:
                got[d.kinds[r]].append(vd.VIDEO_ANSWERS[d.answers[r]])
            assert got.pop("direction") == expected.pop("direction")
            assert {k: v[0] for k, v in got.items()} == expected
            assert sorted(got) == sorted(k for k in vd.KINDS if k in expected)


def test_questions_need_time_and_answers_are_varied():
    train, _ = vd.make_video_splits(400, 10, seed=1)
    for kind in vd.KINDS:
        answers = collections.Counter(train.answers[train.questions_of(kind)].tolist())
        assert len(answers) >= 2, kind  # no kind is answered by one constant
        assert max(answers.values()) / sum(answers.values()) < 0.55, (kind, answers)
    # the late shape is never in frame 0, and every clip ends with a shape on the board
    for clip in train.clips:
        late = max(clip.tracks, key=lambda tr: tr.appear)
        assert late.appear >= 1 and late.cell(0) is None
        assert any(tr.vanish == clip.frames for tr in clip.tracks)


def test_the_frames_show_the_description(splits):
    train, _ = splits
    cell = vd.CELL
    for i, clip in enumerate(train.clips[:30]):
        lit = (
            train.frames[i].reshape(clip.frames, clip.grid, cell, clip.grid, cell, 3).max(axis=(2, 4, 5)) > 0
        )
        for t in range(clip.frames):
            expected = {tr.cell(t) for tr in clip.tracks} - {None}
            assert {(r, c) for r, c in zip(*np.nonzero(lit[t]), strict=True)} == expected
        # a shape looks the same in every frame it is in: its cell's pixels are one tile
        for tr in clip.tracks:
            tiles = [
                train.frames[i, t, r * cell : (r + 1) * cell, c * cell : (c + 1) * cell]
                for t, (r, c) in _cells(tr, clip.frames)
            ]
            assert all(np.array_equal(tiles[0], tile) for tile in tiles)


def _band_energy(audio: np.ndarray, low: float, high: float) -> np.ndarray:
    """Energy per STFT frame (hop 32 samples) between two frequencies."""
    spec = np.abs(stft(audio.astype(np.float64), 128, 32, center=True)) ** 2  # (65, frames)
    freqs = np.arange(65) * vd.SAMPLE_RATE / 128
    return spec[(freqs >= low) & (freqs <= high)].sum(axis=0)


def test_the_sound_track_carries_the_beeps_and_the_clicks(splits):
    train, _ = splits
    assert train.audio.shape == (60, vd.FRAMES * vd.SAMPLES_PER_FRAME)
    for i, clip in enumerate(train.clips[:30]):
        audio = train.audio[i]
        # beeps: runs of energy at the beep pitches lasting at least half a beep (a click, also
        # heard there, lasts a few milliseconds), in order, each at its own pitch
        pitch_energy = np.stack([_band_energy(audio, p - 60, p + 60) for p in vd.PITCHES])  # (3, frames)
        loud = np.r_[False, pitch_energy.max(axis=0) > 1.0, False]
        starts, ends = np.flatnonzero(loud[1:] & ~loud[:-1]), np.flatnonzero(~loud[1:] & loud[:-1])
        half_beep = vd.BEEP_SECONDS / 2 * vd.SAMPLE_RATE / 32
        runs = [(a, b) for a, b in zip(starts, ends, strict=True) if b - a >= half_beep]
        assert len(runs) == len(clip.beeps)
        heard = [int(pitch_energy[:, a:b].sum(axis=1).argmax()) for a, b in runs]
        assert heard == [b.pitch for b in clip.beeps]
        # clicks: broadband, so heard below every beep's pitch too, exactly at the meeting frames
        below = _band_energy(audio, 100, 300)
        times = np.arange(len(below)) * 32 / vd.SAMPLE_RATE
        click_frames = sorted({f for f, _, _ in clip.meetings()})
        heard_clicks = sorted({int(round(t * vd.FPS)) for t in times[below > 0.3]})
        assert heard_clicks == click_frames


def test_captions_describe_what_happens():
    clip = vd.Clip(
        tracks=(
            vd.Track("square", "red", 0, 8, (1, 0), "right"),
            vd.Track("circle", "blue", 0, 5, (3, 3), "still"),
            vd.Track("triangle", "green", 2, 8, (3, 1), "up"),
        ),
        beeps=(vd.Beep(0.1, 0),),
    )
    assert vd.clip_caption(clip) == (
        "a red square moves right , a blue circle stays and vanishes , "
        "then a green triangle appears and moves up"
    )
    ids, _ = vd.VIDEO_TOKENIZER.encode([vd.clip_caption(clip)])
    assert UNK_ID not in ids  # every word is in the vocabulary


def test_the_video_vocabulary_extends_the_image_one():
    from mmt_numpy.data import TOKENIZER

    assert vd.VIDEO_TOKENIZER.vocab[: len(TOKENIZER)] == TOKENIZER.vocab
    for q in (
        "which way does the circle move ?",
        "how many beeps are there ?",
        "is the second tone higher ?",
    ):
        assert UNK_ID not in vd.VIDEO_TOKENIZER.encode([q])[0]


def test_patches_cut_every_frame_like_an_image(splits):
    train, _ = splits
    patches = train.patches()
    assert patches.shape == (60, 8, 16, 192)
    np.testing.assert_array_equal(patches[3, 5, 6], train.frames[3, 5, 8:16, 16:24].ravel())


def test_the_silhouette_channel_is_one_where_a_shape_is_drawn_whatever_its_colour(splits):
    train, _ = splits
    patches = vd.clip_patches(train.frames, silhouette=True)
    assert patches.shape == (60, 8, 16, 256)
    np.testing.assert_array_equal(patches[..., 0::4], train.patches()[..., 0::3])  # red kept in place
    lit = patches[..., 3::4]
    np.testing.assert_array_equal(
        lit, train.patches()[..., 0::3] + train.patches()[..., 1::3] + train.patches()[..., 2::3] > vd.LIT
    )
    # the same shape in two colours: identical silhouettes, different RGB
    tiles = []
    for colour in ("red", "blue"):
        clip = vd.Clip((vd.Track("triangle", colour, 0, 8, (0, 0), "still"),), (vd.Beep(0.1, 0),))
        frames = vd.render_clip(clip, np.random.default_rng(0))[None]
        tiles.append(vd.clip_patches(frames, silhouette=True)[0, 0, 0])
    np.testing.assert_array_equal(tiles[0][3::4], tiles[1][3::4])
    assert tiles[0][3::4].sum() > 10 and not np.array_equal(tiles[0][0::4], tiles[1][0::4])


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("frames", "audio", "error", "match"),
    [
        (
            np.zeros((8, 32, 32, 3)),
            None,
            ValueError,
            r"frames: expected shape \(C, T, H, W, 3\), got \(8, 32, 32, 3\) \(a single clip\?",
        ),
        (
            np.zeros((2, 0, 32, 32, 3)),
            None,
            ValueError,
            r"frames: expected at least one frame per clip \(T >= 1\)",
        ),
        (np.zeros((2, 8, 32, 32, 4)), None, ValueError, r"frames: expected shape \(C, T, H, W, 3\)"),
        (
            np.zeros((2, 8, 32, 32, 3), dtype=np.uint8),
            None,
            TypeError,
            r"frames: expected a float numpy array",
        ),
        (
            np.zeros((2, 8, 32, 32, 3)),
            np.zeros((2, 3999)),
            ValueError,
            r"audio: expected shape \(2, 4000\) \(8 frames x 500 samples",
        ),
        (np.zeros((2, 8, 32, 32, 3)), np.zeros((3, 4000)), ValueError, r"audio: expected shape \(2, 4000\)"),
        (
            np.zeros((2, 8, 32, 32, 3)),
            np.zeros((2, 4000), dtype=np.int16),
            TypeError,
            r"audio: expected a float numpy array",
        ),
    ],
)
def test_clips_of_the_wrong_shape_are_refused_by_name(frames, audio, error, match):
    with pytest.raises(error, match=match):
        vd.check_clips(frames, audio)


def test_clip_patches_and_datasets_refuse_bad_clips(splits):
    train, _ = splits
    with pytest.raises(ValueError, match="T >= 1"):
        vd.clip_patches(np.zeros((1, 0, 32, 32, 3)))
    with pytest.raises(ValueError, match="patch: expected a divisor"):
        vd.clip_patches(np.zeros((1, 2, 30, 30, 3)))
    with pytest.raises(ValueError, match=r"audio: expected shape \(60, 4000\)"):
        vd.VideoQADataset(
            train.clips,
            train.frames,
            train.audio[:, :-1],
            train.clip_index,
            train.ids,
            train.lengths,
            train.answers,
            train.kinds,
        )
    with pytest.raises(ValueError, match="clips: expected 60 descriptions"):
        vd.VideoQADataset(
            train.clips[:-1],
            train.frames,
            train.audio,
            train.clip_index,
            train.ids,
            train.lengths,
            train.answers,
            train.kinds,
        )
    with pytest.raises(ValueError, match="frames: expected an integer >= 6"):
        vd.random_clip(np.random.default_rng(0), frames=3)
    with pytest.raises(ValueError, match="num_train_clips: expected an integer >= 1"):
        vd.make_video_splits(0, 5)
    with pytest.raises(ValueError, match="kind: expected one of"):
        train.questions_of("colour")
