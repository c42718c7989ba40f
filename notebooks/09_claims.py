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
# # 09 · The paper's claims: a verdict for each
#
# **What this notebook answers.** For every claim of the paper that this artifact can test, whether the
# runs under `results/<profile>/` reproduce it: point-wise DPO ≥ DPO on HH; ULMA ≥ every baseline on HH;
# better positives (Golden HH) help ULMA most; SFT ≥ positive DPO on positives; negative DPO ≥ unlikelihood on
# negatives; ULMA cheaper than RLHF; continuous labels ≥ binary for point-wise DPO on QA-feedback.
#
# **How a verdict is computed** (`ulma.claims`, never typed by hand). Each claim is a difference of one
# metric between two methods (A − B), with a 95 % confidence interval from a paired bootstrap over test
# prompts and seeds (per-run costs: over runs). `reproduced`: the interval lies on the claimed side of 0;
# `contradicted`: on the other side; `inconclusive`: it contains 0; `not measured (reason)`: a run is
# missing, failed, did not train, or lacks the per-prompt results the metric needs. A family of rows (ULMA
# against each baseline) gets Bonferroni intervals so that the family holds at 95 % jointly. Generation
# quality is the judge's length-controlled win rate; QA-feedback uses the headline preference accuracy.
#
# **Nothing is trained here**: the notebook reads the run records that notebooks 03–07 wrote;
# `python -m ulma reproduce` writes the same table to `results/<profile>/tables/claims.csv` at its end.
# %% tags=["parameters"]
profile = "mini"         # tiny | mini | paper, or a path to a profile YAML
results_dir = "results"  # a relative path resolves against the repository root
# %%
from IPython.display import Markdown, display

from ulma import claims, notebook

notebook.setup()

# %% [markdown]
# ## The claims table
#
# One row per claim: the metric, the two methods, the difference A − B and its interval (`ci_low`,
# `ci_high` at `confidence`), how many test prompts and seeds it rests on, and the verdict.

# %%
table = notebook.claims_table(profile, results_dir)
display(Markdown(claims.to_markdown(table.to_dict("records"),
                                    ["text", "metric", "difference", "ci_low", "ci_high", "confidence",
                                     "n_prompts", "n_seeds", "verdict"])))

# %% [markdown]
# ## Reading the result
#
# One sentence per claim, computed from the row above:

# %%
display(Markdown("\n".join(f"- {claims.reading(row)}" for row in table.to_dict("records"))))
