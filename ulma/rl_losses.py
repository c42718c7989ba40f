"""The reward model's and PPO's losses and arithmetic, as pure functions over tensors (the RLHF baseline
of Ziegler et al. 2019 and Stiennon et al. 2020): Bradley–Terry and regression losses, GAE, the clipped
policy and value losses, the KL-penalized per-token rewards and the adaptive KL controller. `ulma.rlhf`
runs them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ulma.losses import LossOutput


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> LossOutput:
    """Pairwise reward-model loss −log σ(r(x, y_w) − r(x, y_l)), mean over pairs; inputs (B,)."""
    margins = chosen_rewards - rejected_rewards
    return LossOutput(-F.logsigmoid(margins).mean(), {
        "rewards/chosen": chosen_rewards.detach().mean(),
        "rewards/rejected": rejected_rewards.detach().mean(),
        "rewards/margins": margins.detach().mean(),
        "rewards/accuracies": (margins.detach() > 0).float().mean(),
    })


def regression_loss(rewards: torch.Tensor, z: torch.Tensor) -> LossOutput:
    """Point-wise reward-model loss (ours, for continuous labels): mean (r(x, y) − z)²; inputs (B,)."""
    z = z.to(rewards.dtype)
    return LossOutput(F.mse_loss(rewards, z), {
        "rewards/mean": rewards.detach().mean(),
        "label/mean": z.mean(),
        # a label above 1/2 should score above 1/2: the point-wise analogue of pairwise accuracy
        "rewards/accuracies": ((rewards.detach() > 0.5) == (z > 0.5)).float().mean(),
    })


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(values − mean) / std over the masked entries (TRL whitens the advantages of each batch)."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    return (values - mean) * torch.rsqrt(var + eps) * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016) over response tokens.

    rewards, values, mask: (B, R), mask 1 on the response tokens (a prefix of each row), 0 after.
    δ_t = r_t + γ·V_{t+1} − V_t (V = 0 past the last token);  A_t = δ_t + γλ·A_{t+1}.
    Returns (advantages, returns = advantages + values), both (B, R), 0 off the mask.
    """
    mask = mask.to(values.dtype)
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantages[:, t] = (delta + gamma * lam * next_advantage) * mask[:, t]
        next_value, next_advantage = values[:, t] * mask[:, t], advantages[:, t]
    return advantages, (advantages + values) * mask


def policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
                cliprange: float = 0.2) -> LossOutput:
    """Clipped surrogate (Schulman et al. 2017): mean over tokens of max(−A·ρ, −A·clip(ρ, 1 ± ε)),
    ρ = exp(log π − log π_old). Inputs (B, R)."""
    ratio = torch.exp(logps - old_logps)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    return LossOutput(masked_mean(torch.maximum(unclipped, clipped), mask), {
        "policy/clipfrac": masked_mean((clipped > unclipped).float(), mask).detach(),
        "policy/approxkl": (0.5 * masked_mean((logps - old_logps) ** 2, mask)).detach(),
        "policy/ratio": masked_mean(ratio, mask).detach(),
    })


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, *,
               cliprange_value: float = 0.2, vf_coef: float = 0.1) -> LossOutput:
    """Clipped value loss, weighted: vf_coef · ½ · mean over tokens of max((V − G)², (V_clip − G)²),
    V_clip = V_old + clip(V − V_old, ±ε_v) (TRL's form, the ½ included). Inputs (B, R)."""
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_loss, clipped_loss = (values - returns) ** 2, (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_loss, clipped_loss), mask)
    return LossOutput(vf_coef * loss, {
        "value/loss": loss.detach(),
        "value/clipfrac": masked_mean((clipped_loss > unclipped_loss).float(), mask).detach(),
    })


def kl_penalized_rewards(scores: torch.Tensor, logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor,
                         kl_coef: float) -> torch.Tensor:
    """Per-token rewards (B, R): −kl_coef·(log π − log π_ref) on every response token, plus the score
    (B,) on the last one (Ziegler et al. 2019, eq. 2)."""
    mask = mask.to(logps.dtype)
    rewards = -kl_coef * (logps - ref_logps) * mask
    last = (mask.sum(1).long() - 1).clamp(min=0)
    rewards[torch.arange(len(scores)), last] += scores.to(rewards.dtype)
    return rewards


def update_kl_coef(kl_coef: float, kl: float, *, target: float = 6.0, horizon: int = 10000, n_steps: int = 8) -> float:
    """Adaptive KL controller (Ziegler et al. 2019): β ← β·(1 + clip(KL/target − 1, ±0.2)·n_steps/horizon).

    `kl` is the batch's mean of Σ_t (log π − log π_ref); `n_steps` the rollouts it came from."""
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return kl_coef * (1.0 + error * n_steps / horizon)


def response_mask(responses: torch.Tensor, eos_token_id: int | None) -> torch.Tensor:
    """(B, R) 1 up to and including each row's first EOS (everything when it has none)."""
    if eos_token_id is None:
        return torch.ones_like(responses, dtype=torch.float32)
    is_eos = (responses == eos_token_id).long()
    before = is_eos.cumsum(1) - is_eos  # EOS seen strictly before this position
    return (before == 0).float()
