"""The grid: train, evaluate and record every run of an experiment, resumably.

``run_one`` trains one variant into a run folder outside the repository (``ulma.models.cache_dir()/runs/
...``), evaluates it, and writes its record (`ulma.store`) with the resolved config and its hash,
metrics, timings, peak memory and package versions. A record whose hash matches the resolved config is not
recomputed (an interrupted reproduction resumes); a run with the same resolved config in another
experiment is reused, not retrained (recorded as ``reused_from``). A dataset that cannot be had (offline,
file missing) gives a ``skipped`` record with the reason; a method whose data kind the dataset lacks
(pairwise DPO on red-team) a ``not_applicable`` one. ``run_grid`` runs every (dataset, variant, seed),
prints the plan with an estimate from measured costs first, and with ``train=False`` only reports the
records that exist.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import shutil
import statistics
import time
import traceback
from pathlib import Path
from typing import Any, Collection, Mapping

from ulma import data
from ulma.catalog import EXPERIMENTS, get_experiment, run_budget, run_profile
from ulma.claims import claim_arms
from ulma.config import Profile
from ulma.evaluation import evaluate_run
from ulma.files import portable_path
from ulma.losses import METHODS, get_method
from ulma.runs import RunFolder, resolve_data_dir
from ulma.selection import data_options_only
from ulma.store import (RECORD_SCHEMA, PeakMemory, as_profile, config_hash, find_reusable, fresh, now,
                        package_versions, read_record, record_value, recorded_configs, resolve_path, resolved_config,
                        result_path, run_folder, short_error, write_record)
from ulma.trainer import train

NOT_APPLICABLE_REASON = {  # why a dataset lacks a view (ulma.data.SOURCES says which views it has)
    "pairwise": "no natural pairs: one reply per prompt (docs/DATASETS.md); the case for point-wise methods",
}
# the files the grid keeps in a run folder beside the run's own (ulma.runs owns the rest)
CONFIG_MARKER = "ULMA_CONFIG_HASH"
MEASURED = "ULMA_TRAIN_MEASURED.json"  # our timings, kept for an evaluation that was interrupted
# the reason of a run recorded as not runnable on this machine (no copy of its data): what the README's
# summary counts as unmeasurable here, apart from runs still to train
NOT_LOADABLE_HERE = "cannot be loaded here"


def not_applicable(dataset: str, method: str) -> str | None:
    """Why `method` cannot run on `dataset` (pairwise DPO on red-team), or None."""
    kind = get_method(method).data_kind
    if dataset in data.SOURCES and kind not in data.SOURCES[dataset].views:
        return f"{dataset} has no {kind} view: " + NOT_APPLICABLE_REASON.get(kind, "")
    return None


def dataset_unavailable(dataset: str, view: str, split: str, data_dir: str | None, options: Mapping) -> str | None:
    """None when the dataset can be had, else why not (offline hub, missing local file).

    A local copy is checked by its file (no parsing); the hub by loading the rows. Any other error is
    not about availability: training raises it, with its own message.
    """
    if data_dir is not None:
        location = Path(data.source_location(dataset, split, data_dir))
        # as records keep paths (repository-relative), so that no committed record names this machine's folders
        return None if location.is_file() else f"no local file {portable_path(location)}"
    try:
        data.load(dataset, view, split, None, **dict(options))
    except (FileNotFoundError, ConnectionError) as exc:
        return short_error(exc)
    except Exception:  # noqa: BLE001 - not an availability problem; train() reports it
        return None
    return None


# ------------------------------------------------------------------------------------------ run_one
def _identify(prof: Profile, exp, dataset: str, label: str, seed: int, results_dir, data_dir):
    """(variant, run profile, data root, resolved config, its hash, record path) of one run: no model, no data."""
    variant = exp.variant(label, prof)
    if not runs_on(variant, dataset):
        raise ValueError(f"variant {label!r} of {exp.name} runs on {', '.join(variant.datasets)} only, not {dataset!r}")
    rprof = run_profile(prof, exp, dataset, variant, seed)
    resolved_data = resolve_data_dir(data_dir, prof.train.data_dir)
    config = resolved_config(rprof, variant.method, dataset, resolved_data)
    return variant, rprof, resolved_data, config, config_hash(config), result_path(
        results_dir, prof.name, exp.name, dataset, label, seed)


def _loop(record: Mapping) -> tuple[float, int, int] | None:
    """(seconds, steps, sequences per step) of a record's training loop: the optimizer steps (RLHF: the PPO
    stage; its reward model counts as setup); None when the record does not say."""
    train, config = record_value(record, "metrics.train") or {}, record.get("config") or {}
    budget = record.get("budget") or {}
    if isinstance(train.get("ppo"), Mapping):
        seconds, steps = train["ppo"].get("wall_time_s"), train["ppo"].get("steps")
        n = budget.get("sequences_per_step") or record_value(config, "rlhf.rollout_batch_size")
    else:
        seconds, steps = train.get("wall_time_s"), train.get("global_step")
        cfg = config.get("train") or {}
        per_row = 2 if get_method(record.get("base_method", "sft")).data_kind == "pairwise" else 1  # a pair: 2
        n = budget.get("sequences_per_step") or (
            cfg.get("per_device_train_batch_size", 0) * cfg.get("gradient_accumulation_steps", 1) * per_row)
    return (float(seconds), int(steps), int(n)) if seconds and steps and n else None


def measured_here(record: Mapping) -> bool:
    """Whether a record's timings measure its own run: finished and timed, not copied from another
    experiment's record (a copy took no time)."""
    return (record.get("status") == "done" and not record.get("reused_from")
            and "train_s" in (record.get("timings") or {}))


def measured_costs(results_dir, profile: str, exclude: Collection[str] = ()) -> dict[str, dict[str, float]]:
    """Unit costs measured by this profile's records that trained and evaluated (reused ones excluded),
    medians, by base method and under "*" over every method, and the same per dataset under
    ``<dataset>/<method>`` and ``<dataset>/*`` (a dataset's sequence lengths and distinct replies set its
    rates: QA-feedback's evaluation scores far fewer distinct sequences per pair than HH's):

    - ``setup_s``: training time outside the loop (loading, the cached reference pass; RLHF's reward model);
    - ``s_per_sequence``: the loop's seconds per training sequence (steps × sequences per step);
    - ``s_per_pair``: the preference pass per test pair; ``s_per_new_token``: generation per token of the
      budget (prompts × max_new_tokens, known before a run; how long the replies run, which sets the real
      cost now that a row leaves the batch at its EOS, is in each method's rate); ``other_s``: the rest of an
      evaluation (perplexity pass, judge);
    - ``pairs:<split>``: the test pairs a split holds (evaluation scores at most that many).

    `exclude`: config hashes whose records are left out (`benchmarks/bench_plan.py` estimates each record
    from the others).
    """
    samples: dict[str, dict[str, list[float]]] = {}

    def add(method: str, name: str, value: float) -> None:
        for key in {method, "*", f"{dataset}/{method}", f"{dataset}/*"}:
            samples.setdefault(key, {}).setdefault(name, []).append(value)

    for path in sorted((Path(results_dir) / profile).glob("*/*.json")):
        record = read_record(path) or {}
        if not measured_here(record) or record.get("config_hash") in exclude:
            continue
        timings, method = record["timings"], record.get("base_method", "?")
        dataset = record.get("dataset", "?")
        loop = _loop(record) if method in METHODS and get_method(method).trains else None
        if loop is not None:
            seconds, steps, n = loop
            add(method, "setup_s", max(float(timings["train_s"]) - seconds, 0.0))
            add(method, "s_per_sequence", seconds / (steps * n))
        ev = record_value(record, "metrics.eval") or {}
        parts = ev.get("timings") or {}
        pairs = ev.get("preference_pairs") or 0
        budget = (ev.get("num_generations") or 0) * (ev.get("max_new_tokens") or 0)
        if pairs and "preference_s" in parts:
            add("*", "s_per_pair", parts["preference_s"] / pairs)
            add("*", f"pairs:{ev.get('test_split')}", float(pairs))
        if budget and "generation_s" in parts:
            add("*", "s_per_new_token", parts["generation_s"] / budget)
        if parts:
            add("*", "other_s", sum(v for k, v in parts.items() if k in ("perplexity_s", "judge_s", "judge_setup_s")))
    return {method: {name: statistics.median(v) for name, v in values.items()} for method, values in samples.items()}


def estimate_seconds(costs: Mapping[str, Mapping[str, float]], method: str, steps: int | None, sequences: int,
                     ev, dataset: str | None = None) -> float | None:
    """A planned run's time from `measured_costs`: setup + steps × sequences × s_per_sequence + its
    evaluation (test pairs × s_per_pair + prompts × max_new_tokens × s_per_new_token + other_s). Each rate
    is the most specific measured: the method's on this dataset, the method's, every method's on this
    dataset, every method's (an evaluation's: this dataset's, else every one's). None when nothing was
    measured."""
    order = [f"{dataset}/{method}", method, f"{dataset}/*", "*"]
    rate = lambda name, keys=order: next(  # noqa: E731
        (costs[k][name] for k in keys if name in costs.get(k, {})), None)
    evaluation = lambda name: rate(name, [f"{dataset}/*", "*"])  # noqa: E731
    every = costs.get("*", {})
    if not every:
        return None
    seconds = 0.0
    if get_method(method).trains and steps:
        if rate("s_per_sequence") is None:
            return None
        seconds += (rate("setup_s") or 0.0) + steps * sequences * rate("s_per_sequence")
    # the split's measured size, else the most the evaluation scores (else any split's: a guess)
    pairs = evaluation(f"pairs:{ev.test_split}") or ev.max_eval_samples or statistics.median(
        [v for k, v in every.items() if k.startswith("pairs:")] or [0.0])
    pairs = min(pairs, ev.max_eval_samples) if ev.max_eval_samples else pairs
    seconds += (pairs or 0.0) * (evaluation("s_per_pair") or 0.0)
    # num_generations None: every test prompt, about as many as the test pairs
    generated = (ev.num_generations if ev.num_generations is not None else pairs or 0) * ev.max_new_tokens
    seconds += generated * (evaluation("s_per_new_token") or 0.0) + (evaluation("other_s") or 0.0)
    return seconds


def run_estimate(costs: Mapping[str, Mapping[str, float]], prof: Profile, exp, rprof: Profile, method: str,
                 dataset: str) -> float | None:
    """`estimate_seconds` of one run of a grid (`rprof`: its run profile), at its budget of steps."""
    budget = run_budget(prof, exp, rprof, method)
    steps = budget["steps"] or _epoch_steps(rprof, method)
    return estimate_seconds(costs, method, steps, budget["sequences_per_step"], rprof.eval, dataset)


def estimate_gaps(costs: Mapping[str, Mapping[str, float]], method: str, ev) -> list[str]:
    """What an `estimate_seconds` of this run could not measure, in words (empty when nothing): a method
    without a run of its own takes every method's rate; an evaluation that generates, with no generation
    measured yet, counts none (the plan prints these beside the estimate)."""
    gaps = []
    if get_method(method).trains and "s_per_sequence" not in costs.get(method, {}):
        gaps.append(f"no {method} run measured: other methods' rate")
    if ev.num_generations != 0 and "s_per_new_token" not in costs.get("*", {}):
        gaps.append("generation not measured yet: not counted")
    return gaps


def run_seeds(prof: Profile, exp, dataset: str, label: str) -> list[int]:
    """The seeds of one (dataset, variant) of a grid: the profile's `seeds`, and its `claim_seeds` too when
    the variant is a plain trained method that a claim of the paper compares on this dataset (the protocol's
    >= 3 seeds there, >= 1 for the rest; the base model trains nothing, so one seed is all of it)."""
    variant = exp.variant(label, prof)
    seeds = list(prof.experiments.seeds)
    if (data_options_only(variant.overrides) and get_method(variant.method).trains
            and (dataset, variant.method) in claim_arms()):
        seeds += [s for s in prof.experiments.claim_seeds if s not in seeds]
    return seeds


def runs_on(variant, dataset: str) -> bool:
    """Whether a variant runs on `dataset`: every dataset, unless it names its own (a data option)."""
    return not variant.datasets or dataset in variant.datasets


def plan(profile: str | Profile, experiment: str, datasets: list[str], methods: list[str],
         seeds: list[int] | None = None, *, force: bool | str = False, results_dir: str | os.PathLike = "results",
         data_dir: str | None = None) -> list[dict[str, Any]]:
    """The runs of a grid, each {dataset, method, seed, base_method, done, reused, skip, estimate_s}: `done`
    when a fresh record exists (nothing to train); `reused` the record of the same config that another
    experiment holds (nothing to train either: `run_one` copies it), else None; `estimate_s` from
    `measured_costs` (the most specific rates measured, `estimate_seconds`; None when nothing was measured)
    for the runs to train, 0 for the reused and skipped ones. `seeds` None: `run_seeds` of each (dataset, variant)."""
    prof, exp = as_profile(profile), get_experiment(experiment)
    costs = measured_costs(resolve_path(results_dir), prof.name)
    recorded = recorded_configs(resolve_path(results_dir) / prof.name, force)
    rows = []
    for dataset in datasets:
        for label in [m for m in methods if runs_on(exp.variant(m, prof), dataset)]:
            for seed in (run_seeds(prof, exp, dataset, label) if seeds is None else seeds):
                variant, rprof, resolved_data, _, key, path = _identify(prof, exp, dataset, label, seed, results_dir,
                                                                       data_dir)
                done = fresh(read_record(path), key, force)
                reused = None if done else recorded.get(key)
                # a run that will only record why it cannot run (no such view, no copy of the data) costs nothing
                skip = None if done or reused else (not_applicable(dataset, variant.method) or dataset_unavailable(
                    dataset, get_method(variant.method).data_kind, rprof.train.train_split, resolved_data,
                    rprof.train.data_options))
                estimate = None if done else 0.0 if skip or reused else run_estimate(
                    costs, prof, exp, rprof, variant.method, dataset)
                gaps = estimate_gaps(costs, variant.method, rprof.eval) if estimate else []
                rows.append({"dataset": dataset, "method": label, "seed": seed, "base_method": variant.method,
                             "done": done, "reused": reused, "skip": skip, "estimate_s": estimate,
                             "estimate_gaps": gaps, "config_hash": key, "path": str(path)})
    return rows


def plan_profile(profile: str | Profile, results_dir: str | os.PathLike = "results") -> list[dict[str, Any]]:
    """`plan` of every experiment at this profile (its datasets, variants and each run's seeds), each row
    with its ``experiment``; a run that several experiments share appears once per experiment."""
    prof = as_profile(profile)
    rows = []
    for name, exp in EXPERIMENTS.items():
        datasets, variants = exp.datasets_for(prof), list(exp.variants_for(prof))
        if datasets and variants:
            rows += [{**r, "experiment": name} for r in plan(prof, name, datasets, variants, results_dir=results_dir)]
    return rows


def stale_records(profile: str | Profile, results_dir: str | os.PathLike = "results") -> list[dict[str, str]]:
    """The run records under ``results/<profile>/`` that the profile's grid would not reuse, each
    {path, reason}: a record of another config (an older protocol: its config hash differs from the one
    `plan` computes now) or of a run the grid no longer has. Empty when every record is of the current
    protocol, so that no table or claim puts runs of two protocols side by side. Files that are not run
    records (dataset statistics, benchmarks) are not looked at."""
    prof = as_profile(profile)
    current = {Path(r["path"]).resolve(): r["config_hash"] for r in plan_profile(prof, results_dir)}
    stale = []
    for path in sorted((resolve_path(results_dir) / prof.name).glob("*/*.json")):
        record = read_record(path)
        if not isinstance(record, dict) or "status" not in record or "method" not in record:
            continue
        key = current.get(path.resolve())
        if key is None:
            stale.append({"path": portable_path(path), "reason": "not a run of the profile's grid"})
        elif record.get("config_hash") != key:
            stale.append({"path": portable_path(path), "reason": "another config (an older protocol): "
                          f"hash {record.get('config_hash')}, the grid's now {key}"})
    return stale


def _epoch_steps(prof: Profile, method: str) -> int | None:
    """Optimizer steps of a run trained by epochs (the `paper` budget), from the profile's example count:
    None when it takes every example (unknown without the data)."""
    train = prof.train
    if train.max_train_examples is None:
        return None
    rows = train.max_train_examples * (1 if get_method(method).data_kind in ("pairwise", "sft") else 2)
    per_step = train.per_device_train_batch_size * train.gradient_accumulation_steps
    return max(1, math.ceil(rows * train.num_train_epochs / per_step))


def run_one(
    profile: str | Profile,
    experiment: str,
    dataset: str,
    method: str,
    seed: int,
    *,
    force: bool | str = False,
    results_dir: str | os.PathLike = "results",
    runs_dir: str | os.PathLike | None = None,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Train, evaluate and record one run; return its record (the JSON's content).

    ``method`` is a variant label of the experiment (``ulma``, ``ulma@c=0.5``, ``negative_unlikelihood``).
    A record of the same resolved config is returned as is unless ``force``.
    """
    prof, exp = as_profile(profile), get_experiment(experiment)
    variant, rprof, resolved_data, config, key, path = _identify(prof, exp, dataset, method, seed, results_dir, data_dir)
    old = read_record(path)
    if fresh(old, key, force):
        return old

    record: dict[str, Any] = {
        "schema": RECORD_SCHEMA,
        "profile": prof.name,
        "experiment": exp.name,
        "dataset": dataset,
        "method": method,
        "base_method": variant.method,
        "seed": seed,
        "overrides": dict(variant.overrides),
        "note": variant.note,
        "budget": run_budget(prof, exp, rprof, variant.method),
        "config_hash": key,
        "config": config,
        "data_dir": portable_path(resolved_data),
        "versions": package_versions(),
        "started_at": now(),
    }
    reason = not_applicable(dataset, variant.method)
    if reason:
        return _finish(path, record, "not_applicable", reason=reason)
    reused = find_reusable(path.parent.parent, key, force, exclude=path)
    if reused:
        src, done = reused
        keep = ("metrics", "timings", "memory", "run_dir", "versions", "started_at", "finished_at")
        record.update({k: done[k] for k in keep if k in done})
        record["reused_from"] = str(src.relative_to(path.parent.parent))
        write_record(path, {**record, "status": "done"})
        return {**record, "status": "done"}
    split = rprof.train.train_split
    reason = dataset_unavailable(dataset, get_method(variant.method).data_kind, split, resolved_data, rprof.train.data_options)
    if reason:
        return _finish(path, record, "skipped", reason=f"{dataset} ({split}) {NOT_LOADABLE_HERE}: {reason}")

    run_dir = run_folder(runs_dir, prof.name, exp.name, dataset, method, seed)
    try:
        record.update(_train_and_evaluate(rprof, variant.method, dataset, run_dir, key, force, data_dir))
    except Exception as exc:  # recorded, then raised: run_grid goes on with the next run
        _finish(path, record, "failed", reason=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        raise
    return _finish(path, record, "done")


def _finish(path: Path, record: dict, status: str, **extra) -> dict:
    record = {**record, **extra, "status": status, "finished_at": now()}
    write_record(path, record)
    return record


def _train_and_evaluate(prof: Profile, method: str, dataset: str, run_dir: Path, key: str, force, data_dir) -> dict:
    marker = run_dir / CONFIG_MARKER
    stale = force is True or (isinstance(force, str) and marker.exists() and _mtime_iso(marker) < force)
    if run_dir.exists() and (stale or not marker.exists() or marker.read_text().strip() != key):
        shutil.rmtree(run_dir)  # another config's (or a forced) partial run: start over, never mix
    run_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(key + "\n")

    folder = RunFolder(run_dir)
    finished = folder.read_metrics().get("train")
    measured = run_dir / MEASURED
    if finished and (folder.has_weights() or finished.get("trained") is False) and measured.exists():
        train_metrics = finished  # trained before an interruption during evaluation
        timings, memory = (read_record(measured) or {}).get("timings", {}), (read_record(measured) or {}).get("memory", {})
    else:
        if folder.read_config() is None and folder.holds_files():
            # a partial run of a version that wrote config.json last: only the marker vouches for it, and
            # the trainer refuses a folder it cannot identify, so its partial files are dropped, never mixed
            folder.clear()
        resume = (run_dir / "checkpoints").exists()
        # "resumed" only when saved state exists to continue from: an empty or half-written checkpoints/
        # trains from the start
        resumed = resume and folder.has_saved_state()
        t0 = time.perf_counter()
        with PeakMemory() as mem:
            train_metrics = _train(prof, method, dataset, run_dir, data_dir, resume)
        timings = {"train_s": time.perf_counter() - t0, "resumed": resumed}
        memory = {"train_peak_rss_mb": mem.peak_mb, "train_start_rss_mb": mem.start_mb,
                  "train_peak_cuda_mb": mem.cuda_peak_mb}
        write_record(measured, {"timings": timings, "memory": memory})
    t0 = time.perf_counter()
    with PeakMemory() as mem:
        eval_metrics = _evaluate(run_dir, data_dir)
    timings["eval_s"] = time.perf_counter() - t0
    memory.update(eval_peak_rss_mb=mem.peak_mb, eval_peak_cuda_mb=mem.cuda_peak_mb)
    if isinstance(train_metrics, Mapping) and "train" in train_metrics and isinstance(train_metrics["train"], Mapping):
        train_metrics = train_metrics["train"]
    if isinstance(eval_metrics, Mapping) and "eval" in eval_metrics and isinstance(eval_metrics["eval"], Mapping):
        eval_metrics = eval_metrics["eval"]
    return {
        "metrics": {"train": train_metrics, "eval": eval_metrics},
        "timings": timings,
        "memory": memory,
        "run_dir": portable_path(run_dir),
    }


def _train(prof: Profile, method: str, dataset: str, run_dir: Path, data_dir, resume: bool) -> dict:
    return train(prof, method, dataset, run_dir, data_dir=data_dir, resume=resume)


def _evaluate(run_dir: Path, data_dir) -> dict:
    return evaluate_run(run_dir, data_dir=data_dir)


def _mtime_iso(path: Path) -> str:
    return _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.timezone.utc).isoformat(timespec="microseconds")


# ----------------------------------------------------------------------------------------- run_grid
def run_grid(
    profile: str | Profile,
    experiment: str,
    datasets: list[str] | None = None,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
    *,
    force: bool | str = False,
    results_dir: str | os.PathLike = "results",
    runs_dir: str | os.PathLike | None = None,
    data_dir: str | None = None,
    raise_on_failure: bool = True,
    train: bool = True,
) -> list[dict[str, Any]]:
    """Every (dataset, variant, seed) of an experiment; None = the experiment's lists at this profile.

    Before training it prints the planned runs and an estimate of their time from measured per-run costs
    (`plan`), then each run's actual time. ``train=False`` trains nothing: it returns the records that
    exist (a run another experiment recorded with the same config is copied, as training would reuse it),
    and a ``not_run`` record for each run without one. A failing run is recorded and the grid goes
    on; with ``raise_on_failure`` the failures are raised together at the end.
    """
    prof, exp = as_profile(profile), get_experiment(experiment)
    datasets = exp.datasets_for(prof) if datasets is None else list(datasets)
    methods = list(exp.variants_for(prof)) if methods is None else list(methods)
    seeds = None if seeds is None else list(seeds)  # None: each run's own (`run_seeds`)
    planned = plan(prof, exp.name, datasets, methods, seeds, force=force, results_dir=results_dir, data_dir=data_dir)
    if not train:  # report what exists, train nothing
        records = []
        for p in planned:
            path = Path(p["path"])
            if p["reused"]:
                # the identical run of another experiment (04's HH runs for 03, 05, 07): its record is
                # copied, as training would, and nothing is trained
                run_one(prof, exp.name, p["dataset"], p["method"], p["seed"], force=force, results_dir=results_dir,
                        runs_dir=runs_dir, data_dir=data_dir)
            records.append(read_record(path) or {**{k: p[k] for k in ("dataset", "method", "seed")},
                                                 "status": "not_run", "reason": "no record and train=False"})
        return records
    print_plan(exp.name, planned)
    records, failures = [], []
    for p in planned:
        dataset, method, seed = p["dataset"], p["method"], p["seed"]
        t0 = time.perf_counter()
        try:
            record = run_one(prof, exp.name, dataset, method, seed, force=force, results_dir=results_dir,
                             runs_dir=runs_dir, data_dir=data_dir)
        except Exception as exc:  # noqa: BLE001 - recorded in its JSON by run_one
            failures.append(f"{dataset}/{method}/seed{seed}: {type(exc).__name__}: {exc}")
            record = {"dataset": dataset, "method": method, "seed": seed, "status": "failed", "reason": str(exc)}
        status = record["status"] + (" (reused)" if record.get("reused_from") else "")
        detail = f": {record['reason']}" if record.get("reason") else ""
        print(f"[{exp.name}] {dataset:12s} {method:26s} seed {seed}  {status}{detail}  "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
        records.append(record)
    if failures and raise_on_failure:
        raise RuntimeError(f"{len(failures)} run(s) failed (recorded in their JSON):\n" + "\n".join(failures))
    return records


def to_train(planned: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The planned runs that will train: no record of their own, none of the same config elsewhere
    (`plan`'s ``reused``), and runnable here."""
    return [p for p in planned if not p["done"] and not p.get("reused") and not p.get("skip")]


def print_plan(name: str, planned: list[dict[str, Any]]) -> None:
    todo = to_train(planned)
    known = [p["estimate_s"] for p in todo if p["estimate_s"] is not None]
    unknown = len(todo) - len(known)
    total = f"≈ {sum(known) / 60:.1f} min" + (f" + {unknown} run(s) of unknown cost" if unknown else "")
    skipped = sum(1 for p in planned if not p["done"] and p.get("skip"))
    reused = sum(1 for p in planned if p.get("reused"))
    print(f"[{name}] plan: {len(planned)} run(s), {len(planned) - len(todo) - skipped - reused} already recorded, "
          + (f"{reused} to copy from another experiment's record, " if reused else "")
          + (f"{skipped} to record as not runnable here, " if skipped else "")
          + f"{len(todo)} to run ({total if todo else 'nothing to train'})", flush=True)
    for p in todo:
        estimate = f"≈ {p['estimate_s'] / 60:.1f} min" if p["estimate_s"] is not None else "cost unknown"
        gaps = f"  ({'; '.join(p['estimate_gaps'])})" if p.get("estimate_gaps") else ""
        print(f"[{name}]   {p['dataset']:12s} {p['method']:26s} seed {p['seed']}  {estimate}{gaps}", flush=True)
