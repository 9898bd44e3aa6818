"""Post-processing on synthetic probability maps with known nuclei."""
import numpy as np
import pytest

from nucseg_utils.evaluation import metrics
from nucseg_utils.inference.preprocessing import centre_distance, touching_zone
from nucseg_utils.postprocessing import mean_radius, paper_steps, postprocess


def discs(shape, centres, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lab = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centres, 1):
        d = (yy - cy) ** 2 + (xx - cx) ** 2
        lab[(d <= radius ** 2) & (lab == 0)] = i
    return lab


def soft(mask, sigma=1.0):
    from scipy import ndimage as ndi
    return np.clip(ndi.gaussian_filter(mask.astype(np.float32), sigma), 0, 1)


@pytest.fixture
def two_touching():
    # two discs of radius 12 whose centres are 20 px apart: they overlap in a waist
    return discs((64, 80), [(32, 28), (32, 48)], 12)


def test_watershed_splits_two_touching_discs(two_touching):
    prob = soft(two_touching > 0)
    labels = postprocess(prob, "paper", min_distance_factor=0.5)
    assert labels.max() == 2
    assert metrics.image_scores(two_touching, labels)["tp"][0] == 2


def test_connected_components_merge_the_touching_pair(two_touching):
    labels = postprocess(soft(two_touching > 0), "cc")
    assert labels.max() == 1


def test_touching_zone_markers_split_the_pair(two_touching):
    prob = np.stack([soft(two_touching > 0), touching_zone(two_touching).astype(np.float32)], -1)
    labels = postprocess(prob, "touching")
    assert labels.max() == 2
    assert metrics.image_scores(two_touching, labels)["dsb"] > 0.7


def three_channels(truth):
    """What a three-channel network should predict for ``truth``, blurred a little."""
    return np.stack([soft(truth > 0), soft(touching_zone(truth) > 0),
                     soft(centre_distance(truth) * 1.0, 0.7)], axis=-1)


def test_distance_map_seeds_split_a_pair_whose_touching_zone_was_missed(two_touching):
    prob = three_channels(two_touching)
    prob[..., 1] = 0  # no touching zone predicted: the touching watershed cannot split them
    assert postprocess(prob, "touching").max() == 1
    labels = postprocess(prob, "distance")
    assert labels.max() == 2
    assert metrics.image_scores(two_touching, labels)["dsb"] > 0.7


def test_distance_steps_return_every_step_and_end_in_the_labels(two_touching):
    from nucseg_utils.postprocessing import distance_steps
    prob = three_channels(two_touching)
    steps = distance_steps(prob, 0.5, 10, 0.5)
    assert {"nucleus", "distance", "foreground", "seed_map", "seeds", "watershed",
            "labels"} <= set(steps)
    assert int(steps["seeds"].max()) == 2
    assert np.array_equal(steps["labels"], postprocess(prob, "distance", threshold=0.5,
                                                       distance_seed=0.5))
    # a higher seed level keeps smaller seeds, never more of them here
    high = distance_steps(prob, 0.5, 10, 0.8)
    assert (high["seed_map"].sum() < steps["seed_map"].sum()) and high["labels"].max() == 2


def test_distance_post_processing_needs_three_channels(two_touching):
    prob = three_channels(two_touching)[..., :2]
    with pytest.raises(ValueError, match="three-channel"):
        postprocess(prob, "distance")


def test_separate_nuclei_are_not_over_split():
    truth = discs((100, 100), [(25, 25), (25, 75), (75, 50)], 10)
    labels = postprocess(soft(truth > 0), "paper")
    assert labels.max() == 3


@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("value", [0.0, 0.3, 0.9])
def test_empty_or_constant_map_gives_a_label_image_not_a_crash(channels, value):
    from nucseg_utils.postprocessing import methods_for
    for method in methods_for(channels):
        prob = np.full((40, 50, channels), value, np.float32)
        labels = postprocess(prob, method)
        assert labels.shape == (40, 50)
        # a constant map holds no boundaries: background below 0.5, at most one object above
        assert labels.max() == (0 if value < 0.5 else 1)
    assert len(methods_for(channels)) == {1: 2, 2: 3, 3: 4}[channels]


def test_paper_steps_report_the_intermediate_images(two_touching):
    steps = paper_steps(soft(two_touching > 0))
    assert steps["foreground"].dtype == bool and steps["foreground"].sum() > 0
    assert steps["distance"].max() == pytest.approx(12, abs=1.5)
    assert (steps["markers"] > 0).sum() >= 2


def test_holes_inside_a_nucleus_are_filled():
    truth = discs((60, 60), [(30, 30)], 15)
    prob = soft(truth > 0)
    prob[28:33, 28:33] = 0.0  # a dark hole in the middle of the nucleus
    labels = postprocess(prob, "cc")
    assert labels.max() == 1 and labels[30, 30] == 1


def test_small_objects_are_dropped():
    prob = np.zeros((50, 50), np.float32)
    prob[10:12, 10:12] = 1.0  # 4 pixels
    prob[30:40, 30:40] = 1.0  # 100 pixels
    assert postprocess(prob, "cc", min_size=10).max() == 1


def test_mean_radius_of_discs():
    assert mean_radius(discs((80, 80), [(20, 20), (60, 60)], 10) > 0) == pytest.approx(10, rel=0.05)


def test_touching_method_needs_two_channels():
    with pytest.raises(ValueError, match="two-channel"):
        postprocess(np.zeros((10, 10), np.float32), "touching")


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="unknown post-processing 'foo'"):
        postprocess(np.zeros((10, 10), np.float32), "foo")


def test_dilation_grows_each_nucleus_by_a_pixel_and_never_merges_two():
    from skimage.draw import disk

    from nucseg_utils.postprocessing import dilate_labels
    lab = np.zeros((40, 60), np.uint16)
    lab[disk((20, 15), 8)] = 1
    lab[disk((20, 33), 8)] = 2  # 2 px apart from 1
    grown = dilate_labels(lab, 1)
    assert set(np.unique(grown)) == {0, 1, 2}
    for i in (1, 2):
        assert (grown == i).sum() > (lab == i).sum()
        assert ((lab == i) <= (grown == i)).all()  # nothing taken away
    # the one-pixel gap is shared, never crossed: each object stays one piece
    from scipy import ndimage as ndi
    assert all(ndi.label(grown == i)[1] == 1 for i in (1, 2))
    assert np.array_equal(dilate_labels(lab, 0), lab)


def test_postprocess_threshold_sets_the_size_of_the_nuclei():
    from nucseg_utils.postprocessing import postprocess
    yy, xx = np.mgrid[:50, :50]
    prob = np.clip(1 - np.hypot(yy - 25, xx - 25) / 20, 0, 1).astype(np.float32)
    two = np.stack([prob, np.zeros_like(prob)], axis=-1)
    low = postprocess(two, "touching", threshold=0.3)
    high = postprocess(two, "touching", threshold=0.6)
    assert low.max() == high.max() == 1
    assert (low > 0).sum() > (high > 0).sum()


def test_touching_steps_return_every_step_and_end_in_the_watershed_labels(two_touching):
    from nucseg_utils.postprocessing import postprocess, touching_steps
    prob = np.stack([soft(two_touching > 0), soft(touching_zone(two_touching) > 0)], axis=-1)
    steps = touching_steps(prob, 0.5, 10)
    assert {"nucleus", "touching", "foreground", "seed_map", "seeds", "watershed",
            "labels"} <= set(steps)
    assert int(steps["seeds"].max()) == 2  # one seed per disc once the contact is cut away
    assert np.array_equal(steps["labels"], postprocess(prob, "touching", threshold=0.5, min_size=10))
    assert steps["labels"].max() == 2


def test_touching_steps_on_an_empty_map_give_empty_seeds_and_labels():
    from nucseg_utils.postprocessing import touching_steps
    steps = touching_steps(np.zeros((32, 32, 2), np.float32))
    assert steps["seeds"].max() == 0 and steps["labels"].max() == 0


def test_typical_area_is_the_area_weighted_mean_and_ignores_a_crowd_of_specks():
    from nucseg_utils.postprocessing import typical_area
    lab = np.zeros((200, 200), np.int32)
    lab[:40, :50] = 1                  # 2,000 px
    lab[50:90, :50] = 2                # 2,000 px
    for k in range(10):                # ten specks of 4 px
        lab[150 + (k // 5) * 4: 152 + (k // 5) * 4, 10 * k % 50: 10 * k % 50 + 2] = 3 + k
    expected = (2 * 2000 ** 2 + 10 * 4 ** 2) / (2 * 2000 + 10 * 4)
    assert typical_area(lab) == pytest.approx(expected)
    assert typical_area(lab) > 1900    # the plain mean would be (4,000 + 40) / 12 = 337
    assert typical_area(np.zeros((5, 5), np.int32)) == 0.0


def test_relative_size_filter_drops_specks_of_an_image_of_large_nuclei_only():
    # large nuclei (radius 20, about 1,257 px) and specks of 49 px: min_size (10 px) keeps the
    # specks; 0.1 x the image's typical area (about 120 px) drops them, and keeps the nuclei
    big = discs((160, 160), [(40, 40), (40, 110), (110, 75)], 20)
    prob = soft(big > 0)
    for y, x in [(140, 10), (10, 150), (150, 150)]:
        prob[y:y + 7, x:x + 7] = 1.0
    plain = postprocess(prob, "cc", threshold=0.5)
    kept = postprocess(prob, "cc", threshold=0.5, min_size_factor=0.1)
    assert plain.max() == 6 and kept.max() == 3
    assert set(np.unique(kept[big > 0])) - {0} == {1, 2, 3}  # every nucleus still there
    # an image of small nuclei alone loses none of them to the same setting
    small = discs((100, 100), [(20, 20), (20, 60), (60, 40)], 5)
    assert postprocess(soft(small > 0), "cc", min_size_factor=0.1).max() == 3


def test_mean_probability_filter_drops_faint_objects_and_relabels_the_rest():
    from nucseg_utils.postprocessing import filter_objects
    lab = discs((60, 90), [(30, 15), (30, 45), (30, 75)], 10)
    nucleus = np.where(lab == 2, 0.55, np.where(lab > 0, 0.95, 0.0)).astype(np.float32)
    out = filter_objects(lab, nucleus, min_mean_prob=0.7)
    assert out.max() == 2 and out[30, 45] == 0
    assert out[30, 15] == 1 and out[30, 75] == 2     # numbered 1..N in their order
    assert np.array_equal(filter_objects(lab, nucleus), lab)  # both filters off: unchanged
    # the model's path applies it too: a config that sets it drops the faint one
    from nucseg_utils.postprocessing import postprocess_as
    prob = np.stack([nucleus, np.zeros_like(nucleus)], axis=-1)
    cfg = {"postprocess": "touching", "threshold": 0.5, "min_mean_prob": 0.7}
    assert postprocess_as(prob, cfg).max() == 2
    assert postprocess_as(prob, {**cfg, "min_mean_prob": 0.0}).max() == 3
