"""The TRL-shaped API (`from ulma import ULMAConfig, ULMATrainer`) on a user's own small JSON-lines file and
the `tiny` model: raw rows in TRL's formats are turned into the method's view and tokenized by the trainer,
LoRA comes from a peft LoraConfig, the adapter reloads with peft's AutoPeftModelForCausalLM, the model card
names method, data and base model, and the README's example runs."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from datasets import Dataset, load_dataset
from peft import AutoPeftModelForCausalLM, LoraConfig

from ulma import ULMAConfig, ULMATrainer
from ulma.config import ConfigError, TrainConfig, load_profile
from ulma.data import DataError
from ulma.models import tiny_model, tiny_tokenizer
from ulma.trainer import train, training_arguments

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "preferences.jsonl"  # 8 plain-text preference pairs

pytestmark = pytest.mark.usefixtures("one_thread", "isolated")  # tests/conftest.py


def lora() -> LoraConfig:
    return LoraConfig(r=8, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")


def ten_lines(tmp_path: Path, method: str, rows, eval_rows=None, **settings) -> ULMATrainer:
    """What a user writes: a config, a trainer on raw rows, train."""
    args = ULMAConfig(output_dir=str(tmp_path / method), method=method, max_steps=3, per_device_train_batch_size=4,
                      learning_rate=1e-2, logging_steps=1, max_prompt_length=64, max_completion_length=48,
                      save_strategy="no", **settings)
    trainer = ULMATrainer(tiny_model(), args, train_dataset=rows, eval_dataset=eval_rows, processing_class=tiny_tokenizer(),
                          peft_config=lora())
    trainer.train()
    return trainer


# method -> (rows of its view from 8 pairs, labels): pairs become 16 point-wise rows (chosen 1, rejected 0)
VIEWS = {"ulma": (16, {0.0, 1.0}), "pointwise_dpo": (16, {0.0, 1.0}), "dpo": (8, None), "sft": (8, {1.0})}


@pytest.mark.parametrize("method", sorted(VIEWS))
def test_ten_lines_train_every_view_on_a_local_jsonl_file(tmp_path, method):
    rows = load_dataset("json", data_files=str(EXAMPLE), split="train")  # TRL's prompt/chosen/rejected, plain text
    trainer = ten_lines(tmp_path, method, rows)
    n, labels = VIEWS[method]
    assert len(trainer.train_dataset) == n and trainer.state.global_step == 3
    if labels is not None:
        assert set(trainer.train_dataset["z"]) == labels
    history = [e for e in trainer.state.log_history if "loss" in e and "train_runtime" not in e]
    assert [e["step"] for e in history] == [0, 1, 2, 3] and all(torch.isfinite(torch.tensor(e["loss"])) for e in history)
    # the adapters moved (LoRA's B starts at 0)
    b = [p for name, p in trainer.model.named_parameters() if "lora_B" in name]
    assert b and max(float(p.abs().max()) for p in b) > 0
    assert ("log_ratio" in history[-1]) == (method != "sft")


def test_conversational_unpaired_rows_with_bool_labels(tmp_path):
    rows = Dataset.from_list([
        {"prompt": [{"role": "user", "content": f"question {i}?"}],
         "completion": [{"role": "assistant", "content": f"answer {i}"}], "label": i % 3 != 0}
        for i in range(6)])
    trainer = ten_lines(tmp_path, "ulma", rows, reference="adapters")
    assert trainer.train_dataset["z"] == [0.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    assert trainer.forward_counts["reference_forward_rows"] > 0  # ULMA's negatives through the disabled adapters
    with pytest.raises(ValueError, match="no pairwise view"):  # single replies cannot make pairs
        ten_lines(tmp_path, "dpo", rows)


def test_a_bad_row_is_named_with_its_field(tmp_path):
    rows = Dataset.from_list([{"prompt": "hi", "chosen": "a", "rejected": "b"}, {"prompt": "hi", "chosen": "", "rejected": "b"}])
    with pytest.raises(DataError, match=r"train_dataset, row 1: field 'chosen': empty"):
        ten_lines(tmp_path, "ulma", rows)


def test_config_checks_method_and_hyperparameters(tmp_path):
    with pytest.raises(ConfigError, match=r"ULMAConfig.beta = 0: must be a finite number > 0"):
        ULMAConfig(output_dir=str(tmp_path), beta=0)
    with pytest.raises(ConfigError, match="ULMAConfig.method: 'rlhf' is not trained by a loss"):
        ULMAConfig(output_dir=str(tmp_path), method="rlhf")
    assert ULMAConfig(output_dir=str(tmp_path)).remove_unused_columns is False
    # a profile's run is built on the same API: its TrainConfig becomes a ULMAConfig, report_to included
    args = training_arguments(TrainConfig(beta=0.3, report_to=["tensorboard"]), tmp_path, method="kto")
    assert isinstance(args, ULMAConfig) and (args.method, args.beta, args.report_to) == ("kto", 0.3, ["tensorboard"])
    with pytest.raises(ConfigError, match="train.report_to = 'tensorbord': must be none, all, or one"):
        TrainConfig(report_to="tensorbord")


def test_eval_dataset_logs_the_method_metrics(tmp_path):
    rows = load_dataset("json", data_files=str(EXAMPLE), split="train")
    trainer = ten_lines(tmp_path, "pointwise_dpo", rows.select(range(6)), rows.select(range(6, 8)))
    assert len(trainer.eval_dataset) == 4 and "reference_logps" in trainer.eval_dataset.column_names  # cached too
    metrics = trainer.evaluate()
    for name in ("eval_loss", "eval_rewards/chosen", "eval_rewards/rejected", "eval_rewards/margins", "eval_log_ratio"):
        assert name in metrics, sorted(metrics)


def test_adapter_reloads_with_auto_peft_and_has_a_model_card(tmp_path):
    base = tmp_path / "tiny-base"  # the base model as a folder (a hub id in practice): the adapter names it
    tiny_model().save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    profile = load_profile("tiny", {"model": str(base), "max_steps": 2, "learning_rate": 1e-2, "save_steps": 1000,
                                    "data_options": {"on_bad_row": "skip"}, "train_split": "train"})
    train(profile, "pointwise_dpo", "hh", tmp_path / "run", data_dir="fixtures")
    adapter = tmp_path / "run" / "adapter"
    loaded = AutoPeftModelForCausalLM.from_pretrained(adapter).eval()
    card = (adapter / "README.md").read_text()
    assert "pointwise_dpo" in card and "hh (" in card and str(base) in card and "| beta | 0.1 |" in card
    assert "library_name: peft" in card and "optimizer steps: 2" in card
    # the reloaded policy is the trained one: same log-probs as the run folder's own loader
    from ulma.runs import load_trained
    model, tokenizer, _ = load_trained(tmp_path / "run")
    ids = torch.tensor([tokenizer("\n\nHuman: hi\n\nAssistant: hello")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_readme_trainer_example_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "ULMATrainer" in b)
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    trainer = namespace["trainer"]
    assert trainer.state.global_step == trainer.args.max_steps and trainer.state.log_history[0]["step"] == 0
    saved = Path(trainer.args.output_dir)
    assert (saved / "adapter_model.safetensors").exists() and "ulma" in (saved / "README.md").read_text()
    assert json.loads((saved / "adapter_config.json").read_text())["r"] == 8
