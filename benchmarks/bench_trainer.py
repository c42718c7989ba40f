#!/usr/bin/env python
"""Training cost per method through `ulma.trainer.train`: step time, tokens/s, peak memory, forwards per step.

Every (model, method, reference mode) run is its own subprocess (so peak memory belongs to it alone) that
calls `train()` with a step-timing callback. A step's time is the wall time between consecutive
``on_step_end`` callbacks (data, forwards, backward, optimizer); the first ``--warmup`` steps are dropped
and the median of the rest is reported. tokens/s = non-padding tokens of the policy batches (prompt
included) of the timed steps / their time. The cached reference pass (``reference=cached``) runs before
training: its cost is ``setup_s`` (time from the start of `train()` to the first step), not step time.
Peak memory: the worker's peak resident set size (CUDA max allocated on a GPU), model loading included.

Batches hold the same number of sequences for every method: ``--batch`` point-wise/SFT rows, or
``--batch``/2 pairs for DPO (chosen + rejected).

    python benchmarks/bench_trainer.py                                   # tiny, every method
    python benchmarks/bench_trainer.py --model smollm2 --methods ulma,pointwise_dpo,dpo \\
        --json results/benchmarks/trainer_cpu.json                       # SmolLM2 + LoRA, 4 x 128 tokens
    python benchmarks/bench_trainer.py --json results/benchmarks/trainer_cpu.json --append  # + tiny
    python benchmarks/bench_trainer.py --model smollm2 --methods ulma --references cached --batch 8 \
        --max-length 192 --steps 8 --examples 256 --samplers random,group_by_length \
        --data-dir bundled --json results/benchmarks/padding_train_cpu.json  # length-grouped batches

Not a test: numbers depend on the machine and on what else runs on it (the JSON records the load average).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEEDS_REFERENCE = {"dpo", "pointwise_dpo", "ulma", "positive_dpo", "negative_dpo", "kto"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model", default="tiny",
                   help="tiny (default) | smollm2 | any hub id / path (LoRA r 8 on q_proj, v_proj)")
    p.add_argument("--methods", default=None, help="comma-separated (default: every registered method but rlhf)")
    p.add_argument("--references", default="cached,adapters", help="reference modes for methods that need one")
    p.add_argument("--batch", type=int, default=4, help="sequences per step (DPO: batch/2 pairs)")
    p.add_argument("--max-length", type=int, default=128, help="prompt + reply tokens (reply: a quarter of it)")
    p.add_argument("--steps", type=int, default=5, help="optimizer steps per run")
    p.add_argument("--samplers", default="random", help="random | group_by_length | both, comma-separated: "
                   "train.group_by_length off / on (the padded fraction and step time of each)")
    p.add_argument("--examples", type=int, default=None,
                   help="source examples trained on (default: batch x steps; more gives the sampler rows to group)")
    p.add_argument("--warmup", type=int, default=1, help="first steps left out of the timing")
    p.add_argument("--dataset", default="hh")
    p.add_argument("--data-dir", default=None, help="data root (default: $ULMA_DATA_DIR, else the project's fixtures)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: torch's)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--append", action="store_true", help="add to the runs already in --json (another model)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------- worker
def worker(spec: dict) -> dict:
    import torch
    from transformers import TrainerCallback

    from ulma.config import load_profile
    from ulma.trainer import peak_memory_mb, train

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.begin = [], None

        def on_train_begin(self, args, state, control, **kwargs):
            self.begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

    timer = StepTimer()
    reply = max(spec["max_length"] // 4, 1)
    overrides = {
        "model": spec["model"], "max_steps": spec["steps"], "logging_steps": 1, "save_steps": 10**6,
        "per_device_train_batch_size": spec["batch"] // 2 if spec["method"] == "dpo" else spec["batch"],
        "max_prompt_length": spec["max_length"] - reply, "max_completion_length": reply,
        "reference": spec["reference"] or "cached", "train_split": spec["split"],
        # source examples for the steps (a pair gives 2 point-wise rows): the cached pass stays small
        "max_train_examples": spec["examples"] or spec["batch"] * spec["steps"],
        "group_by_length": spec["sampler"] == "group_by_length",
        "data_options": {"on_bad_row": "skip"}, "learning_rate": 1e-4,
    }
    profile = load_profile("tiny", overrides)  # tiny's optimisation settings; the model is overridden
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        metrics = train(profile, spec["method"], spec["dataset"], out, data_dir=spec["data_dir"],
                        callbacks=[timer])["train"]
    total = time.perf_counter() - start
    stamps = [timer.begin] + timer.times
    step_times = [b - a for a, b in zip(stamps, stamps[1:])]
    history = [e for e in metrics["log_history"] if "num_tokens" in e and "train_runtime" not in e]
    tokens = [b["num_tokens"] - a for a, b in zip([0] + [e["num_tokens"] for e in history], history)]
    timed = slice(spec["warmup"], None)
    median = statistics.median(step_times[timed])
    steps = metrics["global_step"]
    return {
        **{k: spec[k] for k in ("model", "method", "reference", "batch", "max_length", "dataset", "split", "sampler")},
        "padded_fraction": metrics["padded_fraction"],
        "sequences_per_step": spec["batch"],
        "step_time_s": median,
        "step_time_min_s": min(step_times[timed]),
        "step_time_max_s": max(step_times[timed]),
        "step_times_s": step_times,
        "tokens_per_step": statistics.mean(tokens[timed]),
        "tokens_per_s": sum(tokens[timed]) / sum(step_times[timed]),
        "setup_s": timer.begin - start,
        "total_s": total,
        "peak_memory_mb": peak_memory_mb(torch.device("cuda") if torch.cuda.is_available() else None),
        "policy_forwards_per_step": metrics["policy_forward_calls"] / steps,
        "reference_forwards_per_step": (metrics["reference_forward_calls"] - metrics["reference_cache_calls"]) / steps,
        "reference_rows_per_step": (metrics["reference_forward_rows"] - metrics["reference_cache_rows"]) / steps,
        "reference_cache_rows": metrics["reference_cache_rows"],
        "reference_cache": metrics["reference_cache"],
        "final_loss": history[-1]["loss"] if history else None,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": spec["load_average"],  # other work on the machine (1, 5, 15 min)
    }


# ------------------------------------------------------------------------------------------- driver
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    from ulma.losses import loss_methods

    methods = args.methods.split(",") if args.methods else sorted(loss_methods())  # rlhf and base train no loss
    data_dir = args.data_dir or os.environ.get("ULMA_DATA_DIR") or "fixtures"
    split = "train" if data_dir == "fixtures" else "mini_train"  # offline copies hold HH's test split only
    runs = []
    for method in methods:
        for reference, sampler in [(r, s) for r in (args.references.split(",") if method in NEEDS_REFERENCE else [None])
                                   for s in args.samplers.split(",")]:
            spec = {"sampler": sampler, "examples": args.examples, "model": args.model, "method": method, "reference": reference, "batch": args.batch,
                    "max_length": args.max_length, "steps": args.steps, "warmup": args.warmup,
                    "dataset": args.dataset, "split": split, "data_dir": data_dir, "threads": args.threads,
                    "load_average": os.getloadavg()}
            # a fresh cache per run: "cached" then pays (and reports) its reference pass in setup_s
            env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
                   "ULMA_CACHE_DIR": tempfile.mkdtemp(prefix="bench_trainer_")}
            if args.model != "tiny":  # the converted weights live in the usual cache: share them
                usual = Path(os.environ.get("ULMA_CACHE_DIR", Path.home() / ".cache" / "ulma"))
                _link_models(usual, Path(env["ULMA_CACHE_DIR"]))
            done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], cwd=ROOT, env=env,
                                  capture_output=True, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or not lines:
                print(f"{method} {reference}: failed\n{done.stderr[-3000:]}", file=sys.stderr)
                return 1
            result = json.loads(lines[-1][len("RESULT "):])
            runs.append(result)
            print(f"{args.model:8s} {method:14s} {str(reference):9s} {sampler:15s} "
                  f"padded {result['padded_fraction']:.3f}  step {result['step_time_s']:.3f}s  "
                  f"{result['tokens_per_s']:8.0f} tok/s  peak {result['peak_memory_mb']:7.0f} MiB  "
                  f"setup {result['setup_s']:.1f}s  ref fwd/step {result['reference_forwards_per_step']:.1f}",
                  flush=True)
    report = {"runs": runs, "machine": _machine()}
    if args.json and args.append and Path(args.json).exists():
        earlier = json.loads(Path(args.json).read_text())
        report = {"runs": earlier["runs"] + runs, "machine": earlier["machine"], f"machine_{args.model}": report["machine"]}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _link_models(source: Path, target: Path) -> None:
    """Let a worker's fresh cache folder see the converted model weights (a symlink, no copy)."""
    if (source / "models").is_dir() and not (target / "models").exists():
        target.mkdir(parents=True, exist_ok=True)
        (target / "models").symlink_to(source / "models")


def _machine() -> dict:
    import torch
    import transformers

    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "cpus": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}


if __name__ == "__main__":
    sys.exit(main())
