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

Malformed raw rows (docs/DATA.md): ``on_bad_row="skip"`` (the default for these sources, whose upstream
files hold a few known-malformed rows) drops them with one warning line that counts them;
``on_bad_row="raise"`` raises `BadRowError` on the first. Either way ``last_report()`` describes the last
load: examples read, bad rows (count, the first few with file row, field and reason), rows returned.
A file that cannot be read at all raises `DataFileError` naming the file and line.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import datasets

from ulma.data.files import (
    BUNDLED_DIR, DataError, at, DataFileError, DataFileNotFoundError, describe, display_path, read_records,
    require_object, resolve_data_dir, where,
)

logger = logging.getLogger("ulma.data")

VIEWS = ("sft", "pairwise", "pointwise")
SPLITS = ("train", "test", "mini_train", "mini_test")
MINI_SEED = 0  # fixed: the mini division must be the same everywhere
RED_TEAM_TEST_SIZE = 2312  # red-team has no test split; hold out as many transcripts as HH's test split
MAX_REPORTED = 10  # bad rows listed in a report (all are counted)

_MESSAGES = [{"role": datasets.Value("string"), "content": datasets.Value("string")}]
VIEW_FEATURES = {
    "sft": datasets.Features(
        {"prompt": _MESSAGES, "completion": datasets.Value("string"), "source_index": datasets.Value("int64")}
    ),
    "pointwise": datasets.Features(
        {
            "prompt": _MESSAGES,
            "completion": datasets.Value("string"),
            "label": datasets.Value("float64"),
            "source_index": datasets.Value("int64"),
        }
    ),
    "pairwise": datasets.Features(
        {
            "prompt": _MESSAGES,
            "chosen": datasets.Value("string"),
            "rejected": datasets.Value("string"),
            "source_index": datasets.Value("int64"),
        }
    ),
}


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
    ),
}


# ------------------------------------------------------------------------------------------- reports
class BadRow(NamedTuple):
    index: int  # source_index: position of the raw example within the split
    file_row: int  # its row in the source file, 0-based (differs from `index` for mini and red-team splits)
    reason: str  # "field 'chosen': ..." or "malformed pair: ..."
    line: int | None = None  # 1-based line in a JSON-lines file
    file: str | None = None  # the file, when a split is read from several (else the report's source)


@dataclass
class LoadReport:
    """What one `load` call read, dropped and returned."""

    name: str
    view: str
    split: str
    source: str  # the file read: relative to the repository when inside it, else as given, or a URL
    on_bad_row: str
    num_examples: int = 0  # raw examples in the split
    num_bad: int = 0  # malformed examples (raised on, or skipped)
    bad: list[BadRow] = field(default_factory=list)  # the first MAX_REPORTED of them
    bad_reasons: dict[str, int] = field(default_factory=dict)  # every malformed example's reason kind -> count
    num_empty_dropped: int = 0  # QA-feedback: empty corrected-predictions (no demonstration), not errors
    num_identical_dropped: int = 0  # QA-feedback pairwise: a preferred prediction equal to the other one
    num_rows: int = 0  # rows of the returned view

    def __str__(self) -> str:
        text = (
            f"{self.name} {self.split} ({self.source}): {self.num_examples} examples, {self.num_bad} malformed"
            f" ({self.on_bad_row}), {self.num_rows} {self.view} rows"
        )
        if self.num_empty_dropped:
            text += f", {self.num_empty_dropped} empty completions dropped"
        if self.num_identical_dropped:
            text += f", {self.num_identical_dropped} comparisons of identical predictions dropped"
        for b in self.bad:
            in_split = f" (split row {b.index})" if b.index != b.file_row else ""
            text += f"\n  {at(b.file or self.source, b.file_row, b.line, b.reason)}{in_split}"
        return text

    def bad_summary(self) -> str:
        """``"4 chosen: the final Assistant turn is empty; 9 chosen: turns do not alternate"``."""
        return "; ".join(f"{n} {kind}" for kind, n in sorted(self.bad_reasons.items(), key=lambda kv: -kv[1]))


class BadRowError(DataError):
    """A malformed raw example: file, 0-based row, field and reason, and how many more there are."""

    def __init__(self, report: LoadReport):
        first = report.bad[0]
        field_name = first.reason.split("'")[1] if first.reason.startswith("field '") else None
        super().__init__(
            f"{at(first.file or report.source, first.file_row, first.line, first.reason)} ({report.name} "
            f"{report.split} example {first.index}). {report.num_bad} of {report.num_examples} examples are "
            f"malformed; pass on_bad_row='skip' to drop them (ulma.data.last_report() lists them)",
            file=first.file or report.source, row=first.file_row, field=field_name,
        )
        self.index, self.reason, self.report = first.index, first.reason, report


_LAST_REPORT: LoadReport | None = None


def last_report() -> LoadReport | None:
    """The report of the most recent `load` call in this process (None before the first)."""
    return _LAST_REPORT


def set_last_report(report: LoadReport) -> None:
    global _LAST_REPORT
    _LAST_REPORT = report


# -------------------------------------------------------------------------------------- transcripts
_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}


def parse_transcript(text: str) -> tuple[list[dict[str, str]], str | None]:
    """Split an HH transcript ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` into messages.

    Returns ``(messages, error)``: ``error`` is None for a well-formed dialogue (starts with a Human turn,
    alternates, ends with a non-empty Assistant turn, no empty turn) and says what is wrong otherwise.
    Role markers not preceded by a blank line (``"... Human: ..."`` inside a reply) are reply text.
    """
    parts = _TURN.split(text or "")
    messages = [{"role": _ROLES[r], "content": c.strip()} for r, c in zip(parts[1::2], parts[2::2])]
    if not messages:
        return messages, "empty transcript (no Human/Assistant turns)"
    if parts[0].strip():
        return messages, "text before the first Human turn"
    for k, m in enumerate(messages):
        expected = "user" if k % 2 == 0 else "assistant"
        if m["role"] != expected:
            role = "Human" if m["role"] == "user" else "Assistant"
            return messages, f"turns do not alternate: turn {k} is a second {role} turn in a row"
    if messages[-1]["role"] != "assistant":
        return messages, "no final Assistant turn (ends with a Human turn)"
    for k, m in enumerate(messages):
        if not m["content"]:
            what = "the final Assistant turn" if k == len(messages) - 1 else f"turn {k}"
            return messages, f"{what} is empty"
    return messages, None


def _prompt_key(transcript: str) -> str:
    """Text of a transcript up to its final Assistant marker: the grouping key of the splits."""
    cut = transcript.rfind("\n\nAssistant:")
    return transcript[:cut] if cut >= 0 else transcript




# ------------------------------------------------------------------------------------- parse (raw)
# Each source's raw rows -> one normalized record per example plus `error` ("" when fine). The field
# types were checked before (`_check_fields`); these functions check the content.
def _parse_hh(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
    out: dict[str, list] = {"prompt": [], "chosen": [], "rejected": [], "error": [], "source_index": list(indices)}
    for chosen_text, rejected_text, type_error in zip(batch["chosen"], batch["rejected"], _errors(batch)):
        error = type_error
        chosen, err_c = parse_transcript(chosen_text) if not error else ([], None)
        rejected, err_r = parse_transcript(rejected_text) if not error else ([], None)
        if error:
            pass
        elif err_c:
            error = f"field 'chosen': {err_c}"
        elif err_r:
            error = f"field 'rejected': {err_r}"
        elif chosen[:-1] != rejected[:-1]:
            shared = zip(chosen[:-1], rejected[:-1])
            k = next((i for i, (a, b) in enumerate(shared) if a != b), min(len(chosen), len(rejected)) - 1)
            error = f"malformed pair: chosen and rejected dialogues differ before the final reply (turn {k})"
        elif chosen[-1]["content"] == rejected[-1]["content"]:
            # the same reply as label 1 and label 0 would teach nothing and cancel out: not a preference
            error = "malformed pair: chosen and rejected replies are identical"
        ok = not error
        out["prompt"].append(chosen[:-1] if ok else [])
        out["chosen"].append(chosen[-1]["content"] if ok else "")
        out["rejected"].append(rejected[-1]["content"] if ok else "")
        out["error"].append(error)
    return out


def _errors(batch: dict[str, list]) -> list[str]:
    return batch.get("_type_error") or [""] * len(next(iter(batch.values())))


def _parse_red_team(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
    out: dict[str, list] = {k: [] for k in ("prompt", "completion", "rating", "harmlessness", "error")}
    out["source_index"] = list(indices)
    rows = zip(batch["transcript"], batch["rating"], batch["min_harmlessness_score_transcript"], _errors(batch))
    for text, rating, score, error in rows:
        messages = []
        if not error:
            messages, transcript_error = parse_transcript(text)
            error = f"field 'transcript': {transcript_error}" if transcript_error else ""
        if not error and not 0 <= float(rating) <= 4:
            error = f"field 'rating': {rating!r} is not in [0, 4]"
        if not error and not math.isfinite(float(score)):
            error = f"field 'min_harmlessness_score_transcript': {score!r} is not a finite number"
        ok = not error
        out["prompt"].append(messages[:-1] if ok else [])
        out["completion"].append(messages[-1]["content"] if ok else "")
        out["rating"].append(float(rating) if ok else 0.0)
        out["harmlessness"].append(float(score) if ok else 0.0)
        out["error"].append(error)
    return out


# The 6 QA-feedback comparisons, in the file's order: (first, second) prediction numbers.
QA_COMPARISONS = ((1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4))


QA_COMPARISONS = ((1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4))


def qa_prompt(question: str, passages: list[list[str]]) -> str:
    """One user message: the passages as context, then the question (DATASETS.md, ours).

    The question comes last because long prompts are cut from the start: it must survive the cut.
    A passage is ``[title, sentence, ...]``; the first sentence often repeats the title followed by a
    blank line, which is dropped.
    """
    blocks = []
    for passage in passages or []:
        if not passage:
            continue
        title, sentences = passage[0], list(passage[1:])
        if sentences and sentences[0].startswith(title + "\n\n"):
            sentences[0] = sentences[0][len(title) + 2 :]
        body = " ".join(" ".join(s.split()) for s in sentences)
        blocks.append(f"[{len(blocks) + 1}] {title}: {body}")
    if not blocks:
        return question.strip()
    return "Context:\n" + "\n".join(blocks) + "\n\nQuestion: " + question.strip()




def _qa_error(question, passages, predictions, feedback, preference) -> str:
    if not question.strip():
        return "field 'question': empty"
    if any(not isinstance(p, list) or not all(isinstance(s, str) for s in p) for p in passages):
        return "field 'passages': expected a list of [title, sentence, ...] string lists"
    if len(preference) != 6 or any(isinstance(p, bool) or p not in (0, 1, 2) for p in preference):
        return f"field 'preference': {preference!r} is not 6 codes in {{0, 1, 2}}"
    empty = next((j for j, p in enumerate(predictions, 1) if not p), None)
    if empty:
        return f"field 'prediction {empty}': empty"
    corrected = feedback.get("corrected-prediction")
    if corrected is not None and not isinstance(corrected, str):
        return f"field 'feedback': 'corrected-prediction' is {describe(corrected)}, expected a string"
    if not isinstance(feedback.get("errors") or [], list):
        return f"field 'feedback': 'errors' is {describe(feedback.get('errors'))}, expected a list"
    return ""


def _parse_qa(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
    out: dict[str, list] = {k: [] for k in ("prompt", "predictions", "corrected", "num_errors", "preference", "error")}
    out["source_index"] = list(indices)
    for k, (question, error) in enumerate(zip(batch["question"], _errors(batch))):
        feedback = batch["feedback"][k] or {}
        preference = batch["preference"][k]
        predictions = [(batch[f"prediction {j}"][k] or "").strip() for j in (1, 2, 3, 4)] if not error else []
        if not error:
            error = _qa_error(question, batch["passages"][k] or [], predictions, feedback, preference)
        ok = not error
        out["prompt"].append([{"role": "user", "content": qa_prompt(question, batch["passages"][k])}] if ok else [])
        out["predictions"].append(predictions if ok else [])
        out["corrected"].append((feedback.get("corrected-prediction") or "").strip() if ok else "")
        out["num_errors"].append(len(feedback.get("errors") or []) if ok else 0)
        out["preference"].append(list(preference) if ok else [])
        out["error"].append(error)
    return out


_PARSERS = {"hh": _parse_hh, "golden_hh": _parse_hh, "red_team": _parse_red_team, "qa_feedback": _parse_qa}


# ------------------------------------------------------------------------------------ raw field types
_KINDS = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "number": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "object": (lambda v: isinstance(v, dict), "an object"),
}


def check_fields(records: list[dict], fields: dict[str, str], shown: str) -> list[str]:
    """Per record: "" or "field 'F': <what is wrong>" for the first field of the wrong type or missing.

    A field missing from *every* record is a file of another kind (wrong file, wrong column names):
    DataFileError naming the field and the fields the rows do have, whatever `on_bad_row` says.
    """
    for name in fields:
        if records and not any(name in r for r in records):
            have = sorted({k for r in records[:100] for k in r})
            raise DataFileError(f"{shown}, field {name!r}: missing in every row (the rows have {have})",
                                file=shown, field=name)
    errors = []
    for record in records:
        error = ""
        for name, kind in fields.items():
            test, wanted = _KINDS[kind]
            if name not in record:
                error = f"field {name!r}: missing"
            elif record[name] is None and kind in ("list", "object") and name != "preference":
                continue  # QA-feedback writes null for "no passages" / "no feedback"
            elif not test(record[name]):
                error = f"field {name!r}: expected {wanted}, got {describe(record[name])}"
            if error:
                break
        errors.append(error)
    return errors
# ------------------------------------------------------------------------------------ views (parsed)
def _empty(view: str) -> dict[str, list]:
    return {k: [] for k in VIEW_FEATURES[view]}


def _hh_view(batch: dict[str, list], view: str) -> dict[str, list]:
    """HH / Golden HH: pairwise as is; point-wise (chosen, 1.0), (rejected, 0.0); SFT the chosen."""
    if view == "pairwise":
        return {k: batch[k] for k in VIEW_FEATURES["pairwise"]}
    out = _empty(view)
    for prompt, chosen, rejected, index in zip(*(batch[k] for k in ("prompt", "chosen", "rejected", "source_index"))):
        pairs = [(chosen, 1.0), (rejected, 0.0)] if view == "pointwise" else [(chosen, 1.0)]
        for completion, label in pairs:
            out["prompt"].append(prompt)
            out["completion"].append(completion)
            out["source_index"].append(index)
            if view == "pointwise":
                out["label"].append(label)
    return out


def harmlessness_label(score: float) -> float:
    """Red-team ``label_source="harmlessness"`` (ours): z = sigmoid(min_harmlessness_score_transcript).

    The score is a preference model's output, and a preference model is trained so that the difference of
    two scores is the log-odds that one transcript is preferred (Bradley-Terry). So sigmoid(score), with
    unit scale and no shift, is the probability that the transcript is judged more harmless than one
    scoring 0; lower scores (more harmful) give labels near 0.
    """
    return 1.0 / (1.0 + math.exp(-score)) if score >= 0 else math.exp(score) / (1.0 + math.exp(score))


def _red_team_view(batch: dict[str, list], view: str, label_source: str) -> dict[str, list]:
    """Point-wise: z = 1 - rating/4 (or the harmlessness logistic); SFT: rating 0 only."""
    out = _empty(view)
    for prompt, completion, rating, score, index in zip(
        batch["prompt"], batch["completion"], batch["rating"], batch["harmlessness"], batch["source_index"]
    ):
        if view == "sft" and rating != 0:
            continue
        out["prompt"].append(prompt)
        out["completion"].append(completion)
        out["source_index"].append(index)
        if view == "pointwise":
            out["label"].append(1.0 - rating / 4.0 if label_source == "rating" else harmlessness_label(score))
    return out


def borda_scores(preference: list[int]) -> list[float]:
    """Each of the 4 predictions' (wins + ties/2) / 3 over the 6 comparisons (codes 1 first, 2 second, 0 tie)."""
    points = [0.0] * 4
    for (a, b), code in zip(QA_COMPARISONS, preference):
        if code == 0:
            points[a - 1] += 0.5
            points[b - 1] += 0.5
        else:
            points[(a if code == 1 else b) - 1] += 1.0
    return [p / 3.0 for p in points]


def _qa_view(batch: dict[str, list], view: str, labels: str) -> dict[str, list]:
    """QA-feedback (DATASETS.md, ours). Empty corrected-predictions give no demonstration row."""
    out = _empty(view)

    def add(prompt, index, **row):
        out["prompt"].append(prompt)
        out["source_index"].append(index)
        for k, v in row.items():
            out[k].append(v)

    columns = ("prompt", "predictions", "corrected", "num_errors", "preference", "source_index")
    for prompt, preds, corrected, num_errors, preference, index in zip(*(batch[k] for k in columns)):
        if view == "pairwise":
            for (a, b), code in zip(QA_COMPARISONS, preference):
                if code and preds[a - 1] != preds[b - 1]:  # identical texts: no preference to learn
                    win, lose = (a, b) if code == 1 else (b, a)
                    add(prompt, index, chosen=preds[win - 1], rejected=preds[lose - 1])
            continue
        if corrected:
            add(prompt, index, completion=corrected, **({"label": 1.0} if view == "pointwise" else {}))
        if view == "pointwise" and labels == "binary" and num_errors > 0:
            add(prompt, index, completion=preds[0], label=0.0)
        if view == "pointwise" and labels == "continuous":
            for pred, score in zip(preds, borda_scores(preference)):
                add(prompt, index, completion=pred, label=score)
    return out


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
    return [i for i, m in zip(pool, mini) if m == (split == "mini_test")]




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
    from ulma.data.files import FIXTURES_DIR

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
            raise DataFileNotFoundError(
                f"{name} {split}: no file {display_path(location)} (the data root comes from the data_dir argument, "
                f"else $ULMA_DATA_DIR, else the profile). Put a copy there laid out like the hub, or leave them "
                f"unset to read {SOURCES[name].remote[_file_split(split)]}.", file=display_path(location))
        return origin, location, Path(location)
    from datasets.utils.file_utils import cached_path

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


def _reason_kind(reason: str) -> str:
    """The reason without row-specific details (turn numbers, values): what the warning counts."""
    head, _, rest = reason.partition(": ") if reason.startswith("field '") else ("", "", reason)
    kind = re.sub(r" \(turn \d+\)", "", rest if rest.startswith("malformed pair") else rest.split(": ")[0])
    return f"{head}: {kind}" if head else kind


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
