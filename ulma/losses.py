"""Alignment losses as pure functions of per-sequence log-probs, and the registry of methods.

Every function takes (B,) tensors — ℓ_θ = `policy_logps`, ℓ_ref = `reference_logps`, labels z — and
keyword hyperparameters, and returns `LossOutput(loss, metrics)`. Notation and equations: docs/METHODS.md
(u = β(ℓ_θ − ℓ_ref) + c is the implicit reward; paper = Cai et al., arXiv 2312.02554).

Rules shared by the point-wise losses:

* positives are the samples with z ≥ `positive_threshold` (the default 1.0 means z == 1); every other
  sample is a negative.
* `aggregation="class_mean"` (released code): mean loss over the positives of the batch plus mean loss
  over its negatives; a class absent from the batch contributes 0. `"sample_mean"`: the sum of the
  per-sample losses over the batch size B (a sample of a class the method does not use counts as 0).
* binary or continuous: a batch is *continuous* when any label is neither 0 nor 1. In a binary batch a
  negative's preference loss is −log σ(−u). In a continuous batch every non-positive sample (z = 0
  included) gets `continuous="mse"` (released code): (z − u)², or `"bce"` (ours): −[z log σ(u) +
  (1 − z) log σ(−u)], which equals −log σ(−u) at z = 0. The released code made this choice per run; a
  loss function sees one batch, so a run on continuous data whose batch happens to hold only 0s and 1s
  gets the binary loss for it (identical under "bce").
* reference entries a method does not read (ULMA's positives, ...) may be NaN: they are replaced by 0
  with `torch.where` before any arithmetic, so they reach neither the loss nor the gradient.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

AGGREGATIONS = ("class_mean", "sample_mean")
CONTINUOUS_LOSSES = ("mse", "bce")
UNLIKELIHOOD_VARIANTS = ("ascent", "token")


@dataclass
class LossOutput:
    """loss: scalar tensor (differentiable); metrics: detached scalar tensors named as docs/METHODS.md."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]


# ------------------------------------------------------------------------------------------ validation
def _check_number(name: str, value: Any, *, low: float = -math.inf, high: float = math.inf,
                  low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < low or value > high or (low_open and value == low):
        bound = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bound}{low}, {high}], got {value!r}")
    return float(value)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _check_vector(name: str, x: Any, n: int | None = None, *, rows: torch.Tensor | None = None) -> torch.Tensor:
    """A (B,) floating tensor of length n, finite on `rows` (all rows when None)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 1 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a floating (B,) tensor, got {shape}")
    if n is not None and x.shape[0] != n:
        raise ValueError(f"{name} has shape {tuple(x.shape)}, expected ({n},) like policy_logps")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: a batch needs at least one sample")
    values = x.detach() if rows is None else x.detach()[rows]
    if not torch.isfinite(values).all():
        raise ValueError(f"{name} has NaN or inf entries" + ("" if rows is None else " in rows the loss reads"))
    return x


def _check_labels(labels: Any, n: int, like: torch.Tensor) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1:
        raise ValueError(f"labels must be a (B,) tensor, got {type(labels).__name__}")
    if labels.shape[0] != n:
        raise ValueError(f"labels has shape {tuple(labels.shape)}, expected ({n},) like policy_logps")
    z = labels.detach().to(device=like.device, dtype=like.dtype)
    if torch.isnan(z).any() or (z < 0).any() or (z > 1).any():
        raise ValueError("labels must lie in [0, 1] (no NaN)")
    return z


@dataclass
class _Batch:
    policy: torch.Tensor  # ℓ_θ (B,)
    reference: torch.Tensor  # ℓ_ref (B,), 0 on the rows not read
    z: torch.Tensor  # labels (B,), policy's dtype, detached
    pos: torch.Tensor  # (B,) bool
    neg: torch.Tensor  # (B,) bool
    continuous: bool  # some label is neither 0 nor 1


def _prepare(policy_logps, reference_logps, labels, *, reference_rows: str, positive_threshold: float) -> _Batch:
    policy = _check_vector("policy_logps", policy_logps)
    n = policy.shape[0]
    z = torch.ones_like(policy.detach()) if labels is None else _check_labels(labels, n, policy)
    pos = z >= positive_threshold
    neg = ~pos
    need = {"none": torch.zeros_like(pos), "all": torch.ones_like(pos), "positives": pos,
            "negatives": neg}[reference_rows]
    if bool(need.any()):
        if reference_logps is None:
            raise ValueError("reference_logps is None but the batch has samples whose loss needs it")
        _check_vector("reference_logps", reference_logps, n, rows=need)
        # why `where` and not `* need`: NaN · 0 is NaN, and it would reach the gradient too
        reference = torch.where(need, reference_logps.to(policy.dtype), torch.zeros_like(policy))
    else:
        reference = torch.zeros_like(policy)
    continuous = bool(((z != 0) & (z != 1)).any())
    return _Batch(policy, reference, z, pos, neg, continuous)


# ----------------------------------------------------------------------------------------- aggregation
def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of values over mask; 0 (with a zero, finite gradient) when the mask is empty."""
    return torch.where(mask, values, torch.zeros_like(values)).sum() / mask.sum().clamp(min=1)


def _aggregate(loss_pos, loss_neg, b: _Batch, aggregation: str) -> torch.Tensor:
    """loss_pos / loss_neg: per-sample losses (B,), or None for a class the method does not use."""
    zero = torch.zeros_like(b.policy)
    per_sample = torch.where(b.pos, zero if loss_pos is None else loss_pos, zero if loss_neg is None else loss_neg)
    if aggregation == "sample_mean":
        return per_sample.sum() / per_sample.shape[0]
    return _masked_mean(per_sample, b.pos) + _masked_mean(per_sample, b.neg)


def _metrics(b: _Batch, loss_pos, loss_neg, rewards, reward_rows: str) -> dict[str, torch.Tensor]:
    """Class means (0 for an empty class; `count/*` lets a trainer weight them). Rewards only on the
    rows whose reference the method reads."""
    with torch.no_grad():
        m = {}
        # TRL's KTO names: positives are "chosen", negatives "rejected" (docs/METHODS.md, Metrics)
        for cls, rows, mask, loss in (("chosen", "positives", b.pos, loss_pos), ("rejected", "negatives", b.neg, loss_neg)):
            if loss is not None:
                m[f"loss/{cls}"] = _masked_mean(loss.detach(), mask)
            m[f"logps/{cls}"] = _masked_mean(b.policy.detach(), mask)
            if rewards is not None and reward_rows in ("all", rows):
                m[f"rewards/{cls}"] = _masked_mean(rewards.detach(), mask)
            m[f"count/{cls}"] = mask.sum().to(b.policy.dtype)
        m["label/mean"] = b.z.mean()
    return m


# ------------------------------------------------------------------------------------ point-wise losses
def _pointwise(policy_logps, reference_logps, labels, *, positive: str | None, negative: str | None,
               reference_rows: str, beta, c, aggregation, continuous, positive_threshold,
               policy_log1m=None) -> LossOutput:
    """The point-wise losses. positive ∈ {nll, sigmoid, None}; negative ∈ {preference, ascent, token, None}."""
    beta = _check_number("beta", beta, low=0.0, low_open=True)
    c = _check_number("c", c)
    _check_choice("aggregation", aggregation, AGGREGATIONS)
    _check_choice("continuous", continuous, CONTINUOUS_LOSSES)
    positive_threshold = _check_number("positive_threshold", positive_threshold, low=0.0, high=1.0, low_open=True)
    b = _prepare(policy_logps, reference_logps, labels, reference_rows=reference_rows,
                 positive_threshold=positive_threshold)
    u = beta * (b.policy - b.reference) + c if reference_rows != "none" else None

    loss_pos = {"nll": lambda: -b.policy, "sigmoid": lambda: -F.logsigmoid(u), None: lambda: None}[positive]()
    if negative == "preference":
        if not b.continuous:
            loss_neg = -F.logsigmoid(-u)
        elif continuous == "mse":
            loss_neg = (b.z - u).square()  # released code: regression of z on the implicit reward
        else:
            loss_neg = -(b.z * F.logsigmoid(u) + (1 - b.z) * F.logsigmoid(-u))
    elif negative == "ascent":
        loss_neg = b.policy  # + ℓ_θ: gradient ascent on the negative's likelihood, weight 1 forever
    elif negative == "token":
        _check_vector("policy_log1m", policy_log1m, b.policy.shape[0], rows=b.neg)
        loss_neg = -torch.where(b.neg, policy_log1m.to(b.policy.dtype), torch.zeros_like(b.policy))
    else:
        loss_neg = None
    loss = _aggregate(loss_pos, loss_neg, b, aggregation)
    return LossOutput(loss, _metrics(b, loss_pos, loss_neg, u, reference_rows))


def sft_loss(policy_logps, reference_logps=None, labels=None, *, beta=0.1, c=0.0, aggregation="class_mean",
             continuous="mse", positive_threshold=1.0) -> LossOutput:
    """Supervised fine-tuning: L = −ℓ_θ(x, y) on the positives (all samples when labels is None).

    Shapes: (B,). Negatives are not used; beta, c, continuous have no effect (uniform interface)."""
    return _pointwise(policy_logps, reference_logps, labels, positive="nll", negative=None, reference_rows="none",
                      beta=beta, c=c, aggregation=aggregation, continuous=continuous,
                      positive_threshold=positive_threshold)


def pointwise_dpo_loss(policy_logps, reference_logps, labels, *, beta=0.1, c=0.0, aggregation="class_mean",
                       continuous="mse", positive_threshold=1.0) -> LossOutput:
    """Point-wise DPO, the paper's logistic regression of the label on the implicit reward:
    L = −[z log σ(u) + (1 − z) log σ(−u)], u = β(ℓ_θ − ℓ_ref) + c.

    Shapes: (B,). Positives −log σ(u); negatives −log σ(−u), or the continuous loss (module docstring).
    Gradient: −β σ(−u) ∇ℓ_θ on a positive, +β σ(u) ∇ℓ_θ on a negative (times the aggregation's
    1/n)."""
    return _pointwise(policy_logps, reference_logps, labels, positive="sigmoid", negative="preference",
                      reference_rows="all", beta=beta, c=c, aggregation=aggregation, continuous=continuous,
                      positive_threshold=positive_threshold)


def ulma_loss(policy_logps, reference_logps, labels, *, beta=0.1, c=0.0, aggregation="class_mean",
              continuous="mse", positive_threshold=1.0) -> LossOutput:
    """ULMA (the paper's hybrid objective): positives −ℓ_θ (SFT, no KL term: gradient weight exactly 1); negatives
    −log σ(−u) as point-wise DPO (or the continuous loss). Shapes: (B,).

    `reference_logps` is read only on the negatives: it may be None for an all-positive batch and NaN on
    the positives. On a batch of positives only, ULMA is SFT."""
    return _pointwise(policy_logps, reference_logps, labels, positive="nll", negative="preference",
                      reference_rows="negatives", beta=beta, c=c, aggregation=aggregation, continuous=continuous,
                      positive_threshold=positive_threshold)


def positive_dpo_loss(policy_logps, reference_logps, labels, *, beta=0.1, c=0.0, aggregation="class_mean",
                      continuous="mse", positive_threshold=1.0) -> LossOutput:
    """Ablation: the positive half of point-wise DPO, −log σ(u) on positives; negatives unused
    (`continuous` has no effect; reference read on positives only). Shapes: (B,)."""
    return _pointwise(policy_logps, reference_logps, labels, positive="sigmoid", negative=None,
                      reference_rows="positives", beta=beta, c=c, aggregation=aggregation, continuous=continuous,
                      positive_threshold=positive_threshold)


def negative_dpo_loss(policy_logps, reference_logps, labels, *, beta=0.1, c=0.0, aggregation="class_mean",
                      continuous="mse", positive_threshold=1.0) -> LossOutput:
    """Ablation: the negative half of point-wise DPO, −log σ(−u) (or the continuous loss) on the
    non-positives; positives unused (reference read on negatives only). Shapes: (B,)."""
    return _pointwise(policy_logps, reference_logps, labels, positive=None, negative="preference",
                      reference_rows="negatives", beta=beta, c=c, aggregation=aggregation, continuous=continuous,
                      positive_threshold=positive_threshold)


def unlikelihood_loss(policy_logps, reference_logps, labels, *, beta=0.1, c=0.0, aggregation="class_mean",
                      continuous="mse", positive_threshold=1.0, variant="ascent", policy_log1m=None) -> LossOutput:
    """Unlikelihood baseline: positives −ℓ_θ; every non-positive sample
    `variant="ascent"` (released code): +ℓ_θ, unbounded, gradient weight constant;
    `variant="token"` (token-level unlikelihood, Welleck et al. 2019): −Σ_t log(1 − π_θ(y_t|x, y_<t)),
    i.e. −`policy_log1m` (B,), from `sequence_logps(..., return_log1m=True)`; "ascent" ignores it.

    No reference; beta, c, continuous have no effect (uniform interface). Shapes: (B,)."""
    _check_choice("variant", variant, UNLIKELIHOOD_VARIANTS)
    if variant == "token" and policy_log1m is None:
        raise ValueError("policy_log1m is required for variant='token' (sequence_logps(..., return_log1m=True))")
    return _pointwise(policy_logps, reference_logps, labels, positive="nll", negative=variant, reference_rows="none",
                      beta=beta, c=c, aggregation=aggregation, continuous=continuous,
                      positive_threshold=positive_threshold, policy_log1m=policy_log1m)


def negative_unlikelihood_loss(policy_logps, reference_logps, labels, *, beta=0.1, c=0.0, aggregation="class_mean",
                               continuous="mse", positive_threshold=1.0, variant="ascent",
                               policy_log1m=None) -> LossOutput:
    """Ablation: the negative half of the unlikelihood baseline (+ℓ_θ, or −`policy_log1m` for
    `variant="token"`) on the non-positives; positives unused. The counterpart of `negative_dpo_loss`:
    the same samples, an unbounded instead of a vanishing gradient weight. Shapes: (B,)."""
    _check_choice("variant", variant, UNLIKELIHOOD_VARIANTS)
    if variant == "token" and policy_log1m is None:
        raise ValueError("policy_log1m is required for variant='token' (sequence_logps(..., return_log1m=True))")
    return _pointwise(policy_logps, reference_logps, labels, positive=None, negative=variant, reference_rows="none",
                      beta=beta, c=c, aggregation=aggregation, continuous=continuous,
                      positive_threshold=positive_threshold, policy_log1m=policy_log1m)


def kto_loss(policy_logps, reference_logps, labels, *, beta=0.1, c=0.0, aggregation="class_mean", continuous="mse",
             positive_threshold=1.0, policy_kl_logps=None, reference_kl_logps=None, desirable_weight=1.0,
             undesirable_weight=1.0) -> LossOutput:
    """KTO (Ethayarajh et al. 2024): positives λ_D (1 − σ(β(Δ − KL))), negatives λ_U (1 − σ(β(KL − Δ))),
    Δ = ℓ_θ − ℓ_ref; KL = max(0, mean(policy_kl_logps − reference_kl_logps)), detached, from mismatched
    (x, y′) pairs of any length K ≥ 1. Non-positives are undesirable whatever their label; c and continuous
    have no effect (uniform interface); `rewards/*` report βΔ, and `kl` the estimate. Shapes: (B,), (K,)."""
    beta = _check_number("beta", beta, low=0.0, low_open=True)
    _check_number("c", c)
    _check_choice("aggregation", aggregation, AGGREGATIONS)
    _check_choice("continuous", continuous, CONTINUOUS_LOSSES)
    positive_threshold = _check_number("positive_threshold", positive_threshold, low=0.0, high=1.0, low_open=True)
    lam_d = _check_number("desirable_weight", desirable_weight, low=0.0)
    lam_u = _check_number("undesirable_weight", undesirable_weight, low=0.0)
    for name, x in (("policy_kl_logps", policy_kl_logps), ("reference_kl_logps", reference_kl_logps)):
        if x is None:
            raise ValueError(f"{name} is required by kto_loss (the KL estimate)")
        _check_vector(name, x)
    if policy_kl_logps.shape != reference_kl_logps.shape:
        raise ValueError(f"reference_kl_logps has shape {tuple(reference_kl_logps.shape)}, "
                         f"expected {tuple(policy_kl_logps.shape)} like policy_kl_logps")
    b = _prepare(policy_logps, reference_logps, labels, reference_rows="all", positive_threshold=positive_threshold)
    kl = (policy_kl_logps.detach() - reference_kl_logps.detach()).mean().clamp(min=0).to(b.policy.dtype)
    delta = b.policy - b.reference
    loss_pos = lam_d * torch.sigmoid(-beta * (delta - kl))  # 1 − σ(x) = σ(−x), without cancellation
    loss_neg = lam_u * torch.sigmoid(-beta * (kl - delta))
    loss = _aggregate(loss_pos, loss_neg, b, aggregation)
    metrics = _metrics(b, loss_pos, loss_neg, beta * delta, "all")
    metrics["kl"] = kl.detach()
    return LossOutput(loss, metrics)


# ------------------------------------------------------------------------------------------- pairwise
def dpo_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *,
             beta=0.1) -> LossOutput:
    """DPO (Rafailov et al. 2023, Eq. 7): mean over pairs of −log σ(β(Δ_w − Δ_l)), Δ = ℓ_θ − ℓ_ref.

    Shapes: four (B,) tensors, pair i = (chosen i, rejected i). A sample's gradient depends on its
    partner's log-ratio (the pairwise coupling that point-wise losses remove)."""
    beta = _check_number("beta", beta, low=0.0, low_open=True)
    pc = _check_vector("policy_chosen_logps", policy_chosen_logps)
    n = pc.shape[0]
    pr = _check_vector("policy_rejected_logps", policy_rejected_logps, n)
    rc = _check_vector("reference_chosen_logps", reference_chosen_logps, n)
    rr = _check_vector("reference_rejected_logps", reference_rejected_logps, n)
    chosen_rewards = beta * (pc - rc.to(pc.dtype))
    rejected_rewards = beta * (pr.to(pc.dtype) - rr.to(pc.dtype))
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    with torch.no_grad():
        metrics = {
            "rewards/chosen": chosen_rewards.detach().mean(),
            "rewards/rejected": rejected_rewards.detach().mean(),
            "rewards/margins": (chosen_rewards - rejected_rewards).detach().mean(),
            "rewards/accuracies": (chosen_rewards > rejected_rewards).to(pc.dtype).mean(),
            "logps/chosen": pc.detach().mean(),
            "logps/rejected": pr.detach().mean(),
        }
    return LossOutput(loss, metrics)


# ------------------------------------------------------------------------------------------- registry
# A loss keyword -> the TrainConfig field that supplies it (the config's names are prefixed where a bare
# name would be ambiguous). `Method.hyperparameters` lists the keywords a method reads: the trainer passes
# exactly those, so no signature is inspected and no loss receives a value it ignores.
HYPERPARAMETERS = {
    "beta": "beta", "c": "c", "aggregation": "aggregation", "continuous": "continuous",
    "positive_threshold": "positive_threshold", "variant": "unlikelihood_variant",
    "desirable_weight": "kto_desirable_weight", "undesirable_weight": "kto_undesirable_weight",
}
RUNNERS = ("offline", "rlhf", "none")
DATA_KINDS = ("pairwise", "pointwise", "sft")
REFERENCE_ROWS = ("none", "all", "negatives", "positives")


@dataclass(frozen=True)
class Method:
    """A method of the paper's comparison: its loss and what the code that runs it must provide.

    data_kind: the view of ulma.data it trains on ("pairwise" | "pointwise" | "sft"); reference: the rows
    whose ℓ_ref the loss reads ("none" | "all" | "negatives" | "positives"); logp_reduction: the released
    code's default ("sum" | "mean"), also the reduction evaluation ranks pairs with; hyperparameters: the
    loss keywords it reads (keys of HYPERPARAMETERS); needs_kl_pairs: mismatched (x, y′) log-probs (KTO);
    needs_log1m: some configuration reads `policy_log1m` (`needs_log1m_for` says whether a given one does);
    runner: how a run trains it — "offline" (`ulma.trainer.ULMATrainer` on `loss_fn`), "rlhf" (reward model
    + PPO, `ulma.rlhf`; `loss_fn` is None), "none" (no training: the starting model evaluated as is);
    profile_sections: the Profile sections besides `train` that change its numbers; comparison: its column
    in the main comparison tables (None: an ablation only); display: the paper's name for it (figures, readings,
    claim texts; tables keep `name`)."""

    name: str
    loss_fn: Callable[..., LossOutput] | None
    data_kind: str
    reference: str
    logp_reduction: str
    needs_kl_pairs: bool = False
    needs_log1m: bool = False
    hyperparameters: tuple[str, ...] = ()
    runner: str = "offline"
    profile_sections: tuple[str, ...] = ()
    comparison: int | None = None
    display: str = ""

    def __post_init__(self):
        for field_name, value, allowed in (("data_kind", self.data_kind, DATA_KINDS),
                                           ("reference", self.reference, REFERENCE_ROWS),
                                           ("logp_reduction", self.logp_reduction, ("sum", "mean")),
                                           ("runner", self.runner, RUNNERS)):
            _check_choice(f"{self.name}.{field_name}", value, allowed)
        if not self.display:
            object.__setattr__(self, "display", self.name.replace("_", " "))
        unknown = set(self.hyperparameters) - set(HYPERPARAMETERS)
        if unknown:
            raise ValueError(f"{self.name}: unknown hyperparameters {sorted(unknown)}; known: {sorted(HYPERPARAMETERS)}")
        if (self.loss_fn is None) != (self.runner != "offline"):
            raise ValueError(f"{self.name}: an offline method needs a loss_fn, and only an offline one")

    @property
    def needs_reference(self) -> bool:
        return self.reference != "none"

    @property
    def trains(self) -> bool:
        return self.runner != "none"

    def loss_kwargs(self, config: Any) -> dict[str, Any]:
        """The loss keywords this method reads, from a TrainConfig (any object with its fields)."""
        return {name: getattr(config, HYPERPARAMETERS[name]) for name in self.hyperparameters}

    def needs_log1m_for(self, loss_kwargs: dict[str, Any]) -> bool:
        """Whether the loss, called with these keyword arguments, reads `policy_log1m`."""
        return self.needs_log1m and loss_kwargs.get("variant", "ascent") == "token"


_POINTWISE = ("beta", "c", "aggregation", "continuous", "positive_threshold")
_LIKELIHOOD = ("aggregation", "positive_threshold", "variant")

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("sft", sft_loss, "sft", "none", "mean", hyperparameters=("aggregation", "positive_threshold"), comparison=0,
           display="SFT"),
    Method("dpo", dpo_loss, "pairwise", "all", "sum", hyperparameters=("beta",), comparison=2, display="DPO"),
    Method("pointwise_dpo", pointwise_dpo_loss, "pointwise", "all", "mean", hyperparameters=_POINTWISE, comparison=3,
           display="Point-wise DPO"),
    Method("ulma", ulma_loss, "pointwise", "negatives", "mean", hyperparameters=_POINTWISE, comparison=6,
           display="ULMA"),
    Method("positive_dpo", positive_dpo_loss, "pointwise", "positives", "mean",
           hyperparameters=("beta", "c", "aggregation", "positive_threshold"), display="Positive DPO"),
    Method("negative_dpo", negative_dpo_loss, "pointwise", "negatives", "mean", hyperparameters=_POINTWISE,
           display="Negative DPO"),
    Method("unlikelihood", unlikelihood_loss, "pointwise", "none", "mean", needs_log1m=True,
           hyperparameters=_LIKELIHOOD, comparison=4, display="Unlikelihood"),
    Method("negative_unlikelihood", negative_unlikelihood_loss, "pointwise", "none", "mean", needs_log1m=True,
           hyperparameters=_LIKELIHOOD, display="Negative unlikelihood"),
    Method("kto", kto_loss, "pointwise", "all", "sum", needs_kl_pairs=True,
           hyperparameters=("beta", "aggregation", "positive_threshold", "desirable_weight", "undesirable_weight"),
           comparison=5, display="KTO"),
    # reward model + PPO: its reward model reads pairs where the dataset has them and z otherwise, so the
    # point-wise view (every dataset has one) decides where it applies; PPO's KL penalty makes it rank
    # pairs by the implicit reward β·Σ_t log-ratio (sums), like DPO
    Method("rlhf", None, "pointwise", "all", "sum", runner="rlhf", profile_sections=("rlhf",), comparison=1,
           display="RLHF (RM+PPO)"),
    # the starting model, evaluated without training: the row every comparison is read against
    Method("base", None, "sft", "none", "mean", runner="none", display="Base"),
)}


def get_method(name: str) -> Method:
    """The registered method `name`; ValueError listing the known names otherwise."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {name!r}; known: {sorted(METHODS)}") from None


def loss_methods() -> dict[str, Method]:
    """The methods trained by a loss function (runner "offline"), in registry order."""
    return {name: m for name, m in METHODS.items() if m.runner == "offline"}


def compared_methods() -> tuple[str, ...]:
    """The columns of the main comparison, in table order (`Method.comparison`)."""
    ranked = sorted((m.comparison, name) for name, m in METHODS.items() if m.comparison is not None)
    return tuple(name for _, name in ranked)
