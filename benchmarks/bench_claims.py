#!/usr/bin/env python
"""The claims' statistics (notebook 09, `claims.csv`): the length-controlled fit by Newton's method against
scipy's L-BFGS-B (how `ulma.stats` fitted it before), on a profile's committed records, in one process.

Each claim on the LC win rate bootstraps 1,000 resamples × 2 logistic fits; the rest of the claims cost
little. Both fits run on the same records, alternated (L-BFGS-B, Newton, Newton, L-BFGS-B) so that a drift
in the machine's load weighs on both; each side's process CPU time (steady under load) and wall time, and
the largest difference of an estimate or CI bound between them.

    python benchmarks/bench_claims.py --profile mini --json results/benchmarks/claims_cpu.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from scipy import optimize  # noqa: E402

from ulma import claims, selection, stats  # noqa: E402


def lbfgsb_fit(params, x, y, **_):
    """The fit as `ulma.stats` ran it before: scipy's L-BFGS-B with the exact gradient, gtol 1e-7."""
    fit = optimize.minimize(stats._logistic_loss, params, args=(x, y), jac=True, method="L-BFGS-B",
                            options={"gtol": 1e-7, "maxiter": 500})
    return fit.x


def timed(records, fit) -> tuple[float, float, list[dict]]:
    saved, stats._fit_logistic = stats._fit_logistic, fit
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        rows = claims.evaluate_claims(records)
        return time.perf_counter() - wall, time.process_time() - cpu, rows
    finally:
        stats._fit_logistic = saved


def largest_difference(a: list[dict], b: list[dict]) -> float:
    gaps = [abs(x[k] - y[k]) for x, y in zip(a, b) for k in ("difference", "ci_low", "ci_high")
            if isinstance(x.get(k), float) and isinstance(y.get(k), float) and math.isfinite(x[k])
            and math.isfinite(y[k])]
    return max(gaps, default=0.0)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="mini")
    parser.add_argument("--results-dir", default=str(REPO / "results"))
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)

    records = selection.load_records(args.profile, args.results_dir)
    newton = stats._fit_logistic
    order = [("lbfgsb", lbfgsb_fit), ("newton", newton), ("newton", newton), ("lbfgsb", lbfgsb_fit)]
    times: dict[str, list[tuple[float, float]]] = {"lbfgsb": [], "newton": []}
    rows: dict[str, list[dict]] = {}
    for name, fit in order:
        wall, cpu, rows[name] = timed(records, fit)
        times[name].append((wall, cpu))
        print(f"{name:7s} wall {wall:7.1f} s  CPU {cpu:7.1f} s", flush=True)
    mean = {name: [float(np.mean([t[i] for t in v])) for i in (0, 1)] for name, v in times.items()}
    out = {
        "what": "claims.evaluate_claims on the committed records: LC fit by scipy L-BFGS-B (before) vs Newton",
        "profile": args.profile,
        "records": len(records),
        "lc_claims_measured": sum(r["metric"] == "lc_win_rate" and not r["verdict"].startswith("not measured")
                                  for r in rows["newton"]),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        "note": "process CPU time is the steady figure on a shared machine; wall time varies with its load",
        "lbfgsb": {"wall_s": mean["lbfgsb"][0], "cpu_s": mean["lbfgsb"][1]},
        "newton": {"wall_s": mean["newton"][0], "cpu_s": mean["newton"][1]},
        "speedup_wall": mean["lbfgsb"][0] / mean["newton"][0],
        "speedup_cpu": mean["lbfgsb"][1] / mean["newton"][1],
        "largest_difference": largest_difference(rows["lbfgsb"], rows["newton"]),
        "same_verdicts": [r["verdict"] for r in rows["lbfgsb"]] == [r["verdict"] for r in rows["newton"]],
    }
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
