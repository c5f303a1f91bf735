"""Gradient checks of the video and sound modules (§6.3) and of VideoBERT (§3.2): space-time
positions, joint, time, space and divided attention, the space-time encoder layer and the video
encoder, spectrogram patches, the context-attention fusion layer, the video QA model and
VideoBERT with its pre-training loss.  Every float input and every parameter, float64, from
parameters moved off their initial values; clips of T = 3 frames of a 2 x 3 patch grid (so
T, rows and columns all differ), with a padded clip wherever frames can be padded.

The STFT of :mod:`mmt_numpy.ops.stft` is a fixed preprocessing step without a backward; its
tests compare it with a direct DFT and with ``torch.stft`` instead.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from mmt_numpy import ops
from mmt_numpy.checks import Case, randn, randomize
from mmt_numpy.data.tokenizer import IGNORE_INDEX
from mmt_numpy.gradcheck import GradcheckReport, check_module
from mmt_numpy.nn.context_attention import ContextAttentionLayer
from mmt_numpy.nn.spacetime import (
    DividedSpaceTimeAttention,
    JointSpaceTimeAttention,
    SpaceAttention,
    SpaceTimePositionalEmbedding,
    TimeAttention,
)
from mmt_numpy.nn.spectrogram import SpectrogramPatchEmbedding
from mmt_numpy.nn.video import SpaceTimeEncoderLayer, VideoEncoder
from mmt_numpy.nn.video_qa import VideoQAModel
from mmt_numpy.nn.videobert import VideoBERT, VideoBERTPretraining

ORDER = 50

B, T, GRID, D, H = 2, 3, (2, 3), 4, 2
N = GRID[0] * GRID[1]
FRAME_LENGTHS = np.array([3, 2])  # the second clip's last frame is padding


def clip(seed: int, width: int = D) -> np.ndarray:
    """``(B, T, N, width)`` standard normal tokens."""
    return randn(seed, B, T, N, width)


def positions_case(time: str) -> GradcheckReport:
    m = randomize(SpaceTimePositionalEmbedding(GRID, 5, D, time=time, rng=70), 71)
    return check_module(m, {"x": clip(72)}, name=f"SpaceTimePositionalEmbedding ({time} time, T < max)")


def attention_case(kind: str) -> GradcheckReport:
    modules = {
        "joint": JointSpaceTimeAttention,
        "time": TimeAttention,
        "space": SpaceAttention,
        "divided": DividedSpaceTimeAttention,
    }
    m = randomize(modules[kind](D, H, rng=73), 74)
    kwargs = {} if kind == "space" else {"frame_lengths": FRAME_LENGTHS}
    return check_module(m, {"x": clip(75)}, kwargs=kwargs, name=f"{type(m).__name__} (padded frames)")


def layer_case(attention: str) -> GradcheckReport:
    m = randomize(SpaceTimeEncoderLayer(D, H, 6, attention=attention, rng=76), 77)
    return check_module(
        m,
        {"x": clip(78)},
        kwargs={"frame_lengths": FRAME_LENGTHS},
        name=f"SpaceTimeEncoderLayer ({attention})",
    )


def video_encoder_case(attention: str, time: str) -> GradcheckReport:
    m = randomize(VideoEncoder(5, GRID, 4, D, H, 6, 2, attention=attention, time_positions=time, rng=79), 80)
    return check_module(
        m,
        {"patches": clip(81, width=5)},
        kwargs={"frame_lengths": FRAME_LENGTHS},
        name=f"VideoEncoder ({attention}, {time} time, 2 layers)",
    )


def spectrogram_case() -> GradcheckReport:
    # 6 bins x 4 frames in 3 x 2 patches: a 2 x 2 grid whose rows and columns come from
    # different axes, so a transposed un-patching cannot pass
    m = randomize(SpectrogramPatchEmbedding(6, 4, (3, 2), 5, rng=82), 83)
    return check_module(
        m, {"spectrogram": randn(84, 2, 6, 4)}, name="SpectrogramPatchEmbedding (3x2 patches)"
    )


def context_case(norm_first: bool) -> GradcheckReport:
    m = randomize(ContextAttentionLayer(D, H, 6, norm_first=norm_first, rng=85), 86)
    inputs = {"x": randn(87, 2, 3, D), "context": randn(88, 2, 5, D)}
    mask = ops.padding_mask([8, 6], 8)  # keys [x ; context]: row 1 ignores its last two context tokens
    variant = "pre-LN" if norm_first else "post-LN"
    return check_module(m, inputs, kwargs={"mask": mask}, name=f"ContextAttentionLayer ({variant}, padding)")


def video_qa_case(sound: bool) -> GradcheckReport:
    """Three questions about two clips (clip 0 asked twice).  With sound: context fusion, the
    questions packed by clip, two fusion layers (the audio encoder is left out: it is a plain
    TransformerEncoder, checked above).  Without: the joint (§5) fusion, no text encoder."""
    m = VideoQAModel(
        12,
        5,
        patch_dim=5,
        grid=GRID,
        frames=T,
        spectrogram=(4, 6) if sound else None,
        audio_patch=(2, 3),
        d_model=D,
        num_heads=H,
        d_ff=6,
        video_layers=1,
        audio_layers=0,
        text_layers=1 if sound else 0,
        fusion_layers=2 if sound else 1,
        fusion="context" if sound else "joint",
        max_len=5,
        rng=89,
    )
    randomize(m, 90)
    ids = np.array([[1, 5, 6, 0], [1, 7, 8, 9], [1, 5, 5, 11]])
    inputs = {"ids": ids, "patches": clip(91, width=5)}
    if sound:
        inputs["spectrogram"] = randn(92, 2, 4, 6)
    kwargs = {"clip_index": np.array([0, 1, 0]), "text_lengths": np.array([3, 4, 4])}
    return check_module(m, inputs, kwargs=kwargs, name=video_qa_name(sound))


def video_qa_name(sound: bool) -> str:
    return (
        "VideoQAModel (frames + sound, context fusion)"
        if sound
        else "VideoQAModel (frames only, joint fusion)"
    )


def videobert(seed: int = 93) -> VideoBERT:
    return randomize(
        VideoBERT(9, 4, d_model=D, num_heads=H, d_ff=6, num_layers=2, max_len=8, projection_dim=3, rng=seed),
        seed + 1,
    )


def videobert_case() -> GradcheckReport:
    ids = np.array([[1, 5, 2, 9, 12, 0], [1, 6, 7, 2, 10, 11]])  # [CLS] words [SEP] visual words, padded
    modality = np.array([[0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 1, 1]])
    # VideoBERT's only input is integer ids: the check covers every parameter
    return check_module(
        videobert(),
        {"ids": ids},
        kwargs={"modality": modality, "lengths": np.array([5, 6])},
        name="VideoBERT (padding)",
    )


def pretraining_inputs() -> dict[str, np.ndarray]:
    """A batch of three clips: corrupted joint sequences with targets, captions alone, words alone."""
    M = 3  # [MASK]
    return {
        "joint_ids": np.array([[1, 5, M, 2, M, M], [1, 6, 7, 2, 10, M], [1, M, 2, 12, 11, 0]]),
        "joint_modality": np.array([[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 0]]),
        "joint_lengths": np.array([6, 6, 5]),
        "targets": np.array(
            [
                [IGNORE_INDEX, IGNORE_INDEX, 8, IGNORE_INDEX, 9, 12],
                [IGNORE_INDEX] * 5 + [11],
                [IGNORE_INDEX, 6] + [IGNORE_INDEX] * 4,
            ]
        ),
        "caption_ids": np.array([[1, 5, 8], [1, 6, 7], [1, 6, 0]]),
        "caption_lengths": np.array([3, 3, 2]),
        "video_ids": np.array([[1, 9, 12], [1, 10, 11], [1, 12, 11]]),
        "video_modality": np.array([0, 1, 1]),
    }


def pretraining_case(objective_class: type = VideoBERTPretraining) -> GradcheckReport:
    """The whole pre-training loss (masked tokens over the tied head + InfoNCE of the two
    [CLS] projections), every parameter; ``objective_class`` lets a test pass a broken one."""
    inputs = pretraining_inputs()
    kwargs = {k: inputs.pop(k) for k in list(inputs) if k != "joint_ids"}
    objective = objective_class(videobert(95), temperature=0.5)
    return check_module(
        objective, inputs, kwargs=kwargs, name="VideoBERTPretraining (masked tokens + InfoNCE)"
    )


CASES = [
    *[
        Case(f"SpaceTimePositionalEmbedding ({t} time, T < max)", partial(positions_case, t))
        for t in ("learned", "sinusoidal", "none")
    ],
    Case("JointSpaceTimeAttention (padded frames)", partial(attention_case, "joint")),
    Case("TimeAttention (padded frames)", partial(attention_case, "time")),
    Case("SpaceAttention (padded frames)", partial(attention_case, "space")),
    Case("DividedSpaceTimeAttention (padded frames)", partial(attention_case, "divided")),
    *[Case(f"SpaceTimeEncoderLayer ({a})", partial(layer_case, a)) for a in ("divided", "joint")],
    Case("VideoEncoder (divided, learned time, 2 layers)", partial(video_encoder_case, "divided", "learned")),
    Case(
        "VideoEncoder (joint, sinusoidal time, 2 layers)", partial(video_encoder_case, "joint", "sinusoidal")
    ),
    Case("SpectrogramPatchEmbedding (3x2 patches)", spectrogram_case),
    Case("ContextAttentionLayer (pre-LN, padding)", partial(context_case, True)),
    Case("ContextAttentionLayer (post-LN, padding)", partial(context_case, False)),
    *[Case(video_qa_name(sound), partial(video_qa_case, sound)) for sound in (True, False)],
    Case("VideoBERT (padding)", videobert_case),
    Case("VideoBERTPretraining (masked tokens + InfoNCE)", pretraining_case),
]
