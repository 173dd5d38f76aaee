"""Recipes, registries of encoders/recipes, and their errors."""
import json

import pytest

from mmedge.config import MemberConfig, Recipe, get_recipe, list_recipes, recipe_for_data
from mmedge.encoders import create_encoder, list_encoders
from mmedge.errors import ConfigError, RegistryError


def test_builtin_recipes():
    assert list_recipes() == ["digits-av", "digits-match"]
    av = get_recipe("digits-av")
    assert av.modalities == ("image", "text", "audio")
    assert [m.head for m in av.members[:4]] == ["concat", "bilinear", "cross_attention", "contrastive"]
    assert [(m.name, m.seed) for m in av.members[4:]] == [("contrastive_2", 13), ("contrastive_3", 23),
                                                          ("concat_2", 10), ("cross_attention_2", 12)]
    assert len({m.name for m in av.members}) == len({m.seed for m in av.members}) == 8
    assert get_recipe("digits-match").task == "matching"


def test_unknown_recipe_lists_valid_choices():
    with pytest.raises(RegistryError, match="unknown recipe 'digits'; valid choices: digits-av, digits-match"):
        get_recipe("digits")


def test_unknown_encoder_lists_valid_choices():
    assert list_encoders() == ["audio_cnn", "efficientnet_lite0", "efficientnet_lite0_s16", "minilm_l6"]
    with pytest.raises(RegistryError, match="unknown encoder 'resnet50'.*audio_cnn, efficientnet_lite0, efficientnet_lite0_s16, minilm_l6"):
        create_encoder("resnet50")


def test_recipe_round_trips_through_json():
    r = get_recipe("digits-av").replace(subset=100)
    assert Recipe.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_member_using_a_modality_the_recipe_lacks_is_an_error():
    with pytest.raises(ConfigError, match="member 'm' uses modalities \\['audio'\\] that recipe 'x' lacks"):
        Recipe(name="x", dataset="digits-match", task="matching", modalities=("image", "text"),
               members=(MemberConfig("m", "concat", ("image", "audio")),))


def test_unknown_keys_and_values_are_errors():
    d = get_recipe("digits-av").to_dict()
    with pytest.raises(ConfigError, match="unknown Recipe keys \\['epochz'\\]"):
        Recipe.from_dict({**d, "epochz": 3})
    with pytest.raises(ConfigError, match="unknown ensemble method 'best'"):
        Recipe.from_dict({**d, "ensemble": "best"})
    with pytest.raises(ConfigError, match="unknown task 'regression'"):
        Recipe.from_dict({**d, "task": "regression"})


def test_recipe_for_user_data():
    r = recipe_for_data("my.jsonl", ("image", "text"))
    assert r.modalities == ("image", "text") and len(r.members) == 4
    single = recipe_for_data("my.jsonl", ("audio",))
    assert {m.head for m in single.members} == {"concat"}


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(batch_size=-1), dict(encoder_epochs=0), dict(modality_dropout=1.0),
                                 dict(label_smoothing=1.0), dict(encoder_lr=0.0), dict(encoder_batch_size=0),
                                 dict(encoder_weight_decay=-1.0)])
def test_bad_training_settings_are_errors(bad):
    from mmedge.config import TrainConfig

    with pytest.raises(ConfigError, match="invalid training settings"):
        TrainConfig(**bad)


def test_subset_must_be_at_least_two():
    with pytest.raises(ConfigError, match="subset must be at least 2"):
        get_recipe("digits-av").replace(subset=1)
