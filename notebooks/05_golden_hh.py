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
# # 05 · Golden HH against HH: does better positive data help ULMA most?
#
# **The paper's claim (its Golden HH experiment).** The paper rewrites HH's chosen replies to be harmless
# and helpful (Golden HH) and keeps the rejected ones. Better positives help every method, and ULMA most,
# because ULMA fits positives with SFT's weight and no KL brake, while DPO-style methods hold them near the
# reference.
#
# **What is run.** Every method trained on HH and on Golden HH from the same base model and evaluated the
# same way; the claim is about the *gain* from HH to Golden HH per method.
#
# **Differences from the paper.** As in notebook 04 (setup table below). Golden HH has no offline copy at
# `mini`: its rows say *not measured*, the figure says it shows HH only, and no gain can be read here.
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
# **Budget.** Within this comparison every method takes the same number of optimizer steps with the same
# number of sequences per step (`experiments.budget: matched`): point-wise methods N rows per step, DPO N/2
# pairs (N sequences), SFT N positives per step for as many steps as ULMA takes — it cycles its positives —
# and RLHF as many PPO iterations of N rollouts. The paper's protocol (the same number of epochs, so SFT
# sees its positives half as often as ULMA) stays available as `--set experiments.budget=paper`; the table's
# `budget` column says which one each row used.

# %%
display(Markdown(notebook.budget_text(profile, "05_golden_hh", results_dir)))

# %% [markdown]
# ## Runs
#
# Every method on HH and on Golden HH, each seed. With `train = False` (the default) nothing is trained: the cell reads the run records under
# `results/<profile>/05_golden_hh/` and the notebook shows them within a minute. With `train = True` (what
# `python -m ulma reproduce` passes) the cell first prints the planned runs and their estimated time, then every run without a record is trained and evaluated — at `mini`
# tens of minutes per run on a 2-core CPU — and the table is rewritten; a record made with the same config
# is never trained twice.

# %%
experiments.run_grid(profile, "05_golden_hh", datasets, methods, seeds, force=force, results_dir=results_dir, train=train)
table = report.make_table(profile, "05_golden_hh", results_dir)  # written from results/ alone, like the figures
display(Markdown(report.to_markdown(table)))

# %% [markdown]
# **How to read the table.** One row per dataset and method, the base model (untrained) first; the mean
# over `seeds` finished seeds (`± std` when there are several). `budget`, `steps` and `sequences_per_step`
# say how much each run trained (`paper (same epochs)` for a run trained by epochs: `--set experiments.budget=paper`).
# `perplexity` ↓ is that of the held-out chosen replies under the trained policy.
# `preference_accuracy_headline` ↑ ranks **every method by one rule**: a held-out pair counts as right when
# the chosen reply's token-mean log-likelihood ratio to the base model exceeds the rejected reply's (ties ½;
# the base model scores exactly 0.5); `preference_accuracy` ↑ is each method's own implicit reward (β·log-ratio,
# summed for DPO, token-mean for the point-wise methods; log-likelihood for SFT), not comparable across
# methods. `lc_win_rate` ↑ is the judge's win rate against the dataset's chosen reply read at zero length
# difference (a logistic regression of the verdict on the length gap), beside the raw `win_rate` and
# `win` / `tie` / `lose`; `truncated_fraction` is the share of replies that hit the token budget and
# `mean_reply_tokens` their mean length; `judge_accuracy` is the judge's own agreement with held-out human
# labels, the ceiling on what its verdicts can tell. `result` says `did not train` when a run's objective
# did not move past the thresholds of `ulma.stats.did_not_train` (such a row is not ranked), or why a row
# has no numbers (`not measured: <reason>`, `n/a: <reason>`).

# %% [markdown]
# ## Figure: HH against Golden HH
#
# Win rate against the chosen reply and perplexity per method, one bar per dataset with results. When only
# one dataset was measured the title says which and why.

# %%
fig = figures.figure_golden(profile, results_dir)
figures.save(fig, figures.figure_path(profile, "05_golden_vs_hh", figures_dir))
fig

# %% [markdown]
# ## Reading the result
#
# Computed from the run records above:

# %%
display(Markdown(notebook.reading(profile, "05_golden_hh", results_dir)))
display(Markdown(notebook.claims_reading(profile, "05_golden_hh", results_dir)))
