"""Experiments: the runs behind the numbered notebooks, one JSON each, resumable.

An experiment (``EXPERIMENTS``) is data, not code: the datasets it covers, the variants it compares (a
method of ``ulma.losses.METHODS`` or ``rlhf``, plus TrainConfig overrides), and sweeps over a TrainConfig
field whose values the profile gives (``experiments.sweeps``). ``run_one`` trains one variant into a run
folder outside the repository (``ulma.models.cache_dir()/runs/...``), evaluates it, and writes

    results/<profile>/<experiment>/<dataset>__<variant>__seed<k>.json

with the resolved config and its hash, metrics, timings, peak memory and package versions. A JSON whose
hash matches the resolved config is not recomputed (an interrupted reproduction resumes); a run with the
same resolved config in another experiment is reused, not retrained (recorded as ``reused_from``). A
dataset that cannot be had (offline, file missing) gives a ``skipped`` record with the reason; a method
that does not apply (pairwise DPO on red-team) a ``not_applicable`` one. Tables and figures are drawn from
these JSONs alone (``ulma.report``).

``gradient_weights`` is the paper's gradient analysis (notebook 02), ``reproduce`` runs the notebooks.
Relative ``results_dir`` / ``figures_dir`` / ``runs_dir`` resolve against the repository root when the
package runs from a checkout (so a notebook's working directory does not matter), else the current one.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import datetime as _dt
import hashlib
import inspect
import json
import os
import platform
import shutil
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ulma.config import Profile, load_profile, profile_from_dict, train_config_for

RECORD_SCHEMA = 1
ALL_METHODS = ("sft", "rlhf", "dpo", "pointwise_dpo", "unlikelihood", "kto", "ulma")
NOT_APPLICABLE_REASON = {  # why a dataset lacks a view (ulma.data.SOURCES says which views it has)
    "pairwise": "no natural pairs: one reply per prompt (docs/DATASETS.md); the case for point-wise methods",
}
_DATA_KIND = {"rlhf": "pointwise"}  # rlhf reads pairs where they exist, z otherwise (regression reward model)


# ------------------------------------------------------------------------------------------ definitions
@dataclass(frozen=True)
class Variant:
    """One compared column of a table: a method plus TrainConfig overrides."""

    method: str  # a key of ulma.losses.METHODS, or "rlhf" (reward model + PPO)
    overrides: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig fields (dicts are merged)
    note: str = ""  # shown in the tables


@dataclass(frozen=True)
class Sweep:
    """Variants ``<method>@<field>=<value>`` for each value of ``profile.experiments.sweeps[field]``."""

    field: str  # a TrainConfig field
    methods: tuple[str, ...]


@dataclass(frozen=True)
class Experiment:
    name: str  # the notebook's stem and the results folder
    title: str
    claim: str  # what the paper claims (the notebook's first cell)
    shows: str  # what the notebook shows
    datasets: tuple[str, ...] = ()
    variants: tuple[tuple[str, Variant], ...] = ()  # (label, variant), in table order
    sweeps: tuple[Sweep, ...] = ()
    dataset_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # TrainConfig per dataset

    def variants_for(self, profile: Profile) -> dict[str, Variant]:
        """Labels → variants at this profile, sweeps expanded. Of the compared methods (``ALL_METHODS``)
        only those in ``profile.experiments.methods`` run; ablation-only methods always do."""
        skip = set(ALL_METHODS) - set(profile.experiments.methods)
        out = {label: v for label, v in self.variants if v.method not in skip}
        for sweep in self.sweeps:
            for method in sweep.methods:
                if method in skip:
                    continue
                default = getattr(train_config_for(profile, method), sweep.field)  # the baseline point, always
                for value in sorted(set([default, *profile.experiments.sweeps.get(sweep.field, [])])):
                    out[f"{method}@{sweep.field}={_fmt(value)}"] = Variant(method, {sweep.field: value})
        return out

    def datasets_for(self, profile: Profile) -> list[str]:
        return [d for d in self.datasets if d in profile.experiments.datasets]

    def variant(self, label: str, profile: Profile) -> Variant:
        known = self.variants_for(profile)
        if label in known:
            return known[label]
        if "@" not in label and (label == "rlhf" or label in _method_names()):
            return Variant(label)  # any plain method runs in any experiment
        raise ValueError(f"unknown variant {label!r} of {self.name}; known: {sorted(known)}")


def _fmt(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


def _plain(methods) -> tuple[tuple[str, Variant], ...]:
    return tuple((m, Variant(m)) for m in methods)


# QA-feedback carries graded preferences: the paper's continuous-label setting (docs/DATASETS.md)
_CONTINUOUS_QA = {"qa_feedback": {"data_options": {"labels": "continuous"}}}

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in [
        Experiment(
            "01_datasets",
            "Datasets and their three views",
            "ULMA learns from demonstrations (SFT data) and point-wise preference; every source is turned "
            "into a pairwise, a point-wise and an SFT view.",
            "Sizes, label balance and token lengths of every dataset and view at this profile.",
            datasets=("hh", "golden_hh", "red_team", "qa_feedback"),
        ),
        Experiment(
            "02_gradients",
            "Gradient analysis",
            "Point-wise DPO's gradient on a positive is the SFT gradient scaled by β·σ(−u), an implicit KL "
            "regulariser; on a negative it is a bounded unlikelihood. ULMA removes the regulariser on "
            "positives (weight 1). Each sample's weight depends on its own log-ratio only, unlike DPO's.",
            "The per-sample gradient weight −∂L/∂log π_θ(y|x) against the log-ratio, computed with autograd "
            "from the package's loss functions: pure math, no training.",
        ),
        Experiment(
            "03_pointwise_dpo",
            "Point-wise DPO against DPO and RLHF",
            "Point-wise DPO matches or beats pairwise DPO and RLHF on binary labels (HH) and, unlike DPO, "
            "applies to continuous labels (red-team, QA-feedback).",
            "Perplexity, preference accuracy and judge win rate of DPO, RLHF and point-wise DPO per dataset.",
            datasets=("hh", "red_team", "qa_feedback"),
            variants=_plain(("dpo", "rlhf", "pointwise_dpo")),
            dataset_overrides=_CONTINUOUS_QA,
        ),
        Experiment(
            "04_ulma",
            "The main comparison",
            "ULMA (SFT on positives, point-wise DPO on negatives, one step) beats SFT, RLHF, DPO, point-wise "
            "DPO and unlikelihood on HH, QA-feedback and red-team.",
            "Every method on every dataset: perplexity, preference accuracy, judge win/tie/lose.",
            datasets=("hh", "red_team", "qa_feedback"),
            variants=_plain(ALL_METHODS),
            dataset_overrides=_CONTINUOUS_QA,
        ),
        Experiment(
            "05_golden_hh",
            "Golden HH against HH",
            "Better positive data (Golden HH: chosen replies rewritten to be harmless and helpful) helps "
            "ULMA most, because ULMA fits positives without a KL brake.",
            "Every method trained on HH and on Golden HH, evaluated the same way.",
            datasets=("hh", "golden_hh"),
            variants=_plain(ALL_METHODS),
        ),
        Experiment(
            "06_ablations",
            "Ablations: positives, negatives, c = β·log Z, β",
            "On positives, plain SFT does at least as well as positive DPO (the KL brake is unneeded); on "
            "negatives, negative DPO is far better than unlikelihood, whose gradient is unbounded. "
            "Z(x) ≈ 1 (c = 0) is a safe choice.",
            "Positives only (SFT vs positive DPO), negatives only (unlikelihood vs negative DPO), and "
            "sweeps over c and β for point-wise DPO and ULMA.",
            datasets=("hh",),
            variants=(
                ("sft", Variant("sft", note="positives only")),
                ("positive_dpo", Variant("positive_dpo", note="positives only")),
                ("negative_unlikelihood", Variant("negative_unlikelihood", note="negatives only")),
                ("negative_dpo", Variant("negative_dpo", note="negatives only")),
            ),
            sweeps=(Sweep("c", ("pointwise_dpo", "ulma")), Sweep("beta", ("pointwise_dpo", "ulma"))),
        ),
        Experiment(
            "07_efficiency",
            "Training cost",
            "ULMA and point-wise DPO need one training stage and, with a cached reference, one policy forward "
            "per sample; RLHF needs a reward model and PPO rollouts.",
            "Wall time, tokens/s, peak memory and forward passes per step of every method, and the RLHF "
            "pipeline (reward model + PPO) against ULMA in one step.",
            datasets=("hh",),
            variants=_plain(ALL_METHODS),
        ),
        Experiment(
            "08_figures",
            "Every figure from results/",
            "—",
            "Redraws every figure of notebooks 02–07 from the JSON and CSV files under results/ alone: no "
            "training, no model.",
        ),
    ]
}


def get_experiment(name: str) -> Experiment:
    """An experiment by name (``04_ulma``) or number prefix (``04``)."""
    if name in EXPERIMENTS:
        return EXPERIMENTS[name]
    matches = [e for key, e in EXPERIMENTS.items() if key.split("_")[0] == name]
    if len(matches) == 1:
        return matches[0]
    raise ValueError(f"unknown experiment {name!r}; known: {sorted(EXPERIMENTS)}")


def _method_names() -> set[str]:
    from ulma.losses import METHODS

    return set(METHODS)


def _data_kind(method: str) -> str:
    if method in _DATA_KIND:
        return _DATA_KIND[method]
    from ulma.losses import get_method

    return get_method(method).data_kind


# ---------------------------------------------------------------------------------------------- paths
def project_root() -> Path:
    """The checkout this package runs from (it holds pyproject.toml and notebooks/), else the cwd."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").exists() else Path.cwd()


def resolve_path(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path


def result_path(results_dir, profile: str, experiment: str, dataset: str, variant: str, seed: int) -> Path:
    return resolve_path(results_dir) / profile / experiment / f"{dataset}__{variant}__seed{seed}.json"


def run_folder(runs_dir, profile: str, experiment: str, dataset: str, variant: str, seed: int) -> Path:
    """Where weights go: outside the repository by default (``cache_dir()/runs``)."""
    if runs_dir is None:
        from ulma.models import cache_dir

        base = cache_dir() / "runs"
    else:
        base = resolve_path(runs_dir)
    return base / profile / experiment / f"{dataset}__{variant}__seed{seed}"


def as_profile(profile: str | Profile) -> Profile:
    return profile if isinstance(profile, Profile) else load_profile(profile)


# ------------------------------------------------------------------------------------- resolved config
def resolve_data_dir(data_dir, profile: Profile) -> str | None:
    """The data root a run reads (DESIGN.md precedence): argument, $ULMA_DATA_DIR, profile, hub (None)."""
    from ulma import data

    root = data.resolve_data_dir(data_dir or os.environ.get(data.ENV_VAR) or profile.train.data_dir)
    return str(Path(root).resolve()) if root is not None else None


def not_applicable(dataset: str, method: str) -> str | None:
    """Why `method` cannot run on `dataset` (pairwise DPO on red-team), or None."""
    from ulma import data

    kind = _data_kind(method)
    if dataset in data.SOURCES and kind not in data.SOURCES[dataset].views:
        return f"{dataset} has no {kind} view: " + NOT_APPLICABLE_REASON.get(kind, "")
    return None


def run_profile(profile: Profile, experiment: Experiment, dataset: str, variant: Variant, seed: int) -> Profile:
    """The profile one run trains with: per-method, per-dataset and variant overrides folded into ``train``."""
    values = dataclasses.asdict(train_config_for(profile, variant.method))
    for overrides in (experiment.dataset_overrides.get(dataset, {}), variant.overrides, {"seed": seed}):
        for key, value in overrides.items():
            if isinstance(value, Mapping) and isinstance(values.get(key), Mapping):
                values[key] = {**values[key], **value}
            else:
                values[key] = copy.deepcopy(value)
    data = profile.to_dict()
    data["train"] = values
    data["experiments"]["method_overrides"] = {}  # already folded in: every reader sees the same values
    return profile_from_dict(data)


def resolved_config(prof: Profile, method: str, dataset: str, data_dir: str | None) -> dict[str, Any]:
    """What determines a run's numbers (and nothing else: not paths, not the experiment's name)."""
    train = dataclasses.asdict(prof.train)
    # the same rows whether read from the hub or a local copy; the fixtures are other rows
    from ulma.data import FIXTURES_DIR

    train["data_dir"] = "fixtures" if data_dir == str(FIXTURES_DIR.resolve()) else "real"
    return {
        "method": method,
        "dataset": dataset,
        "train": train,
        "eval": dataclasses.asdict(prof.eval),
        "rlhf": dataclasses.asdict(prof.rlhf) if method == "rlhf" else None,
    }


def config_hash(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


# -------------------------------------------------------------------------------------- measurement
class PeakMemory:
    """Peak resident memory (MB) of a process, or of a process' descendants, sampled by a thread.

    Sampling misses peaks shorter than ``interval``; RSS includes memory the process held before.
    With CUDA, ``cuda_peak_mb`` is torch's exact peak of allocated device memory.
    """

    def __init__(self, pid: int | None = None, *, descendants: bool = False, interval: float = 0.2):
        import psutil

        self.process = psutil.Process(pid)
        self.descendants, self.interval = descendants, interval
        self.peak_mb = self.start_mb = 0.0
        self.cuda_peak_mb: float | None = None
        self._stop = threading.Event()

    def _sample(self) -> float:
        import psutil

        procs = self.process.children(recursive=True) if self.descendants else [self.process]
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20

    def _loop(self):
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, self._sample())

    def __enter__(self):
        self.start_mb = self.peak_mb = self._sample()
        if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
            sys.modules["torch"].cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._sample())
        if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
            self.cuda_peak_mb = sys.modules["torch"].cuda.max_memory_allocated() / 2**20
        return False


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "datasets", "ulma"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    import torch

    if torch.cuda.is_available():
        out["device"] = f"cuda: {torch.cuda.get_device_name(0)}"
    else:
        out["device"] = f"cpu: {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


# ------------------------------------------------------------------------------------------ records
def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)  # atomic: an interrupted write never leaves a half JSON that looks finished


def _fresh(record: Mapping | None, key: str, force: bool | str) -> bool:
    """A finished record of this config that `force` does not invalidate.

    ``force`` is True (redo everything) or an ISO time: records finished before it are stale, so one
    forced reproduction retrains each shared run once, not once per experiment that uses it.
    """
    if not record or record.get("config_hash") != key or force is True:
        return False
    if record.get("status") not in ("done", "not_applicable"):
        return False  # skipped and failed runs are tried again: the hub may be back, the bug fixed
    return not (isinstance(force, str) and record.get("finished_at", "") < force)


def _find_reusable(results_root: Path, key: str, force, exclude: Path) -> tuple[Path, dict] | None:
    for path in sorted(results_root.glob("*/*.json")):
        if path == exclude:
            continue
        record = _read_json(path)
        if record and record.get("status") == "done" and _fresh(record, key, force):
            return path, record
    return None


def dataset_unavailable(dataset: str, view: str, split: str, data_dir: str | None, options: Mapping) -> str | None:
    """None when the dataset can be had, else why not (offline hub, missing local file).

    A local copy is checked by its file (no parsing); the hub by loading the rows. Any other error is
    not about availability: training raises it, with its own message.
    """
    from ulma import data

    if data_dir is not None:
        location = Path(data.source_location(dataset, split, data_dir))
        return None if location.is_file() else f"no local file {location}"
    try:
        data.load(dataset, view, split, None, **dict(options))
    except (FileNotFoundError, ConnectionError) as exc:
        return _short(exc)
    except Exception:  # noqa: BLE001 - not an availability problem; train() reports it
        return None
    return None


# ------------------------------------------------------------------------------------------ run_one
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
    variant = exp.variant(method, prof)
    rprof = run_profile(prof, exp, dataset, variant, seed)
    resolved_data = resolve_data_dir(data_dir, prof)
    config = resolved_config(rprof, variant.method, dataset, resolved_data)
    key = config_hash(config)
    path = result_path(results_dir, prof.name, exp.name, dataset, method, seed)
    old = _read_json(path)
    if _fresh(old, key, force):
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
        "config_hash": key,
        "config": config,
        "data_dir": resolved_data,
        "versions": package_versions(),
        "started_at": _now(),
    }
    if variant.method != "rlhf" and variant.method not in _method_names():
        return _finish(path, record, "skipped", reason=f"method {variant.method!r} is not in ulma.losses.METHODS")
    reason = not_applicable(dataset, variant.method)
    if reason:
        return _finish(path, record, "not_applicable", reason=reason)
    reused = _find_reusable(path.parent.parent, key, force, exclude=path)
    if reused:
        src, done = reused
        keep = ("metrics", "timings", "memory", "run_dir", "versions", "started_at", "finished_at")
        record.update({k: done[k] for k in keep if k in done})
        record["reused_from"] = str(src.relative_to(path.parent.parent))
        _write_json(path, {**record, "status": "done"})
        return {**record, "status": "done"}
    split = rprof.train.train_split
    reason = dataset_unavailable(dataset, _data_kind(variant.method), split, resolved_data, rprof.train.data_options)
    if reason:
        return _finish(path, record, "skipped", reason=f"{dataset} ({split}) cannot be loaded here: {reason}")

    run_dir = run_folder(runs_dir, prof.name, exp.name, dataset, method, seed)
    try:
        record.update(_train_and_evaluate(rprof, variant.method, dataset, run_dir, key, force, data_dir))
    except Exception as exc:  # recorded, then raised: run_grid goes on with the next run
        _finish(path, record, "failed", reason=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        raise
    return _finish(path, record, "done")


def _finish(path: Path, record: dict, status: str, **extra) -> dict:
    record = {**record, **extra, "status": status, "finished_at": _now()}
    _write_json(path, record)
    return record


def _train_and_evaluate(prof: Profile, method: str, dataset: str, run_dir: Path, key: str, force, data_dir) -> dict:
    marker = run_dir / "ULMA_CONFIG_HASH"
    stale = force is True or (isinstance(force, str) and marker.exists() and _mtime_iso(marker) < force)
    if run_dir.exists() and (stale or not marker.exists() or marker.read_text().strip() != key):
        shutil.rmtree(run_dir)  # another config's (or a forced) partial run: start over, never mix
    run_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(key + "\n")

    finished = (_read_json(run_dir / "metrics.json") or {}).get("train")
    measured = run_dir / "ULMA_TRAIN_MEASURED.json"  # our timings, kept for an evaluation that was interrupted
    if finished and _has_weights(run_dir) and measured.exists():
        train_metrics = finished  # trained before an interruption during evaluation
        timings, memory = (_read_json(measured) or {}).get("timings", {}), (_read_json(measured) or {}).get("memory", {})
    else:
        resume = (run_dir / "checkpoints").exists()
        t0 = time.perf_counter()
        with PeakMemory() as mem:
            train_metrics = _train(prof, method, dataset, run_dir, data_dir, resume)
        timings = {"train_s": time.perf_counter() - t0, "resumed": resume}
        memory = {"train_peak_rss_mb": mem.peak_mb, "train_start_rss_mb": mem.start_mb,
                  "train_peak_cuda_mb": mem.cuda_peak_mb}
        _write_json(measured, {"timings": timings, "memory": memory})
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
        "run_dir": str(run_dir),
    }


def _train(prof: Profile, method: str, dataset: str, run_dir: Path, data_dir, resume: bool) -> dict:
    from ulma.trainer import train  # dispatches rlhf to ulma.rlhf itself

    return train(prof, method, dataset, run_dir, data_dir=data_dir, resume=resume)


def _evaluate(run_dir: Path, data_dir) -> dict:
    from ulma.evaluation import evaluate_run

    return evaluate_run(run_dir, data_dir=data_dir)


def _has_weights(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in ("adapter", "model"))


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
) -> list[dict[str, Any]]:
    """Every (dataset, variant, seed) of an experiment; None = the experiment's lists at this profile.

    A failing run is recorded and the grid goes on; with ``raise_on_failure`` the failures are raised
    together at the end.
    """
    prof, exp = as_profile(profile), get_experiment(experiment)
    datasets = exp.datasets_for(prof) if datasets is None else list(datasets)
    methods = list(exp.variants_for(prof)) if methods is None else list(methods)
    seeds = list(prof.experiments.seeds) if seeds is None else list(seeds)
    records, failures = [], []
    for dataset in datasets:
        for method in methods:
            for seed in seeds:
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


# ------------------------------------------------------------------------------------------ datasets
DATASET_COLUMNS = [
    "dataset", "split", "view", "rows", "rows_used", "positives", "negatives", "other_labels", "label_mean",
    "prompt_tokens_mean", "prompt_tokens_p95", "prompt_over_max", "completion_tokens_mean",
    "completion_tokens_p95", "result",
]


def dataset_stats(profile: str | Profile = "mini", datasets: list[str] | None = None, *, data_dir: str | None = None,
                  results_dir: str | os.PathLike = "results", max_token_rows: int = 1000) -> list[dict[str, Any]]:
    """Notebook 01: per dataset, split (the profile's train and test splits) and view: rows, rows the
    training uses (``max_train_examples``), label balance, token lengths (over the first
    ``max_token_rows`` rows, by the profile's tokenizer and prompt rendering). A dataset that cannot be
    had gives a ``not measured`` row. Written to ``results/<profile>/01_datasets/dataset_stats.json``."""
    import statistics

    from ulma import data
    from ulma.batching import render_prompt

    prof = as_profile(profile)
    datasets = get_experiment("01_datasets").datasets_for(prof) if datasets is None else datasets
    root = resolve_data_dir(data_dir, prof)
    tokenizer = _tokenizer(prof.train.model)
    rows = []
    for name in datasets:
        for split in (prof.train.train_split, prof.eval.test_split):
            for view in data.VIEWS:
                row: dict[str, Any] = {"dataset": name, "split": split, "view": view}
                if view not in data.SOURCES[name].views:
                    rows.append({**row, "result": f"n/a: {name} has no {view} view"})
                    continue
                try:
                    ds = data.load(name, view, split, root, **_options(name, prof))
                except (FileNotFoundError, ConnectionError) as exc:
                    rows.append({**row, "result": f"not measured: {_short(exc)}"})
                    continue
                row["rows"] = len(ds)
                if split == prof.train.train_split and prof.train.max_train_examples is not None:
                    row["rows_used"] = sum(i < prof.train.max_train_examples for i in list(ds["source_index"]))
                else:
                    row["rows_used"] = len(ds)
                if view == "pointwise":
                    labels = list(ds["label"])
                    row.update(positives=sum(z >= 1.0 for z in labels), negatives=sum(z <= 0.0 for z in labels),
                               other_labels=sum(0.0 < z < 1.0 for z in labels), label_mean=statistics.fmean(labels))
                if len(ds) == 0:
                    rows.append({**row, "result": "ok (no rows)"})
                    continue
                head = ds.select(range(min(len(ds), max_token_rows)))
                prompts = [len(tokenizer(render_prompt(p, tokenizer))["input_ids"]) for p in list(head["prompt"])]
                replies = list(head["chosen"]) + list(head["rejected"]) if view == "pairwise" else list(head["completion"])
                completions = [len(ids) for ids in tokenizer(replies, add_special_tokens=False)["input_ids"]]
                row.update(
                    prompt_tokens_mean=statistics.fmean(prompts), prompt_tokens_p95=_p95(prompts),
                    prompt_over_max=sum(n > prof.train.max_prompt_length for n in prompts) / len(prompts),
                    completion_tokens_mean=statistics.fmean(completions), completion_tokens_p95=_p95(completions),
                    result="ok",
                )
                rows.append(row)
    rows = [{c: r.get(c) for c in DATASET_COLUMNS} for r in rows]
    _write_json(resolve_path(results_dir) / prof.name / "01_datasets" / "dataset_stats.json",
                {"profile": prof.name, "data_dir": root, "rows": rows, "versions": package_versions(), "written_at": _now()})
    return rows


def _options(name: str, prof: Profile) -> dict[str, Any]:
    from ulma import data

    return {k: v for k, v in prof.train.data_options.items() if k in data.SOURCES[name].options}


def _short(exc: BaseException, limit: int = 240) -> str:
    text = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _p95(values: list[int]) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))])


def _tokenizer(model: str):
    from ulma.models import load_model_and_tokenizer, resolve_model_path, tiny_tokenizer

    if model == "tiny":
        return tiny_tokenizer()
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(resolve_model_path(model))
    except OSError:
        return load_model_and_tokenizer(model)[1]


# --------------------------------------------------------------------------------- gradient analysis
GRADIENT_METHODS = ("sft", "pointwise_dpo", "positive_dpo", "negative_dpo", "ulma", "unlikelihood",
                    "negative_unlikelihood", "dpo")


def gradient_weights(
    methods: tuple[str, ...] | list[str] = GRADIENT_METHODS,
    *,
    beta: float = 0.1,
    c: float = 0.0,
    log_ratios: Any = None,
) -> list[dict[str, Any]]:
    """Per-sample gradient weight w = −∂L/∂ℓ_θ(x,y) against the log-ratio Δ = ℓ_θ − ℓ_ref (docs/METHODS.md).

    Computed with autograd from ``ulma.losses`` (not from the closed forms): a batch of samples of one
    class, one per Δ, through the method's loss; the class mean divides each gradient by the batch size,
    which is multiplied back. w > 0 raises the sample's likelihood, w < 0 lowers it. For pairwise DPO the
    other reply of the pair has log-ratio 0 (its weight depends on both: the pairwise coupling).
    Returns rows ``{method, sample, log_ratio, weight, beta, c}``.
    """
    import torch

    from ulma.losses import get_method

    grid = torch.linspace(-50.0, 50.0, 201) if log_ratios is None else torch.as_tensor(log_ratios, dtype=torch.float32)
    n = len(grid)
    rows = []
    for name in methods:
        spec = get_method(name)
        fn = spec.loss_fn
        params = inspect.signature(fn).parameters
        kwargs = {k: v for k, v in {"beta": beta, "c": c}.items() if k in params}
        if spec.data_kind == "pairwise":
            for sample in ("chosen", "rejected"):
                ref = torch.zeros(n)
                own = grid.clone().requires_grad_(True)
                other = torch.zeros(n)
                chosen, rejected = (own, other) if sample == "chosen" else (other, own)
                out = fn(chosen, rejected, ref, ref, **kwargs)
                (grad,) = torch.autograd.grad(out.loss, own)
                rows += _weight_rows(name, sample, grid, -grad * n, beta, c)
            continue
        samples = {"positive": 1.0} if spec.data_kind == "sft" else {"positive": 1.0, "negative": 0.0}
        for sample, z in samples.items():
            policy = grid.clone().requires_grad_(True)
            extra = {}
            if "policy_kl_logps" in params:  # KTO: the batch KL estimate is 0 here
                extra = {"policy_kl_logps": torch.zeros(n), "reference_kl_logps": torch.zeros(n)}
            out = fn(policy, torch.zeros(n), torch.full((n,), z), **kwargs, **extra)
            grad = None
            if out.loss.requires_grad:  # a loss that ignores this class may not depend on the input at all
                (grad,) = torch.autograd.grad(out.loss, policy, allow_unused=True)
            grad = torch.zeros(n) if grad is None else grad
            rows += _weight_rows(name, sample, grid, -grad * n, beta, c)
    return rows


def _weight_rows(method, sample, grid, weights, beta, c) -> list[dict[str, Any]]:
    return [
        {"method": method, "sample": sample, "log_ratio": float(d), "weight": float(w), "beta": beta, "c": c}
        for d, w in zip(grid.tolist(), weights.detach().tolist())
    ]


def write_gradient_weights(profile: str | Profile = "mini", *, results_dir="results", **kwargs) -> Path:
    """Notebook 02: gradient weights at the profile's β and c → results/<profile>/02_gradients/gradient_weights.csv."""
    import csv

    prof = as_profile(profile)
    kwargs.setdefault("beta", prof.train.beta)
    kwargs.setdefault("c", prof.train.c)
    rows = gradient_weights(**kwargs)
    path = resolve_path(results_dir) / prof.name / "02_gradients" / "gradient_weights.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


# ------------------------------------------------------------------------------------------ reproduce
def reproduce(profile: str = "mini", notebooks=None, timeout: int | None = None, results_dir: str = "results",
              **kwargs) -> list[dict[str, Any]]:
    """Run the numbered notebooks in order through papermill (see ``ulma.reproduce``)."""
    from ulma.reproduce import reproduce as _reproduce

    return _reproduce(profile, notebooks, timeout, results_dir, **kwargs)
