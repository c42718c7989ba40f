"""Tables and figures from ``results/`` alone: no model, no training.

``collect`` reads an experiment's run JSONs into a DataFrame (one row per run), ``summarize`` folds seeds
into mean and std, ``write_table`` writes ``results/<profile>/tables/<name>.{csv,md}``, and the
figures are `ulma.figures`' (which imports this module, never the other way round).
Rows that were not measured keep their place: the tables say ``not measured: <reason>`` (a dataset that
cannot be had here), ``n/a: <reason>`` (a method that does not apply) or ``failed: <error>``; a figure
without data says so in its panel instead of disappearing.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ulma import claims, selection, stats
from ulma.analysis import DATASET_COLUMNS, GRADIENT_METHODS
from ulma.catalog import EXPERIMENTS, RLHF_RUNNER, budget_of
from ulma.grid import NOT_LOADABLE_HERE, measured_here, plan_profile, to_train
from ulma.losses import METHODS
from ulma.store import as_profile, read_record, record_value, resolve_path

# canonical metric -> where it lives in a run record (first found wins)
METRICS: dict[str, tuple[str, ...]] = {
    "perplexity": ("metrics.eval.perplexity",),
    # one rule for every method (ulma.scoring): the token-mean log-ratio to the base model, chosen vs rejected
    "preference_accuracy_headline": ("metrics.eval.preference_accuracy_headline",),
    "preference_accuracy": ("metrics.eval.preference_accuracy",),  # the method's own implicit reward
    "lc_win_rate": ("metrics.eval.lc_win_rate",),  # length-controlled (judge verdict ~ length gap, read at 0)
    "win_rate": ("metrics.eval.win_rate",),
    "win": ("metrics.eval.wins",),
    "tie": ("metrics.eval.ties",),
    "lose": ("metrics.eval.losses",),
    "judge_score": ("metrics.eval.judge_score",),
    "judge_accuracy": ("metrics.eval.judge_info.accuracy",),  # the judge's held-out pairwise accuracy
    # RLHF: its reward model's held-out pairwise accuracy (the signal PPO follows; 0.5 is chance)
    "reward_model_accuracy": ("metrics.train.reward_model_accuracy",),
    "truncated_fraction": ("metrics.eval.truncated_fraction",),  # replies that hit max_new_tokens (no EOS)
    "mean_reply_tokens": ("metrics.eval.mean_reply_tokens",),
    "train_s": ("timings.train_s",),
    "train_loop_s": ("metrics.train.wall_time_s",),
    "eval_s": ("timings.eval_s",),
    "tokens_per_s": ("metrics.train.tokens_per_s",),
    "peak_memory_mb": ("metrics.train.peak_memory_mb", "memory.train_peak_rss_mb"),
    "peak_rss_mb": ("memory.train_peak_rss_mb",),
    "steps": ("metrics.train.global_step", "metrics.train.steps"),
    "final_loss": ("metrics.train.train_loss", "metrics.train.loss"),
    "beta": ("config.train.beta",),
    "c": ("config.train.c",),
    "learning_rate": ("config.train.learning_rate",),
}
# ratios of two record fields: sequences through the policy / the reference per optimizer step (a cached
# reference counts the no-grad pass that filled the cache, 0 when an earlier run filled it)
RATIOS: dict[str, tuple[str, str]] = {
    "policy_rows_per_step": ("metrics.train.policy_forward_rows", "metrics.train.global_step"),
    "reference_rows_per_step": ("metrics.train.reference_forward_rows", "metrics.train.global_step"),
}
QUALITY = ["perplexity", "preference_accuracy_headline", "preference_accuracy", "lc_win_rate", "win_rate", "win",
           "tie", "lose", "judge_score", "judge_accuracy", "truncated_fraction", "mean_reply_tokens"]
EFFICIENCY = ["train_s", "train_loop_s", "tokens_per_s", "peak_memory_mb", "policy_rows_per_step",
              "reference_rows_per_step", "steps"]
BUDGET = ["budget", "steps", "sequences_per_step"]  # how much each run trained (ulma.catalog: budgets)
TEXT_COLUMNS = ("note", "budget")  # per-run text, the first run's shown
# the columns of each experiment's table (tests/test_notebooks.py checks the written CSVs start with these)
TABLE_COLUMNS: dict[str, list[str]] = {
    "03_pointwise_dpo": ["dataset", "method", "seeds", *BUDGET, *QUALITY, "reward_model_accuracy", "result"],
    "04_ulma": ["dataset", "method", "seeds", *BUDGET, *QUALITY, "reward_model_accuracy", "result"],
    "05_golden_hh": ["dataset", "method", "seeds", *BUDGET, *QUALITY, "result"],
    "06_ablations": ["dataset", "method", "note", "beta", "c", "seeds", *BUDGET, *QUALITY, "final_loss", "result"],
    "06_calibration": ["dataset", "method", "learning_rate", "beta", "seeds", *BUDGET, "final_loss", "loss_change",
                       "perplexity", "preference_accuracy_headline", "preference_accuracy", "result"],
    "07_efficiency": ["dataset", "method", "seeds", *EFFICIENCY, "result"],
}
CAPTIONS = {  # what a reader needs to read the columns (notebooks show it under the table)
    "quality": "`preference_accuracy_headline` ranks every method by one rule: the chosen reply's token-mean "
               "log-likelihood ratio to the base model minus the rejected reply's (the base model scores 0.5); "
               "`preference_accuracy` is each method's own implicit reward (β·log-ratio, summed for DPO, "
               "token-mean for the point-wise methods; log-likelihood for SFT): not comparable across methods. "
               "`lc_win_rate` is the judge's win rate against the dataset's reply read at zero length gap (a "
               "logistic regression of the verdict on the character-length difference); `truncated_fraction` "
               "the share of replies that hit the token budget; `reward_model_accuracy` RLHF's reward model on "
               "held-out human pairs (the signal its PPO follows; 0.5 is chance). `budget`, `steps`, "
               "`sequences_per_step`: how much each run trained. `result`: `did not train` when the run's objective did not move past "
               "the thresholds of `ulma.stats.did_not_train` (such a row is not ranked).",
}
RESULT_TEXT = {"skipped": "not measured", "not_applicable": "n/a", "failed": "failed"}
DID_NOT_TRAIN = "did not train"


# ------------------------------------------------------------------------------------------ collect
def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def collect(profile: str, experiment: str, results_dir: str = "results") -> pd.DataFrame:
    """One row per run JSON of ``results/<profile>/<experiment>/``: identity, status and every metric."""
    name = EXPERIMENTS[experiment].name if experiment in EXPERIMENTS else experiment
    folder = resolve_path(results_dir) / _profile_name(profile) / name
    rows = []
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        row = {k: record.get(k) for k in ("dataset", "method", "base_method", "seed", "status", "reason", "note")}
        row["reused_from"] = record.get("reused_from")
        row["file"] = path.name
        for metric, paths in METRICS.items():
            row[metric] = next((v for v in (_number(record_value(record, p)) for p in paths) if v is not None), None)
        for metric, (num, den) in RATIOS.items():
            top, bottom = _number(record_value(record, num)), _number(record_value(record, den))
            row[metric] = top / bottom if top is not None and bottom else None
        for key, value in (record.get("overrides") or {}).items():
            row[f"override.{key}"] = json.dumps(value) if isinstance(value, (dict, list)) else value
        row.update(_budget_and_training(record))
        rows.append(row)
    columns = ["dataset", "method", "base_method", "seed", "status", "reason", "note", "reused_from", "file", *METRICS,
               *RATIOS, "budget", "sequences_per_step", "loss_change", "training_problem"]
    runs = pd.DataFrame(rows, columns=list(dict.fromkeys(columns + [c for r in rows for c in r])))
    if runs.empty or name not in EXPERIMENTS:
        return runs
    # the experiment's own order: its datasets, then its variants as defined (sweeps after, by value)
    exp = EXPERIMENTS[name]
    datasets = {d: i for i, d in enumerate(exp.datasets)}
    variants = {label: i for i, (label, _) in enumerate(exp.variants)}
    keys = runs.apply(lambda r: (datasets.get(r["dataset"], len(datasets)), variants.get(r["method"], len(variants)),
                                 str(r["base_method"]), str(r["method"]).split("=")[0], r["beta"] or 0, r["c"] or 0,
                                 r["seed"]), axis=1)
    return runs.iloc[sorted(range(len(runs)), key=lambda i: keys.iloc[i])].reset_index(drop=True)


def _budget_and_training(record: dict) -> dict[str, Any]:
    """A run's budget label and sequences per step (records from before budgets: the paper's same-epochs
    protocol, sequences from their config), its relative loss change and why it did not train (or None)."""
    budget = budget_of(record)
    n = budget.get("sequences_per_step")
    method = METHODS.get(record.get("base_method") or record.get("method"))
    train = record_value(record, "config.train") or {}
    if n is None and method is not None and method.runner == "offline" and "per_device_train_batch_size" in train:
        n = train["per_device_train_batch_size"] * train.get("gradient_accumulation_steps", 1)
        n *= 2 if method.data_kind == "pairwise" else 1
    if n is None and method is not None and method.runner == RLHF_RUNNER:
        n = record_value(record, "config.rlhf.rollout_batch_size")
    out = {"budget": budget["label"], "sequences_per_step": n, "loss_change": None, "training_problem": None}
    if record.get("status") != "done":
        return out
    ends = selection.objective_endpoints(record)
    if ends is not None:
        try:
            out["loss_change"] = stats.did_not_train(ends[0], ends[1]).changes.get("loss (relative)")
        except ValueError:
            pass
    out["training_problem"] = selection.training_problem(record)
    return out


def _profile_name(profile) -> str:
    if isinstance(profile, str) and ("/" in profile or profile.endswith((".yaml", ".yml"))):
        return as_profile(profile).name
    return profile if isinstance(profile, str) else profile.name


# ---------------------------------------------------------------------------------------- summarize
def summarize(runs: pd.DataFrame, metrics: Iterable[str] = QUALITY) -> pd.DataFrame:
    """Fold seeds: per (dataset, method) the mean of each metric, its std (``<metric>_std``, over seeds
    that finished, NaN for one seed), ``seeds`` (finished), and ``result`` (``ok``, or why not measured)."""
    metrics = list(metrics)
    out = []
    if runs.empty:
        return pd.DataFrame(columns=["dataset", "method", "seeds", *metrics, *(m + "_std" for m in metrics), "result"])
    order = {m: i for i, m in enumerate(dict.fromkeys(runs["method"]))}
    for (dataset, method), group in runs.groupby(["dataset", "method"], sort=False):
        done = group[group["status"] == "done"]
        row: dict[str, Any] = {"dataset": dataset, "method": method, "seeds": len(done)}
        for text in TEXT_COLUMNS:
            row[text] = (group[text].iloc[0] or "") if text in group else ""
        for metric in metrics:
            values = pd.to_numeric(done[metric], errors="coerce").dropna() if metric in done else pd.Series(dtype=float)
            row[metric] = values.mean() if len(values) else math.nan
            row[metric + "_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
        stuck = done["training_problem"].dropna() if "training_problem" in done else pd.Series(dtype=object)
        if len(done) == len(group) and len(stuck):
            row["result"] = f"{DID_NOT_TRAIN} ({len(stuck)} of {len(done)} seeds): {stuck.iloc[0]}"
        elif len(done) == len(group):
            row["result"] = "ok"
        else:
            bad = group[group["status"] != "done"].iloc[0]
            row["result"] = f"{RESULT_TEXT.get(bad['status'], bad['status'])}: {bad['reason']}"
            if len(done):
                row["result"] = f"{len(group) - len(done)} of {len(group)} seeds {row['result']}"
        out.append(row)
    table = pd.DataFrame(out)
    table["_order"] = table["method"].map(order)
    datasets = list(dict.fromkeys(runs["dataset"]))
    table["_dataset"] = table["dataset"].map({d: i for i, d in enumerate(datasets)})
    return table.sort_values(["_dataset", "_order"]).drop(columns=["_order", "_dataset"]).reset_index(drop=True)


def experiment_table(profile: str, experiment: str, results_dir: str = "results") -> pd.DataFrame:
    """The summary table of one experiment, with exactly ``TABLE_COLUMNS[experiment]`` (+ ``_std`` columns)."""
    columns = TABLE_COLUMNS[experiment]
    metrics = [c for c in columns if c in METRICS or c in RATIOS or c in ("sequences_per_step", "loss_change")]
    table = summarize(collect(profile, experiment, results_dir), metrics)
    stds = [m + "_std" for m in metrics if m not in ("beta", "c", "learning_rate", "steps", "sequences_per_step")]
    for col in columns + stds:
        if col not in table:
            table[col] = math.nan if col not in TEXT_COLUMNS else ""
    return table[columns + stds]


# ------------------------------------------------------------------------------------------- tables
def _cell(value: Any, std: Any = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        text = f"{value:.4g}"
        if std is not None and not (isinstance(std, float) and math.isnan(std)):
            text += f" ± {std:.2g}"
        return text
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub Markdown table; ``<m>_std`` columns fold into ``mean ± std``; rows that were not measured
    show their reason in ``result`` and leave the metric cells empty."""
    columns = [c for c in table.columns if not (c.endswith("_std") and c[:-4] in table.columns)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in table.iterrows():
        cells = [_cell(row[c], row.get(c + "_std")) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(table: pd.DataFrame, profile: str, name: str, results_dir: str = "results") -> dict[str, Path]:
    """Write ``results/<profile>/tables/<name>.csv`` (numbers, full precision) and ``.md``; return the paths."""
    folder = resolve_path(results_dir) / _profile_name(profile) / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = folder / f"{name}.csv", folder / f"{name}.md"
    table.to_csv(csv_path, index=False)
    md_path.write_text(to_markdown(table))
    return {"csv": csv_path, "md": md_path}


def make_table(profile: str, experiment: str, results_dir: str = "results") -> pd.DataFrame:
    """``experiment_table`` written to CSV and Markdown (what notebooks 03–07 call)."""
    table = experiment_table(profile, experiment, results_dir)
    write_table(table, profile, experiment, results_dir)
    return table


def calibration_tables(profile: str, results_dir: str = "results", *, write: bool = False):
    """(the ``06_calibration`` table, its `calibration_choice`); with `write`, both are written to
    ``tables/06_calibration.{csv,md}`` and ``tables/06_calibration_choice.{csv,md}``."""
    table = experiment_table(profile, "06_calibration", results_dir)
    choice = calibration_choice(table)
    if write and len(table):
        write_table(table, profile, "06_calibration", results_dir)
        write_table(choice, profile, "06_calibration_choice", results_dir)
    return table, choice


def calibration_choice(table: pd.DataFrame) -> pd.DataFrame:
    """The calibration rule (docs/EXPERIMENTS.md, Calibration) applied to the ``06_calibration`` table: per
    method family (the variant's method), among the runs that trained (``result`` ok) the highest headline
    preference accuracy on the validation slice, then the lower validation perplexity, then the smaller β
    and learning rate. One row per family: ``method``, ``learning_rate``, ``beta``, the two measurements,
    ``runs`` (grid points) and ``trained`` (of them); a family none of whose runs trained has no values."""
    rows = []
    if table.empty:
        return pd.DataFrame(columns=["method", "learning_rate", "beta", "preference_accuracy_headline", "perplexity",
                                     "runs", "trained"])
    family = table["method"].astype(str).str.split("@").str[0]
    for method in dict.fromkeys(family):
        group = table[family == method]
        ok = group[(group["result"] == "ok") & group["preference_accuracy_headline"].notna()]
        row = {"method": method, "learning_rate": math.nan, "beta": math.nan,
               "preference_accuracy_headline": math.nan, "perplexity": math.nan, "runs": len(group), "trained": len(ok)}
        if len(ok):
            ranked = ok.assign(_acc=-ok["preference_accuracy_headline"], _ppl=ok["perplexity"].fillna(math.inf))
            best = ranked.sort_values(["_acc", "_ppl", "beta", "learning_rate"], kind="mergesort").iloc[0]
            row.update({k: best[k] for k in ("learning_rate", "beta", "preference_accuracy_headline", "perplexity")})
        rows.append(row)
    return pd.DataFrame(rows)


DATASET_TABLE_COLUMNS = DATASET_COLUMNS


def make_dataset_table(profile: str, results_dir: str = "results") -> pd.DataFrame:
    """Notebook 01's table from ``results/<profile>/01_datasets/dataset_stats.json``, written to CSV/Markdown."""
    path = resolve_path(results_dir) / _profile_name(profile) / "01_datasets" / "dataset_stats.json"
    table = pd.DataFrame(json.loads(path.read_text())["rows"], columns=DATASET_COLUMNS)
    write_table(table, profile, "01_datasets", results_dir)
    return table


def weights_at(profile: str, log_ratio: float = 0.0, results_dir: str = "results") -> str:
    """Notebook 02's check: each method's gradient weight at one log-ratio, from gradient_weights.csv."""
    path = resolve_path(results_dir) / _profile_name(profile) / "02_gradients" / "gradient_weights.csv"
    data = pd.read_csv(path)
    at = data[(data["log_ratio"] - log_ratio).abs() < 1e-9]
    lines = [f"{'method':22s} {'sample':9s} weight"]
    for method in GRADIENT_METHODS:
        for row in at[at["method"] == method].itertuples():
            lines.append(f"{method:22s} {row.sample:9s} {round(row.weight, 4) + 0.0:+.4f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- results summary
SUMMARY_FILE = "summary.md"
VERDICTS = ("reproduced", "contradicted", "inconclusive", "not measured")


def grid_progress(profile: str, results_dir: str = "results") -> dict[str, Any]:
    """How much of the profile's grid has a record of its current config (`ulma.grid.plan_profile`): planned runs,
    done runs (those skipped for their dataset count as done: nothing to train), their recorded compute
    (train + eval seconds; reused runs counted once, where they ran) and the devices they ran on; and what is
    left: ``to_train`` runs (a run several experiments share counted once, as `reproduce --plan` counts it),
    ``estimate_s`` their estimated time from the measured costs (`ulma.grid.plan`), ``unknown`` how many of
    them have no estimate."""
    prof = as_profile(profile)
    planned = done = 0
    seconds, devices = 0.0, set()
    rows = plan_profile(prof, results_dir)
    todo = {row["config_hash"]: row["estimate_s"] for row in to_train(rows)}
    for row in rows:
        planned += 1
        if not row["done"]:
            continue
        done += 1
        record = read_record(row["path"]) or {}
        if measured_here(record):
            timings = record["timings"]
            seconds += float(timings.get("train_s") or 0.0) + float(timings.get("eval_s") or 0.0)
            devices.add(record_value(record, "versions.device") or "?")
    known = [t for t in todo.values() if t is not None]
    return {"planned": planned, "done": done, "compute_s": seconds, "devices": sorted(devices),
            "to_train": len(todo), "estimate_s": sum(known), "unknown": len(todo) - len(known)}


def results_summary(profile: str, results_dir: str = "results") -> str:
    """The README's results section: the verdict counts of ``tables/claims.csv``, each measured claim with
    its effect and CI, and how much of the grid is done, in how much compute, on which hardware."""
    name = _profile_name(profile)
    tables = resolve_path(results_dir) / name / "tables"
    rows = pd.read_csv(tables / "claims.csv").to_dict("records")
    counts = {v: sum(str(r["verdict"]).startswith(v) for r in rows) for v in VERDICTS}
    progress = grid_progress(profile, results_dir)
    # a claim whose runs were recorded as not runnable here (no offline copy of their data) stays unmeasured
    # on this machine; the others wait for runs the grid has not trained yet
    unmeasured = [str(r["verdict"]) for r in rows if str(r["verdict"]).startswith("not measured")]
    no_data = sum(NOT_LOADABLE_HERE in v for v in unmeasured)
    why = (f" ({no_data} for want of an offline copy of their data, {len(unmeasured) - no_data} waiting for runs)"
           if unmeasured else "")
    lines = [f"[`claims.csv`](results/{name}/tables/claims.md): {len(rows)} claims of the paper, each with a "
             "verdict computed from bootstrap CIs over prompts and seeds: "
             + ", ".join(f"**{counts[v]} {v}**" for v in VERDICTS) + why + "."]
    measured = [r for r in rows if not str(r["verdict"]).startswith("not measured")]
    if measured:
        # the protocol's seeds for a claim's runs (docs/EXPERIMENTS.md, Statistics); a verdict on fewer is
        # one the grid's remaining seeds may still change, and the table says so
        prof = as_profile(profile).experiments
        planned = len(set(prof.seeds) | set(prof.claim_seeds))
        seeds = [int(r["n_seeds"]) if pd.notna(r.get("n_seeds")) else 0 for r in measured]
        extrapolated = [claims.LC_EXTRAPOLATED in str(r.get("note", "")) for r in measured]
        lines += ["", "| claim | verdict | seeds | difference [CI] |", "|---|---|---|---|"]
        lines += [f"| {r['text']} | {r['verdict']}{' †' if x else ''} | {n} of {planned} | "
                  f"{claims.METRICS[r['metric']].short} {r['difference']:+.3g} "
                  f"[{r['ci_low']:+.3g}, {r['ci_high']:+.3g}] |" for r, n, x in zip(measured, seeds, extrapolated)]
        notes = []
        if min(seeds) < planned:
            notes.append(f"A verdict on fewer than the protocol's {planned} seeds is provisional.")
        if any(extrapolated):
            notes.append(f"† LC win rate extrapolated: under {claims.LC_MIN_SUPPORT:.0%} of one arm's replies "
                         "lie on one side of a zero length gap.")
        lines += ["", " ".join(notes)] if notes else []
    hardware = "; ".join(progress["devices"]) or "none yet"
    left = "nothing is left to train"
    if progress["to_train"]:
        unknown = f", {progress['unknown']} of them of unknown cost" if progress["unknown"] else ""
        left = (f"{progress['to_train']} runs are left to train, ≈ {progress['estimate_s'] / 3600:.1f} h on the same "
                f"hardware{unknown} (estimated from the measured costs of these records; "
                "`python -m ulma reproduce --plan` lists them)")
    elsewhere = progress["planned"] - progress["done"] - progress["to_train"]
    if elsewhere:  # e.g. Golden HH: no offline copy of its data; its rows say `not measured`, and why
        left += (f"; the other {elsewhere} cannot run here (`python -m ulma reproduce --plan` says why) and show "
                 "as `not measured`")
    lines += ["", f"Grid: {progress['done']} of {progress['planned']} planned runs have a record of the current "
              f"protocol ({progress['compute_s'] / 3600:.1f} h of compute on {hardware}); {left}. "
              "`make reproduce` trains the runs without a record and rewrites this section."]
    return "\n".join(lines) + "\n"


def write_summary(profile: str, results_dir: str = "results", readme: str | Path | None = None) -> Path:
    """Write `results_summary` to ``tables/summary.md`` and, when `readme` holds the markers
    ``<!-- results:<profile> -->`` … ``<!-- /results:<profile> -->``, between them."""
    name = _profile_name(profile)
    text = results_summary(profile, results_dir)
    path = resolve_path(results_dir) / name / "tables" / SUMMARY_FILE
    path.write_text(text)
    if readme is not None and Path(readme).exists():
        start, end = f"<!-- results:{name} -->\n", f"<!-- /results:{name} -->"
        content = Path(readme).read_text()
        if start in content and end in content:
            head, rest = content.split(start, 1)
            Path(readme).write_text(head + start + text + end + rest.split(end, 1)[1])
    return path
