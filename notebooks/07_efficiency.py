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
# # 07 · Training cost
#
# **The paper's claim (its efficiency argument).** ULMA and point-wise DPO are single-stage: with a cached
# reference they need one policy forward pass per sample, while RLHF needs a reward model, then PPO
# rollouts, value estimates and a reference model — several times the compute for the same data.
#
# **What is run.** The HH runs of every method (the same configs as notebook 04, so they are reused from it
# when it ran first; their timings are those of the runs themselves): wall time of the whole `train()`
# call, the trainer's throughput and peak memory, forward passes per step; and RLHF's stages against ULMA's
# one stage.
#
# **How to read it.** Times are from one run each on a shared CPU: differences of a few percent are noise.
# `train_s` counts model loading, the reference cache and saving; `train_loop_s` the optimizer loop only
# (for RLHF its reported pipeline time, which counts a cached reward model at its training time);
# `*_rows_per_step` are the sequences through the policy and the reference per optimizer step (0 for the
# reference when an earlier run filled its cache).
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
# Every method on HH (reused from notebook 04 when it ran first). With `train = False` (the default) nothing is trained: the cell reads the run records under
# `results/<profile>/07_efficiency/` and the notebook shows them within a minute. With `train = True` (what
# `python -m ulma reproduce` passes) the cell first prints the planned runs and their estimated time, then every run without a record is trained and evaluated — at `mini`
# tens of minutes per run on a 2-core CPU — and the table is rewritten; a record made with the same config
# is never trained twice.

# %%
experiments.run_grid(profile, "07_efficiency", datasets, methods, seeds, force=force, results_dir=results_dir, train=train)
table = report.make_table(profile, "07_efficiency", results_dir)  # written from results/ alone, like the figures
display(Markdown(report.to_markdown(table)))

# %% [markdown]
# **Quality columns.** One row per dataset and method, the mean over `seeds` finished seeds
# (`± std` when there are several). `perplexity` ↓ is that of the held-out chosen replies under the trained
# policy; `preference_accuracy` ↑ how often the method's own implicit reward (log-likelihood for SFT) ranks
# the chosen reply above the rejected one (0.5 = chance); `win_rate` ↑ and `win` / `tie` / `lose` are the
# judge's verdicts on the policy's greedy reply against the dataset's chosen reply; `judge_accuracy` is
# the judge's own agreement with held-out human labels, the ceiling on what its verdicts can tell.
# `result` says why a row has no numbers (`not measured: <reason>`, `n/a: <reason>`).

# %% [markdown]
# ## Figures: cost per method, and the whole pipeline
#
# Wall time ↓, throughput ↑ and peak memory ↓ per method (one run each: no interval); then RLHF's stages
# (reward model, PPO, loading and saving) stacked against ULMA's single stage.

# %%
fig = figures.figure_efficiency(profile, results_dir)
figures.save(fig, figures.figure_path(profile, "07_efficiency", figures_dir))
fig

# %%
fig = figures.figure_pipeline(profile, results_dir)
figures.save(fig, figures.figure_path(profile, "07_pipeline", figures_dir))
fig

# %% [markdown]
# ## Reading the result
#
# Computed from the run records above:

# %%
display(Markdown(notebook.reading(profile, "07_efficiency", results_dir)))
display(Markdown(notebook.claims_reading(profile, "07_efficiency", results_dir)))
