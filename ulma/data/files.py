"""Reading raw data files: where they are, one clear error per bad file or row, content fingerprints.

Every error raised here derives from `DataError` (a `ValueError`) and names the file, the row and the
field it is about. **Rows are counted from 0** (the position of the record in the file, as in Python
and ``datasets``); **lines from 1** (as an editor shows them), given alongside for JSON-lines files.

Where data comes from (`resolve_data_dir`, the single implementation of the precedence):
the ``data_dir`` argument, else ``$ULMA_DATA_DIR``, else the profile's ``data_dir``, else the default:
the repository's own ``data/`` folder for every file it holds (`BUNDLED_DIR`), the hub for the rest.
Symbolic roots: ``fixtures`` (``tests/fixtures``), ``bundled`` (``data/`` only) and ``hub`` (the hub only).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from pathlib import Path
from typing import Any, Iterator

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_DIR = REPO_ROOT / "data"  # the vendored `mini` data (data/MANIFEST.json lists it)
FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures"
MANIFEST = BUNDLED_DIR / "MANIFEST.json"
ENV_VAR = "ULMA_DATA_DIR"
SYMBOLIC_ROOTS = ("fixtures", "bundled", "hub")


# -------------------------------------------------------------------------------------------- errors
class DataError(ValueError):
    """Bad input data. ``file``, ``row`` (0-based, None for the whole file) and ``field`` say where."""

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None, field: str | None = None):
        super().__init__(message)
        self.file, self.row, self.field = file, row, field


class DataFileError(DataError):
    """A file that cannot be read as data at all (not gzip, cut short, not UTF-8, not JSON, no rows)."""


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A data file that is not there (also a FileNotFoundError, for callers that test availability)."""


class EmptyDatasetError(DataError):
    """No rows left to work on (every row malformed, or a limit that keeps none)."""


def where(file: str | None, row: int | None = None, field: str | None = None, line: int | None = None) -> str:
    """``"FILE row R (0-based; line L), field 'F'"``: the prefix of every message about a place in data."""
    parts = [file or "<data>"]
    if row is not None:
        parts.append(f"row {row} (0-based" + (f"; line {line})" if line is not None else ")"))
    text = " ".join(parts)
    return text + (f", field {field!r}" if field else "")


def at(file: str | None, row: int | None, line: int | None, reason: str) -> str:
    """`where` + the reason: ``"FILE row R (0-based; line L), field 'F': what"`` or ``"FILE row R (0-based): what"``."""
    return where(file, row, line=line) + (", " if reason.startswith("field '") else ": ") + reason


def display_path(path: str | os.PathLike) -> str:
    """A path as messages and records show it: relative to the repository when inside it (so nothing
    recorded carries this machine's folders), else as given. URLs pass through."""
    text = str(path)
    if "://" in text:
        return text
    try:
        return Path(text).resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return text


# ------------------------------------------------------------------------------------------- reading
DATA_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz", ".parquet")


def _open_bytes(path: Path, shown: str) -> bytes:
    """The file's bytes, un-gzipped when it is gzip (by its magic number, whatever its name)."""
    raw = path.read_bytes()
    if not raw:
        raise DataFileError(f"{shown}: the file is empty (0 bytes): no rows", file=shown)
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except EOFError:
            raise DataFileError(f"{shown}: the gzip stream is cut short (truncated file): download or copy it again",
                                file=shown) from None
        except (OSError, zlib.error) as err:
            raise DataFileError(f"{shown}: corrupt gzip data ({err})", file=shown) from None
    elif shown.endswith(".gz"):
        raise DataFileError(f"{shown}: not gzip data although the name ends in .gz", file=shown)
    if not raw.strip():
        raise DataFileError(f"{shown}: holds no data (only whitespace once decompressed): no rows", file=shown)
    return raw


def _decode(raw: bytes, shown: str) -> str:
    try:
        return raw.decode("utf-8-sig")  # a byte-order mark, written by some Windows editors, is not data
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataFileError(f"{shown} line {line}: invalid UTF-8 (byte {raw[err.start]:#04x} at offset {err.start})",
                            file=shown) from None


def read_records(path: str | os.PathLike, shown: str | None = None) -> tuple[list[Any], list[int] | None]:
    """The records of a JSON file (one array of objects) or a JSON-lines file, gzipped or not.

    Returns ``(records, lines)``: ``lines[i]`` is the 1-based line of record i (None for an array).
    Records are returned as parsed; the caller checks that each is an object (`require_object`).
    Raises DataFileNotFoundError, or DataFileError naming the file and line for anything unreadable.
    """
    path = Path(path)
    shown = shown or display_path(path)
    if not path.is_file():
        raise DataFileNotFoundError(f"{shown}: no such file", file=shown)
    text = _decode(_open_bytes(path, shown), shown)
    if text.lstrip().startswith("["):  # one JSON array (QA-feedback, the red-team file) ...
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            if err.msg != "Extra data":  # ... unless more follows it: JSON lines whose first record is a list
                raise DataFileError(f"{shown} line {err.lineno} column {err.colno}: invalid JSON ({err.msg})",
                                    file=shown) from None
        else:
            if not records:
                raise DataFileError(f"{shown}: the JSON array is empty: no rows", file=shown)
            return records, None
    records, lines = [], []
    # split at "\n" only: str.splitlines also breaks at U+2028, U+0085 and others, which JSON strings may hold
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue  # blank lines (a trailing newline, CRLF files) are not records
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            hint = " (a JSON document spread over several lines? use one record per line or one array)" \
                if number == 1 and line.strip() == "{" else ""
            raise DataFileError(f"{shown} line {number} column {err.colno}: invalid JSON ({err.msg}){hint}",
                                file=shown) from None
        lines.append(number)
    return records, lines


def require_object(record: Any, shown: str, row: int, line: int | None) -> dict:
    """`record` if it is a JSON object, else DataFileError: a file of the wrong shape, not a bad row."""
    if not isinstance(record, dict):
        kind = type(record).__name__ if record is not None else "null"
        raise DataFileError(f"{where(shown, row, line=line)}: expected a JSON object with named fields, got {kind} "
                            f"{_short(record)}", file=shown, row=row)
    return record


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(value: Any) -> str:
    """``int 42``, ``null``, ``str 'high'``: a value as an error message shows it."""
    if value is None:
        return "null"
    return f"{type(value).__name__} {_short(value)}"


def iter_data_files(folder: Path) -> Iterator[Path]:
    """The data files under a folder (any depth, sorted), skipping hidden ones."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not any(p.startswith(".") for p in path.relative_to(folder).parts):
            if path.name.endswith(DATA_SUFFIXES):
                yield path


# ----------------------------------------------------------------------------------------- locations
def resolve_data_dir(data_dir: str | os.PathLike | None = None,
                     profile_data_dir: str | os.PathLike | None = None) -> Path | str | None:
    """The data root to read, by precedence: `data_dir`, $ULMA_DATA_DIR, `profile_data_dir`, default.

    Returns a Path (``fixtures`` -> tests/fixtures; a path as given, ``~`` expanded), the string ``"hub"``
    or ``"bundled"`` for those symbolic roots, or None for the default (the repository's ``data/`` for
    the files it holds, the hub for the rest). This is the one implementation: the trainer and the
    experiments call it.
    """
    for value in (data_dir, os.environ.get(ENV_VAR) or None, profile_data_dir):
        if value is None or str(value) == "":
            continue
        text = str(value)
        if text == "fixtures":
            return FIXTURES_DIR
        if text in ("hub", "bundled"):
            return text
        return Path(text).expanduser()
    return None


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (as stored: a .gz file is hashed compressed), cached per (path, size, mtime)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


_SHA_CACHE: dict[tuple, str] = {}


def read_manifest() -> dict:
    """data/MANIFEST.json: each vendored file's sha256, size, licence and provenance."""
    return json.loads(MANIFEST.read_text())
