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
# # 06 · Ablations: positives, negatives, c = β·log Z, β
#
# **The paper's claims (its ablations).** On positives only, plain SFT does at least as well as positive DPO
# (point-wise DPO restricted to positives): the KL brake is not needed for good demonstrations. On negatives
# only, negative DPO is far better than unlikelihood, whose gradient never fades (notebook 02). The constant
# c = β·log Z(x) of point-wise DPO can be set to 0 (Z ≈ 1) safely.
#
# **What is run.** On HH: SFT and positive DPO on the positives, unlikelihood and negative DPO on the
# negatives, and point-wise DPO and ULMA swept over c and β (the profile's sweep values). A sweep point equal
# to a run of the main comparison reuses it.
#
# **Differences from the paper.** As in notebook 04 (setup table below).
# %% tags=["parameters"]
profile = "mini"         # tiny | mini | paper, or a path to a profile YAML
train = False            # False: show the committed results; True: train the runs that have none (hours on a CPU)
datasets = None          # None: the experiment's datasets at this profile
methods = None           # None: the experiment's methods (variants) at this profile
seeds = None             # None: the profile's seeds
force = False            # True: retrain runs that have results (an ISO time: those finished before it)
results_dir = "results"  # a relative path resolves against the repository root
figures_dir = "figures"  # a relative path resolves against the repository root
# %%
from IPython.display import Markdown, display

from ulma import experiments, figures, notebook, report

notebook.setup()

# %% [markdown]
# ## The setup, against the paper's
#
# This profile's settings beside the `paper` profile's (the paper's scale); `≠` marks a difference. At
# `mini` the model is far smaller than the paper's, trains on a few hundred examples for one epoch on a
# CPU, and is judged by an offline classifier instead of GPT-4: the numbers below can show whether the
# *direction* of an effect appears at this scale, not the paper's magnitudes.

# %%
notebook.setup_differences(profile, results_dir)
# %% [markdown]
# ## Runs
#
# The positive-only and negative-only variants and the c and β sweeps. With `train = False` (the default) nothing is trained: the cell reads the run records under
# `results/<profile>/06_ablations/` and the notebook shows them within a minute. With `train = True` (what
# `python -m ulma reproduce` passes) every run without a record is trained and evaluated — at `mini`
# tens of minutes per run on a 2-core CPU — and the table is rewritten; a record made with the same config
# is never trained twice.

# %%
if train:
    experiments.run_grid(profile, "06_ablations", datasets, methods, seeds, force=force, results_dir=results_dir)
    report.make_table(profile, "06_ablations", results_dir)
table = report.experiment_table(profile, "06_ablations", results_dir)
display(Markdown(report.to_markdown(table)))

# %% [markdown]
# **How to read the table.** One row per dataset and method, the mean over `seeds` finished seeds
# (`± std` when there are several). `perplexity` ↓ is that of the held-out chosen replies under the trained
# policy; `preference_accuracy` ↑ how often the method's own implicit reward (log-likelihood for SFT) ranks
# the chosen reply above the rejected one (0.5 = chance); `win_rate` ↑ and `win` / `tie` / `lose` are the
# judge's verdicts on the policy's greedy reply against the dataset's chosen reply; `judge_accuracy` is
# the judge's own agreement with held-out human labels, the ceiling on what its verdicts can tell.
# `result` says why a row has no numbers (`not measured: <reason>`, `n/a: <reason>`).

# %% [markdown]
# ## Figure: ablations
#
# Bars for the positive-only and negative-only variants (perplexity ↓, win rate ↑), lines for the sweeps.
# Until the ablations are run, the figure is one note saying so.

# %%
fig = figures.figure_ablations(profile, results_dir)
figures.save(fig, figures.figure_path(profile, "06_ablations", figures_dir))
fig

# %% [markdown]
# ## Reading the result
#
# Computed from the run records above:

# %%
display(Markdown(notebook.reading(profile, "06_ablations", results_dir)))
