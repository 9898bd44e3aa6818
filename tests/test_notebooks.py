"""The notebooks: jupytext pairs in sync (the .py pairs carry no outputs), committed outputs
free of volatile metadata, the report runner and its write-back, and every figure and table of
the report produced by a real (smoke, synthetic) run of all notebooks. (nbval executes each
notebook as well: see pyproject.toml, testpaths includes notebooks/.)"""
import copy
from pathlib import Path

import jupytext
import nbformat
import notebook_checks
import pytest
from notebook_checks import check_committed_outputs

from conftest import NOTEBOOKS_ALONE, NOTEBOOKS_CHAIN
from nucseg_utils import report
from nucseg_utils.report import figures

REPO = Path(__file__).resolve().parent.parent
PAIRED = sorted((REPO / "notebooks").glob("*.ipynb")) + sorted((REPO / "colab").glob("*.ipynb"))
NOTEBOOK_NAMES = report.NOTEBOOKS


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_every_numbered_notebook_is_in_the_report_order():
    names = sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))
    assert names == sorted(report.NOTEBOOKS)


@pytest.mark.parametrize("nb_path", PAIRED, ids=lambda p: p.name)
def test_jupytext_pair_is_in_sync(nb_path):
    script = nb_path.with_suffix(".py")
    assert script.exists(), f"{nb_path.name} has no paired script {script.name}"
    assert _cells(jupytext.read(script)) == _cells(nbformat.read(nb_path, as_version=4)), \
        f"{nb_path.name} and {script.name} differ: run `make sync`"


@pytest.mark.parametrize("nb_path", PAIRED, ids=lambda p: p.name)
def test_jupytext_of_the_notebook_equals_its_script(nb_path):
    # the .py pair is exactly what jupytext makes of the notebook: code and markdown only,
    # whatever outputs the notebook carries
    nb = nbformat.read(nb_path, as_version=4)
    assert jupytext.writes(nb, fmt="py:percent") == nb_path.with_suffix(".py").read_text(), \
        f"{nb_path.name}: `jupytext --to py:percent` differs from its .py: run `make sync`"


@pytest.mark.parametrize("nb_path", PAIRED, ids=lambda p: p.name)
def test_committed_outputs_carry_no_volatile_metadata(nb_path):
    check_committed_outputs(nbformat.read(nb_path, as_version=4))


def test_clean_executed_keeps_the_source_and_strips_what_changes_between_runs():
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = nbformat.v4.new_notebook(metadata={"kernelspec": kernel})
    src.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                 nbformat.v4.new_code_cell("print(x)")]
    ran = nbformat.from_dict(nbformat.v4.new_notebook(metadata={
        "kernelspec": kernel, "papermill": {"duration": 3.2},
        "language_info": {"name": "python", "version": "3.11"}, "widgets": {"state": {}}}))
    injected = nbformat.v4.new_code_cell("x = 2", metadata={"tags": ["injected-parameters"]})
    body = copy.deepcopy(src.cells[1])
    body.metadata = {"execution": {"iopub.status.busy": "2026-01-01T00:00:00Z"},
                     "papermill": {"duration": 0.1, "start_time": "2026"}, "tags": []}
    body.execution_count = 3
    body.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=f"model at {REPO}/runs/x\n"),
        nbformat.v4.new_output("stream", name="stderr", text="\rtrain:  50%|#####\n"),
        nbformat.v4.new_output("stream", name="stdout", text="step 1\rstep 2\n"),
        nbformat.v4.new_output("display_data", data={
            "image/png": "iVBORw0KGgo=", "text/plain": "<Figure>",
            "application/vnd.jupyter.widget-view+json": {"model_id": "abc"}},
            metadata={"image/png": {"width": 10}})]
    ran.cells = [copy.deepcopy(src.cells[0]), injected, body]
    ran.cells[0].execution_count = 1
    for a, b in zip((src.cells[0], src.cells[1]), (ran.cells[0], ran.cells[2])):
        b["id"] = a["id"]
    nb = report.clean_executed(ran, src, {str(REPO) + "/": ""})
    check_committed_outputs(nb)
    assert [c.source for c in nb.cells] == [c.source for c in src.cells]
    assert nb.cells[1].execution_count == 2
    out = nb.cells[1].outputs
    assert out[0].text == "model at runs/x\nstep 2\n"
    assert set(out[1].data) == {"image/png", "text/plain"}


def test_report_stops_at_the_first_failing_notebook_and_keeps_old_figures(tmp_path, capsys):
    figs = tmp_path / "figures"
    figs.mkdir()
    (figs / "fig3_train_samples.png").write_bytes(b"old figure")
    calls = []

    def runner(nb, out, params, cwd):
        calls.append(nb.name)
        Path(params["figures_dir"]).mkdir(parents=True, exist_ok=True)
        (Path(params["figures_dir"]) / "fig3_train_samples.png").write_bytes(b"partial")
        if nb.name.startswith("02"):
            err = RuntimeError("boom")
            err.ename, err.evalue, err.exec_count = "ValueError", "bad thing", 4
            raise err

    code = report.run_all("smoke", run_dir=tmp_path / "run", synthetic=True,
                          figures_dir=figs, runner=runner)
    assert code == 1
    assert calls == ["01_eda.ipynb", "02_preprocessing.ipynb"]
    assert (figs / "fig3_train_samples.png").read_bytes() == b"old figure"
    err = capsys.readouterr().err
    assert "02_preprocessing.ipynb failed at cell [4]: ValueError: bad thing" in err


# The chain's executed notebooks (conftest.chain_runs); notebooks 5 and 6, executed alone, in
# test_notebooks_alone.py: two files, so that two pytest-xdist workers execute them at once.
@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS_CHAIN)
def test_every_notebook_runs_to_its_end_and_shows_a_figure(chain_runs, name):
    notebook_checks.runs_to_its_end_and_shows_a_figure(chain_runs, name)


@pytest.mark.slow
def test_the_chain_produces_every_figure_and_table_its_notebooks_write(chain_runs):
    notebook_checks.produces_what_its_notebooks_write(chain_runs, NOTEBOOKS_CHAIN)


def test_every_figure_and_table_of_the_report_is_written_by_a_notebook():
    written = notebook_checks.written_by(report.NOTEBOOKS)
    expected = set(figures.NAMES.values()) | set(figures.TABLES.values())
    expected |= {n.replace(".csv", ".md") for n in figures.TABLES.values()}
    assert written == expected, (sorted(expected - written), sorted(written - expected))
    assert set(NOTEBOOKS_CHAIN) | set(NOTEBOOKS_ALONE) == set(report.NOTEBOOKS)


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS_CHAIN)
def test_an_executed_notebook_is_written_back_clean_and_still_paired(chain_runs, name):
    notebook_checks.written_back_clean_and_paired(chain_runs, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(notebook_checks.CHECKS) & set(NOTEBOOKS_CHAIN)))
def test_a_notebooks_own_cells_agree_with_the_package(chain_runs, name):
    notebook_checks.own_cells_agree_with_the_package(chain_runs, name)


def test_tables_are_shown_with_one_name_per_metric_and_a_dash_for_what_was_not_measured():
    import pandas as pd
    table = pd.DataFrame({"method": ["ours", "published"], "dsb": [0.39561, 0.5187],
                          "f1": [0.7345, float("nan")], "pixel_f1": [0.81, 0.8961],
                          "dsb_stained": [0.2, float("nan")], "images": [65, 106]})
    shown = report.readable(table)
    assert list(shown.columns) == ["method", "DSB", "object F1 (IoU > 0.5)", "pixel F1",
                                   "DSB stained", "images"]
    assert shown.iloc[0].tolist() == ["ours", "0.3956", "0.7345", "0.8100", "0.2000", 65]
    assert shown.iloc[1].tolist() == ["published", "0.5187", report.DASH, "0.8961",
                                      report.DASH, 106]
    per_t = report.readable(pd.DataFrame({"threshold": [0.55], "f1": [0.7]}),
                            report.THRESHOLD_NAMES)
    assert list(per_t.columns) == ["IoU threshold t", "object F1 (IoU > t)"]
    assert per_t.iloc[0].tolist() == ["0.55", "0.7000"]


def test_a_notebooks_context_shows_tables_whole(tmp_path, monkeypatch):
    import pandas as pd
    for var in report.OVERRIDES:
        monkeypatch.delenv(var, raising=False)
    with pd.option_context("display.max_colwidth", 50):
        report.Context("smoke", run_dir=str(tmp_path / "run"), synthetic=True)
        assert pd.get_option("display.max_colwidth") is None
        long = pd.DataFrame({"augmentation": ["x" * 120]})
        assert "x" * 120 in long.to_html() and "..." not in long.to_html()


@pytest.mark.heavy
@pytest.mark.slow
def test_colab_notebook_runs_its_non_colab_path_in_smoke(tmp_path):
    """The Colab runner outside Colab: the smoke profile on the synthetic set, its runner and
    report call, here on notebook 1 only (every notebook runs in the session's report run)."""
    import papermill as pm
    out = tmp_path / "colab.ipynb"
    pm.execute_notebook(str(REPO / "colab" / "run_paper_profile.ipynb"), str(out),
                        parameters={"run_dir": str(tmp_path / "run"),
                                    "notebooks": ["01_eda.ipynb"]},
                        cwd=str(REPO / "colab"), progress_bar=False, kernel_name="python3")
    assert (tmp_path / "run" / "notebooks" / "01_eda.ipynb").exists()
    assert (tmp_path / "run" / "published" / figures.NAMES["eda"]).exists()


def test_only_the_cpu_profile_on_real_data_refreshes_figures(tmp_path, monkeypatch, real_data):
    def runner(nb, out, params, cwd):
        Path(params["figures_dir"]).mkdir(parents=True, exist_ok=True)
        (Path(params["figures_dir"]) / "fig.png").write_bytes(b"x")

    monkeypatch.setattr(report.context, "REPO", tmp_path)
    assert report.run_all("smoke", run_dir=tmp_path / "run", data_root=real_data,
                          notebooks=["01_eda.ipynb"], runner=runner) == 0
    assert (tmp_path / "figures" / "smoke" / "fig.png").exists()
    assert not (tmp_path / "figures" / "fig.png").exists()


def test_the_results_engine_is_the_one_publish_recorded(tmp_path):
    import json
    assert report.results_engine(tmp_path) == report.DEFAULT_RESULTS_ENGINE  # no results.json
    (tmp_path / "results.json").write_text("{not json")
    assert report.results_engine(tmp_path) == report.DEFAULT_RESULTS_ENGINE
    evaluations = {"tta": {"dsb": 0.3}, "no_tta": {"dsb": 0.2}}  # published before it was kept
    (tmp_path / "results.json").write_text(json.dumps({"evaluations": evaluations}))
    assert report.results_engine(tmp_path) == "tensorflow"
    evaluations["tta"]["engine"] = "openvino"
    (tmp_path / "results.json").write_text(json.dumps({"evaluations": evaluations}))
    assert report.results_engine(tmp_path) == "openvino"


def test_the_committed_report_predicts_with_the_engine_of_the_committed_results(
        tmp_path, monkeypatch, real_data):
    import os
    import shutil
    seen = {}

    def runner(nb, out, params, cwd):
        seen[params["profile"]] = os.environ.get("NUCSEG_ENGINE")
        shutil.copy(nb, out)  # "executed" as it is

    monkeypatch.setattr(report.context, "REPO", tmp_path)
    monkeypatch.delenv("NUCSEG_ENGINE", raising=False)
    for profile in ("cpu", "smoke"):
        report.run_all(profile, run_dir=tmp_path / profile, data_root=real_data,
                       notebooks=["01_eda.ipynb"], runner=runner)
    assert seen == {"cpu": report.results_engine(), "smoke": None}
    assert "NUCSEG_ENGINE" not in os.environ  # restored after the run
    monkeypatch.setenv("NUCSEG_ENGINE", "openvino")  # the user's choice wins
    report.run_all("cpu", run_dir=tmp_path / "cpu", data_root=real_data,
                   notebooks=["01_eda.ipynb"], runner=runner)
    assert seen["cpu"] == "openvino"
