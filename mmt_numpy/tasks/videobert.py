"""VideoBERT at toy scale (§3.2): ``python -m mmt_numpy train --task videobert``.

The recipe of Sun et al. (2019), each step small enough to read:

1. **features**: every frame of every clip becomes a colour histogram (8 numbers,
   :func:`frame_features`); a fixed feature extractor, as VideoBERT's was a network trained
   beforehand;
2. **visual words**: k-means (k-means++ seeding, :mod:`mmt_numpy.kmeans`) over the training
   frames' features; a frame's word is its nearest centroid, so a clip reads as 8 words;
3. **pre-training**: one BERT encoder (:class:`~mmt_numpy.nn.VideoBERT`) over
   ``[CLS] caption [SEP] w_1 … w_8``, with masked-token prediction on both the caption's
   words and the visual words (in half of the sequences every visual word is masked, so the
   model must also learn to predict the video from the text alone), plus the contrastive
   loss of §2.2 between the ``[CLS]`` of the caption read alone and of the words read alone;
4. **measured** on unseen clips: the masked visual words predicted from the caption alone,
   against the majority-class rate (always guessing the most frequent word), and
   clip–caption retrieval, recall@1 and @5 among all test clips.

Prints a line per epoch and ends with ``test accuracy: X``, the accuracy of the visual words
predicted from the text.  Writes ``params.npz`` and ``centroids.npy`` into ``DIR`` (default
``runs/videobert``).
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
from mmt_numpy.data.tokenizer import CLS_ID, IGNORE_INDEX, MASK_ID, PAD_ID, SEP_ID, mask_tokens
from mmt_numpy.kmeans import KMeansResult, assign, kmeans
from mmt_numpy.nn import save
from mmt_numpy.nn.module import as_float_dtype
from mmt_numpy.nn.videobert import TEXT, VIDEO, VideoBERT, VideoBERTPretraining
from mmt_numpy.optim import Adam
from mmt_numpy.tasks.video import apply_options

DEFAULT_EPOCHS = 12


@dataclass
class VideoBERTConfig:
    """Everything that decides a run (the defaults are the command's)."""

    epochs: int = DEFAULT_EPOCHS
    seed: int = 0
    train_clips: int = 3000
    test_clips: int = 300
    visual_words: int = 16
    batch_size: int = 64
    lr: float = 2e-3
    d_model: int = 32
    num_heads: int = 4
    d_ff: int = 64
    num_layers: int = 2
    temperature: float = 0.1
    dtype: str = "float32"


QUICK = dict(train_clips=200, test_clips=60, d_model=16, num_heads=2, d_ff=32, num_layers=1)


def frame_features(frames: np.ndarray) -> np.ndarray:
    """``frames (C, T, H, W, 3)`` -> ``(C, T, 8)``: each frame's colour histogram, black left out.

    Every pixel that is not background (channel sum above 0.1) falls in one of 2³ bins by
    whether each of its red, green and blue values is above one half; the histogram is the
    share of the frame's pixels in each bin.  A classical hand-made video feature: it says
    how much of each colour a frame shows (two red shapes make twice the red, a square more
    than a triangle), and nothing of where.
    """
    C, T = vdata.check_clips(frames)
    pixels = frames.reshape(C, T, -1, 3)
    lit = pixels.sum(axis=-1) > 0.1
    bins = ((pixels > 0.5) * np.array([4, 2, 1])).sum(axis=-1)  # (C, T, P) in [0, 8)
    one_hot = (bins[..., None] == np.arange(8)) & lit[..., None]
    return one_hot.mean(axis=2, dtype=np.float64)  # (C, T, 8)


@dataclass
class VideoBERTData:
    """Captions and visual words of a set of C clips, and the sequences the model reads.

    Attributes:
        words: ``(C, T)`` each frame's visual word, in ``[0, k)``.
        caption_ids, caption_lengths: ``(C, Lc)`` ``[CLS] caption`` (padded) and ``(C,)``.
        joint_ids, joint_modality, joint_lengths: ``(C, Lc + 1 + T)`` ``[CLS] caption [SEP]
            w_1 … w_T`` in the joint vocabulary (word w is ``text_vocab + w``), padding after the
            words, so every row is one run of real tokens; modality 0 text, 1 video; ``(C,)``.
        video_ids, video_modality: ``(C, T + 1)`` ``[CLS] w_1 … w_T`` and ``(T + 1,)``.
    """

    words: np.ndarray
    caption_ids: np.ndarray
    caption_lengths: np.ndarray
    joint_ids: np.ndarray
    joint_modality: np.ndarray
    joint_lengths: np.ndarray
    video_ids: np.ndarray
    video_modality: np.ndarray


def make_data(
    dataset: vdata.VideoQADataset, centroids: np.ndarray, caption_length: int, text_vocab: int
) -> VideoBERTData:
    """The visual words (nearest centroid of each frame) and the sequences of ``dataset``'s clips."""
    features = frame_features(dataset.frames)
    C, T, F = features.shape
    words, _ = assign(features.reshape(C * T, F), centroids)
    words = words.reshape(C, T)
    caption_ids, caption_lengths = vdata.VIDEO_TOKENIZER.encode(dataset.captions, caption_length)
    Lc = caption_ids.shape[1]
    L = Lc + 1 + T
    ids = np.full((C, L), PAD_ID, dtype=np.int64)
    modality = np.full((C, L), TEXT, dtype=np.int64)
    cols = np.arange(L)[None, :]
    n = caption_lengths[:, None]
    ids[:, :Lc] = caption_ids
    ids[cols == n] = SEP_ID
    word_cols = (cols > n) & (cols <= n + T)
    ids[word_cols] = (words + text_vocab).reshape(-1)  # row by row, in order
    modality[word_cols] = VIDEO
    video_ids = np.concatenate([np.full((C, 1), CLS_ID), words + text_vocab], axis=1)
    video_modality = np.array([TEXT] + [VIDEO] * T)
    return VideoBERTData(
        words, caption_ids, caption_lengths, ids, modality, caption_lengths + 1 + T, video_ids, video_modality
    )


@dataclass
class VideoBERTResult:
    """What :func:`train_videobert` returns: the model, the clustering, the data and the figures."""

    model: VideoBERT
    clusters: KMeansResult
    train: VideoBERTData
    test: VideoBERTData
    step_losses: list[float] = field(default_factory=list)
    word_accuracy: list[float] = field(default_factory=list)  # visual words from the caption alone, per epoch
    majority_rate: float = 0.0
    recall: list[dict[str, float]] = field(default_factory=list)  # retrieval per epoch
    seconds: float = 0.0


def mask_visual_words(
    ids: np.ndarray, modality: np.ndarray, rng: np.random.Generator, prob: float = 0.15, all_prob: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Mask visual words: in a share ``all_prob`` of the rows every one, elsewhere each with ``prob``.

    Returns ``(corrupted ids, targets)`` with ``IGNORE_INDEX`` where nothing is predicted.
    A masked visual word becomes ``[MASK]`` (the text's mask token: one mask for both).
    """
    is_word = modality == VIDEO
    every = rng.random((ids.shape[0], 1)) < all_prob
    chosen = is_word & (every | (rng.random(ids.shape) < prob))
    return np.where(chosen, MASK_ID, ids), np.where(chosen, ids, IGNORE_INDEX)


def word_predictions(model: VideoBERT, data: VideoBERTData, batch: int = 256) -> np.ndarray:
    """``(C, T)`` every visual word predicted from the caption alone (all words masked).

    The arg-max is taken over the k visual words only: the position is known to be video.
    """
    ids = np.where(data.joint_modality == VIDEO, MASK_ID, data.joint_ids)
    modality, lengths = data.joint_modality, data.joint_lengths
    out = []
    for s in range(0, len(ids), batch):
        h = model(ids[s : s + batch], modality[s : s + batch], lengths[s : s + batch])
        logits = model.mlm_head(h)[..., model.text_vocab :]  # (b, L, k)
        picked = logits[modality[s : s + batch] == VIDEO].argmax(-1)
        out.append(picked.reshape(-1, data.words.shape[1]))
    return np.concatenate(out)


def embeddings(model: VideoBERT, data: VideoBERTData, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """``(text (C, E), video (C, E))``: the projected ``[CLS]`` of each caption and of each clip's words."""
    video_ids, video_modality = data.video_ids, data.video_modality
    texts, videos = [], []
    for s in range(0, len(video_ids), batch):
        part = slice(s, s + batch)
        h_text = model(data.caption_ids[part], TEXT, data.caption_lengths[part])
        texts.append(model.text_projection(h_text[:, 0]))
        videos.append(model.video_projection(model(video_ids[part], video_modality)[:, 0]))
    return np.concatenate(texts), np.concatenate(videos)


def retrieval_recall(text: np.ndarray, video: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Recall@k both ways: the share of captions whose clip ranks among the k best, and the reverse.

    ``text (C, E)`` and ``video (C, E)`` row n belong together; chance recall@k is k / C.
    """
    scores = ops.info_nce_logits(text.astype(np.float64), video.astype(np.float64))  # (C, C), row = caption
    out = {}
    for direction, s in (("text->video", scores), ("video->text", scores.T)):
        # rank of the right partner: how many candidates score strictly higher
        rank = (s > np.diag(s)[:, None]).sum(axis=1)
        for k in ks:
            out[f"{direction} R@{k}"] = float(np.mean(rank < k))
    return out


def train_videobert(config: VideoBERTConfig, log: Callable[[str], None] = print) -> VideoBERTResult:
    """Visual words, then masked-token + contrastive pre-training; log a line per epoch."""
    dtype = as_float_dtype(config.dtype)
    train_set, test_set = vdata.make_video_splits(config.train_clips, config.test_clips, config.seed)
    features = frame_features(train_set.frames)
    clusters = kmeans(features.reshape(-1, features.shape[-1]), config.visual_words, seed=config.seed)
    caption_length = 2 + max(len(c.split()) for c in train_set.captions + test_set.captions)
    text_vocab = len(vdata.VIDEO_TOKENIZER)
    train = make_data(train_set, clusters.centroids, caption_length, text_vocab)
    test = make_data(test_set, clusters.centroids, caption_length, text_vocab)
    counts = np.bincount(train.words.reshape(-1), minlength=config.visual_words)
    majority_rate = float(np.mean(test.words == counts.argmax()))
    log(
        f"k-means: k={config.visual_words} visual words from {features.shape[0] * features.shape[1]} frames, "
        f"{clusters.iterations} iterations; most frequent word {counts.argmax()} "
        f"({counts.max() / counts.sum():.3f} of training frames, {majority_rate:.3f} of test frames)"
    )
    model = VideoBERT(
        text_vocab,
        config.visual_words,
        d_model=config.d_model,
        num_heads=config.num_heads,
        d_ff=config.d_ff,
        num_layers=config.num_layers,
        max_len=caption_length + 1 + train.words.shape[1],
        dtype=dtype,
        rng=config.seed,
    )
    optimizer = Adam(model.parameters(), lr=config.lr)
    rng = np.random.default_rng(config.seed + 1)
    result = VideoBERTResult(model, clusters, train, test, majority_rate=majority_rate)
    objective = VideoBERTPretraining(model, config.temperature)
    start = time.perf_counter()
    with blas_threads(1):
        for epoch in range(1, config.epochs + 1):
            order = rng.permutation(len(train.words))
            losses = [
                _step(objective, optimizer, rng, train, order[s : s + config.batch_size])
                for s in range(0, len(order), config.batch_size)
            ]
            result.step_losses.extend(losses)
            accuracy = float(np.mean(word_predictions(model, test) == test.words))
            recall = retrieval_recall(*embeddings(model, test))
            result.word_accuracy.append(accuracy)
            result.recall.append(recall)
            log(
                f"epoch {epoch:>3}  loss {np.mean(losses):.4f}  visual words from text {accuracy:.4f} "
                f"({accuracy / majority_rate:.1f}x majority)  retrieval text->video R@1 "
                f"{recall['text->video R@1']:.3f} R@5 {recall['text->video R@5']:.3f}  "
                f"time {time.perf_counter() - start:.1f}s"
            )
    result.seconds = time.perf_counter() - start
    return result


def _step(
    objective: VideoBERTPretraining,
    optimizer: Adam,
    rng: np.random.Generator,
    data: VideoBERTData,
    idx: np.ndarray,
) -> float:
    """One Adam step on masked-token prediction (caption words and visual words) plus InfoNCE."""
    model = objective.model
    ids, modality, lengths = data.joint_ids[idx], data.joint_modality[idx], data.joint_lengths[idx]
    # caption words masked by BERT's recipe, visual words by mask_visual_words
    text_ids, text_targets = mask_tokens(
        np.where(modality == TEXT, ids, PAD_ID), rng, vocab_size=model.text_vocab
    )
    word_ids, word_targets = mask_visual_words(ids, modality, rng)
    corrupted = np.where(modality == TEXT, text_ids, word_ids)
    targets = np.where(modality == TEXT, text_targets, word_targets)
    optimizer.zero_grad()
    loss, cache = objective.forward(
        corrupted,
        modality,
        lengths,
        targets,
        data.caption_ids[idx],
        data.caption_lengths[idx],
        data.video_ids[idx],
        data.video_modality,
    )
    objective.backward(1.0, cache)
    optimizer.step()
    return float(loss)


def main(
    out: str = "runs/videobert",
    epochs: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
    **options: object,
) -> float:
    """The ``train --task videobert`` command.  Returns the visual-word accuracy from the text."""
    config = VideoBERTConfig(seed=seed)
    apply_options(config, QUICK, epochs, options, "videobert")
    log("config: " + ", ".join(f"{k}={v}" for k, v in asdict(config).items()))
    result = train_videobert(config, log)
    accuracy = result.word_accuracy[-1]
    log(
        f"masked visual words from the text: {accuracy:.4f}, majority-class rate {result.majority_rate:.4f} "
        f"({accuracy / result.majority_rate:.1f}x)"
    )
    C = len(result.test.words)
    for name, value in result.recall[-1].items():
        log(f"retrieval among {C} test clips, {name}: {value:.3f} (chance {int(name[-1]) / C:.3f})")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    save(result.model, out_dir / "params.npz")
    np.save(out_dir / "centroids.npy", result.clusters.centroids)
    log(f"wrote {out_dir / 'params.npz'} and {out_dir / 'centroids.npy'}")
    log(f"trained in {result.seconds:.1f}s")
    log(f"test accuracy: {accuracy:.4f}")
    return accuracy
