#!/usr/bin/env python
"""How many new tokens do greedy replies need? The evaluation's token budget, measured on the base model.

The fair protocol (docs/EXPERIMENTS.md) asks for a generation budget that lets >= 95 % of replies end at
EOS, so that the judge compares finished replies. This script generates greedy replies of a profile's
model to the first N test prompts of a dataset with a high cap and reports the share cut by the cap and
the quantiles of the reply lengths (new tokens, up to the EOS), i.e. which budget would let 95 % finish.

    python benchmarks/generation_budget.py --prompts 64 --cap 320 --json results/mini/calibration/generation_budget.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ulma import data
from ulma.config import load_profile
from ulma.scoring import generate
from ulma.models import load_model_and_tokenizer


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="mini")
    parser.add_argument("--dataset", default="hh")
    parser.add_argument("--prompts", type=int, default=64, help="the first N test prompts")
    parser.add_argument("--cap", type=int, default=320, help="max_new_tokens of this measurement")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    prof = load_profile(args.profile)
    rows = data.load(args.dataset, "sft", prof.eval.test_split, data_dir=prof.train.data_dir)
    prompts = [r["prompt"] for r in rows.select(range(min(args.prompts, len(rows))))]
    model, tokenizer = load_model_and_tokenizer(prof.train.model, dtype=prof.train.dtype)
    t0 = time.perf_counter()
    replies = generate(model, tokenizer, prompts, max_new_tokens=args.cap, batch_size=args.batch_size,
                       max_prompt_length=prof.train.max_prompt_length, progress=False, details=True)
    seconds = time.perf_counter() - t0
    lengths = np.array([r.num_tokens for r in replies])
    cut = np.array([r.truncated for r in replies])
    out = {
        "profile": args.profile, "model": prof.train.model, "dataset": args.dataset,
        "split": prof.eval.test_split, "prompts": len(prompts), "cap": args.cap, "decoding": "greedy",
        "seconds": round(seconds, 1), "threads": args.threads,
        "truncated_fraction": float(cut.mean()), "mean_new_tokens": float(lengths.mean()),
        "quantiles_new_tokens": {str(q): float(np.quantile(lengths, q)) for q in (0.5, 0.8, 0.9, 0.95)},
        "budget_for_95pct": None if cut.mean() > 0.05 else float(np.quantile(lengths, 0.95)),
        "profile_max_new_tokens": prof.eval.max_new_tokens,
    }
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
