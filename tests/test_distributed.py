"""Many images on Dask: a local cluster of worker processes writes the same files, byte for
byte, as the serial predict; an interrupted run resumes; one image's error stops no other."""
import filecmp
import shutil

import imageio.v3 as iio
import numpy as np
import pytest

from nucseg_utils import predict
from nucseg_utils.model import NucleusModel
from nucseg_utils.predict import distributed

pytestmark = [pytest.mark.slow, pytest.mark.heavy]  # Dask clusters: processes of their own


@pytest.fixture(scope="module")
def images(smoke_data, tmp_path_factory):
    """A folder of 8 images (the synthetic test images and their mirror images) and one PNG
    whose header reads but whose pixels are cut off."""
    folder = tmp_path_factory.mktemp("dist_images")
    for i, f in enumerate(sorted((smoke_data / "stage1_test").glob("*/images/*.png"))):
        img = iio.imread(f)
        iio.imwrite(folder / f"img{i}.png", img)
        iio.imwrite(folder / f"img{i}_mirror.png", np.ascontiguousarray(img[:, ::-1]))
    whole = (folder / "img0.png").read_bytes()
    (folder / "broken.png").write_bytes(whole[: len(whole) // 2])
    return folder


@pytest.fixture(scope="module")
def model(smoke_run):
    return NucleusModel.load(smoke_run / "model.npz")


OPTIONS = predict.PredictOptions(tta=False)


@pytest.fixture(scope="module")
def serial(model, images, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "out"
    res = predict.predict_folder(model, distributed.open_sources(images), out, OPTIONS,
                                 progress=False, log=lambda m: None)
    assert len(res.done) == 8 and list(res.failed) == ["broken"]
    return out


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as c:
        yield c


def same_files(a, b):
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return [str(f) for f in files if not filecmp.cmp(a / f, b / f, shallow=False)]


def test_nothing_starts_a_cluster_unless_asked(model, images, tmp_path):
    with pytest.raises(ValueError, match="workers=N"):
        distributed.predict_distributed(model, images, tmp_path / "out", OPTIONS)
    with pytest.raises(ValueError, match="workers=N"):
        with distributed.cluster_client():
            pass


def test_workers_n_starts_a_local_cluster_of_n_processes_for_the_run():
    import os
    with distributed.cluster_client(workers=2) as client:
        pids = client.run(os.getpid)
        assert len(pids) == 2 and os.getpid() not in pids.values()
        assert set(client.nthreads().values()) == {1}
        cluster = client.cluster
    assert cluster.status.name == "closed"


def test_two_worker_processes_write_what_the_serial_run_writes(model, images, serial, cluster,
                                                               tmp_path):
    messages = []
    res = distributed.predict_distributed(model, images, tmp_path / "out", OPTIONS,
                                          scheduler=cluster.scheduler_address, progress=False,
                                          log=messages.append)
    assert len(res.done) == 8 and res.skipped == []
    assert list(res.failed) == ["broken"]
    assert any("broken.png" in m for m in messages)  # reported with its name
    assert same_files(serial, tmp_path / "out") == []
    assert (tmp_path / "out" / "submission.csv").read_bytes() == \
        (serial / "submission.csv").read_bytes()


def test_an_interrupted_run_resumes_on_a_running_cluster(model, images, serial, cluster,
                                                         tmp_path, monkeypatch):
    out = tmp_path / "out"

    class StopsAfterThree:  # Ctrl-C once three images are finished
        def __init__(self, **kwargs):
            self.n = 0

        def update(self, n=1):
            self.n += n
            if self.n == 3:
                raise KeyboardInterrupt

        def close(self):
            pass
    monkeypatch.setattr(distributed, "progress_bar", StopsAfterThree)
    with pytest.raises(KeyboardInterrupt):
        distributed.predict_distributed(model, images, out, OPTIONS,
                                        scheduler=cluster.scheduler_address, progress=False,
                                        log=lambda m: None)
    first = sorted(p.stem for p in (out / "done").glob("*.json"))
    assert 2 <= len(first) < 8 and not (out / "summary.csv").exists()
    monkeypatch.undo()
    res = distributed.predict_distributed(model, images, out, OPTIONS,
                                          scheduler=cluster.scheduler_address, progress=False,
                                          log=lambda m: None)
    assert set(first) <= set(res.skipped) and len(res.done) + len(res.skipped) == 8
    assert same_files(serial, out) == []
    # each worker process loaded the model once, for both runs
    from distributed import Client
    with Client(cluster.scheduler_address) as client:
        loads = client.run(lambda: len(__import__("nucseg_utils.predict.distributed")
                                       .predict.distributed._MODELS))
    assert set(loads.values()) <= {0, 1} and sum(loads.values()) >= 1


def test_a_list_of_files_is_a_source(images, tmp_path):
    files = [images / "img1.png", images / "img0_mirror.png"]
    source = distributed.open_sources(files)
    assert source.ids == ["img0_mirror", "img1"]
    shutil.copy(images / "img1.png", tmp_path / "img1.png")
    with pytest.raises(Exception, match="same name"):
        distributed.open_sources(files + [tmp_path / "img1.png"])


def test_tiled_images_on_the_cluster_are_the_serial_tiled_ones(model, images, cluster,
                                                                tmp_path):
    opts = predict.PredictOptions(tta=False, tile=64, formats=("labels-png", "measurements",
                                                               "rois"))
    source = distributed.open_sources(images)
    ids = ["img0", "img1_mirror", "img2"]
    serial = predict.predict_folder(model, source, tmp_path / "serial", opts, ids=ids,
                                    progress=False, log=lambda m: None)
    res = distributed.predict_distributed(model, images, tmp_path / "dist", opts, ids=ids,
                                          scheduler=cluster.scheduler_address,
                                          progress=False, log=lambda m: None)
    assert serial.done == res.done == ids
    assert (tmp_path / "dist" / "rois" / "img0.zip").is_file()  # tiled: the same files
    assert not (tmp_path / "dist" / "labels" / "img0.ome.zarr").exists()  # none not asked
    assert same_files(tmp_path / "serial", tmp_path / "dist") == []


def test_the_command_line_predicts_files_on_a_cluster_tile_by_tile(smoke_run, images, cluster,
                                                                     tmp_path, capsys):
    from nucseg_utils import cli
    out = tmp_path / "out"
    code = cli.main(["predict", "--model", str(smoke_run / "model.npz"), "--images",
                     str(images / "img0.png"), str(images / "img1.png"), "--out", str(out),
                     "--no-tta", "--tile", "64", "--scheduler", cluster.scheduler_address,
                     "--quiet"])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    assert "2 image(s)" in stdout and "overlays/" in stdout and "submission.csv" not in stdout
    for sid in ("img0", "img1"):  # tiled images get the files of untiled ones, but a PNG
        assert (out / "labels" / f"{sid}.tif").is_file() and (out / "rois" / f"{sid}.zip").is_file()
        assert not (out / "labels" / f"{sid}.png").exists()


def test_one_big_image_is_split_across_the_workers_by_tiles(model, images, cluster, tmp_path):
    from distributed import Client, get_task_stream

    from nucseg_utils import big
    image = iio.imread(images / "img0.png")
    kwargs = dict(tile=64, tta=False, progress=False, log=lambda m: None)
    serial = big.predict_big(model, image, tmp_path / "serial", sid="img0", **kwargs)
    with Client(cluster) as client, get_task_stream(client) as stream:
        res = distributed.predict_big_distributed(
            model, image, tmp_path / "dist", sid="img0",
            scheduler=cluster.scheduler_address, **kwargs)
    tiles = [t for t in stream.data if "-tile-" in str(t["key"])]
    assert len(serial.plan.tiles()) == len({str(t["key"]) for t in tiles}) >= 4
    assert len({t["worker"] for t in tiles}) == 2  # both workers segmented tiles
    assert res.summary == serial.summary
    assert same_files(tmp_path / "serial", tmp_path / "dist") == []
