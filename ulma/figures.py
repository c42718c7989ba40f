"""Figures drawn from ``results/`` alone: no model, no training.

Every ``figure_*`` function returns a matplotlib :class:`~matplotlib.figure.Figure` (restyle it, or save it
with :func:`save`, which writes PNG at 200 dpi and PDF); :func:`draw_figures` draws and saves every figure
of ``figures/<profile>/`` (notebook 08). Labels say the unit and the direction of a metric (``↑`` higher
is better, ``↓`` lower), methods carry the paper's names, bars carry 95 % CIs where the results have
them: over seeds (t interval of the mean) when a method ran more than one, otherwise over the judged
prompts or test pairs of its one run (Wilson interval of a proportion). A panel without data is replaced
by one note saying why. The names, labels, frames and intervals come from :mod:`ulma.readout`; the text a
notebook shows besides its figures is in :mod:`ulma.notebook`.
"""
from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd
from matplotlib.figure import Figure

from ulma.losses import get_method
from ulma.experiments import EXPERIMENTS, GRADIENT_METHODS, resolve_path
from ulma.readout import (CHANCE, LABELS, dataset_name, in_table_order, method_name, not_measured, runs_frame,
                          summary)
from ulma.report import _number, _profile_name
from ulma.store import read_record, record_value

DPI = 200
STYLE = {"style": "whitegrid", "context": "paper", "palette": "colorblind"}


# ------------------------------------------------------------------------------------- style, save
def new_figure(nrows: int = 1, ncols: int = 1, *, width: float = 3.4, height: float = 2.8, **kwargs):
    """A Figure without pyplot (no global figure state, no display backend), in the one seaborn style."""
    import seaborn as sns

    sns.set_theme(**STYLE)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes.ravel()


def note_figure(message: str, *, title: str = "", width: float = 6.0) -> Figure:
    """A figure that is one clear note (no empty axes): what is missing and why."""
    fig, (ax,) = new_figure(width=width, height=1.8)
    ax.axis("off")
    ax.text(0.5, 0.5, _wrap(message, 90), ha="center", va="center", fontsize=9, transform=ax.transAxes)
    if title:
        fig.suptitle(title)
    return fig


def save(fig: Figure, path: str | os.PathLike) -> list[Path]:
    """Write ``<path>.png`` (200 dpi) and ``<path>.pdf`` (any suffix of `path` is replaced); return both.
    The PDF carries no creation date, so redrawing the same results gives the same file."""
    base = Path(path)
    base = base.with_suffix("") if base.suffix in (".png", ".pdf") else base
    base.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = base.with_name(base.name + ".png"), base.with_name(base.name + ".pdf")
    fig.savefig(png, dpi=DPI, metadata={"Software": None})
    fig.savefig(pdf, metadata={"CreationDate": None, "Producer": None, "Creator": None})
    return [png, pdf]


def figure_path(profile, name: str, figures_dir: str | os.PathLike = "figures") -> Path:
    """``figures/<profile>/<name>`` (without suffix: :func:`save` adds .png and .pdf)."""
    return resolve_path(figures_dir) / _profile_name(profile) / name


def _wrap(text: str, width: int = 70) -> str:
    return "\n".join(textwrap.fill(line, width) for line in str(text).splitlines())


def _caption(fig: Figure, parts: Iterable[str]) -> None:
    """One note under the figure, wrapped to its width (constrained layout keeps it clear of the axes)."""
    text = "; ".join(p for p in parts if p)
    if text:
        fig.supxlabel(_wrap(text, int(fig.get_figwidth() * 17)), fontsize=7)


def _title(fig: Figure, text: str, fontsize: float = 10) -> None:
    fig.suptitle(_wrap(text, int(fig.get_figwidth() * 120 / fontsize)), fontsize=fontsize)


# --------------------------------------------------------------------------------------- drawing
def _bars(ax, table: pd.DataFrame, metric: str, *, hue: str = "dataset") -> None:
    """Grouped bars (one group per method, one bar per `hue` value) with their 95 % CIs."""
    import seaborn as sns

    methods = list(dict.fromkeys(table["method"]))
    groups = list(dict.fromkeys(table[hue]))
    colors = dict(zip(groups, sns.color_palette(n_colors=max(len(groups), 1))))
    width = 0.8 / len(groups)
    for j, group in enumerate(groups):
        part = table[table[hue] == group].set_index("method")
        xs = [i - 0.4 + width * (j + 0.5) for i, m in enumerate(methods) if m in part.index]
        means = [part.loc[m, "mean"] for m in methods if m in part.index]
        lows = [part.loc[m, "low"] for m in methods if m in part.index]
        highs = [part.loc[m, "high"] for m in methods if m in part.index]
        ax.bar(xs, means, width=width * 0.95, color=colors[group], label=dataset_name(group) if hue == "dataset" else group)
        err = [[max(0.0, m - lo) if pd.notna(lo) else 0.0 for m, lo in zip(means, lows)],
               [max(0.0, hi - m) if pd.notna(hi) else 0.0 for m, hi in zip(means, highs)]]
        if any(pd.notna(lo) for lo in lows):
            ax.errorbar(xs, means, yerr=err, fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
    ax.set_xticks(range(len(methods)), [method_name(m) for m in methods], rotation=30, ha="right")
    ax.set_ylabel(LABELS.get(metric, metric))
    if metric in CHANCE:
        ax.axhline(CHANCE[metric], color="0.3", ls=":", lw=1, label="chance")
        ax.set_ylim(0, 1)
    if len(groups) > 1 or metric in CHANCE:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)


def _ci_caption(tables: Iterable[pd.DataFrame]) -> str:
    kinds = {k for t in tables for k in t.get("ci", [])}
    parts = []
    if "seeds" in kinds:
        parts.append("error bars: 95 % t interval over seeds")
    if "prompts" in kinds:
        parts.append("error bars: 95 % Wilson interval over the judged prompts / test pairs of one seed")
    if "none" in kinds:
        parts.append("no error bar: one seed and no count to bound")
    return "; ".join(parts)


def _judge_caption(runs: pd.DataFrame) -> str:
    acc = runs["judge_accuracy"].dropna() if "judge_accuracy" in runs else pd.Series(dtype=float)
    return f"judge agrees with held-out human labels on {acc.mean():.1%} of pairs" if len(acc) else ""


def figure_quality(profile, experiment: str, results_dir="results") -> Figure:
    """03 / 04 / 05: win rate against the chosen reply, preference accuracy and perplexity per method,
    one bar per dataset, 95 % CIs, chance lines; datasets without results named in one note."""
    runs = runs_frame(profile, experiment, results_dir)
    metrics = ["win_rate", "preference_accuracy", "perplexity"]
    tables = {m: summary(runs, m) for m in metrics}
    missing = not_measured(runs)
    if all(t.empty for t in tables.values()):
        return note_figure("No measured runs yet." + ("\n" + "\n".join(missing) if missing else ""),
                           title=EXPERIMENTS[experiment].title)
    fig, axes = new_figure(1, 3, width=3.6, height=3.2)
    for ax, metric in zip(axes, metrics):
        if tables[metric].empty:
            ax.axis("off")
            ax.text(0.5, 0.5, f"{LABELS[metric]}:\nnot measured", ha="center", va="center", transform=ax.transAxes)
            continue
        _bars(ax, tables[metric], metric)
    shown = sorted({dataset_name(d) for t in tables.values() for d in t["dataset"]})
    _title(fig, f"{EXPERIMENTS[experiment].title} ({', '.join(shown)})")
    _caption(fig, [_ci_caption(tables.values()), _judge_caption(runs)] + [f"not shown: {m}" for m in missing])
    return fig


def figure_judge_outcomes(profile, experiment: str, results_dir="results") -> Figure:
    """03 / 04: fraction of judged prompts each method's reply wins, ties or loses against the dataset's
    chosen reply, one panel per dataset with judged runs; the others named in one note."""
    runs = runs_frame(profile, experiment, results_dir)
    done = runs[(runs["status"] == "done") & runs["win"].notna()] if not runs.empty else runs
    missing = not_measured(runs)
    if done.empty:
        return note_figure("No judged runs yet." + ("\n" + "\n".join(missing) if missing else ""),
                           title="Judge outcomes against the chosen reply")
    datasets = list(dict.fromkeys(done["dataset"]))
    fig, axes = new_figure(1, len(datasets), width=max(4.2, 7.0 / len(datasets)), height=3.4, sharey=True)
    colors = {"win": "#4c9a5b", "tie": "#b8b8b8", "lose": "#c8553d"}
    for ax, dataset in zip(axes, datasets):
        part = done[done["dataset"] == dataset]
        means = part.groupby("method", sort=False)[["win", "tie", "lose"]].mean()
        frac = means.div(means.sum(axis=1).replace(0, math.nan), axis=0)
        bottom = pd.Series(0.0, index=frac.index)
        names = [method_name(m) for m in frac.index]
        for outcome in ("win", "tie", "lose"):
            ax.bar(names, frac[outcome], bottom=bottom, label=outcome, color=colors[outcome])
            bottom += frac[outcome]
        ax.axhline(0.5, color="0.2", ls=":", lw=1)
        ax.set_ylim(0, 1)
        ax.set_title(dataset_name(dataset))
        ax.set_ylabel("Fraction of judged prompts")
        ax.tick_params(axis="x", rotation=30)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    _title(fig, "Judge verdicts: the method's reply against the dataset's chosen reply (dotted: half the prompts)")
    _caption(fig, [_judge_caption(runs)] + [f"not shown: {m}" for m in missing])
    return fig


def figure_golden(profile, results_dir="results") -> Figure:
    """05: each method trained on HH and on Golden HH (win rate, perplexity); says so when only one
    dataset has results."""
    runs = runs_frame(profile, "05_golden_hh", results_dir)
    tables = {m: summary(runs, m) for m in ("win_rate", "perplexity")}
    missing = not_measured(runs)
    if all(t.empty for t in tables.values()):
        return note_figure("No measured runs yet." + ("\n" + "\n".join(missing) if missing else ""),
                           title="HH against Golden HH")
    fig, axes = new_figure(1, 2, width=4.2, height=3.2)
    for ax, (metric, table) in zip(axes, tables.items()):
        _bars(ax, table, metric)
    shown = list(dict.fromkeys(d for t in tables.values() for d in t["dataset"]))
    if len(shown) == 1:
        _title(fig, f"{dataset_name(shown[0])} only: " + ("; ".join(missing) or "one dataset measured"), 9)
    else:
        _title(fig, "HH against Golden HH (better positives)")
    _caption(fig, [_ci_caption(tables.values())])
    return fig


def figure_ablations(profile, results_dir="results") -> Figure:
    """06: positives only (SFT vs positive DPO), negatives only (unlikelihood vs negative DPO), and the
    c and β sweeps; one note instead of the whole figure when nothing was measured."""
    runs = runs_frame(profile, "06_ablations", results_dir)
    if runs.empty or not (runs["status"] == "done").any():
        why = not_measured(runs)
        return note_figure("Ablations: no measured runs yet." + ("\n" + "\n".join(why) if why else
                           "\nRun notebook 06 with train=True."), title="Ablations")
    panels: list[tuple[str, Callable]] = []
    plain = runs[~runs["method"].str.contains("@", na=False)]
    for note in dict.fromkeys(plain["note"].fillna("")):
        part = plain[plain["note"].fillna("") == note]
        for metric in ("perplexity", "win_rate"):
            table = summary(part, metric)
            if not table.empty:
                panels.append((f"{note.capitalize() or 'Plain'}", lambda ax, t=table, m=metric: _bars(ax, t, m)))
    for knob, symbol in (("c", "c = β·log Z"), ("beta", "β")):
        swept = runs[runs["method"].str.contains(f"@{knob}=", na=False) & (runs["status"] == "done")]
        for metric in ("perplexity", "win_rate"):
            data = swept[swept[metric].notna()]
            if not data.empty:
                panels.append((f"Sweep over {symbol}", lambda ax, d=data, k=knob, m=metric, s=symbol: _sweep(ax, d, k, m, s)))
    ncols = min(4, len(panels))
    fig, axes = new_figure(math.ceil(len(panels) / ncols), ncols, width=3.4, height=3.0)
    for ax, (title, draw) in zip(axes, panels):
        draw(ax)
        ax.set_title(title)
    for ax in axes[len(panels):]:
        ax.remove()
    fig.suptitle("Ablations")
    return fig


def _sweep(ax, data: pd.DataFrame, knob: str, metric: str, symbol: str) -> None:
    for base, part in data.groupby("base_method", sort=False):
        means = part.groupby(knob)[metric].agg(["mean", "std"]).reset_index()
        ax.errorbar(means[knob], means["mean"], yerr=means["std"].fillna(0), marker="o", capsize=2,
                    label=method_name(base))
    ax.set_xlabel(symbol)
    ax.set_ylabel(LABELS[metric])
    if metric in CHANCE:
        ax.axhline(CHANCE[metric], color="0.3", ls=":", lw=1)
    ax.legend(fontsize=7, frameon=False)


def figure_efficiency(profile, results_dir="results") -> Figure:
    """07: training wall time, throughput and peak memory per method."""
    runs = runs_frame(profile, "07_efficiency", results_dir)
    metrics = ["train_s", "tokens_per_s", "peak_memory_mb"]
    tables = {m: summary(runs, m) for m in metrics}
    if all(t.empty for t in tables.values()):
        return note_figure("Training cost: no measured runs yet.", title="Training cost")
    fig, axes = new_figure(1, 3, width=3.6, height=3.2)
    for ax, metric in zip(axes, metrics):
        if tables[metric].empty:
            ax.axis("off")
            ax.text(0.5, 0.5, f"{LABELS[metric]}:\nnot recorded", ha="center", va="center", transform=ax.transAxes)
            continue
        _bars(ax, tables[metric], metric)
    fig.suptitle("Training cost per method (" + ", ".join(sorted({dataset_name(d) for t in tables.values()
                                                                   for d in t["dataset"]})) + ")")
    measured = set(runs.loc[runs["status"] == "done", "method"])
    _caption(fig, ["one run each: no interval"] + [
        f"{LABELS[m].rsplit(' ', 1)[0]} not recorded for {', '.join(method_name(x) for x in in_table_order('07_efficiency', measured - set(t['method'])))}"
        for m, t in tables.items() if measured - set(t["method"])])
    return fig


# stage timings an RLHF run reports (ulma.rlhf; a cached reward model counts at its training time)
RLHF_STAGES = {"reward model": "reward_model.wall_time_s", "PPO": "ppo.wall_time_s"}


def pipeline_stages(profile, results_dir="results") -> list[tuple[str, str, float]]:
    """(pipeline, stage, seconds) of 07's RLHF and ULMA runs, mean over seeds. RLHF: its reward model and
    PPO stages plus the rest of its reported pipeline time (loading, saving); ULMA: the whole train() call."""
    folder = resolve_path(results_dir) / _profile_name(profile) / "07_efficiency"
    found: dict[tuple[str, str], list[float]] = {}
    for path in sorted(folder.glob("*__rlhf__seed*.json")) + sorted(folder.glob("*__ulma__seed*.json")):
        record = read_record(path)
        if record.get("status") != "done":
            continue
        train = record_value(record, "metrics.train") or {}
        if all(record_value(train, key) is not None for key in RLHF_STAGES.values()):  # reward model + PPO: two stages
            parts = {s: _number(record_value(train, key)) or 0.0 for s, key in RLHF_STAGES.items()}
            total = _number(train.get("wall_time_s")) or _number(record_value(record, "timings.train_s")) or 0.0
            parts["loading, saving"] = max(0.0, total - sum(parts.values()))
            for stage, seconds in parts.items():
                found.setdefault(("RLHF (RM+PPO)", stage), []).append(seconds)
        else:
            found.setdefault(("ULMA", "one stage"), []).append(_number(record_value(record, "timings.train_s")) or 0.0)
    return [(p, s, sum(v) / len(v)) for (p, s), v in found.items()]


def figure_pipeline(profile, results_dir="results") -> Figure:
    """07: the RLHF pipeline's stages (reward model, PPO) against ULMA's single stage."""
    stages = pipeline_stages(profile, results_dir)
    if not stages:
        return note_figure("RLHF and ULMA: no measured runs yet.", title="Whole pipeline")
    fig, (ax,) = new_figure(width=5.0, height=3.2)
    bottom: dict[str, float] = {}
    for pipeline, stage, seconds in stages:
        ax.bar(pipeline, seconds, bottom=bottom.get(pipeline, 0.0), label=stage, width=0.5)
        bottom[pipeline] = bottom.get(pipeline, 0.0) + seconds
    ax.set_ylabel("Wall time of training (s) ↓")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.suptitle("Whole pipeline: RLHF's stages against ULMA's one stage")
    return fig


def figure_gradients(profile, results_dir="results") -> Figure:
    """02: |gradient weight| against the log-ratio Δ, one small panel per method, positives and negatives
    as two curves, on a log-magnitude axis (a weight of exactly 0 is named in the panel's title)."""
    path = resolve_path(results_dir) / _profile_name(profile) / "02_gradients" / "gradient_weights.csv"
    if not path.exists():
        return note_figure("No gradient_weights.csv yet: run notebook 02.", title="Gradient analysis")
    data = pd.read_csv(path)
    data["sample"] = data["sample"].replace({"chosen": "positive", "rejected": "negative"})
    methods = [m for m in GRADIENT_METHODS if m in set(data["method"])]
    ncols = 4
    fig, axes = new_figure(math.ceil(len(methods) / ncols), ncols, width=2.6, height=2.2, sharex=True, sharey=True)
    styles = {"positive": ("#2a7f62", "-"), "negative": ("#c8553d", "--")}
    lines = {}
    for ax, method in zip(axes, methods):
        zero = []
        for sample, (color, ls) in styles.items():
            part = data[(data["method"] == method) & (data["sample"] == sample)].sort_values("log_ratio")
            if part.empty:
                continue
            if (part["weight"].abs() < 1e-12).all():
                zero.append(sample)
                continue
            lines[sample] = ax.plot(part["log_ratio"], part["weight"].abs(), color=color, ls=ls, lw=1.6)[0]
        title = method_name(method) + (" (pairwise)" if get_method(method).data_kind == "pairwise" else "")
        if zero:
            title += "\n" + ", ".join(zero) + ": weight 0"
        ax.set_title(title, fontsize=8)
        ax.set_yscale("log")
    for ax in axes[len(methods):]:
        ax.remove()
    for ax in axes[:len(methods)]:
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("|gradient weight| (log)")
        if ax.get_subplotspec().is_last_row() or ax is axes[len(methods) - 1]:
            ax.set_xlabel("log-ratio Δ (nats)")
    beta = data["beta"].iloc[0] if "beta" in data else math.nan
    labels = {"positive": "positive / chosen sample", "negative": "negative / rejected sample"}
    for sample, label in labels.items():  # the sign, from the data: one per sample kind, or "varies"
        signs = {1 if w > 0 else -1 for w in data.loc[data["sample"] == sample, "weight"] if abs(w) >= 1e-12}
        labels[sample] += {frozenset({1}): " (weight > 0: likelihood raised)",
                           frozenset({-1}): " (weight < 0: likelihood lowered)"}.get(frozenset(signs), " (sign varies)")
    fig.legend([lines[s] for s in styles if s in lines], [labels[s] for s in styles if s in lines],
               loc="outside lower center", ncols=2, frameon=False, fontsize=8)
    _title(fig, f"Per-sample gradient weight −∂L/∂log π_θ(y|x) against Δ = log π_θ(y|x) − log π_ref(y|x) "
                f"(β = {beta:g}; DPO: the pair's other reply held at Δ = 0)", 9)
    return fig


# -------------------------------------------------------------------------------- training curves
# what each panel plots, per logged key (first found per method); RLHF logs PPO's own quantities
CURVES = {
    "Training loss ↓": (("loss", "loss"), ("policy_loss", "PPO policy loss")),
    "Implicit reward (β·log-ratio)": (("rewards/positive", "positives"), ("rewards/chosen", "chosen"),
                                      ("rewards/negative", "negatives"), ("rewards/rejected", "rejected"),
                                      ("rewards/margins", "margin"), ("reward", "RM reward of rollouts")),
    "KL to the reference": (("kl", "KL"), ("log_ratio", "log-ratio per token")),  # log_ratio: docs/METHODS.md
}


def training_history(record: dict) -> pd.DataFrame:
    """The per-step log of a run record (``metrics.train.log_history``) as a frame indexed by step."""
    history = record_value(record, "metrics.train.log_history") or []
    rows = [h for h in history if isinstance(h, dict) and "step" in h and "train_runtime" not in h]
    return pd.DataFrame(rows)


def figure_training_curves(profile, experiment: str, dataset: str = "hh", results_dir="results") -> Figure:
    """Per method (rows): training loss, implicit rewards of positives / negatives and their margin, and
    the KL to the reference, against the optimizer step, from each run's logged history (seed 0)."""
    folder = resolve_path(results_dir) / _profile_name(profile) / EXPERIMENTS[experiment].name
    histories = {}
    for path in sorted(folder.glob(f"{dataset}__*__seed*.json")):
        record = read_record(path)
        frame = training_history(record) if record.get("status") == "done" else pd.DataFrame()
        if not frame.empty and record["method"] not in histories:
            if {"rewards/positive", "rewards/negative"} <= set(frame) and "rewards/margins" not in frame:
                frame["rewards/margins"] = frame["rewards/positive"] - frame["rewards/negative"]
            histories[record["method"]] = frame
    if not histories:
        return note_figure(f"No logged training history for {dataset_name(dataset)} in {experiment} yet.",
                           title="Training curves")
    methods = in_table_order(experiment, histories)
    panels = list(CURVES)
    fig, axes = new_figure(len(methods), len(panels), width=3.0, height=1.7, sharex="row")
    styles = {"positives": "#2a7f62", "chosen": "#2a7f62", "negatives": "#c8553d", "rejected": "#c8553d",
              "margin": "#3b6ea8", "RM reward of rollouts": "#7a5195"}
    for r, method in enumerate(methods):
        frame = histories[method]
        for c, panel in enumerate(panels):
            ax = axes[r * len(panels) + c]
            drawn = False
            if r == 0:
                ax.set_title(panel, fontsize=8)
            for key, label in CURVES[panel]:
                if key in frame and frame[key].notna().any():
                    part = frame[["step", key]].dropna()
                    ax.plot(part["step"], part[key], marker=".", lw=1.2, label=label, color=styles.get(label, "#3b6ea8"))
                    drawn = True
                    if panel != "Implicit reward (β·log-ratio)":
                        break
            if not drawn:
                ax.axis("off")
                ax.text(0.5, 0.5, f"not logged for {method_name(method)}", ha="center", va="center",
                        fontsize=7, color="0.4", transform=ax.transAxes)
                continue
            if panel == "Implicit reward (β·log-ratio)":
                ax.axhline(0, color="0.5", lw=0.6)
            if c == 0:
                ax.set_ylabel(method_name(method), fontsize=8)
            ax.set_xlabel("optimizer step", fontsize=7)
    from matplotlib.lines import Line2D

    logged = [label for key, label in CURVES["Implicit reward (β·log-ratio)"]
              if any(key in h and h[key].notna().any() for h in histories.values())]
    groups = {"positives": "positives / chosen", "chosen": "positives / chosen", "negatives": "negatives / rejected",
              "rejected": "negatives / rejected"}  # one legend entry per colour
    entries = {groups.get(label, label): styles[label] for label in logged}
    if entries:
        fig.legend([Line2D([], [], color=c, marker=".") for c in entries.values()], [f"reward: {e}" for e in entries],
                   loc="outside lower center", ncols=len(entries), frameon=False, fontsize=7)
    _title(fig, f"Training curves on {dataset_name(dataset)}: one row per method, logged every few optimizer steps", 9)
    return fig

# ------------------------------------------------------------------------------------- every figure
FIGURES: dict[str, dict[str, Callable[[Any, Any], Figure]]] = {
    "02_gradients": {"02_gradient_weights": figure_gradients},
    **{e: {f"{e}_quality": lambda p, r, e=e: figure_quality(p, e, r),
           f"{e}_judge_outcomes": lambda p, r, e=e: figure_judge_outcomes(p, e, r),
           f"{e}_training_curves": lambda p, r, e=e: figure_training_curves(p, e, "hh", r)}
       for e in ("03_pointwise_dpo", "04_ulma")},
    "05_golden_hh": {"05_golden_vs_hh": lambda p, r: figure_golden(p, r)},
    "06_ablations": {"06_ablations": lambda p, r: figure_ablations(p, r)},
    "07_efficiency": {"07_efficiency": lambda p, r: figure_efficiency(p, r),
                      "07_pipeline": lambda p, r: figure_pipeline(p, r)},
}


def figures_for(profile, experiment: str, results_dir="results") -> dict[str, Figure]:
    """Every figure of one experiment, by file name (without suffix)."""
    return {name: draw(profile, results_dir) for name, draw in FIGURES[experiment].items()}


def draw_figures(profile="mini", results_dir="results", figures_dir="figures",
                 experiments: Iterable[str] | None = None) -> list[Path]:
    """Draw every figure (or those of `experiments`) from ``results/`` alone, save each as PNG and PDF
    under ``figures/<profile>/``, and return the PNG paths."""
    paths = []
    for experiment in experiments or FIGURES:
        for name, fig in figures_for(profile, experiment, results_dir).items():
            paths.append(save(fig, figure_path(profile, name, figures_dir))[0])
    return paths


def expected_figures(profile, figures_dir="figures") -> list[Path]:
    """Every PNG :func:`draw_figures` writes (each has a PDF beside it)."""
    return [figure_path(profile, name, figures_dir).with_suffix(".png") for names in FIGURES.values() for name in names]
