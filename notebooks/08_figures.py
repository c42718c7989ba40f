# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · Every figure from `results/`
#
# Redraws every figure of notebooks 02–07 from the JSON and CSV files under `results/<profile>/` alone —
# no model, no training — and saves each as PNG (200 dpi) and PDF under `figures/<profile>/`. Every
# function it calls returns a matplotlib Figure (see `ulma.figures`), so a figure can be restyled before
# it is saved. Use it after copying results from another machine, or to check that the committed figures
# follow from the committed results.

# %% tags=["parameters"]
profile = "mini"         # tiny | mini | paper, or a path to a profile YAML
results_dir = "results"  # a relative path resolves against the repository root
figures_dir = "figures"  # a relative path resolves against the repository root

# %%
from IPython.display import Image, display

from ulma import figures, notebook

notebook.setup()

# %%
paths = figures.draw_figures(profile, results_dir, figures_dir)
for path in paths:
    display(Image(filename=str(path)))
