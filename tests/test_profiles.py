"""Profiles: every parameter of a run, written once (nucseg_utils/core/profiles.py): copies
that cannot change the registry, overrides checked by name, the keys older runs lack, and the
`nucseg train` command that trains a recorded profile again."""
import pytest

from nucseg_utils import cli
from nucseg_utils.core import profiles


def test_a_profile_is_a_copy_that_cannot_change_the_registry():
    prof = profiles.get_profile("cpu")
    prof["augmentation"]["rotation"] = 0.0
    prof["targets"].append("distance")
    assert profiles.PROFILES["cpu"]["augmentation"]["rotation"] == 180.0
    assert profiles.PROFILES["cpu"]["targets"] == ["mask", "touching"]
    assert prof["name"] == "cpu"


def test_unknown_profiles_and_parameters_are_refused_by_name():
    with pytest.raises(profiles.ProfileError, match="unknown profile 'gpu'; choose one of "
                                                    "paper, cpu, smoke, release"):
        profiles.get_profile("gpu")
    with pytest.raises(profiles.ProfileError, match="unknown profile parameter 'epoch'"):
        profiles.get_profile("cpu", epoch=3)


def test_an_augmentation_override_changes_only_what_it_names():
    prof = profiles.get_profile("cpu", augmentation={"stain": 0.3})
    assert prof["augmentation"] == {**profiles.CROP_AUGMENTATION, "stain": 0.3}


def test_a_run_recorded_before_a_key_existed_completes_to_the_behaviour_of_its_time():
    old = {k: v for k, v in profiles.get_profile("cpu").items()
           if k not in profiles.ADDED_KEYS}
    full = profiles.complete(old)
    assert {k: full[k] for k in profiles.ADDED_KEYS if k != "split_seed"} == \
        {k: v for k, v in profiles.ADDED_KEYS.items() if k != "split_seed"}
    assert full["split_seed"] == old["seed"]  # drawn with the seed before split_seed existed
    assert profiles.complete({**old, "split_seed": 7})["split_seed"] == 7


@pytest.mark.parametrize("overrides", [
    {},
    {"epochs": 18, "seed": 43},
    {"learning_rate": 0.0005, "targets": ["mask", "touching", "distance"]},
    {"balance_by": "type", "balance_modalities": 1.0, "split_by": "type"},
    {"decoder_filters": [128, 64, 32, 16, 16], "augmentation": {"stain": 0.3}},
    {"encoder_weights": None, "backbone": "resnet34"},
])
def test_the_train_command_of_a_recorded_profile_trains_that_profile(overrides):
    recorded = profiles.get_profile("cpu", **overrides)
    words = profiles.train_command(recorded, "runs/x").split()
    assert words[:6] == ["nucseg", "train", "--profile", "cpu", "--out", "runs/x"]
    args = cli.build_parser().parse_args(words[1:])
    again = {k: getattr(args, k) for k in profiles.TRAIN_OPTIONS
             if getattr(args, k, None) is not None}
    if again.get("encoder_weights") == "none":
        again["encoder_weights"] = None
    stain = getattr(args, "stain", None)
    if stain is not None:
        again["augmentation"] = {"stain": stain}
    assert profiles.complete(profiles.get_profile("cpu", **again)) == \
        profiles.complete(recorded)


def test_a_profile_value_no_option_sets_is_named_after_the_command():
    recorded = profiles.get_profile("cpu", val_fraction=0.2)
    assert profiles.train_command(recorded, "runs/x").endswith(
        "(with the profile's val_fraction of its time)")


@pytest.mark.parametrize("batch, micro, steps", [(32, 8, 4), (32, None, 1), (16, 32, 1),
                                                  (10, 4, 3)])
def test_gradient_accumulation_covers_the_batch_in_micro_batches(batch, micro, steps):
    assert profiles.accumulation_steps({"batch_size": batch, "micro_batch": micro}) == steps


def test_a_micro_batch_below_one_image_is_refused():
    with pytest.raises(profiles.ProfileError, match="micro_batch"):
        profiles.accumulation_steps({"batch_size": 8, "micro_batch": -2})


def test_table_one_has_a_row_per_described_parameter_and_says_the_precision():
    table = profiles.describe(profiles.get_profile("paper"))
    assert list(table["parameter"])[:3] == ["encoder of the U-Net",
                                            "decoder filters per block (deepest first)",
                                            "encoder initialisation"]
    assert len(table) == len(profiles.DESCRIPTIONS) + 1  # + the paper's mixed precision
    assert "4 micro-batches of 8" in table.set_index("parameter").loc["batch size", "value"]
