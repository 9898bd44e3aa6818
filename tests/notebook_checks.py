"""What the tests check of an executed notebook, shared by the two files that read the
session's two executions (test_notebooks.py: the report's chain; test_notebooks_alone.py:
notebooks 5 and 6 opened alone)."""
from __future__ import annotations

import re
from pathlib import Path

import jupytext
import nbformat

from conftest import NOTEBOOKS_ALONE, NotebookRuns
from nucseg_utils import report
from nucseg_utils.report import figures

REPO = Path(__file__).resolve().parent.parent

VOLATILE_CELL_KEYS = {"execution", "papermill", "collapsed", "scrolled", "ExecuteTime"}
ALLOWED_MIME = {"image/png", "text/html", "text/markdown", "text/plain"}


def check_committed_outputs(nb):
    """The rules a committed notebook's outputs follow (see report.clean_executed)."""
    assert not set(nb.metadata) & {"papermill", "language_info", "widgets"}, sorted(nb.metadata)
    code = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in code)
    counts = [c.execution_count for c in code if c.execution_count is not None]
    assert counts == list(range(1, len(counts) + 1))
    for c in nb.cells:
        assert not (set(c.metadata) & VOLATILE_CELL_KEYS), (c.get("id"), sorted(c.metadata))
        for o in c.get("outputs", []):
            assert o.output_type in ("stream", "execute_result", "display_data"), o.output_type
            if o.output_type == "stream":
                assert o.name == "stdout" and "\r" not in o.text
            else:
                assert set(o.data) <= ALLOWED_MIME and not o.get("metadata")
            text = str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
            assert str(REPO) not in text, "absolute path in a committed output"


def written_by(names) -> set[str]:
    """The report's files the notebooks ``names`` write, read from their sources
    (``ctx.figure("key")``, ``ctx.table("key")``: a table as .csv and .md)."""
    out = set()
    for name in names:
        source = (REPO / "notebooks" / name).with_suffix(".py").read_text()
        for kind, key in re.findall(r"ctx\.(figure|table)\(\"(\w+)\"", source):
            if kind == "figure":
                out.add(figures.NAMES[key])
            else:
                out |= {figures.TABLES[key], figures.TABLES[key].replace(".csv", ".md")}
    return out


def runs_to_its_end_and_shows_a_figure(runs: NotebookRuns, name: str):
    """What nbval checked: the notebook executes start to finish in a kernel (here the one
    execution of the session), and it shows its figures."""
    assert runs.code[name] == 0, f"{name}: see {runs.executed(name)}"
    nb = nbformat.read(runs.executed(name), as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    assert any(o.output_type in ("execute_result", "display_data") and "image/png" in o.data
               for c in nb.cells for o in c.get("outputs", [])), f"{name}: no figure shown"


def produces_what_its_notebooks_write(runs: NotebookRuns, names):
    produced = {p.name for p in runs.published.iterdir()}
    expected = written_by(names)
    assert expected and expected <= produced, f"missing: {sorted(expected - produced)}"


def written_back_clean_and_paired(runs: NotebookRuns, name: str):
    nb = nbformat.read(runs.written_back / name, as_version=4)
    check_committed_outputs(nb)
    assert jupytext.writes(nb, fmt="py:percent") == \
        (REPO / "notebooks" / name).with_suffix(".py").read_text()
    assert any(c.get("outputs") for c in nb.cells), f"{name}: written back without outputs"


def printed(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")


# What each notebook shows of its own cells' check against the package, and, for those opened
# alone in the session's run (conftest.NOTEBOOKS_ALONE), the line that says it made what it
# lacked. Notebooks 4, 7 and 8 run in the report's chain; the committed-model fallback they
# take when opened alone is tested on report.Context (test_colab.py).
CHECKS = {
    "04_tta.ipynb": (None, r"by hand vs the package's TTA: ([0-9.e+-]+)"),
    "05_postprocessing.ipynb": ("no probability maps of notebook 4",
                                r"the same as the package's: (True)"),
    "06_evaluation.ipynb": ("no probability maps of notebook 4", r"\(equal: (True)\)"),
    "07_segment_your_images.ipynb": (None, r"as above: (True)"),
    "08_big_images.ipynb": (None, r"every file the same as the serial run's: (True)"),
}


def own_cells_agree_with_the_package(runs: NotebookRuns, name: str):
    """Notebooks 5 and 6, opened alone in a fresh run folder (as from their Colab badge: the
    committed model, nothing of the notebooks before them), predict the few images they need
    themselves, say so in one line, and score what they made; every notebook's own cells agree
    with the package."""
    run = runs.run[name]
    said, check = CHECKS[name]
    text = printed(nbformat.read(runs.executed(name), as_version=4))
    assert (said is not None) == (name in NOTEBOOKS_ALONE)
    if said:
        assert text.count(said) == 1, text
        maps = list((run / "predictions").rglob("*.npz"))
        assert len(maps) == report.FEW * (2 if name.startswith("06") else 1)
        assert f"{report.FEW} of its" in text  # the tables say how many images they hold
    else:
        assert "no probability maps" not in text
    found = re.search(check, text)
    assert found, text
    if name.startswith("04"):
        assert float(found.group(1)) < 1e-4  # by hand = the package's TTA, up to rounding
    produced = {p.name for p in (run / "figures").iterdir()}
    if name.startswith("05"):
        assert "the same as the package's filter: True" in text, text
    expected = {"04": {"tta", "disagreement"},
                "05": {"touching", "watershed", "difference", "filters"},
                "06": {"iou_curve", "errors", "predictions", "per_image"},
                "07": {"overlay", "measurements"},
                "08": {"big_stitch_rules", "big_seams"}}[name[:2]]
    assert {figures.NAMES[k] for k in expected} <= produced
