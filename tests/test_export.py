"""Export: measurements, the ImageJ label TIFF, the ROI set and the overlay, on small drawn
label images whose answers are known."""
from __future__ import annotations

import math

import imageio.v3 as iio
import numpy as np
import pytest
import roifile
import tifffile
from scipy import ndimage as ndi
from skimage.draw import disk, polygon
from skimage.segmentation import find_boundaries

from nucseg_utils.exports import files as export


@pytest.fixture
def drawn():
    """A 60x80 label image: a disc (1), a 10x15 rectangle (2), a ring with a hole (3), two
    pixels touching only at a corner (4), a single pixel (5), a shape touching the border
    (6); and a two-channel image, constant inside each object (channel 1 = 2 x channel 0)."""
    lab = np.zeros((60, 80), np.uint16)
    lab[disk((15, 15), 8)] = 1
    lab[30:40, 40:55] = 2
    lab[disk((45, 15), 9)] = 3
    lab[disk((45, 15), 4)] = 0
    lab[5, 40], lab[6, 41] = 4, 4
    lab[10, 60] = 5
    lab[0:6, 70:80] = 6
    grey = np.full(lab.shape, 7, np.uint16)
    for k in range(1, 7):
        grey[lab == k] = 100 * k
    return lab, np.stack([grey, 2 * grey], axis=-1)


def test_measure_gives_the_areas_centroids_and_intensities_of_drawn_shapes(drawn):
    lab, img = drawn
    table = export.measure(lab, img)
    assert table["label"].tolist() == [1, 2, 3, 4, 5, 6]
    areas = np.bincount(lab.ravel())[1:]
    assert table["area"].tolist() == areas.tolist()
    rect = table.set_index("label").loc[2]
    assert rect["area"] == 150 and (rect["centroid_y"], rect["centroid_x"]) == (35.0, 47.5)
    assert [rect[f"bbox_{s}"] for s in ("top", "left", "bottom", "right")] == [30, 40, 40, 55]
    assert rect["solidity"] == 1.0 and rect["eccentricity"] > 0.5
    assert rect["mean_intensity_0"] == 200 and rect["mean_intensity_1"] == 400
    assert rect["integrated_intensity_0"] == 200 * 150
    disc = table.set_index("label").loc[1]
    assert disc["eccentricity"] < 0.05 and disc["centroid_y"] == disc["centroid_x"] == 15.5
    assert disc["equivalent_diameter"] == pytest.approx(math.sqrt(4 * disc["area"] / math.pi))
    assert disc["perimeter"] == pytest.approx(2 * math.pi * 8, rel=0.1)
    assert table.set_index("label").loc[3, "solidity"] < 0.9  # the ring's hole


def test_measure_adds_micrometre_columns_with_a_pixel_size(drawn):
    lab, img = drawn
    plain, calibrated = export.measure(lab, img), export.measure(lab, img, pixel_size=0.25)
    assert "area_um2" not in plain
    assert calibrated["area_um2"].tolist() == pytest.approx((plain["area"] * 0.0625).tolist())
    for name in ("centroid_y", "centroid_x", "perimeter", "equivalent_diameter"):
        assert calibrated[f"{name}_um"].tolist() == pytest.approx((plain[name] / 4).tolist())


def test_measure_of_an_image_without_nuclei_is_an_empty_table_with_the_same_columns(drawn):
    lab, img = drawn
    for px in (None, 0.5):
        full = export.measure(lab, img, px)
        empty = export.measure(np.zeros_like(lab), img, px)
        assert len(empty) == 0 and list(empty.columns) == list(full.columns)


@pytest.mark.parametrize("bad", [0, -0.5, float("nan"), float("inf")])
def test_a_pixel_size_of_zero_or_less_is_refused(tmp_path, drawn, bad):
    lab, img = drawn
    with pytest.raises(ValueError, match="positive"):
        export.measure(lab, img, bad)
    with pytest.raises(ValueError, match="positive"):
        export.write_label_tiff(tmp_path / "x.tif", lab, bad)
    assert not (tmp_path / "x.tif").exists()


def test_summary_row_counts_nuclei_and_their_areas(drawn):
    lab, img = drawn
    row = export.summary_row("a", export.measure(lab, img, 0.5), lab, img)
    areas = np.bincount(lab.ravel())[1:]
    assert row["id"] == "a" and row["nuclei"] == 6 and (row["height"], row["width"]) == (60, 80)
    assert row["mean_area"] == pytest.approx(areas.mean())
    assert row["median_area"] == pytest.approx(np.median(areas))
    assert row["mean_area_um2"] == pytest.approx(areas.mean() / 4)
    assert row["area_fraction"] == pytest.approx((lab > 0).mean())
    assert row["mean_intensity"] == pytest.approx(img[lab > 0].mean())
    empty = export.summary_row("b", export.measure(0 * lab, img), 0 * lab, img)
    assert empty["nuclei"] == 0 and empty["area_fraction"] == 0
    assert math.isnan(empty["mean_area"]) and math.isnan(empty["mean_intensity"])


def test_label_tiff_reads_back_equal_with_its_pixel_size(tmp_path, drawn):
    lab, _ = drawn
    path = export.write_label_tiff(tmp_path / "labels.tif", lab, pixel_size=0.325)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej and tif.imagej_metadata["unit"] == "um"
        back = tif.asarray()
    assert back.dtype == np.uint16 and np.array_equal(back, lab)
    assert export.read_pixel_size(path) == pytest.approx(0.325)
    export.write_label_tiff(tmp_path / "plain.tif", lab)
    assert export.read_pixel_size(tmp_path / "plain.tif") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif", "plain.tif"]


def test_label_tiff_beyond_65535_nuclei_is_int32_and_keeps_its_pixel_size(tmp_path):
    lab = np.arange(1, 300 * 300 + 1, dtype=np.int32).reshape(300, 300)
    path = export.write_label_tiff(tmp_path / "many.tif", lab, pixel_size=2.0)
    back = tifffile.imread(path)
    assert back.dtype == np.int32 and np.array_equal(back, lab)
    assert export.read_pixel_size(path) == pytest.approx(2.0)


@pytest.mark.parametrize("kwargs, expected", [
    ({"imagej": True, "resolution": (2.0, 2.0), "metadata": {"unit": "micron"}}, 0.5),
    ({"imagej": True, "resolution": (0.5, 0.5), "metadata": {"unit": "nm"}}, 0.002),
    ({"resolution": (10000 / 0.65, 10000 / 0.65), "resolutionunit": "CENTIMETER"}, 0.65),
    ({"resolution": (72, 72), "resolutionunit": "INCH"}, None),  # a screen's dpi, no size
    ({}, None),
])
def test_read_pixel_size_from_tiff_tags(tmp_path, kwargs, expected):
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint16), **kwargs)
    got = export.read_pixel_size(path)
    assert got == (pytest.approx(expected) if expected else None)


def test_read_pixel_size_of_a_png_is_none(tmp_path):
    iio.imwrite(tmp_path / "x.png", np.zeros((8, 8), np.uint8))
    assert export.read_pixel_size(tmp_path / "x.png") is None


def rasterise(roi, shape) -> np.ndarray:
    """The pixels whose centres lie in an ImageJ polygon (pixel centres at +0.5)."""
    xy = roi.coordinates()
    rr, cc = polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape)
    mask = np.zeros(shape, bool)
    mask[rr, cc] = True
    return mask


def test_roi_zip_holds_one_polygon_per_nucleus_that_fills_back_to_it(tmp_path, drawn):
    lab, _ = drawn
    path = export.write_roi_zip(tmp_path / "rois.zip", lab)
    rois = roifile.roiread(path)
    assert [r.name for r in rois] == [f"{k:04d}" for k in range(1, 7)]
    for roi in rois:
        k = int(roi.name)
        nucleus = ndi.binary_fill_holes(lab == k)  # outer contour only: a hole is filled
        filled = rasterise(roi, lab.shape)
        rim = find_boundaries(nucleus, mode="thick")  # one pixel either side of its edge
        assert not (filled ^ nucleus)[~rim].any(), k
        assert abs(int(filled.sum()) - int(nucleus.sum())) <= int(rim.sum()), k
        xy = roi.coordinates()  # shoelace area: within half a pixel of the rim
        shoelace = 0.5 * abs(np.dot(xy[:, 0], np.roll(xy[:, 1], 1)) -
                             np.dot(xy[:, 1], np.roll(xy[:, 0], 1)))
        assert abs(shoelace - nucleus.sum()) <= find_boundaries(nucleus, mode="inner").sum()


def test_roi_zip_of_an_image_without_nuclei_is_an_empty_set(tmp_path):
    path = export.write_roi_zip(tmp_path / "none.zip", np.zeros((10, 10), np.uint16))
    import zipfile
    with zipfile.ZipFile(path) as z:
        assert z.namelist() == []


def test_roi_names_sort_in_label_order_beyond_9999_nuclei(tmp_path):
    lab = np.zeros((4, 4), np.int32)
    lab[0, 0], lab[2, 2] = 3, 12345
    rois = roifile.roiread(export.write_roi_zip(tmp_path / "r.zip", lab))
    assert [r.name for r in rois] == ["00003", "12345"]


def test_overlay_png_outlines_every_nucleus_in_green(tmp_path, drawn):
    lab, img = drawn
    path = export.write_overlay_png(tmp_path / "o.png", img[..., 0], lab)
    rgb = iio.imread(path)
    assert rgb.shape == lab.shape + (3,) and rgb.dtype == np.uint8
    edge = find_boundaries(lab, mode="inner")
    assert (rgb[edge] == export.OUTLINE).all()
    assert not (rgb[~edge] == export.OUTLINE).all(axis=-1).any()


# --------------------------------------------------------------------------- one convention
def _polygon_centroid(xy: np.ndarray) -> tuple[float, float]:
    """The centroid (x, y) of a closed polygon's area (shoelace)."""
    x, y = xy[:, 0], xy[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    area = cross.sum() / 2
    return float(((x + xn) * cross).sum() / (6 * area)), float(((y + yn) * cross).sum() / (6 * area))


def _squares(shape=(70, 90)):
    """Filled shapes whose polygon is exactly their pixels (no diagonal cut corners):
    rectangles and an L."""
    lab = np.zeros(shape, np.uint16)
    lab[5:17, 8:30] = 1
    lab[30:41, 50:53] = 2
    lab[45:65, 10:20] = 3
    lab[55:65, 20:40] = 3          # an L
    lab[0:9, 70:90] = 4            # at the image's edge
    return lab


def test_centroids_agree_between_the_table_the_roi_set_and_the_geojson(tmp_path):
    import json
    lab = _squares()
    img = np.full(lab.shape, 10, np.uint8)
    table = export.measure(lab, img, pixel_size=0.5).set_index("label")
    rois = {int(r.name): r.coordinates() for r in
            roifile.roiread(export.write_roi_zip(tmp_path / "r.zip", lab))}
    features = json.loads(export.write_geojson(tmp_path / "g.geojson", lab,
                                               export.measure(lab, img), "img").read_text())
    rings = {int(f["properties"]["name"]): np.array(f["geometry"]["coordinates"][0][:-1])
             for f in features["features"]}
    for k in range(1, 5):
        want = (table.loc[k, "centroid_x"], table.loc[k, "centroid_y"])
        for xy in (rois[k], rings[k]):
            assert np.allclose(_polygon_centroid(xy), want, atol=0.01), k
        assert table.loc[k, "centroid_x_um"] == pytest.approx(want[0] * 0.5)
    # pixel centres at +0.5: the rectangle 5:17 x 8:30 is centred at (19, 11)
    assert (table.loc[1, "centroid_x"], table.loc[1, "centroid_y"]) == (19.0, 11.0)


def test_outlines_have_no_collinear_vertices_and_keep_their_area(drawn):
    lab, _ = drawn
    for k, xy in export.nucleus_polygons(lab):
        before, after = np.roll(xy, 1, axis=0), np.roll(xy, -1, axis=0)
        cross = (xy - before)[:, 0] * (after - xy)[:, 1] - (xy - before)[:, 1] * (after - xy)[:, 0]
        assert (np.abs(cross) > 1e-9).all(), k
    rect = dict(export.nucleus_polygons(lab))[2]
    # a rectangle is its four sides between edge midpoints (its corners cut by half a pixel),
    # whatever its size: 8 vertices, the area of its pixels less four half-pixel triangles
    assert len(rect) == 8 and export._polygon_area(rect[:, ::-1]) == 150 - 4 * 0.125


def test_geojson_features_carry_an_id_and_qupath_measurements(tmp_path, drawn):
    import json
    lab, img = drawn
    table = export.measure(lab, img, pixel_size=0.25)
    path = export.write_geojson(tmp_path / "g.geojson", lab, table, "field")
    features = json.loads(path.read_text())["features"]
    assert len(features) == 6 and len({f["id"] for f in features}) == 6
    again = export.geojson_features(lab, table=table, image_id="field")
    assert [json.loads(f)["id"] for f in again] == [f["id"] for f in features]  # stable
    other = export.geojson_features(lab, table=table, image_id="other")
    assert not {json.loads(f)["id"] for f in other} & {f["id"] for f in features}
    rect = next(f for f in features if f["properties"]["name"] == "2")["properties"]
    m = rect["measurements"]
    assert m["area"] == 150 and m["area_um2"] == pytest.approx(150 / 16)
    assert m["mean_intensity_0"] == 200 and m["mean_intensity_1"] == 400
    assert rect["classification"]["name"] == "Nucleus"


def test_an_untiled_ome_zarr_holds_the_image_and_its_labels(tmp_path, drawn):
    import zarr

    from nucseg_utils.exports import omezarr
    lab, img = drawn
    path = omezarr.write_ome_zarr(tmp_path / "f.ome.zarr", lab, img, "f", pixel_size=0.5)
    root = zarr.open_group(str(path), mode="r")
    assert np.array_equal(root["0"][:], np.moveaxis(img, -1, 0))  # (c, y, x)
    assert [a["name"] for a in root.attrs["multiscales"][0]["axes"]] == ["c", "y", "x"]
    assert np.array_equal(root["labels/nuclei/0"][:], lab)
    assert root["labels"].attrs["labels"] == ["nuclei"]
    scale = root["labels/nuclei"].attrs["multiscales"][0]["datasets"][0][
        "coordinateTransformations"][0]["scale"]
    assert scale == [0.5, 0.5] and not path.with_name("f.ome.zarr.partial").exists()
