"""The paper profile's training on a T4: gradient accumulation (the effective batch of 32 in
micro-batches), mixed precision, the full checkpoint every N epochs, and the copy of the run
folder to Drive that a new session restores before it resumes. ``cpu`` and ``smoke`` keep
their training as it was."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from nucseg_utils import data, model, training
from nucseg_utils.core import mirror, profiles, runs
from nucseg_utils.core.settings import recipe_of
from nucseg_utils.evaluation import image_types
from nucseg_utils.model import ModelError


# --------------------------------------------------------------------------- the profiles
def test_the_paper_profile_keeps_its_effective_batch_of_32_in_micro_batches_of_8():
    paper = profiles.get_profile("paper")
    assert paper["batch_size"] == 32 and paper["micro_batch"] == 8
    assert profiles.accumulation_steps(paper) == 4
    assert paper["micro_batch"] * profiles.accumulation_steps(paper) == paper["batch_size"]
    assert paper["mixed_precision"] is True and paper["checkpoint_every"] > 1
    rows = dict(profiles.describe(paper).values.tolist())
    assert rows["batch size"].startswith("32 (gradients of 4 micro-batches of 8")
    assert rows["precision"].startswith("mixed float16")
    # a last micro-batch may be smaller
    assert profiles.accumulation_steps(profiles.get_profile("paper", micro_batch=10)) == 4


@pytest.mark.parametrize("name", ["cpu", "smoke"])
def test_cpu_and_smoke_keep_their_training_the_new_keys_are_neutral(name):
    prof = profiles.get_profile(name)
    paper_only = {k: v for k, v in profiles.ADDED_KEYS.items()
                  if k not in ("decoder_filters", "split_seed")}
    assert {k: prof[k] for k in paper_only} == paper_only
    assert prof["split_seed"] == recipe_of({**prof, "split_seed": None}).training.split_draw_seed()
    assert profiles.accumulation_steps(prof) == 1
    rows = profiles.describe(prof)
    assert "precision" not in rows["parameter"].tolist()
    assert rows.set_index("parameter").loc["batch size", "value"] == str(prof["batch_size"])
    # micro_batch equal to the batch is no accumulation either
    assert profiles.accumulation_steps(profiles.get_profile(name, micro_batch=prof["batch_size"])) == 1


def test_the_release_profile_is_the_cpu_recipe_on_every_labelled_stage1_image():
    from nucseg_utils.evaluation import protocol
    cpu, release = profiles.get_profile("cpu"), profiles.get_profile("release")
    differ = {k for k in set(cpu) | set(release) if cpu.get(k) != release.get(k)}
    assert differ == {"name", "train_splits", "train_labels", "split_by", "balance_by",
                      "balance_modalities"}
    assert release["train_splits"] == ["stage1_train", "stage1_test"]
    assert (release["train_labels"], release["split_by"]) == ("fixed", "type")
    # ... with every image type drawn equally often (validation_study.md, section 4)
    assert (release["balance_by"], release["balance_modalities"]) == ("type", 1.0)
    rows = dict(profiles.describe(release).values.tolist())
    assert rows["training images drawn"] == "every image type equally often"
    assert dict(profiles.describe(cpu).values.tolist())["training images drawn"] == \
        "with weight (images of its modality) ^ -0.5"
    # it has no stage1_test to be tested on: its test split is stage 2
    assert protocol.test_split_name(release["train_splits"]) == "stage2_test_final"
    with pytest.raises(protocol.ProtocolError, match="refusing to score stage1_test"):
        protocol.check_untouched("stage1_test", release["train_splits"])
    assert profiles.train_command(release, "runs/release") == \
        "nucseg train --profile release --out runs/release"


def test_the_seed_changes_the_training_not_the_validation_images(smoke_data):
    def subsets(**overrides):
        table, _ = training.load_training_data(profiles.get_profile("smoke", **overrides),
                                               smoke_data, progress=False)
        return table.set_index("id")["subset"]
    base = subsets()
    assert (base == "val").any()
    assert subsets(seed=43).equals(base)
    assert not subsets(split_seed=43).equals(base)
    # a run recorded before split_seed existed drew its split with its seed
    assert recipe_of({**profiles.get_profile("cpu"), "seed": 7, "split_seed": None}
                     ).training.split_draw_seed() == 7
    # resuming a run recorded without split_seed, whose split used its seed, is the same run
    cpu = profiles.get_profile("cpu")
    assert profiles.complete({**cpu, "split_seed": None}) == profiles.complete(cpu)
    assert profiles.train_command({**cpu, "seed": 43}, "r") == (
        "nucseg train --profile cpu --out r --seed 43")
    # a run recorded before split_seed with another seed split by it: its command says so,
    # and that command's profile resumes it
    old = {k: v for k, v in cpu.items() if k != "split_seed"} | {"seed": 43}
    command = profiles.train_command(old, "r")
    assert command == "nucseg train --profile cpu --out r --seed 43 --split-seed 43"
    from nucseg_utils import cli
    args = cli.build_parser().parse_args(command.split()[1:])
    again = profiles.get_profile("cpu", seed=args.seed, split_seed=args.split_seed)
    assert profiles.complete(again) == profiles.complete(old)


def test_a_run_recorded_before_the_new_keys_still_resumes(tmp_path):
    smoke = profiles.get_profile("smoke")
    old = {k: v for k, v in smoke.items() if k not in profiles.ADDED_KEYS}
    runs.update_run_json(tmp_path, profile=old, data_fingerprint={"x": 1})
    training.check_resume(smoke, {"x": 1}, tmp_path)  # no error
    training.check_resume(profiles.get_profile("smoke", checkpoint_every=5), {"x": 1}, tmp_path)
    with pytest.raises(ModelError, match="micro_batch: None -> 2"):
        training.check_resume(profiles.get_profile("smoke", micro_batch=2), {"x": 1}, tmp_path)
    with pytest.raises(ModelError, match="mixed_precision: False -> True"):
        training.check_resume(profiles.get_profile("smoke", mixed_precision=True), {"x": 1},
                              tmp_path)


# --------------------------------------------------------------------------- resume
@pytest.mark.parametrize("what, change, message", [
    ("seed", dict(seed=7), "seed: 42 -> 7"),
    ("profile", dict(profile="cpu"), "profile: 'smoke' -> 'cpu'"),
    ("data", dict(fingerprint={"stage1_train": "other"}), "data: "),
])
def test_resuming_with_another_seed_profile_or_data_is_refused(tmp_path, what, change,
                                                              message):
    started = profiles.get_profile("smoke")
    runs.update_run_json(tmp_path, profile=started, seed=42, data="/data",
                         data_fingerprint={"stage1_train": "abc"})
    before = (tmp_path / "run.json").read_bytes()
    prof = profiles.get_profile(change.get("profile", "smoke"), seed=change.get("seed", 42))
    with pytest.raises(ModelError) as err:
        training.check_resume(prof, change.get("fingerprint", {"stage1_train": "abc"}),
                              tmp_path)
    assert message in str(err.value) and str(tmp_path / "checkpoint.npz") in str(err.value)
    assert "train into a new folder" in str(err.value)
    assert (tmp_path / "run.json").read_bytes() == before
    training.check_resume(started, {"stage1_train": "abc"}, tmp_path)  # the same: resumes


def test_a_checkpoint_without_a_training_record_is_not_resumed(tmp_path):
    prof = profiles.get_profile("smoke")
    with pytest.raises(ModelError, match="cannot be checked"):
        training.check_resume(prof, {"x": 1}, tmp_path)  # no run.json at all
    runs.update_record(tmp_path / "run.json", seed=42)  # e.g. written by something else
    with pytest.raises(ModelError, match="does not record the profile"):
        training.check_resume(prof, {"x": 1}, tmp_path)


def test_a_training_that_does_not_resume_starts_a_new_record(tmp_path):
    runs.update_run_json(tmp_path, profile={"name": "cpu"}, completed=True, best_epoch=9)
    for name in ("model.npz", "checkpoint.npz", "history.csv", "history.md", "train.log"):
        (tmp_path / name).write_bytes(b"an earlier training")
    assert sorted(training.start_afresh(tmp_path)) == ["checkpoint.npz", "history.csv",
                                                       "history.md", "model.npz"]
    assert (tmp_path / "train.log").exists()  # the log goes on
    info = runs.update_run_json(tmp_path, fresh=True, profile={"name": "smoke"})
    assert "completed" not in info and "best_epoch" not in info
    assert runs.read_json(tmp_path / "run.json") == info


@pytest.mark.heavy
@pytest.mark.slow
def test_training_from_scratch_over_an_old_run_keeps_nothing_of_it(tmp_path, smoke_run,
                                                                   smoke_data, smoke_profile):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    runs.update_run_json(run, stale="from the earlier training")
    training.train(smoke_profile, run, root=smoke_data, progress=False, stop_after_epoch=1)
    info = runs.read_json(run / "run.json")
    assert "stale" not in info and info.get("completed") is False
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [1]
    config = model.read_config(run / "model.npz")
    assert config["train_splits"] == ["stage1_train"] and config["profile"] == "smoke"
    with np.load(run / "checkpoint.npz") as z:
        assert int(z["epoch"]) == 1


# --------------------------------------------------------------------------- accumulation
def _tiny(optimizer: str):
    import tensorflow as tf
    tf.keras.utils.set_random_seed(3)
    net = tf.keras.Sequential([
        tf.keras.layers.Input((8, 8, 3)),
        tf.keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        tf.keras.layers.Conv2D(1, 1, activation="sigmoid")])
    opt = (tf.keras.optimizers.SGD(learning_rate=0.5) if optimizer == "sgd"
           else tf.keras.optimizers.Adam(learning_rate=0.05))
    net.compile(optimizer=opt, loss="mse", metrics=[model.network.mask_iou, model.network.mask_f1])
    return net


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("micro", [2, 3])
def test_accumulated_micro_batches_update_the_weights_as_the_whole_batch_does(optimizer, micro):
    rng = np.random.default_rng(0)
    x = rng.random((4, 8, 8, 3)).astype(np.float32)
    y = (rng.random((4, 8, 8, 1)) > 0.5).astype(np.float32)
    whole, parts = _tiny(optimizer), _tiny(optimizer)
    parts.set_weights(whole.get_weights())
    start = [w.copy() for w in whole.get_weights()]
    step = training.AccumulatingStep(parts, micro)  # 2 + 2, or 3 + 1 images
    for _ in range(3):
        ref = whole.train_on_batch(x, y, return_dict=True)
        got = step(x, y)
        assert set(got) == {"loss", "iou", "f1"}
        for key in got:  # the logs of the whole batch
            assert got[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-6)
    for a, b, s in zip(whole.get_weights(), parts.get_weights(), start):
        assert not np.allclose(a, s)  # the weights did move
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    # the sums are emptied after each step
    assert all(not np.any(t.numpy()) for t in step.sums)


def test_mixed_precision_is_used_only_with_a_gpu():
    class NoGPU:
        class config:
            @staticmethod
            def list_physical_devices(kind):
                return []

    class OneGPU(NoGPU):
        class config:
            @staticmethod
            def list_physical_devices(kind):
                return ["GPU:0"] if kind == "GPU" else []

    paper = profiles.get_profile("paper")
    assert training.use_mixed_precision(paper, NoGPU) is False
    assert training.use_mixed_precision(paper, OneGPU) is True
    assert training.use_mixed_precision(profiles.get_profile("cpu"), OneGPU) is False


@pytest.mark.heavy
@pytest.mark.slow
def test_a_mixed_precision_model_trains_checkpoints_and_saves_a_plain_model(tmp_path):
    """Forced on the CPU here (slow there, so training never chooses it without a GPU)."""
    prof = profiles.get_profile("smoke", input_size=32, batch_size=4, micro_batch=2,
                                mixed_precision=True)
    net = training.build_training_model(prof, mixed=True)
    assert type(net.optimizer).__name__.startswith("LossScaleOptimizer")
    assert net.output.dtype == "float32"
    import tensorflow as tf
    assert tf.keras.mixed_precision.global_policy().name == "float32"  # restored
    rng = np.random.default_rng(2)
    x = rng.random((4, 64, 64, 3)).astype(np.float32)
    y = (rng.random((4, 64, 64, 2)) > 0.5).astype(np.float32)
    step = training.AccumulatingStep(net, 2)
    assert np.isfinite(step(x, y)["loss"])
    training.save_checkpoint(net, tmp_path / "checkpoint.npz", 1, 0.5)
    again = training.build_training_model(prof, mixed=True)
    assert training.load_checkpoint(again, tmp_path / "checkpoint.npz") == (1, 0.5)
    assert all(np.array_equal(a, b) for a, b in zip(net.get_weights(), again.get_weights()))
    model.save_model(net, tmp_path / "model.npz", prof)
    plain = model.NucleusModel.load(tmp_path / "model.npz", engine="tensorflow").keras
    # (a float32 model, same weights)
    p_mixed = net(x[:1], training=False).numpy()
    p_plain = plain(x[:1], training=False).numpy()
    assert np.abs(p_mixed - p_plain).max() < 0.05


# --------------------------------------------------------------------------- cadence + Drive
@pytest.fixture
def spies(monkeypatch):
    """Record the epochs of the full checkpoints and the files each sync copied."""
    seen = {"checkpoints": [], "syncs": []}
    save, sync = training.save_checkpoint, mirror.sync_run

    def save_spy(net, path, epoch, best):
        seen["checkpoints"].append(epoch)
        return save(net, path, epoch, best)

    def sync_spy(local, drive, names=None):
        copied = sync(local, drive, names)
        seen["syncs"].append(copied)
        return copied

    monkeypatch.setattr(training.loop, "save_checkpoint", save_spy)
    monkeypatch.setattr(mirror, "sync_run", sync_spy)
    return seen


@pytest.mark.heavy
@pytest.mark.slow
def test_micro_batches_checkpoint_every_n_epochs_copy_to_drive_and_resume_from_it(
        tmp_path, smoke_data, smoke_profile, spies, monkeypatch, capsys):
    prof = profiles.get_profile(smoke_profile, epochs=3, checkpoint_every=2, micro_batch=1)
    local, drive = tmp_path / "content" / "run", tmp_path / "drive" / "run"
    # session 1: dropped after epoch 1 (a checkpoint is written when the run stops)
    training.train(prof, local, root=smoke_data, progress=False, stop_after_epoch=1,
                   sync_to=drive)
    assert spies["checkpoints"] == [1]
    assert spies["syncs"] == [list(mirror.TRAINING_FILES)]
    assert sorted(p.name for p in drive.iterdir()) == sorted(mirror.TRAINING_FILES)
    assert runs.read_json(local / "run.json")["accumulation_steps"] == 2
    out = capsys.readouterr().out  # stdout is not a terminal here: one line per epoch
    assert "epoch 1/3" in out and "2 micro-batch(es) of 1" in out

    # session 2: a new runtime, its disk empty; the variable the runner sets names Drive
    shutil.rmtree(local.parent)
    restored = mirror.restore_run(drive, local)
    assert sorted(restored) == sorted(mirror.TRAINING_FILES)
    monkeypatch.setenv(mirror.SYNC_ENV, str(drive))
    hist = training.train(prof, local, root=smoke_data, resume=True, progress=False)
    assert "resumed from epoch 1" in (local / "train.log").read_text()
    assert hist["epoch"].tolist() == [1, 2, 3]
    assert spies["checkpoints"] == [1, 2, 3]  # every 2 epochs, and the last one
    assert len(spies["syncs"]) == 3 and "checkpoint.npz" in spies["syncs"][-1]
    with np.load(drive / "checkpoint.npz") as z:
        assert int(z["epoch"]) == 3
    assert pd.read_csv(drive / "history.csv")["epoch"].tolist() == [1, 2, 3]
    assert model.read_model_file(drive / "model.npz")[0]["backbone"] == prof["backbone"]
    assert not [p for p in drive.rglob("*") if ".tmp" in p.name]
    out = capsys.readouterr().out
    assert "epoch 3/3" in out and "copied" in out


@pytest.mark.slow
def test_the_smoke_run_trained_as_before(smoke_run):
    """The shared smoke run (no micro_batch) used train_on_batch, in float32, and wrote a full
    checkpoint after each epoch."""
    info = runs.read_json(smoke_run / "run.json")
    assert info["accumulation_steps"] == 1 and info["mixed_precision_used"] is False
    with np.load(smoke_run / "checkpoint.npz") as z:
        assert int(z["epoch"]) == info["epochs"]


def test_a_full_checkpoint_every_n_epochs_after_the_last_and_when_stopped():
    def due(every, epochs, stop=None):
        out = []
        for e in range(1, epochs + 1):
            stopping = stop is not None and e >= stop and e < epochs
            if training.checkpoint_due(e, epochs, every, stopping):
                out.append(e)
            if stopping:
                break
        return out
    assert due(1, 4) == due(None, 4) == [1, 2, 3, 4]  # cpu and smoke: as before
    assert due(20, 100) == [20, 40, 60, 80, 100]  # paper: 5 copies of 0.8 GB on Drive
    assert due(20, 50) == [20, 40, 50]
    assert due(20, 50, stop=7) == [7]


def test_the_train_command_of_a_run_gives_the_options_that_made_its_profile():
    cpu = profiles.get_profile("cpu")
    assert profiles.train_command(cpu, "runs/cpu") == "nucseg train --profile cpu --out runs/cpu"
    tried = profiles.get_profile("cpu", epochs=18, learning_rate=5e-4,
                                 augmentation={"stain": 0.3})
    assert profiles.train_command(tried, "runs/x") == (
        "nucseg train --profile cpu --out runs/x --epochs 18 --learning-rate 0.0005 "
        "--stain 0.3")
    # what no option sets is named; so is a profile that is not one of ours
    other = profiles.get_profile("cpu", loss="jaccard", encoder_weights=None,
                                 augmentation={"zoom": 0.1})
    assert profiles.train_command(other, "r") == (
        "nucseg train --profile cpu --out r (with the profile's loss, augmentation.zoom of "
        "its time)")
    assert "see its run.json" in profiles.train_command({"epochs": 1}, "r")
    # the options are the command line's
    from nucseg_utils import cli
    args = cli.build_parser().parse_args(["train", "--epochs", "18", "--learning-rate",
                                          "0.0005", "--stain", "0.3"])
    assert (args.epochs, args.learning_rate, args.stain) == (18, 5e-4, 0.3)
    # a list option goes back and forth as the command line writes it
    dist = profiles.get_profile("cpu", targets=["mask", "touching", "distance"])
    command = profiles.train_command(dist, "r")
    assert command == "nucseg train --profile cpu --out r --targets mask,touching,distance"
    args = cli.build_parser().parse_args(command.split()[1:])
    assert args.targets == ["mask", "touching", "distance"]
    wider = profiles.get_profile("cpu", backbone="resnet34",
                                 decoder_filters=[128, 64, 32, 16, 16])
    command = profiles.train_command(wider, "r")
    assert command == ("nucseg train --profile cpu --out r --backbone resnet34 "
                       "--decoder-filters 128,64,32,16,16")
    args = cli.build_parser().parse_args(command.split()[1:])
    assert (args.backbone, args.decoder_filters) == ("resnet34", [128, 64, 32, 16, 16])
    # a run recorded before the key existed had segmentation_models' decoder: it is said
    old = {k: v for k, v in profiles.get_profile("cpu").items() if k != "decoder_filters"}
    assert profiles.train_command(old, "r") == (
        "nucseg train --profile cpu --out r --decoder-filters 256,128,64,32,16")


@pytest.mark.parametrize("text", ["64,32,16,16", "64,32,16,16,0", "a,b,c,d,e", ""])
def test_decoder_filters_are_five_positive_counts(text):
    with pytest.raises(ValueError, match="five positive whole numbers"):
        profiles.filter_list(text)


@pytest.mark.parametrize("overrides, message", [
    ({"normalization": "zscore"}, "unknown normalization 'zscore'"),
    ({"normalization": "haematoxylin", "augmentation": {"stain": 0.3}}, "stain augmentation"),
    ({"targets": ["mask", "distance"]}, "one of mask, mask,touching"),
    ({"targets": ["mask"]}, "'touching' post-processing needs 2 outputs; targets mask give 1")])
def test_settings_that_cannot_train_are_refused_before_the_run_folder_is_touched(
        tmp_path, overrides, message):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.npz").write_bytes(b"an earlier training's model")
    prof = profiles.get_profile("smoke", **overrides)
    with pytest.raises(profiles.SettingsError, match=message):
        training.train(prof, run, root=tmp_path / "no-data")
    assert [p.name for p in run.iterdir()] == ["model.npz"]


@pytest.mark.parametrize("text", ["touching", "mask,distance", "mask,touching,edges", ""])
def test_targets_the_post_processing_cannot_read_are_refused(text):
    with pytest.raises(ValueError, match="one of mask, mask,touching"):
        profiles.target_list(text)


# --------------------------------------------------------------------------- labels and split
@pytest.fixture
def fixed_data(tmp_path, smoke_data):
    """A copy of the synthetic set with a ``stage1_train_fixed/`` beside it: one image removed
    (one of the random validation images) and one image with a mask less. Returns (root,
    removed id, changed id)."""
    root = tmp_path / "syn"
    shutil.copytree(smoke_data, root)
    ids = sorted(p.name for p in (root / "stage1_train").iterdir() if p.is_dir())
    _, val = training.split_ids(ids, profiles.get_profile("smoke")["val_fraction"], 42)
    removed, changed = val[0], [i for i in ids if i not in val][0]
    fixed = root / "stage1_train_fixed"
    shutil.copytree(root / "stage1_train", fixed)
    shutil.rmtree(fixed / removed)
    sorted((fixed / changed / "masks").iterdir())[0].unlink()
    return root, removed, changed


def subsets(profile, root):
    table, samples = training.load_training_data(profile, root, progress=False)
    return table.set_index("id")["subset"], table, {s.id: s for s in samples}


@pytest.mark.parametrize("split_by", ["random", "type"])
def test_fixed_labels_are_read_and_hold_out_the_original_images_less_the_removed(
        fixed_data, monkeypatch, split_by):
    root, removed, changed = fixed_data
    original, table, samples = subsets(profiles.get_profile("smoke", split_by=split_by), root)
    fixed_prof = profiles.get_profile("smoke", train_labels="fixed", split_by=split_by)
    # the removed image, known as removed (as the six of the real set are), still takes part
    # in the draw: the same validation images, less the removed one
    monkeypatch.setitem(data.FIXED_REMOVED, "stage1_train", (removed,))
    monkeypatch.setitem(image_types.FIXED_REMOVED_TYPES, removed,
                        table.set_index("id").loc[removed, "type"])
    fixed, fixed_table, fixed_samples = subsets(fixed_prof, root)
    assert removed not in fixed.index and set(fixed.index) == set(original.index) - {removed}
    assert fixed.equals(original.drop(removed))
    assert (fixed_table["type"] == table.set_index("id").loc[fixed_table["id"], "type"]
            .to_numpy()).all()
    # the changed image's labels come from the fixed masks, the others are the original ones
    assert fixed_samples[changed].labels.max() == samples[changed].labels.max() - 1
    other = [i for i in fixed.index if i != changed][0]
    assert objects(fixed_samples[other].labels) == objects(samples[other].labels)


def objects(labels) -> set[frozenset]:
    """The objects of a label image as pixel sets (the CSV and the masks number them
    differently)."""
    flat = np.asarray(labels).ravel()
    return {frozenset(np.flatnonzero(flat == v).tolist()) for v in np.unique(flat[flat > 0])}


def test_a_split_by_type_is_recorded_per_image(smoke_data):
    base, table, _ = subsets(profiles.get_profile("smoke"), smoke_data)
    by_type, typed, _ = subsets(profiles.get_profile("smoke", split_by="type"), smoke_data)
    assert {"modality", "type"} <= set(table.columns)
    assert typed["type"].tolist() == table["type"].tolist()  # the split does not set the type
    assert not by_type.equals(base)
    # every type of two images or more has validation images
    counts = typed.groupby("type")["subset"].apply(lambda s: (s == "val").sum())
    sizes = typed["type"].value_counts()
    assert all(counts[t] >= 1 for t in sizes.index if sizes[t] >= 2)


@pytest.mark.heavy
def test_the_removed_images_of_the_real_fixed_labels_take_part_in_the_draw(real_data):
    from nucseg_utils import data
    try:
        fixed = data.open_split("stage1_train", real_data, labels="fixed")
    except data.DataError:
        pytest.skip("stage1_train_fixed.zip not found")
    original = data.open_split("stage1_train", real_data)
    removed = training.loop._removed_ids("stage1_train", real_data, fixed.ids)
    assert sorted(removed) == sorted(data.FIXED_REMOVED["stage1_train"])
    pool = fixed.ids + removed
    assert sorted(pool) == original.ids
    _, val = training.split_ids(pool, 0.1, 42)
    _, val_original = training.split_ids(original.ids, 0.1, 42)
    assert val == val_original  # the same draw; the removed are dropped from it afterwards


def test_labels_and_split_are_train_options_recorded_with_old_runs_neutral(tmp_path):
    from nucseg_utils import cli
    cpu = profiles.get_profile("cpu")
    assert (cpu["train_labels"], cpu["split_by"]) == ("original", "random")
    assert profiles.ADDED_KEYS["train_labels"] == "original"
    assert profiles.ADDED_KEYS["split_by"] == "random"
    tried = profiles.get_profile("cpu", train_labels="fixed", split_by="type")
    command = profiles.train_command(tried, "r")
    assert command == "nucseg train --profile cpu --out r --train-labels fixed --split-by type"
    args = cli.build_parser().parse_args(command.split()[1:])
    assert (args.train_labels, args.split_by) == ("fixed", "type")
    with pytest.raises(ValueError, match="train-labels 'clean': one of original, fixed"):
        profiles.TRAIN_OPTIONS["train_labels"]("clean")
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "--split-by", "modality"])
    rows = profiles.describe(tried).set_index("parameter")["value"]
    assert rows["stage1_train labels"].startswith("fixed")
    assert rows["validation images drawn"].startswith("stratified by image type")
    # a run recorded before the keys trained on the original labels, split at random
    old = {k: v for k, v in cpu.items() if k not in ("train_labels", "split_by")}
    assert profiles.train_command(old, "r") == "nucseg train --profile cpu --out r"
    runs.update_run_json(tmp_path, profile=old, data_fingerprint={"x": 1})
    training.check_resume(cpu, {"x": 1}, tmp_path)  # no error
    with pytest.raises(ModelError, match="train_labels: 'original' -> 'fixed'"):
        training.check_resume(profiles.get_profile("cpu", train_labels="fixed"), {"x": 1},
                              tmp_path)
    with pytest.raises(ModelError, match="split_by: 'random' -> 'type'"):
        training.check_resume(profiles.get_profile("cpu", split_by="type"), {"x": 1}, tmp_path)


@pytest.mark.parametrize("overrides, message", [
    ({"train_labels": "clean"}, "unknown train_labels"),
    ({"split_by": "modality"}, "unknown split_by")])
def test_unknown_labels_or_split_are_refused_before_the_run_folder_is_touched(
        tmp_path, overrides, message):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(profiles.SettingsError, match=message):
        training.train(profiles.get_profile("smoke", **overrides), run, root=tmp_path / "none")
    assert list(run.iterdir()) == []


def test_a_missing_fixed_zip_is_named_when_training_asks_for_it(tmp_path, smoke_data):
    from nucseg_utils.data import DataError
    with pytest.raises(DataError, match="stage1_train_fixed.zip: no such file"):
        training.train(profiles.get_profile("smoke", train_labels="fixed"), tmp_path / "run",
                       root=smoke_data, progress=False)


@pytest.mark.heavy
@pytest.mark.slow
def test_a_training_on_fixed_labels_split_by_type_records_both_and_is_scored_on_them(
        tmp_path, fixed_data):
    from nucseg_utils.evaluation import calibration, protocol
    from nucseg_utils.model import NucleusModel
    root, removed, changed = fixed_data
    prof = profiles.get_profile("smoke", train_labels="fixed", split_by="type",
                                epochs=1, steps_per_epoch=1, batch_size=2)
    run = tmp_path / "run"
    training.train(prof, run, root=root, progress=False)
    info = runs.read_json(run / "run.json")
    assert (info["profile"]["train_labels"], info["profile"]["split_by"]) == ("fixed", "type")
    assert protocol.run_labels(run) == "fixed"
    table = pd.read_csv(run / "split.csv", dtype={"id": str})
    assert removed not in set(table["id"]) and "type" in table
    val = table[table["subset"] == "val"]
    assert info["n_val_by_type"] == {t: int((val["type"] == t).sum())
                                     for t in info["n_val_by_type"]}
    assert sum(info["n_val_by_type"].values()) == info["n_val"] == len(val)
    # the data fingerprint is the fixed labels': another labelling is other data
    fixed_fp = runs.file_fingerprint(root / "stage1_train_fixed")
    assert info["data_fingerprint"] == {"stage1_train": fixed_fp}
    # the model has seen the stage1_train images, whatever their labels
    assert protocol.training_splits(run / "model.npz") == ["stage1_train"]
    with pytest.raises(protocol.ProtocolError):
        protocol.check_untouched("stage1_train", ["stage1_train_fixed"])
    # calibration scores the validation images against the run's labels, or those asked for
    model = NucleusModel.load(run / "model.npz")
    for labels, variant in ((None, "fixed"), ("fixed", "fixed"), ("original", "original")):
        [(source, probs)] = calibration.predict_validation(model, run, root, tta=False,
                                                           progress=False, labels=labels)
        assert source.labels_variant == variant and sorted(probs) == sorted(val["id"])
    # an image the fixed labels left out is not scored against them
    rows = pd.concat([table, pd.DataFrame([{"id": removed, "split": "stage1_train",
                                            "subset": "val"}])])
    runs.write_table(rows, run / "split.csv")
    [(source, probs)] = calibration.predict_validation(model, run, root, tta=False,
                                                       progress=False, labels="fixed")
    assert removed not in probs
    [(source, probs)] = calibration.predict_validation(model, run, root, tta=False,
                                                       progress=False, labels="original")
    assert removed in probs


def test_balance_by_type_draws_every_image_type_equally_often(smoke_data, tmp_path):
    from nucseg_utils.core import runs

    def shares(name, **overrides):
        layout = runs.RunLayout(tmp_path / name)
        recipe = profiles.RECIPES["smoke"].replace(**overrides)
        sampler = training.loop._training_data(recipe, layout, smoke_data, False)[0]
        table = pd.read_csv(layout.split)
        train = table[table["subset"] == "train"].assign(p=sampler.p)
        return train, train.groupby("type")["p"].sum()
    train, by_type = shares("type", balance_by="type", balance_modalities=1.0)
    assert len(by_type) >= 2 and train["type"].value_counts().nunique() > 1  # unequal groups
    assert np.allclose(by_type, 1 / len(by_type))
    # by modality (the default), the types of one modality share its weight by their sizes
    _, by_modality = shares("modality", balance_modalities=1.0)
    assert not np.allclose(by_modality, 1 / len(by_modality))
    assert profiles.train_command(profiles.get_profile("cpu", balance_by="type",
                                                       balance_modalities=1.0), "r") == \
        "nucseg train --profile cpu --out r --balance-by type --balance-modalities 1"
    with pytest.raises(profiles.SettingsError, match="unknown balance_by 'colour'"):
        training.train(profiles.get_profile("smoke", balance_by="colour"), tmp_path / "bad",
                       smoke_data, progress=False)
