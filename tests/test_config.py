"""Profiles are data: every shipped profile loads, overrides parse, and bad keys fail clearly."""
import importlib
import pkgutil

import pytest

import ulma
from ulma.config import available_profiles, load_profile, train_config_for


def test_every_module_imports():
    # guards against modules that cannot be imported (a base path no test runs)
    for info in pkgutil.iter_modules(ulma.__path__):
        if info.name == "__main__":  # runs the CLI; tests/test_cli.py covers it
            continue
        importlib.import_module(f"ulma.{info.name}")


@pytest.mark.parametrize("name", ["tiny", "mini", "paper"])
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
