"""The numbered notebooks: generated from one script, and each executes end to end on the `tiny` profile.

How the notebooks are parameterised here: papermill injects ``profile="tiny"`` and temporary
``results_dir`` / ``figures_dir`` into copies of the committed notebooks without executing them
(``prepare_only``), then ``pytest --nbval-lax`` executes the copies in order in one subprocess: every cell
must run, and the cells marked ``# NBVAL_CHECK_OUTPUT`` must print what the notebook stores. The copies
read the project's fixtures (``ULMA_DATA_DIR`` unset) and write caches to a temporary folder, so the test
gives the same result on every machine and touches nothing in the checkout.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ulma import report

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_notebooks_are_generated_and_have_no_stray_outputs():
    result = subprocess.run([sys.executable, str(ROOT / "notebooks" / "make_notebooks.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [p.stem.split("_")[0] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(1, 9)]
    import nbformat

    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert nb.metadata.kernelspec.name == "python3"
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "profile = " in tagged[0].source
        for cell in nb.cells:
            if cell.cell_type == "code" and cell.outputs:
                assert cell.source.startswith("# NBVAL_CHECK_OUTPUT"), f"{path.name}: output stored in an unchecked cell"


def _prepare(tmp_path: Path) -> list[Path]:
    import papermill

    parameters = {"profile": "tiny", "results_dir": str(tmp_path / "results"), "figures_dir": str(tmp_path / "figures")}
    copies = []
    for source in NOTEBOOKS:
        target = tmp_path / "notebooks" / source.name
        target.parent.mkdir(exist_ok=True)
        papermill.execute_notebook(str(source), str(target), parameters=parameters, prepare_only=True,
                                   kernel_name="python3", progress_bar=False)
        copies.append(target)
    return copies


@pytest.mark.slow
def test_every_notebook_runs_on_tiny(tmp_path):
    copies = _prepare(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "ULMA_DATA_DIR"}
    env.update(ULMA_CACHE_DIR=str(tmp_path / "cache"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               MPLBACKEND="Agg")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout=900",
         "-p", "no:cacheprovider", "-q", "-x", *map(str, copies)],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    # notebook 08 drew every figure from results/ alone
    for png in report.expected_figures("tiny", tmp_path / "figures"):
        assert png.stat().st_size > 1000, png
    tables = tmp_path / "results" / "tiny" / "tables"
    assert {p.stem for p in tables.glob("*.md")} >= {"01_datasets", "03_pointwise_dpo", "04_ulma", "05_golden_hh",
                                                     "06_ablations", "07_efficiency"}
    main = (tables / "04_ulma.md").read_text()
    assert "n/a: red_team has no pairwise view" in main  # DPO on red-team
