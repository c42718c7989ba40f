#!/usr/bin/env python
"""Side-by-side training benchmark: ulma's trainer against TRL's (DPOTrainer, KTOTrainer), same everything.

What is compared (``--cases``, comma-separated; default ``dpo,pointwise``):

* ``dpo``: pairwise DPO. ulma ``dpo`` with the reference = the same network with its LoRA adapters disabled
  (``reference=adapters``) and with precomputed reference log-probs (``reference=cached``), against TRL's
  ``DPOTrainer`` given a ``peft_config`` (TRL then also takes the reference from the adapter-disabled model)
  and, for the cached variant, ``DPOTrainer(precompute_ref_log_probs=True)``.
* ``pointwise``: point-wise DPO and ULMA (both with ``reference=adapters`` and ``reference=cached``) against
  TRL's ``KTOTrainer(loss_type="apo_zero_unpaired")``, the closest unpaired loss TRL has (a sigmoid of
  the log-ratio per sample, no KL estimate), on the same balanced point-wise batches (each pair gives its
  chosen reply as a positive and its rejected reply as a negative, so every batch is half and half).

The same model (SmolLM2-135M-Instruct + LoRA r 8, alpha 32, dropout 0.1 on q_proj/v_proj; float32 on CPU),
the same token ids (tokenized once by ``ulma.batching`` and handed to TRL as already-tokenized rows, so both
trainers see identical sequences), the same batches in the same order (sequential sampler), the same
optimiser (AdamW, lr 1e-5, no weight decay, grad-norm clip 1.0), no gradient checkpointing, no mixed
precision and the LoRA dropout left on for both (TRL's defaults ``gradient_checkpointing=True``, ``bf16=True``
and ``disable_dropout=True`` are switched off so that the two do the same arithmetic).

Design (why the numbers are honest):

* every (trainer, method, reference) run is its own subprocess, so peak resident memory (``ru_maxrss``; on
  CUDA ``torch.cuda.max_memory_allocated``) belongs to that trainer alone and nothing is shared or warm;
* runs alternate between ulma and TRL, and with ``--repeats N`` the order is reversed on every other repeat
  (A B C, C B A, ...), so slow drift of a shared machine hits both sides alike;
* a step's time is the wall time between consecutive ``on_step_end`` callbacks: data loading, collation,
  forwards, backward, clipping, optimiser and scheduler all count; the first ``--warmup`` steps are dropped
  and the median of the rest is reported (plus min/max and all raw times);
* tokens/s counts real (non-padding) tokens of the batch, prompt included, divided by the median step;
* each step's process CPU time (user + system, all threads) is recorded too (``cpu_s``,
  ``tokens_per_cpu_s``, and ``value_cpu_time`` beside every ratio): on a machine shared with other jobs
  the wall time depends on their load, the CPU time much less (use ``--threads 1`` there: with more
  threads than free cores, OpenMP's waiting threads make wall times erratic);
* reference log-prob caches are filled before training (both sides): their cost is reported separately
  (``setup_s``), not folded into the step.

Sequences: ulma.batching cuts the prompt from its start (by whole exchanges, then tokens) to ``--max-length``
− ``--max-completion-length`` tokens and the reply to ``--max-completion-length`` (EOS included). By default
(``--select long``) the pairs of HH ``mini_train`` with the longest prompts after cutting are used (in their
original order), so sequences come close to ``--max-length`` (HH replies are short: mostly 10 to 64 tokens).

Other modes:

* ``--device cuda --random-init --dtype bfloat16``: the same cases on a GPU, with a randomly initialised
  model of SmolLM2's architecture (weights cannot travel to the GPU machine); peak memory is CUDA max
  allocated.
* ``--flops``: tokens/s and model FLOPs utilisation of full (no LoRA) bf16 training of a ~1.2B-parameter
  Llama configuration (Llama-3.2-1B shapes) on CUDA through ulma's trainer: 6·N·tokens (+2·N·tokens per
  reference forward) / step time / (``--peak-tflops`` · 1e12), N = parameters used in matmuls.
* ``--profile``: one steady step of every run under ``torch.profiler``, with ``record_function`` ranges
  around data collation, policy forward, reference forward, loss (log-probs and loss math around the
  forwards), backward, gradient clipping and optimiser step; writes the breakdown to ``--profile-json``.

Examples::

    python benchmarks/bench_trl.py --json results/benchmarks/trl_cpu.json            # CPU, all cases
    python benchmarks/bench_trl.py --cases dpo --steps 2 --warmup 1 --max-length 128  # quick look
    python benchmarks/bench_trl.py --profile --steps 1 --warmup 1 --profile-json results/benchmarks/profile_cpu.json
    python benchmarks/bench_trl.py --device cuda --random-init --dtype bfloat16 --batch 16 --steps 20 --warmup 3
    python benchmarks/bench_trl.py --flops --device cuda --peak-tflops 989
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# after the path entry above, so that a checkout runs without installing the package
from datasets import Dataset  # noqa: E402
from transformers import TrainingArguments  # noqa: E402

from ulma import data as ulma_data  # noqa: E402
from ulma.batching import tokenize_dataset  # noqa: E402
from ulma.config import TrainConfig  # noqa: E402
from ulma.trainer import build_trainer  # noqa: E402

LORA = {"r": 8, "alpha": 32, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]}
LEARNING_RATE = 1e-5
BETA = 0.1

# Runs of each case: name -> (implementation, method, reference, data kind)
CASES = {
    "dpo": [
        ("trl_dpo", "trl", "dpo", "adapters", "pairwise"),
        ("ulma_dpo_adapters", "ulma", "dpo", "adapters", "pairwise"),
        ("trl_dpo_precomputed", "trl", "dpo", "cached", "pairwise"),
        ("ulma_dpo_cached", "ulma", "dpo", "cached", "pairwise"),
    ],
    "pointwise": [
        ("trl_kto_apo_zero_unpaired", "trl", "apo_zero_unpaired", "adapters", "pointwise"),
        ("ulma_pointwise_dpo_adapters", "ulma", "pointwise_dpo", "adapters", "pointwise"),
        ("ulma_ulma_adapters", "ulma", "ulma", "adapters", "pointwise"),
        ("ulma_pointwise_dpo_cached", "ulma", "pointwise_dpo", "cached", "pointwise"),
        ("ulma_ulma_cached", "ulma", "ulma", "cached", "pointwise"),
    ],
}

# (name, numerator run, denominator run, what is divided, target, direction) -- "le": ratio <= target is met
RATIOS = [
    ("dpo_throughput_vs_trl", "ulma_dpo_adapters", "trl_dpo", "tokens_per_s", 1.25, "ge"),
    ("dpo_peak_memory_vs_trl", "ulma_dpo_adapters", "trl_dpo", "peak_memory_mb", 0.9, "le"),
    ("dpo_cached_throughput_vs_trl_precomputed", "ulma_dpo_cached", "trl_dpo_precomputed", "tokens_per_s", None, "ge"),
    ("dpo_cached_peak_memory_vs_trl_precomputed", "ulma_dpo_cached", "trl_dpo_precomputed", "peak_memory_mb", None, "le"),
    ("dpo_cached_throughput_vs_trl", "ulma_dpo_cached", "trl_dpo", "tokens_per_s", None, "ge"),
    ("pointwise_dpo_throughput_vs_trl_apo", "ulma_pointwise_dpo_adapters", "trl_kto_apo_zero_unpaired", "tokens_per_s", None, "ge"),
    ("pointwise_dpo_peak_memory_vs_trl_apo", "ulma_pointwise_dpo_adapters", "trl_kto_apo_zero_unpaired", "peak_memory_mb", None, "le"),
    ("ulma_throughput_vs_trl_apo", "ulma_ulma_adapters", "trl_kto_apo_zero_unpaired", "tokens_per_s", None, "ge"),
    ("ulma_peak_memory_vs_trl_apo", "ulma_ulma_adapters", "trl_kto_apo_zero_unpaired", "peak_memory_mb", None, "le"),
    ("ulma_step_vs_pointwise_dpo", "ulma_ulma_adapters", "ulma_pointwise_dpo_adapters", "step_s", 0.75, "le"),
    ("ulma_cached_step_vs_pointwise_dpo", "ulma_ulma_cached", "ulma_pointwise_dpo_adapters", "step_s", 0.6, "le"),
    ("ulma_cached_step_vs_pointwise_dpo_cached", "ulma_ulma_cached", "ulma_pointwise_dpo_cached", "step_s", None, "le"),
]


# ================================================================================================ CLI
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench_trl.py",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n", 2)[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--cases", default="dpo,pointwise", help="comma-separated: %s (default: all)" % ",".join(CASES))
    p.add_argument("--runs", default=None, help="comma-separated run names to keep within the cases (default: all)")
    p.add_argument("--steps", type=int, default=4, help="measured (steady) optimiser steps per run (default 4)")
    p.add_argument("--warmup", type=int, default=1, help="steps run first and not measured (default 1)")
    p.add_argument("--batch", type=int, default=4,
                   help="pairs per DPO step; point-wise runs take 2x this many sequences (the pairs' chosen and "
                        "rejected replies), so every run processes the same sequences per step (default 4)")
    p.add_argument("--max-length", type=int, default=256, help="tokens per sequence at most (default 256)")
    p.add_argument("--max-completion-length", type=int, default=64,
                   help="reply tokens at most; the prompt gets the rest of --max-length (default 64)")
    p.add_argument("--select", choices=["long", "first"], default="long",
                   help="long: the pairs with the longest prompts after cutting (sequences near --max-length); "
                        "first: the first pairs of the split as they come (default long)")
    p.add_argument("--repeats", type=int, default=1,
                   help="times every run is repeated; the run order is reversed on every other repeat (default 1)")
    p.add_argument("--json", type=Path, default=None, help="write the results here (JSON)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                   help="weights and compute dtype (default float32 on CPU, bfloat16 on CUDA)")
    p.add_argument("--random-init", action="store_true",
                   help="a randomly initialised model of SmolLM2-135M's architecture (for machines without the weights)")
    p.add_argument("--model", default="smollm2", help="ulma model name or path (default smollm2)")
    p.add_argument("--data-dir", default=None, help="offline data root (default $ULMA_DATA_DIR)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in each run (default: torch's)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds one run may take before it is killed")
    p.add_argument("--profile", action="store_true",
                   help="profile one steady step of each run with torch.profiler instead of timing steps")
    p.add_argument("--profile-json", type=Path, default=None, help="where --profile writes its breakdown")
    p.add_argument("--flops", action="store_true",
                   help="CUDA only: tokens/s and MFU of full bf16 training of a ~1B Llama configuration")
    p.add_argument("--flops-method", default="sft", help="ulma method trained in --flops mode (default sft)")
    p.add_argument("--flops-seq-len", type=int, default=1024, help="tokens per sequence in --flops mode")
    p.add_argument("--flops-batch", type=int, default=8, help="sequences per step in --flops mode")
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="peak dense bf16 TFLOP/s of the GPU for MFU (default 989: H100 SXM)")
    p.add_argument("--ulma-patch", choices=["none", "full_logits"], default="none",
                   help="experiment on ulma's trainer, for before/after evidence: every selected ulma run gets a "
                        "patched twin (<run>__<patch>) right after it. full_logits = run the LM head on every "
                        "position, as ulma did before it used logits_to_keep (see docs/PERFORMANCE.md); "
                        "default none")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary folder of the runs")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: run one spec (a JSON file)
    args = p.parse_args(argv)
    if args.dtype is None:
        args.dtype = "bfloat16" if args.device == "cuda" else "float32"
    unknown = [c for c in args.cases.split(",") if c and c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {unknown}; known: {sorted(CASES)}")
    if args.max_completion_length >= args.max_length:
        p.error("--max-completion-length must be below --max-length")
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    return args


def require_cuda(what: str) -> None:
    import torch

    if not torch.cuda.is_available():
        sys.exit(
            f"bench_trl.py: {what} needs a CUDA GPU, and torch {torch.__version__} sees none "
            f"(torch.cuda.is_available() is False; a CPU-only build of torch, or no GPU on this machine). "
            f"Run it on a GPU machine, or drop --device cuda/--flops to benchmark on the CPU."
        )


# ============================================================================================ helpers
def rss_mb() -> float:
    """Current resident set size of this process in MB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def peak_rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if sys.platform != "darwin" else r / 2**20


def load_average() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def environment() -> dict:
    import torch
    import transformers

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    for name in ("trl", "peft", "accelerate", "datasets"):
        try:
            info[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - informational only
            info[name] = None
    try:
        with open("/proc/cpuinfo") as fh:
            info["cpu"] = next((l.split(":", 1)[1].strip() for l in fh if l.startswith("model name")), None)
    except OSError:
        info["cpu"] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# =============================================================================================== data
def load_pairs(data_dir: str | None) -> tuple[list[dict], str]:
    """HH harmless pairs `{prompt, chosen, rejected}` of the `mini_train` split, read by ulma.data."""
    ds = ulma_data.load("hh", "pairwise", split="mini_train", data_dir=data_dir, on_bad_row="skip")
    return [dict(r) for r in ds], "ulma.data.load('hh', 'pairwise', split='mini_train')"


def tokenize_pairs(rows: list[dict], tokenizer, max_prompt: int, max_completion: int) -> tuple[list[dict], str]:
    """prompt_ids / chosen_ids / rejected_ids by ulma.batching: the ids ulma's trainer uses, handed to TRL too."""
    ds = tokenize_dataset(Dataset.from_list(rows), tokenizer, "pairwise",
                          max_prompt_length=max_prompt, max_completion_length=max_completion)
    return [dict(r) for r in ds], "ulma.batching.tokenize_dataset"


def prepare_data(args, workdir: Path) -> dict:
    """Tokenize once; every run reads the same rows (the parent writes them, the children read them)."""
    n_pairs = (args.warmup + args.steps) * args.batch
    max_prompt = args.max_length - args.max_completion_length
    tokenizer = _tokenizer(args)
    if tokenizer is None:  # random-init without the SmolLM2 tokenizer: synthetic ids of realistic lengths
        return _synthetic_data(args, workdir, n_pairs, max_prompt)
    pairs, source = load_pairs(args.data_dir)
    if args.select == "long":
        # tokenize every pair at the real budgets, keep the pairs with the longest prompts (ulma cuts a long
        # prompt by whole exchanges, so few land exactly on the budget), in their original order
        tokenized, tokenize_via = tokenize_pairs(pairs, tokenizer, max_prompt, args.max_completion_length)
        ranked = sorted(range(len(tokenized)), key=lambda i: (-len(tokenized[i]["prompt_ids"]), i))[:n_pairs]
        pair_rows = [tokenized[i] for i in sorted(ranked)]
    else:
        pair_rows, tokenize_via = tokenize_pairs(pairs[:n_pairs], tokenizer, max_prompt, args.max_completion_length)
    if len(pair_rows) < n_pairs:
        sys.exit(f"bench_trl.py: only {len(pair_rows)} pairs available; need {n_pairs}")
    return _write_views(workdir, pair_rows, tokenizer.pad_token_id, source, tokenize_via, args)


def _write_views(workdir: Path, pair_rows: list[dict], pad_id: int, source: str, tokenize_via: str, args) -> dict:
    def clean(r):
        return {k: v for k, v in r.items() if k in ("prompt", "chosen", "rejected", "prompt_ids", "chosen_ids", "rejected_ids", "source_index")}

    pairwise = [clean(r) for r in pair_rows]
    pointwise = []  # pair i -> rows 2i (chosen, z=1) and 2i+1 (rejected, z=0): every batch is balanced
    for r in pairwise:
        for reply, ids, z in ((r.get("chosen"), r["chosen_ids"], 1.0), (r.get("rejected"), r["rejected_ids"], 0.0)):
            row = {"prompt": r.get("prompt"), "completion": reply, "label": z,
                   "prompt_ids": r["prompt_ids"], "completion_ids": ids, "z": z}
            if "source_index" in r:
                row["source_index"] = r["source_index"]
            pointwise.append(row)
    (workdir / "pairwise.json").write_text(json.dumps(pairwise))
    (workdir / "pointwise.json").write_text(json.dumps(pointwise))
    b = args.batch
    steps = args.warmup + args.steps
    pair_tokens = [sum(len(r["prompt_ids"]) * 2 + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in pairwise[s * b:(s + 1) * b]) for s in range(steps)]
    point_tokens = [sum(len(r["prompt_ids"]) + len(r["completion_ids"]) for r in pointwise[s * 2 * b:(s + 1) * 2 * b]) for s in range(steps)]
    lengths = [len(r["prompt_ids"]) + len(r["completion_ids"]) for r in pointwise]
    return {
        "source": source,
        "tokenized_by": tokenize_via,
        "select": args.select,
        "pairs": len(pairwise),
        "pad_token_id": pad_id,
        "tokens_per_step": {"pairwise": pair_tokens, "pointwise": point_tokens},
        "sequence_length": {"min": min(lengths), "mean": round(statistics.mean(lengths), 1), "max": max(lengths)},
        "completion_length_mean": round(statistics.mean(len(r["completion_ids"]) for r in pointwise), 1),
    }


def _synthetic_data(args, workdir: Path, n_pairs: int, max_prompt: int) -> dict:
    import random

    rng = random.Random(0)
    vocab = SMOLLM2_CONFIG["vocab_size"]
    rows = []
    for i in range(n_pairs):
        prompt = [rng.randrange(3, vocab) for _ in range(max_prompt)]
        rows.append({
            "prompt": [{"role": "user", "content": f"synthetic prompt {i}"}],
            "chosen": f"synthetic chosen {i}", "rejected": f"synthetic rejected {i}",
            "prompt_ids": prompt,
            "chosen_ids": [rng.randrange(3, vocab) for _ in range(rng.randint(8, args.max_completion_length - 1))] + [2],
            "rejected_ids": [rng.randrange(3, vocab) for _ in range(rng.randint(8, args.max_completion_length - 1))] + [2],
            "source_index": i,
        })
    return _write_views(workdir, rows, 2, "synthetic token ids (no tokenizer on this machine)", "synthetic", args)


# ============================================================================================== model
# SmolLM2-135M-Instruct's architecture (its config.json), for --random-init on machines without the weights.
SMOLLM2_CONFIG = dict(
    vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
    num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0,
    tie_word_embeddings=True, hidden_act="silu", bos_token_id=1, eos_token_id=2, pad_token_id=2,
)
# Llama-3.2-1B's shapes (1.24B parameters, tied embeddings), for --flops.
LLAMA_1B_CONFIG = dict(
    vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
    num_key_value_heads=8, max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=500000.0,
    tie_word_embeddings=True, hidden_act="silu", bos_token_id=1, eos_token_id=2, pad_token_id=2,
)


def _tokenizer(args):
    """The SmolLM2 tokenizer, or None in --random-init mode when it is not installed here."""
    from transformers import AutoTokenizer

    from ulma.models import resolve_model_path

    try:
        path = resolve_model_path(args.model)
        tok = AutoTokenizer.from_pretrained(path)
    except Exception:  # noqa: BLE001
        if args.random_init:
            return None
        raise
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def build_model(spec: dict):
    """(base model, tokenizer) for a run: SmolLM2 weights, or a random model of its architecture."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ulma.models import load_model_and_tokenizer, resolve_dtype

    dtype = resolve_dtype(spec["dtype"])
    if spec.get("flops"):
        torch.manual_seed(0)
        with torch.device(spec["device"]):
            model = LlamaForCausalLM(LlamaConfig(**LLAMA_1B_CONFIG)).to(dtype)
        return model, _plain_tokenizer(spec)
    if spec["random_init"]:
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**SMOLLM2_CONFIG)).to(dtype)
        return model, _plain_tokenizer(spec)
    model, tok = load_model_and_tokenizer(spec["model"], dtype=spec["dtype"])
    return model, tok


def _plain_tokenizer(spec: dict):
    try:
        ns = argparse.Namespace(model=spec["model"], random_init=True)
        tok = _tokenizer(ns)
        if tok is not None:
            return tok
    except Exception:  # noqa: BLE001
        pass
    from ulma.models import tiny_tokenizer

    tok = tiny_tokenizer()  # only its pad/eos ids are used with synthetic ids
    return tok


def lora_config():
    from peft import LoraConfig

    return LoraConfig(task_type="CAUSAL_LM", r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                      target_modules=list(LORA["target_modules"]))


# ====================================================================================== timing hooks
class _Timer:
    """Callback that records the wall time between consecutive on_step_end, memory, and (optionally) profiles."""

    def __init__(self, spec):
        self.spec = spec
        self.times: list[float] = []
        self.cpu_times: list[float] = []  # process CPU seconds (all threads) per step: robust to other load
        self.t_last = None
        self.c_last = None
        self.rss_train_begin = None
        self.peak_before_train = None
        self.profiler = None
        self.profile_at = spec["warmup"]  # profile the first steady step (index `warmup`)
        self.optimizer_range = None

    def callback(self):
        from transformers import TrainerCallback

        timer = self

        class Cb(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                import torch

                timer.rss_train_begin = rss_mb()
                timer.peak_before_train = peak_rss_mb()
                if torch.cuda.is_available() and timer.spec["device"] == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                timer.t_last = time.perf_counter()
                timer.c_last = time.process_time()
                if timer.spec.get("profile") and timer.profile_at == 0:
                    timer.start_profiler()

            def on_step_end(self, args, state, control, **kw):
                import torch

                if timer.spec["device"] == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                timer.times.append(t - timer.t_last)
                timer.cpu_times.append(time.process_time() - timer.c_last)
                if timer.profiler is not None and len(timer.times) == timer.profile_at + 1:
                    timer.stop_profiler()
                if timer.spec.get("profile") and len(timer.times) == timer.profile_at:
                    timer.start_profiler()
                timer.t_last = time.perf_counter()
                timer.c_last = time.process_time()

            def on_pre_optimizer_step(self, args, state, control, **kw):
                import torch

                timer.optimizer_range = torch.autograd.profiler.record_function("bench/optimizer_step")
                timer.optimizer_range.__enter__()
                timer._t_opt = time.perf_counter()

            def on_optimizer_step(self, args, state, control, **kw):
                if timer.optimizer_range is not None:
                    timer.optimizer_range.__exit__(None, None, None)
                    timer.optimizer_range = None
                    REGIONS.add("optimizer_step", time.perf_counter() - timer._t_opt)

        return Cb()

    def start_profiler(self):
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        if self.spec["device"] == "cuda":
            activities.append(ProfilerActivity.CUDA)
        REGIONS.reset()
        self.profiler = profile(activities=activities, record_shapes=False, profile_memory=False)
        self.profiler.__enter__()

    def stop_profiler(self):
        self.profiler.__exit__(None, None, None)
        self.profile_regions = dict(REGIONS.totals)
        self.profile_step_s = self.times[-1]
        self.profile_result = self.profiler
        self.profiler = None


class _Regions:
    """Wall-clock totals of the instrumented regions (filled only while profiling)."""

    def __init__(self):
        self.active = False
        self.totals: dict[str, float] = {}

    def reset(self):
        self.active = True
        self.totals = {}

    def add(self, name, seconds):
        if self.active:
            self.totals[name] = self.totals.get(name, 0.0) + seconds


REGIONS = _Regions()


def _wrap(obj, attr, name_fn):
    """Wrap obj.attr in a torch record_function range and a wall-clock region; name_fn() picks the name."""
    import functools

    import torch

    original = getattr(obj, attr)

    @functools.wraps(original)
    def wrapped(*a, **kw):
        name = name_fn()
        t0 = time.perf_counter()
        with torch.autograd.profiler.record_function("bench/" + name):
            out = original(*a, **kw)
        REGIONS.add(name, time.perf_counter() - t0)
        return out

    setattr(obj, attr, wrapped)
    return original


def instrument(trainer, base_model):
    """record_function ranges: data/collate, policy_forward / reference_forward (by grad mode), compute_loss,
    backward, grad_clip; optimizer_step comes from the callback. Works the same for ulma and TRL trainers."""
    import torch

    _wrap(base_model, "forward", lambda: "policy_forward" if torch.is_grad_enabled() else "reference_forward")
    _wrap(trainer, "compute_loss", lambda: "compute_loss")
    _wrap(trainer.accelerator, "backward", lambda: "backward")
    _wrap(trainer, "_clip_grad_norm", lambda: "grad_clip")
    if trainer.data_collator is not None:
        collator = trainer.data_collator

        class _Collate:
            def __init__(self, inner):
                self.inner = inner

            def __getattr__(self, item):
                return getattr(self.inner, item)

            def __call__(self, *a, **kw):
                t0 = time.perf_counter()
                with torch.autograd.profiler.record_function("bench/data_collate"):
                    out = self.inner(*a, **kw)
                REGIONS.add("data_collate", time.perf_counter() - t0)
                return out

        trainer.data_collator = _Collate(collator)


# ============================================================================================ trainers
def _common_args(spec: dict, out_dir: str) -> dict:
    """TrainingArguments shared by both sides (so both do the same arithmetic)."""
    steps = spec["warmup"] + spec["steps"]
    return dict(
        output_dir=out_dir,
        per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=1,
        max_steps=steps,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        seed=0,
        dataloader_num_workers=0,
        gradient_checkpointing=False,
        # no autocast: the weights are already in the run's dtype (float32 on CPU, bfloat16 with --dtype bfloat16)
        bf16=False,
        fp16=False,
        use_cpu=spec["device"] == "cpu",
        train_sampling_strategy="sequential",
        disable_tqdm=True,
    )


def build_trl_trainer(spec: dict, model, tokenizer, rows: list[dict], out_dir: str, callbacks):
    from datasets import Dataset

    common = _common_args(spec, out_dir)
    if spec["method"] == "dpo":
        from trl import DPOConfig, DPOTrainer

        class BenchDPOTrainer(DPOTrainer):
            # rows arrive tokenized by ulma (prompt_ids/chosen_ids/rejected_ids): skip TRL's own tokenization
            def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
                return dataset

        config = DPOConfig(**common, beta=BETA, loss_type=["sigmoid"], max_length=None, disable_dropout=False,
                           precompute_ref_log_probs=spec["reference"] == "cached",
                           precompute_ref_batch_size=spec["batch_size"] * 2)
        data = Dataset.from_list([{k: r[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for r in rows])
        return BenchDPOTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer,
                               peft_config=lora_config(), callbacks=callbacks)
    if spec["method"] == "apo_zero_unpaired":
        from trl import KTOConfig, KTOTrainer

        class BenchKTOTrainer(KTOTrainer):
            def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
                return dataset

        config = KTOConfig(**common, beta=BETA, loss_type="apo_zero_unpaired", max_length=None, disable_dropout=False,
                           precompute_ref_log_probs=spec["reference"] == "cached")
        data = Dataset.from_list([{"prompt_ids": r["prompt_ids"], "completion_ids": r["completion_ids"],
                                   "label": bool(r["z"] >= 1.0)} for r in rows])
        return BenchKTOTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer,
                               peft_config=lora_config(), callbacks=callbacks)
    raise ValueError(f"no TRL trainer for method {spec['method']!r}")


def build_ulma_trainer(spec: dict, model, tokenizer, rows: list[dict], out_dir: str, callbacks):
    """ULMATrainer through `ulma.trainer.build_trainer`, the factory `ulma.trainer.train` uses (LoRA from the
    TrainConfig, ulma's collators), on the benchmark's rows and TrainingArguments."""
    full = spec.get("flops", False)
    cfg = TrainConfig(
        model=spec["model"], dtype=spec["dtype"], lora_r=0 if full else LORA["r"], lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"], lora_target_modules=list(LORA["target_modules"]),
        max_prompt_length=spec["max_length"] - spec["max_completion_length"],
        max_completion_length=spec["max_completion_length"], learning_rate=LEARNING_RATE, beta=BETA,
        per_device_train_batch_size=spec["batch_size"], reference=spec["reference"],
        # the cache fill runs in batches of 4x the pairs of a DPO step (16 sequences at the defaults), as
        # TRL's precompute (precompute_ref_batch_size = 2 x batch pairs) does
        reference_batch_size=2 * spec["batch_size"],
    )
    args = TrainingArguments(**_common_args(spec, out_dir), remove_unused_columns=False)
    keep = ("prompt_ids", "chosen_ids", "rejected_ids") if spec["data_kind"] == "pairwise" else ("prompt_ids", "completion_ids", "z")
    data = Dataset.from_list([{k: r[k] for k in keep} for r in rows])
    return build_trainer(spec["method"], cfg, data, out_dir, model=model, pad_token_id=tokenizer.pad_token_id,
                         model_id=spec.get("model_id"), callbacks=callbacks, args=args)


# ============================================================================================== worker
def patch_ulma_full_logits() -> None:
    """Undo ulma's response-window LM head for a before/after comparison: `model_logps` is told the model
    has no ``logits_to_keep``, so logits are computed at every position as before that change."""
    from ulma import logprobs

    logprobs.accepts_logits_to_keep = lambda model: False


def worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if spec["device"] == "cuda":
        require_cuda("--device cuda")
    t0 = time.perf_counter()
    rss_start = rss_mb()
    rows = json.loads(Path(spec["data"]).read_text())
    model, tokenizer = build_model(spec)
    if spec["device"] == "cuda":
        model.to("cuda")
    rss_model = rss_mb()
    if spec["impl"] == "ulma" and not spec.get("random_init") and not spec.get("flops"):
        from ulma.models import model_identity

        spec["model_id"] = model_identity(spec["model"])
    # a fresh cache folder per run: ulma's reference cache is filled (and timed, in setup_s) every time, as
    # TRL's precompute is; the model weights were read from the real cache folder above
    os.environ["ULMA_CACHE_DIR"] = tempfile.mkdtemp(prefix="cache_", dir=spec["tmp"])
    timer = _Timer(spec)
    out_dir = tempfile.mkdtemp(prefix=f"bench_{spec['name']}_", dir=spec["tmp"])
    t_build = time.perf_counter()
    if spec["impl"] == "ulma" and spec.get("ulma_patch") == "full_logits":
        patch_ulma_full_logits()
    builder = build_trl_trainer if spec["impl"] == "trl" else build_ulma_trainer
    trainer = builder(spec, model, tokenizer, rows, out_dir, [timer.callback()])
    setup_s = time.perf_counter() - t_build
    base = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    if spec.get("profile"):
        instrument(trainer, base)
        if spec["impl"] == "ulma":  # ulma turns logits into log-probs outside the forward (TRL inside it)
            import torch
            import ulma.trainer as ulma_trainer

            _wrap(ulma_trainer, "sequence_logps",
                  lambda: "policy_logps" if torch.is_grad_enabled() else "reference_logps")
    trainer.train()
    result = {
        "name": spec["name"],
        "impl": spec["impl"],
        "method": spec["method"],
        "reference": spec["reference"],
        "data_kind": spec["data_kind"],
        "batch_size": spec["batch_size"],
        "step_times_s": timer.times,
        "step_cpu_s": timer.cpu_times,
        "setup_s": setup_s,
        "load_s": t_build - t0,
        "rss_start_mb": rss_start,
        "rss_after_model_mb": rss_model,
        "rss_train_begin_mb": timer.rss_train_begin,
        "peak_rss_before_train_mb": timer.peak_before_train,
        "peak_rss_mb": peak_rss_mb(),
        "torch_threads": torch.get_num_threads(),
        "load_average_end": load_average(),
    }
    if spec["device"] == "cuda":
        result["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["cuda_max_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
    if hasattr(trainer, "forward_counts"):
        result["forward_counts"] = dict(trainer.forward_counts)
        result["reference_cache"] = getattr(trainer, "reference_cache", None)
    if spec.get("profile") and hasattr(timer, "profile_result"):
        result["profile"] = summarize_profile(timer)
    Path(spec["result"]).write_text(json.dumps(result))


def summarize_profile(timer) -> dict:
    prof = timer.profile_result
    regions = {k: round(v, 4) for k, v in sorted(timer.profile_regions.items())}
    step = timer.profile_step_s
    compute_loss = regions.get("compute_loss", 0.0)
    inside = sum(regions.get(k, 0.0) for k in ("policy_forward", "reference_forward", "policy_logps", "reference_logps"))
    breakdown = {
        "data_collate": regions.get("data_collate", 0.0),
        "policy_forward": regions.get("policy_forward", 0.0),
        "policy_logps": regions.get("policy_logps", 0.0),
        "reference_forward": regions.get("reference_forward", 0.0),
        "reference_logps": regions.get("reference_logps", 0.0),
        "loss_and_rest_of_compute_loss": max(compute_loss - inside, 0.0),
        "backward": regions.get("backward", 0.0),
        "grad_clip": regions.get("grad_clip", 0.0),
        "optimizer_step": regions.get("optimizer_step", 0.0),
    }
    breakdown["other"] = max(step - sum(breakdown.values()), 0.0)
    breakdown = {k: round(v, 4) for k, v in breakdown.items()}
    events = prof.key_averages()
    ops = sorted((e for e in events if not e.key.startswith("bench/") and not e.key.startswith("ProfilerStep")),
                 key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
    top = [{"op": e.key, "self_cpu_ms": round(e.self_cpu_time_total / 1000, 1), "calls": e.count} for e in ops]
    ranges = {e.key[len("bench/"):]: {"cpu_total_ms": round(e.cpu_time_total / 1000, 1), "calls": e.count}
              for e in events if e.key.startswith("bench/")}
    return {"step_s": round(step, 4), "breakdown_s": breakdown,
            "breakdown_pct": {k: round(100 * v / step, 1) for k, v in breakdown.items()} if step else {},
            "profiler_ranges": ranges, "top_ops_self_cpu": top,
            "note": "wall-clock regions of one steady step recorded with torch.profiler running (its overhead "
                    "included). TRL computes log-probs inside the model forward (fused LM head), so its *_logps are 0 "
                    "and its forwards include them; ulma computes them from the logits after the forward."}


# ========================================================================================== orchestrator
def run_specs(args) -> list[dict]:
    wanted = set(args.runs.split(",")) if args.runs else None
    specs = []
    for case in [c for c in args.cases.split(",") if c]:
        for name, impl, method, reference, kind in CASES[case]:
            if wanted and name not in wanted:
                continue
            spec = {"name": name, "case": case, "impl": impl, "method": method, "reference": reference,
                    "data_kind": kind, "batch_size": args.batch if kind == "pairwise" else 2 * args.batch,
                    "ulma_patch": "none"}
            specs.append(spec)
            if impl == "ulma" and args.ulma_patch != "none":  # the patched twin runs right after the original
                specs.append({**spec, "name": f"{name}__{args.ulma_patch}", "ulma_patch": args.ulma_patch})
    return specs


def summarize_run(runs: list[dict], tokens_per_step: list[int], warmup: int, device: str) -> dict:
    steady = [t for r in runs for t in r["step_times_s"][warmup:]]
    steady_cpu = [t for r in runs for t in r["step_cpu_s"][warmup:]]
    tokens = [t for r in runs for t in tokens_per_step[warmup:len(r["step_times_s"])]]
    med = statistics.median(steady)
    mean_tokens = statistics.mean(tokens)
    peak_key = "cuda_max_allocated_mb" if device == "cuda" else "peak_rss_mb"
    out = {
        "impl": runs[0]["impl"], "method": runs[0]["method"], "reference": runs[0]["reference"],
        "sequences_per_step": runs[0]["batch_size"] * (2 if runs[0]["data_kind"] == "pairwise" else 1),
        "step_s": round(med, 4),
        "step_s_min": round(min(steady), 4),
        "step_s_max": round(max(steady), 4),
        "tokens_per_step_mean": round(mean_tokens, 1),
        # tokens of all steady steps / their total time equals mean tokens / mean step; the median step is steadier
        "tokens_per_s": round(mean_tokens / med, 1),
        # process CPU time (user + system, all threads) per step: what the step costs, whatever else runs
        "cpu_s": round(statistics.median(steady_cpu), 4),
        "tokens_per_cpu_s": round(mean_tokens / statistics.median(steady_cpu), 1),
        "peak_memory_mb": round(max(r[peak_key] for r in runs), 1),
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1),
        "rss_after_model_mb": round(statistics.mean(r["rss_after_model_mb"] for r in runs), 1),
        # peak before trainer.train(): model load, trainer set-up, reference cache fill / TRL's precompute
        "peak_rss_before_train_mb": round(max(r["peak_rss_before_train_mb"] for r in runs), 1),
        "setup_s": round(statistics.median(r["setup_s"] for r in runs), 2),
        "repeats": len(runs),
        "raw_step_times_s": [[round(t, 4) for t in r["step_times_s"]] for r in runs],
    }
    if device == "cuda":
        out["cuda_max_reserved_mb"] = round(max(r["cuda_max_reserved_mb"] for r in runs), 1)
    if "forward_counts" in runs[0]:  # ulma: forwards per run (warm-up and measured steps together)
        out["forward_counts"] = runs[0]["forward_counts"]
        out["reference_cache"] = runs[0]["reference_cache"]
    out["torch_threads"] = runs[0]["torch_threads"]
    out["load_average_end"] = [r["load_average_end"] for r in runs]
    return out


def compute_ratios(summary: dict) -> dict:
    out = {}
    for name, num, den, field, target, direction in RATIOS:
        if num not in summary or den not in summary:
            continue
        value = summary[num][field] / summary[den][field]
        entry = {"value": round(value, 3), "of": f"{num}.{field} / {den}.{field}"}
        cpu_field = {"step_s": "cpu_s", "tokens_per_s": "tokens_per_cpu_s"}.get(field)
        if cpu_field and cpu_field in summary[num]:
            entry["value_cpu_time"] = round(summary[num][cpu_field] / summary[den][cpu_field], 3)
        if target is not None:
            def met(v):
                return bool(v >= target if direction == "ge" else v <= target)

            entry["target"] = f"{'>=' if direction == 'ge' else '<='} {target}"
            entry["met"] = met(value)  # on wall time, as asked
            if "value_cpu_time" in entry:  # on CPU time: the steadier figure on a shared machine
                entry["met_cpu_time"] = met(entry["value_cpu_time"])
        out[name] = entry
    return out


def orchestrate(args) -> dict:
    specs = run_specs(args)
    if not specs:
        sys.exit("bench_trl.py: no runs selected (check --cases/--runs)")
    tmp = Path(tempfile.mkdtemp(prefix="bench_trl_"))
    t0 = time.time()
    data_info = prepare_data(args, tmp)
    print(f"[bench] data: {data_info['pairs']} pairs from {data_info['source']}; tokenized by {data_info['tokenized_by']}; "
          f"sequence length {data_info['sequence_length']}", flush=True)
    results: dict[str, list[dict]] = {s["name"]: [] for s in specs}
    for rep in range(args.repeats):
        order = specs if rep % 2 == 0 else list(reversed(specs))
        for spec in order:
            full = {**spec, "steps": args.steps, "warmup": args.warmup, "device": args.device, "dtype": args.dtype,
                    "max_length": args.max_length, "max_completion_length": args.max_completion_length,
                    "random_init": args.random_init, "model": args.model, "threads": args.threads,
                    "profile": args.profile, "tmp": str(tmp),
                    "data": str(tmp / ("pairwise.json" if spec["data_kind"] == "pairwise" else "pointwise.json")),
                    "result": str(tmp / f"{spec['name']}__{rep}.result.json")}
            spec_path = tmp / f"{spec['name']}__{rep}.spec.json"
            spec_path.write_text(json.dumps(full))
            print(f"[bench] repeat {rep + 1}/{args.repeats}: {spec['name']} (load {load_average()})", flush=True)
            t = time.time()
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path)],
                                  timeout=args.timeout, capture_output=True, text=True)
            if proc.returncode != 0 or not Path(full["result"]).exists():
                sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
                raise SystemExit(f"bench_trl.py: run {spec['name']} failed (exit {proc.returncode})")
            res = json.loads(Path(full["result"]).read_text())
            results[spec["name"]].append(res)
            steady = res["step_times_s"][args.warmup:]
            print(f"[bench]   {time.time() - t:.0f}s; steady steps {[round(x, 2) for x in steady]}; "
                  f"peak RSS {res['peak_rss_mb']:.0f} MB", flush=True)
    out = {
        "benchmark": "benchmarks/bench_trl.py",
        "command": " ".join([Path(sys.executable).name, "benchmarks/bench_trl.py"] + sys.argv[1:]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_s": round(time.time() - t0, 1),
        "environment": environment(),
        "load_average_end": load_average(),
        "settings": {
            "device": args.device, "dtype": args.dtype, "model": "random-init SmolLM2 architecture" if args.random_init else args.model,
            "lora": LORA, "learning_rate": LEARNING_RATE, "beta": BETA, "steps": args.steps, "warmup": args.warmup,
            "pairs_per_dpo_step": args.batch, "sequences_per_pointwise_step": 2 * args.batch,
            "max_length": args.max_length, "max_completion_length": args.max_completion_length,
            "repeats": args.repeats, "gradient_checkpointing": False, "mixed_precision": False,
            "lora_dropout_active": True, "sampler": "sequential (same batches in the same order for every run)",
            "ulma_patch": args.ulma_patch,
        },
        "data": data_info,
    }
    if args.profile:
        out["profile"] = {name: runs[0].get("profile") for name, runs in results.items()}
    else:
        summary = {name: summarize_run(runs, data_info["tokens_per_step"][runs[0]["data_kind"]], args.warmup, args.device)
                   for name, runs in results.items()}
        out["runs"] = summary
        out["ratios"] = compute_ratios(summary)
        for name in summary:  # before/after of a --ulma-patch experiment
            if "__" in name and name.split("__")[0] in summary:
                before, after = summary[name.split("__")[0]], summary[name]
                out["ratios"][f"patch:{name}"] = {
                    "of": f"{name} / {name.split('__')[0]}",
                    "step_s": round(after["step_s"] / before["step_s"], 3),
                    "cpu_s": round(after["cpu_s"] / before["cpu_s"], 3),
                    "peak_memory_mb": round(after["peak_memory_mb"] / before["peak_memory_mb"], 3),
                }
    if not args.keep_tmp:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        out["tmp"] = str(tmp)
    return out


def print_table(out: dict) -> None:
    if "runs" in out:
        print(f"\n{'run':34s} {'step s':>8s} {'tokens/s':>9s} {'cpu s':>8s} {'peak MB':>8s} {'setup s':>8s}")
        for name, r in out["runs"].items():
            print(f"{name:34s} {r['step_s']:8.3f} {r['tokens_per_s']:9.1f} {r['cpu_s']:8.3f} {r['peak_memory_mb']:8.0f} "
                  f"{r['setup_s']:8.1f}")
        print()
        for name, r in out["ratios"].items():
            met = "" if "met" not in r else ("  target %s: %s" % (r["target"], "met" if r["met"] else "MISSED"))
            if "met_cpu_time" in r:
                met += " (cpu time: %s)" % ("met" if r["met_cpu_time"] else "MISSED")
            if "value" not in r:
                print(f"{name:45s} step {r['step_s']:.3f}, cpu {r['cpu_s']:.3f}, peak memory {r['peak_memory_mb']:.3f}")
                continue
            cpu = f" (cpu time {r['value_cpu_time']:.3f})" if "value_cpu_time" in r else ""
            print(f"{name:45s} {r['value']:6.3f}{cpu}{met}")
    if "profile" in out:
        for name, p in out["profile"].items():
            if p:
                print(f"\n{name}: step {p['step_s']:.2f}s " + ", ".join(f"{k} {v:.2f}" for k, v in p["breakdown_s"].items()))
    if "flops" in out:
        print(json.dumps(out["flops"], indent=2))


# ================================================================================================ main
def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args.worker)
        return
    if args.flops:
        require_cuda("--flops")
        out = flops_mode(args)
    else:
        if args.device == "cuda":
            require_cuda("--device cuda")
        out = orchestrate(args)
    print_table(out)
    if args.profile and args.profile_json:
        args.profile_json.parent.mkdir(parents=True, exist_ok=True)
        args.profile_json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"[bench] wrote {args.profile_json}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"[bench] wrote {args.json}")


def matmul_params(config_dict: dict) -> tuple[int, int]:
    """(all parameters, parameters that take part in matmuls) of a Llama config: the input embedding is a
    lookup, not a matmul; with tied embeddings its matrix is counted once, as the LM head."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**config_dict))
    total = sum(p.numel() for p in model.parameters())
    embedding = config_dict["vocab_size"] * config_dict["hidden_size"]
    return total, total if config_dict.get("tie_word_embeddings") else total - embedding


def flops_mode(args) -> dict:
    """Full bf16 training of a ~1.2B Llama (Llama-3.2-1B shapes, random weights, synthetic tokens) through
    ulma's trainer on CUDA: tokens/s and MFU = 6·N·tokens per step / step time / peak FLOP/s."""
    import random

    from ulma.losses import get_method

    method = get_method(args.flops_method)
    tmp = Path(tempfile.mkdtemp(prefix="bench_flops_"))
    rng = random.Random(0)
    seq, batch = args.flops_seq_len, args.flops_batch
    steps = args.warmup + args.steps
    prompt_len = seq // 2
    vocab = LLAMA_1B_CONFIG["vocab_size"]
    kind = method.data_kind
    rows = []
    for i in range(steps * batch):
        prompt = [rng.randrange(3, vocab) for _ in range(prompt_len)]
        reply = [rng.randrange(3, vocab) for _ in range(seq - prompt_len)]
        if kind == "pairwise":
            rows.append({"prompt_ids": prompt, "chosen_ids": reply, "rejected_ids": reply[::-1]})
        else:
            rows.append({"prompt_ids": prompt, "completion_ids": reply, "z": float(i % 2 == 0) if kind == "pointwise" else 1.0})
    (tmp / "rows.json").write_text(json.dumps(rows))
    reference = "none" if method.reference == "none" else "cached"
    spec = {"name": f"flops_{args.flops_method}", "impl": "ulma", "method": args.flops_method,
            "reference": "cached" if reference == "cached" else "adapters", "data_kind": kind,
            "batch_size": batch, "steps": args.steps, "warmup": args.warmup, "device": "cuda", "dtype": "bfloat16",
            "random_init": True, "flops": True, "model": "llama-1b-random", "threads": args.threads,
            "max_length": seq, "max_completion_length": seq - prompt_len, "profile": False, "tmp": str(tmp),
            "data": str(tmp / "rows.json"), "result": str(tmp / "result.json")}
    (tmp / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(tmp / "spec.json")],
                          timeout=args.timeout, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"bench_trl.py: --flops run failed (exit {proc.returncode})")
    res = json.loads((tmp / "result.json").read_text())
    steady = res["step_times_s"][args.warmup:]
    step = statistics.median(steady)
    sequences = batch * (2 if kind == "pairwise" else 1)
    tokens = sequences * seq
    total, n = matmul_params(LLAMA_1B_CONFIG)
    cfg = LLAMA_1B_CONFIG
    flops_6n = 6 * n * tokens
    # causal self-attention scores and values: 2 matmuls x 2 FLOPs x L x d x (T/2 average context), x3 fwd+bwd
    flops_attn = 6 * cfg["num_hidden_layers"] * cfg["hidden_size"] * seq * tokens
    peak = args.peak_tflops * 1e12
    out = {
        "benchmark": "benchmarks/bench_trl.py --flops",
        "command": " ".join([Path(sys.executable).name, "benchmarks/bench_trl.py"] + sys.argv[1:]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": environment(),
        "flops": {
            "model": "Llama-3.2-1B shapes, random init, full fine-tuning, bf16 weights (no autocast), AdamW",
            "parameters": total, "matmul_parameters": n, "method": args.flops_method,
            "reference": reference, "sequences_per_step": sequences, "sequence_length": seq,
            "tokens_per_step": tokens, "step_s": round(step, 4), "step_s_all": [round(t, 4) for t in res["step_times_s"]],
            "tokens_per_s": round(tokens / step, 1),
            "model_tflops_per_s_6N": round(flops_6n / step / 1e12, 2),
            "mfu_6N": round(flops_6n / step / peak, 4),
            "mfu_6N_plus_attention": round((flops_6n + flops_attn) / step / peak, 4),
            "peak_tflops": args.peak_tflops,
            "cuda_max_allocated_mb": round(res.get("cuda_max_allocated_mb", 0.0), 1),
            "cuda_max_reserved_mb": round(res.get("cuda_max_reserved_mb", 0.0), 1),
        },
    }
    if not args.keep_tmp:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return out


if __name__ == "__main__":
    main()
