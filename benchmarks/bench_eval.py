#!/usr/bin/env python
"""Evaluation and padding cost cuts, each measured before/after in one run (one process, one model).

Every cut is timed against the way it was done without it, on the same rows, interleaved in one process
(so that the machine's load affects both alike):

* ``padding_train``: training batches of the point-wise train view, seeded random batches against
  `ulma.batching.length_grouped_batches` (same batch size): the padded fraction of token slots and the
  slots a step pays for (no model: lengths only);
* ``padding_eval``: the pairwise scoring pass in batches of random order against batches sorted by length
  (`ulma.batching.length_sorted_batches`): padded fraction and time;
* ``one_pass``: perplexity from its own SFT pass + preference accuracy (before) against the pairwise pass
  alone, which gives the chosen replies' NLL (after); checks that both give the same NLL;
* ``reference_cache``: the base model's reference log-probs computed (a miss: the first method) against
  read from the evaluation cache (a hit: every later method);
* ``generation``: one prompt at a time against left-padded batches; without and with the KV cache;
  without and with stopping at EOS (per row; the batch ends when every row has ended);
* ``merged_adapters`` (a cut tried and not adopted): a LoRA policy as evaluation runs it, adapters
  unmerged, against the same adapters merged into the weights (peft's ``merge_and_unload``: W + (α/r)·BA,
  one matmul per layer): generation and the scoring pass, alternated twice (unmerged, merged, merged,
  unmerged) so that a drift in the machine's load weighs on both; checks the replies and log-probs agree.
  The adapter is a run's (``--adapter``) or the fresh policy's with a seeded random B.

* ``distinct_sequences``: the preference pass as pair batches (chosen and rejected padded to one width,
  every pair's two sequences scored, as it ran before) against each distinct sequence scored once in
  batches of twice as many sequences sorted by their own length (`ulma.scoring._pair_logps`), on HH and on
  QA-feedback test pairs (whose answers recur across a question's pairs): sequences scored, padded
  fraction, time, and the largest difference in the pairs' log-prob sums.

* ``ended_rows``: greedy decoding as transformers' ``generate`` runs it (every row decoded until the batch's
  last one ends; evaluation ran it this way before) against `ulma.scoring.greedy_decode` (a row leaves the
  batch at its EOS), alternated twice on the same prompts and batches: time, decoding row-steps (one row
  through one forward), and whether the replies are the same; with ``--adapter``, a trained run's policy,
  whose recorded replies (the run's ``generations.jsonl``, generated beside all its test prompts) are
  compared too.

* ``reward_model_eval``: the RLHF reward model's held-out pass (`ulma.reward_model.evaluate_reward_model`)
  in row order, as it ran before, against batches sorted by length: padded fraction and time; checks the
  accuracy is the same.

``--cases`` runs some of them (padding_train and padding_eval share one case, ``padding``; the reference
cache is measured with ``one_pass``); a model's earlier results in ``--json`` are kept for the cases not run.

Examples::

    python benchmarks/bench_eval.py --json results/benchmarks/eval_cpu.json                 # tiny
    python benchmarks/bench_eval.py --model smollm2 --json results/benchmarks/eval_cpu.json  # adds smollm2
    python benchmarks/bench_eval.py --model smollm2 --pairs 16 --eval-batch-size 4 --prompts 4 --max-new-tokens 16
    python benchmarks/bench_eval.py --model smollm2 --cases merged_adapters --prompts 32 --max-new-tokens 64 \
        --threads 2 --json results/benchmarks/eval_cpu.json
    python benchmarks/bench_eval.py --model smollm2 --cases ended_rows --prompts 64 --threads 2 \
        --adapter <run>/adapter --json results/benchmarks/eval_cpu.json

On a 2-core machine shared with other work, SmolLM2's scoring pass of 16 pairs at mini's lengths takes
about a minute on one thread: the smollm2 column needs a free machine (or the small settings above).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ulma import data  # noqa: E402
from ulma.batching import (PairwiseCollator, left_pad_prompts, length_grouped_batches,  # noqa: E402
                           length_sorted_batches, padded_fraction, random_batches, row_length, tokenize_dataset,
                           tokenize_prompts)
from ulma.config import load_profile  # noqa: E402
from ulma.scoring import batch_sequence_lengths, generate, preference_accuracy, sequence_nll  # noqa: E402
from ulma.logprobs import model_logps  # noqa: E402
from ulma.models import apply_lora_from, load_model_and_tokenizer  # noqa: E402

PROFILE_OF = {"tiny": "tiny", "smollm2": "mini"}  # the profile whose lengths and batch sizes a model runs with
CASES = ("padding", "one_pass", "generation", "merged_adapters", "ended_rows", "reward_model_eval",
         "distinct_sequences")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="bench_eval.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="tiny | smollm2 | tiny,smollm2 (default tiny)")
    p.add_argument("--data-dir", default="bundled", help="data root (default: the repository's data/, real HH)")
    p.add_argument("--pairs", type=int, default=None, help="test pairs scored (default 64 tiny, 16 smollm2)")
    p.add_argument("--prompts", type=int, default=None, help="prompts generated for (default 16 tiny, 8 smollm2)")
    p.add_argument("--train-rows", type=int, default=2048, help="train rows for the padding of training batches")
    p.add_argument("--eval-batch-size", type=int, default=None, help="scoring batch size (default: the profile's)")
    p.add_argument("--generation-batch-size", type=int, default=None, help="default: the profile's")
    p.add_argument("--max-new-tokens", type=int, default=None, help="generation budget (default: the profile's)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared machine)")
    p.add_argument("--adapter", type=Path, default=None,
                   help="merged_adapters, ended_rows: a trained run's adapter/ folder (default: seeded random B; "
                        "ended_rows: the fresh policy)")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)} (default all)")
    p.add_argument("--json", type=Path, default=None, help="write (or update, per model and case) the results here")
    return p.parse_args(argv)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def score(model, rows, batches, pad_id) -> np.ndarray:
    """The pair-batched policy pass over the given batches (each pair's chosen and rejected in one batch,
    as evaluation ran it before the distinct-sequence cut): (n, 2) sequence sums in row order."""
    collator, sums = PairwiseCollator(pad_id), np.zeros((len(rows), 2))
    with torch.no_grad():
        for batch_ids in batches:
            batch = collator([rows[i] for i in batch_ids])
            v = model_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"],
                            reduction="sum").logps.double().numpy()
            sums[batch_ids] = np.stack([v[:len(batch_ids)], v[len(batch_ids):]], axis=1)
    return sums


def raw_generate(model, tokenizer, prompt_ids, *, batch_size, max_new_tokens, use_cache, eos):
    """Greedy decoding without one of the cuts (the baseline): (seconds, decoding steps summed over batches)."""
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    steps, start = 0, time.perf_counter()
    with torch.no_grad():
        for k in range(0, len(order), batch_size):
            batch = left_pad_prompts([prompt_ids[i] for i in order[k:k + batch_size]], tokenizer.pad_token_id)
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 use_cache=use_cache, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
            steps += out.shape[1] - batch["input_ids"].shape[1]
    return time.perf_counter() - start, steps


def ratio(before: float, after: float) -> float | None:
    return round(before / after, 3) if after else None


def bench_model(name: str, args, cases: set[str]) -> dict:
    profile = load_profile(PROFILE_OF[name])
    tc, ev = profile.train, profile.eval
    n_pairs = args.pairs or (64 if name == "tiny" else 16)
    n_prompts = args.prompts or (16 if name == "tiny" else 8)
    lengths = {"max_prompt_length": tc.max_prompt_length, "max_completion_length": tc.max_completion_length}
    t0 = time.perf_counter()
    base, tokenizer = load_model_and_tokenizer(tc.model, dtype=tc.dtype)
    policy = apply_lora_from(base, tc).eval()  # a fresh run's policy (eval mode: no dropout)
    load_s = time.perf_counter() - t0
    out: dict = {"model": tc.model, "profile": profile.name, "load_s": round(load_s, 2)}

    if "padding" in cases:
        out.update(bench_padding_train(tokenizer, tc, lengths, args))

    # the test pairs
    pairs = data.load("hh", "pairwise", ev.test_split, args.data_dir, on_bad_row="skip")
    pairs = pairs.select(range(min(n_pairs, len(pairs))))
    tokenized = tokenize_dataset(pairs, tokenizer, "pairwise", **lengths)
    rows = tokenized.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"]).to_list()
    ebs, pad = args.eval_batch_size or ev.eval_batch_size, tokenizer.pad_token_id
    sorted_e = length_sorted_batches(rows, ebs)
    score(policy, rows, sorted_e[:1], pad)  # warm-up
    sft_test = data.load("hh", "sft", ev.test_split, args.data_dir, on_bad_row="skip")
    prompts = sft_test["prompt"][:n_prompts]
    gbs, budget = args.generation_batch_size or ev.generation_batch_size, args.max_new_tokens or ev.max_new_tokens
    generate(policy, tokenizer, prompts[:1], max_new_tokens=2, progress=False)  # warm-up
    if "padding" in cases:
        out["padding_eval"] = bench_padding_eval(policy, rows, ebs, pad)
    if "one_pass" in cases:
        out.update(bench_one_pass(policy, tokenizer, pairs, tokenized, ebs, lengths))
    if "generation" in cases:
        out["generation"] = bench_generation(policy, tokenizer, prompts, tc, gbs, budget)
    if "merged_adapters" in cases:
        out["merged_adapters"] = bench_merged(policy, tokenizer, prompts, rows, sorted_e, tc, gbs, budget, pad,
                                              args.adapter)
        out["merged_adapters"]["adapter"] = "a trained run's" if args.adapter else "seeded random B (std 0.02)"
    if "ended_rows" in cases:
        out["ended_rows"] = bench_ended_rows(policy, tokenizer, prompts, tc, gbs, budget, args.adapter)
    if "reward_model_eval" in cases:
        out["reward_model_eval"] = bench_reward_model_eval(policy, rows, ebs, pad)
    if "distinct_sequences" in cases:
        out["distinct_sequences"] = {d: bench_distinct_sequences(policy, tokenizer, d, n_pairs, ebs, lengths, args)
                                     for d in ("hh", "qa_feedback")}
    return out


def bench_padding_train(tokenizer, tc, lengths, args) -> dict:
    """(a) padding of training batches: lengths only."""
    train = data.load("hh", "pointwise", tc.train_split, args.data_dir, on_bad_row="skip")
    train = train.select(range(min(args.train_rows, len(train))))
    train_rows = tokenize_dataset(train, tokenizer, "pointwise", **lengths).select_columns(
        ["prompt_ids", "completion_ids"]).to_list()
    lens = [row_length(r) for r in train_rows]
    bs = tc.per_device_train_batch_size
    as_lengths = lambda batches: [[lens[i] for i in b] for b in batches]  # noqa: E731
    rand, grouped = random_batches(len(lens), bs, seed=0), length_grouped_batches(lens, bs, seed=0)
    slots = lambda batches: sum(max(b) * len(b) for b in as_lengths(batches))  # noqa: E731
    return {"padding_train": {
        "rows": len(lens), "batch_size": bs,
        "padded_fraction_random": round(padded_fraction(as_lengths(rand)), 4),
        "padded_fraction_grouped": round(padded_fraction(as_lengths(grouped)), 4),
        "token_slots_random": slots(rand), "token_slots_grouped": slots(grouped),
        "slots_ratio_random_over_grouped": ratio(slots(rand), slots(grouped)),
    }}


def bench_padding_eval(policy, rows, ebs, pad) -> dict:
    """(a) padding of the evaluation pass: random order against sorted by length."""
    rand_e, sorted_e = random_batches(len(rows), ebs, seed=0), length_sorted_batches(rows, ebs)
    _, t_rand = timed(lambda: score(policy, rows, rand_e, pad))
    _, t_sorted = timed(lambda: score(policy, rows, sorted_e, pad))
    return {
        "pairs": len(rows), "batch_size": ebs,
        "padded_fraction_random": round(padded_fraction(batch_sequence_lengths(rows, rand_e)), 4),
        "padded_fraction_sorted": round(padded_fraction(batch_sequence_lengths(rows, sorted_e)), 4),
        "policy_pass_random_s": round(t_rand, 3), "policy_pass_sorted_s": round(t_sorted, 3),
        "speedup": ratio(t_rand, t_sorted),
    }


def bench_one_pass(policy, tokenizer, pairs, tokenized, ebs, lengths) -> dict:
    """(b) one policy pass for perplexity and preference accuracy; the reference cache."""
    pad = tokenizer.pad_token_id
    cache = Path(tempfile.mkdtemp(prefix="bench_eval_")) / "eval-pairs.safetensors"
    miss, t_miss = timed(lambda: preference_accuracy(policy, tokenized, method="dpo", reference="adapters",
                                                     batch_size=ebs, pad_token_id=pad, reference_cache=cache))
    hit, t_hit = timed(lambda: preference_accuracy(policy, tokenized, method="ulma", reference=None,
                                                   batch_size=ebs, pad_token_id=pad, reference_cache=cache))
    assert (miss["reference_cache"], hit["reference_cache"]) == ("miss", "hit")
    sft = tokenize_dataset(pairs.rename_column("chosen", "completion").remove_columns("rejected"), tokenizer,
                           "sft", **lengths)
    (nll, _), t_sft = timed(lambda: sequence_nll(policy, tokenizer, sft, batch_size=ebs))
    same = float(np.max(np.abs(np.asarray(hit["chosen_nll"]) - nll)))
    return {
        "one_pass": {
            "preference_pass_s": round(t_hit, 3), "separate_perplexity_pass_s": round(t_sft, 3),
            "before_s": round(t_hit + t_sft, 3), "after_s": round(t_hit, 3), "speedup": ratio(t_hit + t_sft, t_hit),
            "chosen_nll_max_abs_difference": same, "same_nll": same < 1e-3,
        },
        "reference_cache": {"miss_s": round(t_miss, 3), "hit_s": round(t_hit, 3), "speedup": ratio(t_miss, t_hit)},
    }


def bench_generation(policy, tokenizer, prompts, tc, gbs, budget) -> dict:
    """(b) generation: batching, the KV cache and stopping at EOS, each against its absence."""
    ids = tokenize_prompts([list(p) for p in prompts], tokenizer, tc.max_prompt_length)
    eos = [tokenizer.eos_token_id] + [i for i in np.atleast_1d(policy.generation_config.eos_token_id or []).tolist()
                                      if i != tokenizer.eos_token_id]
    replies, t_after = timed(lambda: generate(policy, tokenizer, prompts, max_new_tokens=budget, batch_size=gbs,
                                              max_prompt_length=tc.max_prompt_length, progress=False, details=True))
    t_one, _ = raw_generate(policy, tokenizer, ids, batch_size=1, max_new_tokens=budget, use_cache=True, eos=eos)
    t_nocache, _ = raw_generate(policy, tokenizer, ids, batch_size=gbs, max_new_tokens=budget, use_cache=False, eos=eos)
    t_noeos, steps_noeos = raw_generate(policy, tokenizer, ids, batch_size=gbs, max_new_tokens=budget, use_cache=True,
                                        eos=[])
    t_eos, steps_eos = raw_generate(policy, tokenizer, ids, batch_size=gbs, max_new_tokens=budget, use_cache=True,
                                    eos=eos)
    return {
        "prompts": len(ids), "batch_size": gbs, "max_new_tokens": budget,
        "mean_reply_tokens": round(sum(g.num_tokens for g in replies) / len(replies), 2),
        "truncated_fraction": round(sum(g.truncated for g in replies) / len(replies), 3),
        "prompt_padded_fraction": round(padded_fraction(
            [[len(ids[i]) for i in b] for b in [sorted(range(len(ids)), key=lambda i: len(ids[i]))[k:k + gbs]
                                                 for k in range(0, len(ids), gbs)]]), 4),
        "ulma_generate_s": round(t_after, 3),
        "one_prompt_at_a_time_s": round(t_one, 3), "batched_speedup": ratio(t_one, t_after),
        "no_kv_cache_s": round(t_nocache, 3), "kv_cache_speedup": ratio(t_nocache, t_after),
        "no_eos_stop_s": round(t_noeos, 3), "eos_stop_s": round(t_eos, 3), "eos_stop_speedup": ratio(t_noeos, t_eos),
        "decode_steps_no_eos_stop": steps_noeos, "decode_steps_eos_stop": steps_eos,
    }


def bench_merged(policy, tokenizer, prompts, rows, batches, tc, gbs, budget, pad, adapter=None) -> dict:
    """(c) a trained LoRA policy unmerged (as evaluation runs it) against its adapters merged: a run's
    `adapter` folder, or the fresh policy with a seeded random B."""
    if adapter is not None:
        from peft import PeftModel

        base, _ = load_model_and_tokenizer(tc.model, dtype=tc.dtype)  # the policy's base carries its own LoRA
        trained = PeftModel.from_pretrained(base, Path(adapter).expanduser()).eval()
    else:
        trained = copy.deepcopy(policy)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            for name, p in trained.named_parameters():
                if "lora_B" in name:  # a fresh adapter's B is 0: merged or not, the base model's function
                    torch.nn.init.normal_(p, std=0.02)
    merged = copy.deepcopy(trained).merge_and_unload()
    assert merged is not trained and not hasattr(merged, "disable_adapter")
    gen = lambda m: generate(m, tokenizer, prompts, max_new_tokens=budget, batch_size=gbs,  # noqa: E731
                             max_prompt_length=tc.max_prompt_length, progress=False, details=True)
    times = {"unmerged": {"generate": [], "score": []}, "merged": {"generate": [], "score": []}}
    replies = {}
    for which in ("unmerged", "merged", "merged", "unmerged"):
        model = trained if which == "unmerged" else merged
        replies[which], t = timed(lambda: gen(model))
        times[which]["generate"].append(t)
        _, t = timed(lambda: score(model, rows, batches, pad))
        times[which]["score"].append(t)
    collated = PairwiseCollator(pad)([rows[i] for i in batches[0]])
    with torch.no_grad():
        a, b = (model_logps(m, collated["input_ids"], collated["attention_mask"], collated["labels"]).logps
                for m in (trained, merged))
    gen_before, gen_after = (sum(times[w]["generate"]) / 2 for w in ("unmerged", "merged"))
    score_before, score_after = (sum(times[w]["score"]) / 2 for w in ("unmerged", "merged"))
    return {
        "prompts": len(prompts), "batch_size": gbs, "max_new_tokens": budget, "pairs": len(rows),
        "generate_unmerged_s": round(gen_before, 3), "generate_merged_s": round(gen_after, 3),
        "generate_speedup": ratio(gen_before, gen_after),
        "score_unmerged_s": round(score_before, 3), "score_merged_s": round(score_after, 3),
        "score_speedup": ratio(score_before, score_after),
        "each_run_s": {w: {k: [round(t, 3) for t in v] for k, v in d.items()} for w, d in times.items()},
        "same_replies": sum(x.text == y.text for x, y in zip(replies["unmerged"], replies["merged"])),
        "sequence_logp_max_abs_difference": float((a - b).abs().max()),
    }


def hf_generate(model, tokenizer, prompts, *, max_new_tokens, batch_size, max_prompt_length):
    """Evaluation's greedy decoding as it ran before `greedy_decode`: transformers' ``generate`` on the same
    left-padded, length-sorted batches, each row cut at its first EOS. (replies in input order, row-steps)."""
    from transformers import GenerationConfig

    from ulma.scoring import _eos_ids

    ids = tokenize_prompts([list(p) for p in prompts], tokenizer, max_prompt_length)
    eos = _eos_ids(model, tokenizer)
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                              pad_token_id=tokenizer.pad_token_id, eos_token_id=eos,
                              bos_token_id=getattr(tokenizer, "bos_token_id", None), use_cache=True)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    replies, row_steps = [""] * len(ids), 0
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = left_pad_prompts([ids[i] for i in chunk], tokenizer.pad_token_id)
            new = model.generate(**batch, generation_config=config)[:, batch["input_ids"].shape[1]:]
            row_steps += new.numel()
            for i, tokens in zip(chunk, new.tolist()):
                cut = next((k for k, t in enumerate(tokens) if t in eos), len(tokens))
                replies[i] = tokenizer.decode(tokens[:cut], skip_special_tokens=True).strip()
    return replies, row_steps


def bench_ended_rows(policy, tokenizer, prompts, tc, gbs, budget, adapter=None) -> dict:
    """(d) rows that have ended leave the batch (`greedy_decode`) against transformers' ``generate``."""
    model = policy
    if adapter is not None:
        from peft import PeftModel

        base, _ = load_model_and_tokenizer(tc.model, dtype=tc.dtype)
        model = PeftModel.from_pretrained(base, Path(adapter).expanduser()).eval()
    before = lambda: hf_generate(model, tokenizer, prompts, max_new_tokens=budget, batch_size=gbs,  # noqa: E731
                                 max_prompt_length=tc.max_prompt_length)
    after = lambda: generate(model, tokenizer, prompts, max_new_tokens=budget, batch_size=gbs,  # noqa: E731
                             max_prompt_length=tc.max_prompt_length, progress=False, details=True)
    times, replies = {"generate": [], "greedy_decode": []}, {}
    for which in ("generate", "greedy_decode", "greedy_decode", "generate"):
        replies[which], t = timed(before if which == "generate" else after)
        times[which].append(t)
    (hf_replies, hf_row_steps), ours = replies["generate"], replies["greedy_decode"]
    # a row takes a forward for every token it generates, its EOS included
    row_steps = sum(g.num_tokens + (not g.truncated) for g in ours)
    t_before, t_after = (sum(times[w]) / 2 for w in ("generate", "greedy_decode"))
    out = {
        "prompts": len(prompts), "batch_size": gbs, "max_new_tokens": budget,
        "policy": (f"a trained run's adapter ({Path(adapter).expanduser().resolve().parent.name})" if adapter
                   else "the fresh policy (LoRA B = 0: the base model)"),
        "generate_s": round(t_before, 3), "greedy_decode_s": round(t_after, 3), "speedup": ratio(t_before, t_after),
        "each_run_s": {w: [round(t, 3) for t in v] for w, v in times.items()},
        "row_steps_generate": hf_row_steps, "row_steps_greedy_decode": row_steps,
        "row_steps_saved_fraction": round(1 - row_steps / hf_row_steps, 4),
        "mean_reply_tokens": round(sum(g.num_tokens for g in ours) / len(ours), 2),
        "truncated_fraction": round(sum(g.truncated for g in ours) / len(ours), 3),
        "same_replies": sum(a == b.text for a, b in zip(hf_replies, ours)),
    }
    recorded_path = Path(adapter).expanduser().parent / "generations.jsonl" if adapter else None
    if recorded_path is not None and recorded_path.exists():
        rows = [json.loads(line) for line in recorded_path.read_text().splitlines()[:len(prompts)]]
        if [r["prompt"] for r in rows] == [list(p) for p in prompts]:  # the run judged these prompts first
            recorded = [r["generation"] for r in rows]
            out["same_as_recorded"] = {"generate": sum(a == b for a, b in zip(hf_replies, recorded)),
                                       "greedy_decode": sum(a.text == b for a, b in zip(ours, recorded))}
    return out


def bench_reward_model_eval(policy, rows, ebs, pad) -> dict:
    """(d) the reward model's held-out pass: row order (before) against length-sorted batches (after)."""
    from ulma.reward_model import RewardModel, _batches, _score_batch, evaluate_reward_model

    reward_model = RewardModel(copy.deepcopy(policy)).eval()
    row_order = list(_batches(len(rows), ebs))  # no generator: row order, as the pass ran before

    def before():
        with torch.no_grad():
            return [_score_batch(reward_model, [rows[i] for i in b], "pairwise", pad) for b in row_order]

    scores, t_before = timed(before)
    after, t_after = timed(lambda: evaluate_reward_model(reward_model, rows, "pairwise", pad, ebs))
    accuracy = float(sum(int((w > l).sum()) for w, l in scores)) / len(rows)
    return {
        "pairs": len(rows), "batch_size": ebs,
        "padded_fraction_row_order": round(padded_fraction(batch_sequence_lengths(rows, row_order)), 4),
        "padded_fraction_sorted": round(padded_fraction(batch_sequence_lengths(rows, length_sorted_batches(rows, ebs))), 4),
        "row_order_s": round(t_before, 3), "sorted_s": round(t_after, 3), "speedup": ratio(t_before, t_after),
        "same_accuracy": abs(accuracy - after["accuracy"]) < 1e-6,
    }


def bench_distinct_sequences(policy, tokenizer, dataset, n_pairs, ebs, lengths, args) -> dict:
    """(e) the preference pass: pair batches, every sequence (before), against distinct sequences (after)."""
    from ulma.scoring import _pair_logps

    pairs = data.load(dataset, "pairwise", load_profile("mini").eval.test_split, args.data_dir, on_bad_row="skip")
    pairs = pairs.select(range(min(n_pairs, len(pairs))))
    rows = tokenize_dataset(pairs, tokenizer, "pairwise", **lengths).select_columns(
        ["prompt_ids", "chosen_ids", "rejected_ids"]).to_list()
    pad, batches = tokenizer.pad_token_id, length_sorted_batches(rows, ebs)
    old, t_before = timed(lambda: score(policy, rows, batches, pad))
    new, t_after = timed(lambda: _pair_logps(policy, rows, pad, ebs, None))
    return {
        "pairs": len(rows), "batch_size_pairs": ebs,
        "sequences_before": 2 * len(rows), "sequences_after": new["sequences"],
        "padded_fraction_before": round(padded_fraction(batch_sequence_lengths(rows, batches)), 4),
        "padded_fraction_after": round(padded_fraction(new["batch_lengths"]), 4),
        "before_s": round(t_before, 3), "after_s": round(t_after, 3), "speedup": ratio(t_before, t_after),
        "max_abs_logp_difference": float(np.max(np.abs(old - new["policy"]))),
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    existing = json.loads(args.json.read_text()) if args.json and args.json.exists() else {}
    models = dict(existing.get("models", {}))
    cases = {c for c in args.cases.split(",") if c}
    if cases - set(CASES):
        raise SystemExit(f"bench_eval.py: --cases {args.cases}: each must be one of {', '.join(CASES)}")
    for name in [m for m in args.model.split(",") if m]:
        if name not in PROFILE_OF:
            raise SystemExit(f"bench_eval.py: --model {name}: must be one of {', '.join(PROFILE_OF)}")
        start = time.perf_counter()
        print(f"[eval] {name} (load {os.getloadavg()})", flush=True)
        models[name] = {**models.get(name, {}), **bench_model(name, args, cases)}
        models[name]["bench_s"] = round(time.perf_counter() - start, 1)
        # an --adapter under the home folder is written as ~/...: no record names this machine's folders
        models[name]["command"] = " ".join(["python", "benchmarks/bench_eval.py"] + (argv or sys.argv[1:])).replace(
            str(Path.home()), "~")
        models[name]["when"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        models[name]["load_average"] = list(os.getloadavg())
    out = {"benchmark": "benchmarks/bench_eval.py", "threads": args.threads,
           "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__},
           "models": models}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
