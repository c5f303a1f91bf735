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


@pytest.mark.parametrize(
    "saved_as, loaded_as", [("w", "w"), ("w", "w.npz"), ("w.npz", "w"), ("w.npz", "w.npz")]
)
def test_either_spelling_of_the_suffix_round_trips(tmp_path, saved_as, loaded_as) -> None:
    """NumPy appends .npz on save; load reads the file that save wrote, whichever way it is spelled
    (save(m, "weights") then load(m, "weights") raised FileNotFoundError)."""
    source, target = Linear(3, 2, rng=1), Linear(3, 2, rng=2)
    save(source, tmp_path / saved_as)
    load(target, tmp_path / loaded_as)
    np.testing.assert_array_equal(target.W.data, source.W.data)
    load(target, str(tmp_path / loaded_as))  # a str as well as a Path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.npz"]


def test_save_returns_the_path_it_wrote(tmp_path) -> None:
    assert save(Linear(3, 2), tmp_path / "w") == tmp_path / "w.npz"
    assert save(Linear(3, 2), str(tmp_path / "v.npz")) == tmp_path / "v.npz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.npz", "w.npz"]


def test_an_archive_renamed_without_its_suffix_still_loads(tmp_path) -> None:
    source, target = Linear(3, 2, rng=1), Linear(3, 2, rng=2)
    save(source, tmp_path / "w.npz")
    (tmp_path / "w.npz").rename(tmp_path / "w")
    load(target, tmp_path / "w")
    np.testing.assert_array_equal(target.W.data, source.W.data)


def test_missing_files_and_folders_are_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"path: no such file .*nothing\.npz \(nor .*nothing\)"):
        load(Linear(3, 2), tmp_path / "nothing")
    with pytest.raises(IsADirectoryError, match=r"path: .* is a folder; expected a \.npz file such as"):
        load(Linear(3, 2), tmp_path)
    with pytest.raises(TypeError, match="path: expected a str or os.PathLike, got int"):
        save(Linear(3, 2), 3)


def test_a_file_that_is_not_an_archive_is_named(tmp_path) -> None:
    (tmp_path / "notes.npz").write_text("not an archive")
    with pytest.raises(ValueError, match=r"path: .*notes\.npz is not a \.npz archive written by save\(\)"):
        load(Linear(3, 2), tmp_path / "notes.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"path: .*empty\.npz is not a \.npz archive"):
        load(Linear(3, 2), tmp_path / "empty.npz")


def test_an_object_array_is_refused_naming_its_key(tmp_path) -> None:
    """Still refused without unpickling (allow_pickle=False), and the message says which array."""
    np.savez(tmp_path / "evil.npz", beta=np.zeros(2), gamma=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"evil\.npz: array 'gamma' holds Python objects \(dtype=object\)"):
        load(LayerNorm(2), tmp_path / "evil.npz")
