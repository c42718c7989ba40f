#!/usr/bin/env python
"""How well `reproduce --plan` predicts a run's time: each trained record of a profile is estimated from the
other records alone (leave-one-out: every record of its config, copies in other experiments included, is
left out) and compared with the time it took (train_s + eval_s), in one process on the same records:

* ``pooled``: rates pooled over datasets (the method's, else every method's), as the plan estimated before;
* ``per_dataset``: the most specific rate measured (the method's on this dataset, the method's, this
  dataset's, every one's), as `ulma.grid.estimate_seconds` does now.

Reports, per dataset and over all, the median of |estimate − actual| / actual and the median signed error
(+: the plan overestimates). No training; reads `results/<profile>/` only.

    python benchmarks/bench_plan.py --profile mini --json results/benchmarks/plan_estimates.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ulma import grid  # noqa: E402
from ulma.catalog import get_experiment, run_profile  # noqa: E402
from ulma.store import as_profile, read_record  # noqa: E402


def pooled(costs: dict) -> dict:
    """The rates without the per-dataset keys: `estimate_seconds` then falls back to the pooled ones."""
    return {key: rates for key, rates in costs.items() if "/" not in key}


def errors(profile: str, results_dir: Path) -> list[dict]:
    prof = as_profile(profile)
    rows = []
    for path in sorted((results_dir / prof.name).glob("*/*.json")):
        record = read_record(path) or {}
        if not grid.measured_here(record):
            continue
        timings = record["timings"]
        exp = get_experiment(record["experiment"])
        variant = exp.variant(record["method"], prof)
        rprof = run_profile(prof, exp, record["dataset"], variant, record["seed"])
        costs = grid.measured_costs(results_dir, prof.name, exclude={record["config_hash"]})
        actual = float(timings["train_s"]) + float(timings.get("eval_s", 0.0))
        row = {"run": f"{record['experiment']}/{path.stem}", "dataset": record["dataset"], "actual_s": actual}
        for name, rates in (("pooled", pooled(costs)), ("per_dataset", costs)):
            estimate = grid.run_estimate(rates, prof, exp, rprof, variant.method, record["dataset"])
            row[name] = None if estimate is None else (estimate - actual) / actual
        rows.append(row)
    return rows


def summary(rows: list[dict]) -> dict:
    out = {}
    for dataset in sorted({r["dataset"] for r in rows}) + ["all"]:
        chosen = [r for r in rows if dataset in ("all", r["dataset"])]
        out[dataset] = {"runs": len(chosen)}
        for name in ("pooled", "per_dataset"):
            errs = [r[name] for r in chosen if r[name] is not None]
            out[dataset][name] = {"median_abs_rel_error": round(statistics.median(abs(e) for e in errs), 3),
                                  "median_rel_error": round(statistics.median(errs), 3)} if errs else None
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="mini")
    parser.add_argument("--results", default=str(REPO / "results"))
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)
    rows = errors(args.profile, Path(args.results))
    out = {"benchmark": "plan_estimates", "profile": args.profile, "summary": summary(rows),
           "command": f"python benchmarks/bench_plan.py --profile {args.profile} --json <file>",
           "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
           "runs": [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in rows]}
    print(json.dumps(out["summary"], indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
