"""save/load and state_dict/load_state_dict: exact round trips and strict refusals."""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy.nn import LayerNorm, Linear, MultimodalTransformer, load, load_state_dict, save, state_dict
from mmt_numpy.optim import SGD


def _model(seed: int, **kwargs) -> MultimodalTransformer:
    return MultimodalTransformer(
        3, 4, 8, 2, 2, 5, d_ff=16, max_len=6, positional="learned", rng=seed, **kwargs
    )


def _inputs():
    rng = np.random.default_rng(0)
    return rng.standard_normal((2, 3, 3)), rng.standard_normal((2, 4, 4))


def test_round_trip_reproduces_the_outputs_exactly(tmp_path) -> None:
    text, image = _inputs()
    source, target = _model(1), _model(2)
    lengths = {"text_lengths": np.array([3, 1]), "image_lengths": np.array([4, 2])}
    expected = source(text, image, **lengths)
    assert not np.array_equal(target(text, image, **lengths), expected)
    save(source, tmp_path / "model.npz")
    load(target, tmp_path / "model.npz")
    np.testing.assert_array_equal(target(text, image, **lengths), expected)
    for (name, p), (_, q) in zip(source.named_parameters(), target.named_parameters(), strict=True):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)


def test_the_file_holds_plain_arrays_under_dotted_names(tmp_path) -> None:
    m = _model(3)
    save(m, tmp_path / "weights")  # NumPy adds the .npz suffix
    with np.load(tmp_path / "weights.npz", allow_pickle=False) as archive:
        assert archive.files == [name for name, _ in m.named_parameters()]
        assert "encoder.layers.1.self_attn.W_q" in archive.files
        np.testing.assert_array_equal(archive["output_layer.W"], m.output_layer.W.data)


def test_state_dict_is_a_copy_and_loading_is_in_place() -> None:
    m = Linear(3, 2, rng=4)
    state = state_dict(m)
    state["W"][...] = 0.0
    assert m.W.data.any()  # the model is untouched by edits of the copy
    opt = SGD(m.parameters(), lr=0.1)
    W_object = m.W.data
    load_state_dict(m, state)
    assert m.W.data is W_object and not m.W.data.any()
    m.W.grad[...] = 1.0
    opt.step()  # the optimiser still holds the loaded Parameter
    np.testing.assert_allclose(m.W.data, -0.1)


def test_missing_unexpected_misshaped_and_mistyped_are_all_named() -> None:
    m = _model(5)
    state = state_dict(m)
    del state["text_embedding.b"]
    state["encoder.layers.0.self_attn.W_z"] = np.zeros((8, 8))
    state["output_layer.W"] = np.zeros((8, 4))
    state["modality_embedding.weight"] = state["modality_embedding.weight"].astype(np.float32)
    before = state_dict(m)
    with pytest.raises(ValueError) as info:
        load_state_dict(m, state)
    message = str(info.value)
    assert "missing: text_embedding.b" in message
    assert "unexpected: encoder.layers.0.self_attn.W_z" in message
    assert "output_layer.W: expected shape (8, 5), got (8, 4)" in message
    assert "modality_embedding.weight: expected dtype float64, got float32" in message
    # Nothing was copied, not even the arrays that did fit.
    for name, value in state_dict(m).items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_loading_into_a_different_architecture_is_refused(tmp_path) -> None:
    save(_model(6), tmp_path / "two_layers.npz")
    one_layer = MultimodalTransformer(3, 4, 8, 2, 1, 5, d_ff=16, max_len=6, positional="learned")
    with pytest.raises(ValueError, match=r"unexpected: encoder\.layers\.1\.self_attn\.W_q"):
        load(one_layer, tmp_path / "two_layers.npz")
    sinusoidal = MultimodalTransformer(3, 4, 8, 2, 2, 5, d_ff=16, max_len=6)
    with pytest.raises(ValueError, match=r"unexpected: text_position\.weight, image_position\.weight"):
        load(sinusoidal, tmp_path / "two_layers.npz")


def test_pickled_objects_and_single_arrays_are_refused(tmp_path) -> None:
    np.savez(tmp_path / "evil.npz", gamma=np.array([{"x": 1}], dtype=object), beta=np.zeros(2))
    with pytest.raises(ValueError, match="allow_pickle=False"):
        load(LayerNorm(2), tmp_path / "evil.npz")
    np.save(tmp_path / "one.npy", np.ones(2))
    with pytest.raises(ValueError, match=r"path: expected a \.npz archive"):
        load(LayerNorm(2), tmp_path / "one.npy")


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="module: expected an mmt_numpy.nn.Module, got dict"):
        state_dict({})
    with pytest.raises(TypeError, match="state: expected a dict"):
        load_state_dict(LayerNorm(2), [np.ones(2), np.zeros(2)])
    with pytest.raises(ValueError, match="gamma: expected a numpy array, got list"):
        load_state_dict(LayerNorm(2), {"gamma": [1.0, 1.0], "beta": np.zeros(2)})


def test_float32_model_round_trip(tmp_path) -> None:
    source = _model(7, dtype=np.float32)
    target = _model(8, dtype=np.float32)
    save(source, tmp_path / "f32.npz")
    load(target, tmp_path / "f32.npz")
    text, image = (x.astype(np.float32) for x in _inputs())
    np.testing.assert_array_equal(target(text, image), source(text, image))
