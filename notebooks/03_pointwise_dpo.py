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
# # 03 · Point-wise DPO against DPO and RLHF
#
# **The paper's claim (its comparison of point-wise DPO with RLHF and DPO).** When feedback is point-wise,
# point-wise DPO — which scores each reply on its own label instead of a chosen/rejected pair — does at
# least as well as pairwise DPO and RLHF (reward model + PPO) on binary labels (HH), and, unlike DPO, it
# applies directly to continuous labels (red-team's harmlessness scores, QA-feedback's graded answers).
#
# **What is run.** DPO, RLHF and point-wise DPO, each trained from the same base model on the profile's
# datasets (HH; red-team and QA-feedback with their continuous labels), then evaluated the same way:
# perplexity of held-out chosen replies, preference accuracy on held-out pairs, and a judge's verdict on
# greedy replies to test prompts. DPO has no pairs on red-team: that row is `n/a`.
#
# **Differences from the paper.** Smaller model, LoRA, a few hundred training examples, one epoch, an
# offline judge instead of GPT-4 (a head on sentence embeddings trained on human pairs: HH's for harmlessness,
# QA-feedback's own for its answers), CPU, the profile's seeds (at `mini` three for the runs a claim compares,
# one for the rest; the `seeds` column counts the finished ones) — the table below lists each setting.
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
display(Markdown(notebook.budget_text(profile, "03_pointwise_dpo", results_dir)))

# %% [markdown]
# ## Runs
#
# DPO, RLHF and point-wise DPO on each dataset and seed; on QA-feedback also point-wise DPO on the binary
# view (`pointwise_dpo@labels=binary`: the corrected answer 1, an erroneous prediction 0), which the
# continuous-versus-binary claim compares with the continuous run. With `train = False` (the default) nothing
# is trained: the cell reads the run records under `results/<profile>/03_pointwise_dpo/` and the notebook
# shows them within a minute. With `train = True` (what `python -m ulma reproduce` passes) the cell first
# prints the planned runs and their estimated time, then every run without a record is trained and
# evaluated — at `mini` tens of minutes per run on a 2-core CPU — and the table is rewritten; a record made
# with the same config is never trained twice.

# %%
experiments.run_grid(profile, "03_pointwise_dpo", datasets, methods, seeds, force=force, results_dir=results_dir, train=train)
table = report.make_table(profile, "03_pointwise_dpo", results_dir)  # written from results/ alone, like the figures
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
# ## Figure: quality per method
#
# Win rate against the chosen reply, preference accuracy and perplexity, one bar per dataset with results.
# Error bars are 95 % intervals: over seeds when a method ran several, otherwise over the judged prompts
# (win rate) or test pairs (preference accuracy) of its one run; the dotted line is chance (0.5).
# Perplexity has no interval with one seed.

# %%
fig = figures.figure_quality(profile, "03_pointwise_dpo", results_dir)
figures.save(fig, figures.figure_path(profile, "03_pointwise_dpo_quality", figures_dir))
fig

# %% [markdown]
# ## Figure: the judge's verdicts
#
# The fraction of judged prompts on which the method's reply wins, ties or loses against the dataset's
# chosen reply. Datasets without judged runs are named under the figure instead of drawn empty.

# %%
fig = figures.figure_judge_outcomes(profile, "03_pointwise_dpo", results_dir)
figures.save(fig, figures.figure_path(profile, "03_pointwise_dpo_judge_outcomes", figures_dir))
fig

# %% [markdown]
# ## Figure: training curves
#
# Per method (one row each), from the history each run logs every few optimizer steps: the training loss,
# the implicit rewards β·Δ of positives (chosen) and negatives (rejected) and their margin, and the KL to
# the reference where the method logs it (KTO's reference point, PPO's penalty). A loss that does not move
# and rewards that stay near 0 mean the run barely left the base model.

# %%
fig = figures.figure_training_curves(profile, "03_pointwise_dpo", "hh", results_dir)
figures.save(fig, figures.figure_path(profile, "03_pointwise_dpo_training_curves", figures_dir))
fig

# %% [markdown]
# ## Sample generations
#
# The first test prompts with every method's greedy reply side by side, and the judge's verdict against
# the dataset's chosen reply in brackets.

# %%
notebook.sample_generations(profile, "03_pointwise_dpo", "hh", n=3, results_dir=results_dir)

# %% [markdown]
# ## Reading the result
#
# Computed from the run records above (best method per metric, whether the 95 % intervals separate it
# from the next, seeds, the judge's accuracy, runs whose loss barely moved, what was not measured):

# %%
display(Markdown(notebook.reading(profile, "03_pointwise_dpo", results_dir)))
display(Markdown(notebook.claims_reading(profile, "03_pointwise_dpo", results_dir)))
