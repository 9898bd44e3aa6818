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


DRAW = {
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
