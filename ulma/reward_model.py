"""The reward model r(x, y) of the RLHF baseline: a causal LM (LoRA-wrapped) and a scalar head read at the
last attended token, trained on pairs (Bradley–Terry) or on point-wise labels (regression), saved and
loaded atomically. The scalar heads live here too: PPO's value head (`ulma.rlhf`) is one.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import time
from pathlib import Path

import torch
from peft import PeftModel
from transformers import get_scheduler

from ulma.batching import PairwiseCollator, PointwiseCollator, length_sorted_batches
from ulma.config import RLHFConfig, TrainConfig
from ulma.files import read_json, write_json
from ulma.losses import LossOutput
from ulma.rl_losses import bradley_terry_loss, regression_loss

logger = logging.getLogger(__name__)


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
    # batches of similar length: each pads to its own longest row (the metrics are sums over rows)
    for idx in length_sorted_batches(rows, batch_size):
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
    return reward_model, read_json(folder / "metrics.json") or {}
