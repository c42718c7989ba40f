"""A user's own data in TRL's standard formats: files, folders, hub ids -> the project's views."""
from __future__ import annotations

import gzip
import json

import datasets
import pytest

from ulma import data
from ulma.batching import tokenize_dataset
from ulma.data import BadRowError, DataFileNotFoundError, load

SYSTEM = {"role": "system", "content": "Be brief."}


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


PREFERENCE = [
    {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."},
    {"prompt": "2 + 2?", "chosen": "4", "rejected": "5"},
    {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."},
]


def test_preference_plain_text_gives_every_view(tmp_path):
    path = write_jsonl(tmp_path / "prefs.jsonl", PREFERENCE)
    pairs = load(path, "pairwise")
    assert pairs[:] == {"prompt": [[user(r["prompt"])] for r in PREFERENCE], "chosen": ["Paris.", "4", "Hi!"],
                        "rejected": ["Lyon.", "5", "No."], "source_index": [0, 1, 2]}
    points = load(path, "pointwise")  # as for HH: row 2i the chosen (1.0), row 2i+1 the rejected (0.0)
    assert points["completion"] == ["Paris.", "Lyon.", "4", "5", "Hi!", "No."]
    assert points["label"] == [1.0, 0.0] * 3 and points["source_index"] == [0, 0, 1, 1, 2, 2]
    assert load(path, "sft")["completion"] == ["Paris.", "4", "Hi!"]
    report = data.last_report()
    assert (report.num_examples, report.num_bad, report.num_rows) == (3, 0, 3)
    assert pairs.features == data.VIEW_FEATURES["pairwise"]  # the same schema as the built-in sources


def test_preference_conversational_json_array(tmp_path):
    rows = [{"prompt": [SYSTEM, user("Hi"), assistant("Hello"), user("Capital of France?")],
             "chosen": [assistant("Paris.")], "rejected": [assistant("Lyon.")]}]
    path = tmp_path / "conv.json"
    path.write_text(json.dumps(rows))
    pairs = load(path, "pairwise")
    assert pairs[0]["prompt"] == rows[0]["prompt"] and (pairs[0]["chosen"], pairs[0]["rejected"]) == ("Paris.", "Lyon.")


def test_implicit_prompt_conversational_and_hh_text(tmp_path):
    rows = [
        {"chosen": [user("Q?"), assistant("good")], "rejected": [user("Q?"), assistant("bad")]},
        {"chosen": "\n\nHuman: Q2?\n\nAssistant: yes", "rejected": "\n\nHuman: Q2?\n\nAssistant: no"},  # HH style
    ]
    pairs = load(write_jsonl(tmp_path / "implicit.jsonl", rows), "pairwise")
    assert pairs["prompt"] == [[user("Q?")], [user("Q2?")]]
    assert pairs["chosen"] == ["good", "yes"] and pairs["rejected"] == ["bad", "no"]


def test_unpaired_bool_labels(tmp_path):
    rows = [{"prompt": "a?", "completion": "right", "label": True},
            {"prompt": "b?", "completion": "wrong", "label": False},
            {"prompt": [user("c?")], "completion": [assistant("also right")], "label": True}]
    path = write_jsonl(tmp_path / "kto.jsonl", rows)
    points = load(path, "pointwise")
    assert points["label"] == [1.0, 0.0, 1.0] and points["completion"] == ["right", "wrong", "also right"]
    sft = load(path, "sft")  # the positives
    assert sft["completion"] == ["right", "also right"] and sft["source_index"] == [0, 2]
    with pytest.raises(ValueError, match="kto.jsonl: unpaired data has no pairwise view"):
        load(path, "pairwise")


def test_unpaired_continuous_labels_parquet(tmp_path):
    rows = [{"prompt": "q", "completion": c, "label": z} for c, z in (("best", 1.0), ("ok", 0.75), ("poor", 0.25), ("bad", 0.0))]
    path = tmp_path / "scores.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    points = load(path, "pointwise")
    assert points["label"] == [1.0, 0.75, 0.25, 0.0]
    assert load(path, "sft")["completion"] == ["best"]  # only label 1 is a demonstration


def test_prompt_completion_is_sft_only_and_gzip_is_read(tmp_path):
    path = tmp_path / "demos.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"prompt": "p", "completion": "c"}\n{"prompt": "q", "completion": "d"}\n'))
    assert load(path, "sft")["completion"] == ["c", "d"]
    with pytest.raises(ValueError, match="no labels, so no point-wise view"):
        load(path, "pointwise")


def test_folder_splits(tmp_path):
    folder = tmp_path / "mydata"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", PREFERENCE[:2])
    write_jsonl(folder / "test.jsonl", PREFERENCE[2:])
    assert load(folder, "pairwise", "train")["chosen"] == ["Paris.", "4"]
    assert load(folder, "pairwise", "test")["chosen"] == ["Hi!"]
    # the built-in profiles' mini splits read a user's train / test
    assert load(folder, "pairwise", "mini_train")["chosen"] == ["Paris.", "4"]
    assert load(folder, "pairwise", "mini_test")["chosen"] == ["Hi!"]
    with pytest.raises(ValueError, match=r"no file for split 'validation' \(files are named for \['test', 'train'\]\)"):
        load(folder, "pairwise", "validation")
    plain = tmp_path / "plain"
    plain.mkdir()
    write_jsonl(plain / "part-a.jsonl", PREFERENCE[:1])
    write_jsonl(plain / "part-b.jsonl", PREFERENCE[1:])
    assert len(load(plain, "pairwise")) == 3  # no split names: the whole folder is train
    with pytest.raises(ValueError, match="no 'test' split"):
        load(plain, "pairwise", "test")
    with pytest.raises(ValueError, match="is one file: it is the train split"):
        load(folder / "train.jsonl", "pairwise", "test")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataFileNotFoundError, match="no data files"):
        load(empty, "pairwise")


def test_bad_row_in_a_folder_names_its_file(tmp_path):
    folder = tmp_path / "mydata"
    folder.mkdir()
    write_jsonl(folder / "train-0.jsonl", PREFERENCE)
    write_jsonl(folder / "train-1.jsonl", [PREFERENCE[0], {"prompt": "p", "chosen": "a"}])
    with pytest.raises(BadRowError) as info:
        load(folder, "pairwise")
    assert "train-1.jsonl row 1 (0-based; line 2), field 'rejected': missing" in str(info.value)
    assert info.value.index == 4 and info.value.row == 1 and info.value.field == "rejected"
    rows = load(folder, "pairwise", on_bad_row="skip")
    assert rows["source_index"] == [0, 1, 2, 3]


def test_hub_id_is_read_with_datasets_and_checked(monkeypatch):
    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        return datasets.Dataset.from_list([{"prompt": "p", "completion": "c", "label": 1},
                                           {"prompt": "p", "completion": "d", "label": 3}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    with pytest.raises(BadRowError, match=r"someone/prefs \[train\] row 1 \(0-based\), field 'label'"):
        load("someone/prefs", "pointwise")
    assert load("someone/prefs", "pointwise", on_bad_row="skip")["label"] == [1.0]
    assert calls == [("someone/prefs", "train")] * 2


def test_available_views(tmp_path):
    prefs = write_jsonl(tmp_path / "p.jsonl", PREFERENCE)
    kto = write_jsonl(tmp_path / "k.jsonl", [{"prompt": "p", "completion": "c", "label": False}])
    demos = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "completion": "c"}])
    assert data.available_views(prefs) == ("sft", "pairwise", "pointwise")
    assert data.available_views(kto) == ("sft", "pointwise") and data.available_views(demos) == ("sft",)
    assert data.available_views("red_team") == ("sft", "pointwise") and "pairwise" in data.available_views("hh")


def test_a_missing_file_is_named(tmp_path):
    for name in ("data/mine.jsonl", tmp_path / "nope.parquet"):
        with pytest.raises(DataFileNotFoundError, match="nope.parquet: no such file|data/mine.jsonl: no such file"):
            load(name, "sft")


def test_not_a_dataset_at_all():
    with pytest.raises(ValueError, match=r"unknown dataset 'nonsense'; valid: \['golden_hh', 'hh', 'qa_feedback', "
                                         r"'red_team'\], a local file or folder, or a hub dataset id"):
        load("nonsense", "sft")
    with pytest.raises(ValueError, match=r"option\(s\) \['labels'\] do not apply to own data"):
        load("someone/prefs", "sft", labels="binary")


def test_own_rows_tokenize_like_the_built_in_ones(tmp_path):
    from test_batching import PLAIN, decode

    path = write_jsonl(tmp_path / "prefs.jsonl", PREFERENCE)
    out = tokenize_dataset(load(path, "pairwise"), PLAIN, "pairwise", max_prompt_length=64, max_completion_length=16)
    assert decode(out[0]["prompt_ids"]).endswith("\n\nHuman: Capital of France?\n\nAssistant:")
    assert decode(out[0]["chosen_ids"]).startswith(" Paris.")
