"""Video question answering with sound (§6.3): ``python -m mmt_numpy train --task video``.

Builds train and test sets over disjoint synthetic clips (:mod:`mmt_numpy.data.video`: 8
frames of 32x32 pixels, a 1 s sound track, six kinds of questions), turns every sound track
into a log-magnitude spectrogram (:func:`audio_features`), trains a
:class:`~mmt_numpy.nn.VideoQAModel` with Adam, prints a line per epoch, and ends with
``test accuracy: X``.  It writes into ``DIR`` (default ``runs/video``):

* ``params.npz``: every parameter by its dotted name (:func:`mmt_numpy.nn.save`);
* ``loss_curve.png``: training loss per step, accuracy per question kind per epoch.

Training is by clip: a minibatch is ``clips_per_batch`` clips with all of their questions
(about seven each), so each clip is encoded once per step however many questions it has.

Options of :func:`main` (the ablations of the README and notebook 11):

* ``time_positions="none"``: the video encoder gets no time position, so the frames are an
  unordered set; the direction, "appears last" and "at the end" questions lose their cue;
* ``sound=False``: a model without the sound modality; the beep questions fall to chance;
* ``silhouette=False``: RGB patches only, without the colour-blind channel of
  :func:`~mmt_numpy.data.video.clip_patches` (then "which shape appears last ?" stayed at
  chance for six epochs of the full run, which was at 0.72 overall after six, against 0.86);
* ``quick=True``: a small configuration that trains in seconds (the tests use it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mmt_numpy import ops
from mmt_numpy.blas import blas_threads
from mmt_numpy.data import video as vdata
from mmt_numpy.nn import save
from mmt_numpy.nn.module import as_float_dtype
from mmt_numpy.nn.video_qa import VideoQAModel
from mmt_numpy.ops.stft import hann_window, log_spectrogram
from mmt_numpy.optim import Adam

DEFAULT_EPOCHS = 12
TRAIN_ACCURACY_CLIPS = 500  # the training accuracy printed each epoch is measured on this many clips

# The spectrogram: 32 ms windows (128 samples at 4 kHz), hop 16 ms, no centre padding:
# (65 bins, 61 frames) per 1 s clip.  The Nyquist bin (2 kHz, silent here) and the last
# frame are dropped so that (64, 5) patches tile it: 12 sound tokens, each the whole
# spectrum (0-2 kHz) of 80 ms, so a beep's pitch is read inside one token.
N_FFT = 128
HOP = 64
SPECTROGRAM = (64, 60)
AUDIO_PATCH = (64, 5)


def noise_floor() -> float:
    """The log magnitude of the tracks' noise floor in one STFT bin: ``log(σ √(Σ w²))``.

    White noise of standard deviation σ gives a windowed DFT coefficient of mean square
    ``σ² Σ_n w[n]²``; with σ = 0.01 and a 128-sample Hann window that is about 0.069, log −2.67.
    """
    window = hann_window(N_FFT)
    return float(np.log(vdata.NOISE_STD * np.sqrt(np.sum(window**2))))


def audio_features(audio: np.ndarray) -> np.ndarray:
    """``audio (C, S)`` -> spectrogram features ``(C, 64, 60)`` in the audio's dtype.

    The log magnitude *above the noise floor*, halved: ``max(log|X| − floor, 0) / 2``, so a
    bin where nothing sounds is 0 and a beep about 2.7.  (Fed the raw log magnitudes, which
    sit near −2.7 everywhere and are offset by a constant, the model needed many epochs
    before it could count beeps at all; relative to the floor it counts them in one.)
    """
    spec = log_spectrogram(audio, N_FFT, HOP, center=False)  # (C, 65, 61)
    bins, frames = SPECTROGRAM
    above = np.maximum(spec[:, :bins, :frames] - noise_floor(), 0.0)
    return (above / 2.0).astype(audio.dtype)


@dataclass
class VideoConfig:
    """Everything that decides a run (the defaults are the command's)."""

    epochs: int = DEFAULT_EPOCHS
    seed: int = 0
    train_clips: int = 3000
    test_clips: int = 500
    clips_per_batch: int = 16
    lr: float = 2e-3
    d_model: int = 32
    num_heads: int = 4
    d_ff: int = 64
    video_layers: int = 2
    audio_layers: int = 1
    text_layers: int = 1
    fusion_layers: int = 2
    attention: str = "divided"
    time_positions: str = "learned"
    sound: bool = True
    fusion: str = "context"
    position_std: float = 0.3
    video_summaries: int = 4
    silhouette: bool = True
    dtype: str = "float32"


QUICK = dict(
    train_clips=120, test_clips=40, d_model=16, num_heads=2, d_ff=32, video_layers=1, fusion_layers=1
)


@dataclass
class VideoResult:
    """What :func:`train_video` returns: the model, its data and the measured curves."""

    model: VideoQAModel
    config: VideoConfig
    train_set: vdata.VideoQADataset
    test_set: vdata.VideoQADataset
    step_losses: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    test_by_kind: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def build_model(config: VideoConfig, dataset: vdata.VideoQADataset) -> VideoQAModel:
    """The model of ``config`` for clips shaped like ``dataset``'s."""
    C, T, H, W, _ = dataset.frames.shape
    return VideoQAModel(
        len(vdata.VIDEO_TOKENIZER),
        len(vdata.VIDEO_ANSWERS),
        patch_dim=vdata.CELL * vdata.CELL * (4 if config.silhouette else 3),
        grid=(H // vdata.CELL, W // vdata.CELL),
        frames=T,
        spectrogram=SPECTROGRAM if config.sound else None,
        audio_patch=AUDIO_PATCH,
        d_model=config.d_model,
        num_heads=config.num_heads,
        d_ff=config.d_ff,
        video_layers=config.video_layers,
        audio_layers=config.audio_layers,
        text_layers=config.text_layers,
        fusion_layers=config.fusion_layers,
        attention=config.attention,
        time_positions=config.time_positions,
        max_len=dataset.ids.shape[1],
        fusion=config.fusion,
        position_std=config.position_std,
        video_summaries=config.video_summaries,
        dtype=as_float_dtype(config.dtype),
        rng=config.seed,
    )


class ClipBatches:
    """The clips of a dataset as model inputs, and minibatches of whole clips with their questions."""

    def __init__(
        self, dataset: vdata.VideoQADataset, dtype: np.dtype, sound: bool, silhouette: bool = True
    ) -> None:
        self.dataset = dataset
        self.dtype = dtype
        self.silhouette = silhouette
        self.spectrograms = audio_features(dataset.audio.astype(dtype)) if sound else None
        order = np.argsort(dataset.clip_index, kind="stable")
        starts = np.searchsorted(dataset.clip_index[order], np.arange(len(dataset.clips) + 1))
        self.questions = [order[starts[c] : starts[c + 1]] for c in range(len(dataset.clips))]

    def inputs(self, clips: np.ndarray) -> tuple[np.ndarray, ...]:
        """``(ids, patches, spectrogram, clip_index, lengths, answers)`` for the questions of ``clips``."""
        rows = np.concatenate([self.questions[c] for c in clips])
        local = np.repeat(np.arange(len(clips)), [len(self.questions[c]) for c in clips])
        d = self.dataset
        patches = vdata.clip_patches(d.frames[clips], silhouette=self.silhouette).astype(
            self.dtype, copy=False
        )
        spectrogram = None if self.spectrograms is None else self.spectrograms[clips]
        return d.ids[rows], patches, spectrogram, local, d.lengths[rows], d.answers[rows]

    def predict(
        self, model: VideoQAModel, clips_per_batch: int = 64, num_clips: int | None = None
    ) -> np.ndarray:
        """``(Q,)`` the arg-max answer of every question of the first ``num_clips`` clips (default:
        all of them); the questions of later clips get -1."""
        C = len(self.dataset.clips) if num_clips is None else min(num_clips, len(self.dataset.clips))
        preds = np.full(len(self.dataset), -1, dtype=np.int64)
        for s in range(0, C, clips_per_batch):
            clips = np.arange(s, min(s + clips_per_batch, C))
            ids, patches, spec, local, lengths, _ = self.inputs(clips)
            rows = np.concatenate([self.questions[c] for c in clips])
            preds[rows] = model(ids, patches, spec, local, lengths).argmax(-1)
        return preds


def accuracy_by_kind(dataset: vdata.VideoQADataset, preds: np.ndarray) -> dict[str, float]:
    """Accuracy over all questions (``"all"``) and over each kind of :data:`~mmt_numpy.data.video.KINDS`."""
    right = preds == dataset.answers
    out = {"all": float(right.mean())}
    for kind in vdata.KINDS:
        idx = dataset.questions_of(kind)
        out[kind] = float(right[idx].mean()) if len(idx) else float("nan")
    return out


def train_video(config: VideoConfig, log: Callable[[str], None] = print) -> VideoResult:
    """Train on the video QA task; log one line per epoch; return the model and its curves."""
    dtype = as_float_dtype(config.dtype)
    train_set, test_set = vdata.make_video_splits(config.train_clips, config.test_clips, config.seed)
    model = build_model(config, train_set)
    optimizer = Adam(model.parameters(), lr=config.lr)
    train_batches = ClipBatches(train_set, dtype, config.sound, config.silhouette)
    test_batches = ClipBatches(test_set, dtype, config.sound, config.silhouette)
    order_rng = np.random.default_rng(config.seed + 1)
    result = VideoResult(model, config, train_set, test_set)
    start = time.perf_counter()
    with blas_threads(1):  # small matrices: one BLAS thread is fastest (mmt_numpy.blas)
        for epoch in range(1, config.epochs + 1):
            order = order_rng.permutation(len(train_set.clips))
            losses = []
            for s in range(0, len(order), config.clips_per_batch):
                ids, patches, spec, local, lengths, answers = train_batches.inputs(
                    order[s : s + config.clips_per_batch]
                )
                logits, cache = model.forward(ids, patches, spec, local, lengths)
                loss, loss_cache = ops.cross_entropy_forward(logits, answers)
                optimizer.zero_grad()
                model.backward(ops.cross_entropy_backward(1.0, loss_cache), cache)
                optimizer.step()
                losses.append(float(loss))
            result.step_losses.extend(losses)
            # on the first TRAIN_ACCURACY_CLIPS training clips: a fair sample (the clips are drawn
            # at random), where a forward pass over all 3000 would add much to every epoch
            preds = train_batches.predict(model, num_clips=TRAIN_ACCURACY_CLIPS)
            seen = preds >= 0
            train_acc = float(np.mean(preds[seen] == train_set.answers[seen]))
            test_kinds = accuracy_by_kind(test_set, test_batches.predict(model))
            result.train_accuracy.append(train_acc)
            result.test_accuracy.append(test_kinds["all"])
            result.test_by_kind.append(test_kinds)
            kinds = " ".join(f"{test_kinds[k]:.2f}" for k in vdata.KINDS)
            log(
                f"epoch {epoch:>3}  loss {np.mean(losses):.4f}  train accuracy {train_acc:.4f} (of "
                f"{min(TRAIN_ACCURACY_CLIPS, len(train_set.clips))} clips)  "
                f"test accuracy {test_kinds['all']:.4f}  by kind [{kinds}]  "
                f"time {time.perf_counter() - start:.1f}s"
            )
    result.seconds = time.perf_counter() - start
    return result


def apply_options(config: object, quick: dict, epochs: int | None, options: dict, task: str) -> None:
    """Set a task config's fields in place: ``quick=True``'s small sizes first, then each option by
    name, then ``epochs``; an unknown name, a value of the wrong type or a size below 1 is a
    ValueError naming it (raised before the task trains or writes anything)."""
    if options.pop("quick", False):
        for k, v in quick.items():
            setattr(config, k, v)
    fields = asdict(config)
    for k, v in options.items():
        if k not in fields:
            raise ValueError(
                f"{k}: not an option of the {task} task; expected one of quick, {', '.join(fields)}"
            )
        if type(v) is not type(fields[k]) and not (isinstance(fields[k], float) and isinstance(v, int)):
            raise ValueError(f"{k}: expected a {type(fields[k]).__name__}, got {v!r}")
        setattr(config, k, v)
    if epochs is not None:
        config.epochs = epochs
    for k, v in asdict(config).items():
        if isinstance(v, int) and not isinstance(v, bool) and k != "seed" and v < 1:
            raise ValueError(f"{k}: expected a positive integer, got {v}")


def make_config(epochs: int | None = None, seed: int = 0, **options: object) -> VideoConfig:
    """The run's :class:`VideoConfig`: the defaults, then ``quick=True``'s small sizes, then the
    other options by name (see :func:`apply_options`)."""
    config = VideoConfig(seed=seed)
    apply_options(config, QUICK, epochs, options, "video")
    if config.time_positions not in ("learned", "sinusoidal", "none"):
        raise ValueError(
            f"time_positions: expected learned, sinusoidal or none, got {config.time_positions!r}"
        )
    if config.attention not in ("divided", "joint") or config.fusion not in ("context", "joint"):
        raise ValueError(
            "attention, fusion: expected divided/joint and context/joint, "
            f"got {config.attention!r}, {config.fusion!r}"
        )
    return config


def silenced_accuracy(result: VideoResult) -> dict[str, float]:
    """Test accuracy per kind with every sound track replaced by silence (features all 0: nothing
    above the noise floor), for a model trained with sound; an evaluation, not a retraining."""
    batches = ClipBatches(result.test_set, result.model.dtype, True, result.config.silhouette)
    batches.spectrograms = np.zeros_like(batches.spectrograms)
    return accuracy_by_kind(result.test_set, batches.predict(result.model))


def save_artifacts(result: VideoResult, out: Path) -> list[Path]:
    """``params.npz`` and ``loss_curve.png`` (loss per step, test accuracy per kind per epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    out.mkdir(parents=True, exist_ok=True)
    written = [out / "params.npz", out / "loss_curve.png"]
    save(result.model, written[0])
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(result.step_losses, lw=0.6)
    ax_loss.set(
        xlabel="step (minibatch of clips)", ylabel="cross-entropy", title="training loss", yscale="log"
    )
    epochs = np.arange(1, len(result.test_by_kind) + 1)
    for kind in vdata.KINDS:
        ax_acc.plot(epochs, [r[kind] for r in result.test_by_kind], "o-", ms=3, label=kind)
    ax_acc.plot(epochs, result.test_accuracy, "k-", lw=2, label="all questions")
    ax_acc.set(
        xlabel="epoch", ylabel="test accuracy", title="test accuracy per question kind", ylim=(0, 1.02)
    )
    ax_acc.legend(fontsize=7)
    fig.savefig(written[1], dpi=110)
    return written


def main(
    out: str = "runs/video",
    epochs: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
    **options: object,
) -> float:
    """The ``train --task video`` command: train, report per kind, save.  Returns the test accuracy.

    ``options`` are :class:`VideoConfig` fields (``time_positions="none"``, ``sound=False`` ...) and
    ``quick=True``; all are checked before anything is trained or written.
    """
    config = make_config(epochs, seed, **options)
    log("config: " + ", ".join(f"{k}={v}" for k, v in asdict(config).items()))
    result = train_video(config, log)
    for kind, acc in result.test_by_kind[-1].items():
        if kind != "all":
            log(f"  {kind:<14} ({vdata.MODALITY[kind]:<15}) test accuracy {acc:.4f}")
    if config.sound:
        silent = silenced_accuracy(result)
        log(
            "with the sound tracks silenced at test time: "
            + ", ".join(f"{kind} {silent[kind]:.4f}" for kind in vdata.KINDS)
        )
    for path in save_artifacts(result, Path(out)):
        log(f"wrote {path}")
    log(f"trained in {result.seconds:.1f}s")
    log(f"test accuracy: {result.test_accuracy[-1]:.4f}")
    return result.test_accuracy[-1]
