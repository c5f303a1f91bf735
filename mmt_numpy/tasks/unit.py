"""``train --task unit``: one UniT (§3.2) trained on three tasks at once.

``python -m mmt_numpy train --task unit [--out DIR] [--epochs N] [--seed S] [--quick]`` trains a
single :class:`~mmt_numpy.nn.unit.UniT` on

* ``vqa``: the toy visual question answering of §6.1 (a 3 x 3 board, "what colour is the
  square ?", "is the circle left of the triangle ?"; 6 answers), over image patches;
* ``video_qa``: questions about the moving-shape clips of §6.3 that the frames answer
  (direction, which shape appears last, how many at the end, do two shapes meet; the beep
  questions need the sound track, a modality this UniT does not have, so they are left out),
  over clip patches;
* ``itm``: image–text matching, "does this caption describe this picture ?"
  (:mod:`mmt_numpy.data.matching`), over the image patches of the VQA scenes.

Each step is one task's minibatch, the tasks taking turns (``schedule="round-robin"``), or
one minibatch of every task with their losses summed (``schedule="mixed"``).  The parameters
are updated by one Adam per :meth:`~mmt_numpy.nn.unit.UniT.parameter_groups` group, each
stepping only when its group received a gradient, so a head is never moved by the
momentum of steps that were not its task's.  After every epoch (``steps_per_epoch`` turns
of every task) the test accuracy of each task is printed; the command ends with one line
``<task> test accuracy: X`` per task.  It writes ``params.npz`` and ``loss_curve.png`` into
``DIR`` (default ``runs/unit``).

The same function trains a single-task model (``tasks=("vqa",)``): the same sizes, the same
steps of that task; ``benchmarks/unit_vs_single.py`` compares the two.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mmt_numpy import data
from mmt_numpy.blas import blas_threads
from mmt_numpy.data import video as vdata
from mmt_numpy.data.matching import MATCH_KINDS, MatchingSet, make_matching_set
from mmt_numpy.nn import save
from mmt_numpy.nn.module import as_float_dtype
from mmt_numpy.nn.unit import TaskBatch, UniT
from mmt_numpy.optim import Adam
from mmt_numpy.tasks.video import apply_options
from mmt_numpy.validate import non_negative_int

DEFAULT_EPOCHS = 25
TASK_NAMES = ("vqa", "video_qa", "itm")
SCHEDULES = ("round-robin", "mixed")
FRAME_KINDS = tuple(k for k in vdata.KINDS if k not in vdata.SOUND_ONLY)  # what the frames answer
MAX_TEXT = 12  # tokens: the longest caption with [CLS] (questions are shorter)


@dataclass
class UniTConfig:
    """Everything that decides a run (the defaults are the command's).

    ``tasks`` is a comma-separated subset of :data:`TASK_NAMES` (one name: a single-task model).
    ``queries_read_text=False`` gives the decoder the task queries alone, as the UniT paper
    (:class:`~mmt_numpy.nn.unit.UniT`).
    """

    epochs: int = DEFAULT_EPOCHS
    seed: int = 0
    tasks: str = ",".join(TASK_NAMES)
    schedule: str = "round-robin"
    steps_per_epoch: int = 60
    train_scenes: int = 2000
    test_scenes: int = 400
    train_clips: int = 1200
    test_clips: int = 300
    batch_size: int = 64
    clips_per_batch: int = 8
    lr: float = 2e-3
    d_model: int = 32
    num_heads: int = 4
    d_ff: int = 64
    encoder_layers: int = 1
    decoder_layers: int = 2
    num_queries: int = 4
    queries_read_text: bool = True
    dtype: str = "float32"

    def task_list(self) -> tuple[str, ...]:
        names = tuple(t.strip() for t in self.tasks.split(","))
        unknown = [t for t in names if t not in TASK_NAMES]
        if unknown or not names or len(set(names)) != len(names):
            raise ValueError(
                f"tasks: expected distinct names among {', '.join(TASK_NAMES)}, comma-separated, "
                f"got {self.tasks!r}"
            )
        return names


QUICK = dict(
    steps_per_epoch=4, train_scenes=80, test_scenes=30, train_clips=24, test_clips=12, batch_size=16,
    clips_per_batch=4, d_model=16, num_heads=2, d_ff=32, decoder_layers=1, num_queries=2, epochs=3,
)  # fmt: skip


def make_config(epochs: int | None = None, seed: int = 0, **options: object) -> UniTConfig:
    """The run's :class:`UniTConfig`: the defaults, ``quick=True``'s small sizes, then the options
    by name (:func:`mmt_numpy.tasks.video.apply_options`); every value checked here."""
    config = UniTConfig(seed=non_negative_int("seed", seed))
    apply_options(config, QUICK, epochs, options, "unit")
    config.task_list()
    if config.schedule not in SCHEDULES:
        raise ValueError(f"schedule: expected one of {', '.join(SCHEDULES)}, got {config.schedule!r}")
    as_float_dtype(config.dtype)
    return config


class ImageRows:
    """Rows of texts about images (VQA questions or captions to match), batched with each image once."""

    def __init__(self, images: np.ndarray, image_index: np.ndarray, ids, lengths, targets) -> None:
        self.images, self.image_index = images, image_index  # (S, P, patch_dim), (N,)
        self.ids, self.lengths, self.targets = ids, lengths, targets

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, rows: np.ndarray) -> TaskBatch:
        """The rows ``rows`` with the distinct images they ask about, each once."""
        used, local = np.unique(self.image_index[rows], return_inverse=True)
        return TaskBatch(self.ids[rows], self.images[used], self.targets[rows], self.lengths[rows], local)

    def batches(self, size: int) -> Iterator[tuple[np.ndarray, TaskBatch]]:
        for s in range(0, len(self), size):
            rows = np.arange(s, min(s + size, len(self)))
            yield rows, self.batch(rows)


class ClipRows:
    """Questions about clips, batched by clip: a clip and all its questions go together."""

    def __init__(self, dataset: vdata.VideoQADataset, dtype: np.dtype) -> None:
        keep = np.isin(dataset.kinds, FRAME_KINDS)
        self.rows = np.flatnonzero(keep)  # the frame questions, in the dataset's order
        self.dataset, self.dtype = dataset, dtype
        self.patches = dataset.patches().astype(dtype)  # (C, T, N, patch_dim)
        self.questions = [self.rows[dataset.clip_index[self.rows] == c] for c in range(len(dataset.clips))]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def num_clips(self) -> int:
        return len(self.dataset.clips)

    def batch(self, clips: np.ndarray) -> tuple[np.ndarray, TaskBatch]:
        """Dataset rows and the batch of every frame question about ``clips``."""
        rows = np.concatenate([self.questions[c] for c in clips])
        local = np.repeat(np.arange(len(clips)), [len(self.questions[c]) for c in clips])
        d = self.dataset
        return rows, TaskBatch(d.ids[rows], self.patches[clips], d.answers[rows], d.lengths[rows], local)

    def batches(self, clips_per_batch: int) -> Iterator[tuple[np.ndarray, TaskBatch]]:
        for s in range(0, self.num_clips, clips_per_batch):
            yield self.batch(np.arange(s, min(s + clips_per_batch, self.num_clips)))


@dataclass
class UniTData:
    """The train and test sets of every task, as model inputs."""

    train: dict[str, ImageRows | ClipRows]
    test: dict[str, ImageRows | ClipRows]
    vqa_test: data.VQADataset | None = None
    itm_test: MatchingSet | None = None
    video_test: vdata.VideoQADataset | None = None


def load_data(config: UniTConfig) -> UniTData:
    """Make the data of ``config``'s tasks (deterministic per seed)."""
    dtype = as_float_dtype(config.dtype)
    tasks = config.task_list()
    train: dict = {}
    test: dict = {}
    out = UniTData(train, test)
    if "vqa" in tasks or "itm" in tasks:
        vqa_train, vqa_test = data.make_vqa_splits(config.train_scenes, config.test_scenes, config.seed)
        images = {"train": vqa_train.image_patches(dtype), "test": vqa_test.image_patches(dtype)}
        if "vqa" in tasks:
            for split, d, into in (("train", vqa_train, train), ("test", vqa_test, test)):
                into["vqa"] = ImageRows(images[split], d.image_index, d.ids, d.lengths, d.answers)
            out.vqa_test = vqa_test
        if "itm" in tasks:
            rng = np.random.default_rng(config.seed + 7)
            for split, d, into in (("train", vqa_train, train), ("test", vqa_test, test)):
                m = make_matching_set(d.scenes, rng)
                into["itm"] = ImageRows(images[split], m.image_index, m.ids, m.lengths, m.labels)
                if split == "test":
                    out.itm_test = m
    if "video_qa" in tasks:
        clips_train, clips_test = vdata.make_video_splits(config.train_clips, config.test_clips, config.seed)
        train["video_qa"] = ClipRows(clips_train, dtype)
        test["video_qa"] = ClipRows(clips_test, dtype)
        out.video_test = clips_test
    return out


def build_model(config: UniTConfig) -> UniT:
    """The (seeded) UniT of ``config``'s tasks and sizes."""
    specs = {
        "vqa": ("image", len(data.ANSWERS)),
        "video_qa": ("video", len(vdata.VIDEO_ANSWERS)),
        "itm": ("image", 2),
    }
    tasks = {t: specs[t] for t in config.task_list()}
    cell = vdata.CELL
    return UniT(
        tasks,
        len(vdata.VIDEO_TOKENIZER),  # the still scenes' words first: one vocabulary for every task
        MAX_TEXT,
        image_patch_dim=cell * cell * 3,
        image_grid=(3, 3),
        video_patch_dim=cell * cell * 3,
        video_grid=(vdata.GRID, vdata.GRID),
        max_frames=vdata.FRAMES,
        d_model=config.d_model,
        num_heads=config.num_heads,
        d_ff=config.d_ff,
        encoder_layers=config.encoder_layers,
        decoder_layers=config.decoder_layers,
        num_queries=config.num_queries,
        queries_read_text=config.queries_read_text,
        dtype=as_float_dtype(config.dtype),
        rng=config.seed,
    )


def predict(model: UniT, task: str, rows: ImageRows | ClipRows) -> tuple[np.ndarray, np.ndarray]:
    """``(predictions, targets)`` over every row of a test set, in the set's order."""
    size = 8 if isinstance(rows, ClipRows) else 256
    preds, targets = [], []
    for _, batch in rows.batches(size):
        preds.append(model.predict(batch, task))
        targets.append(batch.targets)
    return np.concatenate(preds), np.concatenate(targets)


def accuracy(model: UniT, task: str, rows: ImageRows | ClipRows) -> float:
    preds, targets = predict(model, task, rows)
    return float(np.mean(preds == targets))


class Sampler:
    """Endless minibatches of one task's training set: a fresh seeded permutation each pass."""

    def __init__(self, rows: ImageRows | ClipRows, config: UniTConfig, rng: np.random.Generator) -> None:
        self.rows, self.rng = rows, rng
        self.clips = isinstance(rows, ClipRows)
        self.size = config.clips_per_batch if self.clips else config.batch_size
        self.order = np.empty(0, dtype=np.int64)

    def next(self) -> TaskBatch:
        if len(self.order) < self.size:
            self.order = self.rng.permutation(self.rows.num_clips if self.clips else len(self.rows))
        picked, self.order = self.order[: self.size], self.order[self.size :]
        return self.rows.batch(picked)[1] if self.clips else self.rows.batch(picked)


@dataclass
class UniTResult:
    """What :func:`train_unit` returns: the model, its data and the measured curves."""

    model: UniT
    config: UniTConfig
    data: UniTData
    step_losses: dict[str, list[float]] = field(default_factory=dict)
    test_accuracy: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0


def train_unit(config: UniTConfig, log: Callable[[str], None] = print) -> UniTResult:
    """Train ``config``'s tasks with one set of weights; log each epoch's test accuracy per task."""
    tasks = config.task_list()
    sets = load_data(config)
    model = build_model(config)
    groups = model.parameter_groups()
    optimizers = {name: Adam(params, lr=config.lr) for name, params in groups.items()}
    rng = np.random.default_rng(config.seed + 1)
    samplers = {t: Sampler(sets.train[t], config, rng) for t in tasks}
    result = UniTResult(model, config, sets, {t: [] for t in tasks}, {t: [] for t in tasks})
    steps = [(t,) for t in tasks] if config.schedule == "round-robin" else [tasks]
    start = time.perf_counter()
    with blas_threads(1):
        for epoch in range(1, config.epochs + 1):
            for _ in range(config.steps_per_epoch):
                for step_tasks in steps:
                    model.zero_grad()
                    losses = model.loss_backward({t: samplers[t].next() for t in step_tasks})
                    touched = {g for t in step_tasks for g in model.groups_of(t)}
                    for name in touched:  # only the groups this step reached
                        optimizers[name].step()
                    for t, loss in losses.items():
                        result.step_losses[t].append(loss)
            parts = []
            for t in tasks:
                acc = accuracy(model, t, sets.test[t])
                result.test_accuracy[t].append(acc)
                parts.append(f"{t} {acc:.4f}")
            log(
                f"epoch {epoch:>3}  test accuracy: {'  '.join(parts)}  "
                f"time {time.perf_counter() - start:.1f}s"
            )
    result.seconds = time.perf_counter() - start
    return result


def accuracy_by_kind(result: UniTResult) -> dict[str, dict[str, tuple[float, int]]]:
    """Per task, test accuracy per kind of row: ``{task: {kind: (accuracy, rows)}}``.

    vqa: colour / left of; video_qa: the frame kinds; itm: match / other scene /
    colour changed.
    """
    model, sets, out = result.model, result.data, {}
    for task, rows in sets.test.items():
        preds, targets = predict(model, task, rows)
        right = preds == targets
        if task == "vqa":
            # a yes/no answer is a "left of" question here (the toy scenes ask no other yes/no)
            kinds = np.array(
                ["left of" if data.question_type(data.ANSWERS[a]) == "yes/no" else "colour" for a in targets]
            )
            names = ("colour", "left of")
        elif task == "itm":
            kinds, names = sets.itm_test.kinds, MATCH_KINDS
        else:
            kinds, names = sets.video_test.kinds[rows.rows], FRAME_KINDS
        out[task] = {
            k: (float(right[kinds == k].mean()), int((kinds == k).sum())) for k in names if (kinds == k).any()
        }
    return out


def save_artifacts(result: UniTResult, out: Path) -> list[Path]:
    """``params.npz`` and ``loss_curve.png`` (each task's loss per step, test accuracy per epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    out.mkdir(parents=True, exist_ok=True)
    written = [out / "params.npz", out / "loss_curve.png"]
    save(result.model, written[0])
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for task, losses in result.step_losses.items():
        ax_loss.plot(losses, lw=0.6, label=task)
    ax_loss.set(
        xlabel="step of that task", ylabel="cross-entropy", title="training loss per task", yscale="log"
    )
    ax_loss.legend(fontsize=8)
    for task, acc in result.test_accuracy.items():
        ax_acc.plot(np.arange(1, len(acc) + 1), acc, "o-", ms=3, label=task)
    ax_acc.set(
        xlabel="epoch", ylabel="test accuracy", title="one set of weights, three tasks", ylim=(0, 1.02)
    )
    ax_acc.legend(fontsize=8)
    fig.savefig(written[1], dpi=110)
    return written


def main(
    out: str = "runs/unit",
    epochs: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
    **options: object,
) -> dict[str, float]:
    """The ``train --task unit`` command: train, report per task and per kind, save.

    ``options`` are :class:`UniTConfig` fields and ``quick=True``, all checked before anything
    is trained or written.  Returns ``{task: final test accuracy}``.
    """
    config = make_config(epochs, seed, **options)
    log("config: " + ", ".join(f"{k}={v}" for k, v in asdict(config).items()))
    result = train_unit(config, log)
    log(f"{result.model.num_parameters()} parameters, shared by {len(config.task_list())} tasks")
    for task, kinds in accuracy_by_kind(result).items():
        log(f"  {task}: " + ", ".join(f"{k} {acc:.4f} ({n})" for k, (acc, n) in kinds.items()))
    for path in save_artifacts(result, Path(out)):
        log(f"wrote {path}")
    log(f"trained in {result.seconds:.1f}s")
    final = {t: acc[-1] for t, acc in result.test_accuracy.items()}
    for task, acc in final.items():
        log(f"{task} test accuracy: {acc:.4f}")
    return final
