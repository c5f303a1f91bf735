"""Tests of ``mmt_numpy.viz``: what each plot draws, the rollout maths, and the input checks."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from mmt_numpy import ops, viz
from mmt_numpy.gradcheck import GradcheckReport, TensorReport

# viz draws on Figure objects and never opens a window; Agg makes that explicit.
matplotlib.use("Agg")


def _weights(*shape: int, mask: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Softmax weights ``shape = (..., Lq, Lk)`` from random scores, via the real op."""
    scores = np.random.default_rng(seed).standard_normal(shape)
    weights, _ = ops.softmax_forward(scores, mask)
    return weights


def _tick_texts(labels: list) -> list[str]:
    return [t.get_text() for t in labels]


def _hatched_cells(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle) and p.get_hatch()]


# ----------------------------------------------------------------------------- plot_attention


def test_plot_attention_draws_heatmap_labels_colourbar_and_hatched_masked_cells():
    L = 4
    mask = ops.causal_mask(L)
    fig = viz.plot_attention(
        _weights(L, L, mask=mask), list("abcd"), list("abcd"), mask, title="causal test", annotate=True
    )
    assert isinstance(fig, Figure)
    heat, colourbar = fig.axes  # one heatmap, one colourbar
    assert heat.get_title() == "causal test"
    assert _tick_texts(heat.get_xticklabels()) == list("abcd")  # keys on x
    assert _tick_texts(heat.get_yticklabels()) == list("abcd")  # queries on y
    assert heat.get_xlabel().startswith("key") and heat.get_ylabel().startswith("query")
    assert colourbar.get_ylim() == pytest.approx((0.0, 1.0))  # the fixed 0–1 scale
    assert len(_hatched_cells(heat)) == int((~mask).sum()) == 6  # the strict upper triangle
    assert len(heat.texts) == int(mask.sum())  # annotations on visible cells only


def test_plot_attention_query_and_key_labels_may_differ_in_length():
    fig = viz.plot_attention(_weights(2, 3), ["q0", "q1"], ["k0", "k1", "k2"])
    heat = fig.axes[0]
    assert _tick_texts(heat.get_xticklabels()) == ["k0", "k1", "k2"]
    assert _tick_texts(heat.get_yticklabels()) == ["q0", "q1"]
    assert _hatched_cells(heat) == []  # no mask, nothing hatched


def test_plot_attention_accepts_a_padding_row_mask_and_a_fully_masked_query_row():
    keep = np.array([[True, True, False]])  # (1, Lk): the last key is padding
    w = _weights(3, 3, mask=keep)
    w[1] = 0.0  # a query with no visible key has an all-zero row
    fig = viz.plot_attention(w, list("xyz"), list("xyz"), keep)
    assert len(_hatched_cells(fig.axes[0])) == 3  # the padding column


# ----------------------------------------------------------------------------- grid


def test_plot_attention_grid_has_one_panel_per_layer_and_head_and_one_colourbar():
    R, C, L = 2, 3, 4
    fig = viz.plot_attention_grid(_weights(R, C, L, L), list("wxyz"), list("wxyz"), title="grid")
    assert len(fig.axes) == R * C + 1
    panels = fig.axes[: R * C]
    assert [ax.get_title() for ax in panels[:C]] == ["head 0", "head 1", "head 2"]
    assert panels[0].get_ylabel().startswith("layer 0") and panels[C].get_ylabel().startswith("layer 1")
    assert fig.get_suptitle() == "grid"
    # shared axes: tick labels on the outer panels only
    assert _tick_texts(panels[-1].get_xticklabels()) == list("wxyz")
    assert not any(t.get_visible() for t in panels[0].get_xticklabels())
    assert _tick_texts(panels[C].get_yticklabels()) == list("wxyz")
    assert not any(t.get_visible() for t in panels[1].get_yticklabels())


def test_plot_attention_grid_custom_titles_and_broadcast_mask():
    mask = ops.causal_mask(3)
    fig = viz.plot_attention_grid(
        _weights(1, 2, 3, 3, mask=mask),
        list("abc"),
        list("abc"),
        mask,
        row_titles=["enc"],
        col_titles=["h-a", "h-b"],
    )
    assert [ax.get_title() for ax in fig.axes[:2]] == ["h-a", "h-b"]
    assert all(len(_hatched_cells(ax)) == 3 for ax in fig.axes[:2])


# ----------------------------------------------------------------------------- cross-modal


def _image(h: int = 8, w: int = 8) -> np.ndarray:
    return np.random.default_rng(1).random((h, w, 3))


def test_plot_cross_modal_shows_original_then_one_overlay_per_token():
    fig = viz.plot_cross_modal(_weights(3, 16), _image(), (4, 4), ["a", "red", "dog"], [1, 2])
    assert len(fig.axes) == 3 + 1  # image, two overlays, colourbar
    assert [ax.get_title() for ax in fig.axes[:3]] == ["image", '"red" (token 1)', '"dog" (token 2)']
    overlay = fig.axes[1].images[-1].get_array()
    assert overlay.shape == (8, 8)  # upsampled from the 4 x 4 patch grid to the image
    assert fig.axes[1].images[-1].get_alpha() == 0.5


def test_plot_cross_modal_overlay_is_the_token_row_reshaped_to_the_patch_grid():
    w = np.zeros((2, 6))
    w[0, 4] = 1.0  # token 0 looks only at patch 4 = row 1, column 1 of a 2 x 3 grid
    w[1] = 1 / 6
    fig = viz.plot_cross_modal(w, _image(4, 6), (2, 3), ["x", "y"], [0])
    overlay = np.asarray(fig.axes[1].images[-1].get_array())
    expected = np.zeros((4, 6))
    expected[2:4, 2:4] = 1.0  # patch (1, 1) covers pixel rows 2-3, columns 2-3
    np.testing.assert_array_equal(overlay, expected)


def test_plot_cross_modal_wraps_panels_into_rows():
    fig = viz.plot_cross_modal(
        _weights(5, 4), _image(4, 4), (2, 2), list("abcde"), [0, 1, 2, 3, 4], max_cols=3
    )
    assert len(fig.axes) == 6 + 1  # 6 image panels in 2 rows of 3, plus the colourbar


# ----------------------------------------------------------------------------- rollout


def test_rollout_of_identity_attention_is_the_identity():
    eye = np.broadcast_to(np.eye(4), (2, 3, 4, 4)).copy()  # (B, H, L, L)
    rollout = viz.attention_rollout([eye, eye, eye])
    assert rollout.shape == (2, 4, 4)
    np.testing.assert_allclose(rollout, np.broadcast_to(np.eye(4), (2, 4, 4)))


def test_rollout_hand_example_two_previous_token_layers():
    # One head that looks one token back (token 0 looks at itself).  With the residual,
    # A = (W + I) / 2 row by row; two layers give A @ A, worked out by hand:
    previous = np.array([[[1.0, 0, 0], [1, 0, 0], [0, 1, 0]]])  # (H=1, 3, 3)
    expected = np.array([[1.0, 0, 0], [0.75, 0.25, 0], [0.25, 0.5, 0.25]])
    np.testing.assert_allclose(viz.attention_rollout([previous, previous]), expected)


def test_rollout_applies_later_layers_from_the_left():
    # Layer 0 looks one token back, layer 1 one token ahead (the last token at itself).
    # A0 = [[1, 0, 0], [.5, .5, 0], [0, .5, .5]],  A1 = [[.5, .5, 0], [0, .5, .5], [0, 0, 1]];
    # the rollout is A1 @ A0 (A0 @ A1 would give a first row [.5, .5, 0]).
    previous = np.array([[[1.0, 0, 0], [1, 0, 0], [0, 1, 0]]])
    following = np.array([[[0.0, 1, 0], [0, 0, 1], [0, 0, 1]]])
    expected = np.array([[0.75, 0.25, 0], [0.25, 0.5, 0.25], [0, 0.5, 0.5]])
    np.testing.assert_allclose(viz.attention_rollout([previous, following]), expected)


def test_rollout_averages_heads_and_rows_sum_to_one():
    left = np.array([[1.0, 0], [1, 0]])
    right = np.array([[0.0, 1], [0, 1]])
    one_layer = viz.attention_rollout([np.stack([left, right])])  # heads average to 0.5 everywhere
    np.testing.assert_allclose(one_layer, [[0.75, 0.25], [0.25, 0.75]])  # (0.5 + I) / 2

    mask = ops.padding_mask(np.array([5, 3]), 5)
    layers = [_weights(2, 4, 5, 5, mask=mask, seed=s) for s in range(3)]
    rollout = viz.attention_rollout(layers)
    np.testing.assert_allclose(rollout.sum(axis=-1), 1.0)
    assert np.all(rollout >= 0)


def test_rollout_fully_masked_row_keeps_only_the_residual_path():
    w = np.array([[[0.0, 0.0], [0.5, 0.5]]])  # query 0 saw no key at all
    np.testing.assert_allclose(viz.attention_rollout([w])[0], [1.0, 0.0])


def test_plot_rollout_draws_each_layer_and_the_rollout():
    layers = [_weights(1, 2, 3, 3, seed=s) for s in range(2)]
    fig = viz.plot_rollout(layers, ["a", "b", "c"])
    assert len(fig.axes) == 2 + 1 + 1  # two layers, the rollout, the colourbar
    titles = [ax.get_title() for ax in fig.axes[:3]]
    assert titles == ["layer 0, heads averaged", "layer 1, heads averaged", "rollout of layers 0..1"]
    rollout_image = np.asarray(fig.axes[2].images[0].get_array())
    np.testing.assert_allclose(rollout_image, viz.attention_rollout(layers)[0])


# ----------------------------------------------------------------------------- gradcheck chart


def _report(name: str, err: float) -> GradcheckReport:
    return GradcheckReport(name, [TensorReport("x", (2,), "elements", 2, err, err, 1e-5)])


def test_plot_gradcheck_errors_one_bar_per_report_with_threshold_line():
    reports = [_report("good op", 3e-9), _report("broken op", 2e-2), _report("exact op", 0.0)]
    fig = viz.plot_gradcheck_errors(reports)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    assert _tick_texts(ax.get_yticklabels()) == ["good op", "broken op", "exact op"]
    assert len(ax.patches) == 3
    green, red = matplotlib.colors.to_rgba("tab:green"), matplotlib.colors.to_rgba("tab:red")
    assert [bar.get_facecolor() for bar in ax.patches] == [green, red, green]
    bar_ends = [bar.get_x() + bar.get_width() for bar in ax.patches]
    assert bar_ends[0] == pytest.approx(3e-9) and bar_ends[1] == pytest.approx(2e-2)
    (threshold,) = ax.get_lines()
    assert threshold.get_xdata()[0] == pytest.approx(1e-5)
    assert "1e-05" in " ".join(t.get_text() for t in ax.texts)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (np.array([[0.5, 0.6], [0.5, 0.5]]), "sum to 1"),
        (np.array([[1.5, -0.5], [0.5, 0.5]]), r"in \[0, 1\]"),
        (np.array([[np.nan, 1.0], [0.5, 0.5]]), "finite"),
        (np.array([[2.0, 3.0], [1.0, 1.0]]), "softmax"),
        (np.ones((2, 2, 2)) / 2, "2 dimensions"),
    ],
)
def test_plot_attention_refuses_weights_that_are_not_a_probability_matrix(weights, message):
    with pytest.raises(ValueError, match=message):
        viz.plot_attention(weights, ["a", "b"], ["a", "b"])


def test_plot_attention_refuses_non_arrays_and_bad_labels():
    w = _weights(2, 3)
    with pytest.raises(TypeError, match="weights"):
        viz.plot_attention([[0.5, 0.5]], ["a"], ["a", "b"])
    with pytest.raises(ValueError, match=r"key_labels: expected 3 labels .* got 2"):
        viz.plot_attention(w, ["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match=r"query_labels: expected 2 labels .* got 3"):
        viz.plot_attention(w, ["a", "b", "c"], ["x", "y", "z"])
    with pytest.raises(TypeError, match="split it into tokens"):
        viz.plot_attention(w, "ab", ["x", "y", "z"])


def test_plot_attention_refuses_a_mask_of_the_opposite_convention():
    keep = np.array([[True, True, False]] * 2)
    w = _weights(2, 3, mask=keep)
    with pytest.raises(ValueError, match="True = 'may attend'"):
        viz.plot_attention(w, ["a", "b"], list("xyz"), ~keep)  # PyTorch key_padding_mask style
    with pytest.raises(TypeError, match="mask: expected dtype bool"):
        viz.plot_attention(w, ["a", "b"], list("xyz"), keep.astype(int))
    with pytest.raises(ValueError, match="mask: expected a shape that broadcasts"):
        viz.plot_attention(w, ["a", "b"], list("xyz"), np.ones((2, 2), dtype=bool))


def test_plot_attention_grid_refuses_wrong_rank_and_title_count():
    with pytest.raises(ValueError, match="expected 4 dimensions"):
        viz.plot_attention_grid(_weights(2, 3, 3), list("abc"), list("abc"))
    with pytest.raises(ValueError, match="col_titles: expected 2 labels"):
        viz.plot_attention_grid(_weights(1, 2, 3, 3), list("abc"), list("abc"), col_titles=["h"])


def test_plot_cross_modal_refuses_mismatched_grid_image_and_tokens():
    w, img, tokens = _weights(2, 16), _image(), ["a", "b"]
    with pytest.raises(ValueError, match=r"grid: expected gh \* gw = 16 .* got 3 x 4 = 12"):
        viz.plot_cross_modal(w, img, (3, 4), tokens, [0])
    with pytest.raises(ValueError, match=r"image: expected shape \(H, W, 3\)"):
        viz.plot_cross_modal(w, img[..., 0], (4, 4), tokens, [0])
    with pytest.raises(ValueError, match="image: expected a height divisible by gh=4"):
        viz.plot_cross_modal(w, _image(10, 8), (4, 4), tokens, [0])
    with pytest.raises(ValueError, match=r"image: expected finite values in \[0, 1\]"):
        viz.plot_cross_modal(w, img * 255, (4, 4), tokens, [0])
    with pytest.raises(TypeError, match="divide uint8 images by 255"):
        viz.plot_cross_modal(w, (img * 255).astype(np.uint8), (4, 4), tokens, [0])
    with pytest.raises(ValueError, match="tokens: expected 2 labels"):
        viz.plot_cross_modal(w, img, (4, 4), ["a"], [0])
    with pytest.raises(ValueError, match=r"token_indices: expected integers in \[0, 2\)"):
        viz.plot_cross_modal(w, img, (4, 4), tokens, [2])
    with pytest.raises(TypeError, match="token_indices"):
        viz.plot_cross_modal(w, img, (4, 4), tokens, [])


def test_rollout_refuses_empty_ragged_and_non_square_input():
    with pytest.raises(ValueError, match="at least one layer"):
        viz.attention_rollout([])
    with pytest.raises(TypeError, match="one .* array per"):
        viz.attention_rollout(_weights(2, 3, 3))  # an array, not a list of layers
    with pytest.raises(ValueError, match="as layer 0"):
        viz.attention_rollout([_weights(2, 3, 3), _weights(4, 3, 3)])
    with pytest.raises(ValueError, match="square"):
        viz.attention_rollout([_weights(2, 3, 4)])
    with pytest.raises(ValueError, match="sum to 1"):
        viz.attention_rollout([np.full((1, 2, 2), 0.2)])


def test_plot_gradcheck_errors_refuses_empty_or_foreign_reports():
    with pytest.raises(ValueError, match="at least one"):
        viz.plot_gradcheck_errors([])
    with pytest.raises(TypeError, match=r"reports\[1\]: expected a GradcheckReport, got float"):
        viz.plot_gradcheck_errors([_report("ok", 1e-9), 1e-9])
