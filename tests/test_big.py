"""Big images: lazy reading, one normalisation and one factor per image, tiles stitched into
whole nuclei (never cut, never doubled), the OME-Zarr labels, streamed measurements, the
GeoJSON outlines, and resuming an interrupted image."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from matplotlib.path import Path as MplPath
from scipy import ndimage as ndi
from skimage.draw import disk

from nucseg_utils import big
from nucseg_utils.core.settings import ModelSettings
from nucseg_utils.data import DataError, to_rgb_float
from nucseg_utils.exports import files as export
from nucseg_utils.inference import scale
from nucseg_utils.inference.preprocessing import normalize
from nucseg_utils.model import NucleusModel

STAND_IN = {"backbone": "stand-in", "targets": ["mask", "touching"], "input_mode": "crop",
            "normalization": "percentile", "postprocess": "touching", "threshold": 0.5,
            "min_size": 10, "tta": False}


def local_forward(batch, bias=None):
    """A stand-in network whose output at a pixel depends on its 3x3 neighbourhood only
    (nucleus probability: the mean of the channels, smoothed; no touching zone), plus an
    optional ``bias(h, w)`` map that depends on where the pixel lies in the window."""
    g = batch.mean(axis=-1)
    p = np.stack([ndi.uniform_filter(x, 3) for x in g])
    if bias is not None:
        p = p + bias(*p.shape[1:])[None]
    return np.stack([np.clip(p, 0, 1), np.zeros_like(p)], axis=-1).astype(np.float32)


def stand_in(bias=None, **config):
    return NucleusModel(None, {**STAND_IN, **config},
                        _forward=(lambda b: local_forward(b, bias), "tensorflow"))


def plant(shape, centres, radius):
    lab = np.zeros(shape, np.int32)
    for k, c in enumerate(centres, start=1):
        lab[disk(c, radius, shape=shape)] = k
    return lab


def image_of(lab, seed=0):
    rng = np.random.default_rng(seed)
    img = ndi.gaussian_filter((lab > 0).astype(np.float32), 1) * 200 + rng.normal(20, 4,
                                                                                  lab.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def random_nuclei(shape, n, seed=0, radii=(4, 12)):
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.int32)
    k = 0
    for _ in range(n):
        r = int(rng.integers(*radii))
        rr, cc = disk((rng.integers(0, shape[0]), rng.integers(0, shape[1])), r, shape=shape)
        if (lab[rr, cc] > 0).any():
            continue
        k += 1
        lab[rr, cc] = k
    return lab


def read_labels(out, sid):
    return zarr.open_group(str(out / "labels" / f"{sid}.ome.zarr"), mode="r")["labels/nuclei/0"][:]


def same_partition(a, b) -> bool:
    """The two label images hold the same objects (whatever their numbers)."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def disc_matches(planted, labels):
    """For every planted disc, the labels covering it; for every label, the discs under it."""
    per_disc = {k: set(np.unique(labels[planted == k])) - {0}
                for k in range(1, planted.max() + 1)}
    per_label = {j: set(np.unique(planted[labels == j])) - {0}
                 for j in np.unique(labels[labels > 0])}
    return per_disc, per_label


# --------------------------------------------------------------------------- one factor
class FirstChannel:
    """A stand-in network for the size passes: nucleus probability = the first channel."""

    def forward(self, batch):
        return np.concatenate([batch[..., :1], np.zeros_like(batch[..., :1])], axis=-1)


@pytest.mark.parametrize("config", [{"target_diameter": 20},
                                    {"target_diameter": 20, "size_probe": 0.5},
                                    {"target_diameter": 20, "tta_scales": [0.8, 1, 1.25]},
                                    {}])
@pytest.mark.parametrize("radius", [5, 12, 30])
@pytest.mark.parametrize("tta", [True, False])
def test_estimate_factor_then_predict_at_is_predict_scaled(config, radius, tta):
    lab = plant((150, 170), [(40, 40), (40, 120), (110, 80)], radius)
    img = np.repeat(ndi.gaussian_filter((lab > 0).astype(np.float32), 1)[..., None], 3, -1)
    cfg = {"input_mode": "crop", **config}
    model = FirstChannel()
    prob, steps = scale.predict_scaled(model, img, cfg, tta=tta, return_steps=True)
    factor = scale.estimate_factor(model, img, cfg, tta)
    assert factor == steps["factor"]
    assert np.array_equal(scale.predict_at(model, img, cfg, factor, tta), prob)


@pytest.mark.parametrize("kind", ["grey8", "bright16", "float", "stained"])
def test_image_stats_normalise_as_the_whole_image_is_normalised(kind):
    rng = np.random.default_rng(1)
    lab = random_nuclei((90, 110), 20)
    grey = image_of(lab)
    mode = "percentile"
    if kind == "grey8":
        img = grey
    elif kind == "bright16":
        img = np.repeat((65535 - grey.astype(np.uint16) * 200)[..., None], 3, axis=-1)
    elif kind == "float":
        img = grey.astype(np.float32) * 3.5 - 40.0  # outside [0, 1]: scaled by its range
    else:
        img = np.stack([240 - grey // 2, 230 - grey, 240 - grey // 3], -1).astype(np.uint8)
        img = np.clip(img + rng.integers(0, 5, img.shape), 0, 255).astype(np.uint8)
        mode = "haematoxylin"
    lazy = big.open_lazy(img)
    overview, value_range = big.read_overview(lazy, 1)
    stats = big.image_stats(overview, mode, value_range)
    assert stats.mode == ("stained" if kind == "stained" else "percentile")
    assert stats.invert == (kind == "bright16")
    expected = normalize(to_rgb_float(img), mode)
    assert np.array_equal(stats.normalise(stats.unit_rgb(img)), expected)
    # a window is normalised with the image's statistics, not its own
    win = stats.normalise(stats.unit_rgb(img[10:50, 30:90]))
    assert np.array_equal(win, expected[10:50, 30:90])


def test_a_big_image_gets_its_factor_from_sampled_windows(monkeypatch, tmp_path):
    monkeypatch.setattr(big.plan, "OVERVIEW_PIXELS", 96 * 96)
    monkeypatch.setattr(big.plan, "SIZE_WINDOW", 128)
    lab = random_nuclei((384, 384), 400, seed=3, radii=(7, 9))
    img = image_of(lab)
    model = stand_in(target_diameter=20)
    lazy = big.open_lazy(img)
    assert big.overview_stride(lazy.shape) == 4
    plan = big.make_plan(model, lazy, {}, tta=False)
    whole = scale.estimate_factor(model, normalize(to_rgb_float(img)), model.config, False)
    assert plan.factor == pytest.approx(whole, rel=0.1)
    assert plan.factor == pytest.approx(20 / scale.label_diameter(lab), rel=0.3)


# --------------------------------------------------------------------------- tiles == untiled
@pytest.mark.parametrize("tile,overlap", [(40, 48), (64, None), (100, 60), (1000, None)])
def test_tiled_labels_equal_untiled_on_an_image_that_fits(tmp_path, tile, overlap):
    lab = random_nuclei((300, 380), 90, seed=tile)
    img = image_of(lab)
    model = stand_in()
    untiled = model.postprocess(model.predict_probabilities(img))
    assert untiled.max() > 40
    res = big.predict_big(model, img, tmp_path, sid="im", tile=tile, overlap=overlap,
                          progress=False)
    tiled = read_labels(tmp_path, "im")
    assert same_partition(tiled, untiled)
    assert res.summary["nuclei"] == untiled.max() and res.summary["too_large"] == 0
    # the streamed measurements are those of the untiled labels, in whole-image coordinates
    table = pd.read_csv(tmp_path / "measurements" / "im.csv").sort_values("label")
    assert table["label"].tolist() == list(range(1, untiled.max() + 1))
    ref = export.measure(untiled, img)
    ref["label"] = [int(np.bincount(tiled[untiled == k]).argmax()) for k in ref["label"]]
    ref = ref.sort_values("label")
    for col in ("centroid_y", "centroid_x", "bbox_top", "bbox_left", "bbox_bottom",
                "bbox_right", "area", "perimeter", "mean_intensity_0"):
        assert np.allclose(table[col].to_numpy(), ref[col].to_numpy(), atol=1e-3), col
    row = export.summary_row("im", ref, untiled, img)
    for key in ("nuclei", "mean_area", "median_area", "area_fraction", "mean_intensity"):
        assert res.summary[key] == pytest.approx(row[key]), key


def test_tiles_are_predicted_on_the_whole_images_grid_at_its_factor():
    # rescaled windows are interpolated where rescaling the whole image puts its pixels
    rng = np.random.default_rng(0)
    img = rng.random((200, 260, 3)).astype(np.float32)
    seen = []

    class Recorder:
        settings = ModelSettings(input_mode="crop")

        def forward(self, batch):
            seen.append(batch[0].copy())
            return batch[..., :2]
    for factor in (1.0, 1.62, 0.65):
        grid = big.Grid(200, 260, factor)
        whole = scale.rescale_image(img, factor)
        seen.clear()
        prob, (e0, e1, f0, f1) = big.predict_window(Recorder(), img[40:170, 50:230],
                                                    (40, 170, 50, 230), grid, tta=False)
        (j0, j1), _ = grid.span(40, 170, 0)
        (k0, k1), _ = grid.span(50, 230, 1)
        assert j0 % 32 == 0 and k0 % 32 == 0 and (grid.rows - j1) % 32 == 0
        assert np.allclose(seen[0][:j1 - j0, :k1 - k0], whole[j0:j1, k0:k1], atol=1e-6)
        assert 40 <= e0 < e1 <= 170 and 50 <= f0 < f1 <= 230 and prob.shape[:2] == (
            e1 - e0, f1 - f0)


# --------------------------------------------------------------------------- seams
@pytest.mark.parametrize("push", [0.0, 0.2, -0.2])
def test_nuclei_planted_across_tile_borders_are_neither_cut_nor_doubled(tmp_path, push):
    """Discs centred exactly on the borders between cores and on their corners. ``push``
    makes every window see a nucleus larger towards its centre (> 0: each of two tiles finds
    the disc's centre in its own core) or towards its edges (< 0: each finds it in the
    other's)."""
    tile, r = 64, 9
    borders = [63.5, 127.5, 191.5]
    centres = [(b, x) for b in borders for x in (30, 100, 165)] + \
              [(y, b) for b in borders for y in (30, 100, 165)] + \
              [(y, x) for y in borders for x in borders]
    shape = (224, 224)
    planted = np.zeros(shape, np.int32)
    for k, c in enumerate(centres, start=1):
        rr, cc = disk(c, r, shape=shape)
        assert not (planted[rr, cc] > 0).any()
        planted[rr, cc] = k

    def bias(h, w):  # + at the window's centre, - at its edges (or the other way)
        yy, xx = np.indices((h, w))
        d = np.maximum(np.abs(yy - (h - 1) / 2) / h, np.abs(xx - (w - 1) / 2) / w)
        return push * (1 - 4 * d)
    model = stand_in(bias=bias)
    res = big.predict_big(model, image_of(planted), tmp_path, sid="seams", tile=tile,
                          overlap=56, progress=False)
    labels = read_labels(tmp_path, "seams")
    per_disc, per_label = disc_matches(planted, labels)
    cut = [k for k, js in per_disc.items() if len(js) > 1]
    missed = [k for k, js in per_disc.items() if not js]
    doubled = [j for j, ks in per_label.items() if len(ks) != 1]
    assert (cut, missed, doubled) == ([], [], [])
    assert labels.max() == len(centres) == res.summary["nuclei"]
    for k, (j,) in per_disc.items():  # each whole: its label is the disc, give or take
        mine, found = planted == k, labels == j
        assert (mine & found).sum() / (mine | found).sum() > 0.8


def test_a_nucleus_larger_than_the_overlap_is_dropped_and_counted(tmp_path):
    planted = plant((160, 160), [(63.5, 80), (30, 30)], 24)
    res = big.predict_big(stand_in(), image_of(planted), tmp_path, sid="big", tile=64,
                          overlap=12, progress=False)
    labels = read_labels(tmp_path, "big")
    assert res.summary["too_large"] >= 1 and any("larger than the overlap" in n
                                                 for n in res.notes)
    per_disc, per_label = disc_matches(planted, labels)
    assert all(len(js) <= 1 for js in per_disc.values())  # dropped, never cut in pieces
    assert all(len(ks) == 1 for ks in per_label.values())


# --------------------------------------------------------------------------- outputs
def test_ome_zarr_holds_the_image_with_its_labels_under_it(tmp_path):
    lab = random_nuclei((1300, 1100), 900, seed=5)
    img = image_of(lab)
    res = big.predict_big(stand_in(), img, tmp_path, sid="slide", tile=512,
                          overlap=56, pixel_size=0.5, progress=False)
    path = tmp_path / "labels" / "slide.ome.zarr"
    root = zarr.open_group(str(path), mode="r")
    group = root["labels/nuclei"]
    level0, level1 = group["0"], group["1"]
    assert level0.shape == (1300, 1100) and level0.dtype == np.uint32
    assert level0.chunks == (1024, 1024) and level1.shape == (650, 550)
    assert json.loads((path / "labels" / "nuclei" / "0" / ".zarray").read_text())[
        "dimension_separator"] == "/"
    labels = level0[:]
    assert np.array_equal(level1[:], labels[::2, ::2])
    assert labels.max() == res.summary["nuclei"] > 500
    ms = group.attrs["multiscales"][0]
    assert ms["version"] == "0.4" and [a["name"] for a in ms["axes"]] == ["y", "x"]
    assert ms["axes"][0]["unit"] == "micrometer"
    assert [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]] == \
        [[0.5, 0.5], [1.0, 1.0]]
    assert group.attrs["image-label"]["source"]["image"] == "../../"
    assert root["labels"].attrs["labels"] == ["nuclei"]
    # the image itself at the root, with its pyramid
    assert np.array_equal(root["0"][:], img) and np.array_equal(root["1"][:], img[::2, ::2])
    assert root.attrs["multiscales"][0]["datasets"][1]["path"] == "1"
    assert not (tmp_path / "labels" / "slide.ome.zarr.partial").exists()
    assert not (tmp_path / "tiles").exists()
    # and both open again as images (e.g. to measure them with other tools)
    with big.open_lazy(path) as lazy:
        assert lazy.shape == (1300, 1100) and lazy.pixel_size == 0.5
        assert np.array_equal(lazy.read(700, 900, 100, 600), img[700:900, 100:600])
    with big.open_lazy(path / "labels" / "nuclei") as lazy:
        assert np.array_equal(lazy.read(700, 900, 100, 600), labels[700:900, 100:600])


def _segments_cross(ring: np.ndarray) -> bool:
    """Whether two non-adjacent edges of a closed ring cross or touch."""
    a, b = ring[:-1], ring[1:]
    n = len(a)

    def orient(p, q, r):
        return np.sign((q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1]) -
                       (q[..., 1] - p[..., 1]) * (r[..., 0] - p[..., 0]))
    i, j = np.triu_indices(n, 2)
    keep = ~((i == 0) & (j == n - 1))
    i, j = i[keep], j[keep]
    p1, p2, q1, q2 = a[i], b[i], a[j], b[j]
    o1, o2 = orient(p1, p2, q1), orient(p1, p2, q2)
    o3, o4 = orient(q1, q2, p1), orient(q1, q2, p2)
    return bool(((o1 * o2 <= 0) & (o3 * o4 <= 0) &
                 ~((o1 == 0) & (o2 == 0))).any())  # collinear neighbours are no crossing


def test_geojson_outlines_are_valid_polygons_that_fill_the_labels(tmp_path):
    lab = random_nuclei((260, 300), 60, seed=7)
    big.predict_big(stand_in(), image_of(lab), tmp_path, sid="g", tile=90, overlap=56,
                    progress=False)
    labels = read_labels(tmp_path, "g")
    collection = json.loads((tmp_path / "geojson" / "g.geojson").read_text())
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    assert sorted(int(f["properties"]["name"]) for f in features) == \
        list(range(1, labels.max() + 1))
    centres = np.c_[np.indices(labels.shape)[1].ravel() + 0.5,
                    np.indices(labels.shape)[0].ravel() + 0.5]  # pixel centres, x then y
    for f in features:
        assert f["geometry"]["type"] == "Polygon"
        assert f["properties"]["objectType"] == "detection"
        ring = np.array(f["geometry"]["coordinates"][0])
        assert len(ring) >= 4 and np.array_equal(ring[0], ring[-1])
        assert not _segments_cross(ring)
        k = int(f["properties"]["name"])
        mask = ndi.binary_fill_holes(labels == k)
        inside = MplPath(ring).contains_points(centres).reshape(labels.shape)
        assert np.array_equal(inside, mask), k


def test_an_interrupted_image_resumes_to_the_same_outputs(tmp_path, monkeypatch):
    lab = random_nuclei((300, 330), 80, seed=11)
    img = image_of(lab)
    model = stand_in()
    whole = tmp_path / "whole"
    big.predict_big(model, img, whole, sid="im", tile=64, overlap=56, progress=False)
    out = tmp_path / "resumed"
    calls = {"n": 0}
    real = big.predict_window

    def dies_at_the_ninth(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(big.run, "predict_window", dies_at_the_ninth)
    with pytest.raises(KeyboardInterrupt):
        big.predict_big(model, img, out, sid="im", tile=64, overlap=56, progress=False)
    assert not (out / "done" / "im.json").exists()
    assert not (out / "labels" / "im.ome.zarr").exists()
    assert not (out / "measurements" / "im.csv").exists()
    assert len(list((out / "tiles" / "im").glob("0*.json"))) == 8
    # as if the ninth tile had been killed while writing: some of its labels in the image
    y0, y1, x0, x1 = big.tile_grid(img.shape, 64, 56)[8].window
    partial = zarr.open_group(str(out / "labels" / "im.ome.zarr.partial"),
                              mode="r+")["labels/nuclei/0"]
    before = partial[y0:y1, x0:x1]
    partial[y0:y1, x0:x1] = np.where((before == 0) & (lab[y0:y1, x0:x1] > 0), 60000,
                                     before).astype(np.uint32)
    monkeypatch.setattr(big.run, "predict_window", real)
    res = big.predict_big(model, img, out, sid="im", tile=64, overlap=56, progress=False)
    assert res.tiles_done_before == 8 and calls["n"] == 9
    assert np.array_equal(read_labels(out, "im"), read_labels(whole, "im"))
    for f in ("measurements/im.csv", "geojson/im.geojson"):
        assert (out / f).read_bytes() == (whole / f).read_bytes(), f
    assert res.summary == json.loads((whole / "done" / "im.json").read_text())["summary"]
    again = big.predict_big(model, img, out, sid="im", tile=64, overlap=56, progress=False)
    assert again.skipped


# --------------------------------------------------------------------------- reading lazily
def test_open_lazy_reads_windows_of_tiff_ome_tiff_and_zarr(tmp_path):
    rng = np.random.default_rng(2)
    grey = rng.integers(0, 65535, (300, 260), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "grey.tif", grey, bigtiff=True, tile=(64, 64))
    rgb = rng.integers(0, 255, (300, 260, 3), dtype=np.uint8)
    with tifffile.TiffWriter(tmp_path / "slide.ome.tif", bigtiff=True) as tif:
        meta = {"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25}
        tif.write(rgb, tile=(64, 64), photometric="rgb", subifds=1, metadata=meta)
        tif.write(rgb[::2, ::2], tile=(64, 64), photometric="rgb", subfiletype=1)
    chans = rng.integers(0, 255, (3, 300, 260), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "chans.tif", chans, imagej=True, metadata={"axes": "CYX"})
    zarr.create_array(str(tmp_path / "plain.zarr"), data=grey, chunks=(100, 100))
    window = (35, 250, 17, 201)
    y0, y1, x0, x1 = window
    with big.open_lazy(tmp_path / "grey.tif") as lazy:
        assert lazy.shape == (300, 260) and lazy.channels == 0
        assert np.array_equal(lazy.read(*window), grey[y0:y1, x0:x1])
    with big.open_lazy(tmp_path / "slide.ome.tif") as lazy:
        assert lazy.shape == (300, 260) and lazy.channels == 3
        assert lazy.pixel_size == pytest.approx(0.25)
        assert np.array_equal(lazy.read(*window), rgb[y0:y1, x0:x1])
    with big.open_lazy(tmp_path / "chans.tif", channel=1) as lazy:
        assert np.array_equal(lazy.read(*window), chans[1, y0:y1, x0:x1])
    with big.open_lazy(tmp_path / "plain.zarr") as lazy:
        assert np.array_equal(lazy.read(*window), grey[y0:y1, x0:x1])
    lazy = big.open_lazy(chans)  # an array (C, H, W)
    assert lazy.shape == (300, 260)
    assert np.array_equal(lazy.read(*window), np.moveaxis(chans, 0, -1)[y0:y1, x0:x1])
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 40, 40), np.uint8), imagej=True,
                     metadata={"axes": "ZYX"})
    with pytest.raises(DataError, match="z-stack"):
        big.open_lazy(tmp_path / "stack.tif")
    with pytest.raises(DataError, match="no such file"):
        big.open_lazy(tmp_path / "missing.tif")


def test_a_big_tiff_is_segmented_from_its_file(tmp_path):
    lab = random_nuclei((400, 360), 120, seed=13)
    img = image_of(lab)
    tifffile.imwrite(tmp_path / "scan.ome.tif", img, bigtiff=True, tile=(128, 128),
                     metadata={"axes": "YX", "PhysicalSizeX": 0.4, "PhysicalSizeY": 0.4})
    model = stand_in()
    res = big.predict_big(model, tmp_path / "scan.ome.tif", tmp_path / "out", tile=100,
                          overlap=56, progress=False)
    assert res.sid == "scan" and res.summary["pixel_size_um"] == pytest.approx(0.4)
    untiled = model.postprocess(model.predict_probabilities(img))
    assert same_partition(read_labels(tmp_path / "out", "scan"), untiled)
    table = pd.read_csv(tmp_path / "out" / "measurements" / "scan.csv")
    assert np.allclose(table["area_um2"], table["area"] * 0.16, atol=1e-3)
    assert np.allclose(table["centroid_x_um"], table["centroid_x"] * 0.4, atol=1e-3)  # %.4f


# --------------------------------------------------------------------------- the network
@pytest.mark.slow
def test_the_network_tiled_equals_untiled_when_one_window_holds_the_image(smoke_run,
                                                                          smoke_data,
                                                                          tmp_path):
    from nucseg_utils.predict import read_image
    model = NucleusModel.load(smoke_run / "model.npz")
    files = sorted((smoke_data / "stage1_test").glob("*/images/*.png"))
    img = read_image(files[0])
    untiled = model.postprocess(model.predict_probabilities(img, tta=False))
    big.predict_big(model, img, tmp_path, sid="one", tta=False, progress=False)
    assert np.array_equal(read_labels(tmp_path, "one"), untiled)
    # small tiles: every core predicted on the whole image's grid, at its factor
    tiles = big.predict_big(model, img, tmp_path, sid="small", tile=32, tta=False,
                            progress=False)
    assert tiles.summary["tiles"] == math.ceil(img.shape[0] / 32) * math.ceil(
        img.shape[1] / 32)
    assert tiles.summary["factor"] == pytest.approx(
        scale.estimate_factor(model, normalize(to_rgb_float(img)), model.config, False))
    small = read_labels(tmp_path, "small")
    assert (np.asarray(small > 0) == (untiled > 0)).mean() > 0.98


# --------------------------------------------------------------------------- in a folder
def _roi_masks(path, shape) -> dict:
    """{name: the mask its polygon fills, by pixel centres} of an ROI set."""
    from roifile import roiread
    centres = np.c_[np.indices(shape)[1].ravel() + 0.5, np.indices(shape)[0].ravel() + 0.5]
    return {roi.name: MplPath(roi.coordinates()).contains_points(centres).reshape(shape)
            for roi in roiread(path)}


def test_predict_folder_tiles_the_images_over_the_size_and_keeps_the_others(tmp_path,
                                                                            monkeypatch):
    import imageio.v3 as iio
    from roifile import roiread

    from nucseg_utils import data, predict
    folder = tmp_path / "images"
    folder.mkdir()
    small = image_of(random_nuclei((120, 140), 20, seed=1))
    large = image_of(random_nuclei((260, 300), 60, seed=2))
    iio.imwrite(folder / "small.png", small)
    tifffile.imwrite(folder / "large.tif", large, tile=(64, 64))
    monkeypatch.setattr(predict.folder, "TILE_ABOVE", 200 * 200)
    model = stand_in()
    out = tmp_path / "out"
    notes = []
    res = predict.predict_folder(model, data.open_images(folder), out,
                                 predict.PredictOptions(formats=export.FORMATS),
                                 progress=False, log=notes.append)
    assert res.done == ["large", "small"] and not res.failed
    # the same kinds of files for both, but the tiled image's label PNG, with a note why
    for f, path in export.output_paths(out, "small").items():
        assert path.exists(), f
        assert export.output_paths(out, "large")[f].exists() == (f != "labels-png"), f
    said = [n for n in notes if "labels-png" in n]
    assert len(said) == 1 and "large.tif: no labels-png for a tiled image" in said[0]
    untiled = model.postprocess(model.predict_probabilities(large))
    labels = read_labels(out, "large")
    assert same_partition(labels, untiled)
    # the tiled image's label TIFF (a pyramidal OME-TIFF), ROI set and GeoJSON are its labels
    with tifffile.TiffFile(out / "labels" / "large.tif") as tif:
        assert tif.is_ome and tif.is_bigtiff
        assert np.array_equal(tif.series[0].levels[0].asarray(), labels)
    masks = _roi_masks(out / "rois" / "large.zip", labels.shape)
    assert len(masks) == labels.max()
    for name, mask in masks.items():
        assert np.array_equal(mask, ndi.binary_fill_holes(labels == int(name))), name
    features = json.loads((out / "geojson" / "large.geojson").read_text())["features"]
    assert sorted(int(f["properties"]["name"]) for f in features) == \
        [int(r.name) for r in roiread(out / "rois" / "large.zip")]
    summary = pd.read_csv(out / "summary.csv").set_index("id")
    assert summary.loc["large", "nuclei"] == untiled.max()
    assert summary.loc["large", "overlay_downsampling"] == 1  # fits OVERLAY_SIDE
    assert iio.imread(out / "overlays" / "large.png").shape == large.shape + (3,)
    ids = pd.read_csv(out / "submission.csv")["ImageId"].unique().tolist()
    assert ids == ["small"]  # a tiled image has no rows in Kaggle's format
    again = predict.predict_folder(model, data.open_images(folder), out,
                                   predict.PredictOptions(formats=export.FORMATS),
                                   progress=False, log=notes.append)
    assert again.skipped == ["large", "small"]
    # tiles for every image when asked, whatever its size; no submission of no image
    forced = predict.predict_folder(model, data.open_images(folder), tmp_path / "forced",
                                    predict.PredictOptions(tile=48), progress=False,
                                    log=notes.append)
    assert forced.done == ["large", "small"]
    assert not (tmp_path / "forced" / "submission.csv").exists()
    tiled = export.output_paths(tmp_path / "forced", "small", ("tiff", "rois", "overlay"))
    assert all(p.exists() for p in tiled.values())
    with tifffile.TiffFile(tiled["tiff"]) as tif:
        assert same_partition(tif.asarray(),
                              model.postprocess(model.predict_probabilities(small)))
