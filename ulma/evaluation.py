"""Held-out metrics of a trained policy (EXPERIMENTS.md, Metrics), and `evaluate_run` for a run folder.

* `perplexity`: exp(total NLL / total tokens) of held-out positive responses, over the response tokens
  only (token-weighted, as the paper reports it).
* `preference_accuracy`: how often held-out chosen replies outrank rejected ones: by the implicit reward
  β(Δ_w − Δ_l) (Δ = ℓ_θ − ℓ_ref) for methods trained against a reference, by the log-likelihood
  ℓ_θ(w) − ℓ_θ(l) for SFT and unlikelihood; a tie counts half.
* `generate`: batched greedy decoding through the chat template, left padding, prompts cut from the start
  (the last user turn survives), stopping at EOS; the batched output equals one-by-one decoding.
* `evaluate_run`: all of the above plus a judge (`ulma.judges`) on a run folder (DESIGN.md, Runs); writes
  ``generations.jsonl`` and merges ``{"eval": ...}`` into ``metrics.json``.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from ulma.batching import PairwiseCollator, PointwiseCollator, left_pad_prompts, tokenize_prompts
from ulma.judges import VERDICTS
from ulma.files import dataset_content_hash
from ulma.logprobs import model_logps
from ulma.reference import ReferenceCache
from ulma.runs import load_trained, resolve_data_dir

GENERATIONS_FILE = "generations.jsonl"
METRICS_FILE = "metrics.json"


# ------------------------------------------------------------------------------------------ helpers
def _device(model) -> torch.device:
    return next(model.parameters()).device


@contextlib.contextmanager
def _inference(*models):
    """Eval mode (no dropout) and no gradients; the previous training flags are restored."""
    flags = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, flag in zip(models, flags):
            m.train(flag)


def _rows(dataset, columns: Sequence[str]) -> list[dict[str, Any]]:
    """The given columns of a `datasets.Dataset` or a list of dicts, as a list of dicts."""
    if len(dataset) == 0:
        return []
    names = getattr(dataset, "column_names", None) or list(dataset[0])
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(f"the dataset lacks columns {missing}: tokenize it first with "
                         f"ulma.batching.tokenize_dataset (it has {sorted(names)})")
    if hasattr(dataset, "select_columns"):
        return dataset.select_columns(list(columns)).to_list()
    return [{c: r[c] for c in columns} for r in dataset]


def _batches(rows: list[dict], batch_size: int, length) -> list[list[dict]]:
    """Rows in batches of similar length (little padding); order does not matter to the sums below."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    ordered = sorted(rows, key=length)
    return [ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size)]


def _pad_id(model, pad_token_id: int | None) -> int:
    if pad_token_id is not None:
        return pad_token_id
    for config in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        value = getattr(config, "pad_token_id", None) if config is not None else None
        if isinstance(value, int):
            return value
    return 0  # right padding sits after every real token and is masked: any id does


def _logps(model, batch: dict[str, torch.Tensor], reduction: str):
    device = _device(model)
    return model_logps(model, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                       batch["labels"].to(device), reduction=reduction)


# --------------------------------------------------------------------------------------- perplexity
def perplexity(model, tokenizer_or_collator, dataset, *, batch_size: int = 8) -> float:
    """exp(Σ NLL / Σ tokens) of the responses of a tokenized SFT (or point-wise) dataset.

    `dataset` has ``prompt_ids`` and ``completion_ids`` (`ulma.batching.tokenize_dataset`; the EOS that
    ends each completion counts as a token, the prompt does not). Every row counts: pass the positives
    (the SFT view). `tokenizer_or_collator` gives the padding: a tokenizer (its pad token) or a
    `PointwiseCollator`.
    """
    collator = tokenizer_or_collator
    if not isinstance(collator, PointwiseCollator):
        collator = PointwiseCollator(tokenizer_or_collator.pad_token_id)
    rows = _rows(dataset, ["prompt_ids", "completion_ids"])
    nll, tokens = 0.0, 0
    with _inference(model):
        for chunk in _batches(rows, batch_size, lambda r: len(r["prompt_ids"]) + len(r["completion_ids"])):
            out = _logps(model, collator([{**r, "z": 1.0} for r in chunk]), "sum")
            nll -= out.logps.double().sum().item()
            tokens += int(out.num_tokens.sum())
    if tokens == 0:
        raise ValueError("perplexity needs at least one response token")
    return math.exp(nll / tokens)


# ------------------------------------------------------------------------------- preference accuracy
def ranking_for(method: str) -> tuple[bool, str]:
    """(ranks by the implicit reward, the released code's logp_reduction) for a method name.

    Registry methods with a reference (dpo, pointwise_dpo, ulma, kto, ...) rank by β(Δ_w − Δ_l); sft and
    unlikelihood (no reference) by ℓ(w) − ℓ(l). ``rlhf`` (PPO with a KL penalty to the reference) ranks by
    the implicit reward of that KL-regularized objective, with sequence sums.
    """
    if method == "rlhf":
        return True, "sum"
    from ulma.losses import get_method

    spec = get_method(method)
    return spec.reference != "none", spec.logp_reduction


def preference_accuracy(model, dataset, *, method: str, beta: float = 0.1, reference: Any = "adapters",
                        logp_reduction: str | None = None, batch_size: int = 8,
                        pad_token_id: int | None = None,
                        reference_cache: str | os.PathLike | None = None) -> dict[str, Any]:
    """Fraction of held-out pairs whose chosen reply outranks the rejected one (a tie counts ½).

    `dataset`: tokenized pairwise rows (``prompt_ids``, ``chosen_ids``, ``rejected_ids``). The margin of a
    pair is β[(ℓ_θ(w) − ℓ_ref(w)) − (ℓ_θ(l) − ℓ_ref(l))] (c cancels) for methods with a reference, and
    ℓ_θ(w) − ℓ_θ(l) for sft / unlikelihood (`ranking_for`). `reference`: ``"adapters"`` (the peft policy
    with its adapters disabled), a frozen reference model, or None (allowed only for methods that need
    none). `logp_reduction` None = the method's own (`sum` or per-token `mean`). `reference_cache`: a
    ``.safetensors`` file for the reference log-probs; read when it exists, else written after the pass.
    The caller keys its name by everything the numbers depend on (`reference_cache_path`): every method
    evaluated on the same pairs and base model shares it, so only the first run pays the reference half.

    Returns ``{"accuracy", "margin_mean", "num_pairs", "ties", "ranking", "logp_reduction", "beta",
    "reference_cache"}`` (the last: ``hit``, ``miss`` or None).
    """
    uses_reference, default_reduction = ranking_for(method)
    reduction = logp_reduction or default_reduction
    rows = _rows(dataset, ["prompt_ids", "chosen_ids", "rejected_ids"])
    cached = _read_reference_cache(reference_cache, 2 * len(rows)) if uses_reference else None
    if uses_reference and cached is None:
        if reference is None:
            raise ValueError(f"{method} ranks pairs by its implicit reward, which needs a reference: pass "
                             "reference='adapters' (a peft model) or a reference model")
        if isinstance(reference, str):
            if reference != "adapters":
                raise ValueError(f"reference must be 'adapters', a model or None, got {reference!r}")
            if not hasattr(model, "disable_adapter"):
                raise ValueError("reference='adapters' needs a peft (LoRA) model; pass the reference model instead")
    collator = PairwiseCollator(_pad_id(model, pad_token_id))
    margins: list[float] = []
    ref_model = reference if uses_reference and cached is None and not isinstance(reference, str) else None
    computed: list[torch.Tensor] = []
    with _inference(*([model] + ([ref_model] if ref_model is not None else []))):
        longest = lambda r: len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"]))  # noqa: E731
        done = 0  # the cache holds the reference values in this (deterministic, length-sorted) batch order
        for chunk in _batches(rows, batch_size, longest):
            batch = collator(chunk)
            n = len(chunk)
            policy = _logps(model, batch, reduction).logps.double().cpu()
            if not uses_reference:
                margin = policy[:n] - policy[n:]
            else:
                if cached is not None:
                    ref = cached[done:done + 2 * n]
                elif ref_model is not None:
                    ref = _logps(ref_model, batch, reduction).logps.double().cpu()
                else:
                    with model.disable_adapter():
                        ref = _logps(model, batch, reduction).logps.double().cpu()
                computed.append(ref)
                done += 2 * n
                delta = policy - ref
                margin = beta * (delta[:n] - delta[n:])
            margins.extend(margin.tolist())
    if uses_reference and cached is None and reference_cache is not None and computed:
        _write_reference_cache(reference_cache, torch.cat(computed))
    if not margins:
        raise ValueError("preference_accuracy needs at least one pair")
    wins = sum(m > 0 for m in margins)
    ties = sum(m == 0 for m in margins)
    return {
        "accuracy": (wins + 0.5 * ties) / len(margins),
        "margin_mean": sum(margins) / len(margins),
        "num_pairs": len(margins),
        "ties": ties,
        "ranking": "implicit_reward" if uses_reference else "log_likelihood",
        "logp_reduction": reduction,
        "beta": beta if uses_reference else None,
        "reference_cache": None if not uses_reference or reference_cache is None else "hit" if cached is not None else "miss",
    }


def _read_reference_cache(path, expected: int) -> torch.Tensor | None:
    """The cached reference log-probs (float64), or None when absent, of another length, or failing its
    checksum (`ulma.reference.ReferenceCache` warns naming the path; the caller recomputes)."""
    if path is None:
        return None
    table = ReferenceCache(path).load({"reference_logps": expected})
    return table["reference_logps"].double() if table is not None else None


def _write_reference_cache(path, values: torch.Tensor) -> None:
    ReferenceCache(path).save({"reference_logps": values})  # atomic, with its checksum


def reference_cache_path(tokenized_pairs, *, model_name: str, dtype, reduction: str, batch_size: int) -> Path:
    """Where the evaluation's reference log-probs of these pairs live: keyed by the tokenized content,
    the base model's identity and dtype, the reduction and the batching (padding changes the last bits)."""
    import hashlib

    from ulma.models import cache_dir, model_identity

    settings = {
        "version": 1,
        "data": dataset_content_hash(tokenized_pairs, ["prompt_ids", "chosen_ids", "rejected_ids"]),
        "model": model_identity(model_name),
        "dtype": str(dtype),
        "reduction": reduction,
        "batch_size": batch_size,
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir() / "reference" / f"eval-pairs-{key}.safetensors"


# ---------------------------------------------------------------------------------------- generation
def _eos_ids(model, tokenizer) -> list[int]:
    """EOS of the tokenizer and of the model's generation config (chat models may end turns with either)."""
    ids = [tokenizer.eos_token_id]
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += configured if isinstance(configured, (list, tuple)) else [configured]
    return list(dict.fromkeys(i for i in ids if i is not None))


def generate(model, tokenizer, prompts: Sequence[Sequence[dict[str, str]]], *, max_new_tokens: int,
             batch_size: int = 8, max_prompt_length: int | None = None, progress: bool = True) -> list[str]:
    """Greedy replies to chat `prompts` (lists of messages ending with a user turn), in input order.

    Each prompt is rendered by `ulma.batching.render_prompt` (the chat template, or the plain
    Human/Assistant template) and cut from the start to `max_prompt_length` tokens (None: only as much as
    the model's context needs), so the last user turn survives. Batches of similar length are LEFT
    padded; decoding is greedy (deterministic) and stops at EOS (the tokenizer's or the generation
    config's) or after `max_new_tokens`. Replies are decoded without special tokens and stripped.
    """
    from transformers import GenerationConfig
    from tqdm.auto import tqdm

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    if not prompts:
        return []
    if max_prompt_length is None:
        context = getattr(getattr(model, "config", None), "max_position_embeddings", None) or 10**9
        max_prompt_length = max(1, context - max_new_tokens)
    ids = tokenize_prompts([list(p) for p in prompts], tokenizer, max_prompt_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = _eos_ids(model, tokenizer)
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad,
                              eos_token_id=eos, bos_token_id=getattr(tokenizer, "bos_token_id", None))
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    replies: list[str] = [""] * len(ids)
    device = _device(model)
    with _inference(model), tqdm(total=len(ids), desc="generate", unit="prompt", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = left_pad_prompts([ids[i] for i in chunk], pad)
            out = model.generate(input_ids=batch["input_ids"].to(device),
                                 attention_mask=batch["attention_mask"].to(device), generation_config=config)
            new = out[:, batch["input_ids"].shape[1]:].tolist()
            for i, tokens in zip(chunk, new):
                cut = next((k for k, t in enumerate(tokens) if t in eos), len(tokens))
                replies[i] = tokenizer.decode(tokens[:cut], skip_special_tokens=True).strip()
            bar.update(len(chunk))
    return replies


# --------------------------------------------------------------------------------------------- runs
def judge_options(name: str, *, dataset: str, profile, data_dir: str | None) -> dict[str, Any]:
    """The options `evaluate_run` passes to `ulma.judges.get_judge(name, ...)` for a run.

    ``llm``: the criterion (helpfulness for QA-feedback, else harmlessness); ``reward_model``: the profile's
    ``eval.judge_model``; ``minilm_harmlessness``: HH pairs of the profile's train / test splits under the
    run's data root. A profile's ``eval.judge_options`` (when its EvalConfig has that field) come last.
    """
    options: dict[str, Any] = {}
    if name == "llm":
        options = {"criterion": "helpfulness" if dataset == "qa_feedback" else "harmlessness"}
    elif name == "reward_model":
        options = {"model": profile.eval.judge_model}
    elif name == "minilm_harmlessness":
        options = {"data_dir": data_dir, "train_split": profile.train.train_split,
                   "test_split": profile.eval.test_split}
    return {**options, **(getattr(profile.eval, "judge_options", None) or {})}


def _resolve_judge(judge, *, dataset: str, profile, data_dir: str | None):
    from ulma.judges import Judge, get_judge

    if isinstance(judge, Judge):
        return judge
    name = profile.eval.judge if judge is None else judge
    if name in (None, "", "none", False):
        return None
    return get_judge(name, **judge_options(name, dataset=dataset, profile=profile, data_dir=data_dir))


def _load(dataset: str, view: str, split: str, data_dir, options: dict, limit: int | None):
    """A test view, cut to `limit` rows, and how many malformed source rows were skipped."""
    from ulma import data

    rows = data.load(dataset, view, split, data_dir, **{"on_bad_row": "skip", **options})
    report = data.last_report()
    if limit is not None and len(rows) > limit:
        rows = rows.select(range(limit))
    return rows, (report.num_bad if report is not None else 0)


def _reference_for(model, run_config: dict):
    """The preference-accuracy reference: the adapters disabled (LoRA), else the starting weights."""
    if hasattr(model, "disable_adapter"):
        return "adapters"
    from ulma.models import load_model_and_tokenizer

    ref, _ = load_model_and_tokenizer(run_config["train"]["model"], dtype=run_config["train"].get("dtype"))
    return ref.to(_device(model)).eval()


def _preference_section(model, tokenizer, run_config: dict, ev, root, options: dict, lengths: dict) -> dict:
    """The ``preference_*`` keys of the eval section (None with a ``preference_note`` when not applicable)."""
    from ulma.batching import tokenize_dataset
    from ulma.data import SOURCES

    dataset, train_cfg = run_config["dataset"], run_config["train"]
    out: dict[str, Any] = {"preference_accuracy": None, "preference_margin": None, "preference_pairs": 0,
                           "preference_note": None}
    if "pairwise" not in SOURCES[dataset].views:  # red_team: one reply per prompt, nothing to rank
        out["preference_note"] = (f"not applicable: {dataset} has no pairwise view (each prompt has a single "
                                  "reply, so there are no chosen/rejected pairs to rank)")
        return out
    pairs, _ = _load(dataset, "pairwise", ev.test_split, root, options, ev.max_eval_samples)
    if len(pairs) == 0:
        out["preference_note"] = f"no test pairs in {dataset} {ev.test_split}"
        return out
    tokenized = tokenize_dataset(pairs, tokenizer, "pairwise", **lengths)
    uses_reference, reduction = ranking_for(run_config["method"])
    reduction = train_cfg.get("logp_reduction") or reduction
    # every method of a profile is evaluated on the same pairs against the same base model: cache the
    # reference half of the pass (a third of an evaluation's time on mini) under a content key
    cache = reference_cache_path(tokenized, model_name=train_cfg["model"], dtype=next(model.parameters()).dtype,
                                 reduction=reduction, batch_size=ev.eval_batch_size) if uses_reference else None
    pref = preference_accuracy(
        model, tokenized, method=run_config["method"],
        beta=train_cfg.get("beta", 0.1),
        reference=_reference_for(model, run_config) if uses_reference and not cache.exists() else None,
        logp_reduction=reduction, batch_size=ev.eval_batch_size,
        pad_token_id=tokenizer.pad_token_id, reference_cache=cache)
    out.update(preference_accuracy=pref["accuracy"], preference_margin=pref["margin_mean"],
               preference_pairs=pref["num_pairs"], preference_ties=pref["ties"], preference_ranking=pref["ranking"],
               preference_logp_reduction=pref["logp_reduction"], preference_reference_cache=pref["reference_cache"])
    return out


def merge_metrics(run_dir: str | os.PathLike, section: str, values: dict[str, Any]) -> None:
    """Set ``metrics.json[section]`` in `run_dir`, keeping every other key (atomic write)."""
    path = Path(run_dir) / METRICS_FILE
    metrics = json.loads(path.read_text()) if path.exists() else {}
    metrics[section] = values
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True, default=str))
    tmp.replace(path)


def evaluate_run(run_dir: str | os.PathLike, *, judge=None, data_dir: str | os.PathLike | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """Evaluate a trained run folder; write ``generations.jsonl``, merge ``"eval"`` into metrics.json.

    The run is loaded with `ulma.trainer.load_trained`; the profile's `EvalConfig` (config.json) sets the
    test split, sizes and judge. `judge`: None = the profile's (``eval.judge``), a name of
    `ulma.judges.JUDGES`, ``"none"`` for no judge, or a `Judge`. `data_dir`: DESIGN.md's precedence (this
    argument, $ULMA_DATA_DIR, the profile's ``train.data_dir``, the hub).

    Returns the ``eval`` section: ``perplexity`` (test positives, the SFT view), ``preference_accuracy``
    and ``preference_margin`` (test pairs; None with ``preference_note`` when the dataset has no pairwise
    view), ``num_generations`` greedy replies and, with a judge, ``judge_score`` / ``reference_score``
    (means over the generations and over the dataset's replies), ``wins`` / ``ties`` / ``losses`` and
    their rates against the dataset's reply, ``judge_info`` (e.g. the judge's held-out accuracy).
    """
    from ulma.batching import tokenize_dataset
    from ulma.config import profile_from_dict

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
    result: dict[str, Any] = {"dataset": dataset, "method": method, "test_split": ev.test_split, "data_dir": root}
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    judged = _resolve_judge(judge, dataset=dataset, profile=profile, data_dir=root)  # fail early (e.g. no key)
    timings["judge_setup_s"] = time.perf_counter() - t0

    # perplexity of the test positives
    t0 = time.perf_counter()
    sft, skipped = _load(dataset, "sft", ev.test_split, root, options, None)
    scored = sft.select(range(min(len(sft), ev.max_eval_samples))) if ev.max_eval_samples is not None else sft
    result.update(perplexity=None, perplexity_rows=len(scored), perplexity_tokens=0, malformed_rows_skipped=skipped)
    if len(scored):
        tokenized = tokenize_dataset(scored, tokenizer, "sft", **lengths)
        result["perplexity"] = perplexity(model, tokenizer, tokenized, batch_size=ev.eval_batch_size)
        result["perplexity_tokens"] = int(sum(len(c) for c in tokenized["completion_ids"]))
    else:
        result["perplexity_note"] = f"no positive test rows in {dataset} {ev.test_split}"
    timings["perplexity_s"] = time.perf_counter() - t0

    # preference accuracy on test pairs
    t0 = time.perf_counter()
    result.update(_preference_section(model, tokenizer, run_config, ev, root, options, lengths))
    timings["preference_s"] = time.perf_counter() - t0

    # greedy generations for the first test prompts, judged against the dataset's reply
    t0 = time.perf_counter()
    shown = sft.select(range(min(len(sft), ev.num_generations))) if ev.num_generations is not None else sft
    prompts, references = shown["prompt"], shown["completion"]
    replies = generate(model, tokenizer, prompts, max_new_tokens=ev.max_new_tokens,
                       batch_size=ev.generation_batch_size, max_prompt_length=lengths["max_prompt_length"],
                       progress=progress)
    timings["generation_s"] = time.perf_counter() - t0
    result.update(num_generations=len(replies), max_new_tokens=ev.max_new_tokens,
                  mean_generation_chars=sum(map(len, replies)) / max(len(replies), 1))

    t0 = time.perf_counter()
    verdicts = scores = ref_scores = None
    result["judge"] = judged.name if judged is not None else None
    if judged is not None and replies:
        scores, ref_scores, verdicts = judged.judge_batch(prompts, replies, references)
        counts = {v: verdicts.count(v) for v in VERDICTS}
        n = len(verdicts)
        result.update(
            judge_score=_nanmean(scores), reference_score=_nanmean(ref_scores),
            wins=counts["win"], ties=counts["tie"], losses=counts["lose"],
            win_rate=counts["win"] / n, tie_rate=counts["tie"] / n, lose_rate=counts["lose"] / n,
            judge_accuracy=judged.info.get("accuracy"), judge_info=dict(judged.info),
        )
        if judged.name == "minilm_harmlessness" and dataset == "qa_feedback":
            result["judge_note"] = "a harmlessness judge trained on HH: off-topic for QA-feedback helpfulness"
    timings["judge_s"] = time.perf_counter() - t0

    with open(run_dir / GENERATIONS_FILE, "w") as f:
        for k, (row, reply) in enumerate(zip(shown, replies)):
            record = {"index": k, "source_index": row["source_index"], "prompt": row["prompt"],
                      "reference": row["completion"], "generation": reply}
            if verdicts is not None:
                record["judge"] = {"name": judged.name, "score": scores[k], "reference_score": ref_scores[k],
                                   "verdict": verdicts[k]}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    result["generations_file"] = GENERATIONS_FILE
    timings["total_s"] = time.perf_counter() - start
    result["timings"] = timings
    merge_metrics(run_dir, "eval", result)
    return result


def _nanmean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None
