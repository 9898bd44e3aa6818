"""Notebooks 5 and 6 as opened from their Colab badge: each executed once alone in a fresh run
folder (conftest.alone_runs), apart from the report's chain (test_notebooks.py), so that the
two executions run on two pytest-xdist workers at once."""
import notebook_checks
import pytest

from conftest import NOTEBOOKS_ALONE

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", NOTEBOOKS_ALONE)
def test_every_notebook_runs_to_its_end_and_shows_a_figure(alone_runs, name):
    notebook_checks.runs_to_its_end_and_shows_a_figure(alone_runs, name)


def test_notebooks_opened_alone_produce_every_figure_and_table_they_write(alone_runs):
    notebook_checks.produces_what_its_notebooks_write(alone_runs, NOTEBOOKS_ALONE)
    table2 = (alone_runs.published / "table2_results.md").read_text()
    assert "0.5187" in table2 and "0.6313" in table2 and "synthetic" in table2


@pytest.mark.parametrize("name", NOTEBOOKS_ALONE)
def test_an_executed_notebook_is_written_back_clean_and_still_paired(alone_runs, name):
    notebook_checks.written_back_clean_and_paired(alone_runs, name)


@pytest.mark.parametrize("name", NOTEBOOKS_ALONE)
def test_alone_it_makes_what_it_lacks_and_its_own_cells_agree_with_the_package(alone_runs,
                                                                                 name):
    notebook_checks.own_cells_agree_with_the_package(alone_runs, name)
