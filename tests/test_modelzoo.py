"""The BioImage Model Zoo package (`nucseg export`): valid for bioimageio.spec, its weights
reproduce its test output through the pre-processing it describes, and bad inputs or outputs
give one clear error naming the file, with nothing half-written left behind."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from nucseg_utils import cli
from nucseg_utils.exports import modelzoo
from nucseg_utils.model import ModelError

EXPECTED_FILES = {"rdf.yaml", "README.md", "cover.png", "test_input.npy", "test_output.npy",
                  "sample_input.png", "sample_output.tif", "weights.h5", "tf_saved_model.zip"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained ResNet-18 U-Net of the smoke profile as a nucseg model file: the package
    is about the format, not about what the weights know."""
    from nucseg_utils.core import profiles
    from nucseg_utils.model import build_model, save_model
    prof = profiles.get_profile("smoke")
    path = tmp_path_factory.mktemp("tiny") / "smoke" / "model.npz"
    return save_model(build_model(prof), path, prof, dataset="synthetic")


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "pkg" / "nucseg-smoke.bioimageio.zip"
    return modelzoo.export_package(tiny_model, out)


@pytest.fixture(scope="module")
def unpacked(exported, tmp_path_factory):
    folder = tmp_path_factory.mktemp("unpacked")
    with zipfile.ZipFile(exported.path) as z:
        z.extractall(folder)
    return folder


def described_preprocessing(descr, x: np.ndarray) -> np.ndarray:
    """The input pre-processing as the rdf states it, in numpy (what a consumer does)."""
    ipt = descr.inputs[0]
    axes = [str(a.id) for a in ipt.axes]
    for step in ipt.preprocessing:
        k = step.kwargs
        if step.id == "ensure_dtype":
            x = x.astype(k.dtype)
        elif step.id == "scale_range":
            reduce = tuple(axes.index(str(a)) for a in k.axes)
            lo = np.percentile(x, k.min_percentile, axis=reduce, keepdims=True)
            hi = np.percentile(x, k.max_percentile, axis=reduce, keepdims=True)
            x = (x - lo) / (hi - lo + k.eps)
        elif step.id == "clip":
            x = np.clip(x, k.min, k.max)
        else:
            raise AssertionError(f"unexpected pre-processing step {step.id}")
    return x


@pytest.mark.heavy
@pytest.mark.slow
def test_package_validates_with_bioimageio_spec(exported):
    from bioimageio.spec import InvalidDescr, load_description
    assert exported.path.is_file() and exported.size == exported.path.stat().st_size
    assert exported.status == "valid-format"  # "passed" needs bioimageio.core's test run
    assert not [w for w in exported.warnings if w.startswith("error")]
    descr = load_description(str(exported.path), perform_io_checks=True)
    assert not isinstance(descr, InvalidDescr), descr.validation_summary.format()
    assert descr.validation_summary.status == "valid-format"
    assert all(not d.errors for d in descr.validation_summary.details)
    assert descr.weights.keras_hdf5 is not None
    assert descr.weights.tensorflow_saved_model_bundle is not None
    assert descr.weights.tensorflow_saved_model_bundle.parent == "keras_hdf5"
    assert [c for c in descr.outputs[0].axes if c.type == "channel"][0].channel_names == \
        ["nucleus", "touching_zone"]
    scale = [p for p in descr.inputs[0].preprocessing if p.id == "scale_range"][0].kwargs
    assert (scale.min_percentile, scale.max_percentile) == modelzoo.PERCENTILES
    assert sorted(map(str, scale.axes)) == ["channel", "x", "y"]  # per image, channels jointly
    with zipfile.ZipFile(exported.path) as z:
        assert EXPECTED_FILES <= set(z.namelist())
        readme = z.read("README.md").decode()
    for step in ("Background inversion", "Rescaling to one nucleus size",
                 "Test-time augmentation", "Touching-zone watershed", "## Validation",
                 "nucseg predict --model model.npz"):
        assert step in readme
    assert "SYNTHETIC" in readme and "SYNTHETIC" in descr.name


@pytest.mark.heavy
@pytest.mark.slow
def test_weights_reproduce_the_test_output_through_the_described_preprocessing(unpacked):
    import imageio.v3 as iio
    from bioimageio.spec import load_description

    from nucseg_utils.inference.preprocessing import normalize
    from nucseg_utils.model import tf_setup
    tf = tf_setup()
    descr = load_description(str(unpacked / "rdf.yaml"), perform_io_checks=False)
    x = np.load(unpacked / "test_input.npy")
    expected = np.load(unpacked / "test_output.npy")
    assert x.shape == (1, 256, 256, 3) and x.dtype == np.float32 and 0 <= x.min() < x.max() <= 1
    assert expected.shape == (1, 256, 256, 2) and expected.dtype == np.float32
    # the description's pre-processing is nucseg's normalisation of this (dark) image
    x_pre = described_preprocessing(descr, x)
    np.testing.assert_allclose(x_pre[0], normalize(x[0], "percentile"), atol=1e-5)

    keras_model = tf.keras.models.load_model(unpacked / "weights.h5", compile=False)
    np.testing.assert_allclose(keras_model(x_pre, training=False).numpy(), expected, atol=1e-4)

    with zipfile.ZipFile(unpacked / "tf_saved_model.zip") as z:
        z.extractall(unpacked / "saved_model")
    serving = tf.saved_model.load(str(unpacked / "saved_model")).signatures["serving_default"]
    out = serving(**{modelzoo.INPUT_ID: tf.constant(x_pre)})[modelzoo.OUTPUT_ID].numpy()
    np.testing.assert_allclose(out, expected, atol=1e-4)

    cover = iio.imread(unpacked / "cover.png")
    assert cover.shape[0] == cover.shape[1]  # 1:1, as the format asks
    assert (unpacked / "cover.png").stat().st_size < 500_000


@pytest.mark.heavy
@pytest.mark.slow
def test_an_interrupted_export_leaves_nothing_behind(unpacked, tmp_path, monkeypatch):
    import bioimageio.spec
    from bioimageio.spec import load_description
    descr = load_description(str(unpacked / "rdf.yaml"), perform_io_checks=False)

    def half_written(descr, output_path, **kwargs):
        output_path.write_bytes(b"PK half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(bioimageio.spec, "save_bioimageio_package", half_written)
    out = tmp_path / "out" / "pkg.zip"
    with pytest.raises(KeyboardInterrupt):
        modelzoo.write_package(descr, out)
    assert list(out.parent.iterdir()) == []
    out.write_bytes(b"an older package")
    with pytest.raises(KeyboardInterrupt):
        modelzoo.write_package(descr, out)
    assert list(out.parent.iterdir()) == [out] and out.read_bytes() == b"an older package"


def test_a_missing_or_corrupt_model_gives_an_error_naming_it(tmp_path, capsys):
    missing = tmp_path / "nothing_here.npz"
    with pytest.raises(ModelError, match="nothing_here.npz"):
        modelzoo.export_package(missing, tmp_path / "pkg.zip")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a model")
    out = tmp_path / "out" / "pkg.zip"
    assert cli.main(["export", "--model", str(corrupt), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "nucseg export: error:" in err and str(corrupt) in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.fixture
def config_only_model(tmp_path):
    """A model file with a config and no weights: enough for the checks made before loading."""
    path = tmp_path / "config_only.npz"
    np.savez(path, config=np.array(json.dumps({"backbone": "resnet18", "targets": ["mask"],
                                               "normalization": "percentile"})))
    return path


def test_an_unusable_output_gives_an_error_naming_it(config_only_model, tmp_path, capsys):
    tiny_model = config_only_model
    blocker = tmp_path / "a_file"
    blocker.write_text("a file, not a folder")
    out = blocker / "pkg.zip"
    with pytest.raises(modelzoo.ExportError, match="a_file/pkg.zip: cannot write there"):
        modelzoo.export_package(tiny_model, out)
    with pytest.raises(modelzoo.ExportError, match=r"\.zip"):
        modelzoo.export_package(tiny_model, tmp_path / "pkg.tar")
    existing = tmp_path / "old.zip"
    existing.write_bytes(b"keep me")
    assert cli.main(["export", "--model", str(tiny_model), "--out", str(existing)]) == 2
    err = capsys.readouterr().err
    assert str(existing) in err and "--overwrite" in err
    assert existing.read_bytes() == b"keep me"
