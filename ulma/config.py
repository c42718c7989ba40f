"""Typed configuration and profiles.

A profile (``ulma/profiles/<name>.yaml``) is data, not code: it fills the dataclasses below, and one name
(`tiny`, `mini`, `paper`, or a path to a YAML file of the same shape) selects model, data, sizes and judges
everywhere. ``--set section.field=value`` (or just ``field=value`` when the name is unique) overrides a
field; the resolved config is saved beside every result.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROFILE_DIR = Path(__file__).parent / "profiles"


@dataclass
class TrainConfig:
    """Everything one training run needs besides the method name and the dataset name."""

    model: str = "tiny"  # `tiny`, `smollm2`, or a hub id / local path (Vicuna for `paper`)
    dtype: str = "float32"  # float32 | bfloat16 | float16 (training compute dtype of the weights)
    # LoRA (peft); lora_r = 0 means full fine-tuning
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    # data
    data_dir: str | None = None  # local data root; `fixtures` = the project's test fixtures; None: $ULMA_DATA_DIR, else the hub
    train_split: str = "train"  # train | test | mini_train | mini_test
    max_train_examples: int | None = None  # source examples (HH pairs, QA questions) used; every view row of them (None: all)
    max_prompt_length: int = 512  # prompt tokens kept, cut from the start so the last user turn survives
    max_completion_length: int = 512  # response tokens kept, cut at the end
    data_options: dict[str, Any] = field(default_factory=dict)  # passed to ulma.data.load (labels=..., ...)
    # optimisation (transformers.TrainingArguments names)
    learning_rate: float = 1e-5
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.0
    num_train_epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides num_train_epochs
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    logging_steps: int = 10
    save_steps: int = 500
    seed: int = 0
    # method hyperparameters (docs/METHODS.md); logp_reduction None = the released code's per-method choice
    beta: float = 0.1
    c: float = 0.0  # beta * log Z(x); the paper argues Z(x) ~ 1, so 0
    aggregation: str = "class_mean"  # class_mean | sample_mean
    continuous: str = "mse"  # mse (released code) | bce (ours)
    positive_threshold: float = 1.0
    logp_reduction: str | None = None  # sum | mean | None
    unlikelihood_variant: str = "ascent"  # ascent (released code) | token (Welleck et al. 2019)
    kto_desirable_weight: float = 1.0
    kto_undesirable_weight: float = 1.0
    # reference model: adapters (LoRA disabled) | copy (frozen copy) | cached (precomputed, on disk)
    reference: str = "cached"
    reference_batch_size: int = 16  # batch of the no-grad pass that fills the cache


@dataclass
class EvalConfig:
    """Held-out metrics and generation (docs/EXPERIMENTS.md, Metrics)."""

    test_split: str = "test"
    max_eval_samples: int | None = None  # pairs/rows scored for perplexity and preference accuracy
    eval_batch_size: int = 8
    num_generations: int | None = None  # test prompts generated and judged (None: all)
    max_new_tokens: int = 512
    generation_batch_size: int = 16
    judge: str | None = None  # llm | reward_model | minilm_harmlessness | None (no judge)
    judge_model: str | None = None  # reward model id/path for judge=reward_model
    judge_options: dict[str, Any] = field(default_factory=dict)  # passed to the judge (max_train_pairs=... for the offline one)


@dataclass
class RLHFConfig:
    """Reward model + PPO, defaults of the released code's era (docs/METHODS.md, RLHF baseline)."""

    reward_learning_rate: float = 1e-6
    reward_epochs: float = 1.0
    reward_batch_size: int = 8
    ppo_learning_rate: float = 1e-5
    ppo_steps: int = 100  # PPO iterations (each: one batch of rollouts)
    rollout_batch_size: int = 8
    mini_batch_size: int = 2
    ppo_epochs: int = 1
    init_kl_coef: float = 0.2
    target_kl: float = 6.0
    kl_horizon: int = 10000
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    temperature: float = 0.95
    top_p: float = 0.7
    top_k: int = 50
    max_new_tokens: int = 512


@dataclass
class ExperimentConfig:
    """Which runs the notebooks make at this profile."""

    methods: list[str] = field(default_factory=lambda: ["sft", "dpo", "pointwise_dpo", "unlikelihood", "kto", "ulma"])
    datasets: list[str] = field(default_factory=lambda: ["hh"])
    seeds: list[int] = field(default_factory=lambda: [0])
    notebook_timeout: int = 3600  # seconds per notebook in `ulma reproduce`
    # per-method overrides of TrainConfig (the paper used 128 sequences per step for SFT, 64 otherwise)
    method_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    sweeps: dict[str, list[Any]] = field(default_factory=lambda: {"c": [0.0], "beta": [0.1]})  # 06_ablations: TrainConfig field -> values


@dataclass
class Profile:
    name: str
    description: str = ""
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    rlhf: RLHFConfig = field(default_factory=RLHFConfig)
    experiments: ExperimentConfig = field(default_factory=ExperimentConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def override(self, assignments: list[str] | dict[str, Any]) -> "Profile":
        """Return a copy with ``section.field=value`` (or unique ``field=value``) assignments applied.

        Values are parsed as YAML scalars/lists (``1e-4`` -> float, ``[a,b]`` -> list, ``null`` -> None).
        """
        items = _parse_assignments(assignments)
        data = self.to_dict()
        for key, value in items.items():
            section, name = _resolve_key(key)
            data[section][name] = value
        return profile_from_dict(data)


_SECTIONS = {"train": TrainConfig, "eval": EvalConfig, "rlhf": RLHFConfig, "experiments": ExperimentConfig}


def _resolve_key(key: str) -> tuple[str, str]:
    if "." in key:
        section, name = key.split(".", 1)
        if section not in _SECTIONS:
            raise ValueError(f"unknown config section {section!r} in {key!r}; sections: {sorted(_SECTIONS)}")
        if name not in {f.name for f in dataclasses.fields(_SECTIONS[section])}:
            raise ValueError(f"unknown field {name!r} in section {section!r}")
        return section, name
    owners = [s for s, cls in _SECTIONS.items() if key in {f.name for f in dataclasses.fields(cls)}]
    if not owners:
        raise ValueError(f"unknown config field {key!r}")
    if len(owners) > 1:
        raise ValueError(f"config field {key!r} is ambiguous: write one of {[o + '.' + key for o in owners]}")
    return owners[0], key


def _parse_assignments(assignments: list[str] | dict[str, Any]) -> dict[str, Any]:
    if isinstance(assignments, dict):
        return dict(assignments)
    out = {}
    for item in assignments:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        out[key.strip()] = _scalar(raw)
    return out


def _scalar(raw: str) -> Any:
    """A YAML scalar, with `1e-4` read as a float (YAML 1.1 wants `1.0e-4` and would give a string)."""
    if not raw.strip():
        return None
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _build(cls, values: dict[str, Any] | None, where: str):
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} in profile section {where!r}")
    return cls(**values)


def profile_from_dict(data: dict[str, Any]) -> Profile:
    unknown = sorted(set(data) - {"name", "description", *_SECTIONS})
    if unknown:
        raise ValueError(f"unknown profile section(s) {unknown}")
    return Profile(
        name=data.get("name", "custom"),
        description=data.get("description", ""),
        **{s: _build(cls, data.get(s), s) for s, cls in _SECTIONS.items()},
    )


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | Path, overrides: list[str] | dict[str, Any] | None = None) -> Profile:
    """Load a profile by name (`tiny`, `mini`, `paper`) or from a YAML path, then apply overrides."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ValueError(f"unknown profile {name_or_path!r}; available: {available_profiles()} or a YAML path")
    data = yaml.safe_load(path.read_text()) or {}
    data.setdefault("name", path.stem)
    profile = profile_from_dict(data)
    return profile.override(overrides) if overrides else profile


def train_config_for(profile: Profile, method: str) -> TrainConfig:
    """The profile's TrainConfig with the per-method overrides applied."""
    values = dataclasses.asdict(profile.train)
    values.update(profile.experiments.method_overrides.get(method, {}))
    return _build(TrainConfig, values, f"experiments.method_overrides.{method}")


def to_json(obj: Any) -> str:
    return json.dumps(dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj, indent=2, sort_keys=True)
