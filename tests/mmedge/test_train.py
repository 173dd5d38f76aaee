"""A short real training run (real encoders, real data) that learns; checkpoint round trip."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from mmedge.checkpoint import load_checkpoint, read_checkpoint_meta
from mmedge.config import MemberConfig, get_recipe
from mmedge.errors import CheckpointError, DataError
from mmedge.features import batched_inputs
from mmedge.training import check_data, limit_data, load_recipe_data, train_recipe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    base = get_recipe("digits-av")
    recipe = base.replace(
        subset=500,
        members=(MemberConfig("concat", "concat", base.modalities),
                 MemberConfig("cross_attention", "cross_attention", base.modalities, hidden=64, seed=2)),
        train=dataclasses.replace(base.train, epochs=20, encoder_epochs=6),
    )
    out = tmp_path_factory.mktemp("ckpt") / "digits-av"
    return train_recipe(recipe, out), recipe, out


def test_training_learns_well_above_chance(small_run):
    result, _, _ = small_run
    m = result.metrics
    assert m["ensemble"]["test_accuracy"] > 0.5  # chance is 0.1
    for member in m["members"].values():
        assert member["test_accuracy"] > 0.4
    assert set(m["baselines"]) == {"image", "text", "audio"}


def test_checkpoint_files_and_metrics(small_run):
    result, recipe, out = small_run
    assert {p.name for p in out.iterdir()} == {"recipe.json", "weights.pt", "metrics.json", "tokenizer.json"}
    meta = read_checkpoint_meta(out)
    assert meta["recipe"] == recipe.to_dict()
    assert meta["labels"][:2] == ["zero", "one"]
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(result.metrics))
    state = torch.load(out / "weights.pt", weights_only=True)
    assert any(k.startswith("encoders.audio.") for k in state) and any(k.startswith("heads.concat.") for k in state)


def test_reloaded_checkpoint_predicts_the_same(small_run):
    result, recipe, out = small_run
    model, _ = load_checkpoint(out)
    data = limit_data(load_recipe_data(recipe), 40)
    inputs = {}
    for m in recipe.modalities:
        inputs.update({k: torch.from_numpy(v) for k, v in next(batched_inputs(data, m, recipe, out / "tokenizer.json", batch=8)).items()})
    np.testing.assert_allclose(model.predict_proba(inputs), result.model.predict_proba(inputs), atol=1e-6)


def test_bad_checkpoint_path_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist; train one with `mmedge train"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not an mmedge checkpoint: missing \\['recipe.json', 'weights.pt'\\]"):
        load_checkpoint(tmp_path / "empty")


def test_checkpoint_of_another_format_version(small_run, tmp_path):
    _, _, out = small_run
    other = tmp_path / "old"
    other.mkdir()
    meta = json.loads((out / "recipe.json").read_text())
    (other / "recipe.json").write_text(json.dumps({**meta, "format": "mmedge.checkpoint/0"}))
    (other / "weights.pt").write_bytes((out / "weights.pt").read_bytes())
    with pytest.raises(CheckpointError, match="format 'mmedge.checkpoint/0'; this mmedge .* reads 'mmedge.checkpoint/1'"):
        load_checkpoint(other)


def test_recipe_needing_a_modality_the_data_lacks():
    recipe = get_recipe("digits-av")
    data = load_recipe_data(get_recipe("digits-match"))
    with pytest.raises(DataError, match="needs modalities \\['audio'\\] but dataset 'digits-match' has only \\['image', 'text'\\]"):
        check_data(recipe, data)
