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
# # 02 · Gradient analysis
#
# **The paper's claim (its gradient analysis of point-wise DPO and ULMA).** Write Δ = log π_θ(y|x) −
# log π_ref(y|x) for a reply's log-ratio and u = βΔ + c. The gradient of point-wise DPO on a *positive* is the
# SFT gradient scaled by β·σ(−u): it fades as the policy moves away from the reference — an implicit KL
# brake. On a *negative* it is an unlikelihood gradient scaled by β·σ(u): bounded, unlike plain unlikelihood
# (weight −1 whatever Δ). ULMA keeps SFT's weight 1 on positives (no brake: fit good demonstrations fully)
# and point-wise DPO's bounded weight on negatives. Unlike DPO's, each sample's weight depends on its own
# log-ratio only.
#
# **What is run.** The per-sample weight −∂L/∂log π_θ(y|x), computed by autograd from the package's own loss
# functions over a grid of Δ: pure math, no model, no training (seconds).
#
# **How to read the figure.** One panel per method; the green solid curve is the weight on a positive
# (chosen) reply, the red dashed one on a negative (rejected) reply; the y-axis is the *magnitude* on a log
# scale (the legend gives each sign). A flat curve at 1 is SFT-like; a curve that decays towards one side is
# the KL brake at work. The table below gives the weights at Δ = 0, where σ(0) = ½: β/2 for point-wise DPO.

# %% tags=["parameters"]
profile = "mini"         # tiny | mini | paper, or a path to a profile YAML (its β and c are used)
results_dir = "results"  # a relative path resolves against the repository root
figures_dir = "figures"  # a relative path resolves against the repository root

# %%
from ulma import experiments, figures, notebook, report

notebook.setup()

# %%
experiments.write_gradient_weights(profile, results_dir=results_dir)
fig = figures.figure_gradients(profile, results_dir)
figures.save(fig, figures.figure_path(profile, "02_gradient_weights", figures_dir))
fig

# %% [markdown]
# The weights at Δ = 0 (c = the profile's c):

# %%
print(report.weights_at(profile, 0.0, results_dir))

# %% [markdown]
# ## Reading the result
#
# The curves are the closed forms of the paper's gradient analysis: point-wise DPO's positive weight starts
# at β and decays like β·σ(−βΔ) once the policy has raised a positive above the reference, while ULMA's stays
# at 1; on negatives both are bounded by β, where unlikelihood pushes with weight 1 however unlikely the
# reply already is. `tests/test_losses.py` checks these weights against the closed forms numerically, so
# this figure is a picture of a tested fact, not an experiment.
