"""`ULMAConfig`: `transformers.TrainingArguments` plus the method and its hyperparameters, the settings of a
`ulma.loss_trainer.ULMATrainer` (as TRL keeps `DPOConfig` beside `DPOTrainer`).

Its method fields are the TrainConfig fields of the same name (`METHOD_FIELDS`) and are checked by the same
rules, so that a profile's run and a user's script cannot disagree on what a value means.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from transformers import TrainingArguments

from ulma.config import AGGREGATIONS, CONTINUOUS_LOSSES, LOGP_REDUCTIONS, UNLIKELIHOOD_VARIANTS, ConfigError, TrainConfig
from ulma.losses import get_method
from ulma.reference import REFERENCE_MODES

# the ULMAConfig fields that are TrainConfig fields of the same name and meaning (validated by TrainConfig)
METHOD_FIELDS = ("beta", "c", "aggregation", "continuous", "positive_threshold", "logp_reduction",
                 "unlikelihood_variant", "kto_desirable_weight", "kto_undesirable_weight", "reference",
                 "reference_batch_size", "max_prompt_length", "max_completion_length")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class ULMAConfig(TrainingArguments):
    """`transformers.TrainingArguments` plus the method and its hyperparameters (docs/METHODS.md).

    The method fields mean what the TrainConfig fields of the same name mean and are checked the same
    way (a bad value raises `ulma.config.ConfigError` naming ``ULMAConfig.<field>``). Defaults differ
    from TrainingArguments where ulma needs it: ``remove_unused_columns=False`` (the collators read the
    token columns), ``learning_rate=1e-5``, ``logging_steps=10``.
    """

    method: str = field(default="ulma", metadata=_help(
        "a method of ulma.losses.METHODS trained by a loss: ulma, pointwise_dpo, dpo, sft, kto, unlikelihood, ..."))
    beta: float = field(default=0.1, metadata=_help("> 0: the KL strength of the implicit reward u = beta (logp - logp_ref) + c"))
    c: float = field(default=0.0, metadata=_help("any sign: beta log Z(x) in u; the paper argues Z(x) ~ 1, so 0"))
    aggregation: str = field(default="class_mean", metadata=_help(
        f"{' | '.join(AGGREGATIONS)}: mean loss per class (released code) or sum over the batch size"))
    continuous: str = field(default="mse", metadata=_help(
        f"{' | '.join(CONTINUOUS_LOSSES)}: the loss of non-positive rows when a batch has labels in (0, 1)"))
    positive_threshold: float = field(default=1.0, metadata=_help("(0, 1]: rows with label >= it are positives"))
    logp_reduction: str | None = field(default=None, metadata=_help(
        f"{' | '.join(LOGP_REDUCTIONS)} of the response's token log-probs, or None: the method's released choice"))
    unlikelihood_variant: str = field(default="ascent", metadata=_help(
        f"{' | '.join(UNLIKELIHOOD_VARIANTS)}: +logp on negatives (released code) or -sum log(1 - p) (Welleck et al.)"))
    kto_desirable_weight: float = field(default=1.0, metadata=_help("> 0: KTO's lambda_D on positives (TRL: desirable_weight)"))
    kto_undesirable_weight: float = field(default=1.0, metadata=_help("> 0: KTO's lambda_U on negatives (TRL: undesirable_weight)"))
    reference: str = field(default="cached", metadata=_help(
        f"{' | '.join(REFERENCE_MODES)}: pi_ref = the policy with LoRA disabled, a frozen copy, or precomputed once "
        "and cached on disk (TRL: precompute_ref_log_probs)"))
    reference_batch_size: int = field(default=16, metadata=_help(">= 1: batch size of the no-grad pass filling the cache"))
    max_prompt_length: int = field(default=512, metadata=_help(">= 1 prompt tokens kept, cut from the start"))
    max_completion_length: int = field(default=512, metadata=_help(">= 1 response tokens kept, cut at the end"))
    learning_rate: float = field(default=1e-5, metadata=_help("AdamW's initial learning rate"))
    logging_steps: float = field(default=10, metadata=_help("log every N optimizer steps"))
    remove_unused_columns: bool = field(default=False, metadata=_help(
        "keep False: ulma's collators read the token columns the model's forward does not take"))

    def __post_init__(self):
        super().__post_init__()
        try:
            spec = get_method(self.method)
        except ValueError as err:
            raise ConfigError("ULMAConfig.method", str(err)) from None
        if spec.loss_fn is None:
            raise ConfigError("ULMAConfig.method", f"{self.method!r} is not trained by a loss "
                              f"(runner {spec.runner!r}): use ulma.trainer.train")
        try:  # the same ranges as a profile's train section
            TrainConfig(**{name: getattr(self, name) for name in METHOD_FIELDS})
        except ConfigError as err:
            raise err.moved("train", "ULMAConfig") from None

    @classmethod
    def from_arguments(cls, args: TrainingArguments, **method_fields) -> "ULMAConfig":
        """A ULMAConfig with the settings of plain TrainingArguments `args` and the given method fields."""
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
        return cls(**values, **method_fields)
