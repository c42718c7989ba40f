"""The experiments of the paper, as data: what each numbered notebook compares (no code runs here).

An experiment (``EXPERIMENTS``) lists the datasets it covers, the variants it compares (a method of the
registry `ulma.losses.METHODS` plus TrainConfig overrides) and sweeps over a TrainConfig field whose values
the profile gives (``experiments.sweeps``). The main comparison's columns are the registry's
(`ulma.losses.compared_methods`). `run_profile` folds a variant's overrides into the profile one run
trains with. Running them is `ulma.grid`'s job.

Budgets (``profile.experiments.budget``, `budget_overrides`): ``matched`` gives every method of a comparison
the same number of optimizer steps S and the same number N of sequences per step (N = the profile's
``per_device_train_batch_size`` × ``gradient_accumulation_steps``; pairwise DPO takes N/2 pairs = N
sequences; SFT takes N positives per step for S steps, cycling its positives for as many epochs as that
needs); S is ``train.max_steps`` when set, else the steps of a point-wise method over the profile's epochs
(two point-wise rows per pair: one positive, one negative). RLHF's PPO stage takes S iterations of N
rollouts. ``paper`` keeps the paper's protocol: the same number of epochs for every method (a method with
twice the rows takes twice the steps). A run's record says which (``budget``).

Calibration (``06_calibration``): short runs over a grid of learning rate × β per method family, trained on
mini_train and evaluated on ``mini_valid`` (the last tenth of mini_train, never mini_test), that pick the
shared values the profile then uses.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from ulma.config import Profile, profile_from_dict, train_config_for
import itertools
import math

from ulma.losses import METHODS, compared_methods, get_method

ALL_METHODS = compared_methods()  # the main comparison's columns, in table order (from the registry)
BASE = "base"  # the untrained model's row (registry runner "none"), first in every comparison
POINTWISE_ROWS_PER_EXAMPLE = 2  # a pair gives a point-wise positive and a point-wise negative
BUDGET_LABELS = {"matched": "matched", "paper": "paper (same epochs)"}
RLHF_RUNNER = "rlhf"  # the registry's runner of the RLHF pipeline: its PPO stage takes the budget (ulma.rlhf)
# The calibration's families (docs/EXPERIMENTS.md, Calibration): the method each family is measured on, and
# the methods that take its chosen values. DPO and KTO compare summed log-ratios, the point-wise methods
# per-token-mean ones (point-wise DPO's β is theirs); SFT's family takes the learning rate alone.
CALIBRATION_FAMILIES: dict[str, tuple[str, ...]] = {
    "sft": ("sft", "unlikelihood", "negative_unlikelihood"),
    "dpo": ("dpo", "kto"),
    "pointwise_dpo": ("pointwise_dpo", "ulma", "positive_dpo", "negative_dpo"),
}


# ------------------------------------------------------------------------------------------ definitions
@dataclass(frozen=True)
class Variant:
    """One compared column of a table: a method plus TrainConfig overrides."""

    method: str  # a key of the registry ulma.losses.METHODS
    overrides: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig fields (dicts are merged)
    note: str = ""  # shown in the tables
    datasets: tuple[str, ...] = ()  # the only datasets it runs on (a data option one source has); empty: all


@dataclass(frozen=True)
class Sweep:
    """Variants ``<method>@<field>=<value>`` for each value of ``profile.experiments.sweeps[field]``;
    with several fields (``"learning_rate,beta"``) every combination, ``<method>@<f1>=<v1>,<f2>=<v2>``."""

    field: str  # a TrainConfig field, or several separated by commas (a grid)
    methods: tuple[str, ...]
    fixed: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig values every variant of the sweep takes

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(f.strip() for f in self.field.split(","))


@dataclass(frozen=True)
class Experiment:
    name: str  # the notebook's stem and the results folder
    title: str
    claim: str  # what the paper claims (the notebook's first cell)
    shows: str  # what the notebook shows
    datasets: tuple[str, ...] = ()
    variants: tuple[tuple[str, Variant], ...] = ()  # (label, variant), in table order
    sweeps: tuple[Sweep, ...] = ()
    dataset_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # TrainConfig per dataset
    eval_overrides: Mapping[str, Any] = field(default_factory=dict)  # EvalConfig fields (calibration: mini_valid)
    comparison: bool = False  # a comparison between methods: budgets matched (profile.experiments.budget)
    budget_fraction: float = 1.0  # of the matched steps S (calibration: short runs)
    part_of: str | None = None  # the notebook that runs it, when it has none of its own (06_calibration: 06)

    def variants_for(self, profile: Profile) -> dict[str, Variant]:
        """Labels → variants at this profile, sweeps expanded. Of the compared methods (``ALL_METHODS``)
        only those in ``profile.experiments.methods`` run; ablation-only methods always do."""
        skip = set(ALL_METHODS) - set(profile.experiments.methods)
        out = {label: v for label, v in self.variants if v.method not in skip}
        for sweep in self.sweeps:
            for method in sweep.methods:
                if method in skip:
                    continue
                config = train_config_for(profile, method)
                axes = [sorted(set([getattr(config, f), *profile.experiments.sweeps.get(f, [])]))  # default always
                        for f in sweep.fields]
                for values in itertools.product(*axes):
                    label = ",".join(f"{f}={_fmt(v)}" for f, v in zip(sweep.fields, values))
                    out[f"{method}@{label}"] = Variant(method, {**sweep.fixed, **dict(zip(sweep.fields, values))})
        return out

    def datasets_for(self, profile: Profile) -> list[str]:
        return [d for d in self.datasets if d in profile.experiments.datasets]

    def variant(self, label: str, profile: Profile) -> Variant:
        known = self.variants_for(profile)
        if label in known:
            return known[label]
        if "@" not in label and label in METHODS:
            return Variant(label)  # any plain method runs in any experiment
        raise ValueError(f"unknown variant {label!r} of {self.name}; known: {sorted(known)}")


def _fmt(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


def _plain(methods) -> tuple[tuple[str, Variant], ...]:
    return tuple((m, Variant(m)) for m in methods)


_BASE_ROW = ((BASE, Variant(BASE, note="untrained: the starting model")),)


# QA-feedback carries graded preferences: the paper's continuous-label setting (docs/DATASETS.md)
_CONTINUOUS_QA = {"qa_feedback": {"data_options": {"labels": "continuous"}}}
# ... and its binary view (corrected answer 1, an erroneous prediction 0) beside it: the claim that point-wise
# DPO does at least as well with continuous labels compares the two (ulma.claims)
_BINARY_QA = ("pointwise_dpo@labels=binary",
              Variant("pointwise_dpo", {"data_options": {"labels": "binary"}}, datasets=("qa_feedback",),
                      note="binary labels: the corrected answer 1, an erroneous prediction 0"))

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in [
        Experiment(
            "01_datasets",
            "Datasets and their three views",
            "ULMA learns from demonstrations (SFT data) and point-wise preference; every source is turned "
            "into a pairwise, a point-wise and an SFT view.",
            "Sizes, label balance and token lengths of every dataset and view at this profile.",
            datasets=("hh", "golden_hh", "red_team", "qa_feedback"),
        ),
        Experiment(
            "02_gradients",
            "Gradient analysis",
            "Point-wise DPO's gradient on a positive is the SFT gradient scaled by β·σ(−u), an implicit KL "
            "regulariser; on a negative it is a bounded unlikelihood. ULMA removes the regulariser on "
            "positives (weight 1). Each sample's weight depends on its own log-ratio only, unlike DPO's.",
            "The per-sample gradient weight −∂L/∂log π_θ(y|x) against the log-ratio, computed with autograd "
            "from the package's loss functions: pure math, no training.",
        ),
        Experiment(
            "03_pointwise_dpo",
            "Point-wise DPO against DPO and RLHF",
            "Point-wise DPO matches or beats pairwise DPO and RLHF on binary labels (HH) and, unlike DPO, "
            "applies to continuous labels (red-team, QA-feedback).",
            "Perplexity, preference accuracy and judge win rate of DPO, RLHF and point-wise DPO per dataset.",
            datasets=("hh", "red_team", "qa_feedback"),
            variants=_BASE_ROW + _plain(("dpo", "rlhf", "pointwise_dpo")) + (_BINARY_QA,),
            dataset_overrides=_CONTINUOUS_QA,
            comparison=True,
        ),
        Experiment(
            "04_ulma",
            "The main comparison",
            "ULMA (SFT on positives, point-wise DPO on negatives, one step) beats SFT, RLHF, DPO, point-wise "
            "DPO and unlikelihood on HH, QA-feedback and red-team.",
            "Every method on every dataset: perplexity, preference accuracy, judge win/tie/lose.",
            datasets=("hh", "red_team", "qa_feedback"),
            variants=_BASE_ROW + _plain(ALL_METHODS),
            dataset_overrides=_CONTINUOUS_QA,
            comparison=True,
        ),
        Experiment(
            "05_golden_hh",
            "Golden HH against HH",
            "Better positive data (Golden HH: chosen replies rewritten to be harmless and helpful) helps "
            "ULMA most, because ULMA fits positives without a KL brake.",
            "Every method trained on HH and on Golden HH, evaluated the same way.",
            datasets=("hh", "golden_hh"),
            variants=_BASE_ROW + _plain(ALL_METHODS),
            comparison=True,
        ),
        Experiment(
            "06_ablations",
            "Ablations: positives, negatives, c = β·log Z, β",
            "On positives, plain SFT does at least as well as positive DPO (the KL brake is unneeded); on "
            "negatives, negative DPO is far better than unlikelihood, whose gradient is unbounded. "
            "Z(x) ≈ 1 (c = 0) is a safe choice.",
            "Positives only (SFT vs positive DPO), negatives only (unlikelihood vs negative DPO), and "
            "sweeps over c and β for point-wise DPO and ULMA.",
            datasets=("hh",),
            variants=_BASE_ROW + (
                ("sft", Variant("sft", note="positives only")),
                ("positive_dpo", Variant("positive_dpo", note="positives only")),
                ("negative_unlikelihood", Variant("negative_unlikelihood", note="negatives only")),
                ("negative_dpo", Variant("negative_dpo", note="negatives only")),
            ),
            sweeps=(Sweep("c", ("pointwise_dpo", "ulma")), Sweep("beta", ("pointwise_dpo", "ulma"))),
            comparison=True,
        ),
        Experiment(
            "06_calibration",
            "Calibration of the shared hyperparameters (part of 06_ablations)",
            "— (not a claim of the paper: the protocol's choice of learning rate, steps and β, made before any "
            "run on mini_test)",
            "Short runs (half the matched steps) over learning rate × β for one method of each family: DPO "
            "(summed log-ratios), point-wise DPO (per-token-mean log-ratios: its β is ULMA's and the other "
            "point-wise methods'), SFT (learning rate alone); trained on mini_train and measured on mini_valid "
            "(the last tenth of mini_train): did the objective move, validation perplexity and headline "
            "preference accuracy.",
            datasets=("hh",),
            sweeps=(Sweep("learning_rate", ("sft",)), Sweep("learning_rate,beta", ("dpo", "pointwise_dpo"))),
            eval_overrides={"test_split": "mini_valid", "num_generations": 0},
            comparison=True,
            budget_fraction=0.5,
            part_of="06_ablations",
        ),
        Experiment(
            "07_efficiency",
            "Training cost",
            "ULMA and point-wise DPO need one training stage and, with a cached reference, one policy forward "
            "per sample; RLHF needs a reward model and PPO rollouts.",
            "Wall time, tokens/s, peak memory and forward passes per step of every method, and the RLHF "
            "pipeline (reward model + PPO) against ULMA in one step.",
            datasets=("hh",),
            variants=_plain(ALL_METHODS),
            # the main comparison's budgets: every method does the same work (S steps of N sequences), so its
            # cost is compared like for like, and its runs are 04's HH runs (reused, never trained twice)
            comparison=True,
        ),
        Experiment(
            "08_figures",
            "Every figure from results/",
            "—",
            "Redraws every figure of notebooks 02–07 from the JSON and CSV files under results/ alone: no "
            "training, no model.",
        ),
    ]
}


def get_experiment(name: str) -> Experiment:
    """An experiment by name (``04_ulma``) or number prefix (``04``)."""
    if name in EXPERIMENTS:
        return EXPERIMENTS[name]
    matches = [e for key, e in EXPERIMENTS.items() if key.split("_")[0] == name and e.part_of is None]
    if len(matches) == 1:
        return matches[0]
    raise ValueError(f"unknown experiment {name!r}; known: {sorted(EXPERIMENTS)}")


def run_profile(profile: Profile, experiment: Experiment, dataset: str, variant: Variant, seed: int) -> Profile:
    """The profile one run trains with: per-method overrides, the budget (`budget_overrides`, for a
    comparison), per-dataset and variant overrides folded into ``train`` (and the budget's PPO settings
    into ``rlhf``, the experiment's eval overrides into ``eval``)."""
    values = dataclasses.asdict(train_config_for(profile, variant.method))
    budget, rlhf = (budget_overrides(profile, variant.method, experiment.budget_fraction) if experiment.comparison
                    else ({}, {}))
    for overrides in (budget, experiment.dataset_overrides.get(dataset, {}), variant.overrides, {"seed": seed}):
        for key, value in overrides.items():
            if isinstance(value, Mapping) and isinstance(values.get(key), Mapping):
                values[key] = {**values[key], **value}
            else:
                values[key] = copy.deepcopy(value)
    data = profile.to_dict()
    data["train"] = values
    data["rlhf"].update(rlhf)
    data["eval"].update(experiment.eval_overrides)
    data["experiments"]["method_overrides"] = {}  # already folded in: every reader sees the same values
    return profile_from_dict(data)


# ---------------------------------------------------------------------------------------------- budgets
def sequences_per_step(profile: Profile) -> int:
    """N: the sequences every method takes per optimizer step under the matched budget."""
    return profile.train.per_device_train_batch_size * profile.train.gradient_accumulation_steps


def matched_steps(profile: Profile) -> int:
    """S: ``train.max_steps`` when set, else a point-wise method's steps over the profile's epochs."""
    train = profile.train
    if train.max_steps > 0:
        return train.max_steps
    if train.max_train_examples is None:
        raise ValueError("experiments.budget = matched needs train.max_steps or train.max_train_examples "
                         "(the step count S every method takes)")
    rows = train.max_train_examples * POINTWISE_ROWS_PER_EXAMPLE * train.num_train_epochs
    return max(1, math.ceil(rows / sequences_per_step(profile)))


def budget_overrides(profile: Profile, method: str, fraction: float = 1.0) -> tuple[dict[str, Any], dict[str, Any]]:
    """(TrainConfig overrides, RLHFConfig overrides) of `method` under ``profile.experiments.budget``.

    ``paper``: none (each method its own epochs). ``matched``: S steps of N sequences (module docstring);
    a pairwise batch of B pairs holds 2B sequences, so DPO takes N/2 pairs per step. `fraction` < 1: that
    share of S (short calibration runs), under either budget."""
    if method == BASE or (profile.experiments.budget == "paper" and fraction == 1.0):
        return {}, {}
    steps, n = max(1, math.ceil(matched_steps(profile) * fraction)), sequences_per_step(profile)
    entry = get_method(method)
    if entry.runner == RLHF_RUNNER:
        return {}, {"ppo_steps": steps, "rollout_batch_size": n}
    per_device = profile.train.per_device_train_batch_size
    if entry.data_kind == "pairwise":
        if per_device % 2:
            raise ValueError(f"experiments.budget = matched: train.per_device_train_batch_size = {per_device} "
                             "must be even (pairwise DPO takes half as many pairs: 2 sequences each)")
        per_device //= 2
    return {"max_steps": steps, "per_device_train_batch_size": per_device,
            "gradient_accumulation_steps": profile.train.gradient_accumulation_steps}, {}


def run_budget(profile: Profile, experiment: Experiment, run: Profile, method: str) -> dict[str, Any]:
    """What a run's record says of its budget: the rule, and the steps (None: by epochs) and sequences per
    optimizer step it trained with (`run` is its `run_profile`)."""
    entry = get_method(method)
    rule = profile.experiments.budget if experiment.comparison else "paper"
    if entry.runner == "none":
        return {"rule": rule, "label": "untrained", "steps": 0, "sequences_per_step": 0}
    if entry.runner == RLHF_RUNNER:
        steps, n = run.rlhf.ppo_steps, run.rlhf.rollout_batch_size
    else:
        steps = run.train.max_steps if run.train.max_steps > 0 else None
        n = run.train.per_device_train_batch_size * run.train.gradient_accumulation_steps
        n *= 2 if entry.data_kind == "pairwise" else 1
    label = BUDGET_LABELS[rule] + (f", {experiment.budget_fraction:g} of the steps" if experiment.budget_fraction != 1 else "")
    return {"rule": rule, "label": label, "steps": steps, "sequences_per_step": n}


def budget_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record's budget: {"rule", "label", "steps", "sequences_per_step"}; records written before budgets
    existed followed the paper's protocol (same epochs)."""
    budget = dict(record.get("budget") or {"rule": "paper"})
    budget.setdefault("label", BUDGET_LABELS.get(budget["rule"], budget["rule"]))
    return budget
