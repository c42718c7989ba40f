"""Tables and figures from ``results/`` alone: no model, no training.

``collect`` reads an experiment's run JSONs into a DataFrame (one row per run), ``summarize`` folds seeds
into mean and std, ``write_table`` writes ``results/<profile>/tables/<name>.{csv,md}``, and the
``figure_*`` functions draw ``figures/<profile>/*.png``; ``draw_figures`` draws every one (notebook 08).
Rows that were not measured keep their place: the tables say ``not measured: <reason>`` (a dataset that
cannot be had here), ``n/a: <reason>`` (a method that does not apply) or ``failed: <error>``; a figure
without data says so in its panel instead of disappearing.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from ulma.analysis import DATASET_COLUMNS, GRADIENT_METHODS
from ulma.catalog import EXPERIMENTS
from ulma.store import as_profile, resolve_path

# canonical metric -> where it lives in a run record (first found wins)
METRICS: dict[str, tuple[str, ...]] = {
    "perplexity": ("metrics.eval.perplexity",),
    "preference_accuracy": ("metrics.eval.preference_accuracy",),
    "win_rate": ("metrics.eval.win_rate",),
    "win": ("metrics.eval.wins",),
    "tie": ("metrics.eval.ties",),
    "lose": ("metrics.eval.losses",),
    "judge_score": ("metrics.eval.judge_score",),
    "judge_accuracy": ("metrics.eval.judge_info.accuracy",),  # the judge's held-out pairwise accuracy
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
}
# ratios of two record fields: sequences through the policy / the reference per optimizer step (a cached
# reference counts the no-grad pass that filled the cache, 0 when an earlier run filled it)
RATIOS: dict[str, tuple[str, str]] = {
    "policy_rows_per_step": ("metrics.train.policy_forward_rows", "metrics.train.global_step"),
    "reference_rows_per_step": ("metrics.train.reference_forward_rows", "metrics.train.global_step"),
}
QUALITY = ["perplexity", "preference_accuracy", "win_rate", "win", "tie", "lose", "judge_score", "judge_accuracy"]
EFFICIENCY = ["train_s", "train_loop_s", "tokens_per_s", "peak_memory_mb", "policy_rows_per_step",
              "reference_rows_per_step", "steps"]
# the columns of each experiment's table (notebooks check these: # NBVAL_CHECK_OUTPUT)
TABLE_COLUMNS: dict[str, list[str]] = {
    "03_pointwise_dpo": ["dataset", "method", "seeds", *QUALITY, "result"],
    "04_ulma": ["dataset", "method", "seeds", *QUALITY, "result"],
    "05_golden_hh": ["dataset", "method", "seeds", *QUALITY, "result"],
    "06_ablations": ["dataset", "method", "note", "beta", "c", "seeds", *QUALITY, "final_loss", "result"],
    "07_efficiency": ["dataset", "method", "seeds", *EFFICIENCY, "result"],
}
RESULT_TEXT = {"skipped": "not measured", "not_applicable": "n/a", "failed": "failed"}


# ------------------------------------------------------------------------------------------ collect
def _get(record: dict, dotted: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


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
            row[metric] = next((v for v in (_number(_get(record, p)) for p in paths) if v is not None), None)
        for metric, (num, den) in RATIOS.items():
            top, bottom = _number(_get(record, num)), _number(_get(record, den))
            row[metric] = top / bottom if top is not None and bottom else None
        for key, value in (record.get("overrides") or {}).items():
            row[f"override.{key}"] = json.dumps(value) if isinstance(value, (dict, list)) else value
        rows.append(row)
    columns = ["dataset", "method", "base_method", "seed", "status", "reason", "note", "reused_from", "file", *METRICS,
               *RATIOS]
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
        row: dict[str, Any] = {"dataset": dataset, "method": method, "note": group["note"].iloc[0] or "",
                               "seeds": len(done)}
        for metric in metrics:
            values = pd.to_numeric(done[metric], errors="coerce").dropna() if metric in done else pd.Series(dtype=float)
            row[metric] = values.mean() if len(values) else math.nan
            row[metric + "_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
        if len(done) == len(group):
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
    metrics = [c for c in columns if c in METRICS or c in RATIOS]
    table = summarize(collect(profile, experiment, results_dir), metrics)
    stds = [m + "_std" for m in metrics if m not in ("beta", "c")]
    for col in columns + stds:
        if col not in table:
            table[col] = math.nan if col != "note" else ""
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


# ------------------------------------------------------------------------------------------ figures
def _figure(nrows: int = 1, ncols: int = 1, *, width: float = 5.0, height: float = 3.6):
    """A matplotlib Figure without pyplot (no global state, no display backend needed)."""
    import seaborn as sns
    from matplotlib.figure import Figure

    sns.set_theme(style="whitegrid", context="paper")
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes.ravel()


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=9, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    return path


def _done(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    if runs.empty or metric not in runs:
        return runs.iloc[0:0]
    return runs[(runs["status"] == "done") & runs[metric].notna()]


def _missing_note(runs: pd.DataFrame) -> str:
    bad = runs[runs["status"] != "done"] if not runs.empty else runs
    notes = sorted({f"{r.dataset}/{r.method}: {RESULT_TEXT.get(r.status, r.status)}" for r in bad.itertuples()})
    return ("\n".join(notes[:6]) + (f"\n… {len(notes) - 6} more" if len(notes) > 6 else "")) if notes else ""


def _bars(ax, runs: pd.DataFrame, metric: str, *, hue: str = "dataset", title: str = "") -> None:
    import seaborn as sns

    data = _done(runs, metric)
    if data.empty:
        _empty(ax, f"{metric}: no measured runs yet")
        return
    sns.barplot(data=data, x="method", y=metric, hue=hue, errorbar="sd", ax=ax)  # mean ± std over seeds
    if data[hue].nunique() < 2 and ax.get_legend() is not None:
        ax.get_legend().remove()  # one dataset: the title says it
    ax.set_title((title or metric) + (f" ({data[hue].iloc[0]})" if data[hue].nunique() == 1 else ""))
    ax.set_xlabel("")
    ax.tick_params(axis="x", rotation=30)


def _outcomes(ax, runs: pd.DataFrame, title: str) -> None:
    """Stacked win / tie / lose fractions per method (mean over seeds)."""
    data = _done(runs, "win")
    if data.empty:
        _empty(ax, "judge win/tie/lose: no judged runs yet")
        return
    means = data.groupby("method", sort=False)[["win", "tie", "lose"]].mean()
    total = means.sum(axis=1).replace(0, math.nan)
    frac = means.div(total, axis=0)
    bottom = pd.Series(0.0, index=frac.index)
    for outcome, color in (("win", "#4c9a5b"), ("tie", "#b8b8b8"), ("lose", "#c8553d")):
        ax.bar(frac.index, frac[outcome], bottom=bottom, label=outcome, color=color)
        bottom += frac[outcome]
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction of judged prompts")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=7)
    ax.tick_params(axis="x", rotation=30)


def figure_gradients(profile: str, results_dir="results", figures_dir="figures") -> Path:
    """02: gradient weight against the log-ratio, positives and negatives (from gradient_weights.csv)."""
    import seaborn as sns

    path = resolve_path(results_dir) / _profile_name(profile) / "02_gradients" / "gradient_weights.csv"
    fig, axes = _figure(1, 2)
    if not path.exists():
        for ax in axes:
            _empty(ax, "no gradient_weights.csv yet: run notebook 02")
    else:
        data = pd.read_csv(path)
        data["sample"] = data["sample"].replace({"chosen": "positive", "rejected": "negative"})
        methods = list(dict.fromkeys(data["method"]))
        palette = dict(zip(methods, sns.color_palette("tab10", len(methods))))  # one colour per method in both panels
        for ax, sample in zip(axes, ("positive", "negative")):
            part = data[data["sample"] == sample]
            sns.lineplot(data=part, x="log_ratio", y="weight", hue="method", style="method", palette=palette,
                         hue_order=[m for m in methods if m in set(part["method"])], ax=ax)
            ax.set_yscale("symlog", linthresh=1e-3)  # weights 1 and β·σ(·) ≤ β on one axis
            ax.axhline(0, color="black", lw=0.6)
            ax.set_xlabel("log-ratio Δ = log π_θ(y|x) − log π_ref(y|x)")
            ax.set_ylabel("gradient weight −∂L/∂log π_θ(y|x)")
            beta = data["beta"].iloc[0]
            ax.set_title(f"{sample} samples (β = {beta:g}; DPO: the pair's other reply at Δ = 0)")
    return _save(fig, _figure_dir(profile, figures_dir) / "02_gradient_weights.png")


def figure_methods(profile: str, experiment: str, results_dir="results", figures_dir="figures") -> list[Path]:
    """03 / 04: judge win/tie/lose, perplexity and preference accuracy per method and dataset."""
    runs = collect(profile, experiment, results_dir)
    out_dir = _figure_dir(profile, figures_dir)
    datasets = list(dict.fromkeys(runs["dataset"])) if not runs.empty else []
    fig, axes = _figure(1, max(1, len(datasets)))
    for ax, dataset in zip(axes, datasets or [None]):
        part = runs[runs["dataset"] == dataset] if dataset else runs
        _outcomes(ax, part, f"{dataset}: judge against the dataset's chosen reply" if dataset else "judge")
        note = _missing_note(part)
        if note and _done(part, "win").empty:
            _empty(ax, note)
    paths = [_save(fig, out_dir / f"{experiment}_judge_outcomes.png")]
    for metric in ("perplexity", "preference_accuracy"):
        fig, (ax,) = _figure(width=7)
        _bars(ax, runs, metric, title=f"{metric.replace('_', ' ')} ({experiment})")
        paths.append(_save(fig, out_dir / f"{experiment}_{metric}.png"))
    return paths


def figure_golden(profile: str, results_dir="results", figures_dir="figures") -> Path:
    """05: each method on HH against Golden HH (win rate and perplexity)."""
    runs = collect(profile, "05_golden_hh", results_dir)
    fig, axes = _figure(1, 2, width=6)
    for ax, metric in zip(axes, ("win_rate", "perplexity")):
        _bars(ax, runs, metric, title=f"{metric.replace('_', ' ')}: HH vs Golden HH")
    golden = runs[(runs["dataset"] == "golden_hh") & (runs["status"] != "done")] if not runs.empty else runs
    if not golden.empty:  # say why the Golden HH bars are missing, in the figure itself
        first = golden.iloc[0]
        fig.suptitle(f"Golden HH {RESULT_TEXT.get(first['status'], first['status'])} for {len(golden)} run(s): "
                     f"{first['reason']}", fontsize=7, wrap=True)
    return _save(fig, _figure_dir(profile, figures_dir) / "05_golden_vs_hh.png")


def figure_ablations(profile: str, results_dir="results", figures_dir="figures") -> list[Path]:
    """06: positives only / negatives only (bars), and the c and β sweeps (lines)."""
    import seaborn as sns

    runs = collect(profile, "06_ablations", results_dir)
    out_dir = _figure_dir(profile, figures_dir)
    plain = runs[~runs["method"].str.contains("=", na=False)] if not runs.empty else runs
    fig, axes = _figure(1, 2)
    for ax, metric in zip(axes, ("perplexity", "win_rate")):
        _bars(ax, plain, metric, hue="note", title=f"{metric.replace('_', ' ')}: positives only / negatives only")
    paths = [_save(fig, out_dir / "06_positives_negatives.png")]
    for knob in ("c", "beta"):
        swept = runs[runs["method"].str.contains(f"@{knob}=", na=False)] if not runs.empty else runs
        fig, axes = _figure(1, 2)
        for ax, metric in zip(axes, ("perplexity", "win_rate")):
            data = _done(swept, metric)
            if data.empty:
                _empty(ax, f"{knob} sweep: no measured runs yet")
                continue
            sns.lineplot(data=data, x=knob, y=metric, hue="base_method", marker="o", errorbar="sd", ax=ax)
            ax.set_title(f"{metric.replace('_', ' ')} against {'c = β·log Z' if knob == 'c' else 'β'}")
        paths.append(_save(fig, out_dir / f"06_{knob}.png"))
    return paths


def figure_efficiency(profile: str, results_dir="results", figures_dir="figures") -> list[Path]:
    """07: cost per method, and the RLHF pipeline's stages against ULMA's single stage."""
    runs = collect(profile, "07_efficiency", results_dir)
    out_dir = _figure_dir(profile, figures_dir)
    fig, axes = _figure(1, 3)
    for ax, metric, title in zip(axes, ("train_s", "tokens_per_s", "peak_memory_mb"),
                                 ("wall time of training (s)", "tokens / s", "peak memory (MB)")):
        _bars(ax, runs, metric, title=title)
    paths = [_save(fig, out_dir / "07_efficiency.png")]
    fig, (ax,) = _figure(width=6)
    stages = pipeline_stages(profile, results_dir)
    if not stages:
        _empty(ax, "RLHF and ULMA: no measured runs yet")
    else:
        bottom: dict[str, float] = {}
        for pipeline, stage, seconds in stages:
            ax.bar(pipeline, seconds, bottom=bottom.get(pipeline, 0.0), label=f"{pipeline}: {stage}")
            bottom[pipeline] = bottom.get(pipeline, 0.0) + seconds
        ax.set_ylabel("wall time (s)")
        ax.set_title("whole pipeline: RLHF (stages) against ULMA (one stage)")
        ax.legend(fontsize=7)
    paths.append(_save(fig, out_dir / "07_pipeline.png"))
    return paths


# stage timings an RLHF run reports (ulma.rlhf; a cached reward model counts at its training time)
RLHF_STAGES = {"reward model": "reward_model.wall_time_s", "PPO": "ppo.wall_time_s"}


def pipeline_stages(profile: str, results_dir="results") -> list[tuple[str, str, float]]:
    """(pipeline, stage, seconds) of 07's RLHF and ULMA runs, mean over seeds. RLHF: its reward model and
    PPO stages plus the rest of its reported pipeline time (loading, saving); ULMA: the whole train() call."""
    folder = resolve_path(results_dir) / _profile_name(profile) / "07_efficiency"
    stages: dict[tuple[str, str], list[float]] = {}
    for path in sorted(folder.glob("*__rlhf__seed*.json")) + sorted(folder.glob("*__ulma__seed*.json")):
        record = json.loads(path.read_text())
        if record.get("status") != "done":
            continue
        train = _get(record, "metrics.train") or {}
        if record["base_method"] == "rlhf":
            parts = {s: _number(_get(train, key)) or 0.0 for s, key in RLHF_STAGES.items()}
            total = _number(train.get("wall_time_s")) or _number(_get(record, "timings.train_s")) or 0.0
            parts["loading, saving"] = max(0.0, total - sum(parts.values()))
            for stage, seconds in parts.items():
                stages.setdefault(("RLHF", stage), []).append(seconds)
        else:
            stages.setdefault(("ULMA", "one stage"), []).append(_number(_get(record, "timings.train_s")) or 0.0)
    return [(p, s, sum(v) / len(v)) for (p, s), v in stages.items()]


def _figure_dir(profile, figures_dir) -> Path:
    return resolve_path(figures_dir) / _profile_name(profile)


FIGURES: dict[str, Callable[..., Any]] = {
    "02_gradients": figure_gradients,
    "03_pointwise_dpo": lambda p, r, f: figure_methods(p, "03_pointwise_dpo", r, f),
    "04_ulma": lambda p, r, f: figure_methods(p, "04_ulma", r, f),
    "05_golden_hh": figure_golden,
    "06_ablations": figure_ablations,
    "07_efficiency": figure_efficiency,
}


def draw_figures(profile: str = "mini", results_dir: str = "results", figures_dir: str = "figures",
                 experiments: Iterable[str] | None = None) -> list[Path]:
    """Draw every figure (or those of `experiments`) from ``results/`` alone; return the PNG paths."""
    paths: list[Path] = []
    for name in experiments or FIGURES:
        out = FIGURES[name](profile, results_dir, figures_dir)
        paths += out if isinstance(out, list) else [out]
    return paths


def expected_figures(profile: str, figures_dir: str = "figures") -> list[Path]:
    """Every PNG ``draw_figures`` writes."""
    folder = _figure_dir(profile, figures_dir)
    names = ["02_gradient_weights"]
    names += [f"{e}_{m}" for e in ("03_pointwise_dpo", "04_ulma") for m in ("judge_outcomes", "perplexity", "preference_accuracy")]
    names += ["05_golden_vs_hh", "06_positives_negatives", "06_c", "06_beta", "07_efficiency", "07_pipeline"]
    return [folder / f"{n}.png" for n in names]
