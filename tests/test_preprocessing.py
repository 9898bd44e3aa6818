"""Normalisation, targets and resizing."""
import numpy as np
import pytest

from nucseg_utils.inference import preprocessing as pp


def test_percentile_normalisation_maps_range_to_unit_and_keeps_polarity():
    rng = np.random.default_rng(0)
    img = rng.uniform(0.1, 0.2, (50, 50, 3)).astype(np.float32)
    img[20:30, 20:30] = 0.6  # bright nucleus on a dark background
    out = pp.normalize(img, "percentile")
    assert out[25, 25].mean() > 0.9 and np.median(out) < 0.3


def test_bright_background_is_inverted_so_nuclei_are_bright():
    img = np.full((50, 50, 3), 0.9, np.float32)
    img[20:30, 20:30] = 0.3  # dark nucleus on a bright background (brightfield)
    out = pp.normalize(img, "percentile")
    assert out[25, 25].mean() > out[5, 5].mean()


def test_constant_image_normalises_without_nan():
    out = pp.normalize(np.full((8, 8, 3), 0.5, np.float32))
    assert np.isfinite(out).all()


def test_unit_normalisation_is_the_identity():
    img = np.random.default_rng(1).random((5, 6, 3)).astype(np.float32)
    assert np.array_equal(pp.normalize(img, "unit"), img)


def test_touching_zone_marks_only_pixels_between_two_nuclei():
    lab = np.zeros((20, 30), np.int32)
    lab[5:15, 2:10] = 1
    lab[5:15, 10:18] = 2   # touches nucleus 1 along column 10
    lab[5:15, 24:28] = 3   # alone
    zone = pp.touching_zone(lab)
    assert zone[10, 9] and zone[10, 10]
    assert not zone[:, 22:].any()


def test_targets_are_binary_channels_in_profile_order():
    lab = np.zeros((10, 10), np.int32)
    lab[2:5, 2:5] = 1
    t = pp.make_targets(lab, ["mask", "touching"])
    assert t.shape == (10, 10, 2) and set(np.unique(t)) <= {0.0, 1.0}
    assert t[..., 0].sum() == 9 and t[..., 1].sum() == 0


def test_haematoxylin_normalisation_turns_stained_tissue_into_bright_grey_nuclei():
    from skimage.color import rgb_from_hed
    h = np.zeros((40, 60))
    e = np.zeros((40, 60))
    h[10:20, 10:20] = 1.0   # a nucleus: haematoxylin
    e[10:30, 30:50] = 1.2   # cytoplasm: more eosin than the nucleus holds haematoxylin
    od = h[..., None] * rgb_from_hed[0] + e[..., None] * rgb_from_hed[1]
    stained = np.exp(-od).astype(np.float32)  # white background, purple and pink
    out = pp.normalize(stained, "haematoxylin")
    assert out.shape == stained.shape and np.array_equal(out[..., 0], out[..., 2])
    assert out[15, 15, 0] > 0.9 and out[20, 40, 0] < 0.2 and out[35, 5, 0] < 0.1
    # the plain percentile normalisation keeps the colour: the eosin is bright there
    assert pp.normalize(stained, "percentile")[20, 40].max() > 0.5
    # a grey image is normalised as by the percentile mode
    grey = np.repeat(np.random.default_rng(0).random((30, 30, 1)), 3, -1).astype(np.float32)
    assert np.array_equal(pp.normalize(grey, "haematoxylin"), pp.normalize(grey, "percentile"))
    with pytest.raises(ValueError, match="haematoxylin"):
        pp.normalize(grey, "zscore")


def test_centre_distance_peaks_at_one_in_every_nucleus_and_dips_where_two_touch():
    lab = np.zeros((20, 40), np.int32)
    lab[4:15, 2:13] = 1
    lab[4:15, 13:24] = 2   # touches nucleus 1 along column 13
    lab[8:11, 30:33] = 3   # small, alone
    d = pp.centre_distance(lab)
    assert d.dtype == np.float32 and d[lab == 0].max() == 0
    for i in (1, 2, 3):
        assert d[lab == i].max() == pytest.approx(1.0)
    assert d[9, 7] == pytest.approx(1.0) and d[9, 18] == pytest.approx(1.0)  # the centres
    assert d[9, 12] == d[9, 13] == d[9, 2]  # the shared edge is an edge, like the outer one
    assert d[9, 12] < 0.25
    assert pp.centre_distance(np.zeros((5, 5), np.int32)).max() == 0


def test_distance_target_is_the_third_channel():
    lab = np.zeros((12, 12), np.int32)
    lab[2:9, 2:9] = 1
    t = pp.make_targets(lab, ["mask", "touching", "distance"])
    assert t.shape == (12, 12, 3)
    assert np.array_equal(t[..., 2], pp.centre_distance(lab))


def test_nearest_label_resize_keeps_labels_and_the_papers_soft_resize_dilates():
    lab = np.zeros((512, 512), np.int32)
    yy, xx = np.mgrid[:512, :512]
    for i, (cy, cx) in enumerate([(100, 100), (300, 350), (400, 120)], 1):
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= 12 ** 2] = i
    near = pp.resize_labels(lab, (256, 256))
    assert set(np.unique(near)) == {0, 1, 2, 3}
    soft = pp.paper_soft_resize(lab > 0, (256, 256))
    assert soft.sum() > 1.05 * (near > 0).sum()  # > 0 after interpolation grows every nucleus


@pytest.mark.parametrize("shape", [(1, 1), (1, 40), (33, 1), (31, 65)])
def test_padding_to_a_multiple_of_32_handles_thin_images(shape):
    img = np.random.default_rng(0).random(shape + (3,)).astype(np.float32)
    padded, size = pp.pad_to_multiple(img, 32)
    assert size == shape and padded.shape[0] % 32 == 0 and padded.shape[1] % 32 == 0
    assert np.array_equal(padded[: shape[0], : shape[1]], img)
