"""ulma.data: the four sources -> three views, on the project's fixtures and on the real data vendored under data/."""
from __future__ import annotations

import functools
import gzip
import hashlib
import json
import math
import os
import random
from pathlib import Path

import pytest

from ulma import data
from ulma.data import BadRowError, load, parse_transcript

FIXTURES = Path(__file__).parent / "fixtures"
REAL = os.environ.get("ULMA_DATA_DIR") or str(data.BUNDLED_DIR)  # the vendored mini data by default


def _fixture_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MF = _fixture_module()


@functools.lru_cache(maxsize=None)
def fx(name, view, split="test", **options):
    """A fixture view with malformed rows skipped (cached: the tests only read it)."""
    options.setdefault("on_bad_row", "skip")
    return load(name, view, split=split, data_dir=FIXTURES, **options)


def raw_qa(split):
    return json.loads((FIXTURES / f"qa-feedback/{split}_feedback.json").read_text())


def raw_hh(split):
    with gzip.open(FIXTURES / f"hh-rlhf/harmless-base/{split}.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f]


# ---------------------------------------------------------------------------------------- transcripts
def test_parse_transcript_multi_turn_and_inline_markers():
    text = "\n\nHuman: hi\n\nAssistant:  hello\n\nHuman: say Human: x\n\nAssistant: ok Assistant: y"
    messages, error = parse_transcript(text)
    assert error is None
    assert messages == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},  # stripped like the released code
        {"role": "user", "content": "say Human: x"},  # a marker without a blank line before it is text
        {"role": "assistant", "content": "ok Assistant: y"},
    ]


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty transcript"),
        ("\n\nHuman: a\n\nAssistant: b\n\nAssistant: c", "turn 2 is a second Assistant turn"),
        ("\n\nAssistant: b\n\nHuman: a\n\nAssistant: c", "turn 0 is a second Assistant turn"),
        ("\n\nHuman: a\n\nAssistant: b\n\nHuman: c", "no final Assistant turn"),
        ("\n\nHuman: a\n\nAssistant: ", "the final Assistant turn is empty"),
        ("\n\nHuman: \n\nAssistant: b", "turn 0 is empty"),
        ("intro\n\nHuman: a\n\nAssistant: b", "text before the first Human turn"),
    ],
)
def test_parse_transcript_malformed(text, reason):
    assert reason in parse_transcript(text)[1]


# --------------------------------------------------------------------------------------------- HH
def test_hh_bad_rows_raise_on_request_naming_file_row_and_field():
    with pytest.raises(BadRowError) as info:
        load("hh", "pairwise", split="test", data_dir=FIXTURES, on_bad_row="raise")
    assert isinstance(info.value, ValueError)
    assert info.value.index == 3 and "final Assistant turn is empty" in info.value.reason
    assert str(info.value).startswith("tests/fixtures/hh-rlhf/harmless-base/test.jsonl.gz row 3 (0-based; line 4), "
                                      "field 'chosen': the final Assistant turn is empty")
    assert "6 of 30 examples are malformed" in str(info.value) and "on_bad_row='skip'" in str(info.value)
    assert (info.value.file, info.value.row, info.value.field) == ("tests/fixtures/hh-rlhf/harmless-base/test.jsonl.gz", 3, "chosen")
    report = data.last_report()
    assert report.num_bad == len(MF.HH_BAD["test"]) == 6
    assert [b.index for b in report.bad] == sorted(MF.HH_BAD["test"])


def test_hh_skip_reports_every_kind_of_malformed_row():
    load("hh", "sft", split="test", data_dir=FIXTURES, on_bad_row="skip")
    report = data.last_report()
    reasons = {b.index: b.reason for b in report.bad}
    assert report.num_examples == 30 and report.num_bad == 6 and report.num_rows == 24
    assert "field 'chosen': the final Assistant turn is empty" == reasons[3]
    assert "differ before the final reply" in reasons[9]
    assert "do not alternate" in reasons[14]
    assert "no final Assistant turn" in reasons[20]
    assert "field 'chosen': empty transcript" in reasons[25]
    assert reasons[28] == "field 'rejected': text before the first Human turn"
    assert "30 examples, 6 malformed (skip), 24 sft rows" in str(report)


def test_hh_views_agree():
    pairs, points, sft = fx("hh", "pairwise"), fx("hh", "pointwise"), fx("hh", "sft")
    assert (len(pairs), len(points), len(sft)) == (24, 48, 24)  # 30 pairs - 6 malformed
    good = [i for i in range(30) if i not in MF.HH_BAD["test"]]
    assert list(pairs["source_index"]) == good
    for k in (0, 7, 23):
        pair = pairs[k]
        chosen, rejected = points[2 * k], points[2 * k + 1]
        assert chosen["prompt"] == rejected["prompt"] == pair["prompt"] == sft[k]["prompt"]
        assert (chosen["completion"], chosen["label"]) == (pair["chosen"], 1.0)
        assert (rejected["completion"], rejected["label"]) == (pair["rejected"], 0.0)
        assert sft[k]["completion"] == pair["chosen"]
        assert pair["prompt"][-1]["role"] == "user"
        assert [m["role"] for m in pair["prompt"]] == ["user", "assistant"] * (len(pair["prompt"]) // 2) + ["user"]
    raw = raw_hh("test")[MF.HH_INLINE_MARKER_ROW]
    assert pairs[MF.HH_INLINE_MARKER_ROW]["chosen"].endswith("like Human: hello, but I'll answer plainly.")
    assert raw["chosen"].endswith(pairs[MF.HH_INLINE_MARKER_ROW]["chosen"])


def test_view_schemas():
    assert set(fx("hh", "pairwise").column_names) == {"prompt", "chosen", "rejected", "source_index"}
    assert set(fx("hh", "pointwise").column_names) == {"prompt", "completion", "label", "source_index"}
    assert set(fx("qa_feedback", "sft").column_names) == {"prompt", "completion", "source_index"}
    assert fx("red_team", "pointwise").features["label"].dtype == "float64"


def test_golden_hh_has_rewritten_chosen_and_the_same_prompts():
    golden, hh = fx("golden_hh", "pairwise", "train"), fx("hh", "pairwise", "train")
    assert len(golden) == len(hh) == 28  # 32 - 4 malformed
    assert golden["prompt"][:] == hh["prompt"][:] and golden["rejected"][:] == hh["rejected"][:]
    assert all(c.startswith("(Rewritten) ") for c in golden["chosen"])
    assert len(fx("golden_hh", "pointwise", "train")) == 56


# --------------------------------------------------------------------------------------- red team
def test_red_team_labels_and_sft():
    rows = fx("red_team", "pointwise", "train")
    raw = json.loads(gzip.open(FIXTURES / "hh-rlhf/red-team-attempts/red_team_attempts.jsonl.gz", "rt").read())
    report = data.last_report()
    assert (report.num_examples, report.num_bad, len(rows)) == (40, 2, 38)  # 50 transcripts, 10 held out for test
    by_prompt = {}  # red-team prompts are unique per transcript
    for r in raw:
        messages, error = parse_transcript(r["transcript"])
        if error is None:
            by_prompt[json.dumps(messages[:-1])] = r
    for row in rows:
        assert row["label"] == 1 - by_prompt[json.dumps(row["prompt"])]["rating"] / 4
    harmless = fx("red_team", "pointwise", "train", label_source="harmlessness")
    for row in harmless:
        score = by_prompt[json.dumps(row["prompt"])]["min_harmlessness_score_transcript"]
        assert row["label"] == pytest.approx(1 / (1 + math.exp(-score)))
    sft = fx("red_team", "sft", "train")
    assert len(sft) == sum(r["label"] == 1.0 for r in rows) == 9  # rating 0 only
    assert data.harmlessness_label(0.0) == 0.5 and data.harmlessness_label(-800.0) == 0.0


def test_red_team_has_no_pairwise_view():
    with pytest.raises(ValueError, match="no pairwise view") as info:
        load("red_team", "pairwise", data_dir=FIXTURES)
    assert "unique per transcript" in str(info.value) and "point-wise" in str(info.value)


def test_red_team_splits_partition_the_file():
    train, test = fx("red_team", "pointwise", "train"), fx("red_team", "pointwise", "test")
    mini_train, mini_test = fx("red_team", "pointwise", "mini_train"), fx("red_team", "pointwise", "mini_test")
    prompts = lambda ds: {json.dumps(p) for p in ds["prompt"]}  # noqa: E731
    assert (len(train), len(test), len(mini_train), len(mini_test)) == (38, 10, 9, 1)
    assert not prompts(train) & prompts(test)
    assert prompts(mini_train) | prompts(mini_test) == prompts(test)


# ------------------------------------------------------------------------------------ QA-feedback
def test_qa_prompt_holds_question_and_passages():
    prompt = data.qa_prompt("Who won?", [["T", "T\n\nFirst  sentence.", "Second."], ["U", "Other."]])
    assert prompt == "Context:\n[1] T: First sentence. Second.\n[2] U: Other.\n\nQuestion: Who won?"
    assert data.qa_prompt(" Who? ", []) == "Who?"


def test_borda_worked_example():
    # 1v2 tie, 1v3 first, 1v4 second, 2v3 first, 2v4 tie, 3v4 second (the real dev set's first question)
    assert data.borda_scores([0, 1, 2, 1, 0, 2]) == pytest.approx([1.5 / 3, 2 / 3, 0.0, 2.5 / 3])
    assert data.borda_scores([0] * 6) == [0.5] * 4


def _good_qa(split):
    return [(i, q) for i, q in enumerate(raw_qa(split)) if i not in MF.QA_BAD[split]]


def test_qa_views_from_the_raw_fields():
    good = _good_qa("dev")
    assert len(good) == 19  # 20 questions, one with preference code 3
    with_correction = [(i, q) for i, q in good if q["feedback"]["corrected-prediction"]]
    sft, binary = fx("qa_feedback", "sft"), fx("qa_feedback", "pointwise")
    continuous, pairs = fx("qa_feedback", "pointwise", labels="continuous"), fx("qa_feedback", "pairwise")
    assert data.last_report().num_bad == 1
    assert len(sft) == len(with_correction) == 17
    assert sft["completion"][:] == [q["feedback"]["corrected-prediction"] for _, q in with_correction]
    negatives = [q for _, q in good if q["feedback"]["errors"]]
    assert len(binary) == 17 + len(negatives) == 35
    assert sorted(binary["label"]) == [0.0] * len(negatives) + [1.0] * 17
    assert {r["completion"] for r in binary if r["label"] == 0.0} == {q["prediction 1"] for q in negatives}
    assert len(continuous) == 17 + 4 * 19
    expected_pairs = sum(code != 0 for _, q in good for code in q["preference"])
    assert len(pairs) == expected_pairs == 64
    # the first good question, worked by hand from its codes
    index, q = good[0]
    rows = [r for r in pairs if r["source_index"] == index]
    wanted = []
    for (a, b), code in zip(data.QA_COMPARISONS, q["preference"]):
        if code:
            win, lose = (a, b) if code == 1 else (b, a)
            wanted.append((q[f"prediction {win}"], q[f"prediction {lose}"]))
    assert [(r["chosen"], r["rejected"]) for r in rows] == wanted
    scores = [r["label"] for r in continuous if r["source_index"] == index][-4:]
    assert scores == pytest.approx(data.borda_scores(q["preference"]))
    assert binary[0]["prompt"] == [{"role": "user", "content": q["question"]}]  # question 0 has no passages
    q1 = raw_qa("dev")[1]
    title, first = q1["passages"][0][:2]
    assert sft[1]["prompt"][0]["content"] == f"Context:\n[1] {title}: {first[len(title) + 2:]} {q1['passages'][0][2]}\n\nQuestion: {q1['question']}"


def test_qa_empty_corrections_are_counted_not_errors():
    fx.cache_clear()
    fx("qa_feedback", "sft")
    report = data.last_report()
    assert report.num_empty_dropped == len(MF.QA_EMPTY_CORRECTED["dev"]) == 2
    assert "2 empty completions dropped" in str(report)


def test_qa_bad_row_raises():
    with pytest.raises(BadRowError, match=r"train_feedback.json row 5 \(0-based\), field 'preference': .* is not 6 codes"):
        load("qa_feedback", "pairwise", split="train", data_dir=FIXTURES, on_bad_row="raise")


# ------------------------------------------------------------------------------------------- mini
@pytest.mark.parametrize("name, sizes", [("hh", (26, 4)), ("golden_hh", (26, 4)), ("qa_feedback", (16, 4))])
def test_mini_split_divides_test_by_prompt(name, sizes):
    test = fx(name, "sft", "test")
    full = data.last_report().num_examples
    parts = []
    for split in ("mini_train", "mini_test"):
        fx(name, "sft", split)
        parts.append(data.last_report().num_examples)
    assert tuple(parts) == sizes and sum(parts) == full
    prompts = {s: [json.dumps(p) for p in fx(name, "pairwise", s)["prompt"]] for s in ("mini_train", "mini_test")}
    assert not set(prompts["mini_train"]) & set(prompts["mini_test"])
    assert sorted(prompts["mini_train"] + prompts["mini_test"]) == sorted(json.dumps(p) for p in fx(name, "pairwise", "test")["prompt"])
    assert len(test) > 0


def test_mini_keeps_duplicate_prompts_together():
    # fixture test rows 5 & 6 share a prompt, and so do 11, 12 & 13
    keys = [data._prompt_key(r["chosen"]) for r in raw_hh("test")]
    assert keys[5] == keys[6] and keys[11] == keys[12] == keys[13]
    test_keys = {data._prompt_key(r["chosen"]) for i, r in enumerate(raw_hh("test")) if i in set(data.split_rows("hh", "mini_test", _raw("hh")))}
    assert (keys[5] in test_keys) == (keys[6] in test_keys)
    assert (keys[11] in test_keys) == (keys[13] in test_keys)


def _raw(name):
    import datasets

    return datasets.load_dataset("json", data_files=data.source_location(name, "test", FIXTURES), split="train")


def test_grouped_holdout_depends_only_on_content():
    rng = random.Random(0)
    keys = [f"prompt {rng.randrange(60)}" for _ in range(100)]
    held = data.grouped_holdout(keys, 20)
    assert sum(held) == 20
    assert not {k for k, h in zip(keys, held) if h} & {k for k, h in zip(keys, held) if not h}
    shuffled = keys[:]
    rng.shuffle(shuffled)
    held_shuffled = data.grouped_holdout(shuffled, 20)
    assert {k for k, h in zip(keys, held) if h} == {k for k, h in zip(shuffled, held_shuffled) if h}
    assert data.grouped_holdout(keys, 20, seed=1) != held


# ------------------------------------------------------------------------------- arguments, sources
@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (("hhh", "sft"), {}, r"unknown dataset 'hhh'; valid: \['golden_hh', 'hh', 'qa_feedback', 'red_team'\]"),
        (("hh", "pairs"), {}, r"unknown view 'pairs'; valid: \['sft', 'pairwise', 'pointwise'\]"),
        (("hh", "sft", "dev"), {}, r"unknown split 'dev'; valid: \['train', 'test', 'mini_train', 'mini_test', 'mini_valid'\]"),
        (("hh", "sft"), {"labels": "binary"}, r"do not apply to hh; its options: \['on_bad_row'\]"),
        (("qa_feedback", "sft"), {"labels": "soft"}, r"labels='soft' is not one of \['binary', 'continuous'\]"),
        (("hh", "sft"), {"on_bad_row": "ignore"}, r"is not one of \['skip', 'raise'\]"),
    ],
)
def test_invalid_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load(*args, data_dir=FIXTURES, **kwargs)


def test_missing_local_file_names_path_and_env_var(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load("hh", "sft", split="train", data_dir=tmp_path)
    assert str(tmp_path / "hh-rlhf/harmless-base/train.jsonl.gz") in str(info.value)
    assert "ULMA_DATA_DIR" in str(info.value)


def test_source_locations(monkeypatch, tmp_path):
    monkeypatch.delenv("ULMA_DATA_DIR", raising=False)
    # the repository's data/ holds the mini data: read it, not the hub
    assert data.locate("hh", "mini_train") == ("bundled", str(data.BUNDLED_DIR / "hh-rlhf/harmless-base/test.jsonl.gz"))
    assert data.locate("qa_feedback", "test") == ("bundled", str(data.BUNDLED_DIR / "qa-feedback/dev_feedback.json.gz"))
    # what it does not hold comes from the hub
    assert data.source_location("hh", "train") == "hf://datasets/Anthropic/hh-rlhf/harmless-base/train.jsonl.gz"
    assert data.source_location("golden_hh", "train") == (
        "hf://datasets/Unified-Language-Model-Alignment/Anthropic_HH_Golden/hh_golden/train.jsonl"
    )
    assert data.source_location("qa_feedback", "train") == (
        "https://raw.githubusercontent.com/allenai/FineGrainedRLHF/main/tasks/qa_feedback/data/train_feedback.json"
    )
    assert data.source_location("red_team", "test", "hub").endswith("hh-rlhf/red-team-attempts/red_team_attempts.jsonl.gz")
    assert data.source_location("hh", "test", "hub") == "hf://datasets/Anthropic/hh-rlhf/harmless-base/test.jsonl.gz"
    monkeypatch.setenv("ULMA_DATA_DIR", str(tmp_path))
    assert data.source_location("qa_feedback", "train") == str(tmp_path / "qa-feedback/train_feedback.json")
    assert data.locate("hh", "test") == ("local", str(tmp_path / "hh-rlhf/harmless-base/test.jsonl.gz"))
    (tmp_path / "qa-feedback").mkdir()
    (tmp_path / "qa-feedback/dev_feedback.json.gz").write_bytes(b"")
    assert data.source_location("qa_feedback", "test") == str(tmp_path / "qa-feedback/dev_feedback.json.gz")  # a .gz copy
    assert data.locate("hh", "test", "fixtures") == ("fixtures", str(FIXTURES / "hh-rlhf/harmless-base/test.jsonl.gz"))
    assert data.source_location("golden_hh", "test", "/x") == "/x/hh-golden/hh_golden/test.jsonl"


def test_resolve_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("ULMA_DATA_DIR", raising=False)
    assert data.resolve_data_dir() is None and data.resolve_data_dir(None, None) is None
    assert data.resolve_data_dir(None, "fixtures") == FIXTURES.resolve()
    assert data.resolve_data_dir(None, "hub") == "hub" and data.resolve_data_dir("bundled") == "bundled"
    monkeypatch.setenv("ULMA_DATA_DIR", str(tmp_path))
    assert data.resolve_data_dir(None, "fixtures") == tmp_path  # the variable beats the profile
    assert data.resolve_data_dir("fixtures", "hub") == FIXTURES.resolve()  # the argument beats both
    monkeypatch.setenv("ULMA_DATA_DIR", "")
    assert data.resolve_data_dir(None, "hub") == "hub"  # an empty variable is unset


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test (and is recorded)."""
    import socket

    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError(f"test: network access to {address} refused")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(None, address))
    monkeypatch.delenv("ULMA_DATA_DIR", raising=False)
    return attempts


def test_mini_data_loads_without_network(no_network):
    """The mini profile's data (HH and QA-feedback, every split it uses) comes from the repository."""
    for name, view in (("hh", "pointwise"), ("hh", "pairwise"), ("qa_feedback", "sft"), ("qa_feedback", "pointwise")):
        for split in ("mini_train", "mini_test", "test"):
            assert len(load(name, view, split)) > 0
            assert data.last_report().source.startswith("data/")
    assert data.source_fingerprint("hh", "mini_train")["origin"] == "bundled"
    assert no_network == []


def test_hub_unreachable_says_where_a_local_copy_goes(no_network):
    with pytest.raises(ConnectionError, match="hh_golden/test.jsonl .*ULMA_DATA_DIR at a local copy laid out as hh-golden"):
        load("golden_hh", "sft", split="test")
    assert no_network  # it did try the hub, and only because data/ does not hold Golden HH


def test_fixtures_regenerate_byte_for_byte(tmp_path):
    for path in MF.write_all(tmp_path):
        rel = path.relative_to(tmp_path)
        assert path.read_bytes() == (FIXTURES / rel).read_bytes(), f"{rel} differs: rerun make_fixtures.py"


# ------------------------------------------------------------------------------------- real copies
# The repository's data/ holds HH harmless-base test and QA-feedback dev; $ULMA_DATA_DIR may point at
# another copy of them (the same bytes: the numbers below hold for both).
def _real(name, split="test"):
    location = data.source_location(name, split, REAL)
    if not Path(location).is_file():
        pytest.skip(f"no {location}")
    return location


def _real_raw(name):
    from ulma.data.files import read_records

    records, _ = read_records(_real(name))
    return {k: [r[k] for r in records] for k in data.SOURCES[name].fields}


# the 13 malformed pairs of HH harmless-base test (docs/DATASETS.md explains each kind)
HH_TEST_BAD = {
    86: "field 'chosen': the final Assistant turn is empty",
    516: "field 'chosen': the final Assistant turn is empty",
    925: "field 'chosen': the final Assistant turn is empty",
    1103: "field 'chosen': the final Assistant turn is empty",
    667: "field 'chosen': turns do not alternate",  # a second Assistant turn inside the shared dialogue
    763: "field 'chosen': turns do not alternate",
    1319: "field 'chosen': turns do not alternate",
    1849: "field 'chosen': turns do not alternate",
    1254: "field 'chosen': turns do not alternate",  # the extra Assistant turn is in one side's final reply
    1688: "field 'chosen': turns do not alternate",
    1952: "field 'chosen': turns do not alternate",
    2036: "field 'chosen': turns do not alternate",
    1950: "field 'rejected': turns do not alternate",
}


@pytest.mark.real_data
def test_real_hh_test():
    _real("hh")
    with pytest.raises(BadRowError, match=r"row 86 \(0-based; line 87\), field 'chosen': the final Assistant turn is "
                                          r"empty .*13 of 2312"):
        load("hh", "pointwise", split="test", data_dir=REAL, on_bad_row="raise")
    points = load("hh", "pointwise", split="test", data_dir=REAL)  # skipping is the default
    report = data.last_report()
    assert (report.num_examples, report.num_bad, len(points)) == (2312, 13, 2 * 2299)
    assert report.num_bad > len(report.bad) == data.MAX_REPORTED
    raw = _real_raw("hh")
    parsed = data._parse_hh(raw, range(len(raw["chosen"])))
    found = {i: e for i, e in enumerate(parsed["error"]) if e}
    assert set(found) == set(HH_TEST_BAD)
    assert all(found[i].startswith(reason) for i, reason in HH_TEST_BAD.items())
    assert sum(points["label"]) == 2299


@pytest.mark.real_data
def test_real_hh_mini_split():
    _real("hh")
    train = load("hh", "pairwise", split="mini_train", data_dir=REAL)
    assert (data.last_report().num_examples, data.last_report().num_bad, len(train)) == (2000, 12, 1988)
    test = load("hh", "pairwise", split="mini_test", data_dir=REAL)
    assert (data.last_report().num_examples, data.last_report().num_bad, len(test)) == (312, 1, 311)
    assert not {json.dumps(p) for p in train["prompt"]} & {json.dumps(p) for p in test["prompt"]}
    # pinned: the same pairs on every machine, from the hub or a local copy (rows of test.jsonl.gz)
    rows = data.split_rows("hh", "mini_test", _real_raw("hh"))
    assert (len(rows), rows[:8], sum(rows)) == (312, [9, 20, 33, 34, 37, 38, 43, 56], 370563)


@pytest.mark.real_data
def test_real_qa_feedback_dev():
    _real("qa_feedback")
    sizes = {
        "sft": len(load("qa_feedback", "sft", split="test", data_dir=REAL)),
        "binary": len(load("qa_feedback", "pointwise", split="test", data_dir=REAL)),
        "continuous": len(load("qa_feedback", "pointwise", split="test", data_dir=REAL, labels="continuous")),
        "pairwise": len(load("qa_feedback", "pairwise", split="test", data_dir=REAL)),
    }
    # 500 questions, none malformed; 13 empty corrected-predictions; 464 first predictions with an
    # error span; 3,000 comparisons of which 384 ties
    assert sizes == {"sft": 487, "binary": 487 + 464, "continuous": 487 + 4 * 500, "pairwise": 3000 - 384}
    assert data.last_report().num_bad == 0
    mini = {}
    for split in ("mini_train", "mini_test"):
        mini[split] = (len(load("qa_feedback", "sft", split=split, data_dir=REAL)), data.last_report().num_examples)
    assert mini == {"mini_train": (389, 400), "mini_test": (98, 100)}  # (demonstrations, questions)
    rows = data.split_rows("qa_feedback", "mini_test", _real_raw("qa_feedback"))
    assert (rows[:8], sum(rows)) == ([4, 7, 12, 17, 18, 19, 20, 22], 25909)


# -------------------------------------------------------------------------------------- vendored data
def test_vendored_data_matches_its_manifest():
    manifest = data.read_manifest()
    assert set(manifest["files"]) == {"hh-rlhf/harmless-base/test.jsonl.gz", "qa-feedback/dev_feedback.json.gz"}
    for relative, entry in manifest["files"].items():
        path = data.BUNDLED_DIR / relative
        raw = path.read_bytes()
        assert (len(raw), hashlib.sha256(raw).hexdigest()) == (entry["bytes"], entry["sha256"]), relative
        assert data.content_sha256(path) == entry["content_sha256"]
        assert (data.BUNDLED_DIR / entry["licence_file"]).read_text().strip()
        assert set(entry["upstream"]) >= {"repository", "path", "commit"}
        # the loader reads this very file for the source's split, and finds the manifest's row count
        assert data.locate(entry["source"], entry["split"], "bundled") == ("bundled", str(path))
        load(entry["source"], "sft", entry["split"], "bundled")
        assert data.last_report().num_examples == entry["rows"]
    readme = (data.BUNDLED_DIR / "README.md").read_text()
    assert all(relative in readme for relative in manifest["files"])


def test_source_fingerprint_is_portable_and_follows_content(tmp_path, monkeypatch):
    monkeypatch.delenv("ULMA_DATA_DIR", raising=False)
    bundled = data.source_fingerprint("qa_feedback", "mini_train")
    # the published plain JSON file's sha256 (the upstream copy), though data/ stores it gzipped
    assert bundled == {"source": "qa_feedback:qa-feedback/dev_feedback.json", "origin": "bundled",
                       "sha256": "f394289ecfdc5a2d1663170254b92d75ad3c53ba36df9f627c70d4c6fc4f3291"}
    # a plain copy elsewhere: same content, same sha256; no machine path anywhere in the description
    (tmp_path / "qa-feedback").mkdir()
    raw = gzip.decompress((data.BUNDLED_DIR / "qa-feedback/dev_feedback.json.gz").read_bytes())
    (tmp_path / "qa-feedback/dev_feedback.json").write_bytes(raw)
    copy = data.source_fingerprint("qa_feedback", "test", tmp_path)
    assert copy["sha256"] == bundled["sha256"] and copy["origin"] == "local"
    assert str(tmp_path) not in json.dumps(copy) and "/work" not in json.dumps(bundled)
    # changed data: another fingerprint
    (tmp_path / "qa-feedback/dev_feedback.json").write_bytes(raw.replace(b"Context", b"context", 1) + b" ")
    assert data.source_fingerprint("qa_feedback", "test", tmp_path)["sha256"] != bundled["sha256"]
    fixtures = data.source_fingerprint("hh", "train", "fixtures")
    assert fixtures["source"] == "hh:hh-rlhf/harmless-base/train.jsonl.gz" and fixtures["origin"] == "fixtures"
    own = tmp_path / "mine.jsonl"
    own.write_text('{"prompt": "p", "completion": "c"}\n')
    assert data.source_fingerprint(own) == {"source": "mine.jsonl", "origin": "local",
                                            "sha256": hashlib.sha256(own.read_bytes()).hexdigest()}


def test_bundled_root_never_reaches_the_hub(no_network):
    with pytest.raises(data.DataFileNotFoundError, match=r"golden_hh test: no file data/hh-golden/hh_golden/test.jsonl "
                                                          r"\(the repository's data/ holds only the mini data"):
        load("golden_hh", "sft", "test", "bundled")
    assert no_network == []
