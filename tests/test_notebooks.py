"""Every notebook in ``notebooks/`` executes headless in small mode
(``DYNASIM_NOTEBOOK_SMALL=1``); a failing cell fails the test with the cell's error."""

from __future__ import annotations

import os

import pytest

from tests.helpers import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))


def test_there_are_notebooks():
    assert {p.stem for p in NOTEBOOKS} >= {"online_attainment", "token_to_accuracy",
                                          "scheduler_ablation", "fairness"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, data_dir, tmp_path, monkeypatch):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("DYNASIM_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("DYNASIM_NOTEBOOK_OUT", str(tmp_path / "out"))
    nb = jupytext.read(path)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the cell on failure
    html = list((tmp_path / "out" / "figures").glob("*.html"))
    assert html, "the notebook wrote no figure"
    assert os.path.getsize(html[0]) > 1000
