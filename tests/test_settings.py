"""The typed settings (nucseg_utils/core/settings.py): each default written once, the
profiles as changes of the cpu recipe, a flat record read back with its unknown and missing
keys named."""
import dataclasses

import pytest

from nucseg_utils.core import profiles, settings
from nucseg_utils.core.settings import Recipe, RecipeError


@pytest.mark.parametrize("name", list(profiles.PROFILES))
def test_each_profile_is_its_recipe_and_reads_back_to_it(name):
    flat = profiles.get_profile(name)
    assert flat["name"] == name
    assert Recipe.from_flat(flat) == profiles.RECIPES[name]
    assert {k: v for k, v in flat.items() if k != "name"} == profiles.PROFILES[name]


def test_the_cpu_recipe_is_the_field_defaults_and_the_others_name_only_their_changes():
    cpu = profiles.get_profile("cpu")
    assert Recipe().flat() == cpu
    assert cpu["decoder_filters"] == list(settings.Network().decoder_filters)
    release = profiles.get_profile("release")
    changed = {k for k in cpu if cpu[k] != release[k]}
    assert changed == {"name", "train_splits", "train_labels", "split_by", "balance_modalities",
                       "balance_by"}
    # a group's default is one field: changing it moves every profile that does not set it
    assert dataclasses.fields(settings.Network)[0].default == cpu["backbone"] == "resnet18"


def test_a_record_with_an_unknown_or_a_missing_key_is_refused_by_name():
    flat = profiles.get_profile("smoke")
    with pytest.raises(RecipeError, match="run.json: unknown setting 'epoch'"):
        Recipe.from_flat({**flat, "epoch": 3}, where="run.json")
    del flat["loss"]
    with pytest.raises(RecipeError, match="run.json: missing setting 'loss'"):
        Recipe.from_flat(flat, where="run.json")
    flat = profiles.get_profile("smoke", augmentation={"stain": 0.2})
    flat["augmentation"]["twirl"] = 1.0
    with pytest.raises(RecipeError, match="unknown augmentation setting 'twirl'|twirl"):
        Recipe.from_flat(flat)
    with pytest.raises(RecipeError, match="unknown profile parameter 'epoch'"):
        profiles.get_profile("smoke", epoch=3)


def test_a_record_older_than_a_key_reads_with_the_value_of_before():
    """A run.json written before ``micro_batch``, ``decoder_filters`` ... and the object
    filters existed: those keys take the values that kept the behaviour of then."""
    old = {k: v for k, v in profiles.get_profile("cpu").items()
           if k not in settings.LEGACY and k not in ("min_size_factor", "min_mean_prob",
                                                    "distance_seed", "exclude_border")}
    recipe = Recipe.from_flat(old)
    assert recipe.network.decoder_filters == tuple(settings.LEGACY["decoder_filters"])
    assert recipe.training.split_seed is None and recipe.training.micro_batch is None
    assert recipe.postprocess.min_mean_prob == settings.PostprocessSettings().min_mean_prob
    assert profiles.complete(old)["split_seed"] == old["seed"]


def test_changes_are_typed_and_stain_is_kept_only_when_on():
    smoke = profiles.RECIPES["smoke"]
    stained = smoke.replace(augmentation={"stain": 0.3}, epochs=5)
    assert stained.training.augmentation.stain == 0.3 and stained.training.epochs == 5
    assert stained.training.augmentation.rotation == smoke.training.augmentation.rotation
    assert "stain" not in smoke.flat()["augmentation"]
    assert stained.flat()["augmentation"]["stain"] == 0.3
    assert isinstance(stained.network.targets, tuple)
    assert isinstance(stained.flat()["targets"], list)
