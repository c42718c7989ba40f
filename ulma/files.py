"""Files and content keys: the one implementation of an atomic write and of a cache key.

Every file the package writes for later reading (run folders, results records, caches) goes through
`atomic_write`: written beside its target and renamed over it, so that an interrupted write never leaves
half a file that looks finished. Every cache key is `content_key` of a JSON-able description of what
changes the cached numbers, and a tokenized dataset enters it by `dataset_content_hash` (its values).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pyarrow.compute as pc


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path` (atomic on POSIX), on
    failure remove it. The process id in its name keeps concurrent writers apart."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> None:
    """Sorted, indented JSON (values JSON cannot hold are written by `str`), atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> dict | None:
    """The JSON object at `path`, or None when it is absent or not valid JSON (a crash mid-write of a
    writer that was not atomic, or a foreign file)."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


REPO_ROOT = Path(__file__).resolve().parents[1]


def portable_path(path: str | os.PathLike | None) -> str | None:
    """A path as records and notebooks keep it: relative to the repository when inside it, ``~/...`` under
    the home folder, symbolic names (``hub``, ``bundled``) and URLs as given, so that nothing committed
    carries the folders of the machine that made it. Anything else stays absolute (a user's own choice)."""
    if path is None:
        return None
    text = os.fspath(path)
    if "://" in text or not os.path.isabs(text):
        return text
    resolved = Path(text).resolve()
    for root, prefix in ((REPO_ROOT, ""), (Path.home().resolve(), "~/")):
        if resolved == root:
            return "." if not prefix else "~"
        if resolved.is_relative_to(root):
            return prefix + resolved.relative_to(root).as_posix()
    return text


def content_key(description: Any, length: int = 16) -> str:
    """sha256 (hex, first `length` digits) of a JSON-able description, keys sorted."""
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()[:length]


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_content_hash(dataset, columns: list[str]) -> str:
    """sha256 of the given columns' values, row order included (list columns of ints, or scalars).

    Content, not `datasets`' fingerprint: the latter is random whenever a mapped function (a tokenizer)
    cannot be hashed, which would make every run miss the cache.
    """
    table = dataset.select_columns(columns).with_format("arrow")[:]
    digest = hashlib.sha256(f"rows={table.num_rows}".encode())
    for name in columns:
        col = table[name]
        digest.update(name.encode())
        if hasattr(col.type, "value_type"):  # list column: values + row lengths
            digest.update(np.asarray(pc.list_value_length(col).to_numpy(zero_copy_only=False), np.int64).tobytes())
            digest.update(np.asarray(pc.list_flatten(col).to_numpy(zero_copy_only=False), np.int64).tobytes())
        else:
            digest.update(np.asarray(col.to_numpy(zero_copy_only=False), np.float64).tobytes())
    return digest.hexdigest()
