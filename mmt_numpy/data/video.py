"""Synthetic video clips with a sound track, questions that need time, and a caption (§6.3).

Nothing is downloaded.  A :class:`Clip` is a *description*: shapes (square, circle,
triangle, each at most once) that appear, move one cell every two frames on a ``grid x
grid`` board, and may vanish, plus a list of beeps.  Everything a model sees is made from
the description, and every answer is computed from it:

* :func:`render_clip`: ``(T, H, W, 3)`` RGB frames in [0, 1] (each frame drawn by
  :func:`mmt_numpy.data.render`, the still scenes' renderer, one shape per cell);
* :func:`sound_track`: ``(T * samples_per_frame,)`` audio in which the beeps sound (which the
  frames do not show) and a click marks every frame at which two shapes *meet* (become
  neighbours), which the frames do show;
* :func:`clip_questions`: questions of six kinds, with the modality that can answer each::

      "which way does the circle move ?"          -> left / right / up / down / nowhere   (frames)
      "which shape appears last ?"                -> square / circle / triangle            (frames)
      "how many shapes are there at the end ?"    -> one / two / three                     (frames)
      "do two shapes meet ?"                      -> yes / no                    (frames or clicks)
      "how many beeps are there ?"                -> one / two / three                     (sound)
      "is the second tone higher ?"               -> yes / no                              (sound)

* :func:`clip_caption`: ``"a red square moves left , a blue circle stays and vanishes , then a
  green triangle appears and moves up"``, for VideoBERT-style pre-training (§3.2).

The direction, "appears last" and "at the end" questions cannot be answered from any one
frame, nor from the frames as an unordered set: the model needs to know the order of the
frames (time positions).  The beep questions cannot be answered from the frames at all.

Everything is deterministic per seed, and :func:`make_video_splits` keeps every test clip
out of the training set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mmt_numpy.data.scenes import COLOURS, SHAPES, Scene, patchify, render
from mmt_numpy.data.tokenizer import WORDS, Tokenizer

FRAMES = 8  # frames per clip
GRID = 4  # cells per side of the board
CELL = 8  # pixels per cell: frames are GRID * CELL = 32 pixels square
FPS = 8  # frames per second: a clip lasts FRAMES / FPS = 1 s
SAMPLE_RATE = 4000  # audio samples per second
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 500: a clip's sound track has FRAMES * 500 samples
STEP_EVERY = 2  # a moving shape advances one cell every STEP_EVERY frames
PITCHES = (750.0, 1250.0, 1750.0)  # the beeps' frequencies in Hz, low to high
BEEP_SECONDS = 0.1
NOISE_STD = 0.01  # the faint noise under every sound track
CLICK_SECONDS = 0.01
LIT = 0.1  # a pixel whose channel sum exceeds this is part of a shape (the background is 0)

DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0), "still": (0, 0)}
COUNT_WORDS = ("one", "two", "three")

# Question kinds, and which modality carries the answer of each.
KINDS = ("direction", "appears last", "count at end", "meet", "beeps", "second tone")
MODALITY = {
    "direction": "frames",
    "appears last": "frames",
    "count at end": "frames",
    "meet": "frames or sound",
    "beeps": "sound",
    "second tone": "sound",
}
SOUND_ONLY = ("beeps", "second tone")

VIDEO_ANSWERS = (
    "left",
    "right",
    "up",
    "down",
    "nowhere",
    *SHAPES,
    *COUNT_WORDS,
    "yes",
    "no",
)
# The still scenes' words first, in their order (so an id means the same word in both
# vocabularies: one model can read image questions and video questions), then the new ones.
VIDEO_WORDS = (
    *WORDS,
    "which",
    "way",
    "does",
    "move",
    "moves",
    "right",
    "up",
    "down",
    "nowhere",
    "stays",
    "shape",
    "shapes",
    "appears",
    "vanishes",
    "then",
    "last",
    "how",
    "many",
    "are",
    "there",
    "at",
    "end",
    "do",
    "meet",
    "beeps",
    "second",
    "tone",
    "higher",
    *COUNT_WORDS,
)
VIDEO_TOKENIZER = Tokenizer(VIDEO_WORDS)


@dataclass(frozen=True)
class Track:
    """One shape of a clip: what it is, when it is visible and how it moves.

    The shape is visible in frames ``appear <= t < vanish``; at frame t it is in cell
    ``start + step · ((t − appear) // STEP_EVERY)`` where ``step`` is the unit move of
    ``direction`` (``(0, 0)`` for ``"still"``).
    """

    shape: str
    colour: str
    appear: int
    vanish: int
    start: tuple[int, int]  # (row, col) at frame `appear`
    direction: str

    def cell(self, t: int) -> tuple[int, int] | None:
        """``(row, col)`` at frame t, or None when the shape is not visible then."""
        if not self.appear <= t < self.vanish:
            return None
        dr, dc = DIRECTIONS[self.direction]
        moves = (t - self.appear) // STEP_EVERY
        return self.start[0] + dr * moves, self.start[1] + dc * moves


@dataclass(frozen=True)
class Beep:
    """A tone of ``PITCHES[pitch]`` Hz starting ``onset`` seconds into the clip."""

    onset: float
    pitch: int


@dataclass(frozen=True)
class Clip:
    """A clip's description: its shapes, its beeps (in order of onset) and its size."""

    tracks: tuple[Track, ...]
    beeps: tuple[Beep, ...]
    frames: int = FRAMES
    grid: int = GRID

    def track(self, shape: str) -> Track:
        for t in self.tracks:
            if t.shape == shape:
                return t
        raise KeyError(shape)

    def scene(self, t: int) -> Scene:
        """The still scene of frame t: the shapes visible then, in their cells."""
        objects = []
        for tr in self.tracks:
            cell = tr.cell(t)
            if cell is not None:
                objects.append((tr.shape, tr.colour, *cell))
        return Scene(tuple(sorted(objects)))

    def meetings(self) -> tuple[tuple[int, str, str], ...]:
        """``(frame, shape, shape)`` for every pair that becomes neighbours at that frame.

        Two shapes *meet* at frame t when both are visible at t − 1 and at t, and their cells
        share an edge at t but did not at t − 1.  Each meeting makes a click (:func:`sound_track`).
        """
        out = []
        for t in range(1, self.frames):
            for i, a in enumerate(self.tracks):
                for b in self.tracks[i + 1 :]:
                    before = (a.cell(t - 1), b.cell(t - 1))
                    now = (a.cell(t), b.cell(t))
                    if None in before or None in now:
                        continue
                    if _adjacent(*now) and not _adjacent(*before):
                        out.append((t, a.shape, b.shape))
        return tuple(out)


def _adjacent(p: tuple[int, int], q: tuple[int, int]) -> bool:
    return abs(p[0] - q[0]) + abs(p[1] - q[1]) == 1


def _positive(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _draw_track(
    rng: np.random.Generator, shape: str, colour: str, appear: int, vanish: int, grid: int
) -> Track:
    """A track whose whole path stays on the board."""
    direction = list(DIRECTIONS)[int(rng.integers(len(DIRECTIONS)))]
    dr, dc = DIRECTIONS[direction]
    moves = (vanish - 1 - appear) // STEP_EVERY if direction != "still" else 0
    rows = [r for r in range(grid) if 0 <= r + dr * moves < grid]
    cols = [c for c in range(grid) if 0 <= c + dc * moves < grid]
    start = (int(rng.choice(rows)), int(rng.choice(cols)))
    return Track(shape, colour, appear, vanish, start, direction)


def _collision_free(tracks: Sequence[Track], frames: int) -> bool:
    for t in range(frames):
        cells = [c for c in (tr.cell(t) for tr in tracks) if c is not None]
        if len(set(cells)) != len(cells):
            return False
    return True


def random_clip(
    rng: np.random.Generator, *, frames: int = FRAMES, grid: int = GRID, meet: bool | None = None
) -> Clip:
    """Draw a clip description.

    Two or three distinct shapes with random colours.  Exactly one shape appears late (at a
    frame in ``[1, frames // 2]``), the others are there from frame 0; each shape may vanish
    (probability 0.35) after at least three visible frames, but at least one is left at the
    end.  Each moves in one of four directions or stays still, one cell every
    ``STEP_EVERY`` frames, on a path that stays on the board; no two shapes share a cell.
    Then one to three beeps at random onsets, each of one of three pitches, two in a row
    never of the same pitch.

    Args:
        rng: the generator of every choice.
        frames: frames per clip, at least 6 (so that a late shape can still be seen move).
        grid: cells per side of the board, at least 4 (room for a shape to move three cells).
        meet: if given, draw until the clip has (True) or has no (False) meeting; the
            training sets ask for each half of the time, so "do two shapes meet ?" is balanced.
    """
    frames = _positive("frames", frames, 6)
    grid = _positive("grid", grid, 4)
    colour_names = list(COLOURS)
    while True:
        n = int(rng.integers(2, len(SHAPES) + 1))
        shapes = [SHAPES[i] for i in rng.permutation(len(SHAPES))[:n]]
        late = int(rng.integers(n))
        tracks = []
        for i, shape in enumerate(shapes):
            appear = int(rng.integers(1, frames // 2 + 1)) if i == late else 0
            vanish = frames
            if rng.random() < 0.35 and appear + 3 <= frames - 1:
                vanish = int(rng.integers(appear + 3, frames))  # gone before the last frame
            colour = colour_names[int(rng.integers(len(colour_names)))]
            tracks.append(_draw_track(rng, shape, colour, appear, vanish, grid))
        if all(tr.vanish < frames for tr in tracks) or not _collision_free(tracks, frames):
            continue
        clip = Clip(tuple(tracks), (), frames, grid)
        if meet is None or bool(clip.meetings()) == meet:
            return Clip(clip.tracks, _draw_beeps(rng), frames, grid)


def _draw_beeps(rng: np.random.Generator) -> tuple[Beep, ...]:
    """One to three beeps, onsets at least 0.2 s apart, consecutive pitches different."""
    n = int(rng.integers(1, 4))
    duration = FRAMES / FPS
    while True:
        onsets = np.sort(rng.uniform(0.02, duration - BEEP_SECONDS - 0.02, n))
        if n == 1 or np.min(np.diff(onsets)) >= 0.2:
            break
    pitches = [int(rng.integers(len(PITCHES)))]
    for _ in range(n - 1):
        pitches.append(int(rng.choice([p for p in range(len(PITCHES)) if p != pitches[-1]])))
    return tuple(Beep(float(o), p) for o, p in zip(onsets, pitches, strict=True))


def direction_of(track: Track) -> str:
    """The answer to "which way does the <shape> move ?": the direction, or ``"nowhere"``."""
    return "nowhere" if track.direction == "still" else track.direction


def clip_questions(clip: Clip) -> list[tuple[str, str, str]]:
    """``(question, answer, kind)`` triples about a clip, every answer computed from ``clip``.

    One direction question per shape, then one each of "appears last", "count at end",
    "meet" and "beeps", and "second tone" when there are at least two beeps.
    """
    out = [(f"which way does the {tr.shape} move ?", direction_of(tr), "direction") for tr in clip.tracks]
    last = max(clip.tracks, key=lambda tr: tr.appear)  # unique: exactly one shape appears late
    out.append(("which shape appears last ?", last.shape, "appears last"))
    at_end = sum(tr.vanish == clip.frames for tr in clip.tracks)
    out.append(("how many shapes are there at the end ?", COUNT_WORDS[at_end - 1], "count at end"))
    out.append(("do two shapes meet ?", "yes" if clip.meetings() else "no", "meet"))
    out.append(("how many beeps are there ?", COUNT_WORDS[len(clip.beeps) - 1], "beeps"))
    if len(clip.beeps) >= 2:
        higher = clip.beeps[1].pitch > clip.beeps[0].pitch
        out.append(("is the second tone higher ?", "yes" if higher else "no", "second tone"))
    return out


def clip_caption(clip: Clip) -> str:
    """What happens, shape by shape in order of appearance (what the frames show, not the beeps)."""
    parts = []
    for tr in sorted(clip.tracks, key=lambda tr: (tr.appear, SHAPES.index(tr.shape))):
        motion = "stays" if tr.direction == "still" else f"moves {tr.direction}"
        text = f"a {tr.colour} {tr.shape} " + (f"appears and {motion}" if tr.appear else motion)
        if tr.appear:
            text = "then " + text
        if tr.vanish < clip.frames:
            text += " and vanishes"
        parts.append(text)
    return " , ".join(parts)


def render_clip(clip: Clip, rng: np.random.Generator, cell: int = CELL) -> np.ndarray:
    """The clip as float64 frames ``(T, grid*cell, grid*cell, 3)`` in [0, 1], black background.

    Each shape keeps one size and one colour jitter for the whole clip (drawn once from
    ``rng``), so it looks the same in every frame and only its cell changes.
    """
    size = clip.grid * cell
    frames = np.zeros((clip.frames, size, size, 3))
    for tr in clip.tracks:
        # One cell drawn once (a board of one cell), pasted wherever the shape is: a steady look.
        tile = render(Scene(((tr.shape, tr.colour, 0, 0),)), rng, grid=1, cell=cell)
        for t in range(clip.frames):
            c = tr.cell(t)
            if c is not None:
                frames[t, c[0] * cell : (c[0] + 1) * cell, c[1] * cell : (c[1] + 1) * cell] = tile
    return frames


def sound_track(clip: Clip, rng: np.random.Generator) -> np.ndarray:
    """The clip's audio, float64 ``(frames * SAMPLES_PER_FRAME,)`` at ``SAMPLE_RATE`` Hz.

    * each beep: a sine of its pitch, ``BEEP_SECONDS`` long, under a Hann envelope (amplitude 0.5);
    * each meeting at frame t: a click at ``t / FPS`` s, ``CLICK_SECONDS`` of decaying white
      noise (amplitude 0.8): broadband and short, where a beep is narrowband and long;
    * everywhere: a faint noise floor (standard deviation 0.01), so no bin is exactly silent.
    """
    n = clip.frames * SAMPLES_PER_FRAME
    audio = NOISE_STD * rng.standard_normal(n)
    beep_n = int(BEEP_SECONDS * SAMPLE_RATE)
    envelope = np.hanning(beep_n)
    t = np.arange(beep_n) / SAMPLE_RATE
    for beep in clip.beeps:
        s = int(round(beep.onset * SAMPLE_RATE))
        audio[s : s + beep_n] += 0.5 * envelope * np.sin(2 * np.pi * PITCHES[beep.pitch] * t)
    click_n = int(CLICK_SECONDS * SAMPLE_RATE)
    decay = np.exp(-np.arange(click_n) / (click_n / 4))
    for frame, _, _ in clip.meetings():
        s = frame * SAMPLES_PER_FRAME
        audio[s : s + click_n] += 0.8 * decay * rng.uniform(-1, 1, click_n)
    return audio


# ---------------------------------------------------------------------- arrays and checks


def check_clips(frames: object, audio: object | None = None) -> tuple[int, int]:
    """Check a batch of clips and (optionally) their sound tracks; return ``(C, T)``.

    Args:
        frames: ``(C, T, H, W, 3)`` float frames, C clips of T >= 1 frames.
        audio: ``(C, T * SAMPLES_PER_FRAME)`` float samples, or None.

    Raises:
        TypeError or ValueError naming ``frames`` or ``audio`` with the expected and actual
        shape (a single clip without its batch axis, T = 0, audio of another length ...).
    """
    if not isinstance(frames, np.ndarray) or not np.issubdtype(frames.dtype, np.floating):
        raise TypeError(
            f"frames: expected a float numpy array (C, T, H, W, 3), got "
            f"{getattr(frames, 'dtype', type(frames).__name__)}"
        )
    if frames.ndim != 5 or frames.shape[-1] != 3:
        hint = " (a single clip? add the batch axis: frames[None])" if frames.ndim == 4 else ""
        raise ValueError(f"frames: expected shape (C, T, H, W, 3), got {frames.shape}{hint}")
    C, T = frames.shape[:2]
    if T == 0:
        raise ValueError(f"frames: expected at least one frame per clip (T >= 1), got shape {frames.shape}")
    if audio is not None:
        if not isinstance(audio, np.ndarray) or not np.issubdtype(audio.dtype, np.floating):
            raise TypeError(
                f"audio: expected a float numpy array (C, T * {SAMPLES_PER_FRAME}), got "
                f"{getattr(audio, 'dtype', type(audio).__name__)}"
            )
        expected = (C, T * SAMPLES_PER_FRAME)
        if audio.shape != expected:
            raise ValueError(
                f"audio: expected shape {expected} ({T} frames x {SAMPLES_PER_FRAME} samples per frame "
                f"for each of the {C} clips), got {audio.shape}"
            )
    return C, T


def clip_patches(frames: np.ndarray, patch: int = CELL, *, silhouette: bool = False) -> np.ndarray:
    """``frames (C, T, H, W, 3)`` -> ``(C, T, N, patch*patch*3)``: every frame cut into ViT patches.

    ``N = (H/patch)(W/patch)`` in reading order, as :func:`mmt_numpy.data.patchify` cuts an image.

    With ``silhouette=True`` each pixel gets a fourth, colour-blind channel: 1 where something
    is drawn (channel sum above :data:`LIT`), 0 on the background, so the patches are
    ``(C, T, N, patch*patch*4)``.  A shape's outline is then the same vector whatever its
    colour: from RGB alone a linear patch embedding must untangle shape from colour (a red
    square and a blue circle light different channels), which is what the still-image tasks
    learn last; with it, "which shape" is linearly readable from the first step.
    """
    C, T = check_clips(frames)
    if silhouette:
        lit = (frames.sum(axis=-1, keepdims=True) > LIT).astype(frames.dtype)
        frames = np.concatenate([frames, lit], axis=-1)  # (C, T, H, W, 4)
    flat = patchify(frames.reshape(C * T, *frames.shape[2:]), patch)  # (C*T, N, d)
    return flat.reshape(C, T, *flat.shape[1:])


# ---------------------------------------------------------------------- datasets


@dataclass
class VideoQADataset:
    """Question–clip pairs, one row per question (several questions share a clip).

    Attributes:
        clips: the C clip descriptions.
        frames: ``(C, T, H, W, 3)`` float32 frames.
        audio: ``(C, T * SAMPLES_PER_FRAME)`` float32 sound tracks.
        clip_index: ``(Q,)`` which clip each question is about.
        ids: ``(Q, Lt)`` int64 question token ids (``[CLS]`` first, padded), :data:`VIDEO_TOKENIZER`.
        lengths: ``(Q,)`` int64 real tokens per question.
        answers: ``(Q,)`` int64 index into :data:`VIDEO_ANSWERS`.
        kinds: ``(Q,)`` str, the kind of each question (:data:`KINDS`).
    """

    clips: list[Clip]
    frames: np.ndarray
    audio: np.ndarray
    clip_index: np.ndarray
    ids: np.ndarray
    lengths: np.ndarray
    answers: np.ndarray
    kinds: np.ndarray
    captions: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        C, _ = check_clips(self.frames, self.audio)
        if len(self.clips) != C:
            raise ValueError(
                f"clips: expected {C} descriptions (one per clip of frames), got {len(self.clips)}"
            )
        Q = len(self.ids)
        for name in ("clip_index", "lengths", "answers", "kinds"):
            if len(getattr(self, name)) != Q:
                raise ValueError(
                    f"{name}: expected {Q} entries (one per question), got {len(getattr(self, name))}"
                )
        if Q and (self.clip_index.min() < 0 or self.clip_index.max() >= C):
            raise ValueError(
                f"clip_index: expected values in [0, {C}), "
                f"got {self.clip_index.min()} .. {self.clip_index.max()}"
            )

    def __len__(self) -> int:
        return len(self.ids)

    def patches(self, patch: int = CELL) -> np.ndarray:
        """``(C, T, N, patch*patch*3)``: every clip's patch tokens (one entry a clip, not a question)."""
        return clip_patches(self.frames, patch)

    def questions_of(self, kind: str) -> np.ndarray:
        """``(n,)`` the indices of the questions of one kind."""
        if kind not in KINDS:
            raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
        return np.flatnonzero(self.kinds == kind)


def _distinct_clips(num: int, rng: np.random.Generator, exclude: set[Clip], frames: int) -> list[Clip]:
    clips: list[Clip] = []
    seen = set(exclude)
    while len(clips) < num:
        clip = random_clip(rng, frames=frames, meet=bool(len(clips) % 2))  # alternate: meetings balanced
        if clip not in seen:
            seen.add(clip)
            clips.append(clip)
    return clips


def make_video_dataset(
    clips: Sequence[Clip], rng: np.random.Generator, *, length: int = 10
) -> VideoQADataset:
    """Render, sound and question ``clips``.

    Args:
        clips: C clip descriptions.
        rng: the generator of the rendering jitter and the noise of the sound tracks.
        length: padded question length in tokens, ``[CLS]`` included.
    """
    clips = list(clips)
    if not clips:
        raise ValueError("clips: expected at least one clip, got none")
    size = clips[0].grid * CELL
    frames = np.empty((len(clips), clips[0].frames, size, size, 3), dtype=np.float32)
    audio = np.empty((len(clips), clips[0].frames * SAMPLES_PER_FRAME), dtype=np.float32)
    for i, c in enumerate(clips):
        frames[i] = render_clip(c, rng)
        audio[i] = sound_track(c, rng)
    rows = [(i, q, a, k) for i, c in enumerate(clips) for q, a, k in clip_questions(c)]
    ids, lengths = VIDEO_TOKENIZER.encode([q for _, q, _, _ in rows], length)
    return VideoQADataset(
        clips=clips,
        frames=frames,
        audio=audio,
        clip_index=np.array([i for i, _, _, _ in rows], dtype=np.int64),
        ids=ids,
        lengths=lengths,
        answers=np.array([VIDEO_ANSWERS.index(a) for _, _, a, _ in rows], dtype=np.int64),
        kinds=np.array([k for _, _, _, k in rows]),
        captions=[clip_caption(c) for c in clips],
    )


def make_video_splits(
    num_train_clips: int, num_test_clips: int, seed: int = 0, *, frames: int = FRAMES
) -> tuple[VideoQADataset, VideoQADataset]:
    """Train and test sets over disjoint clips, deterministic per ``seed``.

    Half of each set's clips have a meeting and half do not.  A test clip is never a
    training clip (the same description); since the drawing space is large, almost all test
    clips also differ from every training clip in more than one detail.
    """
    num_train_clips = _positive("num_train_clips", num_train_clips)
    num_test_clips = _positive("num_test_clips", num_test_clips)
    rng = np.random.default_rng(seed)
    train_clips = _distinct_clips(num_train_clips, rng, set(), frames)
    test_clips = _distinct_clips(num_test_clips, rng, set(train_clips), frames)
    return make_video_dataset(train_clips, rng), make_video_dataset(test_clips, rng)
