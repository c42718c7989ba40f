#!/usr/bin/env python
"""Whole-pipeline cost: ULMA in one stage against RLHF's stages (reward model, then PPO), to a final model.

Each pipeline runs in its own subprocess through the project's own entry points, exactly as
``python -m ulma train`` would run it:

* ``ulma``: ``ulma.trainer.train(profile, "ulma", dataset, dir)``: data, reference log-prob cache (one no-grad
  pass over the negatives), training, saving the adapter;
* ``rlhf``: ``ulma.rlhf.train_rlhf(profile, dataset, dir)``: reward model (training plus its held-out
  accuracy on the test split), then PPO (rollouts, reward scoring, updates), saving the adapter.

Reported per pipeline: the process's wall time from start to a saved model (``process_wall_s``), the run's
own metrics (``wall_time_s``; ULMA: training only, RLHF: reward model + PPO + loading and saving; RLHF
also ``reward_model_s`` and ``ppo_s``), and the process's peak resident memory (CUDA max allocated on a
GPU, from the run's metrics). Every pipeline gets a fresh cache folder (the converted SmolLM2 weights are
linked in), so no reference log-probs or reward model from an earlier run are reused: each pays its full
cost once.

Examples::

    python benchmarks/bench_pipeline.py --json results/benchmarks/pipeline_cpu.json
    python benchmarks/bench_pipeline.py --set train.max_train_examples=64 --set rlhf.ppo_steps=4  # shorter
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="bench_pipeline.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="mini", help="ulma profile (default mini)")
    p.add_argument("--dataset", default="hh", help="dataset (default hh)")
    p.add_argument("--pipelines", default="ulma,rlhf", help="comma-separated: ulma, rlhf (default both)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="profile override, as `ulma train --set` (repeatable), applied to both pipelines")
    p.add_argument("--data-dir", default=None, help="offline data root (default $ULMA_DATA_DIR)")
    p.add_argument("--json", type=Path, default=None, help="write the results here (JSON)")
    p.add_argument("--timeout", type=int, default=7200, help="seconds one pipeline may take")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads in each pipeline (default: torch's; 1 on a shared machine)")
    p.add_argument("--worker", nargs=2, default=None, help=argparse.SUPPRESS)  # pipeline, spec file
    return p.parse_args(argv)


def worker(pipeline: str, spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    t0 = time.perf_counter()
    if spec.get("threads"):
        import torch

        torch.set_num_threads(spec["threads"])
    from ulma.config import load_profile

    profile = load_profile(spec["profile"], spec["overrides"] or None)
    if pipeline == "ulma":
        from ulma.trainer import train

        metrics = train(profile, "ulma", spec["dataset"], spec["out"], data_dir=spec["data_dir"])
    else:
        from ulma.rlhf import train_rlhf

        metrics = train_rlhf(profile, spec["dataset"], spec["out"], data_dir=spec["data_dir"])
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    train_metrics = {k: v for k, v in metrics["train"].items() if k != "log_history" and not isinstance(v, (dict, list))}
    for key in ("reward_model", "ppo"):
        if isinstance(metrics["train"].get(key), dict):
            train_metrics[key] = {k: v for k, v in metrics["train"][key].items() if k != "log_history" and not isinstance(v, (dict, list))}
    Path(spec["result"]).write_text(json.dumps({"process_wall_s": wall, "peak_rss_mb": rss, "metrics": train_metrics},
                                               default=str))


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return
    from ulma.models import cache_dir, smollm2_local_dir

    smollm2_local_dir()  # convert the weights once, in the real cache, before the fresh ones link to it
    real_models = cache_dir() / "models"
    tmp = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    results = {}
    for pipeline in [p for p in args.pipelines.split(",") if p]:
        fresh = tmp / f"cache_{pipeline}"
        fresh.mkdir()
        if real_models.exists():
            (fresh / "models").symlink_to(real_models)
        spec = {"profile": args.profile, "overrides": args.set, "dataset": args.dataset, "data_dir": args.data_dir,
                "out": str(tmp / f"run_{pipeline}"), "result": str(tmp / f"{pipeline}.json"), "threads": args.threads}
        spec_path = tmp / f"{pipeline}.spec.json"
        spec_path.write_text(json.dumps(spec))
        env = {**os.environ, "ULMA_CACHE_DIR": str(fresh)}
        print(f"[pipeline] {pipeline} (load {os.getloadavg()})", flush=True)
        start = time.time()
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", pipeline, str(spec_path)],
                              env=env, timeout=args.timeout, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
            raise SystemExit(f"bench_pipeline.py: {pipeline} failed (exit {proc.returncode})")
        res = json.loads(Path(spec["result"]).read_text())
        res["subprocess_wall_s"] = round(time.time() - start, 1)
        res["load_average_end"] = list(os.getloadavg())
        results[pipeline] = res
        print(f"[pipeline]   {res['subprocess_wall_s']:.0f}s, peak RSS {res['peak_rss_mb']:.0f} MB", flush=True)
    out = {
        "benchmark": "benchmarks/bench_pipeline.py",
        "command": " ".join([Path(sys.executable).name, "benchmarks/bench_pipeline.py"] + sys.argv[1:]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "profile": args.profile, "overrides": args.set, "dataset": args.dataset, "threads": args.threads,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        "pipelines": results,
    }
    if "ulma" in results and "rlhf" in results:
        u, r = results["ulma"], results["rlhf"]
        out["ratios"] = {
            "rlhf_over_ulma_process_wall": round(r["process_wall_s"] / u["process_wall_s"], 2),
            "rlhf_over_ulma_peak_rss": round(r["peak_rss_mb"] / u["peak_rss_mb"], 2),
        }
    print(json.dumps(out, indent=2, default=str))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
