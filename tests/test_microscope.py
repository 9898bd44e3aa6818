"""Files straight from a microscope, read as the microscope wrote them: named channels (the
nuclear stain chosen by its name), several channels without names (channel 0, said), and
several frames (refused in one line naming the file, never skipped in silence)."""
from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import tifffile
from skimage.draw import disk

from nucseg_utils import data, predict
from nucseg_utils.model import NucleusModel

STAND_IN = {"backbone": "stand-in", "targets": ["mask"], "input_mode": "crop",
            "normalization": "percentile", "postprocess": "cc", "threshold": 0.5,
            "min_size": 10, "tta": False}


def stand_in():
    """A network that calls nucleus whatever is bright (the mean of its input's channels)."""
    def forward(batch):
        return batch.mean(axis=-1, keepdims=True).astype(np.float32)
    return NucleusModel(None, dict(STAND_IN), _forward=(forward, "tensorflow"))


def channels(n_nuclei=(3, 5, 7), shape=(96, 96)) -> np.ndarray:
    """(C, H, W) uint16: channel c holds n_nuclei[c] bright discs, so the channel segmented
    is known from the nucleus count."""
    out = np.full((len(n_nuclei),) + shape, 200, np.uint16)
    for c, n in enumerate(n_nuclei):
        for k in range(n):
            out[c][disk((14 + (k // 4) * 26, 14 + (k % 4) * 22), 7, shape=shape)] = 40000
    return out


def _run(tmp_path, write, **opts):
    folder = tmp_path / "images"
    folder.mkdir(parents=True)
    write(folder)
    notes = []
    res = predict.predict_folder(stand_in(), data.open_images(folder), tmp_path / "out",
                                 predict.PredictOptions(formats=("measurements",), **opts),
                                 progress=False, log=notes.append)
    summary = pd.read_csv(tmp_path / "out" / "summary.csv", dtype={"id": str, "channel": str},
                          keep_default_na=False).set_index("id")
    return res, summary, notes


def test_an_ome_tiff_with_named_channels_is_segmented_in_its_nuclear_stain(tmp_path):
    arr = channels((3, 5, 7))
    res, summary, notes = _run(tmp_path, lambda f: tifffile.imwrite(
        f / "field.ome.tif", arr, ome=True,
        metadata={"axes": "CYX", "Channel": {"Name": ["GFP", "RFP", "DAPI"]}}))
    assert res.done == ["field.ome"]
    assert summary.loc["field.ome", "nuclei"] == 7            # channel 2's discs
    assert summary.loc["field.ome", "channel"] == "2 (DAPI)"
    assert any("3 channels (GFP, RFP, DAPI); segmenting channel 2 (DAPI)" in n for n in notes)


def test_an_imagej_hyperstack_names_its_channels_by_labels(tmp_path):
    arr = channels((3, 5))
    res, summary, notes = _run(tmp_path, lambda f: tifffile.imwrite(
        f / "hyper.tif", arr, imagej=True,
        metadata={"axes": "CYX", "Labels": ["Hoechst 33342", "Phalloidin"]}))
    assert summary.loc["hyper", "nuclei"] == 3 and summary.loc["hyper", "channel"] == \
        "0 (Hoechst 33342)"
    assert any("the nuclear stain by its name" in n for n in notes)


def test_channels_without_names_give_channel_0_and_say_so(tmp_path):
    arr = channels((4, 6, 2))
    res, summary, notes = _run(tmp_path, lambda f: tifffile.imwrite(
        f / "plain.tif", arr, imagej=True, metadata={"axes": "CYX"}))
    assert summary.loc["plain", "nuclei"] == 4 and summary.loc["plain", "channel"] == "0"
    assert any("plain.tif: 3 channels, none named as a nuclear stain; segmenting channel 0"
               in n for n in notes)
    # --channel chooses another, and then nothing needs saying
    res, summary, notes = _run(tmp_path / "again", lambda f: tifffile.imwrite(
        f / "plain.tif", arr, imagej=True, metadata={"axes": "CYX"}), channel=1)
    assert summary.loc["plain", "nuclei"] == 6 and summary.loc["plain", "channel"] == "1"
    assert not notes


def test_an_rgb_image_is_used_whole(tmp_path):
    rgb = np.repeat((channels((5,))[0] // 257).astype(np.uint8)[..., None], 3, axis=-1)
    res, summary, notes = _run(tmp_path, lambda f: iio.imwrite(f / "rgb.png", rgb))
    assert summary.loc["rgb", "nuclei"] == 5 and summary.loc["rgb", "channel"] == ""
    assert not notes


@pytest.mark.parametrize("write, words", [
    (lambda f: tifffile.imwrite(f / "pages.tif", channels((3, 4)), metadata=None),
     ["pages.tif", "holds 2 planes", "--channel", "one plane per file"]),
    (lambda f: iio.imwrite(f / "movie.gif", np.stack([np.full((30, 40, 3), v, np.uint8)
                                                     for v in (10, 120, 240)]),
                           extension=".gif"),
     ["movie.gif", "holds 3 frames", "one frame per file"]),
    (lambda f: [tifffile.imwrite(f / "series.tif", np.zeros((30, 40), np.uint8),
                                 append=True) for _ in range(2)],
     ["series.tif", "holds 2 frames", "one frame per file"]),
])
def test_a_file_of_several_frames_is_refused_in_one_line_naming_it(tmp_path, write, words):
    def both(folder):
        write(folder)
        iio.imwrite(folder / "good.png", (channels((2,))[0] // 257).astype(np.uint8))
    res, summary, notes = _run(tmp_path, both)
    assert res.done == ["good"] and len(res.failed) == 1      # the others are still written
    (message,) = res.failed.values()
    assert "\n" not in message and all(w in message for w in words), message
    assert message in notes and summary.loc[next(iter(res.failed)), "error"] == message


def test_a_chosen_plane_of_an_unnamed_multi_page_tiff_is_segmented(tmp_path):
    res, summary, _ = _run(tmp_path, lambda f: tifffile.imwrite(
        f / "pages.tif", channels((3, 4)), metadata=None), channel=1)
    assert summary.loc["pages", "nuclei"] == 4 and summary.loc["pages", "channel"] == "1"


def test_a_big_tiff_with_named_channels_is_read_lazily_in_its_nuclear_stain(tmp_path):
    from nucseg_utils import big
    arr = channels((3, 5, 7))
    path = tmp_path / "slide.ome.tif"
    tifffile.imwrite(path, arr, ome=True, tile=(32, 32),
                     metadata={"axes": "CYX", "Channel": {"Name": ["GFP", "DAPI", "RFP"]}})
    with big.open_lazy(path) as lazy:
        assert lazy.channel_used == "1 (DAPI)"
        assert np.array_equal(lazy.read(0, 96, 0, 96), arr[1])
