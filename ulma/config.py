"""Typed configuration and profiles.

A profile (``ulma/profiles/<name>.yaml``) is data, not code: it fills the dataclasses below, and one name
(`tiny`, `mini`, `single_gpu`, `paper`, or a path to a YAML file of the same shape) selects model, data,
sizes and judges everywhere. ``--set section.field=value`` (or just ``field=value`` when the name is
unique) overrides a field; the resolved config is saved beside every result.

Every dataclass checks its fields when it is built (``__post_init__`` -> ``validate()``, with the checks of
`ulma.checks`): each field's comment states its allowed range, and a value outside it raises `ConfigError`
(a ValueError) whose one-line message names the field path and the range, e.g. ``train.beta = -1: must be
a finite number > 0``. So a bad profile or ``--set`` fails in `load_profile`, before any data or model
loads. Validation never rewrites a valid value (the resolved config is hashed to recognise finished runs).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from ulma.checks import Check, ConfigError, Validated, show_value
from ulma.losses import METHODS

PROFILE_DIR = Path(__file__).parent / "profiles"

DTYPES = ("float32", "bfloat16", "float16")  # ulma.models.resolve_dtype; float64 is not a training dtype here
# transformers SchedulerType values that need no extra lr_scheduler_kwargs (the trainer passes none)
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt")
AGGREGATIONS = ("class_mean", "sample_mean")  # ulma.losses.AGGREGATIONS
CONTINUOUS_LOSSES = ("mse", "bce")  # ulma.losses.CONTINUOUS_LOSSES
UNLIKELIHOOD_VARIANTS = ("ascent", "token")  # ulma.losses.UNLIKELIHOOD_VARIANTS
LOGP_REDUCTIONS = ("sum", "mean")
REFERENCE_MODES = ("adapters", "copy", "cached")  # ulma.trainer.REFERENCE_MODES
JUDGE_NAMES = ("llm", "reward_model", "minilm_harmlessness")  # ulma.judges.JUDGES (a test keeps them equal)
MAX_SEED = 2**32 - 1  # numpy's seed range (transformers.set_seed seeds numpy too)


@dataclass
class TrainConfig(Validated):
    """Everything one training run needs besides the method name and the dataset name."""

    SECTION: ClassVar[str] = "train"

    model: str = "tiny"  # non-empty: `tiny`, `smollm2`, or a hub id / local path (Vicuna for `paper`)
    dtype: str = "float32"  # float32 | bfloat16 | float16 (training compute dtype of the weights)
    # LoRA (peft). lora_r >= 1: the adapters' rank. lora_r = 0 is the explicit switch to full fine-tuning
    # (every weight trained, no adapters); negative ranks are an error, never a silent full fine-tuning.
    lora_r: int = 8  # integer >= 0 (0 = full fine-tuning)
    lora_alpha: int = 32  # integer >= 1 (scale alpha / r)
    lora_dropout: float = 0.1  # [0, 1)
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])  # non-empty list of names
    # data
    data_dir: str | None = None  # local data root; `fixtures` = the project's test fixtures; None: $ULMA_DATA_DIR, else the hub
    train_split: str = "train"  # non-empty: train | test | mini_train | mini_test (the data module checks the name)
    max_train_examples: int | None = None  # >= 1 source examples (HH pairs, QA questions) used; every view row of them (None: all)
    max_prompt_length: int = 512  # >= 1 prompt tokens kept, cut from the start so the last user turn survives
    max_completion_length: int = 512  # >= 1 response tokens kept, cut at the end
    data_options: dict[str, Any] = field(default_factory=dict)  # mapping passed to ulma.data.load (labels=..., ...)
    # optimisation (transformers.TrainingArguments names)
    learning_rate: float = 1e-5  # finite, > 0
    lr_scheduler_type: str = "cosine"  # one of LR_SCHEDULERS
    warmup_ratio: float = 0.0  # [0, 1): the trainer passes it as warmup_steps, where a value >= 1 counts steps
    num_train_epochs: float = 3.0  # finite, > 0 (ignored when max_steps > 0)
    max_steps: int = -1  # -1 (train num_train_epochs) or >= 1 (overrides num_train_epochs)
    per_device_train_batch_size: int = 8  # >= 1
    # batches of rows of similar length (transformers' LengthGroupedSampler: random megabatches of 50
    # batches, each sorted by length) instead of random ones; on HH mini (SmolLM2, ULMA) it cut the padded
    # share of token slots from 0.28 to 0.03 (results/benchmarks/padding_train_cpu.json). Off by default, as in
    # transformers
    group_by_length: bool = False
    gradient_accumulation_steps: int = 1  # >= 1
    weight_decay: float = 0.0  # finite, >= 0
    max_grad_norm: float = 1.0  # finite, >= 0 (0: no clipping)
    logging_steps: int = 10  # >= 1
    save_steps: int = 500  # >= 1
    seed: int = 0  # [0, 2**32 - 1]
    # method hyperparameters (docs/METHODS.md); logp_reduction None = the released code's per-method choice
    beta: float = 0.1  # finite, > 0: the KL strength beta of u = beta (logp - logp_ref) + c
    c: float = 0.0  # finite, any sign: beta * log Z(x); the paper argues Z(x) ~ 1, so 0
    aggregation: str = "class_mean"  # class_mean | sample_mean
    continuous: str = "mse"  # mse (released code) | bce (ours)
    positive_threshold: float = 1.0  # (0, 1]: labels z >= it are positives
    logp_reduction: str | None = None  # sum | mean | None
    unlikelihood_variant: str = "ascent"  # ascent (released code) | token (Welleck et al. 2019)
    kto_desirable_weight: float = 1.0  # finite, > 0
    kto_undesirable_weight: float = 1.0  # finite, > 0
    # reference model: adapters (LoRA disabled) | copy (frozen copy) | cached (precomputed, on disk)
    reference: str = "cached"
    reference_batch_size: int = 16  # >= 1: batch of the no-grad pass that fills the cache
    # where the Trainer's logs go: none | all | an integration of transformers (tensorboard, wandb, ...) or a
    # list of them (TrainingArguments.report_to); not part of a run's identity or its results' config hash
    report_to: list[str] | str = "none"

    def validate(self) -> None:
        c = Check(self, self.SECTION)
        self._check_report_to()
        c.text("model")
        c.choice("dtype", DTYPES)
        c.integer("lora_r", low=0, expect="an integer >= 1 (the LoRA rank), or 0 for full fine-tuning")
        c.integer("lora_alpha", low=1)
        c.number("lora_dropout", low=0.0, high=1.0, high_open=True)
        c.texts("lora_target_modules", what="module names (e.g. [q_proj, v_proj])")
        if isinstance(self.data_dir, os.PathLike):
            self.data_dir = os.fspath(self.data_dir)  # a Path from Python code: the same string once saved
        c.text("data_dir", optional=True)
        c.text("train_split")
        c.integer("max_train_examples", low=1, optional="all examples")
        c.integer("max_prompt_length", low=1)
        c.integer("max_completion_length", low=1)
        c.mapping("data_options")
        c.number("learning_rate", low=0.0, low_open=True)
        c.choice("lr_scheduler_type", LR_SCHEDULERS)
        c.number("warmup_ratio", low=0.0, high=1.0, high_open=True)
        c.number("num_train_epochs", low=0.0, low_open=True)
        if self.max_steps != -1:
            c.integer("max_steps", low=1, expect="-1 (train num_train_epochs) or an integer >= 1")
        c.integer("per_device_train_batch_size", low=1)
        c.boolean("group_by_length")
        c.integer("gradient_accumulation_steps", low=1)
        c.number("weight_decay", low=0.0)
        c.number("max_grad_norm", low=0.0)
        c.integer("logging_steps", low=1)
        c.integer("save_steps", low=1)
        c.integer("seed", low=0, high=MAX_SEED)
        c.number("beta", low=0.0, low_open=True)
        c.number("c")
        c.choice("aggregation", AGGREGATIONS)
        c.choice("continuous", CONTINUOUS_LOSSES)
        c.number("positive_threshold", low=0.0, high=1.0, low_open=True)
        c.choice("logp_reduction", LOGP_REDUCTIONS, optional=True)
        c.choice("unlikelihood_variant", UNLIKELIHOOD_VARIANTS)
        c.number("kto_desirable_weight", low=0.0, low_open=True)
        c.number("kto_undesirable_weight", low=0.0, low_open=True)
        c.choice("reference", REFERENCE_MODES)
        c.integer("reference_batch_size", low=1)


    def _check_report_to(self) -> None:
        names = [self.report_to] if isinstance(self.report_to, str) else self.report_to
        if names in (["none"], ["all"]):
            return
        # transformers only once a logger is asked for: a profile (and --help) stays light
        from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

        known = ("none", "all", *INTEGRATION_TO_CALLBACK)
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n in known for n in names):
            Check(self, self.SECTION).fail("report_to", "none, all, or one or a list of " + ", ".join(INTEGRATION_TO_CALLBACK))


@dataclass
class EvalConfig(Validated):
    """Held-out metrics and generation (docs/EXPERIMENTS.md, Metrics)."""

    SECTION: ClassVar[str] = "eval"

    test_split: str = "test"  # non-empty split name
    max_eval_samples: int | None = None  # >= 1 pairs/rows scored for perplexity and preference accuracy (None: all)
    eval_batch_size: int = 8  # >= 1
    num_generations: int | None = None  # >= 0 test prompts generated and judged (None: all; 0: none)
    max_new_tokens: int = 512  # >= 1
    generation_batch_size: int = 16  # >= 1
    judge: str | None = None  # llm | reward_model | minilm_harmlessness | none | None (no judge)
    judge_model: str | None = None  # reward model id/path for judge=reward_model (None: none set)
    # Options per judge, keyed by judge name: {minilm_harmlessness: {max_train_pairs: 64}, llm: {call_deadline:
    # 60}}; `ulma.judges.get_judge(name, ...)` uses only the section of the judge it builds, so
    # `evaluate --judge llm` never receives the offline judge's options. A flat mapping (run folders written
    # before options were per judge) is read as the options of `judge`.
    judge_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def validate(self) -> None:
        c = Check(self, self.SECTION)
        c.text("test_split")
        c.integer("max_eval_samples", low=1, optional="all")
        c.integer("eval_batch_size", low=1)
        c.integer("num_generations", low=0, optional="all")
        c.integer("max_new_tokens", low=1)
        c.integer("generation_batch_size", low=1)
        c.choice("judge", (*JUDGE_NAMES, "none"), optional=True)
        c.text("judge_model", optional=True)
        c.mapping("judge_options")
        options = self.judge_options
        legacy = options and not any(k in JUDGE_NAMES or isinstance(v, dict) for k, v in options.items())
        if legacy and self.judge in JUDGE_NAMES:
            self.judge_options = options = {self.judge: options}  # the legacy flat form (see the field)
        for name, section in options.items():
            if name not in JUDGE_NAMES:
                raise ConfigError(f"{self.SECTION}.judge_options.{name}",
                                  f"unknown judge; keys must be judge names: {', '.join(JUDGE_NAMES)}")
            if not isinstance(section, dict):
                raise ConfigError(f"{self.SECTION}.judge_options.{name}",
                                  f" = {show_value(section)}: must be a mapping of that judge's options")
        if self.judge == "reward_model" and not (self.judge_model or options.get("reward_model", {}).get("model")):
            raise ConfigError(f"{self.SECTION}.judge_model", "judge reward_model needs a reward model id or folder")

    def options_for(self, judge: str) -> dict[str, Any]:
        """The options of `judge` alone (its section of `judge_options`)."""
        return dict(self.judge_options.get(judge) or {})


@dataclass
class RLHFConfig(Validated):
    """Reward model + PPO, defaults of the released code's era (docs/METHODS.md, RLHF baseline)."""

    SECTION: ClassVar[str] = "rlhf"

    reward_learning_rate: float = 1e-6  # finite, > 0
    reward_epochs: float = 1.0  # finite, > 0
    reward_batch_size: int = 8  # >= 1
    ppo_learning_rate: float = 1e-5  # finite, > 0
    ppo_steps: int = 100  # >= 1 PPO iterations (each: one batch of rollouts)
    rollout_batch_size: int = 8  # >= 1
    mini_batch_size: int = 2  # >= 1
    ppo_epochs: int = 1  # >= 1
    init_kl_coef: float = 0.2  # finite, >= 0
    target_kl: float = 6.0  # finite, > 0 (adaptive KL controller)
    kl_horizon: int = 10000  # >= 1
    gamma: float = 1.0  # [0, 1]
    lam: float = 0.95  # [0, 1] (GAE lambda)
    cliprange: float = 0.2  # finite, > 0
    cliprange_value: float = 0.2  # finite, > 0
    vf_coef: float = 0.1  # finite, >= 0
    temperature: float = 0.95  # finite, > 0
    top_p: float = 0.7  # (0, 1]
    top_k: int = 50  # >= 0 (0: no top-k cut)
    max_new_tokens: int = 512  # >= 1

    def validate(self) -> None:
        c = Check(self, self.SECTION)
        for name in ("reward_learning_rate", "reward_epochs", "ppo_learning_rate", "target_kl", "cliprange",
                     "cliprange_value", "temperature"):
            c.number(name, low=0.0, low_open=True)
        for name in ("reward_batch_size", "ppo_steps", "rollout_batch_size", "mini_batch_size", "ppo_epochs",
                     "kl_horizon", "max_new_tokens"):
            c.integer(name, low=1)
        for name in ("init_kl_coef", "vf_coef"):
            c.number(name, low=0.0)
        c.number("gamma", low=0.0, high=1.0)
        c.number("lam", low=0.0, high=1.0)
        c.number("top_p", low=0.0, high=1.0, low_open=True)
        c.integer("top_k", low=0)


@dataclass
class ExperimentConfig(Validated):
    """Which runs the notebooks make at this profile."""

    SECTION: ClassVar[str] = "experiments"

    # non-empty; each a method of ulma.losses.METHODS or rlhf
    methods: list[str] = field(default_factory=lambda: ["sft", "dpo", "pointwise_dpo", "unlikelihood", "kto", "ulma"])
    datasets: list[str] = field(default_factory=lambda: ["hh"])  # non-empty list of dataset names
    seeds: list[int] = field(default_factory=lambda: [0])  # non-empty; each in [0, 2**32 - 1]
    # more seeds for the trained runs a claim of the paper compares (ulma.claims.claim_arms): the protocol
    # asks >= 3 seeds there and >= 1 elsewhere; each in [0, 2**32 - 1], may be empty
    claim_seeds: list[int] = field(default_factory=list)
    notebook_timeout: int = 3600  # >= 1 seconds per notebook in `ulma reproduce`
    # per-method overrides of TrainConfig (the paper used 128 sequences per step for SFT, 64 otherwise);
    # keys: methods; values: TrainConfig fields, checked like train.* (Profile)
    method_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    # 06_ablations: TrainConfig field -> non-empty list of values, each checked like train.<field> (Profile)
    sweeps: dict[str, list[Any]] = field(default_factory=lambda: {"c": [0.0], "beta": [0.1]})
    # how a comparison's training budget is set (ulma.catalog.budget_overrides, docs/EXPERIMENTS.md):
    # "matched" (every method the same optimizer steps and sequences per step) | "paper" (same epochs)
    budget: str = "paper"

    def validate(self) -> None:
        known = tuple(METHODS)  # rlhf and base are registry entries too
        c = Check(self, self.SECTION)
        c.texts("methods", what="method names")
        for name in self.methods:
            if name not in known:
                raise ConfigError(f"{self.SECTION}.methods", f" = [..., {name!r}, ...]: each must be one of "
                                  + ", ".join(known))
        c.texts("datasets", what="dataset names")
        if not isinstance(self.seeds, list) or not self.seeds or not all(
                isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in self.seeds):
            c.fail("seeds", f"a non-empty list of integers in [0, {MAX_SEED}]")
        if not isinstance(self.claim_seeds, list) or not all(
                isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in self.claim_seeds):
            c.fail("claim_seeds", f"a list of integers in [0, {MAX_SEED}]")
        c.integer("notebook_timeout", low=1)
        c.mapping("method_overrides")
        for method, values in self.method_overrides.items():
            if method not in known:
                raise ConfigError(f"{self.SECTION}.method_overrides.{method}", "unknown method; known: "
                                  + ", ".join(known))
            if not isinstance(values, dict):
                raise ConfigError(f"{self.SECTION}.method_overrides.{method}",
                                  f" = {show_value(values)}: must be a mapping of train fields")
        c.choice("budget", ("matched", "paper"))
        c.mapping("sweeps")
        for name, values in self.sweeps.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{self.SECTION}.sweeps.{name}", f" = {show_value(values)}: must be a non-empty list")


@dataclass
class Profile:
    name: str
    description: str = ""
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    rlhf: RLHFConfig = field(default_factory=RLHFConfig)
    experiments: ExperimentConfig = field(default_factory=ExperimentConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """The cross-section checks: every method override and sweep value is a valid train config."""
        for method in self.experiments.method_overrides:
            train_config_for(self, method)
        base = dataclasses.asdict(self.train)
        for name, values in self.experiments.sweeps.items():
            path = f"experiments.sweeps.{name}"
            if name not in _field_names(TrainConfig):
                raise ConfigError(path, "unknown train field" + _did_you_mean(name, _field_names(TrainConfig)))
            for i, value in enumerate(values):
                try:
                    TrainConfig(**{**base, name: value})
                except ConfigError as err:
                    raise err.moved(f"train.{name}", f"{path}[{i}]") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def override(self, assignments: list[str] | dict[str, Any]) -> "Profile":
        """Return a copy with ``section.field=value`` (or unique ``field=value``) assignments applied.

        Values are parsed as YAML scalars/lists (``1e-4`` -> float, ``[a,b]`` -> list, ``null`` -> None).
        Raises ConfigError for an unknown or ambiguous key and for a value outside its field's range.
        """
        items = _parse_assignments(assignments)
        data = self.to_dict()
        for key, value in items.items():
            section, name = _resolve_key(key)
            data[section][name] = value
        return profile_from_dict(data)


_SECTIONS = {"train": TrainConfig, "eval": EvalConfig, "rlhf": RLHFConfig, "experiments": ExperimentConfig}


def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _did_you_mean(name: str, candidates) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _resolve_key(key: str) -> tuple[str, str]:
    if "." in key:
        section, name = key.split(".", 1)
        if section not in _SECTIONS:
            raise ConfigError(key, f"unknown config section {section!r}; sections: {', '.join(_SECTIONS)}")
        if name not in _field_names(_SECTIONS[section]):
            raise ConfigError(key, f"unknown field {name!r} in section {section!r}"
                              + _did_you_mean(name, _field_names(_SECTIONS[section])))
        return section, name
    owners = [s for s, cls in _SECTIONS.items() if key in _field_names(cls)]
    if not owners:
        every = [f"{s}.{n}" for s, cls in _SECTIONS.items() for n in _field_names(cls)]
        close = difflib.get_close_matches(key, [e.split(".", 1)[1] for e in every], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "; --set takes section.field=value, e.g. train.beta=0.5"
        raise ConfigError(key, f"unknown config field {key!r}{hint}")
    if len(owners) > 1:
        raise ConfigError(key, f"config field {key!r} is ambiguous: write one of "
                               + ", ".join(o + "." + key for o in owners))
    return owners[0], key


def _parse_assignments(assignments: list[str] | dict[str, Any]) -> dict[str, Any]:
    if isinstance(assignments, dict):
        return dict(assignments)
    out = {}
    for item in assignments:
        if "=" not in item:
            raise ConfigError("--set", f"expects key=value (e.g. train.beta=0.5), got {item!r}")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = _scalar(raw)
        except yaml.YAMLError as err:
            raise ConfigError(key.strip(), f"value {raw!r} is not a YAML scalar, list or mapping "
                                           f"({getattr(err, 'problem', None) or 'unreadable'})") from None
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
    """`cls` from a mapping; errors name `where` (the section, or a method override's path)."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(where, f" = {show_value(values)}: must be a mapping of {cls.SECTION} fields")
    known = _field_names(cls)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", f"unknown field{_did_you_mean(str(unknown[0]), known)}"
                          + (f" (and {len(unknown) - 1} more: {unknown[1:]})" if len(unknown) > 1 else ""))
    try:
        return cls(**values)
    except ConfigError as err:
        raise err.moved(cls.SECTION, where) from None


def profile_from_dict(data: dict[str, Any]) -> Profile:
    """A validated Profile from its dict form (a YAML file, a saved config.json); ConfigError otherwise."""
    if not isinstance(data, dict):
        raise ConfigError("profile", f"must be a mapping of sections ({', '.join(_SECTIONS)}), got {show_value(data)}")
    unknown = sorted(set(data) - {"name", "description", *_SECTIONS})
    if unknown:
        raise ConfigError(str(unknown[0]), "unknown profile section" + _did_you_mean(str(unknown[0]), _SECTIONS)
                          + f"; sections: name, description, {', '.join(_SECTIONS)}")
    return Profile(
        name=str(data.get("name", "custom")),
        description=str(data.get("description") or ""),
        **{s: _build(cls, data.get(s), s) for s, cls in _SECTIONS.items()},
    )


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def read_profile_file(path: Path) -> dict[str, Any]:
    """The mapping in a profile YAML file; ConfigError naming the file when it is missing or unreadable."""
    if not path.exists():
        raise ConfigError("profile", f"profile file {str(path)!r} does not exist; shipped profiles: "
                                     f"{', '.join(available_profiles())}")
    if not path.is_file():
        raise ConfigError("profile", f"{str(path)!r} is not a file (a profile is a YAML file)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError("profile", f"profile file {str(path)!r} is not UTF-8 text ({err.reason})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError("profile", f"profile file {str(path)!r} is not valid YAML{where}: "
                                     f"{getattr(err, 'problem', None) or err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("profile", f"profile file {str(path)!r} must hold a mapping of sections "
                                     f"({', '.join(_SECTIONS)}), not a {type(data).__name__}")
    return data


def load_profile(name_or_path: str | Path, overrides: list[str] | dict[str, Any] | None = None) -> Profile:
    """Load a profile by name (`tiny`, `mini`, `single_gpu`, `paper`) or from a YAML path, then apply
    overrides. Raises ConfigError (a ValueError) naming the field and its allowed range for any bad value."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ConfigError("profile", f"unknown profile {str(name_or_path)!r}; available: "
                                         f"{', '.join(available_profiles())} or a path to a .yaml file")
    data = read_profile_file(path)
    data.setdefault("name", path.stem)
    profile = profile_from_dict(data)
    return profile.override(overrides) if overrides else profile


def train_config_for(profile: Profile, method: str) -> TrainConfig:
    """The profile's TrainConfig with the per-method overrides applied."""
    values = dataclasses.asdict(profile.train)
    overrides = profile.experiments.method_overrides.get(method, {})
    where = f"experiments.method_overrides.{method}"
    unknown = sorted(set(overrides) - set(values))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", "unknown train field" + _did_you_mean(unknown[0], values))
    values.update(overrides)
    return _build(TrainConfig, values, where)


def to_json(obj: Any) -> str:
    return json.dumps(dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj, indent=2, sort_keys=True)
