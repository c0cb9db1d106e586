"""The analysis notebooks run top to bottom (nbclient).

Against a synthetic, plumbing-only results tree (records drawn from known
laws, marked synthetic) and, when it exists, the committed reference study.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from scaling.analysis import synthetic

nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
REAL = ROOT / "experiments" / "cifar10_reference" / "results"


@pytest.fixture(scope="module")
def synthetic_results(tmp_path_factory):
    return synthetic.write_study(tmp_path_factory.mktemp("synthetic_results"), seed=1)


def execute(path: Path, results: Path, monkeypatch) -> None:
    monkeypatch.setenv("SCALING_RESULTS", str(results))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


def test_three_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == [
        "01_frontier_and_law.ipynb",
        "02_optimal_allocation.ipynb",
        "03_convnets_vs_vits.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_synthetic_results(path, synthetic_results, monkeypatch):
    execute(path, synthetic_results, monkeypatch)


@pytest.mark.slow
@pytest.mark.skipif(not REAL.exists(), reason="no committed reference results yet")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_committed_results(path, monkeypatch):
    execute(path, REAL, monkeypatch)
