"""Figures: every helper returns the matplotlib Figure, writes its PNG to the stable name,
and writes the same bytes for the same inputs (no timestamp, no random jitter)."""
import numpy as np
import pandas as pd
import pytest

from nucseg_utils import figures, metrics


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
