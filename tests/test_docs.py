"""The documents a reader opens (issue 21): the README as a front door of about 1,200 words at
most, its result row quoting the committed results, the moved material (CONTRIBUTING.md,
colab/README.md, models/cpu/NOTES.md) reachable from it, every relative link resolving, and no
path that exists only on the development machine."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = [README, REPO / "CONTRIBUTING.md", REPO / "colab" / "README.md",
        REPO / "models" / "cpu" / "NOTES.md", REPO / "models" / "TEST_LEDGER.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _prose(path: Path) -> str:
    """The text without its fenced code blocks (a link there is an example, not a link)."""
    return re.sub(r"```.*?```", "", path.read_text(), flags=re.S)


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file."""
    heads = re.findall(r"^#+\s+(.+?)\s*$", path.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def test_the_readme_is_a_front_door_in_the_issue_s_order():
    text = README.read_text()
    assert len(text.split()) <= 1250, f"README.md has {len(text.split())} words (about 1,200 at most)"
    heads = re.findall(r"^## (.+)$", text, flags=re.M)
    order = ["Install", "Segment your images", "Results", "The notebooks", "Reproduce"]
    assert [h for h in heads if h in order] == order, heads
    before_install = text[:text.index("## Install")]
    picture = re.search(r"!\[[^\]]*\]\((figures/[\w.-]+\.png)\)", before_install)
    assert picture and (REPO / picture.group(1)).is_file(), "a picture of a segmented image first"
    for snippet in ("nucseg predict --images", "NucleusModel.load()", "predict_instances(",
                    "jupyter lab notebooks", ".venv/bin/nucseg", "source .venv/bin/activate",
                    "summary.csv", "submission.csv", "make report", "make test", "make model"):
        assert snippet in text, snippet


def test_the_readme_s_result_rows_quote_the_committed_results():
    text = README.read_text()
    section = text[text.index("## Results"):text.index("## The notebooks")]
    rows = [r for r in section.splitlines() if r.startswith("|") and "---" not in r][1:]
    assert len(rows) == 4, rows  # cpu, release, the paper, the Kaggle winner
    native = json.loads((REPO / "models" / "cpu" / "results.json").read_text())
    native = native["evaluations"]["tta"]["native"]
    assert f"{native['dsb']:.4f}" in rows[0] and f"{native['f1']:.4f}" in rows[0], rows[0]
    # the release model's row is its validation (it has no untouched test set) and says so
    val = json.loads((REPO / "models" / "release" / "results.json").read_text())["validation"]
    assert f"{val['dsb']:.4f}" in rows[1] and f"{val['f1']:.4f}" in rows[1], rows[1]
    assert "`release`" in rows[1] and "no untouched test set" in rows[1]
    assert "0.5187" in rows[2] and "0.6313" in rows[3]
    assert "object F1" in section and not re.search(r"\|\s*f1\s*\|", section)
    for target in ("models/cpu/results.md", "models/cpu/NOTES.md", "models/release/results.md"):
        assert f"]({target})" in section, target


def test_the_moved_material_is_reachable_from_the_readme():
    links = set(LINK.findall(_prose(README)))
    for target in ("CONTRIBUTING.md", "colab/README.md", "models/cpu/NOTES.md"):
        assert any(link.split("#")[0] == target for link in links), target
    notes = set(LINK.findall(_prose(REPO / "models" / "cpu" / "NOTES.md")))
    assert "ablation.md" in notes  # the generated lever table, never edited by hand


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(doc):
    broken = []
    for link in LINK.findall(_prose(doc)):
        if re.match(r"[a-z]+:", link):
            continue  # https:, mailto:
        path, _, anchor = link.partition("#")
        target = (doc.parent / path).resolve() if path else doc
        if not target.exists() or (anchor and target.suffix == ".md"
                                   and anchor not in _anchors(target)):
            broken.append(link)
    assert not broken, f"{doc.name}: broken links {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_path_of_the_development_machine(doc):
    text = doc.read_text()
    assert "../shared" not in text and "shared/data" not in text, doc.name


@pytest.mark.slow
def test_the_readme_s_python_snippet_runs_on_an_image_file(tmp_path, monkeypatch):
    import contextlib
    import io

    import numpy as np
    import tifffile

    from nucseg_utils.data import synthetic
    block = re.search(r"```python\n(.*?)```", README.read_text(), flags=re.S).group(1)
    image, truth = synthetic.make_image(np.random.default_rng(5), (128, 160),
                                        look="fluorescence")
    tifffile.imwrite(tmp_path / "my_image.tif", image)
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    scope: dict = {}
    with contextlib.redirect_stdout(printed):
        exec(compile(block, "README.md", "exec"), scope)
    labels = scope["labels"]
    assert labels.shape == truth.shape and 0 < labels.max() <= 2 * truth.max()
    assert printed.getvalue().strip().endswith(f"{labels.max()} nuclei")
    assert set(scope["details"]) >= {"probabilities", "steps"}


def test_every_model_scored_on_stage1_test_is_in_the_ledger():
    """The stage1_test ledger (models/TEST_LEDGER.md) names every model whose test DSB the
    lever table or the cpu model's results file records."""
    ledger = (REPO / "models" / "TEST_LEDGER.md").read_text()
    scored = set()
    for row in (REPO / "models" / "cpu" / "ablation.md").read_text().splitlines():
        cells = [c.strip() for c in row.split("|")]
        if len(cells) > 5 and re.fullmatch(r"`[0-9a-f]{16}`", cells[1]) and \
                re.fullmatch(r"[0-9.]+", cells[4]):
            scored.add(cells[1].strip("`"))
    results = json.loads((REPO / "models" / "cpu" / "results.json").read_text())
    scored |= {e["model_fingerprint"] for e in results["evaluations"].values()
               if e.get("model_fingerprint")}
    assert len(scored) >= 5
    missing = sorted(f for f in scored if f"`{f}`" not in ledger)
    assert not missing, f"scored on stage1_test but not in models/TEST_LEDGER.md: {missing}"


PAPER = ("El Mokhtari", "Instance segmentation of cell nuclei using convolutional neural network",
         "github.com/yelmokht/nuclei-segmentation")


@pytest.mark.parametrize("path", [README, REPO / "CITATION.cff",
                                  *sorted((REPO / "notebooks").glob("0*.ipynb"))],
                         ids=lambda p: p.name)
def test_the_paper_is_named_where_a_reader_starts(path):
    """Its author, title and code, in the README, CITATION.cff and every numbered notebook's
    first cell."""
    if path.suffix == ".ipynb":
        import nbformat
        text = nbformat.read(path, as_version=4).cells[0].source
    else:
        text = path.read_text()
    flat = " ".join(text.replace("\n#", " ").replace("*", "").split())
    for words in PAPER:
        assert words in flat, (path.name, words)
