"""Scale: nucleus size from labels and from a foreground, the factor, and predicting at the
standard size."""
import numpy as np
import pytest
from skimage.draw import disk

from nucseg_utils.core import profiles
from nucseg_utils.inference import scale
from nucseg_utils.training import augmentation


def discs(shape, centres, radius):
    lab = np.zeros(shape, np.int32)
    for i, c in enumerate(centres, start=1):
        lab[disk(c, radius, shape=shape)] = i
    return lab


def grid_discs(shape, radius, gap=6):
    step = 2 * radius + gap
    centres = [(r, c) for r in range(radius + 3, shape[0] - radius - 3, step)
               for c in range(radius + 3, shape[1] - radius - 3, step)]
    return discs(shape, centres, radius)


@pytest.mark.parametrize("radius", [4, 10, 25])
def test_label_diameter_is_the_equivalent_diameter_of_discs(radius):
    lab = grid_discs((200, 220), radius)
    assert lab.max() >= 4
    assert scale.label_diameter(lab) == pytest.approx(2 * radius, rel=0.08)


def test_label_diameter_of_an_empty_image_is_zero():
    assert scale.label_diameter(np.zeros((10, 10), np.int32)) == 0.0
    assert scale.mask_diameter(np.zeros((10, 10), bool)) == 0.0


@pytest.mark.parametrize("radius", [5, 12, 30])
def test_foreground_estimate_grows_with_the_nuclei_and_ignores_touching(radius):
    # a disc: mean distance to the edge is r/3, so the estimate is 5/3 r = 0.83 x diameter
    # (plus up to a pixel: the distance transform counts to the centre of the nearest
    # background pixel)
    lab = grid_discs((240, 260), radius)
    est = scale.mask_diameter(lab > 0)
    assert scale.EDT_TO_DIAMETER / 6 * 2 * radius <= est <= scale.EDT_TO_DIAMETER / 6 * (
        2 * radius + 2.5)
    # two touching discs merged in one foreground give about the same size, not double
    pair = discs((120, 160), [(60, 60), (60, 60 + 2 * radius)], radius) > 0
    assert scale.mask_diameter(pair) == pytest.approx(est, rel=0.2)


def test_edt_to_diameter_holds_on_real_nuclei(real_train):
    from scipy import ndimage as ndi
    ratios = []
    for sid in real_train.ids[::10]:
        lab = real_train.labels(sid)
        fg = lab > 0
        if fg.any():
            ratios.append(scale.label_diameter(lab) / ndi.distance_transform_edt(fg)[fg].mean())
    assert np.median(ratios) == pytest.approx(scale.EDT_TO_DIAMETER, rel=0.08)


def test_scale_factor_brings_nuclei_to_the_target_within_limits():
    assert scale.scale_factor(10, 20) == pytest.approx(2.0)
    assert scale.scale_factor(40, 20) == pytest.approx(0.5)
    assert scale.scale_factor(200, 20) == pytest.approx(0.25)  # clipped
    assert scale.scale_factor(2, 20) == pytest.approx(2.0)     # clipped
    assert scale.scale_factor(0, 20) == 1.0 and scale.scale_factor(30, None) == 1.0


def test_rescale_image_sizes_and_keeps_a_flat_image_flat():
    img = np.full((50, 70, 3), 0.4, np.float32)
    small = scale.rescale_image(img, 0.5)
    assert small.shape == (25, 35, 3) and np.allclose(small, 0.4, atol=1e-5)
    assert scale.rescale_image(img, 2.0).shape == (100, 140, 3)
    assert scale.rescale_image(np.ones((1, 3, 3), np.float32), 0.25).shape == (1, 1, 3)


class ThresholdModel:
    """A stand-in network: nucleus probability = the image's first channel; no touching."""

    def __call__(self, batch, training=False):
        out = np.concatenate([batch[..., :1], np.zeros_like(batch[..., :1])], axis=-1)

        class T:
            def numpy(self_inner):
                return out
        return T()


@pytest.mark.parametrize("radius,tta", [(20, True), (20, False), (6, True)])
def test_predict_scaled_finds_the_factor_and_returns_native_size(radius, tta):
    lab = grid_discs((150, 170), radius)
    img = np.repeat((lab > 0).astype(np.float32)[..., None], 3, axis=-1)
    config = {"input_mode": "crop", "target_diameter": 20, "scale_limits": [0.25, 2.0]}
    prob, steps = scale.predict_scaled(ThresholdModel(), img, config, tta=tta,
                                       return_steps=True)
    assert prob.shape == (150, 170, 2)
    expected = scale.scale_factor(scale.mask_diameter(lab > 0), 20)
    assert steps["factor"] == pytest.approx(expected, rel=0.3)
    # resized there and back, the probabilities still outline the same discs
    assert ((prob[..., 0] > 0.5) == (lab > 0)).mean() > 0.97


@pytest.mark.parametrize("probe", [None, 0.5])
def test_the_probabilities_do_not_depend_on_the_calibrated_mask_threshold(probe):
    """publish chooses the mask threshold on validation probabilities; the size estimate
    that rescales the image must not move with it, or the chosen number is not what the
    published model does."""
    lab = grid_discs((150, 170), 20)
    img = np.repeat(0.7 * (lab > 0).astype(np.float32)[..., None], 3, axis=-1)  # p = 0.7
    config = {"input_mode": "crop", "target_diameter": 20, "scale_limits": [0.25, 2.0],
              "size_probe": probe}
    runs = [scale.predict_scaled(ThresholdModel(), img, {**config, "threshold": t},
                                 tta=True, return_steps=True) for t in (0.5, 0.8)]
    assert np.array_equal(runs[0][0], runs[1][0])
    assert runs[0][1]["factor"] == runs[1][1]["factor"] != 1.0  # nuclei of 40 px were seen


def test_test_time_scaling_averages_passes_around_the_factor():
    lab = grid_discs((150, 170), 20)
    img = np.repeat((lab > 0).astype(np.float32)[..., None], 3, axis=-1)
    config = {"input_mode": "crop", "target_diameter": 20, "scale_limits": [0.25, 2.0]}
    plain = scale.predict_scaled(ThresholdModel(), img, config, tta=True)
    one = scale.predict_scaled(ThresholdModel(), img, {**config, "tta_scales": [1.0]}, tta=True)
    assert np.array_equal(plain, one)
    three = scale.predict_scaled(ThresholdModel(), img, {**config, "tta_scales": [0.8, 1, 1.25]},
                                 tta=True)
    assert three.shape == plain.shape and not np.array_equal(three, plain)
    assert ((three[..., 0] > 0.5) == (lab > 0)).mean() > 0.97


def test_typed_settings_predict_as_their_config_dict_does():
    """The inference takes a model's typed settings, or its config dict read into them:
    the user's diameter and the test-time scales are fields, not loose keys."""
    from nucseg_utils.core.settings import ModelSettings
    lab = grid_discs((150, 170), 20)
    img = np.repeat((lab > 0).astype(np.float32)[..., None], 3, axis=-1)
    config = {"backbone": "resnet18", "targets": ["mask", "touching"], "input_mode": "crop",
              "target_diameter": 20, "scale_limits": [0.25, 2.0], "size_probe": 0.5,
              "tta_scales": [0.8, 1.0], "diameter": 40.0, "epoch": 3}
    typed = ModelSettings.from_config(config)
    assert (typed.diameter, typed.tta_scales, typed.scale_limits) == (40.0, (0.8, 1.0),
                                                                       (0.25, 2.0))
    assert typed.other == {"epoch": 3} and ModelSettings.of(typed) is typed
    prob, steps = scale.predict_scaled(ThresholdModel(), img, typed, tta=True,
                                       return_steps=True)
    assert steps["factor"] == 0.5 and steps["passes"] == []  # the diameter given: no pass
    np.testing.assert_array_equal(prob, scale.predict_scaled(ThresholdModel(), img, config))
    assert scale.estimate_factor(ThresholdModel(), img, typed) == 0.5


def test_predict_scaled_without_a_target_is_the_plain_prediction():
    img = np.random.default_rng(0).random((40, 50, 3)).astype(np.float32)
    from nucseg_utils.inference import tta
    cfg = {"input_mode": "crop"}
    assert np.array_equal(scale.predict_scaled(ThresholdModel(), img, cfg, tta=False),
                          tta.predict(ThresholdModel(), img, cfg, tta=False))


def test_predict_scaled_of_an_empty_image_keeps_native_scale():
    img = np.zeros((64, 64, 3), np.float32)
    cfg = {"input_mode": "crop", "target_diameter": 20}
    prob, steps = scale.predict_scaled(ThresholdModel(), img, cfg, tta=True, return_steps=True)
    assert steps["factor"] == 1.0 and prob.shape == (64, 64, 2) and prob.max() == 0


def test_training_patches_show_nuclei_at_the_target_size():
    prof = profiles.get_profile("cpu", input_size=96)
    small, large = grid_discs((200, 200), 5), grid_discs((400, 400), 24)
    scales = augmentation.image_scales([small, large], prof)
    assert scales == pytest.approx([2.0, 20 / 48], rel=0.05)
    rng = np.random.default_rng(0)
    for lab, f in zip((small, large), scales):
        img = np.repeat((lab > 0).astype(np.float32)[..., None], 3, axis=-1)
        sizes = []
        for _ in range(6):
            _, patch = augmentation.sample_patch(rng, img, lab, prof, augment=False,
                                                 centre=(lab.shape[0] / 2, lab.shape[1] / 2),
                                                 scale=f)
            sizes.append(scale.label_diameter(patch))
        assert np.median(sizes) == pytest.approx(20, rel=0.2)


def test_a_profile_without_target_keeps_native_scale():
    prof = profiles.get_profile("paper")
    assert augmentation.image_scales([grid_discs((100, 100), 20)], prof) == [1.0]


@pytest.mark.parametrize("radius,trusted", [(30, True), (6, False)])
def test_size_probe_is_trusted_only_for_nuclei_that_look_standard_at_its_scale(radius, trusted):
    lab = grid_discs((300, 320), radius)
    img = np.repeat((lab > 0).astype(np.float32)[..., None], 3, axis=-1)
    config = {"input_mode": "crop", "target_diameter": 20, "size_probe": 0.5}
    prob, steps = scale.predict_scaled(ThresholdModel(), img, config, tta=False,
                                       return_steps=True)
    assert prob.shape == (300, 320, 2)
    assert (steps["passes"][0]["factor"] == 0.5) == trusted
    expected = scale.scale_factor(scale.mask_diameter(lab > 0), 20)
    assert steps["factor"] == pytest.approx(expected, rel=0.3)
