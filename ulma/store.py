"""The results store: where records and run folders live, what identifies a run's result, measurements.

A record is ``results/<profile>/<experiment>/<dataset>__<variant>__seed<k>.json`` (written atomically by
`ulma.files`); its ``config_hash`` is `config_hash(resolved_config(...))`, what determines the run's
numbers and nothing else (not paths, not the experiment's name). Relative ``results_dir`` / ``runs_dir``
resolve against the repository root when the package runs from a checkout (so a notebook's working
directory does not matter), else the current one.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import os
import platform
import threading
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import psutil
import torch

from ulma.config import Profile, load_profile
from ulma import data
from ulma.files import content_key, read_json, write_json
from ulma.losses import get_method
from ulma.models import cache_dir

RECORD_SCHEMA = 1


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
        base = cache_dir() / "runs"
    else:
        base = resolve_path(runs_dir)
    return base / profile / experiment / f"{dataset}__{variant}__seed{seed}"


def as_profile(profile: str | Profile) -> Profile:
    return profile if isinstance(profile, Profile) else load_profile(profile)


# fields that set how many rows a no-grad pass takes at once: left out of a run's identity (`resolved_config`)
THROUGHPUT_FIELDS = {"train": ("reference_batch_size",), "eval": ("eval_batch_size", "generation_batch_size")}


def resolved_config(prof: Profile, method: str, dataset: str, data_dir: str | None) -> dict[str, Any]:
    """What determines a run's numbers (and nothing else: not paths, not the experiment's name)."""
    train = dataclasses.asdict(prof.train)
    train.pop("report_to", None)  # where logs go, not what a run computes (and the old hashes stay)
    evaluation = dataclasses.asdict(prof.eval)
    # batch sizes of no-grad passes change the speed, not the results (up to float rounding, as another
    # machine's kernels would): a run is not redone for them (its folder's config.json keeps them)
    for section, names in THROUGHPUT_FIELDS.items():
        for name in names:
            (train if section == "train" else evaluation).pop(name, None)
    # where the rows were read does not change the numbers, what they hold does: the data enter by content
    # ("data" below), so the same rows from the hub, a local copy or the bundled folder give one hash
    train["data_dir"] = None
    return {
        "method": method,
        "dataset": dataset,
        # the content of what is read (sha256), so that changed data never reuses an old result
        "data": data_fingerprints(dataset, (prof.train.train_split, prof.eval.test_split), data_dir),
        "train": train,
        "eval": evaluation,
        # the other profile sections the method reads (rlhf: its PPO settings); None keeps the old hashes
        "rlhf": None,
        **{s: dataclasses.asdict(getattr(prof, s)) for s in get_method(method).profile_sections},
    }


def record_value(record: Mapping, dotted: str) -> Any:
    """``record["a"]["b"]["c"]`` for ``"a.b.c"``, or None where a level is missing (records of older
    versions lack newer keys)."""
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def data_fingerprints(dataset: str, splits, data_dir: str | None) -> dict[str, str | None]:
    """{split: sha256 of the content `ulma.data.load` reads for it}; None where it cannot be had (the run
    then says why it was not measured)."""
    out: dict[str, str | None] = {}
    for split in dict.fromkeys(splits):
        try:
            out[split] = data.source_fingerprint(dataset, split, data_dir)["sha256"]
        except (OSError, ValueError, ConnectionError):  # missing, unreadable or unreachable: not a hash
            out[split] = None
    return out


def config_hash(config: Mapping[str, Any]) -> str:
    return content_key(config, 16)


# -------------------------------------------------------------------------------------- measurement
class PeakMemory:
    """Peak resident memory (MB) of a process, or of a process' descendants, sampled by a thread.

    Sampling misses peaks shorter than ``interval``; RSS includes memory the process held before.
    With CUDA, ``cuda_peak_mb`` is torch's exact peak of allocated device memory.
    """

    def __init__(self, pid: int | None = None, *, descendants: bool = False, interval: float = 0.2):
        self.process = psutil.Process(pid)
        self.descendants, self.interval = descendants, interval
        self.peak_mb = self.start_mb = 0.0
        self.cuda_peak_mb: float | None = None
        self._stop = threading.Event()

    def _sample(self) -> float:
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
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._sample())
        if torch.cuda.is_available():
            self.cuda_peak_mb = torch.cuda.max_memory_allocated() / 2**20
        return False


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "datasets", "ulma"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    if torch.cuda.is_available():
        out["device"] = f"cuda: {torch.cuda.get_device_name(0)}"
    else:
        threads = torch.get_num_threads()
        out["device"] = (f"cpu: {platform.machine()}, {os.cpu_count()} cores, "
                         f"{threads} torch thread{'s' if threads != 1 else ''}")
    return out


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


# ------------------------------------------------------------------------------------------ records
read_record = read_json  # a record that is absent or half-written reads as None
write_record = write_json  # atomic: an interrupted write never leaves a half JSON that looks finished


def fresh(record: Mapping | None, key: str, force: bool | str) -> bool:
    """A finished record of this config that `force` does not invalidate.

    ``force`` is True (redo everything) or an ISO time: records finished before it are stale, so one
    forced reproduction retrains each shared run once, not once per experiment that uses it.
    """
    if not record or record.get("config_hash") != key or force is True:
        return False
    if record.get("status") not in ("done", "not_applicable"):
        return False  # skipped and failed runs are tried again: the hub may be back, the bug fixed
    return not (isinstance(force, str) and record.get("finished_at", "") < force)


def _copyable(record, key: str | None, force: bool | str) -> bool:
    """A finished run of config `key` that another experiment may copy (`force` can make it stale)."""
    return bool(key) and isinstance(record, dict) and record.get("status") == "done" and fresh(record, key, force)


def find_reusable(results_root: Path, key: str, force, exclude: Path) -> tuple[Path, dict] | None:
    for path in sorted(results_root.glob("*/*.json")):
        if path == exclude:
            continue
        record = read_record(path)
        if _copyable(record, key, force):
            return path, record
    return None


def recorded_configs(profile_root: Path, force: bool | str = False) -> dict[str, str]:
    """{config hash: path} of the finished records under ``results/<profile>/`` (the first in path order):
    `find_reusable`'s answer for every config at once, read in one pass over the records."""
    found: dict[str, str] = {}
    for path in sorted(Path(profile_root).glob("*/*.json")):
        record = read_record(path)
        key = record.get("config_hash") if isinstance(record, dict) else None
        if key not in found and _copyable(record, key, force):
            found[key] = str(path)
    return found


def short_error(exc: BaseException, limit: int = 240) -> str:
    """`Type: first line of the message`, cut to `limit` characters (for a record's reason)."""
    text = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return text if len(text) <= limit else text[: limit - 1] + "…"
