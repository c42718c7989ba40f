"""ulma.trainer on the `tiny` profile and the project's fixtures: every method trains, the reference modes
agree, the reference cache is hit, resume and two processes reproduce a single uninterrupted run."""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from ulma import data
from ulma.batching import PointwiseCollator, tokenize_dataset
from ulma.config import load_profile
from ulma.logprobs import sequence_logps
from ulma.models import load_model_and_tokenizer
from ulma.losses import METHODS, loss_methods
from ulma.trainer import load_trained, train

ROOT = Path(__file__).resolve().parents[1]
TRAINED_METHODS = sorted(loss_methods())
# fixtures hold malformed rows on purpose (the loader's tests): training skips them
BASE = {"data_options": {"on_bad_row": "skip"}, "save_steps": 1000, "train_split": "train"}  # the fixtures' train split


pytestmark = pytest.mark.usefixtures("one_thread", "isolated")  # tests/conftest.py


def run(out: Path, method: str, dataset: str = "hh", **overrides) -> dict:
    profile = load_profile("tiny", {**BASE, **overrides})
    return train(profile, method, dataset, out, data_dir="fixtures")["train"]


def losses(metrics: dict) -> list[float]:
    """The logged loss of every optimizer step (the step-0 entry, before any update, left out)."""
    return [e["loss"] for e in metrics["log_history"] if "loss" in e and "train_runtime" not in e and e["step"] > 0]


# One fixed batch repeated (2 HH pairs: 4 point-wise rows, 2 positives and 2 negatives, or 2 pairs) and a
# high learning rate: every loss must fall. Trained once per method for the whole module.
FIXED_BATCH = {"max_train_examples": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-2,
               "max_steps": 4, "lora_dropout": 0.0}
POINTWISE_METRICS = ("loss", "logps/chosen", "logps/rejected", "label/mean")
PAIRWISE_METRICS = ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected")


@pytest.fixture(scope="module")
def fixed_batch_runs(tmp_path_factory):
    folder, done = tmp_path_factory.mktemp("fixed_batch"), {}

    def get(method: str) -> tuple[Path, dict]:
        if method not in done:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("ULMA_CACHE_DIR", str(folder / "cache"))
                mp.delenv("ULMA_DATA_DIR", raising=False)
                done[method] = (folder / method, run(folder / method, method, **FIXED_BATCH))
        return done[method]

    return get


@pytest.mark.parametrize("method", TRAINED_METHODS)
def test_every_method_trains_and_its_loss_falls(fixed_batch_runs, method):
    out, metrics = fixed_batch_runs(method)
    trace = losses(metrics)
    assert len(trace) == 4 and all(math.isfinite(v) for v in trace), trace
    assert trace[-1] < trace[0], trace
    assert (out / "adapter" / "adapter_config.json").exists() and (out / "tokenizer").is_dir()
    assert json.loads((out / "config.json").read_text())["method"] == method
    saved = json.loads((out / "metrics.json").read_text())["train"]
    start, first = saved["log_history"][:2]
    kind = METHODS[method].data_kind
    names = {"pairwise": PAIRWISE_METRICS, "pointwise": POINTWISE_METRICS, "sft": ("loss", "logps/chosen")}[kind]
    for name in (*names, "num_tokens", "tokens_per_s", "peak_memory_mb", "learning_rate", "grad_norm"):
        assert name in first, name
    # step 0: the first batch before any update; one micro-batch per step, so step 1 logs the same loss
    assert start["step"] == 0 and first["step"] == 1 and all(name in start for name in names)
    assert start["loss"] == pytest.approx(first["loss"], rel=1e-5)
    if METHODS[method].reference != "none":
        # fresh LoRA adapters (B = 0): the policy is the reference, every log-ratio and reward is 0 at the start
        assert start["log_ratio"] == pytest.approx(0.0, abs=1e-5) and abs(saved["log_history"][-2]["log_ratio"]) > 1e-3
        rows = METHODS[method].reference
        if rows == "all":  # both classes' rewards, and their margin as TRL's KTO logs it
            assert start["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
            assert first["rewards/margins"] == pytest.approx(first["rewards/chosen"] - first["rewards/rejected"])
        else:  # ULMA: π_ref is computed on the negatives only, so there is no reward of the positives
            assert (f"rewards/{'rejected' if rows == 'negatives' else 'chosen'}" in first) and "rewards/margins" not in first
    else:
        assert "log_ratio" not in first and not any(k.startswith("rewards/") for k in first)
    assert saved["log_history"][2]["num_tokens"] > first["num_tokens"]  # cumulative
    assert saved["peak_memory_mb"] > 0 and saved["num_tokens"] > 0 and saved["global_step"] == 4
    if METHODS[method].reference == "none":
        assert saved["reference_forward_calls"] == 0 and saved["reference_cache"] is None


def test_token_unlikelihood_and_continuous_labels_train(tmp_path):
    metrics = run(tmp_path / "ul", "unlikelihood", unlikelihood_variant="token", max_steps=2)
    assert all(math.isfinite(v) for v in losses(metrics))
    metrics = run(tmp_path / "qa", "ulma", "qa_feedback", max_steps=2,
                  data_options={"on_bad_row": "skip", "labels": "continuous"})
    assert all(math.isfinite(v) for v in losses(metrics))


def _response_logps(model, rows, tokenizer) -> torch.Tensor:
    batch = PointwiseCollator(tokenizer.pad_token_id)(list(rows))
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return sequence_logps(logits, batch["labels"], reduction="mean").logps


def test_ulma_raises_positives_and_lowers_negatives(tmp_path):
    # Full fine-tuning (the random tiny model's LoRA on q/v moves all byte sequences together) and β = 3, so
    # that the negatives' term outweighs what SFT on the positives lends them; 2 pairs, 8 steps.
    run(tmp_path / "run", "ulma", **{**FIXED_BATCH, "lora_r": 0, "beta": 3.0, "learning_rate": 1e-3, "max_steps": 8})
    model, tokenizer, config = load_trained(tmp_path / "run")
    assert config["method"] == "ulma" and not model.training and (tmp_path / "run" / "model").is_dir()
    reference, _ = load_model_and_tokenizer("tiny")
    rows = data.load("hh", "pointwise", "train", "fixtures", on_bad_row="skip").filter(lambda r: r["source_index"] < 2)
    rows = tokenize_dataset(rows, tokenizer, "pointwise", max_prompt_length=64, max_completion_length=32)
    delta = _response_logps(model, rows, tokenizer) - _response_logps(reference.eval(), rows, tokenizer)
    z = torch.tensor(rows["z"])
    assert delta[z == 1].min() > 0.1 and delta[z == 0].max() < -0.1, delta


def test_reference_cache_second_run_does_no_reference_forward(tmp_path):
    first = run(tmp_path / "a", "ulma", max_steps=2)
    assert first["reference_cache"] == "miss"
    rows = data.load("hh", "pointwise", "train", "fixtures", on_bad_row="skip").filter(lambda r: r["source_index"] < 24)
    negatives = sum(z < 1 for z in rows["label"])
    assert first["reference_forward_rows"] == negatives  # ULMA: the negatives only, once, before training
    assert len(list((tmp_path / "cache" / "reference").glob("*.safetensors"))) == 1
    second = run(tmp_path / "b", "ulma", max_steps=2)
    assert second["reference_cache"] == "hit"
    assert second["reference_forward_calls"] == 0 and second["reference_forward_rows"] == 0
    assert losses(second) == pytest.approx(losses(first), abs=1e-6)
    # another method needs other rows: another cache entry
    assert run(tmp_path / "c", "pointwise_dpo", max_steps=1)["reference_cache"] == "miss"


def test_ulma_forwards_only_negatives_through_the_reference(tmp_path):
    # fixed batch of 2 positives + 2 negatives, 3 steps: 3 reference calls of 2 rows each
    metrics = run(tmp_path / "run", "ulma", reference="adapters", **{**FIXED_BATCH, "max_steps": 3})
    assert (metrics["reference_forward_calls"], metrics["reference_forward_rows"]) == (3, 6)
    assert metrics["policy_forward_rows"] == 12


@pytest.mark.parametrize("method", ["ulma", "dpo", "kto"])  # negatives only; pairwise; all rows + KL pairs
def test_reference_modes_give_the_same_first_step(tmp_path, method):
    first = {mode: losses(run(tmp_path / mode, method, reference=mode, max_steps=1))[0]
             for mode in ("cached", "adapters", "copy")}
    assert first["adapters"] == pytest.approx(first["cached"], abs=1e-5), first
    assert first["copy"] == pytest.approx(first["cached"], abs=1e-5), first


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


def test_resume_matches_an_uninterrupted_run(tmp_path):
    settings = {"max_steps": 6, "save_steps": 3, "lr_scheduler_type": "cosine", "learning_rate": 1e-2}
    profile = load_profile("tiny", {**BASE, **settings})
    full = train(profile, "ulma", "hh", tmp_path / "full", data_dir="fixtures")["train"]
    stopped = train(profile, "ulma", "hh", tmp_path / "cut", data_dir="fixtures", callbacks=[StopAt(3)])["train"]
    assert stopped["global_step"] == 3 and (tmp_path / "cut" / "checkpoints" / "checkpoint-3").is_dir()
    resumed = train(profile, "ulma", "hh", tmp_path / "cut", data_dir="fixtures", resume=True)["train"]
    assert resumed["resumed_from"].endswith("checkpoint-3") and resumed["global_step"] == 6
    assert losses(resumed) == pytest.approx(losses(full), rel=1e-5, abs=1e-6)
    a = load_file(tmp_path / "full" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "cut" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="compares CPU processes with an in-process CPU run")
def test_two_processes_match_one(tmp_path):
    """accelerate launch with 2 CPU processes (gloo), 2 rows per process, against one process with 2
    rows x 2 accumulation steps: the same rows per optimizer step, gradients averaged alike. LoRA dropout is
    off (each process draws its own masks). Observed: identical to the last bit; allowed: 1e-5 relative on
    every logged loss and 1e-6 absolute on the adapter weights (float sums may come in another order)."""
    # (learning_rate=0.01: YAML reads 1e-2 as a string)
    settings = ["max_steps=4", "per_device_train_batch_size=2", "lora_dropout=0", "learning_rate=0.01",
                "save_steps=1000", "data_options={on_bad_row: skip}"]
    env = {**os.environ, "ULMA_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    # `--cpu` alone starts one process unless MPI is set up; `--multi_gpu` on a machine without CUDA starts
    # torchrun's processes, which accelerate runs on the CPU with gloo (DistributedType.MULTI_CPU)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_cpu_threads_per_process", "1", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", "ulma", "train", "--profile", "tiny",
               "--method", "ulma", "--dataset", "hh", "--output-dir", str(tmp_path / "ddp"), "--data-dir", "fixtures"]
    for item in settings:
        command += ["--set", item]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    two = json.loads((tmp_path / "ddp" / "metrics.json").read_text())["train"]
    assert two["num_processes"] == 2

    profile = load_profile("tiny", settings + ["gradient_accumulation_steps=2"])
    one = train(profile, "ulma", "hh", tmp_path / "one", data_dir="fixtures")["train"]
    assert losses(two) == pytest.approx(losses(one), rel=1e-5)
    a = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "ddp" / "adapter" / "adapter_model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------- single_gpu on tiny
def test_single_gpu_profile_path_on_tiny_in_bfloat16(tmp_path, capsys):
    """The single_gpu profile's settings (bf16 weights and autocast, LoRA, its lengths, batch and
    accumulation, the cached reference, its evaluation) with the model and data a CPU allows: tiny, fixtures."""
    from ulma.cli import main
    from ulma.evaluation import evaluate_run

    overrides = ["model=tiny", "data_dir=fixtures", "train_split=train", "max_train_examples=4", "max_steps=2",
                 "save_steps=1000", "logging_steps=1", "eval.test_split=test", "eval.max_eval_samples=4",
                 "eval.num_generations=2", "eval.max_new_tokens=8", "eval.judge=none"]
    profile = load_profile("single_gpu", overrides)
    assert profile.train.dtype == "bfloat16" and profile.train.gradient_accumulation_steps == 8
    command = ["train", "--profile", "single_gpu", "--method", "ulma", "--dataset", "hh", "--output-dir",
               str(tmp_path / "run")] + [x for o in overrides for x in ("--set", o)]
    assert main(command) == 0
    err = capsys.readouterr().err
    assert "ESTIMATE (assumed throughput, not measured)" in err and "memory" in err  # printed before the model loads
    model, _, config = load_trained(tmp_path / "run")
    assert next(model.parameters()).dtype == torch.bfloat16 and config["train"]["dtype"] == "bfloat16"
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())["train"]
    assert saved["global_step"] == 2 and all(math.isfinite(v) for v in losses(saved))
    metrics = evaluate_run(tmp_path / "run", judge="none")  # perplexity, preference accuracy, bf16 generation
    assert math.isfinite(metrics["perplexity"]) and metrics["num_generations"] == 2, sorted(metrics)
    replies = [json.loads(line) for line in (tmp_path / "run" / "generations.jsonl").read_text().splitlines()]
    assert len(replies) == 2


def test_estimate_counts_tokens_from_the_data():
    from ulma.config import TrainConfig
    from ulma.losses import get_method
    from ulma.trainer import ASSUMED_FLOPS, estimate_run

    rows = {"prompt": [[{"role": "user", "content": "x" * 40}]] * 2, "completion": ["y" * 400, "z" * 8]}
    cfg = TrainConfig(max_prompt_length=512, max_completion_length=50, num_train_epochs=2, reference="cached")
    e = estimate_run(cfg, get_method("pointwise_dpo"), rows, parameters=1_000_000, device="cpu")
    # 4 chars per token: prompts 10 + 10, replies min(100, 50) + 2 = 72 tokens a pass; 2 epochs; 1 cached pass
    assert (e["trained_tokens"], e["reference_tokens"]) == (144, 72)
    assert e["seconds"] == pytest.approx((4 * 144 + 2 * 72) * 1e6 / ASSUMED_FLOPS["cpu"])
    assert estimate_run(cfg, get_method("sft"), rows, parameters=None)["reference_tokens"] == 0


def test_length_grouped_batches_pad_less_and_resume_exactly(tmp_path):
    # train.group_by_length: transformers' LengthGroupedSampler over the rows' token slots; the record's
    # padded_fraction is measured on the policy's micro-batches (1 - real tokens / slots)
    settings = {"max_steps": 6, "save_steps": 3, "per_device_train_batch_size": 4, "learning_rate": 1e-2}
    plain = run(tmp_path / "random", "ulma", **settings)
    profile = load_profile("tiny", {**BASE, **settings, "group_by_length": True})
    grouped = train(profile, "ulma", "hh", tmp_path / "grouped", data_dir="fixtures")["train"]
    assert plain["group_by_length"] is False and grouped["group_by_length"] is True
    assert 0.0 <= grouped["padded_fraction"] < plain["padded_fraction"] < 1.0, (grouped["padded_fraction"],
                                                                                  plain["padded_fraction"])
    # the grouped order is seeded: a run cut at step 3 and resumed takes the same batches
    train(profile, "ulma", "hh", tmp_path / "cut", data_dir="fixtures", callbacks=[StopAt(3)])
    resumed = train(profile, "ulma", "hh", tmp_path / "cut", data_dir="fixtures", resume=True)["train"]
    assert losses(resumed) == pytest.approx(losses(grouped), rel=1e-5, abs=1e-6)
