"""What a policy does on held-out data (docs/EXPERIMENTS.md, Metrics); `ulma.evaluation` applies it to a run.

* `perplexity`: exp(total NLL / total tokens) of held-out positive responses, over the response tokens
  only (token-weighted, as the paper reports it).
* `preference_accuracy`: how often held-out chosen replies outrank rejected ones, by two rules:
  - **headline** (``preference_accuracy_headline``), one rule for every method so that the column ranks
    methods: the token-mean log-likelihood ratio of the policy against the base (starting) model,
    m = [ℓ̄_θ(w) − ℓ̄_ref(w)] − [ℓ̄_θ(l) − ℓ̄_ref(l)], ℓ̄ = log-prob per response token. It asks "did
    training move the policy towards the chosen reply more than towards the rejected one", needs no
    method's β or reduction, is not biased by reply length (per token; the base model's own length
    preference cancels in the ratio), and the base model itself scores exactly 0.5 (every m = 0, ties
    count ½; |m| ≤ `HEADLINE_TIE_TOLERANCE` is a tie, float noise between two passes of equal weights).
  - **own** (``preference_accuracy``, the key kept for compatibility): each method's implicit reward
    β(Δ_w − Δ_l) (Δ = ℓ_θ − ℓ_ref, its own reduction: sum or per-token mean) for methods trained against
    a reference, the log-likelihood ℓ_θ(w) − ℓ_θ(l) for SFT, unlikelihood and the base model; a tie
    counts ½. Not comparable across methods (different scales and reductions).
  One policy pass (sequence sums and token counts) serves both rules and, where the SFT view's rows are
  the pairs' chosen replies (HH), the perplexity too. The base model's side of the pairs is cached on
  disk (`reference_cache_path`) and read by every method evaluated on the same pairs.
* `generate`: batched greedy decoding through the chat template, left padding, prompts cut from the start
  (the last user turn survives), stopping at EOS or after the token budget (``eval.max_new_tokens``);
  a row that has ended leaves the batch (`greedy_decode`); with ``details=True`` each reply also says how
  many tokens it took and whether the budget cut it.
* `item_ids`: stable ids of test prompts, the keys of per-item lists for paired statistics (`ulma.stats`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers.modeling_outputs import CausalLMOutputWithPast

from ulma.batching import PointwiseCollator, left_pad_prompts, length_sorted_batches, tokenize_prompts
from ulma.files import dataset_content_hash
from ulma.logprobs import accepts_logits_to_keep, model_logps
from ulma.losses import get_method
from ulma.models import model_identity
from ulma.reference import ReferenceCache, cache_path

# the headline rule's tie band (nats per token): two passes of the same weights in other batch
# compositions differ by ~1e-7 in float32; a real shift of 1e-5 nats/token is far below any effect
HEADLINE_TIE_TOLERANCE = 1e-5
HEADLINE_RULE = ("token-mean log-likelihood ratio to the base model, chosen vs rejected: "
                 "[mean log pi/pi_ref](chosen) - [mean log pi/pi_ref](rejected) > 0; ties count 1/2")
REFERENCE_CACHE_VERSION = 2  # 2: per-pair sequence sums in row order (1: the method's reduction, batch order)


# ------------------------------------------------------------------------------------------ helpers
def model_device(model) -> torch.device:
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


def as_rows(dataset, columns: Sequence[str]) -> list[dict[str, Any]]:
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


def _pad_id(model, pad_token_id: int | None) -> int:
    if pad_token_id is not None:
        return pad_token_id
    for config in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        value = getattr(config, "pad_token_id", None) if config is not None else None
        if isinstance(value, int):
            return value
    return 0  # right padding sits after every real token and is masked: any id does


def _logps(model, batch: dict[str, torch.Tensor], reduction: str):
    device = model_device(model)
    return model_logps(model, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                       batch["labels"].to(device), reduction=reduction)


# ------------------------------------------------------------------------------------------ item ids
def item_ids(prompts: Sequence[Any]) -> list[str]:
    """A stable id per prompt: 12 hex digits of sha256 of the prompt's messages, with ``~k`` on its k-th
    repeat (k ≥ 1) in this order. The same test prompts get the same ids in every run, method, seed
    and dataset that shares them (HH and Golden HH), so per-item results pair up by id."""
    seen: dict[str, int] = {}
    out = []
    for prompt in prompts:
        messages = [{"role": m["role"], "content": m["content"]} for m in prompt] if not isinstance(prompt, str) \
            else [{"role": "user", "content": prompt}]
        key = hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:12]
        k = seen.get(key, 0)
        seen[key] = k + 1
        out.append(key if k == 0 else f"{key}~{k}")
    return out


def batch_sequence_lengths(rows: list[dict], batches: Sequence[Sequence[int]]) -> list[list[int]]:
    """The lengths of the sequences each collated batch holds (for `ulma.batching.padded_fraction`): a
    point-wise row is one sequence, a pair two (chosen and rejected, padded to one width with the batch)."""
    def sequences(r):
        if "completion_ids" in r:
            return [len(r["prompt_ids"]) + len(r["completion_ids"])]
        return [len(r["prompt_ids"]) + len(r["chosen_ids"]), len(r["prompt_ids"]) + len(r["rejected_ids"])]

    return [[n for i in batch for n in sequences(rows[i])] for batch in batches]


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")


# --------------------------------------------------------------------------------------- perplexity
def sequence_nll(model, tokenizer_or_collator, dataset, *, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(NLL summed over each row's response tokens, its token count), in row order, float64 / int64.

    `dataset` has ``prompt_ids`` and ``completion_ids`` (`ulma.batching.tokenize_dataset`; the EOS that
    ends each completion counts as a token, the prompt does not). `tokenizer_or_collator` gives the
    padding: a tokenizer (its pad token) or a `PointwiseCollator`.
    """
    _check_batch_size(batch_size)
    collator = tokenizer_or_collator
    if not isinstance(collator, PointwiseCollator):
        collator = PointwiseCollator(tokenizer_or_collator.pad_token_id)
    rows = as_rows(dataset, ["prompt_ids", "completion_ids"])
    nll, tokens = np.zeros(len(rows)), np.zeros(len(rows), dtype=np.int64)
    with _inference(model):
        for chunk in length_sorted_batches(rows, batch_size):
            out = _logps(model, collator([{**rows[i], "z": 1.0} for i in chunk]), "sum")
            nll[chunk] = -out.logps.double().cpu().numpy()
            tokens[chunk] = out.num_tokens.cpu().numpy()
    return nll, tokens


def perplexity(model, tokenizer_or_collator, dataset, *, batch_size: int = 8) -> float:
    """exp(Σ NLL / Σ tokens) of the responses of a tokenized SFT (or point-wise) dataset.

    Every row counts: pass the positives (the SFT view). See `sequence_nll` for the arguments.
    """
    nll, tokens = sequence_nll(model, tokenizer_or_collator, dataset, batch_size=batch_size)
    if tokens.sum() == 0:
        raise ValueError("perplexity needs at least one response token")
    return math.exp(nll.sum() / tokens.sum())


# ------------------------------------------------------------------------------- preference accuracy
def ranking_for(method: str) -> tuple[bool, str]:
    """(ranks by the implicit reward, the logp_reduction) of a method, as its registry entry declares them
    (`ulma.losses.get_method`: ``reference``, ``logp_reduction``).

    Methods trained against a reference (dpo, pointwise_dpo, ulma, kto, ...; ``rlhf``, PPO with a KL
    penalty to the reference, with sequence sums) rank by β(Δ_w − Δ_l); sft, unlikelihood and ``base``
    (no training: it is the reference) by the log-likelihood ℓ(w) − ℓ(l) with their reduction.
    """
    spec = get_method(method)
    return spec.needs_reference, spec.logp_reduction


def _distinct_sequences(rows: list[dict]) -> tuple[list[dict], np.ndarray]:
    """The distinct (prompt, reply) sequences of pairwise rows as point-wise rows, and (n, 2) = [chosen,
    rejected] indices into them. QA-feedback's test pairs compare four answers per question in up to six
    pairs, so an answer recurs (its `mini_test` pairs hold 1,068 sequences, 365 distinct); HH's pairs share
    none."""
    index: dict[tuple, int] = {}
    sequences: list[dict] = []
    where = np.zeros((len(rows), 2), dtype=np.int64)
    for i, row in enumerate(rows):
        for j, key in enumerate(("chosen_ids", "rejected_ids")):
            seen = (tuple(row["prompt_ids"]), tuple(row[key]))
            if seen not in index:
                index[seen] = len(sequences)
                sequences.append({"prompt_ids": row["prompt_ids"], "completion_ids": row[key], "z": 1.0})
            where[i, j] = index[seen]
    return sequences, where


def _pair_logps(model, rows: list[dict], pad_token_id: int, batch_size: int, reference) -> dict[str, Any]:
    """Sequence sums of log-probs, (n, 2) = [chosen, rejected] per pair in row order, for the policy
    and (unless `reference` is None) the reference (``"adapters"`` or a model), token counts, and each
    batch's sequence lengths. Each distinct sequence is scored once (`_distinct_sequences`), in batches of
    2 · `batch_size` sequences (what a batch of `batch_size` pairs holds) sorted by their own length, so a
    short reply is not padded to its pair's longer one."""
    sequences, where = _distinct_sequences(rows)
    collator = PointwiseCollator(pad_token_id)
    policy, tokens = np.zeros(len(sequences)), np.zeros(len(sequences), dtype=np.int64)
    ref = np.zeros(len(sequences)) if reference is not None else None
    ref_model = reference if reference is not None and not isinstance(reference, str) else None
    batches = length_sorted_batches(sequences, 2 * batch_size)
    with _inference(*([model] + ([ref_model] if ref_model is not None else []))):
        for chunk in batches:
            batch = collator([sequences[i] for i in chunk])
            out = _logps(model, batch, "sum")
            policy[chunk] = out.logps.double().cpu().numpy()
            tokens[chunk] = out.num_tokens.cpu().numpy()
            if ref is None:
                continue
            if ref_model is not None and ref_model is not model:
                r = _logps(ref_model, batch, "sum").logps
            elif ref_model is model:
                r = out.logps  # the policy is its own reference: the same numbers
            else:
                with model.disable_adapter():
                    r = _logps(model, batch, "sum").logps
            ref[chunk] = r.double().cpu().numpy()
    return {"policy": policy[where], "tokens": tokens[where], "reference": None if ref is None else ref[where],
            "sequences": len(sequences), "batch_lengths": batch_sequence_lengths(sequences, batches)}


def _outcomes(margins: np.ndarray, tolerance: float = 0.0) -> list[float]:
    """1 / 0.5 / 0 per pair: the chosen reply ranked above, tied with (|m| ≤ tolerance), below."""
    return [0.5 if abs(m) <= tolerance else 1.0 if m > 0 else 0.0 for m in margins.tolist()]


def preference_accuracy(model, dataset, *, method: str, beta: float = 0.1, reference: Any = "adapters",
                        logp_reduction: str | None = None, batch_size: int = 8,
                        pad_token_id: int | None = None,
                        reference_cache: str | os.PathLike | None = None, headline: bool = True) -> dict[str, Any]:
    """Fraction of held-out pairs whose chosen reply outranks the rejected one, by the method's own
    ranking and by the headline rule (module docstring); a tie counts ½.

    `dataset`: tokenized pairwise rows (``prompt_ids``, ``chosen_ids``, ``rejected_ids``). Own margin:
    β[(ℓ_θ(w) − ℓ_ref(w)) − (ℓ_θ(l) − ℓ_ref(l))] for methods with a reference, ℓ_θ(w) − ℓ_θ(l) for
    sft / unlikelihood / base (`ranking_for`), with `logp_reduction` (None = the method's own). Headline
    margin: the token-mean log-ratio to the reference (computed when `headline` and a reference is at
    hand; else None with ``headline_note``). `reference`: ``"adapters"`` (the peft policy with its
    adapters disabled), a frozen reference model, or None (allowed only for methods that need none).
    `reference_cache`: a ``.safetensors`` file of the reference's per-pair sequence sums; read when it
    holds as many pairs, else written after the pass. The caller keys its name by everything the numbers
    depend on (`reference_cache_path`): every method evaluated on the same pairs and base model shares it.

    Returns ``{"accuracy", "margin_mean", "num_pairs", "ties", "ranking", "logp_reduction", "beta",
    "reference_cache", "outcomes", "headline_accuracy", "headline_margin_mean", "headline_ties",
    "headline_outcomes", "headline_note", "chosen_nll", "chosen_tokens", "batch_lengths",
    "sequences_scored"}``: ``outcomes`` 1/0.5/0 per pair in row order; ``reference_cache`` ``hit``, ``miss``
    or None (no cache or no reference used); ``batch_lengths`` the sequence lengths of each batch of the
    pass (its padding); ``sequences_scored`` the distinct sequences the pass scored.
    """
    _check_batch_size(batch_size)
    uses_reference, default_reduction = ranking_for(method)
    reduction = logp_reduction or default_reduction
    if reduction not in ("sum", "mean"):
        raise ValueError(f"logp_reduction must be 'sum' or 'mean', got {reduction!r}")
    rows = as_rows(dataset, ["prompt_ids", "chosen_ids", "rejected_ids"])
    if not rows:
        raise ValueError("preference_accuracy needs at least one pair")
    wants_reference = uses_reference or headline
    cached = _read_reference_cache(reference_cache, len(rows)) if wants_reference else None
    source, note = None, None
    if wants_reference and cached is None:
        if isinstance(reference, str) and reference != "adapters":
            raise ValueError(f"reference must be 'adapters', a model or None, got {reference!r}")
        if reference is None:
            note = "no reference model given"
        elif isinstance(reference, str) and not hasattr(model, "disable_adapter"):
            note = "reference='adapters' needs a peft (LoRA) model"
        else:
            source = reference
        if source is None and uses_reference:
            if reference is None:
                raise ValueError(f"{method} ranks pairs by its implicit reward, which needs a reference: pass "
                                 "reference='adapters' (a peft model) or a reference model")
            raise ValueError("reference='adapters' needs a peft (LoRA) model; pass the reference model instead")
    passes = _pair_logps(model, rows, _pad_id(model, pad_token_id), batch_size, source)
    policy, tokens = passes["policy"], passes["tokens"]
    ref = cached if cached is not None else passes["reference"]
    if passes["reference"] is not None and reference_cache is not None:
        _write_reference_cache(reference_cache, passes["reference"])
    per_token = lambda sums: sums / np.maximum(tokens, 1)  # noqa: E731  (a zero-token reply: 0, as model_logps)
    reduce = per_token if reduction == "mean" else (lambda sums: sums)  # noqa: E731
    if uses_reference:
        delta = reduce(policy - ref)
        margins = beta * (delta[:, 0] - delta[:, 1])
    else:
        own = reduce(policy)
        margins = own[:, 0] - own[:, 1]
    outcomes = _outcomes(margins)
    out: dict[str, Any] = {
        "accuracy": float(np.mean(outcomes)),
        "margin_mean": float(margins.mean()),
        "num_pairs": len(rows),
        "ties": int(sum(o == 0.5 for o in outcomes)),
        "ranking": "implicit_reward" if uses_reference else "log_likelihood",
        "logp_reduction": reduction,
        "beta": beta if uses_reference else None,
        "reference_cache": None if ref is None or reference_cache is None else "hit" if cached is not None else "miss",
        "outcomes": outcomes,
        "headline_accuracy": None, "headline_margin_mean": None, "headline_ties": None, "headline_outcomes": None,
        "headline_note": None if ref is not None or not headline else f"no headline: {note}",
        "chosen_nll": (-policy[:, 0]).tolist(), "chosen_tokens": tokens[:, 0].tolist(),
        "batch_lengths": passes["batch_lengths"], "sequences_scored": passes["sequences"],
    }
    if headline and ref is not None:
        ratio = per_token(policy - ref)
        head = ratio[:, 0] - ratio[:, 1]
        head_outcomes = _outcomes(head, HEADLINE_TIE_TOLERANCE)
        out.update(headline_accuracy=float(np.mean(head_outcomes)), headline_margin_mean=float(head.mean()),
                   headline_ties=int(sum(o == 0.5 for o in head_outcomes)), headline_outcomes=head_outcomes)
    return out


def _read_reference_cache(path, num_pairs: int) -> np.ndarray | None:
    """The cached reference sums, (num_pairs, 2) float64, or None when absent, of another size/version, or
    failing its checksum (`ulma.reference.ReferenceCache` warns naming the path; the caller recomputes)."""
    if path is None:
        return None
    name = f"reference_sums_v{REFERENCE_CACHE_VERSION}"
    table = ReferenceCache(path).load({name: num_pairs})
    if table is None or tuple(table[name].shape) != (num_pairs, 2):
        return None
    return table[name].double().numpy()


def _write_reference_cache(path, values: np.ndarray) -> None:
    name = f"reference_sums_v{REFERENCE_CACHE_VERSION}"
    ReferenceCache(path).save({name: torch.from_numpy(np.ascontiguousarray(values))})  # atomic, with its checksum


def reference_cache_path(tokenized_pairs, *, model_name: str, dtype, reduction: str = "sum",
                         batch_size: int) -> Path:
    """Where the evaluation's reference log-probs of these pairs live (`ulma.reference.cache_path`, prefix
    ``eval-pairs-``): keyed by the tokenized content (`ulma.files.dataset_content_hash`), the base model's
    identity and dtype, the reduction and the batching (padding changes the last bits). Every method
    evaluated on the same pairs against the same base model shares the file."""
    settings = {
        "layout": REFERENCE_CACHE_VERSION,
        "data": dataset_content_hash(tokenized_pairs, ["prompt_ids", "chosen_ids", "rejected_ids"]),
        "model": model_identity(model_name),
        "dtype": str(dtype),
        "reduction": reduction,
        "batch_size": batch_size,
    }
    return cache_path(settings, prefix="eval-pairs-")


# ---------------------------------------------------------------------------------------- generation
def _eos_ids(model, tokenizer) -> list[int]:
    """EOS of the tokenizer and of the model's generation config (chat models may end turns with either)."""
    ids = [tokenizer.eos_token_id]
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += configured if isinstance(configured, (list, tuple)) else [configured]
    return list(dict.fromkeys(i for i in ids if i is not None))


# the name under which this transformers passes a KV cache into a forward and returns it ("cache" since the
# 5.x rename; "past_key_values" before it, which later versions still accept with a warning)
_CACHE_ARGUMENT = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


@torch.no_grad()
def greedy_decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, eos_ids: Sequence[int], *,
                  max_new_tokens: int) -> list[list[int]]:
    """Greedy decoding of a LEFT-padded batch in which a row that ends leaves the batch.

    `model.generate` decodes every row until the batch's last one ends, writing padding after a row's EOS:
    at `mini` that is a quarter to three quarters of the decoding row-steps, the most where replies differ
    most in length (SFT's and ULMA's). Here the rows that emit an EOS are dropped from the batch, their
    KV-cache rows with them (`Cache.reorder_cache`), and each step runs on the rows still going. Otherwise it
    is generate's greedy search: the argmax of the last position's logits, position ids counted over the
    attention mask (padding at 0), one cached step per new token.

    Returns each row's new tokens, up to and including its first EOS, or `max_new_tokens` of them.
    """
    rows, device = input_ids.shape[0], input_ids.device
    tokens: list[list[int]] = [[] for _ in range(rows)]
    alive = torch.arange(rows, device=device)  # the input row of each row still decoding
    eos = torch.tensor(sorted(set(eos_ids)), dtype=torch.long, device=device)
    positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    keep_last = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
    step, cache = input_ids, {}
    for _ in range(max_new_tokens):
        out = model(input_ids=step, attention_mask=attention_mask, position_ids=positions, use_cache=True,
                    **keep_last, **cache)
        cache = {_CACHE_ARGUMENT: getattr(out, _CACHE_ARGUMENT)}
        next_ids = out.logits[:, -1].argmax(-1)
        for row, token in zip(alive.tolist(), next_ids.tolist()):
            tokens[row].append(token)
        going = ~torch.isin(next_ids, eos)
        if not going.any():
            break
        if not going.all():
            keep = going.nonzero().squeeze(-1)
            cache[_CACHE_ARGUMENT].reorder_cache(keep)
            alive, next_ids, attention_mask, positions = alive[keep], next_ids[keep], attention_mask[keep], positions[keep]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(alive), 1)], dim=-1)
        positions = positions[:, -1:] + 1
        step = next_ids[:, None]
    return tokens


class Generation(NamedTuple):
    """One greedy reply: its text, its token count (up to, not including, the EOS) and whether the token
    budget cut it (no EOS within `max_new_tokens`)."""

    text: str
    num_tokens: int
    truncated: bool


def generate(model, tokenizer, prompts: Sequence[Sequence[dict[str, str]]], *, max_new_tokens: int,
             batch_size: int = 8, max_prompt_length: int | None = None, progress: bool = True,
             details: bool = False) -> list[str] | list[Generation]:
    """Greedy replies to chat `prompts` (lists of messages ending with a user turn), in input order:
    strings, or `Generation` records with ``details=True``.

    Each prompt is rendered by `ulma.batching.render_prompt` (the chat template, or the plain
    Human/Assistant template) and cut from the start to `max_prompt_length` tokens (None: only as much as
    the model's context needs), so the last user turn survives. Batches of similar length are LEFT
    padded; decoding is greedy (deterministic) and stops at EOS (the tokenizer's or the generation
    config's) or after `max_new_tokens`. Replies are decoded without special tokens and stripped.
    """
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
    # the KV cache is used whatever the model's config says (one saved after gradient-checkpointed training
    # may carry use_cache=False); each row stops at its own EOS and leaves the batch (`greedy_decode`)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    replies: list[Generation] = [Generation("", 0, False)] * len(ids)
    device = model_device(model)
    with _inference(model), tqdm(total=len(ids), desc="generate", unit="prompt", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = left_pad_prompts([ids[i] for i in chunk], pad)
            new = greedy_decode(model, batch["input_ids"].to(device), batch["attention_mask"].to(device), eos,
                                max_new_tokens=max_new_tokens)
            for i, tokens in zip(chunk, new):
                cut = next((k for k, t in enumerate(tokens) if t in eos), None)
                # no EOS: the budget ran out
                truncated = cut is None
                cut = len(tokens) if cut is None else cut
                text = tokenizer.decode(tokens[:cut], skip_special_tokens=True).strip()
                replies[i] = Generation(text, cut, truncated)
            bar.update(len(chunk))
    return replies if details else [g.text for g in replies]
