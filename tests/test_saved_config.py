"""A model's configuration saved beside its parameters: ``save(..., config=)``, ``load_config``,
``ImageTextModel.from_config`` and ``load_model``, which rebuild the model that made a file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmt_numpy import data
from mmt_numpy.nn import ImageTextModel, load, load_config, save
from mmt_numpy.nn.serialization import CONFIG_KEY
from mmt_numpy.tasks.vqa_inputs import EASY_VQA, TOY, VQAInputs, load_model, saved_config


def _model(**kwargs) -> ImageTextModel:
    sizes = dict(hidden_dim=8, num_heads=2, num_layers=2, d_ff=16, max_len=9, image_grid=(3, 3), rng=1)
    return ImageTextModel(len(data.TOKENIZER), 192, len(data.ANSWERS), **{**sizes, **kwargs})


def _inputs():
    _, test = data.make_vqa_splits(10, 3, seed=2)
    return test.ids, test.patches(), test.lengths


def test_the_configuration_is_a_json_string_array_beside_the_parameters(tmp_path):
    model = _model()
    config = {"model": model.config, "note": "§5", "sizes": [1, 2]}
    save(model, tmp_path / "m.npz", config=config)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as archive:  # no pickle needed to read it
        assert archive.files == [name for name, _ in model.named_parameters()] + [CONFIG_KEY]
        entry = archive[CONFIG_KEY]
    assert entry.dtype.kind == "U" and entry.shape == ()
    assert json.loads(str(entry)) == config
    assert load_config(tmp_path / "m.npz") == config


def test_load_skips_the_configuration_and_files_without_one_have_none(tmp_path):
    source, target = _model(rng=1), _model(rng=2)
    save(source, tmp_path / "with.npz", config={"a": 1})
    save(source, tmp_path / "without.npz")
    ids, patches, lengths = _inputs()
    load(target, tmp_path / "with.npz")
    np.testing.assert_array_equal(target(ids, patches, lengths), source(ids, patches, lengths))
    assert load_config(tmp_path / "without.npz") is None


def test_a_configuration_must_be_a_dict(tmp_path):
    with pytest.raises(TypeError, match="config: expected a dict"):
        save(_model(), tmp_path / "m.npz", config=["not", "a", "dict"])
    np.savez(tmp_path / "odd.npz", **{CONFIG_KEY: np.array("[1, 2]")})
    with pytest.raises(ValueError, match="to hold a JSON object, got list"):
        load_config(tmp_path / "odd.npz")
    np.savez(tmp_path / "bad.npz", **{CONFIG_KEY: np.array("{not json")})
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_config(tmp_path / "bad.npz")


@pytest.mark.parametrize("grid", [(3, 3), None])
def test_from_config_rebuilds_the_architecture(grid, tmp_path):
    model = _model(image_grid=grid, dtype=np.float32)
    config = json.loads(json.dumps(model.config))  # what a file gives back
    rebuilt = ImageTextModel.from_config(config, rng=7)
    assert rebuilt.config == model.config
    assert [(n, p.shape, p.data.dtype) for n, p in rebuilt.named_parameters()] == [
        (n, p.shape, p.data.dtype) for n, p in model.named_parameters()
    ]
    save(model, tmp_path / "m.npz")
    load(rebuilt, tmp_path / "m.npz")
    ids, patches, lengths = _inputs()
    patches = patches.astype(np.float32)
    np.testing.assert_array_equal(rebuilt(ids, patches, lengths), model(ids, patches, lengths))


def test_from_config_names_missing_and_unknown_keys():
    config = dict(_model().config)
    del config["d_ff"]
    config["colour"] = "red"
    with pytest.raises(ValueError, match=r"missing \['d_ff'\], unknown \['colour'\]"):
        ImageTextModel.from_config(config)
    with pytest.raises(TypeError, match="config: expected a dict"):
        ImageTextModel.from_config("hidden_dim=8")


@pytest.mark.parametrize("inputs", [TOY, EASY_VQA])
def test_inputs_survive_json(inputs):
    assert VQAInputs.from_dict(json.loads(json.dumps(inputs.to_dict()))) == inputs


def test_load_model_rebuilds_the_saved_model(tmp_path):
    model = _model(dtype=np.float32)
    save(model, tmp_path / "params.npz", config=saved_config(model, TOY, {"epochs": 1}))
    rebuilt, inputs, config = load_model(tmp_path / "params.npz")
    assert inputs == TOY and config["training"] == {"epochs": 1}
    ids, patches, lengths = _inputs()
    patches = patches.astype(np.float32)
    np.testing.assert_array_equal(rebuilt(ids, patches, lengths), model(ids, patches, lengths))


def test_load_model_refuses_what_it_cannot_rebuild(tmp_path):
    model = _model()
    save(model, tmp_path / "other.npz", config={"task": "captions", "format": 1})
    with pytest.raises(ValueError, match="expected a VQA model's configuration"):
        load_model(tmp_path / "other.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match=r"params: cannot read .*text.npz as a .npz archive"):
        load_model(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError, match="params: no such file"):
        load_model(tmp_path / "none.npz")
