"""Training the §5 model end to end on the toy visual question answering of §6.1.

``python -m mmt_numpy train [--task vqa] [--out DIR] [--epochs N] [--seed S]`` builds train and test
sets over disjoint scenes (:mod:`mmt_numpy.data`), trains an :class:`ImageTextModel` with
Adam in minibatches, prints a line per epoch, ends with ``test accuracy: X`` and writes to
``DIR`` (default ``runs/vqa``):

* ``params.npz``: every parameter by its dotted name (:func:`mmt_numpy.nn.save`);
* ``loss_curve.png``: training loss per step, train and test accuracy per epoch;
* ``attention_*.png``: where the question's shape word and ``[CLS]`` look in the image.

The model is the §5 ``MultimodalTransformer`` (single-stream, feature-level fusion of
§2.1.1) with a word embedding in front of its ``text_embedding``: question tokens and image
patches share one sequence, and the answer is read from the output at the ``[CLS]``
position, BERT's classification recipe, with ``output_dim`` = the number of answers.  The
image patches get 2-D positions (a row vector plus a column vector,
:class:`~mmt_numpy.nn.GridPositionalEmbedding`) instead of the §5 model's 1-D table: "is the
circle left of the triangle ?" needs the column of each patch, and with the 1-D table that
question stayed at chance for a dozen epochs or more (see :class:`ImageTextModel`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mmt_numpy import data, ops
from mmt_numpy.nn import ImageTextModel, save
from mmt_numpy.nn.image_text import ImageTextCache, cls_logits_backward
from mmt_numpy.nn.module import as_float_dtype
from mmt_numpy.optim import Adam
from mmt_numpy.validate import non_negative_int, positive_int


def predict(
    model: ImageTextModel, ids: np.ndarray, patches: np.ndarray, lengths: np.ndarray, batch_size: int = 512
) -> np.ndarray:
    """``(N,)`` the arg-max answer at ``[CLS]`` for every question, in batches."""
    preds = [
        model(ids[s : s + batch_size], patches[s : s + batch_size], lengths[s : s + batch_size])[:, 0].argmax(
            -1
        )
        for s in range(0, len(ids), batch_size)
    ]
    return np.concatenate(preds)


IMAGE_POSITIONS = ("grid", "sequence")
DEFAULT_EPOCHS = 12


@dataclass
class TrainConfig:
    """Everything that decides a training run (the defaults reach >= 0.95 test accuracy).

    ``image_positions`` is ``"grid"`` (a row plus a column vector per patch, see
    :class:`ImageTextModel`) or ``"sequence"`` (the §5 model's 1-D table over reading
    order, which leaves "left of" at chance for many epochs).
    """

    epochs: int = DEFAULT_EPOCHS
    seed: int = 0
    train_scenes: int = 3000
    test_scenes: int = 500
    batch_size: int = 64
    lr: float = 1e-3
    hidden_dim: int = 32
    num_heads: int = 4
    num_layers: int = 2
    d_ff: int = 64
    image_positions: str = "grid"
    dtype: str = "float32"


@dataclass
class TrainResult:
    """What :func:`train_vqa` returns: the model, its data and the measured curves."""

    model: ImageTextModel
    train_set: data.VQADataset
    test_set: data.VQADataset
    step_losses: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0


def train_vqa(config: TrainConfig, log: Callable[[str], None] = print) -> TrainResult:
    """Train on the toy VQA task; log one line per epoch; return the model and its curves.

    Each epoch visits every training question once in a random order (seeded), in
    minibatches of ``config.batch_size``: forward, cross-entropy at ``[CLS]``, backward,
    one Adam step.
    """
    dtype = as_float_dtype(config.dtype)
    if config.image_positions not in IMAGE_POSITIONS:
        raise ValueError(
            f"image_positions: expected one of {IMAGE_POSITIONS}, got {config.image_positions!r}"
        )
    train_set, test_set = data.make_vqa_splits(config.train_scenes, config.test_scenes, config.seed)
    train_patches, test_patches = train_set.patches(dtype), test_set.patches(dtype)
    model = ImageTextModel(
        len(data.TOKENIZER),
        train_patches.shape[-1],
        len(data.ANSWERS),
        hidden_dim=config.hidden_dim,
        num_heads=config.num_heads,
        num_layers=config.num_layers,
        d_ff=config.d_ff,
        max_len=max(train_set.ids.shape[1], train_patches.shape[1]),
        image_grid=train_set.grid if config.image_positions == "grid" else None,
        dtype=dtype,
        rng=config.seed,
    )
    optimizer = Adam(model.parameters(), lr=config.lr)
    order_rng = np.random.default_rng(config.seed + 1)
    result = TrainResult(model, train_set, test_set)
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        order = order_rng.permutation(len(train_set))
        epoch_losses = []
        for s in range(0, len(order), config.batch_size):
            idx = order[s : s + config.batch_size]
            out, cache = model.forward(train_set.ids[idx], train_patches[idx], train_set.lengths[idx])
            loss, loss_cache = ops.cross_entropy_forward(out[:, 0], train_set.answers[idx])
            optimizer.zero_grad()
            model.backward(cls_logits_backward(ops.cross_entropy_backward(1.0, loss_cache), out.shape), cache)
            optimizer.step()
            epoch_losses.append(float(loss))
        result.step_losses.extend(epoch_losses)
        train_acc = float(
            np.mean(predict(model, train_set.ids, train_patches, train_set.lengths) == train_set.answers)
        )
        test_acc = float(
            np.mean(predict(model, test_set.ids, test_patches, test_set.lengths) == test_set.answers)
        )
        result.train_accuracy.append(train_acc)
        result.test_accuracy.append(test_acc)
        log(
            f"epoch {epoch:>3}  loss {np.mean(epoch_losses):.4f}  train accuracy {train_acc:.4f}  "
            f"test accuracy {test_acc:.4f}  time {time.perf_counter() - start:.1f}s"
        )
    result.seconds = time.perf_counter() - start
    return result


def text_to_image_attention(cache: ImageTextCache, layer: int) -> np.ndarray:
    """``(B, Lt, Li)`` one layer's text-to-image attention in a forward's cache, heads averaged.

    Rows ``:Lt`` of that layer's weights ``(B, H, Lt+Li, Lt+Li)`` are the text queries and
    columns ``Lt:`` the image keys (``Lt`` is the padded text length of that forward).

    Each text query's weights over the image keys are renormalised to sum to 1, so they
    read as "where in the image this token looks" even when it also attends to text.
    """
    Lt = cache.transformer.Lt
    weights = cache.weights[layer]  # (B, H, L, L)
    to_image = weights[:, :, :Lt, Lt:].mean(axis=1)
    return to_image / np.maximum(to_image.sum(axis=-1, keepdims=True), 1e-12)


def key_patch_attention(result: TrainResult, layer: int) -> float:
    """Mean attention (renormalised over the image) of each test question's shape word on its patch.

    The shape word is the token after the first ``the`` (position 4 in ``[CLS] what colour
    is the square ?``, 3 in ``[CLS] is the circle left of ...``).  Chance is 1 / num_patches.
    """
    test = result.test_set
    patches = test.patches(result.model.dtype)
    _, cache = result.model.forward(test.ids, patches, test.lengths)
    attn = text_to_image_attention(cache, layer)
    word = np.argmax(test.ids == data.TOKENIZER.ids["the"], axis=1) + 1
    rows = np.arange(len(test))
    return float(attn[rows, word, test.key_patch()].mean())


def save_artifacts(result: TrainResult, out: Path, log: Callable[[str], None] = print) -> list[Path]:
    """Write ``params.npz``, ``loss_curve.png`` and attention maps of a few test questions."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from mmt_numpy.viz import plot_cross_modal

    out.mkdir(parents=True, exist_ok=True)
    written = [out / "params.npz"]
    save(result.model, written[0])

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(result.step_losses, lw=0.6)
    ax_loss.set(xlabel="step (minibatch)", ylabel="cross-entropy", title="training loss", yscale="log")
    epochs = np.arange(1, len(result.test_accuracy) + 1)
    ax_acc.plot(epochs, result.train_accuracy, "o-", label="train")
    ax_acc.plot(epochs, result.test_accuracy, "s-", label="test (unseen scenes)")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="answer accuracy", ylim=(0, 1.02))
    ax_acc.legend()
    fig.savefig(out / "loss_curve.png", dpi=110)
    written.append(out / "loss_curve.png")

    test = result.test_set
    picks = [int(np.flatnonzero(test.ids[:, 1] == data.TOKENIZER.ids[w])[0]) for w in ("what", "is")]
    picks += [int(np.flatnonzero(test.ids[:, 1] == data.TOKENIZER.ids["what"])[1])]
    num_layers = len(result.model.transformer.encoder.layers)
    for n, q in enumerate(picks):
        ids, lengths = test.ids[q : q + 1], test.lengths[q : q + 1]
        patches = test.patches(result.model.dtype)[q : q + 1]
        outputs, cache = result.model.forward(ids, patches, lengths)
        logits = outputs[0, 0]
        tokens = ["[CLS]", *data.TOKENIZER.decode(ids)[0].split()]
        word = tokens.index("the") + 1
        answer = data.ANSWERS[int(logits.argmax())]
        for layer in range(num_layers):
            attn = text_to_image_attention(cache, layer)[0, : len(tokens)]
            fig = plot_cross_modal(
                attn.astype(np.float64),
                test.images[test.image_index[q]],
                test.grid,
                tokens,
                [word, 0],
                title=f'layer {layer}: "{" ".join(tokens[1:])}" -> {answer}',
            )
            path = out / f"attention_q{n}_layer{layer}.png"
            fig.savefig(path, dpi=110)
            written.append(path)
    for path in written:
        log(f"wrote {path}")
    return written


def main(
    out: str = "runs/vqa", epochs: int | None = None, seed: int = 0, log: Callable[[str], None] = print
) -> float:
    """The ``train`` command: train, report, save.  Returns the final test accuracy."""
    config = TrainConfig(seed=non_negative_int("seed", seed))
    if epochs is not None:
        config.epochs = positive_int("epochs", epochs)  # 0 would save an untrained model
    log("config: " + ", ".join(f"{k}={v}" for k, v in asdict(config).items()))
    result = train_vqa(config, log)
    layers = len(result.model.transformer.encoder.layers)
    num_patches = result.test_set.grid[0] * result.test_set.grid[1]
    for layer in range(layers):
        on_patch = key_patch_attention(result, layer)
        log(
            f"layer {layer}: shape word -> its patch, mean attention {on_patch:.3f} "
            f"(chance {1 / num_patches:.3f})"
        )
    save_artifacts(result, Path(out), log)
    log(f"trained in {result.seconds:.1f}s")
    log(f"test accuracy: {result.test_accuracy[-1]:.4f}")
    return result.test_accuracy[-1]
