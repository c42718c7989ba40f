#!/usr/bin/env python
"""Memory and time of `ulma.logprobs.sequence_logps` (chunked) against `naive_sequence_logps` (full log-softmax).

Each variant (implementation × logits dtype × mode × prompt fraction) runs in its own fresh subprocess, so
its peak memory is its own:

* CPU: peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``, a high-water mark) minus the resident
  size just before the measured call, after the inputs exist. The logits are filled in place
  (``empty().normal_()``), so making them leaves no larger high-water mark behind that could hide the
  call's own peak; blocks this large are mmap-ed and go back to the OS when freed, so RSS follows the
  tensors' lifetime.
* CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation before the call.

`peak_extra_mb` is therefore the memory the call needs on top of its inputs (for `train`, it includes the
logits' gradient, the same size for both). Modes: `reference` = forward under ``torch.no_grad`` (how the
reference model is scored); `train` = forward + backward of ``logps.sum()`` (the policy). Time: the median
of ``--repeats`` calls after the measured first call. A prompt fraction f masks the first f·T labels of
every row (the naive version computes the log-softmax of every position anyway).

    python benchmarks/bench_logprobs.py --json results/benchmarks/logprobs_cpu.json
    python benchmarks/bench_logprobs.py --device cuda --repeats 10 --json results/benchmarks/logprobs_cuda.json
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(spec: dict) -> dict:
    """One variant, in this (fresh) process."""
    import torch

    sys.path.insert(0, str(ROOT))
    from ulma.logprobs import naive_sequence_logps, sequence_logps

    torch.manual_seed(0)
    device = torch.device(spec["device"])
    dtype = getattr(torch, spec["dtype"])
    b, t, v = spec["batch"], spec["seq"], spec["vocab"]
    logits = torch.empty(b, t, v, dtype=dtype, device=device).normal_(0.0, 2.0)
    labels = torch.randint(0, v, (b, t), device=device)
    labels[:, : int(spec["prompt_fraction"] * t)] = -100
    train = spec["mode"] == "train"
    if train:
        logits.requires_grad_(True)
    kwargs = {"return_log1m": spec["log1m"]}
    if spec["impl"] == "chunked":
        fn = sequence_logps
        if spec["chunk_size"]:
            kwargs["chunk_size"] = spec["chunk_size"]
    else:
        fn = naive_sequence_logps

    def call():
        if train:
            logits.grad = None
            out = fn(logits, labels, **kwargs)
            loss = out.logps.sum() + (out.log1m.sum() if out.log1m is not None else 0)
            loss.backward()
        else:
            with torch.no_grad():
                fn(logits, labels, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize()

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        before = _rss_mb()
        peak_before = _peak_rss_mb()
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = _peak_rss_mb()
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    result = {
        **spec,
        "logits_mb": logits.numel() * logits.element_size() / 2**20,
        "baseline_mb": before,
        "peak_mb": peak,
        "peak_extra_mb": peak - before,
        "first_call_s": first,
        "time_s_median": statistics.median(times) if times else first,
        "times_s": times,
        "memory_measure": "torch.cuda.max_memory_allocated" if cuda else "ru_maxrss - rss before call",
    }
    if not cuda:
        result["peak_rss_before_call_mb"] = peak_before  # ≈ baseline_mb: nothing hid the call's peak
    return result


def run_variant(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"variant {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=4, help="B (default 4)")
    p.add_argument("--seq", type=int, default=512, help="T (default 512)")
    p.add_argument("--vocab", type=int, default=49152, help="V (default 49152, SmolLM2's vocabulary)")
    p.add_argument("--dtypes", default="float32,bfloat16", help="logits dtypes, comma-separated")
    p.add_argument("--modes", default="reference,train", help="reference (no_grad forward) and/or train (fwd+bwd)")
    p.add_argument("--prompt-fractions", default="0.0", help="fractions of each row masked as prompt, comma-separated")
    p.add_argument("--chunk-size", type=int, default=0, help="sequence_logps chunk_size (0: its default)")
    p.add_argument("--log1m", action="store_true", help="also compute log(1 - p) (token unlikelihood)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls after the measured first call")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto (cuda when available)")
    p.add_argument("--json", type=Path, help="write the results to this JSON file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    results = []
    for prompt_fraction in [float(x) for x in args.prompt_fractions.split(",")]:
        for dtype in args.dtypes.split(","):
            for mode in args.modes.split(","):
                for impl in ("naive", "chunked"):  # alternate, so drift on a shared machine hits both
                    spec = dict(impl=impl, dtype=dtype, mode=mode, prompt_fraction=prompt_fraction,
                                batch=args.batch, seq=args.seq, vocab=args.vocab, chunk_size=args.chunk_size,
                                log1m=args.log1m, repeats=args.repeats, device=device)
                    r = run_variant(spec)
                    results.append(r)
                    print(f"{impl:8s} {dtype:9s} {mode:9s} prompt {prompt_fraction:.2f}: "
                          f"extra peak {r['peak_extra_mb']:8.1f} MB (logits {r['logits_mb']:.0f} MB), "
                          f"median {r['time_s_median'] * 1e3:8.1f} ms", flush=True)
    from ulma.logprobs import DEFAULT_CHUNK_SIZE

    report = {
        "benchmark": "sequence_logps (chunked, hand-written backward) vs naive_sequence_logps (full log_softmax)",
        "shape": {"B": args.batch, "T": args.seq, "V": args.vocab},
        "chunk_size": args.chunk_size or DEFAULT_CHUNK_SIZE,
        "device": device if device == "cpu" else torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "load_average_at_end": os.getloadavg(),
        "memory_measure": results[0]["memory_measure"] if results else None,
        "results": results,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
