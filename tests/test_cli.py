"""`python -m ulma`: the train command, and one clear error line (exit 2) for bad input before any model loads."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ulma import cli, models, rlhf, runs, trainer

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread", "isolated")  # tests/conftest.py


@pytest.fixture
def no_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    # every module that loads a model imports the loader at its top: patch it where it is called
    for module in (models, trainer, rlhf, runs):
        monkeypatch.setattr(module, "load_model_and_tokenizer", refuse)


def _train_args(tmp_path, *extra: str) -> list[str]:
    return ["train", "--profile", "tiny", "--output-dir", str(tmp_path / "run"), "--data-dir", "fixtures", *extra]


@pytest.mark.parametrize("extra, message", [
    (["--method", "nope", "--dataset", "hh"], "unknown method 'nope'"),
    (["--method", "ulma", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["--method", "dpo", "--dataset", "red_team"], "red_team has no pairwise view"),
    (["--method", "ulma", "--dataset", "hh", "--set", "no_such_field=1"], "unknown config field"),
    (["--method", "ulma", "--dataset", "hh", "--profile", "nope"], "unknown profile 'nope'"),
    (["--method", "ulma", "--dataset", "hh", "--set", "reference=nope"], "train.reference = 'nope': must be one of adapters, copy, cached"),
])
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, capsys, no_model, extra, message):
    assert cli.main(_train_args(tmp_path, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "run").exists()


def test_missing_arguments_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--profile", "tiny"])
    assert exit_info.value.code == 2
    assert "--method" in capsys.readouterr().err


def test_train_writes_a_run(tmp_path, capsys):
    code = cli.main(_train_args(tmp_path, "--method", "ulma", "--dataset", "hh", "--set", "max_steps=2",
                                "--set", "save_steps=1000", "--set", "data_options={on_bad_row: skip}"))
    assert code == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.rindex("{\n"):])  # the last thing printed: the run's summary
    assert summary["global_step"] == 2 and summary["output_dir"] == str(tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.json", "metrics.json", "adapter", "tokenizer"):
        assert (run / name).exists(), name
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["max_steps"] == 2 and config["method"] == "ulma" and config["dataset"] == "hh"
    assert json.loads((run / "metrics.json").read_text())["train"]["global_step"] == 2


def test_a_folder_of_another_run_is_refused_unless_overwrite(tmp_path, capsys):
    """--overwrite reaches ulma.trainer.train(overwrite=True): the folder of an sft run takes an ulma run
    only when asked, and the refusal names the difference before anything is written."""
    steps = ("--set", "max_steps=1", "--set", "save_steps=1000")
    assert cli.main(_train_args(tmp_path, "--method", "sft", "--dataset", "hh", *steps)) == 0
    config = tmp_path / "run" / "config.json"
    before = config.read_text()
    capsys.readouterr()
    assert cli.main(_train_args(tmp_path, "--method", "ulma", "--dataset", "hh", *steps)) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]  # not progress bars
    assert len(err) == 1 and "holds another run" in err[0] and "method: 'sft' -> 'ulma'" in err[0], err
    assert "--overwrite" in err[0]  # the option's name on the command line
    assert config.read_text() == before
    assert cli.main(_train_args(tmp_path, "--method", "ulma", "--dataset", "hh", *steps, "--overwrite")) == 0
    assert json.loads(config.read_text())["method"] == "ulma"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["train"]["global_step"] == 1


def test_module_entry_point(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ULMA_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "ulma", *_train_args(tmp_path, "--method", "nope", "--dataset", "hh")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: unknown method 'nope'")


def test_help_lists_the_commands():
    assert "train" in cli.build_parser().format_help()


def test_evaluate_rejects_a_folder_that_is_not_a_run(tmp_path, capsys):
    from ulma.cli import main

    assert main(["evaluate", "--run", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_evaluate_with_the_llm_judge_on_a_tiny_run(tmp_path, capsys, monkeypatch):
    """`evaluate --judge llm` on a tiny run crashed: the offline judge's options (tiny's
    eval.judge_options) reached the LLM judge. Now each judge gets its own section; the chat endpoint is
    a fake transport answering "A" (reply A is better) and "7"."""
    from ulma.judges import llm

    asked = []

    def fake_transport(url, body, headers, timeout):
        request = json.loads(body)
        asked.append(request)
        text = request["messages"][-1]["content"]
        answer = "A" if "[Reply A]" in text else "7"
        return 200, {}, json.dumps({"choices": [{"message": {"content": answer}}]}).encode()

    monkeypatch.setattr(llm, "urllib_transport", fake_transport)  # the default transport, looked up per judge
    monkeypatch.setenv("ULMA_JUDGE_API_KEY", "sk-never-written-0123")
    assert cli.main(_train_args(tmp_path, "--method", "sft", "--dataset", "hh", "--set", "max_steps=1",
                                "--set", "save_steps=1000")) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", "--run", str(tmp_path / "run"), "--judge", "llm", "--data-dir", "fixtures"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["eval"]
    n = metrics["num_generations"]
    assert metrics["judge"] == "llm" and 1 <= n <= 4  # tiny: eval.num_generations 4 (the fixtures hold fewer)
    # always "A": each reply wins once and loses once over the two orders -> a tie (unless identical text)
    assert metrics["ties"] == n and metrics["judge_score"] == 7.0 and metrics["reference_score"] == 7.0
    assert metrics["judge_info"]["criterion"] == "harmlessness"
    assert all(r["model"] == "gpt-4" for r in asked)
    for path in (tmp_path / "run").rglob("*"):
        assert not path.is_file() or "sk-never-written" not in path.read_text(errors="replace")


def test_reproduce_plan_prints_the_runs_and_trains_nothing(tmp_path, capsys, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("--plan must not train or execute notebooks")

    import ulma.grid
    import ulma.reproduce

    monkeypatch.setattr(ulma.grid, "run_one", no_training)
    monkeypatch.setattr(ulma.reproduce, "reproduce", no_training)
    assert cli.main(["reproduce", "--profile", "tiny", "--only", "04", "--plan",
                     "--results-dir", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    assert "[04_ulma] plan:" in out and "to run" in out
    assert not (tmp_path / "results").exists()  # nothing written


def test_train_closes_the_process_group_a_launcher_opened(tmp_path, monkeypatch):
    """A launched run ends its gloo group itself: left to interpreter exit, a rank of a finished run could abort
    (SIGABRT, "terminate called without an active exception") and fail the launch. One process stands in for a
    rank here: `python -m ulma train` returns 0 and leaves no group behind; without a group it changes nothing."""
    import torch.distributed as dist

    monkeypatch.setattr(trainer, "train", lambda *a, **k: {"train": {"train_loss": 0.5}})
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        assert cli.main(_train_args(tmp_path, "--method", "ulma", "--dataset", "hh")) == 0
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert cli.main(_train_args(tmp_path, "--method", "ulma", "--dataset", "hh")) == 0  # one process, no group: nothing to close
