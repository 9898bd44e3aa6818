"""Calibration: the post-processing chosen on validation images, the candidates tried, and the
names of the lever rows (nucseg_utils/evaluation/calibration.py)."""
import numpy as np
import pandas as pd
import pytest

from nucseg_utils.core import profiles


def test_the_post_processing_tried_follows_the_models_outputs():
    from nucseg_utils.evaluation.calibration import candidates
    from nucseg_utils.postprocessing import DISTANCE_SEEDS
    methods = [{c["postprocess"] for c in candidates(t)}
               for t in (["mask"], ["mask", "touching"], ["mask", "touching", "distance"])]
    assert methods == [{"paper", "cc"}, {"paper", "cc", "touching"},
                       {"paper", "cc", "touching", "distance"}]
    seeds = {c["distance_seed"] for c in candidates(["mask", "touching", "distance"])
             if c["postprocess"] == "distance"}
    assert seeds == set(DISTANCE_SEEDS)


def test_the_lever_table_names_the_other_seeded_watershed_of_a_three_output_model():
    from nucseg_utils.evaluation.calibration import other_seeded_watershed
    table = pd.DataFrame([
        {"postprocess": "touching", "threshold": 0.6, "distance_seed": None, "dilation": 0,
         "dsb": 0.55},
        {"postprocess": "distance", "threshold": 0.5, "distance_seed": 0.7, "dilation": 1,
         "dsb": 0.53},
        {"postprocess": "distance", "threshold": 0.6, "distance_seed": 0.4, "dilation": 0,
         "dsb": 0.54},
        {"postprocess": "paper", "threshold": None, "distance_seed": None, "dilation": 0,
         "dsb": 0.50}])
    assert other_seeded_watershed(table, "touching") == (
        "the distance-map watershed instead (its best: threshold 0.6, seeds above 0.4, "
        "dilation 0)", 0.54)
    assert other_seeded_watershed(table, "distance") == (
        "the touching-zone watershed instead (its best: threshold 0.6, dilation 0)", 0.55)
    assert other_seeded_watershed(table[table["postprocess"] != "distance"], "touching") is None
    assert other_seeded_watershed(table, "paper") is None


def test_the_recipe_name_says_what_the_training_did():
    from nucseg_utils.evaluation.calibration import recipe_name
    cfg = {"target_diameter": 20, "tta": True, "postprocess": "touching", "threshold": 0.6}
    cpu = profiles.get_profile("cpu", epochs=18, augmentation={"stain": 0.3})
    name = recipe_name(cfg, cpu)
    assert name.startswith("chosen recipe: resnet18 U-Net, decoder 64-32-16-16-16, "
                           "18 epochs x 100 steps, stain augmentation 0.3, "
                           "nuclei rescaled to 20 px")
    assert "stain" not in recipe_name(cfg, profiles.get_profile("cpu"))
    dist = profiles.get_profile("cpu", targets=["mask", "touching", "distance"])
    name = recipe_name({**cfg, "postprocess": "distance", "distance_seed": 0.4}, dist)
    assert "a third output: the distance to the nucleus' edge" in name
    assert name.endswith("distance watershed at threshold 0.6, seeds above 0.4, dilation 0 px")
    assert "seed" not in recipe_name(cfg, profiles.get_profile("cpu"))
    assert ", 15 epochs x 100 steps, seed 43, nuclei" in recipe_name(
        cfg, profiles.get_profile("cpu", seed=43))
    hed = profiles.get_profile("cpu", normalization="haematoxylin")
    assert "stained tissue unmixed to its haematoxylin channel" in recipe_name(cfg, hed)
    assert recipe_name(cfg) == ("chosen recipe: nuclei rescaled to 20 px (training and test), "
                                "8-fold TTA, touching at threshold 0.6, dilation 0 px")


class _Truth:
    """A stand-in source: ``sample(id).labels`` is the ground truth."""
    def __init__(self, labels):
        self._labels = labels

    def sample(self, sid):
        from types import SimpleNamespace
        return SimpleNamespace(labels=self._labels[sid])


def _disc_image(centres, shape=(96, 96), radius=8):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lab = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centres, 1):
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = i
    return lab


def test_calibration_adds_the_object_filter_that_removes_faint_false_nuclei(smoke_run,
                                                                           tmp_path):
    """Nuclei predicted at 0.99 and false ones at 0.8 (above every threshold tried): only a
    minimum mean probability removes them, and calibration chooses it, reports its row and
    the lever without it; without false nuclei no filter is chosen (a tie keeps none)."""
    from nucseg_utils.evaluation import calibration
    truth, probs = {}, {}
    for k in range(3):
        lab = _disc_image([(20, 20), (20, 70), (70, 45)])
        false = _disc_image([(75, 12), (10, 45)], radius=5)
        nucleus = np.where(lab > 0, 0.99, np.where(false > 0, 0.8, 0.0)).astype(np.float32)
        truth[f"im{k}"] = lab
        probs[f"im{k}"] = np.stack([nucleus, np.zeros_like(nucleus)], axis=-1)
    predicted = [(_Truth(truth), probs)]
    model = smoke_run / "model.npz"
    chosen, table, _ = calibration.select_postprocessing(model, smoke_run, predicted=predicted)
    assert chosen["min_mean_prob"] >= 0.85 and chosen["min_size_factor"] == 0.0
    filtered = table[table["min_mean_prob"] == chosen["min_mean_prob"]]
    assert filtered["dsb"].max() == pytest.approx(1.0)
    assert calibration.unfiltered(table)["dsb"].max() < 0.7  # 3 of 5 objects right
    clean = [(_Truth(truth), {k: np.where(v > 0.9, v, 0.0) for k, v in probs.items()})]
    chosen, _, _ = calibration.select_postprocessing(model, smoke_run, predicted=clean)
    assert chosen["min_mean_prob"] == 0.0 and chosen["min_size_factor"] == 0.0
    # a model calibrated before (its filter in its calibration) is calibrated again the same
    # way: its grid rows are scored without the filter they are listed without
    import shutil

    from nucseg_utils.model import save_calibration
    again = shutil.copy(model, tmp_path / "calibrated.npz")
    save_calibration(again, {"min_mean_prob": 0.85})
    _, table_again, _ = calibration.select_postprocessing(again, smoke_run, predicted=predicted)
    assert calibration.unfiltered(table_again)["dsb"].max() < 0.7
    assert table_again["dsb"].tolist() == table["dsb"].tolist()


# --------------------------------------------------------------------------- a new method
def _toy_steps(prob, sigma, min_size):
    """A toy method: the nucleus probability smoothed by ``sigma`` px, above 0.5, in parts."""
    from scipy import ndimage as ndi

    from nucseg_utils.postprocessing import nucleus_channel, remove_small
    fg = ndi.gaussian_filter(nucleus_channel(prob), sigma) > 0.5
    return {"foreground": fg, "labels": remove_small(ndi.label(fg)[0], min_size)}


@pytest.fixture
def toy(monkeypatch):
    """CONTRIBUTING.md's walk-through, done: a post-processing method with a parameter of its
    own (``sigma``), added as a field of the settings and one registry entry."""
    import dataclasses

    from nucseg_utils.postprocessing import methods
    toy_settings = dataclasses.make_dataclass(
        "ToySettings", [("sigma", float, dataclasses.field(
            default=1.0, metadata={"label": "smoothing (px)"}))],
        bases=(methods.PostprocessSettings,), frozen=True)
    monkeypatch.setattr(methods, "PostprocessSettings", toy_settings)
    monkeypatch.setitem(methods.METHODS, "toy", None)  # removed again after the test
    return methods.register(methods.Method(
        "toy", 1, "the probability smoothed, then its connected parts", ("sigma", "min_size"),
        {"sigma": (0.5, 2.0), "dilation": (0,)}, _toy_steps,
        lambda pp: f"nucleus probability smoothed by {pp['sigma']:g} px, above 0.5, each "
                   f"connected part one nucleus",
        lambda pp: f"toy at sigma {pp['sigma']:g}", calibration_rank=4))


def test_a_registered_method_with_a_new_setting_reaches_every_reader(toy, smoke_run):
    """Calibration tries its grid and tables its setting, the command line offers it, the
    model package's documentation and the results file describe it; its setting is a
    keyword of postprocess, with a default, and a misspelt one is refused by name."""
    from nucseg_utils import cli, postprocessing
    from nucseg_utils.evaluation import calibration
    from nucseg_utils.exports import modelzoo, publishing
    tried = [c for c in calibration.candidates(["mask"]) if c["postprocess"] == "toy"]
    assert tried == [{"postprocess": "toy", "sigma": s, "dilation": 0} for s in (0.5, 2.0)]
    assert "sigma" in calibration.setting_columns()

    truth = {"im": _disc_image([(20, 20), (20, 70), (70, 45)])}
    probs = {"im": np.stack([(truth["im"] > 0).astype(np.float32)] * 2, axis=-1)}
    chosen, table, _ = calibration.select_postprocessing(
        smoke_run / "model.npz", smoke_run, predicted=[(_Truth(truth), probs)], filters=False)
    rows = table[table["postprocess"] == "toy"]
    assert sorted(rows["sigma"]) == [0.5, 2.0] and rows["dsb"].max() > 0.9

    labels = postprocessing.postprocess(probs["im"], "toy", sigma=2.0)
    assert labels.max() == 3
    with pytest.raises(ValueError, match="sgima"):
        postprocessing.postprocess(probs["im"], "toy", sgima=2.0)

    args = cli.build_parser().parse_args(["predict", "--images", "in", "--out", "out",
                                          "--postprocess", "toy"])
    assert args.postprocess == "toy"
    assert "smoothed by 2 px" in modelzoo._doc_labels_step({"postprocess": "toy", "sigma": 2.0})
    text = "\n".join(publishing.candidates_markdown(table.to_dict("records")))
    assert "| smoothing (px) |" in text and "| toy |" in text


def test_methods_are_compared_each_at_its_own_best_with_the_models_filters(tmp_path):
    """Notebooks 5 and 6 compare the post-processing methods fairly: the model's own method
    as published, each other one at its own best validation setting (without filters in the
    candidates), the model's object filters applied to all."""
    from conftest import stub_model

    from nucseg_utils.evaluation import calibration
    path = stub_model(tmp_path / "m" / "model.npz", targets=["mask", "touching"],
                      postprocess="touching", threshold=0.6, min_size_factor=0.1,
                      min_mean_prob=0.85)
    alone, said = calibration.method_configs(path)  # no validation table: the model's settings
    assert all(c["threshold"] == 0.6 for c in alone.values()) and "unknown" in said
    rows = []
    for mdf, dsb in ((0.5, 0.47), (1.0, 0.52)):
        rows.append({"postprocess": "paper", "min_distance_factor": mdf, "dilation": 0,
                     "min_size_factor": 0.0, "min_mean_prob": 0.0, "dsb": dsb})
    rows.append({"postprocess": "paper", "min_distance_factor": 0.75, "dilation": 0,
                 "min_size_factor": 0.1, "min_mean_prob": 0.85, "dsb": 0.60})  # filtered: not it
    for th, dsb in ((0.5, 0.48), (0.7, 0.50)):
        rows.append({"postprocess": "cc", "threshold": th, "dilation": 0,
                     "min_size_factor": 0.0, "min_mean_prob": 0.0, "dsb": dsb})
    rows.append({"postprocess": "touching", "threshold": 0.4, "dilation": 1,
                 "min_size_factor": 0.0, "min_mean_prob": 0.0, "dsb": 0.70})  # not the model's
    pd.DataFrame(rows).to_csv(path.parent / "validation_postprocessing.csv", index=False)
    configs, said = calibration.method_configs(path)
    assert configs["paper"]["min_distance_factor"] == 1.0 and configs["cc"]["threshold"] == 0.7
    assert configs["touching"]["threshold"] == 0.6 and configs["touching"].get("dilation", 0) == 0
    for m, c in configs.items():
        assert c["postprocess"] == m and (c["min_size_factor"], c["min_mean_prob"]) == (0.1, 0.85)
    assert "own best setting" in said and "applied to all" in said
