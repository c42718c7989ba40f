"""The experiments of the paper, as data: what each numbered notebook compares (no code runs here).

An experiment (``EXPERIMENTS``) lists the datasets it covers, the variants it compares (a method of the
registry `ulma.losses.METHODS` plus TrainConfig overrides) and sweeps over a TrainConfig field whose values
the profile gives (``experiments.sweeps``). The main comparison's columns are the registry's
(`ulma.losses.compared_methods`). `run_profile` folds a variant's overrides into the profile one run
trains with. Running them is `ulma.grid`'s job.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from ulma.config import Profile, profile_from_dict, train_config_for
from ulma.losses import METHODS, compared_methods

ALL_METHODS = compared_methods()  # the main comparison's columns, in table order (from the registry)


# ------------------------------------------------------------------------------------------ definitions
@dataclass(frozen=True)
class Variant:
    """One compared column of a table: a method plus TrainConfig overrides."""

    method: str  # a key of the registry ulma.losses.METHODS
    overrides: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig fields (dicts are merged)
    note: str = ""  # shown in the tables


@dataclass(frozen=True)
class Sweep:
    """Variants ``<method>@<field>=<value>`` for each value of ``profile.experiments.sweeps[field]``."""

    field: str  # a TrainConfig field
    methods: tuple[str, ...]


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

    def variants_for(self, profile: Profile) -> dict[str, Variant]:
        """Labels → variants at this profile, sweeps expanded. Of the compared methods (``ALL_METHODS``)
        only those in ``profile.experiments.methods`` run; ablation-only methods always do."""
        skip = set(ALL_METHODS) - set(profile.experiments.methods)
        out = {label: v for label, v in self.variants if v.method not in skip}
        for sweep in self.sweeps:
            for method in sweep.methods:
                if method in skip:
                    continue
                default = getattr(train_config_for(profile, method), sweep.field)  # the baseline point, always
                for value in sorted(set([default, *profile.experiments.sweeps.get(sweep.field, [])])):
                    out[f"{method}@{sweep.field}={_fmt(value)}"] = Variant(method, {sweep.field: value})
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


# QA-feedback carries graded preferences: the paper's continuous-label setting (docs/DATASETS.md)
_CONTINUOUS_QA = {"qa_feedback": {"data_options": {"labels": "continuous"}}}

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
            variants=_plain(("dpo", "rlhf", "pointwise_dpo")),
            dataset_overrides=_CONTINUOUS_QA,
        ),
        Experiment(
            "04_ulma",
            "The main comparison",
            "ULMA (SFT on positives, point-wise DPO on negatives, one step) beats SFT, RLHF, DPO, point-wise "
            "DPO and unlikelihood on HH, QA-feedback and red-team.",
            "Every method on every dataset: perplexity, preference accuracy, judge win/tie/lose.",
            datasets=("hh", "red_team", "qa_feedback"),
            variants=_plain(ALL_METHODS),
            dataset_overrides=_CONTINUOUS_QA,
        ),
        Experiment(
            "05_golden_hh",
            "Golden HH against HH",
            "Better positive data (Golden HH: chosen replies rewritten to be harmless and helpful) helps "
            "ULMA most, because ULMA fits positives without a KL brake.",
            "Every method trained on HH and on Golden HH, evaluated the same way.",
            datasets=("hh", "golden_hh"),
            variants=_plain(ALL_METHODS),
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
            variants=(
                ("sft", Variant("sft", note="positives only")),
                ("positive_dpo", Variant("positive_dpo", note="positives only")),
                ("negative_unlikelihood", Variant("negative_unlikelihood", note="negatives only")),
                ("negative_dpo", Variant("negative_dpo", note="negatives only")),
            ),
            sweeps=(Sweep("c", ("pointwise_dpo", "ulma")), Sweep("beta", ("pointwise_dpo", "ulma"))),
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
    matches = [e for key, e in EXPERIMENTS.items() if key.split("_")[0] == name]
    if len(matches) == 1:
        return matches[0]
    raise ValueError(f"unknown experiment {name!r}; known: {sorted(EXPERIMENTS)}")


def run_profile(profile: Profile, experiment: Experiment, dataset: str, variant: Variant, seed: int) -> Profile:
    """The profile one run trains with: per-method, per-dataset and variant overrides folded into ``train``."""
    values = dataclasses.asdict(train_config_for(profile, variant.method))
    for overrides in (experiment.dataset_overrides.get(dataset, {}), variant.overrides, {"seed": seed}):
        for key, value in overrides.items():
            if isinstance(value, Mapping) and isinstance(values.get(key), Mapping):
                values[key] = {**values[key], **value}
            else:
                values[key] = copy.deepcopy(value)
    data = profile.to_dict()
    data["train"] = values
    data["experiments"]["method_overrides"] = {}  # already folded in: every reader sees the same values
    return profile_from_dict(data)
