"""Bad-input suite for data: every case is one clear error (file, row, field) or a clean load; no good row lost.

Each case writes a small file laid out like a data root (or a user's own file), loads it, and checks:

* an error case raises a `ulma.data.DataError` (a ValueError; a missing file is also a FileNotFoundError)
  whose message is ONE line naming the file and, where it applies, the 0-based row and the field;
* a row-level case loaded with ``on_bad_row="skip"`` returns every well-formed row (data lost = 0);
* a clean case (a byte-order mark, CRLF lines, ...) loads the rows it holds.

docs/RELIABILITY.md records the counts (`test_reliability_doc_counts_match` keeps them true).
"""
from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from ulma import data
from ulma.data import DataError, DataFileError, DataFileNotFoundError, EmptyDatasetError, BadRowError

HH_FILE = "hh-rlhf/harmless-base/train.jsonl.gz"
RT_FILE = "hh-rlhf/red-team-attempts/red_team_attempts.jsonl.gz"
QA_FILE = "qa-feedback/train_feedback.json"


def hh(reply="hello", other="go away", prompt="hi"):
    return {"chosen": f"\n\nHuman: {prompt}\n\nAssistant: {reply}", "rejected": f"\n\nHuman: {prompt}\n\nAssistant: {other}"}


def rt(rating=1.0, score=0.5, text="\n\nHuman: hi\n\nAssistant: hello"):
    return {"transcript": text, "rating": rating, "min_harmlessness_score_transcript": score}


def qa(**changes):
    row = {"question": "Who won?", "passages": [["T", "T\n\nA sentence."]],
           **{f"prediction {j}": f"answer {j}" for j in (1, 2, 3, 4)},
           "feedback": {"errors": [], "corrected-prediction": "fixed"}, "preference": [1, 1, 1, 2, 2, 0]}
    row.update(changes)
    return {k: v for k, v in row.items() if v is not _DROP}


_DROP = object()


def jsonl(rows) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


@dataclass
class Case:
    id: str
    file: str  # relative to the case's folder
    content: bytes | None  # None: no file written
    name: str = "hh"  # a built-in source, or "own" (the file itself)
    view: str = "pairwise"
    error: type | None = DataError  # None: a clean case
    mentions: tuple[str, ...] = ()  # substrings the one-line message must hold (file, row, field)
    good_rows: int | None = None  # with on_bad_row="skip": the rows that must survive (data lost = 0)
    check: Callable[[Any], None] | None = None  # for clean cases: what the loaded rows must be
    options: dict = field(default_factory=dict)


def gz(b: bytes) -> bytes:
    return gzip.compress(b, mtime=0)


GOOD_HH = gz(jsonl([hh(), hh("sure", "no")]))
TRUNCATED = GOOD_HH[: len(GOOD_HH) // 2]
CORRUPT = GOOD_HH[:12] + bytes(b ^ 0xFF for b in GOOD_HH[12:30]) + GOOD_HH[30:]
BAD_UTF8 = gz(jsonl([hh()]) + b'{"chosen": "\xff\xfe", "rejected": "x"}\n')
OWN = "mine.jsonl"


def own(rows, name=OWN):
    return name, jsonl(rows)


CASES = [
    # ---- files that cannot be read (always an error, whatever on_bad_row says)
    Case("missing file", HH_FILE, None, error=DataFileNotFoundError, mentions=("train.jsonl.gz", "no file")),
    Case("empty .gz (0 bytes)", HH_FILE, b"", error=DataFileError, mentions=("train.jsonl.gz", "empty")),
    Case("gzip of nothing", HH_FILE, gz(b""), error=DataFileError, mentions=("train.jsonl.gz", "no data")),
    Case("gzip of blank lines", HH_FILE, gz(b"\n\n  \n"), error=DataFileError, mentions=("train.jsonl.gz", "no data")),
    Case("truncated gzip", HH_FILE, TRUNCATED, error=DataFileError, mentions=("train.jsonl.gz", "cut short")),
    Case("corrupt gzip", HH_FILE, CORRUPT, error=DataFileError, mentions=("train.jsonl.gz", "gzip")),
    Case(".gz name, plain text", HH_FILE, jsonl([hh()]), error=DataFileError, mentions=("train.jsonl.gz", "not gzip")),
    Case("invalid UTF-8", HH_FILE, BAD_UTF8, error=DataFileError, mentions=("train.jsonl.gz line 2", "UTF-8")),
    Case("bad JSON line", HH_FILE, gz(jsonl([hh()]) + b'{"chosen": "x",\n'), error=DataFileError,
         mentions=("train.jsonl.gz line 2 column", "invalid JSON")),
    Case("pretty-printed JSON object", HH_FILE, gz(json.dumps(hh(), indent=1).encode()), error=DataFileError,
         mentions=("line 1", "one record per line")),
    Case("JSON line that is a number", HH_FILE, gz(jsonl([hh(), 42])), error=DataFileError,
         mentions=("train.jsonl.gz row 1 (0-based; line 2)", "JSON object", "int 42")),
    Case("JSON line that is a list", HH_FILE, gz(jsonl([hh(), ["a", "b"]])), error=DataFileError,
         mentions=("row 1 (0-based; line 2)", "got list")),
    Case("first JSON line a list", HH_FILE, gz(jsonl([["a", "b"], hh()])), error=DataFileError,
         mentions=("row 0 (0-based; line 1)", "got list")),
    Case("JSON line that is null", HH_FILE, gz(jsonl([hh(), None])), error=DataFileError, mentions=("row 1", "got null")),
    Case("field missing in every row", HH_FILE, gz(jsonl([{"choice": "a", "rejected": "b"}] * 2)), error=DataFileError,
         mentions=("train.jsonl.gz", "field 'chosen'", "missing in every row", "choice")),
    # ---- malformed rows: BadRowError naming file, row, field; skipped, the good rows all survive
    Case("field missing in one row", HH_FILE, gz(jsonl([hh(), {"chosen": hh()["chosen"]}, hh("a", "b")])),
         error=BadRowError, mentions=("row 1 (0-based; line 2), field 'rejected': missing",), good_rows=2),
    Case("chosen: 42", HH_FILE, gz(jsonl([hh(), {"chosen": 42, "rejected": "x"}])), error=BadRowError,
         mentions=("row 1 (0-based; line 2), field 'chosen': expected a string, got int 42",), good_rows=1),
    Case("chosen: null", HH_FILE, gz(jsonl([{"chosen": None, "rejected": "x"}, hh()])), error=BadRowError,
         mentions=("row 0", "field 'chosen'", "got null"), good_rows=1),
    Case("chosen == rejected", HH_FILE, gz(jsonl([hh(), hh("same", "same")])), error=BadRowError,
         mentions=("row 1", "malformed pair", "identical"), good_rows=1),
    Case("empty chosen reply", HH_FILE, gz(jsonl([hh(""), hh()])), error=BadRowError,
         mentions=("row 0", "field 'chosen'", "final Assistant turn is empty"), good_rows=1),
    Case("embedded Assistant turn", HH_FILE,
         gz(jsonl([hh(), hh("a\n\nAssistant: b")])), error=BadRowError,
         mentions=("row 1", "field 'chosen'", "do not alternate"), good_rows=1),
    Case("prompts differ", HH_FILE, gz(jsonl([{"chosen": hh()["chosen"], "rejected": hh(prompt="other")["rejected"]}, hh()])),
         error=BadRowError, mentions=("row 0", "malformed pair", "differ before the final reply"), good_rows=1),
    # ---- red-team: one JSON array
    Case("red-team file that is an object", RT_FILE, gz(json.dumps({"transcripts": [rt()]}).encode()), name="red_team",
         view="pointwise", error=DataFileError, mentions=("red_team_attempts.jsonl.gz", "field 'transcript'", "missing in every row")),
    Case("red-team file that is a string", RT_FILE, gz(b'"hello"'), name="red_team", view="pointwise",
         error=DataFileError, mentions=("row 0", "JSON object", "str")),
    Case("empty array", RT_FILE, gz(b"[]"), name="red_team", view="pointwise", error=DataFileError,
         mentions=("red_team_attempts.jsonl.gz", "array is empty")),
    Case("truncated array", RT_FILE, gz(json.dumps([rt(), rt()]).encode()[:-20]), name="red_team", view="pointwise",
         error=DataFileError, mentions=("red_team_attempts.jsonl.gz line 1 column", "invalid JSON")),
    Case("array element not an object", RT_FILE, gz(json.dumps([rt(), "x"]).encode()), name="red_team",
         view="pointwise", error=DataFileError, mentions=("row 1 (0-based)", "JSON object")),
    Case('rating "high"', RT_FILE, gz(json.dumps([rt()] * 4 + [rt("high")]).encode()), name="red_team", view="pointwise",
         error=BadRowError, mentions=("row 4 (0-based), field 'rating': expected a number, got str 'high'",), good_rows=4),
    Case("rating 7", RT_FILE, gz(json.dumps([rt(7)] + [rt()] * 4).encode()), name="red_team", view="pointwise",
         error=BadRowError, mentions=("row 0", "field 'rating'", "not in [0, 4]"), good_rows=4),
    Case("rating true", RT_FILE, gz(json.dumps([rt(True)] + [rt()] * 4).encode()), name="red_team", view="pointwise",
         error=BadRowError, mentions=("row 0", "field 'rating'", "got bool"), good_rows=4),
    Case("harmlessness NaN", RT_FILE, gz(json.dumps([rt(score=float("nan"))] + [rt()] * 4).encode()), name="red_team",
         view="pointwise", error=BadRowError, mentions=("row 0", "field 'min_harmlessness_score_transcript'", "finite"),
         good_rows=4),
    # ---- QA-feedback: one JSON array of questions
    Case("preference code 3", QA_FILE, json.dumps([qa(), qa(preference=[1, 1, 1, 3, 2, 0])]).encode(), name="qa_feedback",
         view="sft", error=BadRowError, mentions=("row 1 (0-based), field 'preference'", "6 codes"), good_rows=1),
    Case("preference a string", QA_FILE, json.dumps([qa(preference="1,1,1,2,2,0"), qa()]).encode(), name="qa_feedback",
         view="sft", error=BadRowError, mentions=("row 0", "field 'preference': expected a list"), good_rows=1),
    Case("prediction missing", QA_FILE, json.dumps([qa(), qa(**{"prediction 2": _DROP})]).encode(), name="qa_feedback",
         view="sft", error=BadRowError, mentions=("row 1", "field 'prediction 2': missing"), good_rows=1),
    Case("question a number", QA_FILE, json.dumps([qa(question=7), qa()]).encode(), name="qa_feedback", view="sft",
         error=BadRowError, mentions=("row 0", "field 'question'", "int 7"), good_rows=1),
    Case("feedback a string", QA_FILE, json.dumps([qa(), qa(feedback="good")]).encode(), name="qa_feedback",
         view="sft", error=BadRowError, mentions=("row 1", "field 'feedback'", "an object"), good_rows=1),
    Case("passages of numbers", QA_FILE, json.dumps([qa(passages=[["T", 5]]), qa()]).encode(), name="qa_feedback",
         view="sft", error=BadRowError, mentions=("row 0", "field 'passages'"), good_rows=1),
    # ---- a user's own files (TRL standard formats): raise by default
    Case("own: chosen: 42", *own([{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": 42, "rejected": "b"}]),
         name="own", error=BadRowError, mentions=("mine.jsonl row 1 (0-based; line 2), field 'chosen'", "int 42"), good_rows=1),
    Case('own: label "high"', *own([{"prompt": "p", "completion": "c", "label": "high"}, {"prompt": "p", "completion": "c", "label": True}]),
         name="own", view="pointwise", error=BadRowError, mentions=("mine.jsonl row 0", "field 'label'", "str 'high'"), good_rows=1),
    Case("own: label 1.5", *own([{"prompt": "p", "completion": "c", "label": 0.5}, {"prompt": "p", "completion": "c", "label": 1.5}]),
         name="own", view="pointwise", error=BadRowError, mentions=("row 1", "field 'label'", "[0, 1]"), good_rows=1),
    Case("own: prompt ends with assistant",
         *own([{"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "completion": "c", "label": 1}]),
         name="own", view="pointwise", error=BadRowError, mentions=("row 0", "field 'prompt'", "end with a user message")),
    Case("own: message without a role", *own([{"prompt": [{"content": "q"}], "completion": "c", "label": 1}]), name="own",
         view="pointwise", error=BadRowError, mentions=("row 0", "field 'prompt'", "message 0")),
    Case("own: unknown role", *own([{"prompt": [{"role": "human", "content": "q"}], "completion": "c", "label": 1}]),
         name="own", view="pointwise", error=BadRowError, mentions=("row 0", "field 'prompt'", "'human'")),
    Case("own: two-message reply",
         *own([{"prompt": "q", "completion": [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}], "label": 1}]),
         name="own", view="pointwise", error=BadRowError, mentions=("row 0", "field 'completion'", "one assistant message")),
    Case("own: chosen == rejected", *own([{"prompt": "p", "chosen": "a", "rejected": "a"}, {"prompt": "p", "chosen": "a", "rejected": "b"}]),
         name="own", error=BadRowError, mentions=("row 0", "malformed pair", "identical"), good_rows=1),
    Case("own: empty prompt", *own([{"prompt": " ", "completion": "c"}, {"prompt": "p", "completion": "c"}]), name="own",
         view="sft", error=BadRowError, mentions=("row 0", "field 'prompt': empty"), good_rows=1),
    Case("own: unknown columns", *own([{"question": "q", "answer": "a"}]), name="own", view="sft", error=DataFileError,
         mentions=("mine.jsonl", "not a standard format", "answer")),
    Case("own: corrupt parquet", "mine.parquet", b"PAR1 not really", name="own", view="sft", error=DataFileError,
         mentions=("mine.parquet", "Parquet")),
    Case("own: pairwise view of unpaired data", *own([{"prompt": "p", "completion": "c", "label": 1}]), name="own",
         error=ValueError, mentions=("mine.jsonl", "no pairwise view", "point-wise")),
    # ---- handled cleanly: data that is fine although unusual
    Case("byte-order mark", HH_FILE, gz(b"\xef\xbb\xbf" + jsonl([hh(), hh("a", "b")])), error=None,
         check=lambda rows: len(rows) == 2),
    Case("CRLF lines and blank lines", HH_FILE, gz(jsonl([hh()]).replace(b"\n", b"\r\n") + b"\r\n\r\n" + jsonl([hh("a", "b")])),
         error=None, check=lambda rows: len(rows) == 2 and rows[1]["chosen"] == "a"),
    Case("line separators inside strings", HH_FILE,
         gz(jsonl([hh()]) + json.dumps(hh("a\u2028b\x85c"), ensure_ascii=False).encode() + b"\n"), error=None,
         check=lambda rows: len(rows) == 2 and rows[1]["chosen"] == "a\u2028b\x85c"),
    Case("QA identical predictions compared", QA_FILE,
         json.dumps([qa(**{"prediction 2": "answer 1"})]).encode(), name="qa_feedback", error=None,
         check=lambda rows: len(rows) == 4 and data.last_report().num_identical_dropped == 1),  # 5 non-ties - 1
]


def _path(tmp_path: Path, case: Case) -> Path:
    return tmp_path / case.file


def _load(case: Case, tmp_path: Path, **options):
    if case.name == "own":
        return data.load(_path(tmp_path, case), case.view, "train", **case.options, **options)
    return data.load(case.name, case.view, "train", tmp_path, **case.options, **options)


def _write(case: Case, tmp_path: Path) -> None:
    if case.content is not None:
        path = _path(tmp_path, case)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(case.content)


def run_case(case: Case, tmp_path: Path) -> tuple[bool, int]:
    """(handled cleanly, good rows lost) for one case; asserts say what went wrong."""
    _write(case, tmp_path)
    if case.error is None:
        rows = _load(case, tmp_path)
        assert case.check(rows), f"{case.id}: unexpected rows {rows[:]}"
        return True, 0
    strict = {"on_bad_row": "raise"}
    with pytest.raises(case.error) as info:
        _load(case, tmp_path, **strict)
    message = str(info.value)
    assert isinstance(info.value, ValueError), f"{case.id}: {type(info.value).__name__} is not a ValueError"
    assert "\n" not in message, f"{case.id}: not one line: {message!r}"
    for text in case.mentions:
        assert text in message, f"{case.id}: {text!r} not in {message!r}"
    lost = 0
    if case.good_rows is not None:
        rows = _load(case, tmp_path, on_bad_row="skip")
        kept = len(set(rows["source_index"]))
        lost = case.good_rows - kept
        assert lost == 0, f"{case.id}: {lost} good rows lost"
    return True, lost


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_data_case(case, tmp_path):
    assert run_case(case, tmp_path) == (True, 0)


def test_case_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)


# ------------------------------------------------------------------------------------- empty training sets
def test_every_row_malformed_is_an_error_that_counts_them(tmp_path):
    (tmp_path / "hh-rlhf/harmless-base").mkdir(parents=True)
    (tmp_path / HH_FILE).write_bytes(gz(jsonl([hh(""), {"chosen": 42, "rejected": "x"}, hh("s", "s")])))
    rows = data.load("hh", "pointwise", "train", tmp_path)  # skipping is the built-in default
    assert len(rows) == 0
    with pytest.raises(EmptyDatasetError) as info:
        data.require_rows(rows, "hh train")
    message = str(info.value)
    assert message.startswith("hh train: no rows to train on: ")
    assert "has 3 examples; 3 were skipped as malformed" in message
    assert "1 field 'chosen': the final Assistant turn is empty" in message and "1 malformed pair" in message
    assert "first: " in message and "train.jsonl.gz row 0 (0-based; line 1), field 'chosen'" in message
    assert "\n" not in message and isinstance(info.value, ValueError)


def test_a_selection_that_keeps_nothing_is_an_error_that_says_so():
    rows = data.load("hh", "pointwise", "train", "fixtures")
    report = data.last_report()
    kept = rows.filter(lambda r: r["source_index"] < 0)  # what max_train_examples=0 does in the trainer
    with pytest.raises(EmptyDatasetError, match=r"hh train \(max_train_examples=0\): no rows to train on: .*32 examples; "
                                                r"4 were skipped as malformed .*the load gave 56 pointwise rows and the "
                                                r"selection after it kept none"):
        data.require_rows(kept, "hh train (max_train_examples=0)", report)
    assert data.require_rows(rows, "hh train") is rows


def test_own_file_all_rows_malformed_with_skip(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_bytes(jsonl([{"prompt": "p", "completion": "c", "label": 2}] * 3))
    rows = data.load(path, "pointwise", on_bad_row="skip")
    with pytest.raises(EmptyDatasetError, match=r"3 were skipped as malformed \(3 field 'label'"):
        data.require_rows(rows, "mine.jsonl")


def test_known_upstream_rows_warn_once_in_one_line(caplog, monkeypatch):
    monkeypatch.delenv("ULMA_DATA_DIR", raising=False)
    monkeypatch.setattr(data.builtin, "_WARNED", set())
    with caplog.at_level("INFO", logger="ulma.data"):
        data.load("hh", "pairwise", "test")  # the vendored file: 13 known-malformed pairs
        data.load("hh", "sft", "test")  # the same file again: no second warning
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "\n" not in text
    assert text.startswith("hh test: skipped 13 of 2312 examples as malformed (")
    assert "4 field 'chosen': the final Assistant turn is empty" in text
    assert "8 field 'chosen': turns do not alternate" in text and "1 field 'rejected': turns do not alternate" in text
    assert data.last_report().num_bad == 13


# ----------------------------------------------------------------------------------------- the record
def counts() -> dict[str, int]:
    return {"tried": len(CASES), "errors": sum(c.error is not None for c in CASES),
            "clean loads": sum(c.error is None for c in CASES),
            "skip checked": sum(c.good_rows is not None for c in CASES)}


def test_reliability_doc_counts_match():
    doc = (Path(__file__).parents[1] / "docs" / "RELIABILITY.md").read_text()
    section = doc.split("## Data", 1)[1].split("\n## ", 1)[0]
    n = counts()
    assert f"**{n['tried']} cases tried, {n['tried']} handled cleanly, data lost: 0**" in section
    assert f"{n['errors']} bad inputs" in section and f"{n['clean loads']} unusual but valid" in section
    assert f"{n['skip checked']} row-level cases" in section
    assert re.search(r"tests/test_bad_data\.py", section)
