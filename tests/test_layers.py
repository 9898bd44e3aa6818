"""The package's layers, as import contracts (pyproject.toml, ``[tool.importlinter]``) checked
by import-linter: each layer imports only the layers below it, the library never imports the
report, the notebooks' machinery or the Colab tooling, and no two siblings import each other."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    """The package and its contracts copied to a folder of their own, to break on purpose."""
    root = tmp_path_factory.mktemp("layers")
    shutil.copytree(REPO / "nucseg_utils", root / "nucseg_utils",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_package_keeps_its_layer_contracts():
    done = lint(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize("module, line, broken", [
    # the library reaching up into the report's machinery
    ("data/rle.py", "from nucseg_utils.report import figures", "layers"),
    # a lower layer importing a higher one of the library
    ("postprocessing/methods.py", "from nucseg_utils.model import engines", "layers"),
    # two modules of one package importing each other
    ("evaluation/metrics.py", "from nucseg_utils.evaluation import calibration", "no cycles"),
])
def test_an_import_against_the_layers_breaks_a_contract(copy, module, line, broken):
    path = copy / "nucseg_utils" / module
    text = path.read_text()
    try:
        path.write_text(text + f"\n{line}  # noqa\n")
        done = lint(copy)
    finally:
        path.write_text(text)
    assert done.returncode == 1, done.stdout
    assert f"{broken}" in done.stdout and "BROKEN" in done.stdout
