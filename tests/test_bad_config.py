"""Bad options on the command line (issue 17, CLI/config): every case is one ``error:`` line naming the
option and what it allows, exit code 2, before any model loads, and nothing written.

Each row: the arguments after ``train --profile tiny --output-dir RUN --data-dir fixtures``, and words
the error line must contain (the field path and its allowed range or choices).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ulma import cli, models
from ulma.config import load_profile

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread", "isolated")  # tests/conftest.py

UNL = ["--method", "ulma", "--dataset", "hh"]

# (case id, extra arguments, words the one error line contains)
TRAIN_CASES = [
    ("beta -1", [*UNL, "--set", "beta=-1"], ["train.beta = -1", "> 0"]),
    ("beta 0", [*UNL, "--set", "train.beta=0"], ["train.beta = 0", "> 0"]),
    ("beta high", [*UNL, "--set", "beta=high"], ["train.beta = 'high'", "finite number > 0"]),
    ("lr abc", [*UNL, "--set", "learning_rate=abc"], ["train.learning_rate = 'abc'", "> 0"]),
    ("lr negative", [*UNL, "--set", "learning_rate=-0.005"], ["train.learning_rate = -0.005", "> 0"]),
    ("batch size 0", [*UNL, "--set", "per_device_train_batch_size=0"],
     ["train.per_device_train_batch_size = 0", "integer >= 1"]),
    ("grad accumulation 0", [*UNL, "--set", "gradient_accumulation_steps=0"],
     ["train.gradient_accumulation_steps = 0", "integer >= 1"]),
    ("dtype float64", [*UNL, "--set", "dtype=float64"], ["train.dtype = 'float64'", "float32, bfloat16, float16"]),
    ("aggregation foo", [*UNL, "--set", "aggregation=foo"], ["train.aggregation = 'foo'", "class_mean, sample_mean"]),
    ("max_prompt_length 0", [*UNL, "--set", "max_prompt_length=0"], ["train.max_prompt_length = 0", ">= 1"]),
    ("max_completion_length -5", [*UNL, "--set", "max_completion_length=-5"], ["train.max_completion_length", ">= 1"]),
    ("c NaN", [*UNL, "--set", "c=nan"], ["train.c = nan", "finite number"]),
    ("c inf", [*UNL, "--set", "c=.inf"], ["train.c = inf", "finite number"]),
    ("lora_r -1", [*UNL, "--set", "lora_r=-1"], ["train.lora_r = -1", ">= 1", "0 for full fine-tuning"]),
    ("lora_dropout 1", [*UNL, "--set", "lora_dropout=1"], ["train.lora_dropout = 1", "[0, 1)"]),
    ("group_by_length 2", [*UNL, "--set", "group_by_length=2"], ["train.group_by_length = 2", "true or false"]),
    ("lora_target_modules 5", [*UNL, "--set", "lora_target_modules=5"],
     ["train.lora_target_modules = 5", "list of module names"]),
    ("max_steps 0", [*UNL, "--set", "max_steps=0"], ["train.max_steps = 0", "-1", ">= 1"]),
    ("max_steps abc", [*UNL, "--set", "max_steps=abc"], ["train.max_steps = 'abc'", "integer >= 1"]),
    ("max_steps 2.5", [*UNL, "--set", "max_steps=2.5"], ["train.max_steps = 2.5", "integer"]),
    ("epochs 0", [*UNL, "--set", "num_train_epochs=0"], ["train.num_train_epochs = 0", "> 0"]),
    ("warmup 2", [*UNL, "--set", "warmup_ratio=2"], ["train.warmup_ratio = 2", "[0, 1)"]),
    ("seed -1", [*UNL, "--set", "seed=-1"], ["train.seed = -1", "[0, 4294967295]"]),
    ("max_train_examples 0", [*UNL, "--set", "max_train_examples=0"], ["train.max_train_examples = 0", ">= 1"]),
    ("positive_threshold 0", [*UNL, "--set", "positive_threshold=0"], ["train.positive_threshold = 0", "(0, 1]"]),
    ("kto weight 0", ["--method", "kto", "--dataset", "hh", "--set", "kto_desirable_weight=0"],
     ["train.kto_desirable_weight = 0", "> 0"]),
    ("scheduler foo", [*UNL, "--set", "lr_scheduler_type=foo"], ["train.lr_scheduler_type = 'foo'", "cosine"]),
    ("reference nope", [*UNL, "--set", "reference=nope"], ["train.reference = 'nope'", "adapters, copy, cached"]),
    ("data_options 5", [*UNL, "--set", "data_options=5"], ["train.data_options = 5", "mapping"]),
    ("eval judge gpt", [*UNL, "--set", "eval.judge=gpt"], ["eval.judge = 'gpt'", "llm, reward_model"]),
    ("eval batch 0", [*UNL, "--set", "eval_batch_size=0"], ["eval.eval_batch_size = 0", ">= 1"]),
    ("rlhf top_p 0", ["--method", "rlhf", "--dataset", "hh", "--set", "rlhf.top_p=0"], ["rlhf.top_p = 0", "(0, 1]"]),
    ("rlhf gamma 2", ["--method", "rlhf", "--dataset", "hh", "--set", "gamma=2"], ["rlhf.gamma = 2", "[0, 1]"]),
    ("method override", [*UNL, "--set", "method_overrides={ulma: {beta: -1}}"],
     ["experiments.method_overrides.ulma.beta = -1", "> 0"]),
    ("sweep value", [*UNL, "--set", "sweeps={c: [0, .nan]}"], ["experiments.sweeps.c[1] = nan", "finite"]),
    ("unknown --set key", [*UNL, "--set", "lr=1e-4"], ["unknown config field 'lr'"]),
    ("typo --set key", [*UNL, "--set", "train.bta=0.5"], ["unknown field 'bta'", "did you mean 'beta'"]),
    ("unknown section", [*UNL, "--set", "model.beta=1"], ["unknown config section 'model'"]),
    ("--set without =", [*UNL, "--set", "beta"], ["--set", "key=value"]),
    ("--set bad YAML", [*UNL, "--set", "lora_target_modules=[q_proj"], ["lora_target_modules", "not a YAML"]),
    ("unknown profile", [*UNL, "--profile", "huge"], ["unknown profile 'huge'", "tiny"]),
    ("missing profile file", [*UNL, "--profile", "PROFILE_DIR/missing.yaml"], ["missing.yaml", "does not exist"]),
    ("profile not YAML", [*UNL, "--profile", "PROFILE_DIR/broken.yaml"], ["broken.yaml", "not valid YAML", "line"]),
    ("profile a list", [*UNL, "--profile", "PROFILE_DIR/list.yaml"], ["list.yaml", "mapping of sections"]),
    ("profile bad section", [*UNL, "--profile", "PROFILE_DIR/section.yaml"], ["trian", "did you mean 'train'"]),
    ("profile bad field", [*UNL, "--profile", "PROFILE_DIR/field.yaml"], ["train.beta = 'strong'", "> 0"]),
    ("unknown method", ["--method", "nope", "--dataset", "hh"], ["unknown method 'nope'", "ulma", "rlhf"]),
    ("unknown dataset", ["--method", "ulma", "--dataset", "nope"], ["unknown dataset 'nope'"]),
    ("unknown dataset rlhf", ["--method", "rlhf", "--dataset", "nope"], ["unknown dataset 'nope'"]),
    ("no pairwise view", ["--method", "dpo", "--dataset", "red_team"], ["red_team has no pairwise view"]),
    ("adapters need LoRA", [*UNL, "--set", "lora_r=0", "--set", "reference=adapters"],
     ["reference='adapters' needs LoRA"]),
    ("missing output parent", [*UNL, "--output-dir", "OUT/no/such/run"], ["--output-dir", "parent folder",
                                                                           "does not exist"]),
    ("output is a file", [*UNL, "--output-dir", "OUT/a_file"], ["--output-dir", "not a folder"]),
]

PROFILE_FILES = {
    "broken.yaml": "train:\n  beta: [0.1\n",
    "list.yaml": "- train\n- eval\n",
    "section.yaml": "trian:\n  beta: 0.5\n",
    "field.yaml": "train:\n  model: tiny\n  beta: strong\n",
}


@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: every bad option must be caught before."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load_model_and_tokenizer", refuse)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def workspace(tmp_path):
    (tmp_path / "profiles").mkdir()
    for name, text in PROFILE_FILES.items():
        (tmp_path / "profiles" / name).write_text(text)
    (tmp_path / "a_file").write_text("not a run folder\n")
    return tmp_path


def _expand(args: list[str], root: Path) -> list[str]:
    return [a.replace("PROFILE_DIR", str(root / "profiles")).replace("OUT", str(root)) for a in args]


@pytest.mark.parametrize("extra, words", [c[1:] for c in TRAIN_CASES], ids=[c[0] for c in TRAIN_CASES])
def test_bad_train_option_is_one_line_exit_2_and_writes_nothing(workspace, capsys, no_model, extra, words):
    before = _tree(workspace)
    argv = ["train", "--profile", "tiny", "--output-dir", str(workspace / "run"), "--data-dir", "fixtures",
            *_expand(extra, workspace)]
    start = time.perf_counter()
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in captured.err and captured.out == ""
    assert not (workspace / "run").exists()
    after = _tree(workspace)
    # a data-level check may fill the data cache; nothing else appears (no run folder, no checkpoints/)
    assert {p for p in after - before if not p.startswith("cache")} == set()
    assert time.perf_counter() - start < 60  # no model, no training (typically well under a second)


def test_the_table_covers_the_issue():
    # issue 17 listed 24 CLI/config cases; the table holds each of them and more
    assert len(TRAIN_CASES) >= 24 and len({c[0] for c in TRAIN_CASES}) == len(TRAIN_CASES)


@pytest.mark.parametrize("argv, words", [
    (["evaluate", "--run", "RUN", "--judge", "gpt5"], ["unknown judge 'gpt5'", "llm"]),
    (["evaluate", "--run", "RUN", "--judge", "reward_model"], ["judge reward_model", "judge_model"]),
    (["evaluate", "--run", "RUN", "--judge", "llm"], ["judge llm", "ULMA_JUDGE_API_KEY"]),
    (["evaluate", "--run", "OUT/a_file"], ["not a run folder"]),
    (["evaluate", "--run", "BROKEN"], ["config.json", "not a readable run config"]),
    (["reproduce", "--profile", "PROFILE_DIR/field.yaml"], ["train.beta = 'strong'"]),
    (["reproduce", "--profile", "tiny", "--timeout", "0"], ["--timeout = 0", ">= 1"]),
    (["reproduce", "--profile", "tiny", "--force", "--no-train"], ["--force", "--no-train", "give one"]),
])
def test_bad_evaluate_and_reproduce_options(workspace, capsys, no_model, monkeypatch, argv, words):
    monkeypatch.delenv("ULMA_JUDGE_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    run = workspace / "fake_run"  # a run folder's config.json alone: the judge is built before the model
    run.mkdir()
    config = {"profile": load_profile("tiny").to_dict(), "method": "ulma", "dataset": "hh", "data_dir": None,
              "train": load_profile("tiny").to_dict()["train"]}
    (run / "config.json").write_text(json.dumps(config))
    broken = workspace / "broken_run"
    broken.mkdir()
    (broken / "config.json").write_text('{"profile": {"train": {"beta": -1}}}')
    before = _tree(workspace)
    argv = [a.replace("BROKEN", str(broken)).replace("RUN", str(run)) for a in _expand(argv, workspace)]
    assert cli.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert _tree(workspace) == before


def test_python_m_ulma_rejects_a_bad_option_before_importing_the_trainer(tmp_path):
    """The real entry point: exit 2, one line, and transformers' Trainer never imported."""
    code = ("import sys, runpy; sys.argv = ['ulma'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('ulma', run_name='__main__')\n"
            "except SystemExit as e:\n"
            "    print('trainer imported:', 'ulma.trainer' in sys.modules, file=sys.stderr); raise\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ULMA_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code, "train", "--profile", "tiny", "--method", "ulma", "--dataset",
                           "hh", "--output-dir", str(tmp_path / "run"), "--set", "beta=-1"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0] == "error: train.beta = -1: must be a finite number > 0"
    assert lines[1] == "trainer imported: False"
    assert not any(tmp_path.iterdir())
