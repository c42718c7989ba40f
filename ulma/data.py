"""Raw alignment datasets -> SFT, pairwise and point-wise views (``docs/DATASETS.md``).

``load(name, view, split, data_dir, **options)`` reads a source with the ``datasets`` library's own json
loader (so caching, fingerprints and ``map`` behave as usual) and maps it into one view:

* ``pairwise``:  ``{prompt, chosen, rejected, source_index}``
* ``pointwise``: ``{prompt, completion, label, source_index}`` (``label`` a float in [0, 1])
* ``sft``:       ``{prompt, completion, source_index}`` (the positives)

``prompt`` is a list of ``{"role", "content"}`` messages ending with a user turn; ``source_index`` is the
position, within the split, of the raw example (HH pair, red-team transcript, QA question) a row came from.

Where the data comes from: the ``data_dir`` argument, else ``$ULMA_DATA_DIR``, else the hub (QA-feedback:
GitHub over HTTPS). A local root is laid out like the hub repositories (``SOURCES[name].local``)::

    hh-rlhf/harmless-base/{train,test}.jsonl.gz         Anthropic/hh-rlhf, data_dir=harmless-base
    hh-rlhf/red-team-attempts/red_team_attempts.jsonl.gz Anthropic/hh-rlhf, data_dir=red-team-attempts
    hh-golden/hh_golden/{train,test}.jsonl             Unified-Language-Model-Alignment/Anthropic_HH_Golden
    qa-feedback/{train,dev}_feedback.json              allenai/FineGrainedRLHF tasks/qa_feedback/data

``data_dir="fixtures"`` names the project's own fixtures (``tests/fixtures``).

Splits: ``train``, ``test`` and the ``mini`` profile's ``mini_train`` / ``mini_test``, a division of the
test split (HH, Golden HH: 2,000 / 312 pairs; QA-feedback dev: 400 / 100 questions) grouped by prompt
text and ordered by a seeded hash of that text, so it depends only on the data content (not on file
order or on where the file was read from). Red-team has a single file on the hub: its ``test`` split is
held out the same way (2,312 transcripts, HH's test size, or a fifth of a smaller file).

Malformed raw rows (docs/DATASETS.md) raise ``BadRowError`` by default; ``on_bad_row="skip"`` drops them.
Either way ``last_report()`` describes the last load: examples read, bad rows (count and the first few
indices and reasons), rows returned.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import datasets
from datasets.fingerprint import Hasher

logger = logging.getLogger(__name__)

VIEWS = ("sft", "pairwise", "pointwise")
SPLITS = ("train", "test", "mini_train", "mini_test")
ENV_VAR = "ULMA_DATA_DIR"
FIXTURES_DIR = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
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
    """Where one dataset lives and which keyword options its loader takes (first value = default)."""

    files: dict[str, str]  # split (train | test) -> path relative to a local root
    remote: dict[str, str]  # split -> URL read by datasets' json loader (hf://... or https://...)
    options: dict[str, tuple]
    mini_test: tuple[int, int]  # (test examples, pool examples): the mini division's test share
    views: tuple[str, ...] = VIEWS


_HH_HUB = "hf://datasets/Anthropic/hh-rlhf"
_GOLDEN_HUB = "hf://datasets/Unified-Language-Model-Alignment/Anthropic_HH_Golden"
_QA_URL = "https://raw.githubusercontent.com/allenai/FineGrainedRLHF/main/tasks/qa_feedback/data"
_RED_TEAM_FILE = "red-team-attempts/red_team_attempts.jsonl.gz"
_BAD = ("raise", "skip")

SOURCES: dict[str, Source] = {
    "hh": Source(
        files={s: f"hh-rlhf/harmless-base/{s}.jsonl.gz" for s in ("train", "test")},
        remote={s: f"{_HH_HUB}/harmless-base/{s}.jsonl.gz" for s in ("train", "test")},
        options={"on_bad_row": _BAD},
        mini_test=(312, 2312),
    ),
    "golden_hh": Source(
        files={s: f"hh-golden/hh_golden/{s}.jsonl" for s in ("train", "test")},
        remote={s: f"{_GOLDEN_HUB}/hh_golden/{s}.jsonl" for s in ("train", "test")},
        options={"on_bad_row": _BAD},
        mini_test=(312, 2312),
    ),
    "red_team": Source(
        files={s: f"hh-rlhf/{_RED_TEAM_FILE}" for s in ("train", "test")},
        remote={s: f"{_HH_HUB}/{_RED_TEAM_FILE}" for s in ("train", "test")},
        options={"on_bad_row": _BAD, "label_source": ("rating", "harmlessness")},
        mini_test=(312, 2312),
        views=("sft", "pointwise"),
    ),
    "qa_feedback": Source(
        files={"train": "qa-feedback/train_feedback.json", "test": "qa-feedback/dev_feedback.json"},
        remote={"train": f"{_QA_URL}/train_feedback.json", "test": f"{_QA_URL}/dev_feedback.json"},
        options={"on_bad_row": _BAD, "labels": ("binary", "continuous")},
        mini_test=(100, 500),
    ),
}


# ------------------------------------------------------------------------------------------- reports
class BadRow(NamedTuple):
    index: int  # source_index: position of the raw example within the split
    file_row: int  # its row in the source file (differs from `index` for mini and red-team splits)
    reason: str


@dataclass
class LoadReport:
    """What one `load` call read, dropped and returned."""

    name: str
    view: str
    split: str
    source: str  # local path or URL
    on_bad_row: str
    num_examples: int = 0  # raw examples in the split
    num_bad: int = 0  # malformed examples (raised on, or skipped)
    bad: list[BadRow] = field(default_factory=list)  # the first MAX_REPORTED of them
    num_empty_dropped: int = 0  # QA-feedback: empty corrected-predictions (no demonstration), not errors
    num_rows: int = 0  # rows of the returned view

    def __str__(self) -> str:
        text = (
            f"{self.name} {self.split} ({self.source}): {self.num_examples} examples, {self.num_bad} malformed"
            f" ({self.on_bad_row}), {self.num_rows} {self.view} rows"
        )
        if self.num_empty_dropped:
            text += f", {self.num_empty_dropped} empty completions dropped"
        for b in self.bad:
            where = f" (file row {b.file_row})" if b.file_row != b.index else ""
            text += f"\n  row {b.index}{where}: {b.reason}"
        return text


class BadRowError(ValueError):
    """A malformed raw example, with its index within the split and the reason."""

    def __init__(self, report: LoadReport):
        first = report.bad[0]
        where = f" (file row {first.file_row})" if first.file_row != first.index else ""
        super().__init__(
            f"{report.name} {report.split} row {first.index}{where}: {first.reason}. {report.num_bad} of "
            f"{report.num_examples} examples are malformed; pass on_bad_row='skip' to drop them "
            f"(ulma.data.last_report() lists them)"
        )
        self.index, self.reason, self.report = first.index, first.reason, report


_LAST_REPORT: LoadReport | None = None


def last_report() -> LoadReport | None:
    """The report of the most recent `load` call in this process (None before the first)."""
    return _LAST_REPORT


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
# Each source's raw rows -> one normalized record per example plus `error` ("" when fine).
def _parse_hh(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
    out: dict[str, list] = {"prompt": [], "chosen": [], "rejected": [], "error": [], "source_index": indices}
    for chosen_text, rejected_text in zip(batch["chosen"], batch["rejected"]):
        chosen, err_c = parse_transcript(chosen_text)
        rejected, err_r = parse_transcript(rejected_text)
        error = ""
        if err_c:
            error = f"chosen: {err_c}"
        elif err_r:
            error = f"rejected: {err_r}"
        elif chosen[:-1] != rejected[:-1]:
            shared = zip(chosen[:-1], rejected[:-1])
            k = next((i for i, (a, b) in enumerate(shared) if a != b), min(len(chosen), len(rejected)) - 1)
            error = f"chosen and rejected dialogues differ before the final reply (turn {k})"
        ok = not error
        out["prompt"].append(chosen[:-1] if ok else [])
        out["chosen"].append(chosen[-1]["content"] if ok else "")
        out["rejected"].append(rejected[-1]["content"] if ok else "")
        out["error"].append(error)
    return out


def _parse_red_team(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
    out: dict[str, list] = {k: [] for k in ("prompt", "completion", "rating", "harmlessness", "error")}
    out["source_index"] = indices
    for text, rating, score in zip(batch["transcript"], batch["rating"], batch["min_harmlessness_score_transcript"]):
        messages, error = parse_transcript(text)
        error = f"transcript: {error}" if error else ""
        if not error and (rating is None or not 0 <= float(rating) <= 4):
            error = f"rating {rating!r} is not in [0, 4]"
        if not error and (score is None or not math.isfinite(float(score))):
            error = f"min_harmlessness_score_transcript {score!r} is not a number"
        ok = not error
        out["prompt"].append(messages[:-1] if ok else [])
        out["completion"].append(messages[-1]["content"] if ok else "")
        out["rating"].append(float(rating) if ok else 0.0)
        out["harmlessness"].append(float(score) if ok else 0.0)
        out["error"].append(error)
    return out


# The 6 QA-feedback comparisons, in the file's order: (first, second) prediction numbers.
QA_COMPARISONS = ((1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4))


def qa_prompt(question: str, passages: list[list[str]]) -> str:
    """One user message: the passages as context, then the question (docs/DATASETS.md, ours).

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


def _parse_qa(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
    out: dict[str, list] = {k: [] for k in ("prompt", "predictions", "corrected", "num_errors", "preference", "error")}
    out["source_index"] = indices
    for k, question in enumerate(batch["question"]):
        feedback = batch["feedback"][k] or {}
        predictions = [(batch[f"prediction {j}"][k] or "").strip() for j in (1, 2, 3, 4)]
        preference = batch["preference"][k]
        error = ""
        if not (question or "").strip():
            error = "empty question"
        elif not isinstance(preference, list) or len(preference) != 6 or any(p not in (0, 1, 2) for p in preference):
            error = f"preference {preference!r} is not 6 codes in {{0, 1, 2}}"
        elif not all(predictions):
            error = f"prediction {predictions.index('') + 1} is empty"
        ok = not error
        out["prompt"].append([{"role": "user", "content": qa_prompt(question, batch["passages"][k])}] if ok else [])
        out["predictions"].append(predictions if ok else [])
        out["corrected"].append((feedback.get("corrected-prediction") or "").strip() if ok else "")
        out["num_errors"].append(len(feedback.get("errors") or []) if ok else 0)
        out["preference"].append(list(preference) if ok else [])
        out["error"].append(error)
    return out


_PARSE_FEATURES = {
    "hh": datasets.Features(
        {
            "prompt": _MESSAGES,
            "chosen": datasets.Value("string"),
            "rejected": datasets.Value("string"),
            "error": datasets.Value("string"),
            "source_index": datasets.Value("int64"),
        }
    ),
    "red_team": datasets.Features(
        {
            "prompt": _MESSAGES,
            "completion": datasets.Value("string"),
            "rating": datasets.Value("float64"),
            "harmlessness": datasets.Value("float64"),
            "error": datasets.Value("string"),
            "source_index": datasets.Value("int64"),
        }
    ),
    "qa_feedback": datasets.Features(
        {
            "prompt": _MESSAGES,
            "predictions": [datasets.Value("string")],
            "corrected": datasets.Value("string"),
            "num_errors": datasets.Value("int64"),
            "preference": [datasets.Value("int64")],
            "error": datasets.Value("string"),
            "source_index": datasets.Value("int64"),
        }
    ),
}
_PARSERS = {"hh": _parse_hh, "golden_hh": _parse_hh, "red_team": _parse_red_team, "qa_feedback": _parse_qa}
_PARSE_FEATURES["golden_hh"] = _PARSE_FEATURES["hh"]


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
    """QA-feedback (docs/DATASETS.md, ours). Empty corrected-predictions give no demonstration row."""
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
                if code:
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


def _keys(name: str, raw: datasets.Dataset) -> list[str]:
    if name == "qa_feedback":
        return [q.strip() for q in raw["question"]]
    column = "transcript" if name == "red_team" else "chosen"
    return [_prompt_key(t or "") for t in raw[column]]


def split_rows(name: str, split: str, raw: datasets.Dataset) -> list[int]:
    """Rows of the source file (read for this split) that form `split`, in file order."""
    if name == "red_team":
        keys = _keys(name, raw)
        held = grouped_holdout(keys, min(RED_TEAM_TEST_SIZE, round(len(keys) / 5)))
        if split == "train":
            return [i for i, h in enumerate(held) if not h]
        pool = [i for i, h in enumerate(held) if h]
    else:
        if split in ("train", "test"):
            return list(range(len(raw)))
        pool = list(range(len(raw)))
        keys = _keys(name, raw)
    if split == "test":
        return pool
    test_share, pool_size = SOURCES[name].mini_test
    mini = grouped_holdout([keys[i] for i in pool], round(len(pool) * test_share / pool_size))
    return [i for i, m in zip(pool, mini) if m == (split == "mini_test")]


# --------------------------------------------------------------------------------------------- load
def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The local root to read: `data_dir`, else $ULMA_DATA_DIR, else None (the hub). ``fixtures`` = tests/fixtures."""
    value = data_dir if data_dir is not None else os.environ.get(ENV_VAR) or None
    if value is None:
        return None
    return FIXTURES_DIR if str(value) == "fixtures" else Path(value).expanduser()


def source_location(name: str, split: str, data_dir: str | os.PathLike | None = None) -> str:
    """The local path or URL that `load(name, ..., split)` reads."""
    file_split = "train" if split == "train" else "test"
    root = resolve_data_dir(data_dir)
    if root is None:
        return SOURCES[name].remote[file_split]
    return str(root / SOURCES[name].files[file_split])


def _read(name: str, split: str, data_dir) -> tuple[datasets.Dataset, str]:
    location = source_location(name, split, data_dir)
    if resolve_data_dir(data_dir) is not None:
        if not Path(location).is_file():
            raise FileNotFoundError(
                f"{name} {split}: no file {location} (the local root comes from the data_dir argument, else "
                f"${ENV_VAR}). Put a copy there laid out like the hub, or leave both unset to read "
                f"{SOURCES[name].remote['train' if split == 'train' else 'test']}."
            )
        return datasets.load_dataset("json", data_files=location, split="train"), location
    try:
        return datasets.load_dataset("json", data_files=location, split="train"), location
    except Exception as err:  # offline, or the remote moved: say what to do instead
        raise ConnectionError(
            f"{name} {split}: could not read {location} ({type(err).__name__}: {err}). Without network, "
            f"point data_dir or ${ENV_VAR} at a local copy laid out as {SOURCES[name].files['test']}."
        ) from err


# The datasets cache keys a `map` by the mapped function's own code, not by the helpers it calls
# (`qa_prompt`, `parse_transcript`): fold this module's source into every fingerprint so that a changed
# parser never serves stale cached rows.
_SOURCE_HASH = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def _fingerprint(*parts: Any) -> str:
    return Hasher.hash((_SOURCE_HASH, *parts))


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


def load(
    name: str, view: str, split: str = "train", data_dir: str | os.PathLike | None = None, **options
) -> datasets.Dataset:
    """Load dataset `name` (hh | golden_hh | red_team | qa_feedback) as `view` (sft | pairwise | pointwise).

    Options: ``on_bad_row`` ("raise" (default) | "skip") for every dataset; ``labels`` ("binary" |
    "continuous") for qa_feedback; ``label_source`` ("rating" | "harmlessness") for red_team.
    Raises ValueError for an unknown name, view, split or option, FileNotFoundError for a missing local
    file, ConnectionError when the hub cannot be read, BadRowError on a malformed example.
    """
    global _LAST_REPORT
    opts = _check(name, view, split, options)
    raw, location = _read(name, split, data_dir)
    rows = split_rows(name, split, raw)
    if len(rows) != len(raw):
        raw = raw.select(rows)
    parsed = raw.map(
        _PARSERS[name],
        batched=True,
        with_indices=True,
        remove_columns=raw.column_names,
        features=_PARSE_FEATURES[name],
        desc=f"parse {name} {split}",
        new_fingerprint=_fingerprint(raw._fingerprint, name, "parse"),
    )
    report = LoadReport(name, view, split, location, opts["on_bad_row"], num_examples=len(parsed))
    errors = parsed["error"]
    bad = [i for i, e in enumerate(errors) if e]
    report.num_bad = len(bad)
    report.bad = [BadRow(i, rows[i], errors[i]) for i in bad[:MAX_REPORTED]]
    _LAST_REPORT = report
    if bad and opts["on_bad_row"] == "raise":
        raise BadRowError(report)
    if bad:
        parsed = parsed.filter(lambda e: not e, input_columns="error", desc="drop malformed rows")
        logger.warning("%s %s: skipped %d malformed examples, e.g. row %d: %s", name, split, len(bad), bad[0], errors[bad[0]])
    if name == "qa_feedback" and view != "pairwise":
        report.num_empty_dropped = sum(not c for c in parsed["corrected"])
    if name in ("hh", "golden_hh"):
        fn, kwargs = _hh_view, {"view": view}
    elif name == "red_team":
        fn, kwargs = _red_team_view, {"view": view, "label_source": opts["label_source"]}
    else:
        fn, kwargs = _qa_view, {"view": view, "labels": opts["labels"]}
    out = parsed.map(
        fn,
        batched=True,
        fn_kwargs=kwargs,
        remove_columns=parsed.column_names,
        features=VIEW_FEATURES[view],
        desc=f"{name} {view}",
        new_fingerprint=_fingerprint(parsed._fingerprint, name, view, kwargs),
    )
    report.num_rows = len(out)
    return out
