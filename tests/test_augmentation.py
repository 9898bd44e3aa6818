"""The input pipeline: binary masks after every transform, reproducible streams."""
import numpy as np
import pytest

from nucseg_utils.core import profiles
from nucseg_utils.training import augmentation as aug


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    images, labels = [], []
    for _ in range(3):
        h, w = rng.integers(90, 200, 2)
        lab = np.zeros((h, w), np.int32)
        yy, xx = np.mgrid[:h, :w]
        for i in range(1, 12):
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(4, 12)
            lab[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (lab == 0)] = i
        images.append(np.stack([lab > 0] * 3, -1).astype(np.float32) + rng.normal(0, .05, (h, w, 3)).astype(np.float32))
        labels.append(lab)
    return images, labels


@pytest.mark.parametrize("name", ["paper", "cpu"])
def test_masks_stay_binary_and_labels_are_never_invented(data, name):
    prof = profiles.get_profile(name, batch_size=6, input_size=64)
    images, labels = data
    rng = np.random.default_rng(3)
    for k in range(10):
        i = k % 3
        img, lab = aug.sample_patch(rng, images[i], labels[i], prof)
        assert img.shape == (64, 64, 3) and lab.shape == (64, 64)
        assert set(np.unique(lab)) <= set(np.unique(labels[i]))
    x, y = aug.PatchSampler(images, labels, prof).batch(0)
    assert x.shape == (6, 64, 64, 3) and y.shape == (6, 64, 64, len(prof["targets"]))
    assert set(np.unique(y)) <= {0.0, 1.0}


def test_same_seed_and_step_give_the_same_batch_and_other_steps_differ(data):
    prof = profiles.get_profile("cpu", batch_size=4, input_size=64)
    a = aug.PatchSampler(*data, prof)
    b = aug.PatchSampler(*data, prof)
    x1, y1 = a.batch(5)
    x2, y2 = b.batch(5)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(a.batch(6)[0], x1)
    assert not np.array_equal(a.batch(5, seed=7)[0], x1)


def test_image_and_mask_are_transformed_together(data):
    prof = profiles.get_profile("paper", input_size=64)
    images, labels = data
    rng = np.random.default_rng(11)
    for _ in range(5):
        img, lab = aug.sample_patch(rng, images[0], labels[0], prof)
        fg = lab > 0
        if fg.sum() > 20 and (~fg).sum() > 20:
            # the image was made bright where the mask is: after the same warp, still so
            assert img[..., 0][fg].mean() > img[..., 0][~fg].mean() + 0.5


def test_validation_set_is_fixed(data):
    prof = profiles.get_profile("cpu", input_size=64)
    x1, y1 = aug.validation_set(*data, prof)
    x2, y2 = aug.validation_set(*data, prof)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert len(x1) == 3 * prof["val_crops_per_image"]


def test_modality_weights_favour_rare_modalities():
    w = aug.modality_weights(["f", "f", "f", "f", "s"], 0.5)
    assert w[4] == pytest.approx(2 * w[0])
    assert np.allclose(aug.modality_weights(["f", "s", "s"], 0.0), 1)


class _Batches:
    """A stand-in sampler: batch k is filled with k; batch ``bad`` raises."""

    def __init__(self, bad=None):
        self.bad, self.made = bad, []

    def batch(self, step):
        self.made.append(step)
        if step == self.bad:
            raise ValueError(f"bad batch {step}")
        return (np.full((2, 4, 4, 3), step, np.float32), np.full((2, 4, 4, 1), -step, np.float32))


def test_prefetch_yields_every_step_in_order_and_reraises_errors():
    import threading
    import time
    before = threading.active_count()
    got = list(aug.prefetch(_Batches(), 3, 23, depth=2))
    assert [int(x[0, 0, 0, 0]) for x, _ in got] == list(range(3, 23))
    assert all(np.array_equal(y, -x[..., :1]) for x, y in got)
    assert list(aug.prefetch(_Batches(), 5, 5)) == []
    with pytest.raises(ValueError, match="bad batch 4"):
        list(aug.prefetch(_Batches(bad=4), 0, 10))

    class Interrupted(_Batches):  # an interruption while a batch is made
        def batch(self, step):
            if step == 2:
                raise KeyboardInterrupt
            return super().batch(step)

    made = []
    with pytest.raises(KeyboardInterrupt):
        for x, _ in aug.prefetch(Interrupted(), 0, 10):
            made.append(int(x[0, 0, 0, 0]))
    assert made == [0, 1]
    # a generator closed early (a training stopped after an epoch) stops its worker
    early = aug.prefetch(_Batches(), 0, 100, depth=2)
    assert int(next(early)[0][0, 0, 0, 0]) == 0
    early.close()
    for _ in range(300):  # Keras' pool closes its threads once its last task is done
        if threading.active_count() <= before:
            break
        time.sleep(0.1)
    assert threading.active_count() <= before, [t.name for t in threading.enumerate()]


def test_colour_examples_are_seeded_jitters_of_the_image():
    img = np.random.default_rng(0).random((16, 20, 3)).astype(np.float32)
    a, b = aug.colour_examples(img, 4, seed=5), aug.colour_examples(img, 4, seed=5)
    assert len(a) == 4 and all(x.shape == img.shape for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], a[1])
    assert not np.array_equal(a[0], aug.colour_examples(img, 1, seed=6)[0])


def _tissue(seed=0, shape=(40, 48)):
    """A normalised stained-tissue-like patch: dark purple nuclei on a near-white background,
    inverted as normalize() inverts bright backgrounds (nuclei bright)."""
    rng = np.random.default_rng(seed)
    rgb = np.full(shape + (3,), 0.92, np.float32)
    rgb[10:20, 12:26] = (0.35, 0.15, 0.55)
    rgb += rng.normal(0, 0.02, rgb.shape).astype(np.float32)
    return 1.0 - rgb


def test_stain_jitter_of_strength_zero_returns_the_patch_even_beyond_the_unit_range():
    img = _tissue()
    img[0, 0] = (1.3, -0.2, 0.5)  # normalize() clips to CLIP = (-0.5, 1.5), not to [0, 1]
    out = aug.stain_jitter(np.random.default_rng(1), img, 0.0)
    assert out.dtype == np.float32 and np.allclose(out, img, atol=1e-5)


def test_stain_jitter_changes_the_stains_not_where_the_nuclei_are():
    img = _tissue()
    outs = [aug.stain_jitter(np.random.default_rng(k), img, 0.3) for k in range(6)]
    assert all(not np.allclose(o, img, atol=0.01) for o in outs)
    # the nucleus stays the brightest part of every jittered patch (nuclei bright)
    nucleus = np.zeros(img.shape[:2], bool)
    nucleus[10:20, 12:26] = True
    for o in outs:
        grey = o.mean(-1)
        assert grey[nucleus].mean() > grey[~nucleus].mean() + 0.2
    # jitters differ from each other in colour, i.e. not only in brightness
    ratios = [o[nucleus].mean(0) / o[nucleus].mean() for o in outs]
    assert np.ptp([r[0] for r in ratios]) > 0.02


def test_only_images_marked_stained_get_the_stain_augmentation(data):
    prof = profiles.get_profile("cpu", batch_size=4, input_size=64,
                                augmentation={"stain": 0.3})  # `nucseg train --stain 0.3`
    plain = aug.PatchSampler(*data, prof).batch(3)[0]
    unmarked = aug.PatchSampler(*data, prof, stained=[False] * 3).batch(3)[0]
    marked = aug.PatchSampler(*data, prof, stained=[True] * 3).batch(3)[0]
    assert np.array_equal(plain, unmarked)
    assert not np.allclose(plain, marked, atol=1e-3)
    # a profile without stain augmentation ignores the marks
    smoke = profiles.get_profile("smoke", batch_size=4, input_size=64)
    assert not smoke["augmentation"].get("stain")
    assert np.array_equal(aug.PatchSampler(*data, smoke).batch(3)[0],
                          aug.PatchSampler(*data, smoke, stained=[True] * 3).batch(3)[0])
