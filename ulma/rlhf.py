"""The RLHF baseline: a reward model, then PPO against it (METHODS.md, "RLHF baseline"). No TRL.

Two stages, each its own loop:

1. **Reward model** r(x, y): the base model + LoRA + a scalar head on the last hidden state, read at the
   last non-pad token of ``prompt + reply + EOS`` (found from the attention mask, since SmolLM2's pad
   token *is* its EOS). Pairs: Bradley–Terry −log σ(r_w − r_l); point-wise data with continuous labels
   (red-team, ours): regression (r − z)². A trained reward model is cached under
   ``ulma.models.cache_dir()/reward_models/<key>`` and reused by any run with the same model, data and
   reward-model settings.
2. **PPO** (Ziegler et al. 2019; Stiennon et al. 2020, as TRL's PPOTrainer of 2023 ran it): rollouts
   sampled from the SFT prompts; per-token reward −β_kl·(log π − log π_ref) on every response token plus
   the reward-model score on the last; a value head on the policy's last hidden state; GAE; clipped
   policy and value losses; the adaptive KL controller.

The policy is the base model + fresh LoRA, the reference the same network with its adapters disabled.
Dropout is off during PPO (the model stays in eval mode), so the importance ratio is exactly 1 on the
first mini-batch and the KL estimate is not noise. Log-probs are those of the model itself (temperature
1): the sampling settings (temperature, top-p, top-k) only shape exploration, as in TRL of that era.

The losses and the PPO arithmetic are pure functions over tensors (``bradley_terry_loss``,
``regression_loss``, ``gae``, ``policy_loss``, ``value_loss``, ``kl_penalized_rewards``,
``update_kl_coef``); `train_reward_model` and `train_ppo` take models and data built outside;
`train_rlhf` is the run (``ulma.trainer.train(method="rlhf")`` calls it) and writes the run layout of
docs/DESIGN.md, so evaluation reads it like any other run.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict
from transformers import get_scheduler, set_seed

from ulma import data
from ulma.batching import PairwiseCollator, PointwiseCollator, left_pad_prompts, tokenize_dataset, tokenize_prompts
from ulma.config import Profile, RLHFConfig, TrainConfig, load_profile, train_config_for
from ulma.files import content_key, dataset_content_hash, write_json
from ulma.losses import LossOutput
from ulma.models import apply_lora_from, cache_dir, load_model_and_tokenizer, model_identity
from ulma.runs import InvalidRunError, RunFolder, peak_memory_mb, resolve_data_dir

logger = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when a cached reward model's meaning changes
RewardFn = Callable[[list[str], list[str]], Sequence[float]]  # (prompt texts, reply texts) -> one score each


# ============================================================================ pure functions: losses
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


# ================================================================================ models and heads
def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of each row's last attended token (right padding); from the mask, never from the pad
    id, which may equal EOS (SmolLM2) and then also ends every reply."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(1)


def _backbone(model):
    """The transformer under the LM head (LoRA layers included): its last hidden state feeds the heads."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(inner, inner.base_model_prefix)


def _lm_head(model):
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.get_output_embeddings()


def _position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    # left-padded prompts: positions count attended tokens only, as `generate` counts them
    return (attention_mask.long().cumsum(1) - 1).clamp(min=0)


def scalar_head(hidden_size: int, *, zero: bool = False) -> torch.nn.Linear:
    """Linear(hidden, 1) in float32; std 1/√(d+1) as the reward head of Stiennon et al., or zeros (value head)."""
    head = torch.nn.Linear(hidden_size, 1)
    torch.nn.init.normal_(head.weight, std=0.0 if zero else 1.0 / math.sqrt(hidden_size + 1))
    torch.nn.init.zeros_(head.bias)
    return head


class RewardModel(torch.nn.Module):
    """r(x, y): a causal LM (LoRA-wrapped) and a scalar head read at the last attended token."""

    def __init__(self, model, head: torch.nn.Linear | None = None):
        super().__init__()
        self.model = model
        self.head = head if head is not None else scalar_head(model.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask (B, T), right-padded -> scores (B,) float32."""
        hidden = _backbone(self.model)(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        last = hidden[torch.arange(len(hidden), device=hidden.device), last_token_index(attention_mask)]
        return self.head(last.float()).squeeze(-1)


def policy_forward(policy, value_head, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int):
    """Logits (B, R, V) and values (B, R) for the tokens from position `start` on (the response).

    The LM head runs on the response positions only (the prompt's logits are never needed), as a
    Llama-family causal LM computes logits (no logit scaling or soft-capping). Position t−1 predicts
    token t; the value of token t is read at the same position (the state before it).
    """
    hidden = _backbone(policy)(input_ids=input_ids, attention_mask=attention_mask,
                               position_ids=_position_ids(attention_mask)).last_hidden_state
    hidden = hidden[:, start - 1 : -1]
    logits = _lm_head(policy)(hidden).float()
    values = value_head(hidden.float()).squeeze(-1) if value_head is not None else None
    return logits, values


def token_logps(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log π(token), entropy of π) per position, (B, R) float32, from logits (B, R, V)."""
    logp_all = torch.log_softmax(logits.float(), dim=-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1), entropy


# ============================================================================ stage 1: reward model
def _device(model) -> torch.device:
    return next(model.parameters()).device


def _batches(n: int, size: int, generator: torch.Generator | None = None):
    order = torch.randperm(n, generator=generator).tolist() if generator is not None else list(range(n))
    for i in range(0, n, size):
        yield order[i : i + size]


def _optimizer(params, lr: float, cfg: TrainConfig, total_steps: int):
    optimizer = torch.optim.AdamW([p for p in params if p.requires_grad], lr=lr, weight_decay=cfg.weight_decay)
    warmup = math.ceil(cfg.warmup_ratio * total_steps) if cfg.warmup_ratio < 1 else int(cfg.warmup_ratio)
    return optimizer, get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=warmup,
                                     num_training_steps=max(total_steps, 1))


def _score_batch(reward_model: RewardModel, rows: list[dict], kind: str, pad_token_id: int):
    """Scores of a list of tokenized rows: pairwise -> (chosen (B,), rejected (B,)); point-wise -> (r, z)."""
    device = _device(reward_model)
    if kind == "pairwise":
        batch = PairwiseCollator(pad_token_id)(rows)
        scores = reward_model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        return scores[: len(rows)], scores[len(rows) :]
    batch = PointwiseCollator(pad_token_id)(rows)
    return reward_model(batch["input_ids"].to(device), batch["attention_mask"].to(device)), batch["z"].to(device)


def _reward_loss(kind: str, a: torch.Tensor, b: torch.Tensor) -> LossOutput:
    return bradley_terry_loss(a, b) if kind == "pairwise" else regression_loss(a, b)


@torch.no_grad()
def evaluate_reward_model(reward_model: RewardModel, rows, kind: str, pad_token_id: int, batch_size: int = 8) -> dict:
    """Held-out loss and accuracy (pairwise: r_w > r_l; point-wise: r and z on the same side of ½)."""
    was_training = reward_model.training
    reward_model.eval()
    totals, n = {}, 0
    for idx in _batches(len(rows), batch_size):
        out = _reward_loss(kind, *_score_batch(reward_model, [rows[i] for i in idx], kind, pad_token_id))
        for key, value in {"loss": out.loss, **out.metrics}.items():
            totals[key] = totals.get(key, 0.0) + float(value) * len(idx)
        n += len(idx)
    reward_model.train(was_training)
    return {("accuracy" if k == "rewards/accuracies" else k): v / max(n, 1) for k, v in totals.items()}


def train_reward_model(reward_model: RewardModel, train_rows, *, kind: str, pad_token_id: int, rlhf: RLHFConfig,
                       train_config: TrainConfig, eval_rows=None, eval_batch_size: int = 8) -> dict:
    """Train `reward_model` in place on tokenized rows (pairwise: prompt_ids/chosen_ids/rejected_ids;
    point-wise: prompt_ids/completion_ids/z) and return its metrics: log history, held-out accuracy
    (when `eval_rows` are given), wall_time_s (training only) and eval_s."""
    if kind not in ("pairwise", "pointwise"):
        raise ValueError(f"kind must be 'pairwise' or 'pointwise', got {kind!r}")
    start = time.perf_counter()
    steps_per_epoch = math.ceil(len(train_rows) / rlhf.reward_batch_size)
    total_steps = max(1, math.ceil(rlhf.reward_epochs * steps_per_epoch))
    optimizer, scheduler = _optimizer(reward_model.parameters(), rlhf.reward_learning_rate, train_config, total_steps)
    generator = torch.Generator().manual_seed(train_config.seed)
    reward_model.train()
    history, step = [], 0
    while step < total_steps:
        for idx in _batches(len(train_rows), rlhf.reward_batch_size, generator):
            out = _reward_loss(kind, *_score_batch(reward_model, [train_rows[i] for i in idx], kind, pad_token_id))
            out.loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(reward_model.parameters(), train_config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % max(train_config.logging_steps, 1) == 0 or step == total_steps:
                history.append({"step": step, "loss": out.loss.item(), "grad_norm": float(grad_norm),
                                "learning_rate": scheduler.get_last_lr()[0],
                                **{k: float(v) for k, v in out.metrics.items()}})
                logger.info("reward model step %d/%d: loss %.4f", step, total_steps, history[-1]["loss"])
            if step >= total_steps:
                break
    wall = time.perf_counter() - start
    reward_model.eval()
    metrics = {"kind": kind, "steps": step, "train_rows": len(train_rows), "wall_time_s": wall, "log_history": history}
    if eval_rows is not None and len(eval_rows):
        start = time.perf_counter()
        held_out = evaluate_reward_model(reward_model, eval_rows, kind, pad_token_id, eval_batch_size)
        metrics.update({"eval_rows": len(eval_rows), "eval_s": time.perf_counter() - start,
                        "held_out": held_out, "accuracy": held_out["accuracy"]})
    return metrics


def save_reward_model(reward_model: RewardModel, folder: Path, metrics: dict) -> None:
    """adapter/ (peft), head.pt, metrics.json; written to a temporary folder and renamed (atomic)."""
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    reward_model.model.save_pretrained(tmp / "adapter")
    torch.save(reward_model.head.state_dict(), tmp / "head.pt")
    write_json(tmp / "metrics.json", metrics)
    if folder.exists():  # another process finished first: theirs is as good as ours
        shutil.rmtree(tmp)
        return
    tmp.rename(folder)


def load_reward_model(base_model, folder: Path) -> tuple[RewardModel, dict]:
    model = PeftModel.from_pretrained(base_model, folder / "adapter", is_trainable=False)
    head = scalar_head(model.config.hidden_size)
    head.load_state_dict(torch.load(folder / "head.pt", map_location="cpu"))
    reward_model = RewardModel(model, head).to(_device(base_model)).eval().requires_grad_(False)
    return reward_model, json.loads((folder / "metrics.json").read_text())


# ===================================================================================== stage 2: PPO
@dataclass
class Rollouts:
    """One batch of rollouts, everything PPO's update needs (B rows, prompt width P, response width R)."""

    input_ids: torch.Tensor  # (B, P + R): left-padded prompt, then response, then padding
    attention_mask: torch.Tensor  # (B, P + R)
    mask: torch.Tensor  # (B, R) float: the response tokens, up to and including the first EOS
    logps: torch.Tensor  # (B, R) log π_old
    ref_logps: torch.Tensor  # (B, R) log π_ref
    values: torch.Tensor  # (B, R) V_old
    scores: torch.Tensor  # (B,) reward model (or reward_fn) score
    entropy: torch.Tensor  # () mean per-token entropy of π_old
    prompt_width: int


def response_mask(responses: torch.Tensor, eos_token_id: int | None) -> torch.Tensor:
    """(B, R) 1 up to and including each row's first EOS (everything when it has none)."""
    if eos_token_id is None:
        return torch.ones_like(responses, dtype=torch.float32)
    is_eos = (responses == eos_token_id).long()
    before = is_eos.cumsum(1) - is_eos  # EOS seen strictly before this position
    return (before == 0).float()


ScoreFn = Callable[[list[list[int]], list[list[int]]], torch.Tensor]  # (prompt ids, response ids) -> (B,)


def reward_model_scorer(reward_model: RewardModel, pad_token_id: int, batch_size: int = 8) -> ScoreFn:
    """Score rollouts with the reward model: prompt + response right-padded, read at the last token."""
    @torch.no_grad()
    def score(prompts: list[list[int]], responses: list[list[int]]) -> torch.Tensor:
        out = []
        for idx in _batches(len(prompts), batch_size):
            rows = [{"prompt_ids": prompts[i], "completion_ids": responses[i], "z": 0.0} for i in idx]
            batch = PointwiseCollator(pad_token_id)(rows)
            device = _device(reward_model)
            out.append(reward_model(batch["input_ids"].to(device), batch["attention_mask"].to(device)).cpu())
        return torch.cat(out)

    return score


def text_scorer(reward_fn: RewardFn, tokenizer) -> ScoreFn:
    """Wrap a programmatic reward on texts (tests, ablations): (prompt texts, reply texts) -> scores."""

    def score(prompts: list[list[int]], responses: list[list[int]]) -> torch.Tensor:
        prompt_texts = tokenizer.batch_decode(prompts, skip_special_tokens=True)
        reply_texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
        return torch.tensor([float(s) for s in reward_fn(prompt_texts, reply_texts)], dtype=torch.float32)

    return score


@torch.no_grad()
def generate_rollouts(policy, value_head, prompts: list[list[int]], score_fn: ScoreFn, rlhf: RLHFConfig, *,
                      pad_token_id: int, eos_token_id: int | None) -> Rollouts:
    """Sample one response per prompt with the profile's sampling settings, then score it and compute
    log π_old, log π_ref (adapters disabled) and V_old on it."""
    device = _device(policy)
    batch = {k: v.to(device) for k, v in left_pad_prompts(prompts, pad_token_id).items()}
    width = batch["input_ids"].shape[1]
    sequences = policy.generate(**batch, do_sample=True, temperature=rlhf.temperature, top_p=rlhf.top_p,
                                top_k=rlhf.top_k, max_new_tokens=rlhf.max_new_tokens, pad_token_id=pad_token_id,
                                eos_token_id=eos_token_id)
    responses = sequences[:, width:]
    mask = response_mask(responses, eos_token_id)
    keep = int(mask.sum(1).max())  # drop columns that are padding in every row
    responses, mask = responses[:, :keep], mask[:, :keep]
    input_ids = torch.cat([batch["input_ids"], torch.where(mask.bool(), responses, pad_token_id)], 1)
    attention_mask = torch.cat([batch["attention_mask"], mask.long()], 1)

    logits, values = policy_forward(policy, value_head, input_ids, attention_mask, width)
    logps, entropy = token_logps(logits, responses)
    with policy.disable_adapter():
        ref_logits, _ = policy_forward(policy, None, input_ids, attention_mask, width)
    ref_logps, _ = token_logps(ref_logits, responses)
    reply_ids = [r[m.bool()].tolist() for r, m in zip(responses.cpu(), mask.cpu())]
    scores = score_fn([list(p) for p in prompts], reply_ids).to(device=device, dtype=torch.float32)
    return Rollouts(input_ids, attention_mask, mask, logps * mask, ref_logps * mask, values * mask, scores,
                    masked_mean(entropy, mask), width)


def ppo_update(policy, value_head, optimizer, scheduler, rollouts: Rollouts, kl_coef: float, rlhf: RLHFConfig,
               train_config: TrainConfig, generator: torch.Generator | None = None) -> dict[str, float]:
    """One PPO iteration on a batch of rollouts: rewards, GAE, then `ppo_epochs` passes of mini-batches."""
    r = rollouts
    rewards = kl_penalized_rewards(r.scores, r.logps, r.ref_logps, r.mask, kl_coef)
    advantages, returns = gae(rewards, r.values, r.mask, rlhf.gamma, rlhf.lam)
    advantages = masked_whiten(advantages, r.mask)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    sums: dict[str, float] = {}
    updates = 0
    for _ in range(rlhf.ppo_epochs):
        for idx in _batches(len(r.scores), rlhf.mini_batch_size, generator):
            idx = torch.tensor(idx, device=r.mask.device)
            logits, values = policy_forward(policy, value_head, r.input_ids[idx], r.attention_mask[idx], r.prompt_width)
            logps, _ = token_logps(logits, r.input_ids[idx, r.prompt_width :])
            mask = r.mask[idx]
            pg = policy_loss(logps, r.logps[idx], advantages[idx], mask, cliprange=rlhf.cliprange)
            vf = value_loss(values, r.values[idx], returns[idx], mask, cliprange_value=rlhf.cliprange_value,
                            vf_coef=rlhf.vf_coef)
            (pg.loss + vf.loss).backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, train_config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step_metrics = {"policy_loss": pg.loss.detach(), "value_loss": vf.metrics["value/loss"], "clipfrac": pg.metrics["policy/clipfrac"],
                            "approxkl": pg.metrics["policy/approxkl"], "value_clipfrac": vf.metrics["value/clipfrac"],
                            "grad_norm": grad_norm}
            for key, value in step_metrics.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            updates += 1
    kl = float((r.logps - r.ref_logps).sum(1).mean())
    return {
        "reward": float(r.scores.mean()),
        "reward_std": float(r.scores.std()) if len(r.scores) > 1 else 0.0,
        "kl": kl,
        "kl_coef": kl_coef,
        "entropy": float(r.entropy),
        "response_length": float(r.mask.sum(1).mean()),
        "returns": float(masked_mean(returns, r.mask)),
        "values": float(masked_mean(r.values, r.mask)),
        "learning_rate": scheduler.get_last_lr()[0],
        **{k: v / max(updates, 1) for k, v in sums.items()},
    }


def train_ppo(policy, tokenizer, prompts: list[list[int]], score_fn: ScoreFn, rlhf: RLHFConfig, train_config: TrainConfig,
              *, value_head: torch.nn.Linear | None = None, checkpoint: Path | None = None, resume: bool = False) -> dict:
    """PPO on `policy` (a PeftModel: its disabled adapters are the reference) over tokenized `prompts`.

    Each of `rlhf.ppo_steps` iterations takes the next `rollout_batch_size` prompts of a seeded shuffle.
    Returns {"log_history": [per-step metrics], "value_head", "kl_coef", "wall_time_s", "steps"}; with
    `checkpoint` (a file) the state is saved every `train_config.save_steps` steps and at the end and,
    with `resume`, read back first.
    """
    if not prompts:
        raise ValueError("PPO needs at least one prompt")
    device = _device(policy)
    value_head = (value_head or scalar_head(policy.config.hidden_size, zero=True)).to(device)
    total_updates = rlhf.ppo_steps * rlhf.ppo_epochs * math.ceil(rlhf.rollout_batch_size / rlhf.mini_batch_size)
    optimizer, scheduler = _optimizer([*policy.parameters(), *value_head.parameters()], rlhf.ppo_learning_rate,
                                      train_config, total_updates)
    order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(train_config.seed)).tolist()
    generator = torch.Generator().manual_seed(train_config.seed + 1)
    state = {"step": 0, "kl_coef": rlhf.init_kl_coef, "log_history": [], "wall_time_s": 0.0}
    if resume and checkpoint is not None and checkpoint.exists():
        state = _load_ppo_checkpoint(checkpoint, policy, value_head, optimizer, scheduler, generator)
        logger.info("PPO: resumed at step %d from %s", state["step"], checkpoint)
    policy.eval()  # no dropout: ratio 1 on the first mini-batch (module docstring)
    start = time.perf_counter() - state["wall_time_s"]
    eos = tokenizer.eos_token_id
    while state["step"] < rlhf.ppo_steps:
        step = state["step"]
        batch = [prompts[order[(step * rlhf.rollout_batch_size + i) % len(order)]] for i in range(rlhf.rollout_batch_size)]
        t0 = time.perf_counter()
        rollouts = generate_rollouts(policy, value_head, batch, score_fn, rlhf, pad_token_id=tokenizer.pad_token_id,
                                     eos_token_id=eos)
        t1 = time.perf_counter()
        metrics = ppo_update(policy, value_head, optimizer, scheduler, rollouts, state["kl_coef"], rlhf, train_config,
                             generator)
        state["kl_coef"] = update_kl_coef(state["kl_coef"], metrics["kl"], target=rlhf.target_kl,
                                          horizon=rlhf.kl_horizon, n_steps=rlhf.rollout_batch_size)
        state["step"] += 1
        state["log_history"].append({"step": state["step"], **metrics, "rollout_s": t1 - t0,
                                     "update_s": time.perf_counter() - t1})
        if step == 0 or state["step"] % max(train_config.logging_steps, 1) == 0:
            logger.info("PPO step %d: %s", state["step"], {k: round(v, 4) for k, v in metrics.items()})
        state["wall_time_s"] = time.perf_counter() - start
        every = train_config.save_steps > 0 and state["step"] % train_config.save_steps == 0
        if checkpoint is not None and (every or state["step"] == rlhf.ppo_steps):
            _save_ppo_checkpoint(checkpoint, state, policy, value_head, optimizer, scheduler, generator)
    return {"log_history": state["log_history"], "kl_coef": state["kl_coef"], "steps": state["step"],
            "wall_time_s": time.perf_counter() - start, "value_head": value_head}


def _save_ppo_checkpoint(path: Path, state, policy, value_head, optimizer, scheduler, generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"state": state, "adapter": get_peft_model_state_dict(policy), "value_head": value_head.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    torch.save(blob, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)


def _load_ppo_checkpoint(path: Path, policy, value_head, optimizer, scheduler, generator) -> dict:
    blob = torch.load(path, map_location="cpu", weights_only=False)
    set_peft_model_state_dict(policy, blob["adapter"])
    value_head.load_state_dict(blob["value_head"])
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    generator.set_state(blob["generator"])
    torch.set_rng_state(blob["torch_rng"])
    if blob["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["cuda_rng"])
    return blob["state"]


# ========================================================================================== the run
def _limit(rows, cfg: TrainConfig):
    if cfg.max_train_examples is None:
        return rows
    limit = cfg.max_train_examples
    return rows.filter(lambda r: r["source_index"] < limit)


def reward_model_key(model_id: str, data_hash: str, cfg: TrainConfig, rlhf: RLHFConfig, kind: str, eval_hash: str) -> str:
    """Hash of everything that changes a trained reward model (or its reported held-out numbers)."""
    fields = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "dtype", "seed", "lr_scheduler_type",
              "warmup_ratio", "weight_decay", "max_grad_norm")
    rm_fields = ("reward_learning_rate", "reward_epochs", "reward_batch_size")
    identity = {"version": CACHE_VERSION, "model": model_id, "data": data_hash, "eval": eval_hash, "kind": kind,
                **{f: getattr(cfg, f) for f in fields}, **{f: getattr(rlhf, f) for f in rm_fields}}
    return content_key(identity, 20)


@dataclass
class RunData:
    """The untokenized rows a run reads, all loaded before any model (so data errors come first)."""

    prompts: Any  # the SFT view (train split): PPO's prompts
    kind: str  # the reward model's view: pairwise (Bradley–Terry) | pointwise (regression on z)
    reward_train: Any
    reward_eval: Any | None  # the eval split (first eval.max_eval_samples rows), None when it cannot be read


def load_run_data(profile: Profile, cfg: TrainConfig, dataset: str, root: str | None, *, reward_model: bool = True) -> RunData:
    prompts = _limit(data.load(dataset, "sft", cfg.train_split, root, **cfg.data_options), cfg)
    kind = "pairwise" if "pairwise" in data.SOURCES[dataset].views else "pointwise"
    if not reward_model:
        return RunData(prompts, kind, None, None)
    train = _limit(data.load(dataset, kind, cfg.train_split, root, **cfg.data_options), cfg)
    try:
        held_out = data.load(dataset, kind, profile.eval.test_split, root, **cfg.data_options)
        if profile.eval.max_eval_samples is not None:
            held_out = held_out.select(range(min(len(held_out), profile.eval.max_eval_samples)))
    except (OSError, ValueError) as err:  # e.g. no local test file: no held-out accuracy, still a run
        logger.warning("reward model: no held-out rows (%s)", err)
        held_out = None
    return RunData(prompts, kind, train, held_out)


def _reward_stage(profile: Profile, cfg: TrainConfig, run_data: RunData, device: torch.device) -> tuple[RewardModel, dict]:
    """Reuse a cached reward model of the same key, or train (and cache) one."""
    kind = run_data.kind
    columns = ["prompt_ids", "chosen_ids", "rejected_ids"] if kind == "pairwise" else ["prompt_ids", "completion_ids", "z"]
    base, tokenizer = load_model_and_tokenizer(cfg.model, dtype=cfg.dtype)

    def tokenized(rows):
        return tokenize_dataset(rows, tokenizer, kind, max_prompt_length=cfg.max_prompt_length,
                                max_completion_length=cfg.max_completion_length).select_columns(columns)

    train_rows = tokenized(run_data.reward_train)
    eval_rows = tokenized(run_data.reward_eval) if run_data.reward_eval is not None else None
    eval_hash = dataset_content_hash(eval_rows, columns) if eval_rows is not None else "none"
    key = reward_model_key(model_identity(cfg.model), dataset_content_hash(train_rows, columns), cfg, profile.rlhf,
                           kind, eval_hash)
    folder = cache_dir() / "reward_models" / key
    if (folder / "metrics.json").exists():
        reward_model, metrics = load_reward_model(base.to(device), folder)
        return reward_model, {**metrics, "cached": True, "cache": str(folder)}
    set_seed(cfg.seed)
    model = apply_lora_from(base.to(device), cfg)
    reward_model = RewardModel(model).to(device)
    metrics = train_reward_model(reward_model, [dict(r) for r in train_rows], kind=kind, pad_token_id=tokenizer.pad_token_id,
                                 rlhf=profile.rlhf, train_config=cfg, eval_batch_size=profile.eval.eval_batch_size,
                                 eval_rows=[dict(r) for r in eval_rows] if eval_rows is not None else None)
    save_reward_model(reward_model, folder, {**metrics, "key": key})
    reward_model.requires_grad_(False)
    return reward_model, {**metrics, "cached": False, "cache": str(folder)}


def _prompt_ids(rows, cfg: TrainConfig, tokenizer) -> list[list[int]]:
    """The prompts of the SFT view's rows, tokenized (cut from the start), duplicates dropped."""
    ids = tokenize_prompts(rows["prompt"], tokenizer, cfg.max_prompt_length)
    return [list(p) for p in dict.fromkeys(tuple(p) for p in ids)]


def train_rlhf(profile: Profile | str, dataset: str, output_dir: str | os.PathLike, *,
               data_dir: str | os.PathLike | None = None, resume: bool = False, overwrite: bool = False,
               reward_fn: RewardFn | None = None) -> dict:
    """Reward model, then PPO: one RLHF run (DESIGN.md, Runs). Returns the metrics.json content.

    The reward model trains on the dataset's pairwise view (Bradley–Terry), or its point-wise view
    (regression on z) when it has no pairs (red-team); `reward_fn(prompt_texts, reply_texts)` replaces
    it with a programmatic reward (no reward model). Writes config.json, adapter/ (the policy's LoRA),
    value_head.pt, tokenizer/, metrics.json and checkpoints/ppo_state.pt (`resume` continues from it);
    a folder that holds another run is refused unless `overwrite` (`ulma.runs.RunFolder.claim`).
    Training settings come from `profile.train` (model, LoRA, data, seed, scheduler), RL ones from
    `profile.rlhf`. Metrics: reward_model_s (the reward model's training time, also when it came from
    the cache: the pipeline's cost), ppo_s, wall_time_s (their sum plus loading and saving),
    reward_model_accuracy (held-out), peak_memory_mb, log_history (one entry per PPO step).
    """
    start = time.perf_counter()
    profile = load_profile(profile) if isinstance(profile, (str, Path)) else profile
    cfg, rlhf = train_config_for(profile, "rlhf"), profile.rlhf
    if dataset not in data.SOURCES:
        raise InvalidRunError(f"unknown dataset {dataset!r}; valid: {sorted(data.SOURCES)}")
    if cfg.lora_r <= 0:
        raise InvalidRunError("rlhf needs LoRA (lora_r > 0): the reference is the policy with its adapters disabled")
    root = resolve_data_dir(data_dir, cfg.data_dir)
    try:
        run_data = load_run_data(profile, cfg, dataset, root, reward_model=reward_fn is None)
    except (ValueError, KeyError, OSError, NotImplementedError) as err:  # OSError: a missing file, no network
        raise InvalidRunError(str(err.args[0] if isinstance(err, KeyError) and err.args else err)) from err
    folder = RunFolder(output_dir)
    output_dir = folder.path
    run_config = {"profile": profile.to_dict(), "method": "rlhf", "dataset": dataset, "data_dir": root,
                  "train": dataclasses.asdict(cfg), "rlhf": dataclasses.asdict(rlhf),
                  "reward": "reward_fn" if reward_fn is not None else "reward_model"}
    folder.claim(run_config, overwrite=overwrite)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    policy, tokenizer = load_model_and_tokenizer(cfg.model, dtype=cfg.dtype)
    prompts = _prompt_ids(run_data.prompts, cfg, tokenizer)
    t0 = time.perf_counter()
    if reward_fn is None:
        reward_model, rm_metrics = _reward_stage(profile, cfg, run_data, device)
    else:
        reward_model, rm_metrics = None, {"kind": "reward_fn", "cached": False, "wall_time_s": 0.0}
    reward_stage_s = time.perf_counter() - t0
    score_fn = text_scorer(reward_fn, tokenizer) if reward_model is None else reward_model_scorer(
        reward_model, tokenizer.pad_token_id, profile.eval.eval_batch_size)

    set_seed(cfg.seed)  # the policy's fresh LoRA and the rollouts do not depend on whether the RM was cached
    policy = apply_lora_from(policy.to(device), cfg)
    ppo = train_ppo(policy, tokenizer, prompts, score_fn, rlhf, cfg, checkpoint=output_dir / "checkpoints" / "ppo_state.pt",
                    resume=resume)

    policy.save_pretrained(output_dir / "adapter")
    torch.save(ppo["value_head"].state_dict(), output_dir / "value_head.pt")
    tokenizer.save_pretrained(output_dir / "tokenizer")
    run_wall = time.perf_counter() - start
    reward_model_s = rm_metrics.get("wall_time_s", 0.0)
    # a cached reward model cost its training time once: count it, not the seconds spent loading it
    wall = run_wall - reward_stage_s + reward_model_s if rm_metrics.get("cached") else run_wall
    history = ppo["log_history"]
    final = {f"ppo/{k}": v for k, v in history[-1].items()} if history else {}
    metrics = {"train": {
        **final,
        "reward_model_s": reward_model_s,
        "reward_model_load_s": reward_stage_s,
        "reward_model_cached": bool(rm_metrics.get("cached")),
        "reward_model_accuracy": rm_metrics.get("accuracy"),
        "ppo_s": ppo["wall_time_s"],
        "ppo_s_per_step": ppo["wall_time_s"] / max(ppo["steps"], 1),
        "wall_time_s": wall,
        "run_wall_time_s": run_wall,
        "peak_memory_mb": peak_memory_mb(device),
        "global_step": ppo["steps"],
        "prompts": len(prompts),
        "kl_coef": ppo["kl_coef"],
        "reward_model": {**rm_metrics, "wall_time_s": reward_model_s},
        "ppo": {"wall_time_s": ppo["wall_time_s"], "steps": ppo["steps"]},
        "log_history": history,
    }}
    # a fresh file: an "eval" section of earlier weights would no longer apply
    return folder.write_metrics("train", metrics["train"], fresh=True)
