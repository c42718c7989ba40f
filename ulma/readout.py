"""What the figures (`ulma.figures`) and the notebooks' readings (`ulma.notebook`) read from ``results/``:
the paper's names of methods and datasets, each metric's label, direction and chance level, an
experiment's run records as one frame, and per (dataset, method) the mean with its 95 % interval —
over seeds (t interval of the mean) when a method ran more than one, otherwise over the judged prompts
or test pairs of its one run (Wilson interval of a proportion)."""
from __future__ import annotations

import math
import re
from typing import Any, Iterable

import pandas as pd
from scipy import stats

from ulma.catalog import EXPERIMENTS
from ulma.losses import METHODS
from ulma.report import RESULT_TEXT, _number, _profile_name, collect
from ulma.store import read_record, record_value, resolve_path

# the paper's names for the methods and datasets (tables keep the ids; figures and readings use these)
METHOD_NAMES = {name: method.display for name, method in METHODS.items()}
DATASET_NAMES = {"hh": "HH", "golden_hh": "Golden HH", "red_team": "Red-team", "qa_feedback": "QA-feedback"}
# axis label of each metric: unit and direction (↑ higher is better, ↓ lower is better)
LABELS = {
    "win_rate": "Win rate vs chosen reply ↑",
    "lc_win_rate": "Length-controlled win rate vs chosen reply ↑",
    "preference_accuracy": "Preference accuracy ↑",
    "preference_accuracy_headline": "Preference accuracy, log-ratio to the base model ↑",
    "perplexity": "Perplexity of chosen replies ↓",
    "train_s": "Training wall time (s) ↓",
    "tokens_per_s": "Throughput (tokens/s) ↑",
    "peak_memory_mb": "Peak memory (MB) ↓",
}
HIGHER_IS_BETTER = {"win_rate": True, "lc_win_rate": True, "preference_accuracy": True,
                    "preference_accuracy_headline": True, "perplexity": False, "train_s": False,
                    "tokens_per_s": True, "peak_memory_mb": False}
CHANCE = {"win_rate": 0.5, "lc_win_rate": 0.5, "preference_accuracy": 0.5,
          "preference_accuracy_headline": 0.5}  # a judge / a ranking that guesses
# the record fields that hold a proportion's trial count (for its Wilson interval with one seed)
TRIALS = {"win_rate": ("metrics.eval.num_generations",), "lc_win_rate": ("metrics.eval.num_generations",),
          "preference_accuracy": ("metrics.eval.preference_pairs",),
          "preference_accuracy_headline": ("metrics.eval.preference_pairs",)}


# ------------------------------------------------------------------------------------------ names
def method_name(label: Any) -> str:
    """``ulma`` → ``ULMA``; a sweep label ``ulma@c=0.5`` → ``ULMA (c = 0.5)``."""
    label = str(label)
    base, _, knob = label.partition("@")
    name = METHOD_NAMES.get(base, base.replace("_", " "))
    if knob:
        field, _, value = knob.partition("=")
        name += f" ({'β' if field == 'beta' else field} = {value})"
    return name


def dataset_name(dataset: Any) -> str:
    return DATASET_NAMES.get(str(dataset), str(dataset).replace("_", " "))


def no_paths(text: str) -> str:
    """A reason without the machine's absolute paths: only the file name stays."""
    return re.sub(r"(?<![\w.])/(?:[^\s/]+/)+([^\s/]+)", r"…/\1", str(text))


# ------------------------------------------------------------------------------------ statistics
def wilson(successes: float, trials: float, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (scipy's binomtest)."""
    result = stats.binomtest(int(round(successes)), int(trials))
    ci = result.proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def mean_ci(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and the t interval of the mean over seeds; (mean, nan, nan) for fewer than two values."""
    values = [float(v) for v in values]
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    sem = stats.sem(values)
    if sem == 0:
        return mean, mean, mean
    low, high = stats.t.interval(level, len(values) - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def runs_frame(profile, experiment: str, results_dir) -> pd.DataFrame:
    """``report.collect`` plus the trial counts of each run (for one-seed intervals)."""
    runs = collect(profile, experiment, results_dir)
    if runs.empty:
        return runs
    folder = resolve_path(results_dir) / _profile_name(profile) / EXPERIMENTS[experiment].name
    for metric, paths in TRIALS.items():
        runs[metric + "_n"] = [
            next((v for v in (_number(record_value(read_record(folder / f), p)) for p in paths) if v is not None), None)
            for f in runs["file"]]
    return runs


def summary(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (dataset, method): mean, 95 % CI (``low``, ``high``), seeds and the interval's kind
    (``seeds``: t over seeds; ``prompts``: Wilson over the one run's trials; ``none``)."""
    rows = []
    if runs.empty or metric not in runs:
        return pd.DataFrame(columns=["dataset", "method", "mean", "low", "high", "seeds", "ci"])
    done = runs[(runs["status"] == "done") & runs[metric].notna()]
    for (dataset, method), group in done.groupby(["dataset", "method"], sort=False):
        mean, low, high = mean_ci(group[metric])
        kind = "seeds" if len(group) > 1 else "none"
        trials = group.get(metric + "_n")
        if len(group) == 1 and trials is not None and pd.notna(trials.iloc[0]) and trials.iloc[0] > 0:
            low, high = wilson(mean * trials.iloc[0], trials.iloc[0])
            kind = "prompts"
        rows.append({"dataset": dataset, "method": method, "mean": mean, "low": low, "high": high,
                     "seeds": len(group), "ci": kind})
    return pd.DataFrame(rows, columns=["dataset", "method", "mean", "low", "high", "seeds", "ci"])


def not_measured(runs: pd.DataFrame, datasets: Iterable[str] | None = None) -> list[str]:
    """One line per dataset whose runs all lack results: "<Dataset>: not measured: <reason>"."""
    if runs.empty:
        return []
    out = []
    for dataset, group in runs.groupby("dataset", sort=False):
        if datasets is not None and dataset not in datasets:
            continue
        if (group["status"] == "done").any():
            continue
        first = group.iloc[0]
        out.append(f"{dataset_name(dataset)}: {RESULT_TEXT.get(first['status'], first['status'])}: "
                   f"{no_paths(first['reason'])}")
    return out


def in_table_order(experiment: str, methods: Iterable[str]) -> list[str]:
    """Methods in the experiment's table order (the base model first, unknown ones last)."""
    order = {m: i for i, m in enumerate(["base", *(label for label, _ in EXPERIMENTS[experiment].variants)])}
    return sorted(methods, key=lambda m: (order.get(m, len(order)), m))
