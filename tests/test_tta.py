"""Test-time augmentation: each variant is undone exactly, and predictions are averaged."""
import numpy as np
import pytest

from nucseg_utils.inference import tta


@pytest.mark.parametrize("k,flip", tta.variants())
def test_each_variant_is_undone_exactly_on_a_non_square_image(k, flip):
    img = np.random.default_rng(0).random((7, 11, 3))
    assert np.array_equal(tta.inverse(tta.forward(img, k, flip), k, flip), img)


def test_there_are_eight_distinct_variants():
    img = np.arange(12.0).reshape(3, 4, 1)
    outs = {tta.forward(img, k, f).tobytes() + bytes(tta.forward(img, k, f).shape)
            for k, f in tta.variants()}
    assert len(tta.variants()) == 8 and len(outs) == 8


class ColumnModel:
    """A fake network that is not rotation invariant: it predicts the column index / width."""

    def __call__(self, batch, training=False):
        b, h, w, _ = batch.shape
        out = np.broadcast_to(np.linspace(0, 1, w, dtype=np.float32)[None, None, :, None],
                              (b, h, w, 1)).copy()

        class T:
            def numpy(self_inner):
                return out
        return T()


class IdentityModel:
    def __call__(self, batch, training=False):
        class T:
            def numpy(self_inner):
                return batch[..., :1].copy()
        return T()


def test_tta_of_an_equivariant_model_equals_the_plain_prediction():
    img = np.random.default_rng(1).random((40, 64, 3)).astype(np.float32)
    cfg = {"input_mode": "crop"}
    plain = tta.predict(IdentityModel(), img, cfg, tta=False)
    assert np.allclose(tta.predict(IdentityModel(), img, cfg, tta=True), plain, atol=1e-6)


def test_tta_averages_a_non_invariant_model_towards_the_symmetric_mean():
    img = np.zeros((64, 64, 3), np.float32)
    cfg = {"input_mode": "crop"}
    plain = tta.predict(ColumnModel(), img, cfg, tta=False)[..., 0]
    averaged = tta.predict(ColumnModel(), img, cfg, tta=True)[..., 0]
    assert plain.std() > 0.25
    assert np.allclose(averaged, averaged.mean(), atol=0.02)  # symmetric: every pixel 0.5
    assert averaged.mean() == pytest.approx(0.5, abs=0.01)


def test_batched_variants_equal_one_pass_per_variant():
    img = np.random.default_rng(2).random((40, 70, 3)).astype(np.float32)
    cfg = {"input_mode": "crop"}
    model = IdentityModel()
    one_by_one = sum(tta.inverse(tta.forward_pass(model, np.ascontiguousarray(
        tta.forward(img, k, f)), cfg), k, f) for k, f in tta.variants()) / 8
    assert np.allclose(tta.predict(model, img, cfg, tta=True), one_by_one, atol=1e-6)
