"""The built-in sources (HH, Golden HH, red-team, QA-feedback) -> SFT, pairwise and point-wise views.

``load(name, view, split, data_dir, **options)`` reads one source file, checks every raw row, and maps
the rows into one view:

* ``pairwise``:  ``{prompt, chosen, rejected, source_index}``
* ``pointwise``: ``{prompt, completion, label, source_index}`` (``label`` a float in [0, 1])
* ``sft``:       ``{prompt, completion, source_index}`` (the positives)

``prompt`` is a list of ``{"role", "content"}`` messages ending with a user turn; ``source_index`` is the
position, within the split, of the raw example (HH pair, red-team transcript, QA question) a row came from.

Where the data comes from: `ulma.data.files.resolve_data_dir`. A local root is laid out like the hub
repositories (``SOURCES[name].files``; a ``.gz`` copy of a plain file is read too)::

    hh-rlhf/harmless-base/{train,test}.jsonl.gz         Anthropic/hh-rlhf, data_dir=harmless-base
    hh-rlhf/red-team-attempts/red_team_attempts.jsonl.gz Anthropic/hh-rlhf, data_dir=red-team-attempts
    hh-golden/hh_golden/{train,test}.jsonl             Unified-Language-Model-Alignment/Anthropic_HH_Golden
    qa-feedback/{train,dev}_feedback.json[.gz]         allenai/FineGrainedRLHF tasks/qa_feedback/data

The repository's ``data/`` folder holds the `mini` data (HH harmless-base test, QA-feedback dev), so the
`tiny` and `mini` profiles never reach the network.

Splits: ``train``, ``test`` and the ``mini`` profile's ``mini_train`` / ``mini_test``, a division of the
test split (HH, Golden HH: 2,000 / 312 pairs; QA-feedback dev: 400 / 100 questions) grouped by prompt
text and ordered by a seeded hash of that text, so it depends only on the data content (not on file
order or on where the file was read from). Red-team has a single file on the hub: its ``test`` split is
held out the same way (2,312 transcripts, HH's test size, or a fifth of a smaller file).

Malformed raw rows (docs/DATASETS.md): ``on_bad_row="skip"`` (the default for these sources, whose upstream
files hold a few known-malformed rows) drops them with one warning line that counts them;
``on_bad_row="raise"`` raises `BadRowError` on the first. Either way ``last_report()`` describes the last
load: examples read, bad rows (count, the first few with file row, field and reason), rows returned.
A file that cannot be read at all raises `DataFileError` naming the file and line.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from datasets.utils.file_utils import cached_path

from ulma.data.files import (
    BUNDLED_DIR, FIXTURES_DIR, DataFileNotFoundError, display_path, read_records, require_object, resolve_data_dir,
    where,
)
from ulma.data.parsing import (
    QA_COMPARISONS, VIEW_FEATURES, VIEWS, _PARSERS, _hh_view, _prompt_key, _qa_view, _red_team_view, check_fields,
)
from ulma.data.reports import MAX_REPORTED, BadRow, BadRowError, LoadReport, _reason_kind, set_last_report

logger = logging.getLogger("ulma.data")

SPLITS = ("train", "test", "mini_train", "mini_test", "mini_valid")
# mini_valid: the last tenth of mini_train (file order), for calibrating hyperparameters (06_ablations) without
# touching mini_test; the runs train on mini_train's first max_train_examples, far from its end
MINI_VALID_SHARE = 10
MINI_SEED = 0  # fixed: the mini division must be the same everywhere
RED_TEAM_TEST_SIZE = 2312  # red-team has no test split; hold out as many transcripts as HH's test split

# ------------------------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class Source:
    """Where one dataset lives, the raw fields each row must have, and its loader's options (first = default)."""

    files: dict[str, str]  # split (train | test) -> path relative to a local root
    remote: dict[str, str]  # split -> URL of the same file (hf://... or https://...)
    fields: dict[str, str]  # raw field -> kind: "str", "number", "list", "object"
    options: dict[str, tuple]
    mini_test: tuple[int, int]  # (test examples, pool examples): the mini division's test share
    views: tuple[str, ...] = VIEWS
    # what a judge rates in this dataset's replies (the paper's GPT-4 judge: helpfulness on QA-feedback's
    # answers, harmlessness on the HH family), and whose human pairs the offline judge head learns it from:
    # Golden HH's test prompts are HH's, so one HH head scores both and their scores subtract
    criterion: str = "harmlessness"
    judge_pairs: str = "hh"


_HH_HUB = "hf://datasets/Anthropic/hh-rlhf"
_GOLDEN_HUB = "hf://datasets/Unified-Language-Model-Alignment/Anthropic_HH_Golden"
_QA_URL = "https://raw.githubusercontent.com/allenai/FineGrainedRLHF/main/tasks/qa_feedback/data"
_RED_TEAM_FILE = "red-team-attempts/red_team_attempts.jsonl.gz"
_BAD = ("skip", "raise")  # built-in files hold known-malformed upstream rows: skipping is the default
_HH_FIELDS = {"chosen": "str", "rejected": "str"}
_QA_FIELDS = {"question": "str", "passages": "list", **{f"prediction {j}": "str" for j in (1, 2, 3, 4)},
              "feedback": "object", "preference": "list"}

SOURCES: dict[str, Source] = {
    "hh": Source(
        files={s: f"hh-rlhf/harmless-base/{s}.jsonl.gz" for s in ("train", "test")},
        remote={s: f"{_HH_HUB}/harmless-base/{s}.jsonl.gz" for s in ("train", "test")},
        fields=_HH_FIELDS,
        options={"on_bad_row": _BAD},
        mini_test=(312, 2312),
    ),
    "golden_hh": Source(
        files={s: f"hh-golden/hh_golden/{s}.jsonl" for s in ("train", "test")},
        remote={s: f"{_GOLDEN_HUB}/hh_golden/{s}.jsonl" for s in ("train", "test")},
        fields=_HH_FIELDS,
        options={"on_bad_row": _BAD},
        mini_test=(312, 2312),
    ),
    "red_team": Source(
        files={s: f"hh-rlhf/{_RED_TEAM_FILE}" for s in ("train", "test")},
        remote={s: f"{_HH_HUB}/{_RED_TEAM_FILE}" for s in ("train", "test")},
        fields={"transcript": "str", "rating": "number", "min_harmlessness_score_transcript": "number"},
        options={"on_bad_row": _BAD, "label_source": ("rating", "harmlessness")},
        mini_test=(312, 2312),
        views=("sft", "pointwise"),
    ),
    "qa_feedback": Source(
        files={"train": "qa-feedback/train_feedback.json", "test": "qa-feedback/dev_feedback.json"},
        remote={"train": f"{_QA_URL}/train_feedback.json", "test": f"{_QA_URL}/dev_feedback.json"},
        fields=_QA_FIELDS,
        options={"on_bad_row": _BAD, "labels": ("binary", "continuous")},
        mini_test=(100, 500),
        criterion="helpfulness",
        judge_pairs="qa_feedback",
    ),
}


# ------------------------------------------------------------------------------------------- splits
def _hash(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}\x00{key}".encode()).hexdigest()


def grouped_holdout(keys: list[str], num_test: int, seed: int = MINI_SEED) -> list[bool]:
    """Choose about `num_test` of the examples for a held-out set, never splitting a group of equal keys.

    Groups are visited in the order of a seeded hash of their key (so the choice depends only on the
    keys and the seed, not on their order) and taken whole while they fit; with singleton groups around
    the count comes out exact. Returns one flag per example (True = held out).
    """
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    held = [False] * len(keys)
    taken = 0
    for key in sorted(groups, key=lambda k: (_hash(seed, k), k)):
        members = groups[key]
        if taken + len(members) <= num_test:
            for i in members:
                held[i] = True
            taken += len(members)
            if taken == num_test:
                break
    return held


def _text(value) -> str:
    return value if isinstance(value, str) else ""  # a wrongly typed field is a bad row, reported later


def _keys(name: str, raw) -> list[str]:
    if name == "qa_feedback":
        return [_text(q).strip() for q in raw["question"]]
    column = "transcript" if name == "red_team" else "chosen"
    return [_prompt_key(_text(t)) for t in raw[column]]


def _num_rows(raw) -> int:
    return len(raw) if isinstance(raw, datasets.Dataset) else len(next(iter(raw.values())))


def split_rows(name: str, split: str, raw) -> list[int]:
    """Rows of the source file (read for this split) that form `split`, in file order.

    `raw`: the file's rows as a ``datasets.Dataset`` or a dict of columns."""
    if name == "red_team":
        keys = _keys(name, raw)
        held = grouped_holdout(keys, min(RED_TEAM_TEST_SIZE, round(len(keys) / 5)))
        if split == "train":
            return [i for i, h in enumerate(held) if not h]
        pool = [i for i, h in enumerate(held) if h]
    else:
        if split in ("train", "test"):
            return list(range(_num_rows(raw)))
        pool = list(range(_num_rows(raw)))
        keys = _keys(name, raw)
    if split == "test":
        return pool
    test_share, pool_size = SOURCES[name].mini_test
    mini = grouped_holdout([keys[i] for i in pool], round(len(pool) * test_share / pool_size))
    rows = [i for i, m in zip(pool, mini) if m == (split == "mini_test")]
    if split == "mini_valid":
        return rows[len(rows) - max(1, len(rows) // MINI_VALID_SHARE):]
    return rows




# --------------------------------------------------------------------------------------------- load
def _file_split(split: str) -> str:
    return "train" if split == "train" else "test"


def _local_file(root: Path, relative: str) -> Path:
    """`root/relative`, or its gzipped copy `root/relative.gz` when only that exists (the repo's data/)."""
    path = root / relative
    gz = root / (relative + ".gz")
    return gz if not path.is_file() and gz.is_file() else path


def locate(name: str, split: str, data_dir: str | os.PathLike | None = None) -> tuple[str, str]:
    """``(origin, location)`` of the file `load(name, ..., split)` reads: origin is ``local``, ``fixtures``,
    ``bundled`` (the repository's data/) or ``hub``; location a path or URL."""
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; valid: {sorted(SOURCES)}")
    relative = SOURCES[name].files[_file_split(split)]
    root = resolve_data_dir(data_dir)
    if root == "hub":
        return "hub", SOURCES[name].remote[_file_split(split)]
    if root is None or root == "bundled":
        bundled = _local_file(BUNDLED_DIR, relative)
        if bundled.is_file() or root == "bundled":
            return "bundled", str(bundled)
        return "hub", SOURCES[name].remote[_file_split(split)]
    origin = "fixtures" if Path(root).resolve() == FIXTURES_DIR.resolve() else "local"
    return origin, str(_local_file(Path(root), relative))


def source_location(name: str, split: str, data_dir: str | os.PathLike | None = None) -> str:
    """The local path or URL that `load(name, ..., split)` reads."""
    return locate(name, split, data_dir)[1]


def fetch(name: str, split: str, data_dir=None) -> tuple[str, str, Path]:
    """``(origin, location, local file)``: a hub file is downloaded once into the datasets cache (no
    network when it is there already, or for any local origin). Missing files and an unreachable hub
    raise errors that say where a local copy goes."""
    origin, location = locate(name, split, data_dir)
    if origin != "hub":
        if not Path(location).is_file():
            remote = SOURCES[name].remote[_file_split(split)]
            why = ("the repository's data/ holds only the mini data (HH harmless-base test, QA-feedback dev)"
                   if origin == "bundled" else
                   "the data root comes from the data_dir argument, else $ULMA_DATA_DIR, else the profile")
            raise DataFileNotFoundError(
                f"{name} {split}: no file {display_path(location)} ({why}). Put a copy there laid out like the hub, "
                f"point $ULMA_DATA_DIR at one, or use data_dir='hub' to read {remote}.", file=display_path(location))
        return origin, location, Path(location)
    try:
        return origin, location, Path(cached_path(location))
    except Exception as err:  # offline, or the remote moved: say what to do instead
        raise ConnectionError(
            f"{name} {split}: could not read {location} ({type(err).__name__}: {err}). Without network, "
            f"point data_dir or $ULMA_DATA_DIR at a local copy laid out as {SOURCES[name].files['test']}."
        ) from err


def _check(name: str, view: str, split: str, options: dict[str, Any]) -> dict[str, Any]:
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; valid: {sorted(SOURCES)}")
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; valid: {list(VIEWS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {list(SPLITS)}")
    source = SOURCES[name]
    if view not in source.views:
        raise ValueError(
            "red_team has no pairwise view: each transcript has its own prompt (prompts are unique per "
            "transcript), so there are no two replies to the same prompt to pair. This is the case the "
            "paper makes for point-wise methods: use the pointwise view (z = 1 - rating/4) with point-wise "
            "DPO / ULMA, or a regression reward model on z for RLHF."
        )
    unknown = sorted(set(options) - set(source.options))
    if unknown:
        raise ValueError(f"option(s) {unknown} do not apply to {name}; its options: {sorted(source.options)}")
    resolved = {k: values[0] for k, values in source.options.items()}
    for key, value in options.items():
        if value not in source.options[key]:
            raise ValueError(f"{name}: {key}={value!r} is not one of {list(source.options[key])}")
        resolved[key] = value
    return resolved


def _columns(records: list[dict], fields: dict[str, str], errors: list[str]) -> dict[str, list]:
    columns = {k: [r.get(k) for r in records] for k in fields}
    columns["_type_error"] = errors
    return columns


_WARNED: set[tuple] = set()  # (file, split, count): each file's skipped rows are announced once per process


def load(name: str, view: str, split: str = "train", data_dir: str | os.PathLike | None = None,
         **options) -> datasets.Dataset:
    """Load built-in dataset `name` (hh | golden_hh | red_team | qa_feedback) as `view` (sft | pairwise | pointwise).

    Options: ``on_bad_row`` ("skip" (default): drop malformed rows with one warning | "raise") for every
    dataset; ``labels`` ("binary" | "continuous") for qa_feedback; ``label_source`` ("rating" |
    "harmlessness") for red_team. Raises ValueError for an unknown name, view, split or option,
    DataFileNotFoundError for a missing local file, ConnectionError when the hub cannot be read,
    DataFileError for an unreadable file, BadRowError on a malformed example with on_bad_row="raise".
    """
    opts = _check(name, view, split, options)
    origin, location, path = fetch(name, split, data_dir)
    shown = display_path(location)
    records, lines = read_records(path, shown)
    for i, record in enumerate(records):
        require_object(record, shown, i, lines[i] if lines else None)
    source = SOURCES[name]
    errors = check_fields(records, source.fields, shown)
    raw = _columns(records, source.fields, errors)
    rows = split_rows(name, split, raw)
    if len(rows) != len(records):
        raw = {k: [v[i] for i in rows] for k, v in raw.items()}
    parsed = _PARSERS[name](raw, range(len(rows)))

    report = LoadReport(name, view, split, shown, opts["on_bad_row"], num_examples=len(rows))
    bad = [i for i, e in enumerate(parsed["error"]) if e]
    report.num_bad = len(bad)
    report.bad = [BadRow(i, rows[i], parsed["error"][i], lines[rows[i]] if lines else None) for i in bad[:MAX_REPORTED]]
    report.bad_reasons = dict(Counter(_reason_kind(parsed["error"][i]) for i in bad))
    set_last_report(report)
    if bad and opts["on_bad_row"] == "raise":
        raise BadRowError(report)
    if bad:
        keep = [i for i, e in enumerate(parsed["error"]) if not e]
        parsed = {k: [v[i] for i in keep] for k, v in parsed.items()}
        key = (shown, split, len(bad))
        log = logger.warning if key not in _WARNED else logger.info
        _WARNED.add(key)
        first = report.bad[0]
        log("%s %s: skipped %d of %d examples as malformed (%s; first: %s); ulma.data.last_report() lists them",
            name, split, len(bad), len(rows), report.bad_summary(), where(shown, first.file_row, line=first.line))
    if name == "qa_feedback" and view != "pairwise":
        report.num_empty_dropped = sum(not c for c in parsed["corrected"])
    if name == "qa_feedback" and view == "pairwise":
        report.num_identical_dropped = sum(
            bool(code) and preds[a - 1] == preds[b - 1]
            for preds, pref in zip(parsed["predictions"], parsed["preference"])
            for (a, b), code in zip(QA_COMPARISONS, pref))
    if name in ("hh", "golden_hh"):
        out = _hh_view(parsed, view)
    elif name == "red_team":
        out = _red_team_view(parsed, view, opts["label_source"])
    else:
        out = _qa_view(parsed, view, opts["labels"])
    dataset = datasets.Dataset.from_dict(out, features=VIEW_FEATURES[view])
    report.num_rows = len(dataset)
    return dataset
