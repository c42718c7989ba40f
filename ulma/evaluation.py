"""`evaluate_run`: the held-out metrics of `ulma.scoring` (perplexity, preference accuracy, greedy
generations) plus a judge's verdicts (`ulma.judges`) for a run folder (docs/DESIGN.md, Runs).

It writes ``generations.jsonl`` and merges ``{"eval": ...}`` into ``metrics.json``, with per-item lists
(``per_item``) keyed by stable prompt ids (`ulma.scoring.item_ids`) for paired statistics later
(`ulma.stats`). Metric definitions: docs/EXPERIMENTS.md, Metrics.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ulma import data as _data
from ulma.batching import length_sorted_batches, padded_fraction, tokenize_dataset
from ulma.config import profile_from_dict
from ulma.files import atomic_write, portable_path
from ulma.judges import VERDICTS, Judge, get_judge
from ulma.losses import get_method
from ulma.models import load_model_and_tokenizer
from ulma.runs import RunFolder, load_trained, resolve_data_dir
from ulma.scoring import (HEADLINE_RULE, as_rows, batch_sequence_lengths, generate, item_ids, model_device,
                          preference_accuracy, ranking_for, reference_cache_path, sequence_nll)
from ulma.stats import VERDICT_VALUE, length_controlled_win_rate

logger = logging.getLogger(__name__)

GENERATIONS_FILE = "generations.jsonl"
METRICS_FILE = "metrics.json"
# the protocol wants >= 95 % of replies to finish at EOS within the token budget
MAX_TRUNCATED_FRACTION = 0.05
# generations kept as text in the eval section (results JSON, key ``generations``, the rows of
# generations.jsonl that `ulma.notebook.sample_generations` reads), so that notebooks can show the same
# prompts' replies of every method side by side from results/ alone (the full set: generations.jsonl)
NUM_SAMPLES = 8


def _source_field(dataset: str, name: str):
    """A field of `dataset`'s `ulma.data.Source`; a dataset of the user's own files (no built-in source)
    takes the field's default."""
    source = _data.SOURCES.get(str(dataset))
    return getattr(source, name) if source is not None else _data.Source.__dataclass_fields__[name].default


def judge_criterion(dataset: str) -> str:
    """What a judge rates on `dataset` (`ulma.data.Source.criterion`): helpfulness on QA-feedback, else
    harmlessness (HH, Golden HH, red-team, and a dataset of the user's own files)."""
    return _source_field(dataset, "criterion")


def judge_pairs(dataset: str) -> str:
    """The built-in dataset whose human pairs train the offline MiniLM judge of a `dataset` run
    (`ulma.data.Source.judge_pairs`): QA-feedback's own for QA-feedback, else HH's."""
    return _source_field(dataset, "judge_pairs")


# --------------------------------------------------------------------------------------------- runs
def judge_options(name: str, *, dataset: str, profile, data_dir: str | None) -> dict[str, Any]:
    """The options `evaluate_run` passes to `ulma.judges.get_judge(name, ...)` for a run.

    ``llm``: the criterion (helpfulness for QA-feedback, else harmlessness); ``reward_model``: the profile's
    ``eval.judge_model``; ``minilm_harmlessness``: the human pairs of `judge_pairs` (QA-feedback's own for a
    QA-feedback run, else HH's) in the profile's train / test splits under the run's data root.
    A profile's ``eval.judge_options`` (when its EvalConfig has that field) come last.
    """
    options: dict[str, Any] = {}
    if name == "llm":
        options = {"criterion": judge_criterion(dataset)}
    elif name == "reward_model":
        options = {"model": profile.eval.judge_model}
    elif name == "minilm_harmlessness":
        options = {"data_dir": data_dir, "train_split": profile.train.train_split,
                   "test_split": profile.eval.test_split, "dataset": judge_pairs(dataset)}
    return {**options, **(getattr(profile.eval, "judge_options", None) or {})}


def _resolve_judge(judge, *, dataset: str, profile, data_dir: str | None):
    if isinstance(judge, Judge):
        return judge
    name = profile.eval.judge if judge is None else judge
    if name in (None, "", "none", False):
        return None
    return get_judge(name, **judge_options(name, dataset=dataset, profile=profile, data_dir=data_dir))


def _load(dataset: str, view: str, split: str, data_dir, options: dict, limit: int | None):
    """A test view, cut to `limit` rows, and how many malformed source rows were skipped."""
    rows = _data.load(dataset, view, split, data_dir, **{"on_bad_row": "skip", **options})
    report = _data.last_report()
    if limit is not None and len(rows) > limit:
        rows = rows.select(range(limit))
    return rows, (report.num_bad if report is not None else 0)


def _reference_for(model, run_config: dict):
    """The reference of both preference rankings: the model itself for a method that trains nothing (its
    registry runner "none": ``base`` is the starting model), the adapters disabled (LoRA), else the
    starting weights loaded again."""
    if not get_method(run_config["method"]).trains:
        return model
    if hasattr(model, "disable_adapter"):
        return "adapters"
    ref, _ = load_model_and_tokenizer(run_config["train"]["model"], dtype=run_config["train"].get("dtype"))
    return ref.to(model_device(model)).eval()


def _preference_section(model, tokenizer, run_config: dict, ev, root, options: dict, lengths: dict):
    """(the ``preference_*`` keys of the eval section, the test pairs and `preference_accuracy`'s full
    answer); the keys are None with a ``preference_note`` when the dataset has no pairs (then the rest is None)."""
    dataset, train_cfg = run_config["dataset"], run_config["train"]
    out: dict[str, Any] = {"preference_accuracy": None, "preference_margin": None, "preference_pairs": 0,
                           "preference_note": None, "preference_accuracy_headline": None,
                           "preference_headline_rule": HEADLINE_RULE}
    if "pairwise" not in _data.SOURCES[dataset].views:  # red_team: one reply per prompt, nothing to rank
        out["preference_note"] = (f"not applicable: {dataset} has no pairwise view (each prompt has a single "
                                  "reply, so there are no chosen/rejected pairs to rank)")
        return out, None, None
    pairs, _ = _load(dataset, "pairwise", ev.test_split, root, options, ev.max_eval_samples)
    if len(pairs) == 0:
        out["preference_note"] = f"no test pairs in {dataset} {ev.test_split}"
        return out, None, None
    tokenized = tokenize_dataset(pairs, tokenizer, "pairwise", **lengths)
    _, reduction = ranking_for(run_config["method"])
    reduction = train_cfg.get("logp_reduction") or reduction
    # every method of a profile is evaluated on the same pairs against the same base model: cache the
    # reference half of the pass (a third of an evaluation's time on mini) under a content key; every
    # method needs it now (the headline ranks all of them against the base model)
    cache = reference_cache_path(tokenized, model_name=train_cfg["model"], dtype=next(model.parameters()).dtype,
                                 batch_size=ev.eval_batch_size)
    pref = preference_accuracy(
        model, tokenized, method=run_config["method"], beta=train_cfg.get("beta", 0.1),
        reference=None if cache.exists() else _reference_for(model, run_config),
        logp_reduction=reduction, batch_size=ev.eval_batch_size,
        pad_token_id=tokenizer.pad_token_id, reference_cache=cache)
    out.update(preference_accuracy=pref["accuracy"], preference_margin=pref["margin_mean"],
               preference_pairs=pref["num_pairs"], preference_ties=pref["ties"], preference_ranking=pref["ranking"],
               preference_logp_reduction=pref["logp_reduction"], preference_reference_cache=pref["reference_cache"],
               preference_accuracy_headline=pref["headline_accuracy"],
               preference_headline_margin=pref["headline_margin_mean"], preference_headline_ties=pref["headline_ties"],
               preference_headline_note=pref["headline_note"], preference_sequences_scored=pref["sequences_scored"])
    return out, pairs, pref


def _aligned(sft_rows, pairs) -> bool:
    """Whether the SFT view's rows are the pairs' chosen replies, row for row (HH, Golden HH)."""
    if pairs is None or len(sft_rows) != len(pairs):
        return False
    return (sft_rows["source_index"] == pairs["source_index"] and sft_rows["completion"] == pairs["chosen"]
            and sft_rows["prompt"] == pairs["prompt"])


def _round(values, digits: int) -> list:
    return [None if v is None or not math.isfinite(v) else round(float(v), digits) for v in values]


def evaluate_run(run_dir: str | os.PathLike, *, judge=None, data_dir: str | os.PathLike | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """Evaluate a trained run folder; write ``generations.jsonl``, merge ``"eval"`` into metrics.json.

    The run is loaded with `ulma.runs.load_trained`; the profile's `EvalConfig` (config.json) sets the test split,
    sizes, token budget and judge. `judge`: None = the profile's (``eval.judge``), a name of
    `ulma.judges.JUDGES`, ``"none"`` for no judge, or a `Judge`. `data_dir`: docs/DESIGN.md's precedence (this
    argument, $ULMA_DATA_DIR, the profile's ``train.data_dir``, the hub).

    Returns the ``eval`` section:
    - ``perplexity`` of the test positives (``perplexity_source``: ``pairwise pass`` when the SFT rows are
      the pairs' chosen replies, else ``sft pass``);
    - ``preference_accuracy`` (own ranking), ``preference_accuracy_headline`` (one rule for every method,
      ``preference_headline_rule``), margins, ties (None with ``preference_note`` without a pairwise view);
    - ``num_generations`` greedy replies, ``truncated_fraction`` / ``num_truncated`` (no EOS within
      ``max_new_tokens``), ``generation_budget_ok`` (truncated ≤ `MAX_TRUNCATED_FRACTION`),
      ``mean_reply_tokens``, ``mean_reply_chars`` (= ``mean_generation_chars``), ``mean_reference_chars``,
      ``mean_reference_tokens``;
    - with a judge: ``judge_score`` / ``reference_score``, ``wins`` / ``ties`` / ``losses`` and their rates
      against the dataset's reply, ``win_score`` (win rate with ties ½), ``lc_win_rate`` (length-controlled
      on the character gap, `ulma.stats.length_controlled_win_rate`), ``judge_info``;
    - ``per_item``: compact per-item lists in the order of their ``ids`` (`item_ids`): ``pairs`` (``own`` and
      ``headline`` outcomes 1/0.5/0), ``perplexity`` (``nll`` summed per reply, ``tokens``), ``generations``
      (``verdict`` 1/0.5/0, ``score``, ``reference_score``, ``reply_tokens``, ``reply_chars``,
      ``reference_tokens``, ``reference_chars``, ``truncated`` 0/1);
    - ``padded_fraction``: the share of token slots that were padding in the scoring passes (batches
      sorted by length), ``scoring_passes`` (1 when the pairwise pass served the perplexity too);
    - ``generations``: the first `NUM_SAMPLES` generations as text, rows of ``generations.jsonl``
      (``index``, ``id``, ``prompt`` = the last user turn, ``reference`` = the dataset's reply,
      ``generation``, ``reply_tokens``, ``truncated``, ``judge`` = ``{name, score, reference_score,
      verdict}`` or None): what `ulma.notebook.sample_generations` shows side by side.
    """
    start = time.perf_counter()
    run_dir = Path(run_dir)
    model, tokenizer, run_config = load_trained(run_dir)
    if torch.cuda.is_available():
        model.to("cuda")
    profile = profile_from_dict(run_config["profile"])
    train_cfg, ev = run_config["train"], profile.eval
    dataset, method = run_config["dataset"], run_config["method"]
    root = resolve_data_dir(data_dir, train_cfg.get("data_dir"))
    options = dict(train_cfg.get("data_options") or {})
    lengths = {"max_prompt_length": train_cfg["max_prompt_length"],
               "max_completion_length": train_cfg["max_completion_length"]}
    result: dict[str, Any] = {"dataset": dataset, "method": method, "test_split": ev.test_split,
                              "data_dir": portable_path(root)}
    per_item: dict[str, Any] = {}
    timings: dict[str, float] = {}
    batch_lengths: list[list[int]] = []  # every scoring batch's sequence lengths: the padded fraction
    t0 = time.perf_counter()
    # fail early (e.g. no key); no judge is built when nothing is generated (calibration runs)
    judged = (_resolve_judge(judge, dataset=dataset, profile=profile, data_dir=root)
              if ev.num_generations != 0 else None)
    timings["judge_setup_s"] = time.perf_counter() - t0

    # preference accuracy on test pairs: one policy pass, both rankings
    t0 = time.perf_counter()
    section, pairs, pref = _preference_section(model, tokenizer, run_config, ev, root, options, lengths)
    result.update(section)
    if pref is not None:
        batch_lengths += pref["batch_lengths"]
        per_item["pairs"] = {"ids": item_ids(pairs["prompt"]), "own": pref["outcomes"],
                             "headline": pref["headline_outcomes"]}
    timings["preference_s"] = time.perf_counter() - t0

    # perplexity of the test positives: from the same pass when they are the pairs' chosen replies
    t0 = time.perf_counter()
    sft, skipped = _load(dataset, "sft", ev.test_split, root, options, None)
    scored = sft.select(range(min(len(sft), ev.max_eval_samples))) if ev.max_eval_samples is not None else sft
    result.update(perplexity=None, perplexity_rows=len(scored), perplexity_tokens=0, malformed_rows_skipped=skipped,
                  perplexity_source=None, scoring_passes=int(pref is not None))
    if len(scored):
        if pref is not None and _aligned(scored, pairs):
            nll, tokens = np.asarray(pref["chosen_nll"]), np.asarray(pref["chosen_tokens"])
            result["perplexity_source"] = "pairwise pass"
        else:
            tokenized = tokenize_dataset(scored, tokenizer, "sft", **lengths)
            nll, tokens = sequence_nll(model, tokenizer, tokenized, batch_size=ev.eval_batch_size)
            rows = as_rows(tokenized, ["prompt_ids", "completion_ids"])
            batch_lengths += batch_sequence_lengths(rows, length_sorted_batches(rows, ev.eval_batch_size))
            result["perplexity_source"] = "sft pass"
            result["scoring_passes"] += 1
        if tokens.sum() == 0:
            raise ValueError(f"{dataset} {ev.test_split}: the positive test replies have no tokens")
        result["perplexity"] = math.exp(float(nll.sum()) / float(tokens.sum()))
        result["perplexity_tokens"] = int(tokens.sum())
        per_item["perplexity"] = {"ids": item_ids(scored["prompt"]), "nll": _round(nll, 4),
                                  "tokens": [int(t) for t in tokens]}
    else:
        result["perplexity_note"] = f"no positive test rows in {dataset} {ev.test_split}"
    timings["perplexity_s"] = time.perf_counter() - t0
    result["padded_fraction"] = padded_fraction(batch_lengths) if batch_lengths else None

    # greedy generations for the first test prompts, judged against the dataset's reply
    t0 = time.perf_counter()
    shown = sft.select(range(min(len(sft), ev.num_generations))) if ev.num_generations is not None else sft
    prompts, references = shown["prompt"], shown["completion"]
    outputs = generate(model, tokenizer, prompts, max_new_tokens=ev.max_new_tokens,
                       batch_size=ev.generation_batch_size, max_prompt_length=lengths["max_prompt_length"],
                       progress=progress, details=True)
    replies = [g.text for g in outputs]
    timings["generation_s"] = time.perf_counter() - t0
    n = len(replies)
    reference_tokens = [len(ids) for ids in tokenizer(list(references), add_special_tokens=False)["input_ids"]] \
        if n else []
    truncated = [int(g.truncated) for g in outputs]
    result.update(num_generations=n, max_new_tokens=ev.max_new_tokens,
                  mean_generation_chars=sum(map(len, replies)) / max(n, 1),
                  mean_reply_chars=sum(map(len, replies)) / max(n, 1) if n else None,
                  mean_reply_tokens=sum(g.num_tokens for g in outputs) / n if n else None,
                  mean_reference_chars=sum(map(len, references)) / n if n else None,
                  mean_reference_tokens=sum(reference_tokens) / n if n else None,
                  num_truncated=sum(truncated), truncated_fraction=sum(truncated) / n if n else None,
                  generation_budget_ok=(sum(truncated) / n <= MAX_TRUNCATED_FRACTION) if n else None)
    if n and not result["generation_budget_ok"]:
        logger.warning("%s/%s: %d of %d replies hit the %d-token budget without EOS (> %.0f %%): raise "
                       "eval.max_new_tokens", dataset, method, sum(truncated), n, ev.max_new_tokens,
                       100 * MAX_TRUNCATED_FRACTION)
    items = {"ids": item_ids(prompts), "verdict": None, "score": None, "reference_score": None,
             "reply_tokens": [g.num_tokens for g in outputs], "reply_chars": [len(r) for r in replies],
             "reference_tokens": reference_tokens, "reference_chars": [len(r) for r in references],
             "truncated": truncated}

    t0 = time.perf_counter()
    verdicts = scores = ref_scores = None
    result["judge"] = judged.name if judged is not None else None
    if judged is not None and replies:
        scores, ref_scores, verdicts = judged.judge_batch(prompts, replies, references)
        counts = {v: verdicts.count(v) for v in VERDICTS}
        values = [VERDICT_VALUE[v] for v in verdicts]
        gaps = [a - b for a, b in zip(items["reply_chars"], items["reference_chars"])]
        result.update(
            judge_score=_nanmean(scores), reference_score=_nanmean(ref_scores),
            wins=counts["win"], ties=counts["tie"], losses=counts["lose"],
            win_rate=counts["win"] / n, tie_rate=counts["tie"] / n, lose_rate=counts["lose"] / n,
            win_score=sum(values) / n, lc_win_rate=_finite_or_none(length_controlled_win_rate(values, gaps)),
            lc_length_unit="chars",
            judge_accuracy=judged.info.get("accuracy"), judge_info=dict(judged.info),
        )
        items.update(verdict=values, score=_round(scores, 5), reference_score=_round(ref_scores, 5))
    per_item["generations"] = items
    timings["judge_s"] = time.perf_counter() - t0

    records = []
    for k, (row, reply) in enumerate(zip(shown, outputs)):
        record = {"index": k, "id": items["ids"][k], "source_index": row["source_index"], "prompt": row["prompt"],
                  "reference": row["completion"], "generation": reply.text, "reply_tokens": reply.num_tokens,
                  "truncated": reply.truncated, "reference_tokens": reference_tokens[k]}
        if verdicts is not None:
            record["judge"] = {"name": judged.name, "score": scores[k], "reference_score": ref_scores[k],
                               "verdict": verdicts[k]}
        records.append(record)
    with atomic_write(run_dir / GENERATIONS_FILE) as tmp:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    result["generations_file"] = GENERATIONS_FILE
    # the same rows, the prompt shortened to its last user turn (the whole conversation: generations.jsonl)
    result["generations"] = [{**{key: r[key] for key in ("index", "id", "reference", "generation", "reply_tokens",
                                                          "truncated")},
                              "prompt": r["prompt"][-1]["content"], "judge": r.get("judge")}
                             for r in records[:NUM_SAMPLES]]
    result["per_item"] = per_item
    timings["total_s"] = time.perf_counter() - start
    result["timings"] = timings
    RunFolder(run_dir).write_metrics("eval", result)
    return result


def _nanmean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def _finite_or_none(value: float) -> float | None:
    """NaN (e.g. an LC win rate with every length gap equal) as None: strict JSON has no NaN."""
    return value if math.isfinite(value) else None
