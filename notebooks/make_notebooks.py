"""Write the numbered notebooks (01_datasets.ipynb ... 08_figures.ipynb) from one definition.

    python notebooks/make_notebooks.py          # rewrites them, byte for byte the same
    python notebooks/make_notebooks.py --check  # exit 1 if a committed notebook differs (tests run this)

Every notebook has the same shape, with no logic in its cells: a markdown cell saying what the paper claims and what
the notebook shows; a ``parameters`` cell that papermill overrides (``ulma reproduce`` passes
``profile``, ``results_dir``, ``figures_dir``, ``force``); one call into the package; the table or figure.
No logic lives here or in the notebooks: the experiment's title, claim and datasets come from
``ulma.experiments.EXPERIMENTS``, the table columns from ``ulma.report``.

The notebooks are written without outputs, except the expected output of the few cells marked
``# NBVAL_CHECK_OUTPUT``: deterministic prints (a table's columns, a figure list, gradient weights at
Δ = 0) that ``pytest --nbval-lax`` compares; every other cell only has to run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ulma import report  # noqa: E402
from ulma.experiments import EXPERIMENTS  # noqa: E402

CHECK = "# NBVAL_CHECK_OUTPUT"
PARAMETERS = {
    "profile": ('"mini"', "tiny | mini | paper, or a path to a profile YAML"),
    "datasets": ("None", "None: the experiment's datasets at this profile"),
    "methods": ("None", "None: the experiment's methods (variants) at this profile"),
    "seeds": ("None", "None: the profile's seeds"),
    "force": ("False", "True: retrain runs that have results (an ISO time: those finished before it)"),
    "results_dir": ('"results"', "a relative path resolves against the repository root"),
    "figures_dir": ('"figures"', "a relative path resolves against the repository root"),
}
GRID = ["profile", "datasets", "methods", "seeds", "force", "results_dir", "figures_dir"]
COMMON = ["profile", "force", "results_dir", "figures_dir"]


def parameters_cell(names: list[str]):
    width = max(len(f"{n} = {PARAMETERS[n][0]}") for n in names)
    lines = [f"{n} = {PARAMETERS[n][0]}".ljust(width) + f"  # {PARAMETERS[n][1]}" for n in names]
    return new_code_cell("\n".join(lines), metadata={"tags": ["parameters"]})


def checked(source: str, expected: str):
    """A cell whose printed output nbval compares with `expected` (stored in the notebook)."""
    cell = new_code_cell(f"{CHECK}\n{source}", execution_count=1)  # nbval ignores outputs of unrun cells
    cell.outputs = [new_output("stream", name="stdout", text=expected + "\n")]
    return cell


def intro(name: str, extra: str = ""):
    e = EXPERIMENTS[name]
    number = name.split("_")[0]
    text = (
        f"# {number} · {e.title}\n\n"
        + (f"**The paper claims.** {e.claim}\n\n" if e.claim != "—" else "")
        + f"**This notebook shows.** {e.shows}\n\n"
        + extra
        + f"Run it alone with `python -m ulma reproduce --profile mini --only {number}` (or open it and run all "
        "cells: the parameters cell below sets the profile). Finished runs are not recomputed: their JSONs "
        f"under `results/<profile>/{name}/` carry the config they were made with."
    )
    return new_markdown_cell(text)


def expected_weights_at_zero(beta: float = 0.1) -> str:
    """The closed forms of docs/METHODS.md at Δ = 0, c = 0 (σ(0) = 1/2): what notebook 02 must print, computed here
    independently of the loss code it checks."""
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


def columns_text(columns: list[str]) -> str:
    return str(columns)


def grid_notebook(name: str, figures: bool = True, note: str = "") -> list:
    e = EXPERIMENTS[name]
    table_columns = report.TABLE_COLUMNS[name]
    stds = [m + "_std" for m in table_columns if (m in report.METRICS or m in report.RATIOS) and m not in ("beta", "c")]
    cells = [
        intro(name, f"Datasets: {', '.join(e.datasets)}; a dataset that cannot be had here is reported as "
                    "*not measured* with the reason, a method that does not apply as *n/a*. " + note + "\n\n"),
        parameters_cell(GRID),
        new_code_cell("from IPython.display import Image, Markdown, display\n\nfrom ulma import experiments, report"),
        new_code_cell(
            f'runs = experiments.run_grid(profile, "{name}", datasets, methods, seeds, force=force, '
            "results_dir=results_dir)"
        ),
        new_code_cell(f'table = report.make_table(profile, "{name}", results_dir)\n'
                      "display(Markdown(report.to_markdown(table)))"),
        checked("print(list(table.columns))", columns_text(table_columns + stds)),
    ]
    if figures:
        cells.append(new_code_cell(
            f'for path in report.draw_figures(profile, results_dir, figures_dir, ["{name}"]):\n'
            "    display(Image(filename=str(path)))"
        ))
    return cells


def notebooks() -> dict[str, list]:
    return {
        "01_datasets": [
            intro("01_datasets", "Rows are counted in the profile's train and test splits; `rows_used` is what "
                  "training reads (`max_train_examples` source examples); token lengths use the profile's "
                  "tokenizer and prompt rendering.\n\n"),
            parameters_cell(["profile", "datasets", "force", "results_dir", "figures_dir"]),
            new_code_cell("from IPython.display import Markdown, display\n\nfrom ulma import experiments, report"),
            new_code_cell("stats = experiments.dataset_stats(profile, datasets, results_dir=results_dir)\n"
                          "table = report.make_dataset_table(profile, results_dir)\n"
                          "display(Markdown(report.to_markdown(table)))"),
            checked("print(list(table.columns))", columns_text(report.DATASET_TABLE_COLUMNS)),
        ],
        "02_gradients": [
            intro("02_gradients", "The closed forms of docs/METHODS.md, which the plotted curves must follow: point-wise "
                  "DPO w = β·σ(−u) on positives and −β·σ(u) on negatives (u = βΔ + c); ULMA w = 1 on positives; "
                  "unlikelihood (`ascent`) w = −1 on negatives, whatever the log-ratio.\n\n"),
            parameters_cell(COMMON),
            new_code_cell("from IPython.display import Image, display\n\nfrom ulma import experiments, report"),
            new_code_cell("path = experiments.write_gradient_weights(profile, results_dir=results_dir)\n"
                          "for figure in report.draw_figures(profile, results_dir, figures_dir, [\"02_gradients\"]):\n"
                          "    display(Image(filename=str(figure)))"),
            checked("print(report.weights_at(profile, 0.0, results_dir))", expected_weights_at_zero()),
        ],
        "03_pointwise_dpo": grid_notebook("03_pointwise_dpo", note="QA-feedback uses its continuous labels (Borda scores)."),
        "04_ulma": grid_notebook("04_ulma", note="QA-feedback uses its continuous labels (Borda scores)."),
        "05_golden_hh": grid_notebook("05_golden_hh"),
        "06_ablations": grid_notebook(
            "06_ablations",
            note="The sweep values of c and β come from the profile (`experiments.sweeps`); a run whose config "
                 "equals one already made (c = 0, β = 0.1 equal the main comparison's) is reused.",
        ),
        "07_efficiency": grid_notebook(
            "07_efficiency",
            note="These runs have the same config as notebook 04's on HH, so they are reused from it when it ran "
                 "first: their timings are those of the runs themselves. `train_s` is the whole `train()` call "
                 "(model load, reference cache, training, saving), `train_loop_s` the Trainer's loop (for RLHF its "
                 "reported pipeline time, which counts a cached reward model at its training time); "
                 "`peak_memory_mb` is the trainer's (CUDA: allocated; CPU: resident); `*_rows_per_step` are the "
                 "sequences through the policy and the reference per optimizer step (0 for the reference when an "
                 "earlier run filled its cache).",
        ),
        "08_figures": [
            intro("08_figures"),
            parameters_cell(COMMON),
            new_code_cell("from IPython.display import Image, display\n\nfrom ulma import report"),
            new_code_cell("paths = report.draw_figures(profile, results_dir, figures_dir)\n"
                          "for path in paths:\n"
                          "    display(Image(filename=str(path)))"),
            checked("print([path.name for path in paths])",
                    str([p.name for p in report.expected_figures("any")])),
        ],
    }


def build(stem: str, cells: list):
    nb = new_notebook(cells=cells)
    for i, cell in enumerate(nb.cells):
        cell.id = f"{stem.replace('_', '-')}-{i:02d}"  # stable ids: regenerating changes nothing
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
        "language_info": {"name": "python"},
    }
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a notebook differs")
    args = parser.parse_args(argv)
    stale = []
    for stem, cells in notebooks().items():
        path = HERE / f"{stem}.ipynb"
        text = build(stem, cells)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date (run python notebooks/make_notebooks.py): {stale}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
