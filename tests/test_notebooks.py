"""The numbered notebooks: each `.ipynb` is paired with a jupytext percent-format `.py` twin and the two agree,
they carry no outputs, they train nothing unless asked, and each executes end to end on the `tiny` profile.

How the notebooks are parameterised here: papermill injects ``profile="tiny"``, ``train=True`` (and
``recompute=True`` for 01), and temporary ``results_dir`` / ``figures_dir`` into copies of the committed
notebooks without executing them (``prepare_only``), then ``pytest --nbval-lax`` executes the copies in
order in one subprocess: every cell must run. What the executed notebooks must have produced (tables with
their columns, every figure as PNG and PDF, the gradient weights at Δ = 0) is checked here afterwards, not
in cells a reader sees. The copies read the project's fixtures (``ULMA_DATA_DIR`` unset) and write caches
to a temporary folder, so the test gives the same result on every machine and touches nothing in the checkout.
"""
import os
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pandas as pd
import pytest
from jupytext.compare import NotebookDifference, compare_notebooks

from ulma import figures, report

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
TRAINING = ["03_pointwise_dpo", "04_ulma", "05_golden_hh", "06_ablations", "07_efficiency"]
PAIRING = "ipynb,py:percent"


def _in_sync(ipynb: Path, twin: Path) -> None:
    """Raise jupytext's NotebookDifference when the `.py` twin and the `.ipynb` differ in any cell."""
    compare_notebooks(jupytext.read(twin), jupytext.read(ipynb), fmt="py:percent")


def test_notebooks_are_paired_with_their_py_twin_and_in_sync():
    assert [p.stem.split("_")[0] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(1, 10)]
    assert not (ROOT / "notebooks" / "make_notebooks.py").exists()  # the pairs are the source now
    for path in NOTEBOOKS:
        twin = path.with_suffix(".py")
        assert twin.exists(), f"{path.name} has no jupytext twin {twin.name}"
        nb = nbformat.read(path, as_version=4)
        assert nb.metadata.get("jupytext", {}).get("formats") == PAIRING, f"{path.name}: not paired ({PAIRING})"
        assert nb.metadata.kernelspec.name == "python3"
        _in_sync(path, twin)


def test_the_sync_check_catches_an_edit_of_one_side(tmp_path):
    source = ROOT / "notebooks" / "04_ulma.py"
    edited = tmp_path / "04_ulma.py"
    edited.write_text(source.read_text().replace("# ## Reading the result", "# ## Reading the results", 1))
    with pytest.raises(NotebookDifference):
        _in_sync(ROOT / "notebooks" / "04_ulma.ipynb", edited)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebooks_have_no_outputs_and_one_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: a cell carries outputs"
            assert "NBVAL" not in cell.source, f"{path.name}: test scaffolding in a cell a reader sees"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "profile = " in tagged[0].source
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith(f"# {path.stem[:2]} · ")


@pytest.mark.parametrize("stem", TRAINING)
def test_training_notebooks_train_nothing_unless_asked(stem):
    import papermill

    nb_path = ROOT / "notebooks" / f"{stem}.ipynb"
    declared = {p["name"]: p["default"] for p in papermill.inspect_notebook(str(nb_path)).values()}
    assert declared["train"] == "False"  # "Run All" on a fresh clone shows the committed results
    calls = [c.source for c in nbformat.read(nb_path, as_version=4).cells if "run_grid(" in c.source]
    # one grid call per experiment the notebook runs (06: the calibration, then the ablations), each told
    # whether to train by the parameter: train=False reports the records and plans nothing
    assert len(calls) == (2 if stem == "06_ablations" else 1), calls
    assert all("train=train" in c and "if train:" not in c for c in calls), calls
    text = " ".join(c.source for c in nbformat.read(nb_path, as_version=4).cells)
    assert "## Reading the result" in text and "notebook.reading(" in text  # the closing reading is computed
    assert "notebook.claims_reading(" in text  # with the verdicts of the paper's claims it covers
    if stem != "07_efficiency":
        assert "**Budget.**" in text and "notebook.budget_text(" in text  # how the budget is matched, said


def test_dataset_notebook_reads_the_committed_statistics_by_default():
    import papermill

    declared = papermill.inspect_notebook(str(ROOT / "notebooks" / "01_datasets.ipynb"))
    assert declared["recompute"]["default"] == "False"


def _prepare(tmp_path: Path) -> list[Path]:
    """Copies of the notebooks with the tiny parameters injected; each gets the parameters it declares."""
    import papermill

    common = {"profile": "tiny", "results_dir": str(tmp_path / "results"), "figures_dir": str(tmp_path / "figures"),
              "train": True, "recompute": True}
    copies = []
    for source in NOTEBOOKS:
        target = tmp_path / "notebooks" / source.name
        target.parent.mkdir(exist_ok=True)
        declared = papermill.inspect_notebook(str(source))
        papermill.execute_notebook(str(source), str(target), parameters={k: v for k, v in common.items() if k in declared},
                                   prepare_only=True, kernel_name="python3", progress_bar=False)
        copies.append(target)
    return copies


def expected_weights_at_zero(beta: float = 0.1) -> str:
    """The closed forms at Δ = 0, c = 0 (σ(0) = 1/2): what notebook 02's weights table must print, computed
    here independently of the loss code it checks."""
    half = beta / 2
    rows = [
        ("sft", "positive", 1.0),
        ("pointwise_dpo", "positive", half), ("pointwise_dpo", "negative", -half),
        ("positive_dpo", "positive", half), ("positive_dpo", "negative", 0.0),
        ("negative_dpo", "positive", 0.0), ("negative_dpo", "negative", -half),
        ("ulma", "positive", 1.0), ("ulma", "negative", -half),
        ("unlikelihood", "positive", 1.0), ("unlikelihood", "negative", -1.0),
        ("negative_unlikelihood", "positive", 0.0), ("negative_unlikelihood", "negative", -1.0),
        ("dpo", "chosen", half), ("dpo", "rejected", -half),
    ]
    return "\n".join([f"{'method':22s} {'sample':9s} weight"] + [f"{m:22s} {s:9s} {w:+.4f}" for m, s, w in rows])


@pytest.mark.slow
def test_every_notebook_runs_on_tiny(tmp_path):
    copies = _prepare(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "ULMA_DATA_DIR"}
    env.update(ULMA_CACHE_DIR=str(tmp_path / "cache"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               MPLBACKEND="Agg", PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout=900",
         "-p", "no:cacheprovider", "-q", "-x", *map(str, copies)],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    # every figure, as PNG and PDF (notebook 08 redrew them from results/ alone)
    for png in figures.expected_figures("tiny", tmp_path / "figures"):
        assert png.stat().st_size > 1000, png
        assert png.with_suffix(".pdf").read_bytes().startswith(b"%PDF"), png.with_suffix(".pdf")
    tables = tmp_path / "results" / "tiny" / "tables"
    assert {p.stem for p in tables.glob("*.md")} >= {"01_datasets", *TRAINING, "06_calibration"}
    for name in TRAINING:  # each table has its documented columns first
        columns = list(pd.read_csv(tables / f"{name}.csv").columns)
        assert columns[: len(report.TABLE_COLUMNS[name])] == report.TABLE_COLUMNS[name], name
    assert "n/a: red_team has no pairwise view" in (tables / "04_ulma.md").read_text()  # DPO on red-team
    main = pd.read_csv(tables / "04_ulma.csv")
    hh = main[main["dataset"] == "hh"]
    assert hh["method"].iloc[0] == "base" and set(hh["budget"].iloc[1:]) == {"matched"}
    assert hh["steps"].iloc[1:].dropna().nunique() == 1 and set(hh["sequences_per_step"].iloc[1:].dropna()) == {4}
    calibration = pd.read_csv(tables / "06_calibration.csv")  # run by notebook 06 on mini_valid
    assert len(calibration) >= 3 and list(calibration.columns[:4]) == ["dataset", "method", "learning_rate", "beta"]
    assert report.weights_at("tiny", 0.0, tmp_path / "results") == expected_weights_at_zero()
