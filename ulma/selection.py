"""Which run records stand for a method: a profile's records, a method's finished runs on a dataset (one
per seed), and the check that a run trained at all.

A record stands for its plain method when its variant changes only the data it reads (QA-feedback's binary
labels, `data_options_only`), never when it changes a hyperparameter (a sweep is another run). A run whose
objective did not move past `ulma.stats.did_not_train`'s thresholds cannot stand for its method
(`training_problem`): every table flags it, and no claim or reading ranks it. The base model trains
nothing by design, so it is exempt.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ulma import stats
from ulma.data import SOURCES
from ulma.store import record_value

BASE_METHOD = "base"


# --------------------------------------------------------------------------------------------- records
def load_records(profile: str, results_dir: str | Path = "results") -> list[dict]:
    """Every run record of a profile: ``results/<profile>/<experiment>/*.json`` with a ``status``."""
    root = Path(results_dir) / profile
    records = []
    for path in sorted(root.glob("*/*.json")):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if isinstance(record, dict) and "status" in record and "method" in record:
            records.append(record)
    return records


def _labels(record: Mapping) -> str | None:
    """The QA-feedback label option of a run (the loader's default when the config does not set it)."""
    explicit = (record_value(record, "config.train.data_options") or {}).get("labels")
    if explicit is not None:
        return explicit
    source = SOURCES.get(record.get("dataset"))
    choices = source.options.get("labels") if source is not None else None
    return choices[0] if choices else None


def data_options_only(overrides: Mapping) -> bool:
    """Whether a variant's overrides change only what data it reads (QA-feedback's binary labels), never a
    training hyperparameter: such a run stands for its plain method in a claim (sweeps are other runs)."""
    return not set(overrides) - {"data_options", "labels"}


def _matches(record: Mapping, method: str, dataset: str, labels: str | None, experiments) -> bool:
    if record.get("dataset") != dataset:
        return False
    if experiments is not None and record.get("experiment") not in experiments:
        return False
    base = record.get("base_method") or record.get("method")
    if base != method:
        return False
    if labels is not None:
        # a labels variant may carry its own label (e.g. pointwise_dpo@labels=binary)
        return data_options_only(record.get("overrides") or {}) and _labels(record) == labels
    return record.get("method") == method


def select_runs(records: Iterable[Mapping], method: str, dataset: str, *, labels: str | None = None,
                experiments: Sequence[str] | None = None) -> tuple[dict[int, Mapping], str | None]:
    """({seed: record} of the finished runs of `method` on `dataset`, None) or ({}, why there are none).

    Several records of one seed (the same run reused by several experiments): the first experiment in
    `experiments` wins (else the first in name order)."""
    found = [r for r in records if _matches(r, method, dataset, labels, experiments)]
    order = {e: i for i, e in enumerate(experiments or ())}
    found.sort(key=lambda r: (order.get(r.get("experiment"), len(order)), str(r.get("experiment"))))
    done: dict[int, Mapping] = {}
    for r in found:
        if r.get("status") == "done":
            done.setdefault(int(r.get("seed", 0)), r)
    if done:
        return done, None
    name = method + (f" ({labels} labels)" if labels else "")
    if found:
        r = found[0]
        why = r.get("reason") or r.get("note") or "no reason recorded"
        return {}, f"{name} on {dataset}: {r.get('status')} ({why})"
    return {}, f"no run of {name} on {dataset}"


# -------------------------------------------------------------------------------------- training check
def objective_endpoints(record: Mapping) -> tuple[dict, dict, str] | None:
    """(start, end, source) of a run's objective: ``metrics.train.objective.{start,end}`` when the run
    recorded them, else the first and last logged training entries that hold a loss, rewards or KL
    (minibatch means after the first logging interval: a rougher test). None when neither exists."""
    train = record_value(record, "metrics.train") or {}
    objective = train.get("objective")
    if isinstance(objective, Mapping) and isinstance(objective.get("start"), Mapping) \
            and isinstance(objective.get("end"), Mapping):
        return dict(objective["start"]), dict(objective["end"]), "objective"
    entries = [h for h in train.get("log_history") or [] if isinstance(h, Mapping)]
    # the step entries (with a loss) when there are two; transformers' closing summary has no "loss"
    history = [h for h in entries if "loss" in h]
    if len(history) < 2:
        history = [h for h in entries if "kl" in h or any(str(k).startswith("rewards/") for k in h)]
    if len(history) < 2:
        return None
    return dict(history[0]), dict(history[-1]), "log_history"


def training_problem(record: Mapping) -> str | None:
    """Why a run cannot stand for its method (it did not train), or None."""
    if (record.get("base_method") or record.get("method")) == BASE_METHOD:
        return None
    ends = objective_endpoints(record)
    if ends is None:
        return None
    try:
        check = stats.did_not_train(ends[0], ends[1])
    except ValueError:
        return None
    if check.did_not_train:
        return f"{record.get('method')} seed {record.get('seed')} {check.reason} [{ends[2]}]"
    return None
