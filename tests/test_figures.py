"""Figures: every helper returns the matplotlib Figure, writes its PNG to the stable name,
and writes the same bytes for the same inputs (no timestamp, no random jitter)."""
import numpy as np
import pandas as pd
import pytest

from nucseg_utils import big
from nucseg_utils.evaluation import metrics
from nucseg_utils.report import figures


def _labels():
    lab = np.zeros((48, 64), np.int32)
    lab[5:15, 5:15], lab[5:15, 15:25], lab[30:40, 30:45] = 1, 2, 3
    return lab


def _image(lab):
    rng = np.random.default_rng(0)
    return np.clip(np.repeat((lab > 0)[..., None], 3, -1) * 0.7 + rng.random(lab.shape + (3,))
                   * 0.2, 0, 1).astype(np.float32)


def _per_image():
    rng = np.random.default_rng(1)
    return pd.DataFrame({"id": [f"img{i:03d}" for i in range(30)],
                         "dsb": rng.random(30),
                         "modality": ["fluorescence"] * 20 + ["stained"] * 10})


def _stained(lab):
    """Purple nuclei on a white background: a bright background that normalize inverts."""
    img = np.ones(lab.shape + (3,), np.float32) * 0.92
    img[lab > 0] = (0.45, 0.2, 0.6)
    return img


def _sized(diameter, shape=(64, 80)):
    """Labels of square-ish nuclei about ``diameter`` px across, and an image of them."""
    lab = np.zeros(shape, np.int32)
    k = 0
    for r in range(2, shape[0] - diameter, diameter + 3):
        for c in range(2, shape[1] - diameter, diameter + 3):
            k += 1
            lab[r:r + diameter, c:c + diameter] = k
    return lab


DRAW = {
    "normalisation": lambda path: figures.normalisation(
        [("fluorescence", "f" * 10, _image(_labels())),
         ("stained", "s" * 10, _stained(_labels()))], path, "profile: smoke"),
    "colour": lambda path: figures.colour_augmentation(_stained(_labels()), path, "stamp",
                                                       seed=3, n=5),
    "colour_stain": lambda path: figures.colour_augmentation(_stained(_labels()), path,
                                                             "stamp", seed=3, n=4, stain=0.3),
    "rescaling": lambda path: figures.rescaling(
        [(f"{d:02d}" * 5, _image(_sized(d)), _sized(d)) for d in (4, 10, 24)],
        [2.0, 1.0, 0.5], path, "stamp", target=10, window=48),
    "rescaling_no_target": lambda path: figures.rescaling(
        [("a" * 10, _image(_labels()), _labels())], [1.0], path, "stamp", target=None),

    "per_image": lambda path: figures.per_image_scores(_per_image(), path, "profile: smoke"),
    "overlay": lambda path: figures.overlay(_image(_labels()), _labels(), path, "stamp", "x"),
    "big_seams": lambda path: figures.tile_seams(
        _image(_labels()), _labels(), big.tile_grid(_labels().shape, 40, 8), path, "stamp", "x"),
    "big_stitch_rules": lambda path: figures.stitch_rules(
        _image(_labels()), _labels(), {k: list(figures.FATE_COLOURS)[k % 3]
                                       for k in range(1, int(_labels().max()) + 1)},
        (10, 50, 10, 50), path, "stamp", "x"),
    "difference": lambda path: figures.difference(
        [("a" * 10, _image(_labels()), _labels(), _labels()[::-1], 0.5)], path),
    "errors": lambda path: figures.object_errors(
        [("b" * 10, _image(_labels()), _labels(), _labels()[:, ::-1],
          metrics.object_errors(_labels(), _labels()[:, ::-1]), 0.2)], path),
    "iou_curve": lambda path: figures.iou_threshold_curve(pd.DataFrame(
        metrics.dataset_scores([(_labels(), _labels())])["per_threshold"]), path),
}


@pytest.mark.parametrize("name", sorted(DRAW))
def test_a_figure_is_returned_and_written_twice_to_the_same_bytes(name, tmp_path):
    from matplotlib.figure import Figure
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    fig = DRAW[name](first)
    DRAW[name](second)
    assert isinstance(fig, Figure) and fig.nucseg_path == first
    assert first.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert first.read_bytes() == second.read_bytes()


def test_saved_pngs_carry_no_software_or_time_metadata(tmp_path):
    figures.per_image_scores(_per_image(), tmp_path / "f.png")
    data = (tmp_path / "f.png").read_bytes()
    assert b"Software" not in data and b"tIME" not in data and b"Creation" not in data


def test_a_returned_figure_is_off_pyplots_list_but_still_draws(tmp_path):
    import io

    import matplotlib.pyplot as plt
    fig = figures.per_image_scores(_per_image(), tmp_path / "f.png")
    assert fig.number not in plt.get_fignums()  # shown once, as the cell's value
    buf = io.BytesIO()
    fig.savefig(buf, format="png")  # what a notebook's inline display does
    assert buf.getvalue()[:4] == b"\x89PNG"


def test_figures_never_choose_the_backend():
    import inspect
    assert "matplotlib.use(" not in inspect.getsource(figures)


def test_object_error_colours_are_distinct_and_cover_every_class():
    assert set(figures.ERROR_COLOURS) == set(metrics.ERROR_CLASSES)
    assert len(set(figures.ERROR_COLOURS.values())) == len(figures.ERROR_COLOURS)


def test_new_figures_of_notebook_02_have_stable_registered_names():
    for key, name in (("normalisation", "preprocessing_normalisation.png"),
                      ("colour", "augmentation_colour.png"),
                      ("rescaling", "preprocessing_rescaling.png")):
        assert figures.NAMES[key] == name
    assert len(set(figures.NAMES.values())) == len(figures.NAMES)


def test_normalisation_titles_say_modality_size_and_inversion(tmp_path):
    fig = figures.normalisation([("fluorescence", "f" * 10, _image(_labels())),
                                 ("stained", "s" * 10, _stained(_labels()))],
                                tmp_path / "n.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert "fluorescence: ffffffff, 48x64, raw" in titles
    assert "stained: ssssssss, 48x64, raw" in titles
    assert titles.count("normalised (percentile), background inverted") == 1
    assert titles.count("normalised (percentile), background not inverted") == 1


def test_rescaling_titles_give_the_measured_diameters_and_factors(tmp_path):
    lab = _sized(10)
    fig = figures.rescaling([("x" * 10, _image(lab), lab)], [2.0], tmp_path / "r.png",
                            target=20, window=48)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "xxxxxxxx: 64x80, d = 11.3 px"  # a 10x10 square: 2 sqrt(100/pi)
    assert titles[1] == "x 2.00: 128x160, d = 22.6 px"


# --------------------------------------------------------------------------- notebooks 04-07
def _big_labels(shape=(300, 420)):
    """Nuclei of 12x12 px on a grid, the large image of the crop tests."""
    return _sized(12, shape)


def _variants(lab):
    """8 'TTA variants' of a probability map: the mask, blurred differently in each."""
    from scipy import ndimage as ndi
    base = (lab > 0).astype(np.float32)
    return [(f"v{k}", np.clip(ndi.gaussian_filter(base, 0.5 + 0.3 * k), 0, 1))
            for k in range(8)]


def _two_channel(lab):
    from scipy import ndimage as ndi
    nucleus = ndi.gaussian_filter((lab > 0).astype(np.float32), 1.0)
    grown = ndi.grey_dilation(lab, size=3)
    touch = ((grown != lab) & (lab > 0)).astype(np.float32)
    return np.stack([nucleus, touch], -1)


def _split_case():
    """One true nucleus (20x21 px) predicted as three vertical pieces."""
    true = np.zeros((40, 40), np.int32)
    true[10:30, 10:31] = 1
    pred = np.zeros_like(true)
    pred[10:30, 10:17], pred[10:30, 17:24], pred[10:30, 24:31] = 1, 2, 3
    return true, pred


def _tta(path, big=False):
    lab = _big_labels() if big else _labels()
    v = _variants(lab)
    return figures.tta_variants(_image(lab), v, np.mean([p for _, p in v], 0), path, "stamp")


def _disagreement(path, big=False):
    lab = _big_labels() if big else _labels()
    stack = np.stack([p for _, p in _variants(lab)])
    return figures.tta_disagreement(_image(lab), stack.mean(0), stack.std(0), path, "stamp")


def _seeded(path):
    from nucseg_utils import postprocessing
    lab = _labels()
    steps = postprocessing.touching_steps(_two_channel(lab), 0.5, 4)
    return figures.seeded_watershed(_image(lab), lab, steps, path, "stamp")


def _paper(path):
    from nucseg_utils import postprocessing
    lab = _labels()
    steps = postprocessing.paper_steps(_two_channel(lab)[..., 0], 0.5, 4)
    return figures.paper_watershed(_image(lab), lab, steps, path, "stamp",
                                   (slice(0, 40), slice(0, 40)))


DRAW_04_07 = {
    "tta": _tta,
    "tta_big": lambda path: _tta(path, big=True),
    "disagreement": _disagreement,
    "disagreement_big": lambda path: _disagreement(path, big=True),
    "seeded": _seeded,
    "paper": _paper,
    "predictions": lambda path: figures.predictions(
        [(f"{k}" * 10, _image(_labels()), _labels(), f"DSB 0.{k}") for k in range(4)], path),
    "errors_big": lambda path: figures.object_errors(
        [("c" * 10, _image(_big_labels()), _big_labels(), _big_labels()[:, ::-1],
          metrics.object_errors(_big_labels(), _big_labels()[:, ::-1]), 0.1)], path),
    "difference_big": lambda path: figures.difference(
        [("d" * 10, _image(_big_labels()), _big_labels(), _big_labels()[::-1], 0.3)], path),
    "measurements": lambda path: figures.nucleus_measurements(
        pd.DataFrame({"label": [1, 2, 3], "area": [80.0, 120.0, 95.0]}),
        pd.DataFrame({"id": ["img0", "img1"], "nuclei": [2, 1]}), path, "stamp"),
}
DRAW.update(DRAW_04_07)


@pytest.mark.parametrize("name", sorted(DRAW_04_07))
def test_a_figure_of_notebooks_04_07_is_returned_and_written_twice_to_the_same_bytes(
        name, tmp_path):
    test_a_figure_is_returned_and_written_twice_to_the_same_bytes(name, tmp_path)


def _shown(ax):
    """The array an axis shows (its first image)."""
    return np.asarray(ax.images[0].get_array())


def test_a_split_is_drawn_as_the_outline_of_every_piece_over_the_one_true_nucleus():
    true, pred = _split_case()
    errors = metrics.object_errors(true, pred)
    assert errors["counts"]["true_split"] == 1 and errors["counts"]["pred_split"] == 3
    rgb = figures.error_rgb(_image(true), true, pred, errors)
    orange = np.asarray(figures.ERROR_COLOURS["split"], np.float32)
    is_orange = np.all(np.isclose(rgb, orange), axis=-1)
    # the two cuts between the pieces are drawn (each piece outlined), the pieces are not
    # filled: their insides stay darker than the outline
    assert is_orange[15:25, 16].all() and is_orange[15:25, 17].all()
    assert is_orange[15:25, 23].all() and is_orange[15:25, 24].all()
    for centre in (13, 20, 27):
        assert not is_orange[15:25, centre].any()
        assert (rgb[15:25, centre].mean(-1) < orange.mean()).all()


def test_a_merge_is_drawn_as_the_one_predicted_outline_over_the_true_nuclei():
    true, pred = _split_case()  # the three pieces as the truth, the one nucleus predicted
    errors = metrics.object_errors(pred, true)
    assert errors["counts"]["pred_merged"] == 1
    rgb = figures.error_rgb(_image(pred), pred, true, errors)
    magenta = np.asarray(figures.ERROR_COLOURS["merged"], np.float32)
    is_magenta = np.all(np.isclose(rgb, magenta), axis=-1)
    assert is_magenta[10, 10:31].all() and is_magenta[20, 10] and is_magenta[20, 30]
    assert not is_magenta[12:28, 12:29].any()  # inside: the true outlines (white), lightly tinted


@pytest.mark.parametrize("draw", ["errors_big", "difference_big"])
def test_a_large_image_is_shown_as_a_readable_crop_that_says_so(draw, tmp_path):
    fig = DRAW[draw](tmp_path / "f.png")
    assert _shown(fig.axes[0]).shape[:2] == (256, 256)
    assert "256x256 px crop of 300x420" in fig.axes[0].get_title()


def test_a_small_image_is_shown_whole(tmp_path):
    fig = figures.object_errors(
        [("b" * 10, _image(_labels()), _labels(), _labels()[:, ::-1],
          metrics.object_errors(_labels(), _labels()[:, ::-1]), 0.2)], tmp_path / "e.png")
    assert _shown(fig.axes[0]).shape[:2] == (48, 64)
    assert "crop" not in fig.axes[0].get_title()


def test_tta_figures_crop_large_images_to_where_the_variants_differ_and_mark_it(tmp_path):
    fig = DRAW["tta_big"](tmp_path / "t.png")
    maps = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    assert len(maps) == 10 and all(_shown(ax).shape[:2] == (192, 192) for ax in maps)
    assert sum(ax.get_label() == "<colorbar>" for ax in fig.axes) == 1
    fig = DRAW["disagreement_big"](tmp_path / "d.png")
    assert len(fig.axes[0].patches) == 1  # the window of the variants' figure
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"] == \
        ["nucleus probability", "standard deviation"]
    fig = DRAW["disagreement"](tmp_path / "s.png")
    assert not fig.axes[0].patches  # small: shown whole, nothing to mark


def test_every_probability_map_of_notebook_05_has_a_colour_bar(tmp_path):
    fig = DRAW["seeded"](tmp_path / "s.png")
    assert sum(ax.get_label() == "<colorbar>" for ax in fig.axes) == 2
    fig = DRAW["paper"](tmp_path / "p.png")
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"] == ["px"]
    assert "40x40 px crop of 48x64" in fig.axes[0].get_title()


def test_the_threshold_curve_names_object_scores_and_labels_its_axes(tmp_path):
    fig = DRAW["iou_curve"](tmp_path / "c.png")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[:3] == ["object precision", "object recall", "object F1"]
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)


# --------------------------------------------------------------------------- notebooks 01-03
def _index():
    rng = np.random.default_rng(2)
    n = 40
    return pd.DataFrame({
        "id": [f"img{i:03d}" for i in range(n)],
        "split": ["stage1_train"] * 30 + ["stage1_test"] * 10,
        "height": rng.choice([256, 520], n), "width": rng.choice([256, 696], n),
        "modality": rng.choice(["fluorescence", "stained", "brightfield"], n),
        "nuclei": rng.integers(1, 80, n), "mean_area": rng.uniform(50, 2000, n)})


def _history(val_loss=(1.2, 0.9, 0.7, 0.6, 0.55)):
    n = len(val_loss)
    epoch = np.arange(1, n + 1)
    return pd.DataFrame({"epoch": epoch, "step": epoch * 100,
                         "loss": np.linspace(1.1, 0.6, n), "iou": np.linspace(0.5, 0.77, n),
                         "f1": np.linspace(0.66, 0.87, n), "val_loss": val_loss,
                         "val_iou": np.linspace(0.4, 0.83, n),
                         "val_f1": np.linspace(0.57, 0.91, n),
                         "lr": np.linspace(1e-3, 0, n), "seconds": epoch * 180.0})


def _batch(n=3):
    lab = _labels()[:48, :48]
    x = np.stack([_image(lab)] * n)
    y = np.stack([np.stack([lab > 0, lab == 2], -1).astype(np.float32)] * n)
    return x, y


DRAW_01_03 = {
    "eda": lambda path: figures.eda(_index(), path, "stamp"),
    "samples": lambda path: figures.samples(
        [(f"{k}" * 10, _image(_labels()), _labels(), "fluorescence") for k in range(3)], path),
    "augmentation": lambda path: figures.augmentation(list(zip(*_batch())), path, "stamp",
                                                      ("mask", "touching")),
    "batch": lambda path: figures.training_batch(*_batch(), path, "stamp",
                                                 ("mask", "touching"), ["a", "b", "c"]),
    "curves": lambda path: figures.training_curves(_history(), path, "stamp", "bce_jaccard"),
    "metrics": lambda path: figures.training_metrics(_history(), path, "stamp", "bce_jaccard"),
}
DRAW.update(DRAW_01_03)


@pytest.mark.parametrize("name", sorted(DRAW_01_03))
def test_a_figure_of_notebooks_01_03_is_returned_and_written_twice_to_the_same_bytes(
        name, tmp_path):
    test_a_figure_is_returned_and_written_twice_to_the_same_bytes(name, tmp_path)


@pytest.mark.parametrize("draw", ["curves", "metrics"])
def test_loss_iou_and_pixel_f1_of_training_each_have_their_own_labelled_axis(draw, tmp_path):
    fig = DRAW[draw](tmp_path / "f.png")
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels == ["loss (BCE + Jaccard)", "IoU of the mask (pixels, p > 0.5)",
                      "pixel F1 of the mask (p > 0.5)"]
    texts = [t.get_text() for ax in fig.axes for t in ax.get_xticklabels()]
    assert not any(t.strip().lower() == "f1" for t in labels + texts)


def test_a_history_without_f1_draws_the_measures_it_has(tmp_path):
    fig = figures.training_curves(_history().drop(columns=["f1", "val_f1"]), tmp_path / "c.png")
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "IoU of the mask (pixels, p > 0.5)"]


def test_every_target_row_of_a_batch_has_a_colour_bar_saying_what_its_values_mean(tmp_path):
    fig = DRAW["batch"](tmp_path / "b.png")
    bars = [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert bars == [figures.TARGET_WORDS["mask"], figures.TARGET_WORDS["touching"]]


def test_the_eda_panels_name_both_axes(tmp_path):
    fig = DRAW["eda"](tmp_path / "e.png")
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
    assert [ax.get_ylabel() for ax in fig.axes].count("images") == 3


def test_the_samples_figure_counts_each_images_nuclei(tmp_path):
    fig = DRAW["samples"](tmp_path / "s.png")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[:2] == ["00000000: fluorescence, 48x64 px", "ground truth: 3 nuclei"]


# ---------------------------------------------- notebook 03's sentence and the lever table
def _lever_table(longer_dsb=0.5620):
    """A lever table as `nucseg publish` writes it: the published 15-epoch recipe (without and
    with the object filters), a 40-epoch candidate of the same recipe (calibrated to another
    threshold, no filters), and candidates that differ in something else than the length of
    training (a seed, stain augmentation, a training option of its own)."""
    from nucseg_utils.core import profiles
    from nucseg_utils.evaluation import calibration
    cpu = profiles.get_profile("cpu")
    train = "nucseg train --profile cpu --out runs/x"

    def row(lever, dsb, model, candidate=True, command=train):
        return {"lever": ("candidate, not published: " if candidate else "") + lever,
                "validation_dsb": dsb, "model": model, "command": command}

    def recipe(prof, threshold, filters=False):
        extra = {"min_size_factor": 0.1, "min_mean_prob": 0.85} if filters else {}
        return calibration.recipe_name({**prof, "threshold": threshold, **extra}, prof)

    return pd.DataFrame([
        row(recipe(cpu, 0.6), 0.5655, "published", candidate=False),
        row(recipe(cpu, 0.6, filters=True), 0.5793, "filtered", candidate=False),
        row("without TTA", 0.5462, "published", candidate=False),
        row(recipe(profiles.get_profile("cpu", epochs=40), 0.7), longer_dsb, "longer",
            command=train + " --epochs 40"),
        row(recipe(cpu, 0.6, filters=True), 0.5662, "typebal",
            command=train + " --balance-by type --balance-modalities 1"),
        row(recipe(profiles.get_profile("cpu", seed=44), 0.6), 0.5581, "seed44"),
        row(recipe(profiles.get_profile("cpu", epochs=18, augmentation={"stain": 0.3}), 0.7),
            0.5539, "stain18")])


def test_training_lengths_keeps_the_rows_that_differ_only_in_epochs():
    from nucseg_utils.core import profiles
    from nucseg_utils.report import training_steps
    lengths = training_steps.training_lengths(_lever_table(), profiles.get_profile("cpu"))
    assert lengths["epochs"].tolist() == [15, 15, 40]          # not the type-balanced run
    assert lengths["model"].tolist() == ["published", "filtered", "longer"]
    assert lengths["object filters"].tolist() == [False, True, False]
    assert lengths["published"].tolist() == [True, True, False]
    other = training_steps.training_lengths(_lever_table(), profiles.get_profile("smoke"))
    assert not len(other)


def test_the_sentence_on_more_epochs_says_what_the_lever_table_measured():
    from nucseg_utils.core import profiles
    from nucseg_utils.report import training_steps
    falling = _history(val_loss=(0.9, 0.7, 0.6, 0.58, 0.55) + (0.54,) * 9 + (0.538,))
    cpu = profiles.get_profile("cpu")
    not_better = training_steps.history_markdown(
        falling, training_steps.training_lengths(_lever_table(0.5620), cpu))
    # like for like: against the 15-epoch run without the object filters, not the 0.5793
    assert ("40 epochs scored 0.5620 against 0.5655 for 15 epochs (both without the object "
            "filters)") in not_better and "0.5793" not in not_better
    assert "more epochs did **not** help" in not_better and "probably" not in not_better
    within = training_steps.history_markdown(
        falling, training_steps.training_lengths(_lever_table(0.5700), cpu))
    assert "did **not** help (a difference within the 0.011" in within
    better = training_steps.history_markdown(
        falling, training_steps.training_lengths(_lever_table(0.5800), cpu))
    assert "training longer did help" in better
    unmeasured = training_steps.history_markdown(falling)
    assert "still falling" in unmeasured and "not measured" in unmeasured
    assert "helped" not in unmeasured.replace("would have helped is not measured", "")
