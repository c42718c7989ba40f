"""ulma.runs and ulma.reference on `tiny`: a run folder knows its run, an interrupted checkpoint save is
skipped, train_loss after a resume averages every step, the reference cache is checked, `base` trains nothing."""
from __future__ import annotations

import logging

import pytest
import torch
from transformers import TrainerCallback

from ulma import trainer as trainer_module
from ulma.config import load_profile
from ulma.models import load_model_and_tokenizer
from ulma.reference import ReferenceCache
from ulma.runs import InvalidRunError, RunFolder, load_trained, objective_trace, resumed_train_loss
from ulma.trainer import train

BASE = {"data_options": {"on_bad_row": "skip"}, "save_steps": 1000, "train_split": "train", "max_train_examples": 4}
pytestmark = pytest.mark.usefixtures("one_thread", "isolated")  # tests/conftest.py


def _train(out, method="ulma", *, resume=False, overwrite=False, callbacks=None, **overrides):
    profile = load_profile("tiny", {**BASE, **overrides})
    return train(profile, method, "hh", out, data_dir="fixtures", resume=resume, overwrite=overwrite,
                 callbacks=callbacks)["train"]


class StopAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


# ----------------------------------------------------------------------------------------- identity
def test_a_folder_of_another_run_is_refused_naming_the_difference(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _train(out, max_steps=1)

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the folder was checked")

    with monkeypatch.context() as mp:
        mp.setattr(trainer_module, "load_model_and_tokenizer", refuse)
        with pytest.raises(InvalidRunError, match=r"method: 'ulma' -> 'dpo'.*overwrite=True"):
            _train(out, "dpo", max_steps=1)
        with pytest.raises(InvalidRunError, match=r"train\.beta: 0\.1 -> 0\.3"):
            _train(out, max_steps=1, beta=0.3, resume=True)  # --resume continues only its own run
    assert RunFolder(out).read_config()["method"] == "ulma"  # nothing was overwritten

    metrics = _train(out, "dpo", max_steps=1, overwrite=True)
    assert RunFolder(out).read_config()["method"] == "dpo" and metrics["global_step"] == 1
    # the same run may be continued with a longer schedule (CONTINUABLE)
    assert _train(out, "dpo", max_steps=2, resume=True)["global_step"] == 2


def test_files_of_an_unknown_run_are_refused(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    with pytest.raises(InvalidRunError, match="without a readable config.json"):
        _train(out, max_steps=1)


# -------------------------------------------------------------------------------- checkpoints, resume
def test_an_interrupted_checkpoint_save_is_skipped_and_train_loss_covers_every_step(tmp_path):
    settings = {"max_steps": 4, "save_steps": 2, "logging_steps": 1, "learning_rate": 1e-2}
    full = _train(tmp_path / "full", **settings)
    _train(tmp_path / "cut", callbacks=[StopAt(2)], **settings)
    (tmp_path / "cut" / "checkpoints" / "checkpoint-3").mkdir()  # SIGINT during a save leaves it empty
    folder = RunFolder(tmp_path / "cut")
    assert folder.last_complete_checkpoint().name == "checkpoint-2"
    resumed = _train(tmp_path / "cut", resume=True, **settings)
    assert resumed["resumed_from"].endswith("checkpoint-2") and resumed["global_step"] == 4
    # transformers alone would average steps 3-4 only; the run's train_loss is the mean of steps 1-4
    steps = [e["loss"] for e in full["log_history"] if "loss" in e and "train_runtime" not in e and e["step"] > 0]
    assert full["train_loss"] == pytest.approx(sum(steps) / 4, rel=1e-5)
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], rel=1e-5)


def test_resumed_train_loss_worked_numbers():
    history = [{"step": 2, "loss": 1.0}, {"step": 4, "loss": 0.5}, {"step": 6, "loss": 9.0}, {"step": 4, "lr": 1}]
    # logs at 2 and 4 cover steps 1-4 (2 steps each); 2 steps after the resume at 4 with mean 0.25
    assert resumed_train_loss(0.25, 2, history, 4) == pytest.approx((1.0 * 2 + 0.5 * 2 + 0.25 * 2) / 6)
    # a checkpoint at step 5: step 5 was never logged, so the mean is over steps 1-4 and the session's 6-7
    assert resumed_train_loss(0.25, 2, history, 5) == pytest.approx((1.0 * 2 + 0.5 * 2 + 0.25 * 2) / 6)
    assert resumed_train_loss(0.7, 3, [], 0) == pytest.approx(0.7)


# --------------------------------------------------------------------------------------- reference cache
def test_reference_cache_rejects_altered_truncated_and_short_files(tmp_path, caplog):
    path = tmp_path / "ref.safetensors"
    values = torch.tensor([-1.5, -2.25, float("nan"), -4.0])
    ReferenceCache(path).save({"reference_logps": values})
    loaded = ReferenceCache(path).load({"reference_logps": 4})
    assert torch.equal(loaded["reference_logps"].nan_to_num(7.0), values.nan_to_num(7.0))
    assert ReferenceCache(tmp_path / "absent.safetensors").load() is None

    blob = path.read_bytes()
    cases = {"checksum": blob[:-4] + torch.tensor([-9.0]).numpy().tobytes(),  # one value altered
             "cannot be read": blob[: len(blob) // 2]}  # truncated
    for message, content in cases.items():
        path.write_bytes(content)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ulma.reference"):
            assert ReferenceCache(path).load({"reference_logps": 4}) is None
        assert str(path) in caplog.text and message in caplog.text
    path.write_bytes(blob)
    with caplog.at_level(logging.WARNING, logger="ulma.reference"):
        assert ReferenceCache(path).load({"reference_logps": 5}) is None  # another dataset's length
    assert "5 rows" in caplog.text


def test_a_corrupted_training_cache_is_recomputed_with_the_same_loss(tmp_path, caplog):
    first = _train(tmp_path / "a", max_steps=1, reference="cached")
    assert first["reference_cache"] == "miss"
    [path] = list((tmp_path / "cache" / "reference").glob("*.safetensors"))
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0xFF  # alter one reference value
    path.write_bytes(bytes(blob))
    with caplog.at_level(logging.WARNING, logger="ulma.reference"):
        second = _train(tmp_path / "b", max_steps=1, reference="cached")
    assert second["reference_cache"] == "miss" and str(path) in caplog.text
    assert second["loss"] == pytest.approx(first["loss"], rel=1e-6)
    assert _train(tmp_path / "c", max_steps=1, reference="cached")["reference_cache"] == "hit"


# ---------------------------------------------------------------------------------------------- base
def test_base_trains_nothing_and_loads_as_the_starting_model(tmp_path):
    metrics = _train(tmp_path / "base", "base")
    assert metrics == {"global_step": 0, "wall_time_s": 0.0, "trained": False}
    model, tokenizer, config = load_trained(tmp_path / "base")
    start, _ = load_model_and_tokenizer("tiny")
    assert config["method"] == "base" and tokenizer.pad_token_id is not None
    for (name, a), (_, b) in zip(model.state_dict().items(), start.state_dict().items()):
        assert torch.equal(a, b), name


def test_every_run_records_its_objective_at_the_start_and_the_end(tmp_path):
    metrics = _train(tmp_path / "run", max_steps=3, logging_steps=1, learning_rate=1e-2)
    steps = [e for e in metrics["log_history"] if "loss" in e and "train_runtime" not in e]
    objective = metrics["objective"]
    assert objective["start"]["step"] == 0 and objective["end"]["step"] == 3  # step 0: before any update
    assert objective["start"]["loss"] == steps[0]["loss"] and objective["end"]["loss"] == steps[-1]["loss"]
    # ULMA: implicit rewards of its negatives only (its positives are SFT: no reference)
    assert {"loss", "rewards/rejected"} <= set(objective["end"]) and "learning_rate" not in objective["end"]
    ppo = [{"step": 1, "reward": 0.1, "kl": 0.0, "policy_loss": 3.0}, {"step": 2, "reward": 0.4, "kl": 0.2}]
    assert objective_trace(ppo) == {"start": {"step": 1, "reward": 0.1, "kl": 0.0},
                                    "end": {"step": 2, "reward": 0.4, "kl": 0.2}}
    assert objective_trace([{"train_runtime": 1.0, "train_loss": 2.0}]) is None


def test_saved_state_is_a_complete_checkpoint_or_the_ppo_state(tmp_path):
    folder = RunFolder(tmp_path / "run")
    assert not folder.has_saved_state()  # no checkpoints/ at all
    (folder.checkpoints / "checkpoint-2").mkdir(parents=True)
    assert not folder.has_saved_state()  # a save interrupted before trainer_state.json
    (folder.checkpoints / "checkpoint-2" / "trainer_state.json").write_text("{}")
    assert folder.has_saved_state()
    ppo = RunFolder(tmp_path / "ppo")
    ppo.checkpoints.mkdir(parents=True)
    assert not ppo.has_saved_state()
    ppo.ppo_state.write_bytes(b"state")
    assert ppo.has_saved_state()
