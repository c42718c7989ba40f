"""What a notebook shows besides its figures: quiet output, the setup against the paper's, sample
generations side by side, and the closing "Reading the result" computed from the run records.

:func:`setup` is a notebook's first call (quiet output; show returned Figures inline). :func:`reading`
writes, per dataset, the best method on each metric and whether the 95 % intervals of
:mod:`ulma.figures` separate it from the next, the number of seeds, the judge's accuracy, the runs whose
loss barely moved and what was not measured: numbers and wording both come from the results.
:func:`claims_reading` adds the verdicts of the paper's claims a notebook covers (`ulma.claims`), and
:func:`claims_table` is notebook 09's table; :func:`budget_text` says how a comparison's budget was set.
"""
from __future__ import annotations

import io
import logging
import os
import re
import warnings

import pandas as pd
from matplotlib.figure import Figure

from ulma import claims, selection
from ulma.catalog import budget_of, matched_steps, sequences_per_step
from ulma.evaluation import judge_criterion
from ulma.experiments import EXPERIMENTS, as_profile, resolve_path
from ulma.readout import (CHANCE, HIGHER_IS_BETTER, LABELS, dataset_name, in_table_order, method_name, not_measured,
                          runs_frame, summary)
from ulma.report import _profile_name
from ulma.store import read_record, record_value

# ----------------------------------------------------------------------------------------- quiet
class _OncePerMessage(logging.Filter):
    """Let each distinct log message through once: a warning repeated by every run says nothing new."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = f"{record.name}:{record.getMessage()}"
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def quiet() -> None:
    """Silence what floods an executed notebook: progress bars (tqdm, transformers, datasets), the
    TqdmWarning about a missing ipywidgets, transformers' advisory warnings, and repeats of the same
    ``ulma`` log message (e.g. "skipped N malformed examples" once per run). Errors still show."""
    import tqdm

    # before anything imports tqdm.auto, which warns on import in a kernel without ipywidgets
    warnings.filterwarnings("ignore", category=tqdm.TqdmWarning)
    import datasets
    import tqdm.auto
    import transformers

    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # warning, not error: at error the Trainer swaps its (silenced) progress bar for a callback that prints
    # every log dict
    transformers.utils.logging.set_verbosity_warning()
    transformers.utils.logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()
    datasets.utils.logging.disable_progress_bar()

    class Silent(tqdm.std.tqdm):  # bars asked for explicitly (disable=False) still stay silent
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        @classmethod
        def write(cls, *args, **kwargs):  # the Trainer's per-step dicts: the run record keeps them (log_history)
            return None

    # libraries' deprecation notices about their own internals, repeated by every run: a reader cannot act
    # on them (the test suite still sees them)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft|accelerate|datasets)\b")
    tqdm.auto.tqdm = Silent  # tqdm.auto picks the widget bar in a kernel, which needs ipywidgets
    # one handler for the package's loggers (records of ulma.* propagate to it), passing each message once
    logger = logging.getLogger("ulma")
    if not any(isinstance(f, _OncePerMessage) for h in logger.handlers for f in h.filters):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_OncePerMessage())
        logger.addHandler(handler)
        logger.propagate = False


def setup() -> None:
    """The notebooks' setup cell: :func:`quiet`, and show a returned Figure as an inline PNG (the
    figures are made without pyplot, so IPython needs telling how to display them)."""
    quiet()
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with ipykernel
        return
    shell = get_ipython()
    if shell is not None:
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("png")
        shell.display_formatter.formatters["image/png"].for_type(Figure, _png_bytes)


def _png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------ setup table
SETUP_ROWS = {  # row label -> how to read it from a profile
    "model": lambda p: p.train.model,
    "weights dtype": lambda p: p.train.dtype,
    "fine-tuning": lambda p: f"LoRA r = {p.train.lora_r}" if p.train.lora_r else "full",
    "training examples per dataset": lambda p: p.train.max_train_examples or "all",
    "epochs": lambda p: p.train.num_train_epochs,
    "learning rate": lambda p: p.train.learning_rate,
    "max prompt / reply tokens": lambda p: f"{p.train.max_prompt_length} / {p.train.max_completion_length}",
    "test split": lambda p: p.eval.test_split,
    "judged prompts": lambda p: p.eval.num_generations or "all",
    "generated tokens (max)": lambda p: p.eval.max_new_tokens,
    "judge": lambda p: p.eval.judge,
    "seeds": lambda p: ", ".join(map(str, p.experiments.seeds)),
}


def setup_differences(profile, results_dir="results") -> pd.DataFrame:
    """This profile's setup beside the ``paper`` profile's (the paper's own setup), one row per setting,
    and the hardware its committed runs ran on: what a reader must know before comparing numbers."""
    mine, paper = as_profile(profile), as_profile("paper")
    table = pd.DataFrame({"setting": list(SETUP_ROWS),
                          "this run": [str(read(mine)) for read in SETUP_ROWS.values()],
                          "paper profile": [str(read(paper)) for read in SETUP_ROWS.values()]})
    devices = sorted({record_value(read_record(p) or {}, "versions.device") or "" for p in
                      (resolve_path(results_dir) / mine.name).glob("*/*__seed*.json")} - {""})
    hardware = pd.DataFrame({"setting": ["hardware"], "this run": ["; ".join(devices) or "no runs yet"],
                             "paper profile": ["8 GPUs (the paper)"]})
    table = pd.concat([table, hardware], ignore_index=True)
    table["differs"] = ["" if a == b else "≠" for a, b in zip(table["this run"], table["paper profile"])]
    return table


# ---------------------------------------------------------------------------------- generations
def sample_generations(profile, experiment: str, dataset: str = "hh", n: int = 3, results_dir="results",
                       width: int = 160) -> pd.DataFrame:
    """The first `n` test prompts with every method's greedy reply and the judge's verdict against the
    dataset's chosen reply, side by side, from the generations a run record stores (``generations``:
    the rows of the run's ``generations.jsonl``). A frame with one ``note`` column when none are stored."""
    folder = resolve_path(results_dir) / _profile_name(profile) / EXPERIMENTS[experiment].name
    replies: dict[str, dict[int, dict]] = {}
    for path in sorted(folder.glob(f"{dataset}__*__seed0.json")):
        record = read_record(path) or {}
        rows = record.get("generations") or record_value(record, "metrics.eval.generations") or []
        if rows:
            replies[record["method"]] = {int(r.get("index", i)): r for i, r in enumerate(rows)}
    if not replies:
        return pd.DataFrame({"note": [f"No sample generations stored in the {dataset_name(dataset)} run records "
                                      f"of {experiment}: the runs keep them in their run folder only."]})
    replies = {m: replies[m] for m in in_table_order(experiment, replies)}
    first = next(iter(replies.values()))
    out = []
    for index in sorted(first)[:n]:
        row = {"prompt": _short(first[index].get("prompt", ""), width),
               "chosen reply (dataset)": _short(first[index].get("reference", ""), width)}
        for method, by_index in replies.items():
            sample = by_index.get(index, {})
            verdict = (sample.get("judge") or {}).get("verdict")
            row[method_name(method)] = _short(sample.get("generation", ""), width) + (f" [{verdict}]" if verdict else "")
        out.append(row)
    return pd.DataFrame(out)


def _short(text: str, width: int) -> str:
    text = re.sub(r"\s+", " ", str(text)).strip()
    return text if len(text) <= width else text[: width - 1] + "…"


# ------------------------------------------------------------------------------------------ reading
# the protocol's headlines first (length-controlled win rate, preference accuracy by one rule for every
# method: docs/EXPERIMENTS.md); the raw win rate after them; records without a metric skip its line
_QUALITY = ["lc_win_rate", "win_rate", "preference_accuracy_headline", "perplexity"]
READ_METRICS = {
    "03_pointwise_dpo": _QUALITY,
    "04_ulma": _QUALITY,
    "05_golden_hh": _QUALITY,
    "06_ablations": ["perplexity", "lc_win_rate", "preference_accuracy_headline"],
    "07_efficiency": ["train_s", "tokens_per_s", "peak_memory_mb"],
}
WEAK_JUDGE = 0.7  # below this held-out agreement with human labels, a judge's win rate is weak evidence


def _num(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _interval(row) -> str:
    return f" [{_num(row['low'])}, {_num(row['high'])}]" if pd.notna(row["low"]) else ""


def _metric_reading(table: pd.DataFrame, metric: str) -> str:
    """Which method is best on `metric`, and whether its 95 % interval separates it from the next."""
    up = HIGHER_IS_BETTER[metric]
    ranked = table.sort_values("mean", ascending=not up).reset_index(drop=True)
    best, nxt = ranked.iloc[0], ranked.iloc[1]
    text = (f"- **{LABELS[metric]}**: best {method_name(best['method'])} {_num(best['mean'])}{_interval(best)}, "
            f"next {method_name(nxt['method'])} {_num(nxt['mean'])}{_interval(nxt)}. ")
    if pd.isna(best["low"]) or pd.isna(nxt["low"]):
        text += "No interval for one of them: the data cannot say whether the gap is real."
    elif (best["low"] > nxt["high"]) if up else (best["high"] < nxt["low"]):
        text += "Their 95 % intervals do not overlap."
    else:
        text += "Their 95 % intervals overlap: these data do not separate them."
    if metric in CHANCE and pd.notna(best["low"]) and best["low"] <= CHANCE[metric] <= best["high"]:
        text += f" Even the best is within chance ({CHANCE[metric]:g})."
    return text


def reading(profile, experiment: str, results_dir="results") -> str:
    """The closing "Reading the result" of a notebook, computed from its results (Markdown): per dataset,
    the best method on each metric and whether the 95 % intervals separate it from the next, the runs
    whose loss barely moved, the number of seeds and the judge's accuracy, and what was not measured."""
    runs = runs_frame(profile, experiment, results_dir)
    metrics = READ_METRICS[experiment]
    if runs.empty or not (runs["status"] == "done").any():
        missing = not_measured(runs)
        return ("No measured runs at this profile yet" + (": " + "; ".join(missing) if missing else "")
                + ". Run the notebook with `train = True` to train them.")
    parts = []
    for dataset in dict.fromkeys(runs["dataset"]):
        part = runs[runs["dataset"] == dataset]
        done = part[part["status"] == "done"]
        if done.empty:
            continue
        # a run whose objective did not move (ulma.selection.training_problem) is named, never ranked
        stuck = done[done["training_problem"].notna()] if "training_problem" in done else done.iloc[:0]
        done = done[~done.index.isin(stuck.index)]
        if done.empty:
            parts.append(f"**{dataset_name(dataset)}**: no run trained: "
                         + ", ".join(sorted({method_name(m) for m in stuck["method"]})) + " did not train.")
            continue
        seeds = done.groupby("method")["seed"].nunique()
        n_methods = done["method"].nunique()
        head = f"**{dataset_name(dataset)}**: {n_methods} method{'s' if n_methods > 1 else ''} measured, "
        head += f"{seeds.min()} seed{'s' if seeds.min() > 1 else ''}" + (f" (up to {seeds.max()})" if seeds.max() > seeds.min() else "")
        judged = done["win_rate_n"].dropna() if "win_rate_n" in done else pd.Series(dtype=float)
        if len(judged) and any(m in CHANCE for m in metrics):
            head += f", {int(judged.min())} judged prompts per run"
        accuracy = done["judge_accuracy"].dropna()
        if len(accuracy) and any(m in CHANCE for m in metrics):
            head += f", judge accuracy {accuracy.mean():.1%} on held-out pairs"
        lines = [head + "."]
        for metric in metrics:
            table = summary(done, metric)
            if len(table) >= 2:
                lines.append(_metric_reading(table, metric))
        judged_metrics = any(m in CHANCE for m in metrics)
        if seeds.max() < 2:
            lines.append("- One seed per method: seed-to-seed variation is not measured, so no ranking above "
                         "is a claim yet" + ("; the intervals cover only the sampling of test prompts." if judged_metrics
                                             else "; timings on a shared machine vary from run to run."))
        if judged_metrics and len(accuracy) and accuracy.mean() <= CHANCE["win_rate"]:
            lines.append(f"- The judge is no better than chance on held-out human pairs ({accuracy.mean():.1%}): "
                         f"its win rates say nothing of {judge_criterion(dataset)} here; read the preference "
                         "accuracy instead.")
        elif judged_metrics and len(accuracy) and accuracy.mean() < WEAK_JUDGE:
            lines.append(f"- The judge agrees with human labels on only {accuracy.mean():.1%} of held-out pairs "
                         f"(below {WEAK_JUDGE:.0%}): its win rates are weak evidence of {judge_criterion(dataset)}.")
        lines += _reward_model_lines(done)
        if len(stuck):
            lines.append("- **Did not train** (objective below the thresholds of `ulma.stats.did_not_train`; not "
                         "ranked above): " + ", ".join(sorted({method_name(m) for m in stuck["method"]}))
                         + ". These rows are the base model in disguise.")
        parts.append("\n".join(lines))
    missing = not_measured(runs)
    if missing:
        parts.append("Datasets without results: " + "; ".join(missing) + ".")
    return "\n\n".join(parts)


def _reward_model_lines(done: pd.DataFrame) -> list[str]:
    """RLHF's reward models on held-out human pairs, per seed: PPO follows that signal, so a reward model
    no better than chance (≤ 50 %, as for a judge) trained its policy toward no human preference at all."""
    if "reward_model_accuracy" not in done:
        return []
    rows = done[done["reward_model_accuracy"].notna()].sort_values("seed")
    if rows.empty:
        return []
    each = ", ".join(f"{a:.1%} (seed {int(s)})" for a, s in zip(rows["reward_model_accuracy"], rows["seed"]))
    line = f"- RLHF's reward model ranks held-out human pairs right in {each}"
    blind = rows[rows["reward_model_accuracy"] <= CHANCE["win_rate"]]
    if len(blind):
        seeds = ", ".join(str(int(s)) for s in blind["seed"])
        line += (f"; seed{'s' if len(blind) > 1 else ''} {seeds}: no better than chance, so that PPO run followed "
                 "a reward that does not track the human labels")
    return [line + "."]


# ------------------------------------------------------------------------------------------ claims
# the claims (ulma.claims.CLAIMS ids, by prefix) each notebook's "Reading the result" reports
NOTEBOOK_CLAIMS: dict[str, tuple[str, ...]] = {
    "03_pointwise_dpo": ("pointwise_dpo_ge_dpo_hh", "continuous_ge_binary_pointwise_dpo_qa"),
    "04_ulma": ("ulma_ge_",),
    "05_golden_hh": ("ulma_gains_more_than_",),
    "06_ablations": ("sft_ge_positive_dpo_positives", "negative_dpo_ge_unlikelihood_negatives"),
    "07_efficiency": ("ulma_cheaper_than_rlhf",),
}


def _claims_of(experiment: str) -> list:
    prefixes = NOTEBOOK_CLAIMS.get(EXPERIMENTS[experiment].name if experiment in EXPERIMENTS else experiment, ())
    return [c for c in claims.CLAIMS if any(c.id.startswith(p) for p in prefixes)]


def claims_rows(profile, experiment: str | None = None, results_dir="results") -> list[dict]:
    """The claims table's rows (`ulma.claims.evaluate_claims`) of every claim, or of those `experiment` covers."""
    records = selection.load_records(_profile_name(profile), resolve_path(results_dir))
    chosen = claims.CLAIMS if experiment is None else _claims_of(experiment)
    return claims.evaluate_claims(records, chosen) if chosen else []


def claims_reading(profile, experiment: str, results_dir="results") -> str:
    """Markdown: one computed sentence (`ulma.claims.reading`) per claim of the paper this notebook covers."""
    rows = claims_rows(profile, experiment, results_dir)
    if not rows:
        return "No claim of the paper is tested in this notebook."
    return "**The paper's claims, verdicts computed from the CIs** (`ulma.claims`):\n\n" + "\n".join(
        f"- **{row['verdict'].split(' (')[0]}** · {claims.reading(row)}" for row in rows)


def claims_table(profile, results_dir="results") -> pd.DataFrame:
    """Notebook 09's table: one row per claim (metric, difference, CI, verdict), as claims.csv holds it."""
    return pd.DataFrame(claims_rows(profile, None, results_dir), columns=claims.COLUMNS)


def budget_text(profile, experiment: str, results_dir="results") -> str:
    """How this profile sets the budget of `experiment`'s runs, and which budget the shown records used."""
    prof = as_profile(profile)
    rule = prof.experiments.budget
    if rule == "matched":
        text = (f"Budget **matched**: every method takes S = {matched_steps(prof)} optimizer steps of N = "
                f"{sequences_per_step(prof)} sequences (point-wise methods N rows, DPO N/2 pairs, SFT N positives "
                f"for S steps — it cycles its positives as often as that takes; RLHF S PPO iterations of N "
                f"rollouts).")
    else:
        text = ("Budget **paper (same epochs)**: every method trains the profile's epochs over its own rows, so "
                "a method with twice the rows takes twice the steps.")
    folder = resolve_path(results_dir) / _profile_name(profile) / (EXPERIMENTS[experiment].name if experiment in EXPERIMENTS else experiment)
    labels = sorted({budget_of(r)["label"] for p in sorted(folder.glob("*.json"))
                     if (r := read_record(p) or {}).get("status") == "done" and budget_of(r)["label"] != "untrained"})
    if labels:
        text += " The records shown were trained under: " + ", ".join(f"`{label}`" for label in labels) + "."
    return text
