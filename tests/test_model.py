"""The networks of the profiles, saving and loading, and the ImageNet download message."""
import numpy as np
import pytest

from nucseg_utils import data, model, postprocessing
from nucseg_utils.core import profiles
from nucseg_utils.inference import forward
from nucseg_utils.model import engines

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_model_file(tmp_path_factory):
    """A model file of the smoke profile's network, random weights (seed 0): read only."""
    prof = profiles.get_profile("smoke")
    return model.save_model(model.build_model(prof, seed=0),
                            tmp_path_factory.mktemp("smoke_model") / "m.npz", prof)


def _load(path, engine=None):
    """(NucleusModel, its config dict)."""
    m = model.NucleusModel.load(path, engine=engine)
    return m, m.config


@pytest.mark.heavy
def test_paper_profile_builds_the_resnet152_unet_and_runs_one_training_step():
    prof = profiles.get_profile("paper", encoder_weights=None, batch_size=2)
    net = model.compile_model(model.build_model(prof), prof)
    assert any("stage4_unit3" in l.name for l in net.layers)  # ResNet-152: 3 units in stage 4
    assert any("stage3_unit36" in l.name for l in net.layers)  # ... and 36 in stage 3
    # one step at 64 px (the network is fully convolutional; the paper's 256 px only costs
    # time), run eagerly: tracing ResNet-152's training graph took 49 s here, the eager step 7 s
    # (the smoke trainings run Keras' traced step)
    net.run_eagerly = True
    x = np.random.default_rng(0).random((2, 64, 64, 3)).astype(np.float32)
    y = (np.random.default_rng(1).random((2, 64, 64, 1)) > 0.5).astype(np.float32)
    logs = net.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"]) and net.output_shape == (None, None, None, 1)


def test_imagenet_weights_that_cannot_be_downloaded_give_a_clear_message(monkeypatch):
    from urllib.error import URLError

    import tensorflow as tf

    def no_network(*args, **kwargs):
        raise Exception("URL fetch failure on https://example/resnet18.h5: "
                        + str(URLError("no network")))

    monkeypatch.setattr(tf.keras.utils, "get_file", no_network)
    prof = profiles.get_profile("smoke", encoder_weights="imagenet")
    with pytest.raises(model.ModelError, match="could not download the imagenet weights") as e:
        model.build_model(prof)
    assert "encoder_weights=None" in str(e.value) and "Colab" in str(e.value)


def test_saved_model_is_float16_and_reloads_to_the_same_predictions(tmp_path):
    prof = profiles.get_profile("smoke")
    net = model.build_model(prof)
    path = model.save_model(net, tmp_path / "m.npz", prof)
    with np.load(path) as z:
        assert z["w000"].dtype == np.float16
    again, config = _load(path)
    assert config["targets"] == prof["targets"] and config["input_mode"] == "crop"
    x = np.random.default_rng(0).random((1, 64, 96, 3)).astype(np.float32)
    ref = forward.forward_pass(again, x[0], config)
    assert ref.shape == (64, 96, 2)
    assert np.allclose(ref, forward.forward_pass(net, x[0], config), atol=2e-2)


def test_the_decoder_width_is_kept_in_the_model_file_and_old_files_get_the_default(tmp_path):
    narrow_prof = profiles.get_profile("smoke", decoder_filters=[64, 32, 16, 16, 16])
    narrow = model.build_model(narrow_prof, seed=0)
    wide = model.build_model(profiles.get_profile("smoke"), seed=0)
    assert narrow.count_params() < wide.count_params()
    path = model.save_model(narrow, tmp_path / "narrow.npz", narrow_prof)
    loaded, config = _load(path, engine="tensorflow")
    assert config["decoder_filters"] == [64, 32, 16, 16, 16]
    assert loaded.keras.count_params() == narrow.count_params()
    # a file written before the key existed has segmentation_models' default decoder
    before = {k: v for k, v in model.model_config(profiles.get_profile("smoke")).items()
              if k != "decoder_filters"}
    old = model.save_model(wide, tmp_path / "old.npz", before)
    assert "decoder_filters" not in model.read_model_file(old)[0]
    assert _load(old, engine="tensorflow")[0].keras.count_params() == wide.count_params()
    # narrow weights under such a config do not fit, and the message says so
    with pytest.raises(model.ModelError, match="do not fit"):
        _load(model.save_model(narrow, tmp_path / "bad.npz", before),
                         engine="tensorflow")


def test_resize_mode_predicts_at_the_native_size(tmp_path):
    prof = profiles.get_profile("smoke", input_mode="resize", input_size=64)
    net = model.build_model(prof)
    img = np.random.default_rng(0).random((50, 130, 3)).astype(np.float32)
    assert forward.forward_pass(net, img, model.model_config(prof)).shape == (50, 130, 2)


def test_profile_overrides_apply_none_and_reject_unknown_keys():
    assert profiles.get_profile("paper", encoder_weights=None)["encoder_weights"] is None
    assert profiles.get_profile("cpu", epochs=3)["epochs"] == 3
    with pytest.raises(profiles.ProfileError, match="unknown profile parameter 'epoch'"):
        profiles.get_profile("cpu", epoch=3)


def test_the_openvino_engine_gives_tensorflows_probabilities_with_tta(smoke_model_file):
    from nucseg_utils.inference import tta
    path = smoke_model_file
    tf_net, config = _load(path, engine="tensorflow")
    ov_net, _ = _load(path, engine="openvino")
    assert (tf_net.engine, ov_net.engine) == ("tensorflow", "openvino")
    rng = np.random.default_rng(0)
    for shape in [(64, 96, 3), (70, 45, 3)]:  # any size: padded to a multiple of 32
        img = rng.random(shape).astype(np.float32)
        ref = tta.predict(tf_net, img, config)
        got = tta.predict(ov_net, img, config)
        assert got.shape == ref.shape == shape[:2] + (2,)
        assert np.abs(got - ref).max() < 1e-5 and ref.std() > 0


@pytest.mark.heavy
def test_the_bfloat16_engine_is_close_to_tensorflow_and_says_what_ran(tmp_path, monkeypatch):
    import openvino as ov
    prof = profiles.get_profile("smoke")
    path = model.save_model(model.build_model(prof, seed=0), tmp_path / "m.npz", prof)
    tf_net, config = _load(path, engine="tensorflow")
    img = np.random.default_rng(1).random((64, 96, 3)).astype(np.float32)
    ref = forward.forward_pass(tf_net, img, config)
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    net, _ = _load(path, engine="openvino-bf16")
    got = forward.forward_pass(net, img, config)
    if "BF16" in caps:
        assert net.engine == "openvino-bf16"
        assert 1e-5 < np.abs(got - ref).max() < 0.05  # bfloat16: close, not the same
    else:
        assert net.engine == "openvino" and np.abs(got - ref).max() < 1e-4
    # what nucseg publishes is float32 whatever NUCSEG_ENGINE says
    monkeypatch.setenv("NUCSEG_ENGINE", "openvino-bf16")
    assert (engines.resolve(), engines.exact()) == ("openvino-bf16", "openvino")
    assert engines.exact("tensorflow") == "tensorflow"
    monkeypatch.delenv("NUCSEG_ENGINE")
    # a CPU without bfloat16: a warning, and the engine that ran is plain openvino
    monkeypatch.setattr(ov.Core, "get_property", lambda self, *a: ["FP32"])
    model.network._BUILT.clear()  # built again, on the CPU the stand-in describes
    with pytest.warns(UserWarning, match="no bfloat16 instructions"):
        net, _ = _load(path, engine="openvino-bf16")
    assert net.engine == "openvino"
    monkeypatch.undo()
    f32, _ = _load(path, engine="openvino")  # the float32 engine's own maps
    np.testing.assert_allclose(forward.forward_pass(net, img, config),
                               forward.forward_pass(f32, img, config), atol=1e-6)


def test_engine_choice_env_variable_unknown_names_and_a_missing_openvino(tmp_path, monkeypatch):
    import sys
    monkeypatch.setenv("NUCSEG_ENGINE", "tensorflow")
    assert engines.resolve() == "tensorflow"
    assert engines.resolve("openvino") == "openvino"  # the argument wins
    monkeypatch.delenv("NUCSEG_ENGINE")
    assert engines.resolve() == "openvino"  # auto on a CPU with OpenVINO installed
    with pytest.raises(engines.EngineError, match="unknown engine 'onnx'"):
        engines.resolve("onnx")
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    assert engines.resolve("auto") == "tensorflow"
    with pytest.raises(engines.EngineError, match="cannot be imported.*--engine tensorflow"):
        engines.resolve("openvino")
    with pytest.raises(engines.EngineError, match="the openvino-bf16 engine was asked for"):
        engines.resolve("openvino-bf16")


def test_the_command_line_offers_exactly_the_registered_engines_and_methods():
    from nucseg_utils import cli
    parser = cli.build_parser()
    for command in ("predict", "evaluate"):
        sub = parser._subparsers._group_actions[0].choices[command]
        opts = {a.dest: a for a in sub._actions}
        assert tuple(opts["engine"].choices) == ("auto", *engines.ENGINES)
        assert list(opts["postprocess"].choices) == list(postprocessing.METHODS)
    assert [e for e in engines.ENGINES.values() if not e.exact] == \
        [engines.ENGINES["openvino-bf16"]] and engines.ENGINES["openvino-bf16"].auto is None


def test_a_registered_engine_is_what_auto_picks_and_what_a_model_runs(smoke_model_file,
                                                                     monkeypatch):
    calls = []

    def build(network):
        calls.append(network)
        return (lambda batch: np.full(batch.shape[:3] + (2,), 0.25, np.float32)), "constant"

    monkeypatch.setitem(engines.ENGINES, "constant",
                        engines.Engine("constant", "a test engine", build, auto=-1))
    prof = profiles.get_profile("smoke")
    assert engines.resolve() == "constant"  # first in the auto order
    m = model.NucleusModel.load(smoke_model_file)
    assert m.engine == "constant" and calls == [m.keras]
    img = np.random.default_rng(0).random((40, 50, 3)).astype(np.float32)
    np.testing.assert_array_equal(m.forward(img[None]), np.full((1, 40, 50, 2), 0.25))
    # another setting shares the network and its engine (built once)
    other = m.with_settings(threshold=0.3)
    assert other.keras is m.keras and len(calls) == 1 and other.settings.postprocessing.threshold == 0.3
    assert m.settings.postprocessing.threshold == prof["threshold"]


def test_a_fresh_network_is_the_callers_own_and_leaves_the_loaded_one_unchanged(
        smoke_model_file):
    shared = model.NucleusModel.load(smoke_model_file, engine="tensorflow").keras
    before = [w.copy() for w in shared.get_weights()]
    mine = model.fresh_network(smoke_model_file)
    assert mine is not shared and mine is not model.fresh_network(smoke_model_file)
    for a, b in zip(mine.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)
    mine.set_weights([w + 1 for w in mine.get_weights()])  # e.g. statistics moved in place
    for a, b in zip(shared.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)
    again = model.NucleusModel.load(smoke_model_file, engine="tensorflow").keras
    np.testing.assert_array_equal(again.get_weights()[0], before[0])


def test_predict_instances_is_postprocess_of_predict_probabilities_with_its_steps(
        smoke_model_file):
    prof = profiles.get_profile("smoke")
    m = model.NucleusModel.load(smoke_model_file, engine="tensorflow")
    assert m.settings.targets == tuple(prof["targets"]) and m.settings.postprocessing.method == "touching"
    rng = np.random.default_rng(3)
    image = (rng.random((48, 64)) * 255).astype(np.uint8)  # grey, 8 bit, as a file holds it
    prob = m.predict_probabilities(image, tta=False)
    assert prob.shape == (48, 64, 2) and prob.dtype == np.float32
    np.testing.assert_array_equal(prob, prob.astype(np.float16).astype(np.float32))
    for method in postprocessing.methods_for(2):
        labels, details = m.predict_instances(image, tta=False, method=method)
        np.testing.assert_array_equal(labels, m.postprocess(prob, method))
        np.testing.assert_array_equal(details["probabilities"], prob)
        assert details["method"] == method and "labels" in details["steps"]
    # the same image as RGB floats (what the data layer reads) gives the same probabilities
    np.testing.assert_array_equal(m.predict_probabilities(data.to_rgb_float(image), tta=False),
                                  prob)


def test_model_settings_read_a_config_with_defaults_for_what_it_lacks():
    s = model.ModelSettings.from_config({"backbone": "resnet18", "targets": ["mask"],
                                         "threshold": 0.6, "epoch": 15})
    pp = s.postprocessing
    assert (s.targets, pp.threshold, pp.method, pp.dilation) == (("mask",), 0.6, "paper", 0)
    assert s.decoder_filters == model.DECODER_FILTERS and s.other == {"epoch": 15}


def test_a_model_file_loaded_again_reuses_its_network_unless_its_weights_changed(
        tmp_path, monkeypatch):
    """``NucleusModel.load`` builds a network and its engine once per architecture and weights:
    loading the file again, even with other calibrated settings, reuses them; other weights
    are built anew."""
    built = []
    real = engines.build
    monkeypatch.setattr(engines, "build", lambda net, engine=None, **kw: built.append(engine)
                        or real(net, engine, **kw))
    prof = profiles.get_profile("smoke")
    path = model.save_model(model.build_model(prof, seed=3), tmp_path / "m.npz", prof)
    first = model.NucleusModel.load(path, engine="tensorflow")
    model.update_config(path, threshold=0.7)
    again = model.NucleusModel.load(path, engine="tensorflow")
    assert built == ["tensorflow"] and again.keras is first.keras
    assert again.config["threshold"] == 0.7 and first.config["threshold"] == 0.5
    other = model.save_model(model.build_model(prof, seed=4), tmp_path / "o.npz", prof)
    assert model.NucleusModel.load(other, engine="tensorflow").keras is not first.keras
    assert built == ["tensorflow", "tensorflow"]


def test_an_openvino_conversion_is_kept_and_read_back_without_building_the_network(
        smoke_model_file, tmp_path, monkeypatch):
    """The OpenVINO engine keeps its conversion in the cache folder: loading the same weights
    again (in another process, here with the process's own memory cleared) reads it without
    building the Keras network, and predicts exactly the same; a damaged entry is converted
    again; NUCSEG_CACHE=off keeps nothing."""
    import shutil
    cache = tmp_path / "cache"
    monkeypatch.setenv("NUCSEG_CACHE", str(cache))
    path = smoke_model_file
    x = np.random.default_rng(2).random((1, 64, 96, 3)).astype(np.float32)
    model.network._BUILT.clear()
    ref = model.NucleusModel.load(path, engine="openvino").forward(x)
    kept = sorted((cache / "openvino").iterdir())
    assert [p.suffix for p in kept] == [".bin", ".xml"]
    real = model.network._rebuild
    model.network._BUILT.clear()
    monkeypatch.setattr(model.network, "_rebuild", lambda *a: pytest.fail("network built"))
    again = model.NucleusModel.load(path, engine="openvino")
    assert np.array_equal(again.forward(x), ref)
    monkeypatch.setattr(model.network, "_rebuild", real)
    assert again.keras.count_params() > 0  # built when asked for
    kept[1].write_text("<net>damaged")
    model.network._BUILT.clear()
    assert np.array_equal(model.NucleusModel.load(path, engine="openvino").forward(x), ref)
    assert sorted((cache / "openvino").iterdir()) == kept  # written again, nothing else left
    assert "damaged" not in kept[1].read_text()
    size = kept[0].stat().st_size
    with open(kept[0], "r+b") as weights:  # weights cut short
        weights.truncate(size // 2)
    model.network._BUILT.clear()
    assert np.array_equal(model.NucleusModel.load(path, engine="openvino").forward(x), ref)
    assert kept[0].stat().st_size == size
    shutil.rmtree(cache)
    monkeypatch.setenv("NUCSEG_CACHE", "off")
    model.network._BUILT.clear()
    model.NucleusModel.load(path, engine="openvino")
    assert not cache.exists()


def test_a_cached_model_predicts_in_a_process_that_never_imports_tensorflow(tmp_path,
                                                                            monkeypatch):
    import subprocess
    import sys
    monkeypatch.setenv("NUCSEG_CACHE", str(tmp_path / "cache"))
    image = np.random.default_rng(3).integers(0, 255, (90, 110, 3), dtype=np.uint8)
    np.save(tmp_path / "image.npy", image)
    model.network._BUILT.clear()
    want = model.NucleusModel.load("cpu", engine="openvino").predict_probabilities(image,
                                                                                    tta=False)
    code = ("import sys, numpy as np\n"
            "from nucseg_utils import NucleusModel\n"
            "m = NucleusModel.load('cpu')\n"
            f"p = m.predict_probabilities(np.load({str(tmp_path / 'image.npy')!r}), tta=False)\n"
            f"np.save({str(tmp_path / 'got.npy')!r}, p)\n"
            "print(m.engine, 'tensorflow' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    if engines._gpu():
        pytest.skip("a GPU here: auto is TensorFlow")
    assert done.stdout.split()[-2:] == ["openvino", "False"], done.stdout
    assert np.array_equal(np.load(tmp_path / "got.npy"), want)
