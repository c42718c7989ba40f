"""The paper's claims as data, and a verdict for each computed from the stored runs.

`CLAIMS` holds one `Claim` per comparison: method A against method B on a dataset and a metric, and the
direction the paper claims for the difference A − B. `evaluate_claims(records)` takes the run records
(the JSONs under ``results/<profile>/<experiment>/``, `load_records`) and returns one row per claim with
the difference, its CI (`ulma.stats`: paired bootstrap over test prompts and seeds for per-prompt
metrics, over runs for per-run costs), n prompts, n seeds and a verdict decided by `verdict`:

* ``reproduced``: the CI lies entirely on the claimed side of 0;
* ``contradicted``: entirely on the other side;
* ``inconclusive``: the CI contains 0 (touching it counts: "A ≥ B" is tested as A > B, the conservative
  reading, and the CI is in the table for any other one);
* ``not measured (<reason>)``: a run is missing, was skipped or failed, did not train
  (`ulma.stats.did_not_train`), lacks the per-prompt results the metric needs (records from before
  ``metrics.eval.per_item`` existed), or has too few prompts/runs for an interval.

Public: `CLAIMS`, `METRICS`, `evaluate_claims` / `evaluate_claim` (rows), `write_claims` (the tables),
`reading` (a computed sentence per row, for notebooks), `estimate` (one method's metric with its CI, for
tables and figures), `verdict`. Which records stand for a method, and the did-not-train check, are
`ulma.selection`'s.

Choices, stated once:
* Metrics. Generation quality is the judge's **length-controlled win rate** against the dataset's
  chosen reply (`ulma.stats.length_controlled_win_rate`, character gap), since the raw win rate of a
  weak judge ranks reply length. QA-feedback uses the **headline preference accuracy** on held-out human
  preference pairs instead: it reads the human labels directly, where the offline QA judge (a head
  trained on such pairs, `ulma.evaluation.judge_pairs`) would add its own error. Cost uses training
  wall time and peak memory per run.
* "ULMA ≥ every baseline" is one row per baseline (not against the best baseline: picking the best
  on the same data biases that row), and such a family of k rows gets Bonferroni intervals at
  1 − 0.05/k, so that "reproduced" on every row holds at 95 % jointly. The Golden HH claim (ULMA gains
  more from better positives) is a difference of differences per baseline, in the same way, on the
  judge's absolute score of the replies to the shared test prompts: a win rate would compare each
  dataset's replies with its own (better, for Golden HH) reference reply, so HH and Golden HH win
  rates do not subtract. Its length confound cancels only as far as each method's reply lengths
  stay the same on both datasets (the table's mean reply lengths say).
* A run selected for a claim is checked for training (start vs end of its objective, `objective_endpoints`);
  the base model is exempt (it trains nothing by design).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ulma import stats
from ulma.losses import METHODS, get_method
from ulma.selection import load_records, select_runs, training_problem
from ulma.store import record_value

VERDICTS = ("reproduced", "contradicted", "inconclusive", "not measured")
FAMILY_CONFIDENCE = 0.95  # joint level of a family of rows (Bonferroni: each row at 1 − 0.05/k)
COLUMNS = ["claim", "text", "family", "dataset", "versus_dataset", "metric", "method_a", "method_b", "direction",
           "difference", "ci_low", "ci_high", "confidence", "n_prompts", "n_seeds", "verdict", "note"]


# --------------------------------------------------------------------------------------------- metrics
@dataclass(frozen=True)
class Metric:
    """How a claim's metric is read from a record.

    Per-prompt metrics: ``section`` of ``metrics.eval.per_item`` and the `columns` taken from it (each a
    function of the section returning one value per item id); `statistic` maps a (seeds, prompts, k)
    table to a number. Per-run metrics: `run_paths`, the dotted record paths of its value (first found).
    `aggregate`: the record's own scalar, shown (without CI) when per-prompt data is missing; `short`: its
    name in one-line summaries (the README's results section).
    """

    name: str
    label: str
    better: str  # "higher" | "lower"
    short: str
    section: str | None = None
    columns: tuple[Callable[[Mapping], Any], ...] = ()
    statistic: Callable[[np.ndarray], float] | None = None
    run_paths: tuple[str, ...] = ()
    aggregate: tuple[str, ...] = ()


# The LC win rate is read at a zero length gap; when fewer than this share of an arm's replies lie on one side
# of it, the reading is an extrapolation of the logistic fit and the claim's note says so (`_lc_support`)
LC_MIN_SUPPORT = 0.1
LC_EXTRAPOLATED = "LC extrapolated"


def _mean_table(table: np.ndarray) -> float:
    return float(np.mean(table[..., 0]))


def _log_ppl_table(table: np.ndarray) -> float:
    return stats.log_perplexity(table[..., 0], table[..., 1])


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("lc_win_rate", "length-controlled win rate vs the dataset's reply (judge)", "higher", "LC win rate",
           "generations", (lambda g: g["verdict"], lambda g: np.subtract(g["reply_chars"], g["reference_chars"])),
           stats.lc_statistic, aggregate=("metrics.eval.lc_win_rate",)),
    Metric("win_score", "win rate vs the dataset's reply, ties 1/2 (judge)", "higher", "win rate", "generations",
           (lambda g: g["verdict"],), _mean_table, aggregate=("metrics.eval.win_score",)),
    Metric("judge_score", "judge's score of the policy's replies", "higher", "judge score", "generations",
           (lambda g: g["score"],), _mean_table, aggregate=("metrics.eval.judge_score",)),
    Metric("preference_accuracy_headline", "preference accuracy, one rule for all methods", "higher",
           "preference accuracy", "pairs", (lambda p: p["headline"],), _mean_table,
           aggregate=("metrics.eval.preference_accuracy_headline",)),
    Metric("log_perplexity", "log perplexity of the test positives", "lower", "log perplexity", "perplexity",
           (lambda p: p["nll"], lambda p: p["tokens"]), _log_ppl_table, aggregate=("metrics.eval.perplexity",)),
    Metric("train_s", "training wall time (s)", "lower", "train s", run_paths=("timings.train_s",)),
    Metric("peak_memory_mb", "peak training memory (MiB)", "lower", "peak MiB",
           run_paths=("memory.train_peak_cuda_mb", "metrics.train.peak_memory_mb", "memory.train_peak_rss_mb")),
)}


# ---------------------------------------------------------------------------------------------- claims
@dataclass(frozen=True)
class Claim:
    """One comparison: `metric` of `method_a` minus that of `method_b` on `dataset`, claimed to be > 0
    (``direction="greater"``) or < 0 (``"less"``). `baseline_dataset`: a difference of differences,
    [A(dataset) − A(baseline_dataset)] − [B(dataset) − B(baseline_dataset)]. `labels_a` / `labels_b`:
    QA-feedback's label option of each arm (``config.train.data_options.labels``). `experiments`: where to
    look for the runs, in order of preference (None: any). `family`: rows tested together (Bonferroni)."""

    id: str
    text: str
    dataset: str
    metric: str
    method_a: str
    method_b: str
    direction: str
    experiments: tuple[str, ...] | None = None
    baseline_dataset: str | None = None
    labels_a: str | None = None
    labels_b: str | None = None
    family: str | None = None

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ValueError(f"claim {self.id}: unknown metric {self.metric!r}; known: {sorted(METRICS)}")
        if self.direction not in ("greater", "less"):
            raise ValueError(f"claim {self.id}: direction must be 'greater' or 'less', got {self.direction!r}")
        if self.baseline_dataset and METRICS[self.metric].run_paths:
            raise ValueError(f"claim {self.id}: a difference of differences needs a per-prompt metric, not "
                             f"{self.metric!r}")


BASELINES = ("sft", "rlhf", "dpo", "pointwise_dpo", "unlikelihood", "kto")


def claim_arms() -> set[tuple[str, str]]:
    """(dataset, method) of every run a claim compares, both datasets of a difference of differences: the
    runs the protocol gives more seeds (`experiments.claim_seeds`)."""
    return {(dataset, method) for c in CLAIMS for dataset in filter(None, (c.dataset, c.baseline_dataset))
            for method in (c.method_a, c.method_b)}
_HH = ("04_ulma", "03_pointwise_dpo", "05_golden_hh", "07_efficiency")

CLAIMS: tuple[Claim, ...] = (
    Claim("pointwise_dpo_ge_dpo_hh", "Point-wise DPO performs at least as well as DPO on HH (binary labels)",
          "hh", "lc_win_rate", "pointwise_dpo", "dpo", "greater", ("03_pointwise_dpo", "04_ulma")),
    *(Claim(f"ulma_ge_{b}_hh", f"ULMA beats {get_method(b).display} on HH", "hh", "lc_win_rate", "ulma", b,
            "greater", _HH, family="ulma_ge_every_baseline_hh") for b in BASELINES),
    *(Claim(f"ulma_gains_more_than_{b}_golden_hh",
            f"Better positives (Golden HH vs HH) help ULMA more than {get_method(b).display}", "golden_hh",
            "judge_score", "ulma", b, "greater", ("05_golden_hh",), baseline_dataset="hh",
            family="ulma_gains_most_golden_hh")
      for b in BASELINES),
    Claim("sft_ge_positive_dpo_positives", "On positives only, SFT does at least as well as positive DPO",
          "hh", "lc_win_rate", "sft", "positive_dpo", "greater", ("06_ablations",)),
    Claim("negative_dpo_ge_unlikelihood_negatives",
          "On negatives only, negative DPO does at least as well as unlikelihood", "hh", "lc_win_rate",
          "negative_dpo", "negative_unlikelihood", "greater", ("06_ablations",)),
    Claim("ulma_cheaper_than_rlhf_time", "ULMA trains faster than RLHF (reward model + PPO)", "hh", "train_s",
          "ulma", "rlhf", "less", ("07_efficiency", "04_ulma")),
    Claim("ulma_cheaper_than_rlhf_memory", "ULMA needs less peak memory than RLHF", "hh", "peak_memory_mb",
          "ulma", "rlhf", "less", ("07_efficiency", "04_ulma")),
    Claim("continuous_ge_binary_pointwise_dpo_qa",
          "Point-wise DPO does at least as well with continuous labels as with binary ones on QA-feedback",
          "qa_feedback", "preference_accuracy_headline", "pointwise_dpo", "pointwise_dpo", "greater",
          None, labels_a="continuous", labels_b="binary"),
)


# ---------------------------------------------------------------------------------------------- verdict
def verdict(ci_low: float, ci_high: float, direction: str) -> str:
    """``reproduced`` / ``contradicted`` / ``inconclusive`` from a CI of A − B and the claimed sign.

    Reproduced: the whole CI on the claimed side, strictly (a CI touching 0 is inconclusive). A CI that
    is NaN cannot decide: ValueError (the caller reports ``not measured``)."""
    if direction not in ("greater", "less"):
        raise ValueError(f"direction must be 'greater' or 'less', got {direction!r}")
    if not (math.isfinite(ci_low) and math.isfinite(ci_high)) or ci_low > ci_high:
        raise ValueError(f"a verdict needs a finite CI with low <= high, got [{ci_low}, {ci_high}]")
    sign = 1.0 if direction == "greater" else -1.0
    low, high = sorted((sign * ci_low, sign * ci_high))
    if low > 0:
        return "reproduced"
    if high < 0:
        return "contradicted"
    return "inconclusive"


# ------------------------------------------------------------------------------------------ evaluation
def _item_table(runs: dict[int, Mapping], metric: Metric, seeds: list[int], ids: list[str]) -> np.ndarray:
    """(seeds, prompts, k) values of `metric` for the given seeds and item ids."""
    table = np.empty((len(seeds), len(ids), len(metric.columns)))
    for s, seed in enumerate(seeds):
        section = record_value(runs[seed], f"metrics.eval.per_item.{metric.section}")
        position = {i: k for k, i in enumerate(section["ids"])}
        for c, column in enumerate(metric.columns):
            values = np.asarray(column(section), dtype=float)
            table[s, :, c] = values[[position[i] for i in ids]]
    return table


def _has_items(record: Mapping, metric: Metric) -> bool:
    section = record_value(record, f"metrics.eval.per_item.{metric.section}")
    if not isinstance(section, Mapping) or not section.get("ids"):
        return False
    try:
        return all(column(section) is not None for column in metric.columns)
    except (KeyError, TypeError):
        return False


def _aggregate(record: Mapping, metric: Metric) -> float | None:
    for path in metric.aggregate:
        value = record_value(record, path)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


def _row(claim: Claim, confidence: float, **values) -> dict[str, Any]:
    row = {"claim": claim.id, "text": claim.text, "family": claim.family or "", "dataset": claim.dataset,
           "versus_dataset": claim.baseline_dataset or "",
           "metric": claim.metric, "method_a": claim.method_a + (f" ({claim.labels_a})" if claim.labels_a else ""),
           "method_b": claim.method_b + (f" ({claim.labels_b})" if claim.labels_b else ""),
           "direction": claim.direction, "difference": math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "confidence": confidence, "n_prompts": 0, "n_seeds": 0, "verdict": "", "note": ""}
    row.update(values)
    return row


def _not_measured(claim: Claim, confidence: float, reason: str, **values) -> dict[str, Any]:
    return _row(claim, confidence, verdict=f"not measured ({reason})", **values)


def evaluate_claim(claim: Claim, records: Sequence[Mapping], *, confidence: float = stats.CONFIDENCE,
                   n_resamples: int | None = None, seed: int = 0) -> dict[str, Any]:
    """One row of the claims table (`COLUMNS`) for `claim` from `records` (module docstring)."""
    metric = METRICS[claim.metric]
    arms = [(claim.method_a, claim.dataset, claim.labels_a), (claim.method_b, claim.dataset, claim.labels_b)]
    if claim.baseline_dataset:
        arms = [arms[0], (claim.method_a, claim.baseline_dataset, claim.labels_a),
                arms[1], (claim.method_b, claim.baseline_dataset, claim.labels_b)]
    selected = []
    for method, dataset, labels in arms:
        runs, why = select_runs(records, method, dataset, labels=labels, experiments=claim.experiments)
        if why:
            return _not_measured(claim, confidence, why)
        selected.append(runs)
    problems = [p for runs in selected for r in runs.values() if (p := training_problem(r))]
    if problems:
        return _not_measured(claim, confidence, "; ".join(problems))
    if metric.run_paths:
        return _per_run(claim, metric, selected, confidence, n_resamples, seed)
    return _per_item(claim, metric, selected, confidence, n_resamples, seed)


def _combine(claim: Claim, values: Sequence[float]) -> float:
    if claim.baseline_dataset:
        return (values[0] - values[1]) - (values[2] - values[3])
    return values[0] - values[1]


def _per_run(claim, metric, selected, confidence, n_resamples, seed) -> dict[str, Any]:
    samples = []
    for runs in selected:
        values = [next((v for p in metric.run_paths if isinstance(v := record_value(r, p), (int, float))), None)
                  for r in runs.values()]
        if any(v is None for v in values):
            return _not_measured(claim, confidence, f"no {metric.name} recorded ({', '.join(metric.run_paths)})")
        samples.append(values)
    result = stats.independent_difference(samples[0], samples[1], confidence=confidence, seed=seed,
                                          **({"n_resamples": n_resamples} if n_resamples else {}))
    counts = f"{len(samples[0])} run(s) of {claim.method_a}, {len(samples[1])} of {claim.method_b}"
    values = dict(difference=result.estimate, n_seeds=result.n_seeds,
                  note=f"{counts}; means {np.mean(samples[0]):.4g} vs {np.mean(samples[1]):.4g}")
    if not math.isfinite(result.ci_low):
        return _not_measured(claim, confidence, f"an interval needs >= 2 runs of each method; {counts}", **values)
    return _row(claim, confidence, ci_low=result.ci_low, ci_high=result.ci_high,
                verdict=verdict(result.ci_low, result.ci_high, claim.direction), **values)


def _missing_items(selected: Sequence[dict[int, Mapping]], metric: Metric) -> str | None:
    missing = [f"{r.get('method')} on {r.get('dataset')} seed {s}" for runs in selected for s, r in runs.items()
               if not _has_items(r, metric)]
    if not missing:
        return None
    more = " ..." if len(missing) > 3 else ""
    return f"no per-prompt {metric.section} results in {', '.join(missing[:3])}{more}: re-evaluate the run(s)"


def _bootstrap_items(selected: Sequence[dict[int, Mapping]], metric: Metric, effect, confidence: float,
                     n_resamples: int | None, seed: int):
    """(BootstrapResult, note) of `effect` over the seeds and prompts every selected arm shares, or
    (None, why not)."""
    seeds = sorted(set.intersection(*(set(runs) for runs in selected)))
    if not seeds:
        return None, "the methods share no seed"
    sections = [record_value(runs[s], f"metrics.eval.per_item.{metric.section}") for runs in selected for s in seeds]
    common = set.intersection(*(set(sec["ids"]) for sec in sections))
    ids = [i for i in sections[0]["ids"] if i in common]
    if len(ids) < 2:
        return None, f"{len(ids)} test prompt(s) in common: an interval needs 2"
    tables = [_item_table(runs, metric, seeds, ids) for runs in selected]
    kwargs = {"n_resamples": n_resamples} if n_resamples else \
        {"n_resamples": stats.N_RESAMPLES_LC} if metric.statistic is stats.lc_statistic else {}
    result = stats.paired_bootstrap(tables, effect, confidence=confidence, seed=seed, **kwargs)
    dropped = max(len(sec["ids"]) for sec in sections) - len(ids)
    note = f"{result.resampled} resampled"
    if dropped:
        note += f"; {dropped} prompt(s) not shared by every run left out"
    if metric.statistic is stats.lc_statistic:
        note += _lc_support(selected, tables)
    return result, note


def _lc_support(selected: Sequence[dict[int, Mapping]], tables: Sequence[np.ndarray]) -> str:
    """A note when an arm's LC win rate is read at a zero length gap that few of its replies reach: the
    logistic fit then extrapolates from one side (a method whose replies are nearly all longer than the
    dataset's), so its reading leans on the fitted slope more than on its data."""
    thin = []
    for runs, table in zip(selected, tables):
        gap = table[..., 1]
        shorter, longer = float(np.mean(gap <= 0)), float(np.mean(gap >= 0))
        if min(shorter, longer) < LC_MIN_SUPPORT:
            record = next(iter(runs.values()))
            thin.append(f"{record.get('method')} on {record.get('dataset')}: {shorter:.0%} of replies no longer "
                        f"than the reference, {longer:.0%} no shorter")
    return f"; {LC_EXTRAPOLATED} ({'; '.join(thin)})" if thin else ""


def _per_item(claim, metric, selected, confidence, n_resamples, seed) -> dict[str, Any]:
    missing = _missing_items(selected, metric)
    if missing:
        aggregates = [[_aggregate(r, metric) for r in runs.values()] for runs in selected]
        note = ""
        if all(a is not None for arm in aggregates for a in arm):
            diff = _combine(claim, [float(np.mean(arm)) for arm in aggregates])
            note = f"aggregate difference without CI: {diff:+.4g}"
        return _not_measured(claim, confidence, missing, note=note)
    effect = lambda *t: _combine(claim, [metric.statistic(x) for x in t])  # noqa: E731
    result, note = _bootstrap_items(selected, metric, effect, confidence, n_resamples, seed)
    if result is None:
        return _not_measured(claim, confidence, note)
    values = dict(difference=result.estimate, n_prompts=result.n_prompts, n_seeds=result.n_seeds, note=note)
    if not (math.isfinite(result.ci_low) and math.isfinite(result.ci_high)):
        return _not_measured(claim, confidence,
                             "the statistic is undefined on these data (e.g. every length gap equal)", **values)
    return _row(claim, confidence, ci_low=result.ci_low, ci_high=result.ci_high,
                verdict=verdict(result.ci_low, result.ci_high, claim.direction), **values)


def estimate(records: Sequence[Mapping], method: str, dataset: str, metric: str, *, labels: str | None = None,
             experiments: Sequence[str] | None = None, confidence: float = stats.CONFIDENCE,
             n_resamples: int | None = None, seed: int = 0) -> dict[str, Any]:
    """One method's `metric` on `dataset` with its CI over prompts and seeds (for tables and figures:
    win rates and preference accuracies with error bars). Returns ``{"estimate", "ci_low", "ci_high",
    "confidence", "n_prompts", "n_seeds", "note"}``; without per-prompt data (or runs) the CI is NaN,
    ``estimate`` the mean of the runs' own scalars when they have one, and ``note`` says why."""
    spec = METRICS[metric]
    out = {"estimate": math.nan, "ci_low": math.nan, "ci_high": math.nan, "confidence": confidence,
           "n_prompts": 0, "n_seeds": 0, "note": ""}
    runs, why = select_runs(records, method, dataset, labels=labels, experiments=experiments)
    if why:
        return {**out, "note": why}
    problems = [p for r in runs.values() if (p := training_problem(r))]
    if spec.run_paths:
        values = [next((v for p in spec.run_paths if isinstance(v := record_value(r, p), (int, float))), None)
                  for r in runs.values()]
        values = [v for v in values if v is not None]
        return {**out, "estimate": float(np.mean(values)) if values else math.nan, "n_seeds": len(values),
                "note": "; ".join(problems + ["one value per run: no CI"])}
    missing = _missing_items([runs], spec)
    if missing:
        aggregates = [a for r in runs.values() if (a := _aggregate(r, spec)) is not None]
        return {**out, "estimate": float(np.mean(aggregates)) if aggregates else math.nan, "n_seeds": len(runs),
                "note": "; ".join(problems + [missing])}
    result, note = _bootstrap_items([runs], spec, spec.statistic, confidence, n_resamples, seed)
    if result is None:
        return {**out, "note": note}
    return {**out, "estimate": result.estimate, "ci_low": result.ci_low, "ci_high": result.ci_high,
            "n_prompts": result.n_prompts, "n_seeds": result.n_seeds, "note": "; ".join(problems + [note])}


def evaluate_claims(records: Sequence[Mapping], claims: Sequence[Claim] = CLAIMS, *,
                    n_resamples: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """One row per claim (`COLUMNS`), in the order of `claims`; a family of k rows is tested at
    1 − (1 − `FAMILY_CONFIDENCE`)/k each (Bonferroni), a lone claim at `FAMILY_CONFIDENCE`."""
    sizes: dict[str, int] = {}
    for c in claims:
        if c.family:
            sizes[c.family] = sizes.get(c.family, 0) + 1
    rows = []
    for c in claims:
        level = 1.0 - (1.0 - FAMILY_CONFIDENCE) / sizes.get(c.family, 1) if c.family else FAMILY_CONFIDENCE
        rows.append(evaluate_claim(c, records, confidence=level, n_resamples=n_resamples, seed=seed))
    return rows


# ---------------------------------------------------------------------------------------------- output
def reading(row: Mapping[str, Any]) -> str:
    """A one-sentence reading of a claims row, from its numbers (for notebooks and the README)."""
    metric = METRICS[row["metric"]]
    head = f"{row['text']}: "
    if str(row["verdict"]).startswith("not measured"):
        extra = f" ({row['note']})" if row.get("note") else ""
        return head + row["verdict"] + extra + "."
    what = (f"difference of differences ({row['dataset']} minus {row['versus_dataset']})"
            if row.get("versus_dataset") else "difference")
    sample = (f"{row['n_prompts']} test prompts x {row['n_seeds']} seed(s)" if row.get("n_prompts")
              else f"{row['n_seeds']} run(s) per method")
    a, b = (get_method(row[k]).display if row[k] in METHODS else row[k] for k in ("method_a", "method_b"))
    note = str(row.get("note") or "")
    caveat = (f" Caveat: {note[note.index(LC_EXTRAPOLATED):]}: its reading at a zero length gap leans on the "
              "fitted slope." if LC_EXTRAPOLATED in note else "")
    return (f"{head}{row['verdict']} - {metric.label} ({metric.better} is better), {a} minus {b} {what} "
            f"{row['difference']:+.3g} [{row['confidence']:.1%} CI {row['ci_low']:+.3g}, {row['ci_high']:+.3g}] "
            f"over {sample}.{caveat}")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return str(value).replace("|", "\\|")


def to_markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_claims(profile: str, results_dir: str | Path = "results", *, records: Sequence[Mapping] | None = None,
                 claims: Sequence[Claim] = CLAIMS, n_resamples: int | None = None) -> dict[str, Path]:
    """Evaluate `claims` on the profile's records and write ``results/<profile>/tables/claims.{csv,md}``."""
    rows = evaluate_claims(load_records(profile, results_dir) if records is None else records, claims,
                           n_resamples=n_resamples)
    folder = Path(results_dir) / profile / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"csv": folder / "claims.csv", "md": folder / "claims.md"}
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: ("" if isinstance(row[c], float) and math.isnan(row[c]) else row[c]) for c in COLUMNS})
    paths["md"].write_text(to_markdown(rows))
    return paths
