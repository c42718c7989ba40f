"""A user's own data in TRL's standard formats -> the project's views.

`load_standard(path_or_id, view, split)` reads a local JSON / JSON-lines (gzipped or not) / Parquet file,
a folder of them, or a hub dataset id, in one of three formats, each plain text or conversational:

* **preference** (paired): ``prompt``, ``chosen``, ``rejected``. Without ``prompt``, the prompt is
  implicit: the shared dialogue before the final replies (message lists, or HH-style
  ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` transcripts).
* **unpaired** (point-wise): ``prompt``, ``completion``, ``label``; a bool, or a number in [0, 1] (the
  continuous case point-wise DPO exists for).
* **prompt-completion** (demonstrations): ``prompt``, ``completion``.

Plain text: strings. Conversational: the prompt a list of ``{"role", "content"}`` messages ending with
a user turn, each reply a list holding one assistant message. The views are the built-in sources'
(``ulma.data.builtin``): pairwise data gives point-wise rows (chosen 1.0, rejected 0.0, as for HH) and
SFT rows (the chosen); unpaired data gives SFT rows from its positives (label 1); demonstrations give
SFT rows only. Pairs cannot be made from unpaired rows: that asks for a point-wise method.

Splits: a single file is the ``train`` split. A folder's files named ``train*`` / ``test*`` (or
``validation*``, ``valid*``, ``dev*``) form those splits, HF-style; a folder with no split names is all
``train``. The built-in profiles' ``mini_train`` / ``mini_test`` read ``train`` / ``test`` here (the
``mini`` division is for the built-in sources). Malformed rows raise `BadRowError` naming file, row and
field (``on_bad_row="skip"`` drops them with one warning).
"""
from __future__ import annotations

import logging
import math
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import datasets

from ulma.data.parsing import VIEW_FEATURES, VIEWS, parse_transcript
from ulma.data.reports import MAX_REPORTED, BadRow, BadRowError, LoadReport, _reason_kind, set_last_report
from ulma.data.files import (
    DATA_SUFFIXES, DataFileError, DataFileNotFoundError, at, describe, display_path, iter_data_files, read_records,
    require_object,
)

logger = logging.getLogger("ulma.data")

FORMATS = ("preference", "unpaired", "prompt_completion")
ROLES = ("system", "user", "assistant")
_SPLIT_ALIASES = {"mini_train": "train", "mini_test": "test", "mini_valid": "validation"}
_SPLIT_NAMES = {"train": ("train",), "test": ("test",), "validation": ("validation", "valid", "dev")}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# ------------------------------------------------------------------------------------------- reading
class _Rows:
    """The rows of one split, each with the file it came from, its 0-based row there and its line."""

    def __init__(self):
        self.records: list[dict] = []
        self.places: list[tuple[str, int, int | None]] = []

    def add_file(self, path: Path) -> None:
        shown = display_path(path)
        if path.name.endswith(".parquet"):
            records, lines = _read_parquet(path, shown), None
        else:
            records, lines = read_records(path, shown)
        for i, record in enumerate(records):
            line = lines[i] if lines else None
            self.records.append(require_object(record, shown, i, line))
            self.places.append((shown, i, line))


def _read_parquet(path: Path, shown: str) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        records = pq.read_table(path).to_pylist()
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a bad file; all mean the same
        raise DataFileError(f"{shown}: not a readable Parquet file ({type(err).__name__}: {err})", file=shown) from None
    if not records:
        raise DataFileError(f"{shown}: the Parquet file has no rows", file=shown)
    return records


def _split_files(folder: Path, split: str) -> list[Path]:
    files = list(iter_data_files(folder))
    if not files:
        raise DataFileNotFoundError(f"{display_path(folder)}: no data files (*.json, *.jsonl, *.json.gz, "
                                    f"*.jsonl.gz, *.parquet) in the folder", file=display_path(folder))
    named = {s: [f for f in files if f.name.lower().startswith(names)] for s, names in _SPLIT_NAMES.items()}
    if not any(named.values()):
        if split == "train":
            return files
        raise ValueError(f"{display_path(folder)}: no {split!r} split: no file is named for a split "
                         f"(train*, test*, validation*), so the whole folder is the train split")
    if not named.get(split):
        found = sorted(s for s, f in named.items() if f)
        raise ValueError(f"{display_path(folder)}: no file for split {split!r} (files are named for {found})")
    return named[split]


def _read_local(path: Path, split: str) -> _Rows:
    rows = _Rows()
    if path.is_dir():
        for file in _split_files(path, split):
            rows.add_file(file)
        return rows
    if split != "train":
        raise ValueError(f"{display_path(path)} is one file: it is the train split; for a {split!r} split pass "
                         f"a folder holding train.* and {split}.* files, or that split's own file")
    rows.add_file(path)
    return rows


def _read_hub(dataset_id: str, split: str) -> _Rows:
    try:
        table = datasets.load_dataset(dataset_id, split=split)
    except (ValueError, KeyError) as err:  # e.g. an unknown split
        raise ValueError(f"hub dataset {dataset_id} has no split {split!r} ({err})") from None
    except Exception as err:  # noqa: BLE001 - offline, not found, gated: all mean "cannot be read from here"
        raise ConnectionError(f"hub dataset {dataset_id!r} ({split}) could not be read ({type(err).__name__}: "
                              f"{err}); for a local file or folder give its path (it does not exist here)") from err
    rows = _Rows()
    shown = f"{dataset_id} [{split}]"
    for i, record in enumerate(table):
        rows.records.append(record)
        rows.places.append((shown, i, None))
    return rows


def is_standard_source(name: str | os.PathLike) -> bool:
    """A local file or folder, a data file's name (missing: load says so), or a hub id (``owner/name``)."""
    text = str(name)
    return Path(text).expanduser().exists() or text.endswith(DATA_SUFFIXES) or bool(_HUB_ID.match(text))


# ------------------------------------------------------------------------------------------ checking
def detect_format(records: list[dict], shown: str) -> str:
    """The format of a split from its columns (the union over its rows)."""
    columns = set().union(*(r.keys() for r in records))
    if {"chosen", "rejected"} <= columns:
        return "preference"
    if {"completion", "label"} <= columns:
        return "unpaired"
    if "completion" in columns:
        return "prompt_completion"
    raise DataFileError(
        f"{shown}: not a standard format: the rows have columns {sorted(columns)}; expected prompt/chosen/rejected "
        f"(preference), prompt/completion/label (unpaired) or prompt/completion (demonstrations)", file=shown)


def _messages(value: list, field: str, *, reply: bool) -> list[dict[str, str]]:
    out = []
    for k, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise RowProblem(f"field {field!r}: message {k} is {describe(m)}, expected {{'role': str, 'content': str}}")
        if m["role"] not in ROLES:
            raise RowProblem(f"field {field!r}: message {k} has role {m['role']!r}, expected one of {list(ROLES)}")
        out.append({"role": m["role"], "content": m["content"]})
    if not out:
        raise RowProblem(f"field {field!r}: an empty message list")
    if reply and (len(out) != 1 or out[0]["role"] != "assistant"):
        raise RowProblem(f"field {field!r}: a conversational reply must be one assistant message, got roles "
                   f"{[m['role'] for m in out]}")
    if not reply and out[-1]["role"] != "user":
        raise RowProblem(f"field {field!r}: the prompt must end with a user message, ends with {out[-1]['role']!r}")
    return out


class RowProblem(Exception):
    """One row's problem, naming its field (the caller, which knows the file and the row, turns it into a
    BadRow or a DataError)."""


def _text_reply(record: dict, field: str) -> str:
    value = record.get(field)
    if isinstance(value, list):
        value = _messages(value, field, reply=True)[0]["content"]
    elif not isinstance(value, str):
        raise RowProblem(f"field {field!r}: " + ("missing" if field not in record else
                                           f"expected a string or a message list, got {describe(value)}"))
    if not value.strip():
        raise RowProblem(f"field {field!r}: empty")
    return value


def _prompt(record: dict) -> list[dict[str, str]]:
    value = record.get("prompt")
    if isinstance(value, list):
        return _messages(value, "prompt", reply=False)
    if not isinstance(value, str):
        raise RowProblem("field 'prompt': " + ("missing" if "prompt" not in record else
                                         f"expected a string or a message list, got {describe(value)}"))
    if not value.strip():
        raise RowProblem("field 'prompt': empty")
    return [{"role": "user", "content": value}]


def _implicit_prompt(record: dict) -> tuple[list[dict], str, str]:
    """A preference row without ``prompt``: the dialogue both sides share, then each final reply."""
    sides = []
    for field in ("chosen", "rejected"):
        value = record.get(field)
        if isinstance(value, str):
            messages, error = parse_transcript(value)
            if error:
                raise RowProblem(f"field {field!r}: no prompt column, and not an HH-style transcript: {error}")
        elif isinstance(value, list):
            messages = _dialogue(value, field)
        else:
            raise RowProblem(f"field {field!r}: expected a string or a message list, got {describe(value)}")
        sides.append(messages)
    (chosen, rejected) = sides
    if chosen[:-1] != rejected[:-1]:
        raise RowProblem("malformed pair: without a prompt column, chosen and rejected must share the dialogue "
                   "before their final replies")
    return chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]


def _dialogue(value: list, field: str) -> list[dict[str, str]]:
    messages = []
    for k, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise RowProblem(f"field {field!r}: message {k} is {describe(m)}, expected {{'role': str, 'content': str}}")
        if m["role"] not in ROLES:
            raise RowProblem(f"field {field!r}: message {k} has role {m['role']!r}, expected one of {list(ROLES)}")
        messages.append({"role": m["role"], "content": m["content"]})
    if len(messages) < 2 or messages[-1]["role"] != "assistant" or messages[-2]["role"] != "user":
        raise RowProblem(f"field {field!r}: without a prompt column, a dialogue must end with a user then an "
                   f"assistant message")
    return messages


def _label(record: dict) -> float:
    value = record.get("label")
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1:
        return float(value)
    if "label" not in record:
        raise RowProblem("field 'label': missing")
    raise RowProblem(f"field 'label': expected a bool or a number in [0, 1], got {describe(value)}")


def normalize(record: dict, fmt: str) -> dict[str, Any]:
    """One raw row -> ``{prompt, chosen, rejected}`` or ``{prompt, completion, label}``; raises RowProblem."""
    if fmt == "preference":
        if "prompt" in record:
            prompt, chosen, rejected = _prompt(record), _text_reply(record, "chosen"), _text_reply(record, "rejected")
        else:
            prompt, chosen, rejected = _implicit_prompt(record)
        if chosen == rejected:
            raise RowProblem("malformed pair: chosen and rejected replies are identical")
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    row = {"prompt": _prompt(record), "completion": _text_reply(record, "completion")}
    row["label"] = _label(record) if fmt == "unpaired" else 1.0
    return row


# ---------------------------------------------------------------------------------------------- views
def view_columns(rows: list[dict], indices: list[int], fmt: str, view: str, shown: str) -> dict[str, list]:
    """The columns of `view` (VIEW_FEATURES) from normalized rows of format `fmt`; `indices` are their
    source rows, `shown` names the data in errors (a view the format lacks is a ValueError)."""
    out: dict[str, list] = {k: [] for k in VIEW_FEATURES[view]}
    if view == "pairwise" and fmt != "preference":
        raise ValueError(f"{shown}: {fmt} data has no pairwise view: its rows are single replies, not pairs. "
                         f"Use a point-wise method (point-wise DPO, ULMA, KTO, unlikelihood) or SFT")
    if view == "pointwise" and fmt == "prompt_completion":
        raise ValueError(f"{shown}: prompt/completion data has no labels, so no point-wise view; add a 'label' "
                         f"column (bool or [0, 1]) or train SFT")
    for row, index in zip(rows, indices):
        if fmt == "preference":
            replies = {"pairwise": [None], "pointwise": [(row["chosen"], 1.0), (row["rejected"], 0.0)],
                       "sft": [(row["chosen"], 1.0)]}[view]
        else:
            keep = view == "pointwise" or row["label"] == 1.0  # SFT: the positives (label true / 1)
            replies = [(row["completion"], row["label"])] if keep else []
        for reply in replies:
            out["prompt"].append(row["prompt"])
            out["source_index"].append(index)
            if view == "pairwise":
                out["chosen"].append(row["chosen"])
                out["rejected"].append(row["rejected"])
                continue
            out["completion"].append(reply[0])
            if view == "pointwise":
                out["label"].append(reply[1])
    return out


FORMAT_VIEWS = {"preference": VIEWS, "unpaired": ("sft", "pointwise"), "prompt_completion": ("sft",)}


def _read(path_or_id: str | os.PathLike, split: str) -> tuple[_Rows, str]:
    split = _SPLIT_ALIASES.get(split, split)
    path = Path(path_or_id).expanduser()
    if path.exists():
        return _read_local(path, split), display_path(path)
    if _HUB_ID.match(str(path_or_id)) and not str(path_or_id).endswith(DATA_SUFFIXES):
        return _read_hub(str(path_or_id), split), f"{path_or_id} [{split}]"
    raise DataFileNotFoundError(f"{path_or_id}: no such file or folder (and not a hub id owner/name)",
                                file=str(path_or_id))


def standard_views(path_or_id: str | os.PathLike, split: str = "train") -> tuple[str, ...]:
    """The views a user's data has, from its format (preference: all three; unpaired: sft, pointwise;
    prompt-completion: sft). Reads the data; raises like `load_standard`."""
    data, shown = _read(path_or_id, split)
    return FORMAT_VIEWS[detect_format(data.records, shown)]


def load_standard(path_or_id: str | os.PathLike, view: str, split: str = "train", *,
                  on_bad_row: str = "raise") -> datasets.Dataset:
    """Read a user's data (file, folder or hub id) in a standard format and return `view` of `split`.

    Raises DataFileNotFoundError / DataFileError (unreadable file, unknown format), BadRowError (a
    malformed row: file, 0-based row, field), ValueError (a view the format lacks, a missing split),
    ConnectionError (a hub id that cannot be read).
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; valid: {list(VIEWS)}")
    if on_bad_row not in ("raise", "skip"):
        raise ValueError(f"on_bad_row={on_bad_row!r} is not one of ['raise', 'skip']")
    split = _SPLIT_ALIASES.get(split, split)
    data, shown = _read(path_or_id, split)
    fmt = detect_format(data.records, shown)
    rows, indices, bad = [], [], []
    for i, record in enumerate(data.records):
        try:
            rows.append(normalize(record, fmt))
            indices.append(i)
        except RowProblem as err:
            file, file_row, line = data.places[i]
            bad.append(BadRow(i, file_row, str(err), line, file))
    report = LoadReport(shown, view, split, shown, on_bad_row,
                        num_examples=len(data.records), num_bad=len(bad), bad=bad[:MAX_REPORTED],
                        bad_reasons=dict(Counter(_reason_kind(b.reason) for b in bad)))
    set_last_report(report)
    if bad and on_bad_row == "raise":
        raise BadRowError(report)
    if bad:
        first = bad[0]
        logger.warning("%s: skipped %d of %d rows as malformed (%s; first: %s); ulma.data.last_report() lists them",
                       shown, len(bad), len(data.records), report.bad_summary(),
                       at(first.file, first.file_row, first.line, first.reason))
    dataset = datasets.Dataset.from_dict(view_columns(rows, indices, fmt, view, shown), features=VIEW_FEATURES[view])
    report.num_rows = len(dataset)
    return dataset
