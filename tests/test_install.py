"""An installed nucseg, not a clone: the wheel built from this checkout carries the committed
models as package data, so that `pip install` and then `nucseg predict` works offline, from
any folder (nucseg_utils.model.committed_model)."""
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


# a wheel built by pip and installed into a fresh environment: `make check`, not `make test`
pytestmark = pytest.mark.heavy


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
                    str(REPO)], check=True, capture_output=True, text=True)
    return next(out.glob("nucseg-*.whl"))


def test_the_wheel_carries_the_committed_models(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("cpu", "release"):
        assert f"nucseg_utils/models/{name}/model.npz" in names
        info = zipfile.ZipFile(wheel).getinfo(f"nucseg_utils/models/{name}/model.npz")
        assert info.file_size == (REPO / "models" / name / "model.npz").stat().st_size
    assert not any(n.startswith(("tests/", "notebooks/", "benchmarks/")) for n in names)


@pytest.mark.slow
def test_an_installed_wheel_predicts_from_outside_the_clone(wheel, tmp_path):
    """A fresh virtual environment with only the wheel installed (its dependencies are taken
    from this environment through a .pth file, nucseg itself is not), run from a folder that
    is not the clone: `python -m nucseg_utils predict` on two images, with its default model."""
    from nucseg_utils.data import synthetic
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; "
                           "print(sysconfig.get_paths()['purelib'])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site,
                    str(wheel)], check=True, capture_output=True)
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    images = tmp_path / "images"
    images.mkdir()
    for k in range(2):
        image, _ = synthetic.make_image(np.random.default_rng(k), (96, 128))
        iio.imwrite(images / f"field{k}.png", image)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = subprocess.run([str(python), "-c", "import nucseg_utils.model as m; "
                            "print(m.DEFAULT_MODEL)"], cwd=outside, check=True,
                           capture_output=True, text=True).stdout.strip()
    assert where.startswith(site) and where.endswith("models/release/model.npz")
    done = subprocess.run([str(python), "-m", "nucseg_utils", "predict", "--images",
                           str(images), "--out", str(tmp_path / "out"), "--quiet"],
                          cwd=outside, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    summary = (tmp_path / "out" / "summary.csv").read_text().splitlines()
    assert len(summary) == 3 and all("field" in row for row in summary[1:])
    assert sorted(p.name for p in (tmp_path / "out" / "labels").glob("*.png")) == \
        ["field0.png", "field1.png"]
