"""Profiles are data: every shipped profile loads, overrides parse, and bad keys fail clearly."""
import dataclasses
import importlib
import json
import pkgutil
from pathlib import Path

import pytest

import ulma
from ulma import config
from ulma.config import (
    DTYPES,
    JUDGE_NAMES,
    ConfigError,
    EvalConfig,
    RLHFConfig,
    TrainConfig,
    available_profiles,
    load_profile,
    train_config_for,
)


def test_every_module_imports():
    # guards against modules that cannot be imported (a base path no test runs)
    for info in pkgutil.iter_modules(ulma.__path__):
        if info.name == "__main__":  # runs the CLI; tests/test_cli.py covers it
            continue
        importlib.import_module(f"ulma.{info.name}")


@pytest.mark.parametrize("name", ["tiny", "mini", "single_gpu", "paper"])
def test_shipped_profiles_load(name):
    assert name in available_profiles()
    profile = load_profile(name)
    assert profile.name == name and profile.train.lora_r == 8 and profile.train.beta == 0.1


def test_overrides_parse_values_and_sections():
    p = load_profile("tiny", ["learning_rate=1e-2", "eval.judge=null", "lora_target_modules=[q_proj,k_proj]",
                              "rlhf.ppo_steps=3"])
    assert p.train.learning_rate == 0.01 and isinstance(p.train.learning_rate, float)
    assert p.eval.judge is None and p.train.lora_target_modules == ["q_proj", "k_proj"] and p.rlhf.ppo_steps == 3
    assert load_profile("tiny").train.learning_rate != 0.01  # the loaded profile itself is untouched


@pytest.mark.parametrize("assignment, message", [
    ("no_such_field=1", "unknown config field 'no_such_field'"),
    ("train.nope=1", "unknown field 'nope' in section 'train'"),
    ("bogus.beta=1", "unknown config section 'bogus'"),
    ("learning_rate", "key=value"),
])
def test_bad_overrides_name_the_key(assignment, message):
    with pytest.raises(ValueError, match=message):
        load_profile("tiny", [assignment])


def test_unknown_profile_lists_the_available_ones():
    with pytest.raises(ValueError, match="available"):
        load_profile("huge")


def test_method_overrides_apply_per_method():
    paper = load_profile("paper")
    assert train_config_for(paper, "sft").per_device_train_batch_size == 16  # 128 sequences on 8 GPUs
    assert train_config_for(paper, "ulma").per_device_train_batch_size == 8  # 64 sequences on 8 GPUs


# --------------------------------------------------------------------------------------- validation
def test_shipped_profiles_are_valid_and_single_gpu_is_sized_as_documented():
    from ulma.losses import get_method

    p = load_profile("single_gpu")
    assert p.train.model == "HuggingFaceTB/SmolLM2-1.7B-Instruct" and p.train.dtype == "bfloat16"
    assert p.train.train_split == "train" and p.train.max_train_examples is None  # the full split
    assert p.train.lora_r == 8 and p.train.reference == "cached" and p.eval.test_split == "test"

    def sequences_per_step(method):
        cfg = train_config_for(p, method)
        pairs = 2 if get_method(method).data_kind == "pairwise" else 1
        return cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * pairs

    # the paper's 64 sequences per optimizer step (128 for SFT), as in `paper` on 8 GPUs
    assert [sequences_per_step(m) for m in ("ulma", "pointwise_dpo", "kto", "dpo", "sft")] == [64, 64, 64, 64, 128]
    paper = load_profile("paper")
    assert train_config_for(paper, "sft").per_device_train_batch_size * 8 == 128
    # the comment's arithmetic: ~84,600 rows / 64 per step ~ 1,320 optimizer steps per epoch
    assert round(84_600 / sequences_per_step("ulma"), -1) == 1320


def test_full_fine_tuning_is_explicit_and_a_negative_rank_is_an_error():
    assert load_profile("tiny", ["lora_r=0"]).train.lora_r == 0  # documented: no adapters, every weight
    with pytest.raises(ConfigError, match=r"train.lora_r = -1: must be an integer >= 1 \(the LoRA rank\), "
                                          r"or 0 for full fine-tuning"):
        load_profile("tiny", ["lora_r=-1"])


def test_config_error_is_a_value_error_with_the_field_path():
    with pytest.raises(ValueError) as raised:
        load_profile("tiny", {"beta": -1})
    assert isinstance(raised.value, ConfigError) and raised.value.path == "train.beta"
    assert str(raised.value) == "train.beta = -1: must be a finite number > 0"
    with pytest.raises(ConfigError, match="train.beta = -2"):
        TrainConfig(beta=-2)  # direct construction is checked too
    with pytest.raises(ConfigError, match="rlhf.mini_batch_size = 0"):
        RLHFConfig(mini_batch_size=0)


def test_numeric_strings_become_floats_and_ints_stay_ints(tmp_path):
    # YAML 1.1 reads `1e-4` as a string: it is taken as the number it says
    path = tmp_path / "mine.yaml"
    path.write_text("train:\n  learning_rate: 1e-4\n  num_train_epochs: 2\n")
    p = load_profile(path)
    assert p.train.learning_rate == 1e-4 and isinstance(p.train.learning_rate, float)
    # an int in a float field stays an int: validation never rewrites a valid value (the config hash)
    assert p.train.num_train_epochs == 2 and type(p.train.num_train_epochs) is int


def test_committed_results_validate_and_round_trip_unchanged():
    """Validation must not change a valid config: the run-config hash of every committed result would
    change, and `reproduce` would retrain runs that are done."""
    root = Path(__file__).resolve().parents[1] / "results"
    checked = 0
    for path in sorted(root.rglob("*.json")):
        record = json.loads(path.read_text())
        config = record.get("config") if isinstance(record, dict) else None
        if not isinstance(config, dict) or "train" not in config:
            continue
        # every value the record holds comes back as it was (ulma.store leaves report_to and the batch sizes
        # of no-grad passes out of a result's config; records older than a field lack it)
        for section, cls in (("train", TrainConfig), ("eval", EvalConfig)):
            values = dataclasses.asdict(cls(**config[section]))
            assert {k: values[k] for k in config[section]} == config[section], (path, section)
        checked += 1
    assert checked > 0 or not root.exists()


def test_judge_options_are_per_judge():
    p = load_profile("tiny")
    assert p.eval.options_for("minilm_harmlessness") == {"max_train_pairs": 64, "max_test_pairs": 64}
    assert p.eval.options_for("llm") == {} and p.eval.options_for("reward_model") == {}
    # a run folder written before options were per judge: the flat mapping belonged to eval.judge
    legacy = EvalConfig(judge="minilm_harmlessness", judge_options={"max_train_pairs": 8})
    assert legacy.judge_options == {"minilm_harmlessness": {"max_train_pairs": 8}}
    with pytest.raises(ConfigError, match="eval.judge_options.gpt: unknown judge"):
        EvalConfig(judge_options={"gpt": {"x": 1}})
    with pytest.raises(ConfigError, match="eval.judge_model: judge reward_model needs"):
        EvalConfig(judge="reward_model")


def test_choice_lists_match_the_modules_that_use_them():
    from transformers import SchedulerType

    from ulma import judges, losses, models, trainer

    assert set(JUDGE_NAMES) == set(judges.JUDGES)
    assert set(DTYPES) == set(models._DTYPES)
    assert config.AGGREGATIONS == losses.AGGREGATIONS and config.CONTINUOUS_LOSSES == losses.CONTINUOUS_LOSSES
    assert config.UNLIKELIHOOD_VARIANTS == losses.UNLIKELIHOOD_VARIANTS
    assert config.REFERENCE_MODES == trainer.REFERENCE_MODES
    assert set(config.LR_SCHEDULERS) <= {s.value for s in SchedulerType}


@pytest.mark.parametrize("text, message", [
    ("train: [1, 2]\n", "train = [1, 2]: must be a mapping of train fields"),
    ("train:\n  beta: 0.1\n  beta2: 3\n", "train.beta2: unknown field; did you mean 'beta'?"),
    ("experiments:\n  methods: []\n", "experiments.methods = []: must be a non-empty list of method names"),
    ("experiments:\n  method_overrides: {dpo: {lr: 1}}\n", "experiments.method_overrides.dpo.lr: unknown train field"),
    ("experiments:\n  sweeps: {betta: [0.1]}\n", "experiments.sweeps.betta: unknown train field; did you mean 'beta'?"),
    ("eval:\n  num_generations: -1\n", "eval.num_generations = -1: must be an integer >= 0, or null (all)"),
    ("rlhf:\n  ppo_steps: 0\n", "rlhf.ppo_steps = 0: must be an integer >= 1"),
    ("\tbad", "not valid YAML at line 1"),
])
def test_bad_profile_files_name_the_field(tmp_path, text, message):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_profile(path)
    assert message in str(raised.value) and "\n" not in str(raised.value)
