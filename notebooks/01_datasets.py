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
# # 01 · Datasets and their three views
#
# **What the paper does.** ULMA learns from human demonstrations and from *point-wise* preference: each
# reply carries its own label (binary on HH and Golden HH, continuous on red-team and QA-feedback) instead of
# being one half of a pair. The paper trains every method on the same sources, so each source is turned into
# three views: **pairwise** (prompt, chosen, rejected) for DPO and the reward model of RLHF, **point-wise**
# (prompt, reply, label z) for point-wise DPO, KTO, unlikelihood and ULMA, and **SFT** (prompt, demonstration).
#
# **What this notebook shows.** For every dataset, split and view at this profile: rows, rows the training
# reads, label balance, and token lengths under the profile's tokenizer. A dataset that cannot be had here
# (no offline copy) keeps its row, with the reason in `result`.
#
# **How to read it.** `rows_used` is what training sees (the profile caps the source examples);
# `prompt_over_max` is the fraction of prompts longer than the profile's prompt budget (they are cut from
# the left). Point-wise views have two rows per pair on HH (a positive and a negative), so `positives` and
# `negatives` balance there; red-team and QA-feedback carry continuous labels (`other_labels`).
#
# By default this notebook shows the committed statistics; `recompute = True` reads the data again (the
# offline copies, via `ULMA_DATA_DIR`) — what `python -m ulma reproduce` does.

# %% tags=["parameters"]
profile = "mini"         # tiny | mini | paper, or a path to a profile YAML
recompute = False        # True: read the datasets again and rewrite the statistics (needs the data)
datasets = None          # None: the experiment's datasets at this profile
results_dir = "results"  # a relative path resolves against the repository root
figures_dir = "figures"  # unused here; every notebook takes it

# %%
from IPython.display import Markdown, display

from ulma import experiments, figures, notebook, report

notebook.setup()

# %%
if recompute:
    experiments.dataset_stats(profile, datasets, results_dir=results_dir)
table = report.make_dataset_table(profile, results_dir)
display(Markdown(report.to_markdown(table)))
