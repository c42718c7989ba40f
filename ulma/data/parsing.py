"""Raw rows of the built-in sources -> checked, normalized records -> the three views.

Transcripts (HH, red-team) are split into chat messages; QA-feedback questions become one user message
with their passages. Each parser returns one record per raw example with an ``error`` column ("" when
fine, else ``"field 'F': what"`` or ``"malformed pair: what"``); the view functions then map the good
records into SFT, pairwise or point-wise rows.
"""
from __future__ import annotations

import math
import re

import datasets

from ulma.data.files import DataFileError, describe

VIEWS = ("sft", "pairwise", "pointwise")
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
