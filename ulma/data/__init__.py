"""Alignment data -> SFT, pairwise and point-wise views (docs/DATASETS.md).

``load(name, view, split="train", data_dir=None, **options)`` is the one entry point:

* a built-in source, ``hh`` | ``golden_hh`` | ``red_team`` | ``qa_feedback`` (`ulma.data.builtin`), read
  from ``data_dir`` / ``$ULMA_DATA_DIR`` / the profile's root, else the repository's ``data/`` folder
  for the files it holds (the ``mini`` data) and the hub for the rest (`resolve_data_dir`);
* anything else: a user's own file, folder or hub dataset id in TRL's standard preference, unpaired or
  prompt-completion format, plain or conversational (`ulma.data.standard`).

Every bad input raises a `DataError` (a ValueError) naming file, row (0-based) and field; see
docs/RELIABILITY.md. `require_rows` turns "nothing left to train on" into an error that says why, and
`source_fingerprint` describes the data actually read (no machine paths) for config hashes and results.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import os
from pathlib import Path
from typing import Any

import datasets

from ulma.data import builtin
from ulma.data.builtin import (
    MINI_SEED, RED_TEAM_TEST_SIZE, SOURCES, SPLITS, Source, grouped_holdout, locate, source_location, split_rows,
)
from ulma.data.parsing import (
    QA_COMPARISONS, VIEW_FEATURES, VIEWS, _parse_hh, _parse_qa, _parse_red_team, _prompt_key, borda_scores,
    harmlessness_label, parse_transcript, qa_prompt,
)
from ulma.data.reports import MAX_REPORTED, BadRow, BadRowError, LoadReport, last_report
from ulma.data.files import (
    BUNDLED_DIR, ENV_VAR, FIXTURES_DIR, MANIFEST, REPO_ROOT, DataError, DataFileError, DataFileNotFoundError,
    EmptyDatasetError, at, display_path, iter_data_files, read_manifest, resolve_data_dir, sha256_file, where,
)
from ulma.data.standard import FORMATS, detect_format, is_standard_source, load_standard, standard_views

__all__ = [
    "load", "load_standard", "available_views", "require_rows", "source_fingerprint", "last_report", "resolve_data_dir",
    "source_location", "DataError", "DataFileError", "DataFileNotFoundError", "BadRowError", "EmptyDatasetError",
    "LoadReport", "BadRow", "SOURCES", "VIEWS", "SPLITS", "FORMATS", "ENV_VAR", "FIXTURES_DIR", "BUNDLED_DIR",
    "parse_transcript", "qa_prompt", "borda_scores", "harmlessness_label", "grouped_holdout", "split_rows",
]


def load(name: str | os.PathLike, view: str, split: str = "train", data_dir: str | os.PathLike | None = None,
         **options) -> datasets.Dataset:
    """`view` (sft | pairwise | pointwise) of `split` of a built-in source or of a user's own data.

    Built-in sources: see `ulma.data.builtin.load` (options ``on_bad_row``, ``labels``, ``label_source``;
    malformed upstream rows are skipped with one warning by default). Own data (a path or a hub id;
    `data_dir` does not apply): see `ulma.data.standard.load_standard` (option ``on_bad_row``, default
    "raise": a user's file gets an error naming file, row and field).
    """
    if str(name) in SOURCES:
        return builtin.load(str(name), view, split, data_dir, **options)
    if is_standard_source(name):
        unknown = sorted(set(options) - {"on_bad_row"})
        if unknown:
            raise ValueError(f"option(s) {unknown} do not apply to own data ({name}); its options: ['on_bad_row']")
        return load_standard(name, view, split, **options)
    raise ValueError(f"unknown dataset {str(name)!r}; valid: {sorted(SOURCES)}, a local file or folder, "
                     f"or a hub dataset id (owner/name)")


def available_views(name: str | os.PathLike, split: str = "train") -> tuple[str, ...]:
    """The views `load(name, view, split)` can give: a built-in source's (red_team: no pairwise), or, for
    a user's data, those of its format (reads it). For the checks made before training or evaluating."""
    if str(name) in SOURCES:
        return SOURCES[str(name)].views
    if is_standard_source(name):
        return standard_views(name, split)
    raise ValueError(f"unknown dataset {str(name)!r}; valid: {sorted(SOURCES)}, a local file or folder, "
                     f"or a hub dataset id (owner/name)")


def require_rows(dataset: datasets.Dataset, what: str, report: LoadReport | None = None) -> datasets.Dataset:
    """`dataset` when it has rows; else EmptyDatasetError saying how many rows were read, skipped and why.

    Call it on the training rows before loading a model (`what` names them, e.g.
    ``"hh mini_train (max_train_examples=0)"``). `report` defaults to `last_report()`.
    """
    if len(dataset):
        return dataset
    report = report or last_report()
    parts = []
    if report is not None:
        parts.append(f"{report.source} ({report.split}) has {report.num_examples} examples")
        if report.num_bad:
            first = report.bad[0]
            parts.append(f"{report.num_bad} were skipped as malformed ({report.bad_summary()}; first: "
                         f"{at(first.file or report.source, first.file_row, first.line, first.reason)})")
        if report.num_rows:
            parts.append(f"the load gave {report.num_rows} {report.view} rows and the selection after it kept none "
                         f"(e.g. max_train_examples=0)")
        elif report.num_examples > report.num_bad:
            parts.append(f"the {report.num_examples - report.num_bad} well-formed ones give no {report.view} row")
    raise EmptyDatasetError(f"{what}: no rows to train on" + (": " + "; ".join(parts) if parts else ""),
                            file=report.source if report else None)


# ---------------------------------------------------------------------------------------- fingerprints
def content_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's data: of its decompressed bytes when gzipped, so that a ``.gz`` copy and a
    plain copy of the same data have the same fingerprint. Remembered per (file, size, modification time):
    planning a grid fingerprints the same files for every run."""
    path = Path(path).resolve()
    stat = path.stat()
    return _content_sha256(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _content_sha256(name: str, size: int, mtime_ns: int) -> str:
    path = Path(name)
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    if not gzipped:
        return sha256_file(path)
    digest = hashlib.sha256()
    with gzip.open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_fingerprint(name: str | os.PathLike, split: str = "train",
                       data_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """What `load(name, ..., split, data_dir)` reads, described without any machine path.

    Returns ``{"source", "origin", "sha256"}`` (+ ``"files"`` for a folder): ``source`` is symbolic
    (``hh:hh-rlhf/harmless-base/test.jsonl.gz``; a user file's name; ``hub:owner/name[split]``),
    ``origin`` where it was read (bundled | fixtures | local | hub), ``sha256`` the content hash
    (`content_sha256`; for a folder, over its files' names and hashes; for a hub id, over the Arrow files
    ``datasets`` prepared from it, so that reads the data once). Put ``sha256`` in a config hash:
    the same data gives the same value wherever it was read from.
    """
    if str(name) in SOURCES:
        origin, _, path = builtin.fetch(str(name), split, data_dir)
        relative = SOURCES[str(name)].files["train" if split == "train" else "test"]
        return {"source": f"{name}:{relative}", "origin": origin, "sha256": content_sha256(path)}
    path = Path(name).expanduser()
    if path.is_file():
        return {"source": path.name, "origin": "local", "sha256": content_sha256(path)}
    if path.is_dir():
        files = {f.relative_to(path).as_posix(): content_sha256(f) for f in iter_data_files(path)}
        joined = "".join(f"{k}\0{v}\n" for k, v in sorted(files.items()))
        return {"source": path.name + "/", "origin": "local", "files": files,
                "sha256": hashlib.sha256(joined.encode()).hexdigest()}
    if is_standard_source(name):  # a hub id: the Arrow files the datasets library built from that revision
        table = datasets.load_dataset(str(name), split=split)
        files = sorted(content_sha256(f["filename"]) for f in table.cache_files)
        return {"source": f"hub:{name}[{split}]", "origin": "hub",
                "sha256": hashlib.sha256("\n".join(files).encode()).hexdigest()}
    raise ValueError(f"unknown dataset {str(name)!r}; valid: {sorted(SOURCES)}, a local file or folder, or a hub id")
