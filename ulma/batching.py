"""Untokenized views -> token ids -> padded batches (docs/DESIGN.md, "Tokenized rows and batches").

* `render_prompt`: chat messages -> prompt text, by the tokenizer's chat template with the generation
  prompt, or the plain HH template ``"\\n\\nHuman: ...\\n\\nAssistant:"`` when it has none.
* `tokenize_dataset`: adds ``prompt_ids``, ``completion_ids`` (+EOS unless cut), ``z`` (point-wise / SFT)
  or ``prompt_ids``, ``chosen_ids``, ``rejected_ids`` (pairwise), keeping the untokenized columns.
* `PointwiseCollator`, `PairwiseCollator`: right-padded batches with ``labels`` = -100 on prompt and
  padding, for training and scoring; `left_pad_prompts` for generation. KTO's mismatched pairs are built
  by `ulma.kl_partners` (the one builder), around a `PointwiseCollator`.
* `length_grouped_batches`: batches of similar length (little padding) in a
  seeded random order; `padded_fraction`: the share of a batch's token slots that are padding.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch

from ulma.data.files import EmptyDatasetError

IGNORE_INDEX = -100
_PLAIN_ROLES = {"user": "Human", "assistant": "Assistant"}


# ----------------------------------------------------------------------------------------- rendering
def uses_chat_template(tokenizer) -> bool:
    return getattr(tokenizer, "chat_template", None) is not None


def render_prompt(messages: Sequence[dict[str, str]], tokenizer) -> str:
    """Prompt text for `messages` (ending with a user turn), ready for the assistant's reply.

    With a chat template: ``apply_chat_template(..., add_generation_prompt=True)``. Without one (the
    ``tiny`` tokenizer, Vicuna): ``"\\n\\nHuman: u1\\n\\nAssistant: a1 ... \\n\\nHuman: uN\\n\\nAssistant:"``,
    the layout the HH transcripts were written in; the reply then starts with a space.
    """
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    if uses_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    turns = "".join(f"\n\n{_PLAIN_ROLES.get(m['role'], m['role'].capitalize())}: {m['content']}" for m in messages)
    return turns + "\n\nAssistant:"


def _completion_text(text: str, tokenizer) -> str:
    # the plain template ends with "Assistant:"; HH transcripts put one space before the reply
    return text if uses_chat_template(tokenizer) else " " + text


def _encode_prompts(texts: list[str], tokenizer) -> list[list[int]]:
    # a chat template writes its own BOS; the plain template relies on the tokenizer adding it (Llama does)
    special = not uses_chat_template(tokenizer)
    return tokenizer(texts, add_special_tokens=special)["input_ids"]


def _encode_completions(texts: list[str], tokenizer, max_length: int) -> list[list[int]]:
    """Token ids of each reply + EOS; a reply longer than `max_length` is cut at the end, without EOS."""
    ids = tokenizer([_completion_text(t, tokenizer) for t in texts], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    out = []
    for seq in ids:
        seq = list(seq)
        if eos is not None and len(seq) + 1 <= max_length:
            out.append(seq + [eos])
        else:
            out.append(seq[:max_length])
    return out


def _fit_prompt(messages: list[dict[str, str]], ids: list[int], tokenizer, max_length: int) -> list[int]:
    """Cut a prompt from the start: drop whole earliest exchanges while it is too long and another user
    turn remains, then keep the last `max_length` tokens; the last user turn and the generation prompt
    always survive (intact when they fit)."""
    while len(ids) > max_length:
        next_user = next((j for j in range(1, len(messages)) if messages[j]["role"] == "user"), None)
        if next_user is None:
            break
        messages = messages[next_user:]
        ids = _encode_prompts([render_prompt(messages, tokenizer)], tokenizer)[0]
    return list(ids[-max_length:]) if len(ids) > max_length else list(ids)


def tokenize_prompts(prompts: list[list[dict[str, str]]], tokenizer, max_length: int) -> list[list[int]]:
    """Render and tokenize a list of prompts, each cut from the start to `max_length` tokens."""
    ids = _encode_prompts([render_prompt(p, tokenizer) for p in prompts], tokenizer)
    return [seq if len(seq) <= max_length else _fit_prompt(list(p), seq, tokenizer, max_length) for p, seq in zip(prompts, ids)]


def _tokenize_batch(batch: dict[str, list], tokenizer, view: str, max_prompt_length: int, max_completion_length: int):
    out: dict[str, list] = {"prompt_ids": tokenize_prompts(batch["prompt"], tokenizer, max_prompt_length)}
    if view == "pairwise":
        out["chosen_ids"] = _encode_completions(batch["chosen"], tokenizer, max_completion_length)
        out["rejected_ids"] = _encode_completions(batch["rejected"], tokenizer, max_completion_length)
    else:
        out["completion_ids"] = _encode_completions(batch["completion"], tokenizer, max_completion_length)
        out["z"] = [float(z) for z in batch["label"]] if view == "pointwise" else [1.0] * len(batch["prompt"])
    return out


_NEEDS = {"pairwise": ("prompt", "chosen", "rejected"), "pointwise": ("prompt", "completion", "label"), "sft": ("prompt", "completion")}


def tokenize_dataset(dataset, tokenizer, view: str, *, max_prompt_length: int, max_completion_length: int):
    """Add token ids to a view of `ulma.data.load` (via ``dataset.map``, so the result is cached).

    point-wise / SFT rows gain ``prompt_ids``, ``completion_ids`` and ``z`` (the label; 1.0 for SFT);
    pairwise rows gain ``prompt_ids``, ``chosen_ids``, ``rejected_ids``. Untokenized columns stay.
    """
    if view not in _NEEDS:
        raise ValueError(f"unknown view {view!r}; valid: {sorted(_NEEDS)}")
    if len(dataset) == 0:  # before the column check: an empty selection may have lost its columns
        raise EmptyDatasetError(f"nothing to tokenize: the {view} dataset has 0 rows (ulma.data.require_rows, "
                                f"called on the rows before the model loads, says which were skipped and why)")
    missing = [c for c in _NEEDS[view] if c not in dataset.column_names]
    if missing:
        raise ValueError(f"a {view} dataset needs columns {list(_NEEDS[view])}; missing {missing} "
                         f"(it has {dataset.column_names})")
    if max_prompt_length < 1 or max_completion_length < 1:
        raise ValueError("max_prompt_length and max_completion_length must be positive")
    return dataset.map(
        _tokenize_batch,
        batched=True,
        fn_kwargs={
            "tokenizer": tokenizer,
            "view": view,
            "max_prompt_length": max_prompt_length,
            "max_completion_length": max_completion_length,
        },
        desc=f"tokenize {view}",
    )


# ----------------------------------------------------------------------------------------- collators
def _right_pad(prompts: list[list[int]], completions: list[list[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """prompt + completion per row, right-padded: input_ids, attention_mask, labels (-100 off the completion)."""
    lengths = [len(p) + len(c) for p, c in zip(prompts, completions)]
    width = max(lengths)
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    labels = torch.full((len(prompts), width), IGNORE_INDEX, dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        seq = torch.tensor(list(p) + list(c), dtype=torch.long)
        input_ids[i, : len(seq)] = seq
        attention_mask[i, : len(seq)] = 1
        labels[i, len(p) : len(seq)] = seq[len(p) :]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _as_float(value: Any) -> float:
    return math.nan if value is None else float(value)


@dataclass
class PointwiseCollator:
    """Rows with ``prompt_ids``, ``completion_ids``, ``z`` -> a right-padded batch.

    Returns ``input_ids``, ``attention_mask``, ``labels`` (B, T) and ``z`` (B,) float32. When the rows
    have ``reference_logps`` (the cache), passes it on as (B,) float32, NaN where a row's value is None
    (e.g. ULMA's positives, never computed). KTO's mismatched pairs: `ulma.kl_partners.KLPairsCollator`
    around this collator (partners fixed per dataset, never a prompt's own reply).
    """

    pad_token_id: int

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        prompts = [r["prompt_ids"] for r in rows]
        completions = [r["completion_ids"] for r in rows]
        batch = _right_pad(prompts, completions, self.pad_token_id)
        batch["z"] = torch.tensor([float(r["z"]) for r in rows], dtype=torch.float32)
        if any("reference_logps" in r for r in rows):
            batch["reference_logps"] = torch.tensor([_as_float(r.get("reference_logps")) for r in rows], dtype=torch.float32)
        return batch


@dataclass
class PairwiseCollator:
    """Rows with ``prompt_ids``, ``chosen_ids``, ``rejected_ids`` -> one batch of 2B sequences.

    Rows 0..B-1 are prompt + chosen, rows B..2B-1 prompt + rejected (``input_ids``, ``attention_mask``,
    ``labels``). When the rows have ``reference_logps`` (the cache: ``[chosen, rejected]`` per pair), it
    comes out as (2B,) float32 in the same order, NaN where missing.
    """

    pad_token_id: int

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        prompts = [r["prompt_ids"] for r in rows]
        completions = [r["chosen_ids"] for r in rows] + [r["rejected_ids"] for r in rows]
        batch = _right_pad(prompts + prompts, completions, self.pad_token_id)
        if any("reference_logps" in r for r in rows):
            pairs = [(None, None) if r.get("reference_logps") is None else r["reference_logps"] for r in rows]
            values = [_as_float(p[0]) for p in pairs] + [_as_float(p[1]) for p in pairs]
            batch["reference_logps"] = torch.tensor(values, dtype=torch.float32)
        return batch


def left_pad_prompts(prompt_ids_list: Sequence[Sequence[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Left-padded ``input_ids`` and ``attention_mask`` (B, T) for decoding (`ulma.scoring.greedy_decode`,
    ``model.generate``): new tokens follow every prompt directly."""
    width = max(len(p) for p in prompt_ids_list)
    input_ids = torch.full((len(prompt_ids_list), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompt_ids_list), width), dtype=torch.long)
    for i, p in enumerate(prompt_ids_list):
        if len(p):
            input_ids[i, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
            attention_mask[i, width - len(p) :] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


# ------------------------------------------------------------------------------------ length grouping
def row_length(row: dict[str, Any]) -> int:
    """Token slots a tokenized row takes in its collated batch: prompt + completion (point-wise / SFT), or
    prompt + the longer of chosen and rejected (pairwise: both are padded to one width)."""
    if "completion_ids" in row:
        return len(row["prompt_ids"]) + len(row["completion_ids"])
    return len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"]))


def length_sorted_batches(rows: Sequence[dict[str, Any]], batch_size: int) -> list[list[int]]:
    """Row indices sorted by `row_length` and cut into batches: the least padding any batching of these rows
    can have, for passes whose order does not change their numbers (evaluation: results go back to row
    order; the reward model's held-out pass: sums over rows)."""
    order = sorted(range(len(rows)), key=lambda i: row_length(rows[i]))
    return [order[k:k + batch_size] for k in range(0, len(order), batch_size)]


def length_grouped_batches(lengths: Sequence[int], batch_size: int, *, seed: int = 0,
                           group_batches: int = 50) -> list[list[int]]:
    """Row indices cut into batches of similar length, in a seeded random order; every row exactly once.

    The rows are shuffled (seeded), cut into groups of `group_batches` · `batch_size` rows, each group is
    sorted by length (longest first) and cut into batches, and the batches are shuffled (seeded): the
    recipe of transformers' `LengthGroupedSampler` (megabatches), so that the order of batches stays
    random across training while a batch holds rows of similar length (little padding). Only the last
    batch may be short. The same seed gives the same batches.
    """
    if batch_size < 1 or group_batches < 1:
        raise ValueError(f"batch_size and group_batches must be positive, got {batch_size}, {group_batches}")
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    group = batch_size * group_batches
    batches = []
    for start in range(0, len(order), group):
        chunk = sorted(order[start:start + group], key=lambda i: -lengths[i])
        batches += [chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size)]
    # the short batch (at most one: the end of the last group) stays last, so that every batch but one is full
    full, short = [b for b in batches if len(b) == batch_size], [b for b in batches if len(b) < batch_size]
    rng.shuffle(full)
    return full + short


def random_batches(n: int, batch_size: int, *, seed: int = 0) -> list[list[int]]:
    """Row indices in a seeded random order cut into batches: the padding baseline of `length_grouped_batches`."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[k:k + batch_size] for k in range(0, n, batch_size)]


def padded_fraction(batches: Iterable[Sequence[int]]) -> float:
    """The share of token slots that are padding, over batches given as their rows' lengths (`row_length`):
    Σ (max length · rows − Σ lengths) / Σ (max length · rows). 0 when nothing is padded (or no slot)."""
    pads = slots = 0
    for lengths in batches:
        if len(lengths):
            width = max(lengths)
            slots += width * len(lengths)
            pads += width * len(lengths) - sum(lengths)
    return pads / slots if slots else 0.0
