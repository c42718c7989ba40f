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
# **What is run.** First a calibration of the shared learning rate and β on a validation slice of the
# training data (below). Then, on HH: the base model, SFT and positive DPO on the positives, unlikelihood and negative DPO on the
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
# **Budget.** Within this comparison every method takes the same number of optimizer steps with the same
# number of sequences per step (`experiments.budget: matched`): point-wise methods N rows per step, DPO N/2
# pairs (N sequences), SFT N positives per step for as many steps as ULMA takes — it cycles its positives —
# and RLHF as many PPO iterations of N rollouts. The paper's protocol (the same number of epochs, so SFT
# sees its positives half as often as ULMA) stays available as `--set experiments.budget=paper`; the table's
# `budget` column says which one each row used.

# %%
display(Markdown(notebook.budget_text(profile, "06_ablations", results_dir)))

# %% [markdown]
# ## Calibration: learning rate, steps and β per method family
#
# Before any comparison the protocol picks its shared hyperparameters on a **validation slice carved from
# `mini_train`** (`mini_valid`: its last tenth, which the runs, trained on its first `max_train_examples`
# rows, never see) — never on `mini_test`. Short runs (half the matched steps S) of one method per family —
# DPO (summed log-ratios), point-wise DPO (per-token-mean log-ratios; its β is also ULMA's, positive and
# negative DPO's) and SFT (learning rate only) — over the profile's grid of learning rate × β
# (`experiments.sweeps`, each method's own value always included) measure whether the objective moved
# (`loss_change`: relative change of the loss from the first to the last logged window; `result` says
# `did not train` below the thresholds of `ulma.stats.did_not_train`) and the validation perplexity ↓ and
# headline preference accuracy ↑ (no generation: the judge is for the test set). **The rule**
# (`report.calibration_choice`, the second table): per family, among the runs that trained (no
# `did not train`), the highest headline preference accuracy on `mini_valid`, then the lower validation
# perplexity, then the smaller β and learning rate; S is the matched budget itself. The values chosen go
# into the profile (`ulma/profiles/mini.yaml`, with a comment citing this table).

# %%
experiments.run_grid(profile, "06_calibration", datasets, None, seeds, force=force, results_dir=results_dir, train=train)
calibration, choice = report.calibration_tables(profile, results_dir, write=True)
if len(calibration):
    display(Markdown(report.to_markdown(calibration)))
    display(Markdown(report.to_markdown(choice)))
else:
    display(Markdown("No calibration runs recorded at this profile yet: run the notebook with `train = True`."))

# %% [markdown]
# ## Runs
#
# The positive-only and negative-only variants and the c and β sweeps. With `train = False` (the default) nothing is trained: the cell reads the run records under
# `results/<profile>/06_ablations/` and the notebook shows them within a minute. With `train = True` (what
# `python -m ulma reproduce` passes) the cell first prints the planned runs and their estimated time, then every run without a record is trained and evaluated — at `mini`
# tens of minutes per run on a 2-core CPU — and the table is rewritten; a record made with the same config
# is never trained twice.

# %%
experiments.run_grid(profile, "06_ablations", datasets, methods, seeds, force=force, results_dir=results_dir, train=train)
table = report.make_table(profile, "06_ablations", results_dir)  # written from results/ alone, like the figures
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
display(Markdown(notebook.claims_reading(profile, "06_ablations", results_dir)))
