"""Prediction one image at a time: reading one 2-D plane out of what users save (grey, RGB,
TIFF channels, stacks), the cheap check of a folder, and the streamed submission."""
from __future__ import annotations

import io

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from nucseg_utils import data, predict
from nucseg_utils.data import outputs


def tiff_bytes(arr, **kwargs) -> io.BytesIO:
    f = io.BytesIO()
    tifffile.imwrite(f, arr, **kwargs)
    f.seek(0)
    return f


def png_bytes(arr) -> io.BytesIO:
    return io.BytesIO(iio.imwrite("<bytes>", arr, extension=".png"))


@pytest.mark.parametrize("arr, kwargs, shape", [
    (np.zeros((20, 30), np.uint16), {}, (20, 30)),
    (np.zeros((20, 30, 3), np.uint8), {}, (20, 30, 3)),
    (np.zeros((3, 20, 30), np.uint8), {}, (20, 30, 3)),                     # planar RGB
    (np.zeros((2, 20, 30), np.uint16), {"imagej": True, "metadata": {"axes": "CYX"}},
     (20, 30)),                                                             # channel 0
    (np.zeros((1, 1, 20, 30), np.uint16), {"imagej": True}, (20, 30)),     # singleton axes
])
def test_read_plane_gives_one_channels_last_plane(arr, kwargs, shape):
    plane, size, _, _ = predict.read_plane(tiff_bytes(arr, **kwargs), "x.tif")
    assert plane.shape == shape and plane.dtype == arr.dtype and size is None


def test_read_plane_drops_alpha_and_keeps_a_chosen_channel():
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 1] = 9
    assert predict.read_plane(png_bytes(rgba), "x.png")[0].shape == (10, 12, 3)
    plane = predict.read_plane(png_bytes(rgba), "x.png", channel=1).pixels
    assert plane.shape == (10, 12) and (plane == 9).all()


def test_read_plane_takes_the_chosen_channel_of_a_seven_channel_tiff():
    arr = np.zeros((7, 20, 30), np.uint16)
    arr[4] = 5
    f = tiff_bytes(arr, imagej=True, metadata={"axes": "CYX"}, resolution=(2, 2))
    plane, size, channel, note = predict.read_plane(f, "x.tif", channel=4)
    assert plane.shape == (20, 30) and (plane == 5).all() and size is None
    assert channel == "4" and note is None  # chosen: nothing to say
    f = tiff_bytes(arr, imagej=True, metadata={"axes": "CYX", "unit": "um"}, resolution=(2, 2))
    assert predict.read_plane(f, "x.tif", channel=4)[1] == pytest.approx(0.5)


@pytest.mark.parametrize("arr, kwargs, channel, words", [
    (np.zeros((6, 20, 30), np.uint8), {"imagej": True, "metadata": {"axes": "ZYX"}}, None,
     ["x.tif", "z-stack", "6 Z", "one plane per file"]),
    (np.zeros((5, 20, 30), np.uint8), {"imagej": True, "metadata": {"axes": "TYX"}}, 0,
     ["time series"]),
    (np.zeros((9, 20, 30), np.uint8), {}, None, ["9 planes", "--channel"]),
    (np.zeros((2, 20, 30), np.uint8), {"imagej": True, "metadata": {"axes": "CYX"}}, 2,
     ["has 2 channels", "--channel 2 does not exist"]),
    (np.zeros((20, 30), np.uint8), {}, 1, ["has 1 channel;"]),
])
def test_a_stack_or_an_impossible_channel_is_refused_naming_the_file(arr, kwargs, channel,
                                                                     words):
    for check in (predict.check_image, predict.read_plane):
        with pytest.raises(data.DataError) as err:
            check(tiff_bytes(arr, **kwargs), "x.tif", channel)
        assert all(w in str(err.value) for w in words), str(err.value)


def test_check_inputs_reads_headers_and_lists_every_bad_file(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    iio.imwrite(folder / "good.png", np.zeros((20, 20), np.uint8))
    iio.imwrite(folder / "thin.png", np.zeros((20, 1), np.uint8))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00 broken")
    tifffile.imwrite(folder / "stack.tif", np.zeros((6, 8, 8), np.uint8), imagej=True,
                     metadata={"axes": "ZYX"})
    iio.imwrite(folder / "a,b.png", np.zeros((8, 8), np.uint8))
    res = predict.check_inputs(data.open_images(folder))
    assert res.ok == ["good", "thin"] and set(res.failed) == {"broken", "stack", "a,b"}
    assert res.failed["broken"].startswith(str(folder / "broken.png"))
    assert "comma" in res.failed["a,b"] and "too thin" in res.notes["thin"]


def test_check_inputs_of_a_dsb_split_folder(smoke_data):
    split = data.open_images(smoke_data / "stage1_test")
    res = predict.check_inputs(split)
    assert res.ok == split.ids and not res.failed


def test_streamed_submission_equals_the_one_written_at_once(tmp_path, make_labels):
    rng = np.random.default_rng(0)
    labels = {f"img{i}": make_labels(rng, (24, 20)).astype(np.uint16) for i in range(5)}
    labels["empty"] = np.zeros((5, 5), np.uint16)
    outputs.save_label_dir(labels, tmp_path / "labels")
    outputs.write_submission(labels, tmp_path / "at_once.csv")
    predict.stream_submission(tmp_path / "labels", list(labels), tmp_path / "streamed.csv")
    assert (tmp_path / "streamed.csv").read_text() == (tmp_path / "at_once.csv").read_text()


def test_parse_formats_keeps_a_fixed_order_and_refuses_unknown_names():
    assert predict.parse_formats("rois, tiff") == ("tiff", "rois")
    with pytest.raises(ValueError, match="unknown format.*jpeg"):
        predict.parse_formats("tiff,jpeg")


def test_a_folder_predicted_in_bfloat16_is_not_resumed_in_float32_nor_the_reverse(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    base = {"model_fingerprint": "abc", "tta": True, "postprocess": "touching",
            "channel": None, "pixel_size_um": None}
    # a folder written before the key existed was float32: it resumes in float32
    predict.record_settings(out, base, {}, overwrite=False)
    predict.record_settings(out, {**base, "bfloat16": False}, {}, overwrite=False)
    with pytest.raises(FileExistsError, match=r"other settings \(bfloat16\)"):
        predict.record_settings(out, {**base, "bfloat16": True}, {}, overwrite=False)
    predict.record_settings(out, {**base, "bfloat16": True}, {}, overwrite=True)
    with pytest.raises(FileExistsError, match=r"other settings \(bfloat16\)"):
        predict.record_settings(out, {**base, "bfloat16": False}, {}, overwrite=False)


# --------------------------------------------------------------------------- the controls
@pytest.fixture(scope="module")
def release():
    """The committed release model (what nucseg predict uses by default)."""
    from nucseg_utils.model import NucleusModel
    return NucleusModel.load("release")


@pytest.fixture(scope="module")
def crowded():
    """A synthetic field of many nuclei, some cut by its border."""
    from nucseg_utils.data import synthetic
    image, labels = synthetic.make_image(np.random.default_rng(3), (160, 192), n_nuclei=40)
    return image, labels


@pytest.mark.slow
def test_each_control_changes_the_labels_the_way_its_help_says(release, crowded):
    image, _ = crowded
    prob = release.predict_probabilities(image)
    base = release.postprocess(prob)
    assert base.max() > 5
    # a higher threshold takes fewer pixels as nucleus; a lower one more
    high = release.with_settings(threshold=0.9).postprocess(prob)
    low = release.with_settings(threshold=0.3).postprocess(prob)
    assert (high > 0).sum() < (base > 0).sum() < (low > 0).sum()
    # no nucleus smaller than min_size survives, and the larger ones do
    areas = np.bincount(base.ravel())[1:]
    cut = int(np.median(areas))
    kept = release.with_settings(min_size=cut).postprocess(prob)
    assert np.bincount(kept.ravel())[1:].min() >= cut
    assert kept.max() == (areas >= cut).sum()
    # no nucleus touches the border, and every one that did not is still there
    inside = release.with_settings(exclude_border=True).postprocess(prob)
    rim = np.concatenate([inside[0], inside[-1], inside[:, 0], inside[:, -1]])
    assert rim.max() == 0
    on_rim = np.unique(np.concatenate([base[0], base[-1], base[:, 0], base[:, -1]]))
    assert inside.max() == base.max() - (on_rim > 0).sum()


@pytest.mark.slow
def test_a_given_diameter_sets_the_scale_without_measuring(release, crowded):
    from nucseg_utils.inference import scale
    from nucseg_utils.inference.preprocessing import normalize
    image = normalize(data.to_rgb_float(crowded[0]), release.config["normalization"])
    _, measured = scale.predict_scaled(release, image, release.config, tta=False,
                                       return_steps=True)
    _, given = scale.predict_scaled(release, image, {**release.config, "diameter": 40.0},
                                    tta=False, return_steps=True)
    assert measured["passes"] and not given["passes"]  # no size probe
    assert given["factor"] == pytest.approx(release.config["target_diameter"] / 40.0)
    model = release.with_settings(diameter=40.0)
    np.testing.assert_array_equal(
        model.predict_probabilities(crowded[0], tta=False),
        scale.predict_at(release, image, release.config, given["factor"], False)
        .astype(np.float16).astype(np.float32))


def test_an_unknown_setting_is_refused_by_name(release):
    with pytest.raises(ValueError, match="thresold"):
        release.with_settings(thresold=0.4)


@pytest.mark.slow
def test_the_command_lines_controls_are_recorded_and_a_rerun_with_others_is_refused(
        tmp_path, crowded, capsys):
    from nucseg_utils import cli
    from nucseg_utils.core import runs
    images = tmp_path / "images"
    images.mkdir()
    iio.imwrite(images / "field.png", crowded[0])
    out = tmp_path / "out"
    args = ["predict", "--images", str(images), "--out", str(out), "--quiet",
            "--formats", "labels-png", "--threshold", "0.7", "--min-area", "4",
            "--pixel-size", "0.5", "--exclude-on-edges", "--diameter", "30"]
    assert cli.main(args) == 0
    record = runs.read_json(out / "predict.json")
    controls = {"threshold": 0.7, "min_size": 16, "exclude_border": True, "diameter": 30.0}
    assert record["settings"]["controls"] == controls
    assert record["postprocessing"]["threshold"] == 0.7 and record["diameter"] == 30.0
    labels = outputs.read_labels_png(out / "labels" / "field.png")
    assert np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]).max() == 0
    assert np.bincount(labels.ravel())[1:].min() >= 16
    assert cli.main(args[:-2] + ["--diameter", "20"]) == 2
    assert "other settings (controls)" in capsys.readouterr().err
    assert cli.main(["predict", "--images", str(images), "--out", str(tmp_path / "o2"),
                     "--min-area", "4"]) == 2
    assert "--min-area needs --pixel-size" in capsys.readouterr().err
