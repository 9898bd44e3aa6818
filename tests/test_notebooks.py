"""The notebooks: jupytext pairs in sync, no committed outputs, the report runner, and every
figure and table of the report produced by a real (smoke, synthetic) run of all notebooks.
(nbval executes each notebook as well: see pyproject.toml, testpaths includes notebooks/.)"""
from pathlib import Path

import jupytext
import nbformat
import pytest

from nucseg_utils import figures, report

REPO = Path(__file__).resolve().parent.parent
PAIRED = sorted((REPO / "notebooks").glob("*.ipynb")) + sorted((REPO / "colab").glob("*.ipynb"))


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
def test_committed_notebook_has_no_outputs_and_one_parameters_cell(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1


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


@pytest.mark.slow
def test_report_run_produces_every_figure_and_table(tmp_path):
    figs = tmp_path / "published"
    code = report.run_all("smoke", run_dir=tmp_path / "run", synthetic=True, figures_dir=figs)
    assert code == 0
    produced = {p.name for p in figs.iterdir()}
    expected = set(figures.NAMES.values()) | set(figures.TABLES.values())
    expected |= {n.replace(".csv", ".md") for n in figures.TABLES.values()}
    assert expected <= produced, f"missing: {sorted(expected - produced)}"
    assert len(list((tmp_path / "run" / "notebooks").glob("*.ipynb"))) == len(report.NOTEBOOKS)
    table2 = (figs / "table2_results.md").read_text()
    assert "0.5187" in table2 and "0.6313" in table2 and "synthetic" in table2


@pytest.mark.slow
def test_colab_notebook_runs_its_non_colab_path_in_smoke(tmp_path):
    import papermill as pm
    out = tmp_path / "colab.ipynb"
    pm.execute_notebook(str(REPO / "colab" / "run_paper_profile.ipynb"), str(out),
                        parameters={"run_dir": str(tmp_path / "run")},
                        cwd=str(REPO / "colab"), progress_bar=False, kernel_name="python3")
    assert (tmp_path / "run" / "model.npz").exists()
    assert (tmp_path / "run" / "published" / "table2_results.csv").exists()


def test_only_the_cpu_profile_on_real_data_refreshes_figures(tmp_path, monkeypatch, real_data):
    def runner(nb, out, params, cwd):
        Path(params["figures_dir"]).mkdir(parents=True, exist_ok=True)
        (Path(params["figures_dir"]) / "fig.png").write_bytes(b"x")

    monkeypatch.setattr(report, "REPO", tmp_path)
    assert report.run_all("smoke", run_dir=tmp_path / "run", data_root=real_data,
                          notebooks=["01_eda.ipynb"], runner=runner) == 0
    assert (tmp_path / "figures" / "smoke" / "fig.png").exists()
    assert not (tmp_path / "figures" / "fig.png").exists()
