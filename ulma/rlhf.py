"""The RLHF baseline: a reward model, then PPO against it (docs/METHODS.md, "RLHF baseline"). No TRL.

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

The losses and the PPO arithmetic are pure functions over tensors (`ulma.rl_losses`: ``bradley_terry_loss``,
``regression_loss``, ``gae``, ``policy_loss``, ``value_loss``, ``kl_penalized_rewards``,
``update_kl_coef``); the reward model and the heads live in `ulma.reward_model`; `train_reward_model` and
`train_ppo` take models and data built outside;
`train_rlhf` is the run (``ulma.trainer.train(method="rlhf")`` calls it) and writes the run layout of
docs/DESIGN.md, so evaluation reads it like any other run.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from transformers import set_seed

from ulma import data
from ulma.batching import PointwiseCollator, left_pad_prompts, tokenize_dataset, tokenize_prompts
from ulma.config import Profile, RLHFConfig, TrainConfig, load_profile, train_config_for
from ulma.files import content_key, dataset_content_hash, portable_path
from ulma.models import apply_lora_from, cache_dir, load_model_and_tokenizer, model_identity
# the pieces of the baseline, importable from here as before the split
from ulma.logprobs import model_token_logps
from ulma.reward_model import (RewardModel, _backbone, _batches, _device, _optimizer, _position_ids,  # noqa: F401
                               evaluate_reward_model, last_token_index, load_reward_model, save_reward_model,
                               scalar_head, train_reward_model)
from ulma.rl_losses import (bradley_terry_loss, gae, kl_penalized_rewards, masked_mean, masked_whiten,  # noqa: F401
                            policy_loss, regression_loss, response_mask, update_kl_coef, value_loss)
from ulma.runs import InvalidRunError, RunFolder, objective_trace, peak_memory_mb, resolve_data_dir

logger = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when a cached reward model's meaning changes
RewardFn = Callable[[list[str], list[str]], Sequence[float]]  # (prompt texts, reply texts) -> one score each


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

    logps, values, entropy = policy_forward(policy, value_head, input_ids, attention_mask, width, entropy=True)
    with policy.disable_adapter():
        ref_logps, _, _ = policy_forward(policy, None, input_ids, attention_mask, width)
    reply_ids = [r[m.bool()].tolist() for r, m in zip(responses.cpu(), mask.cpu())]
    scores = score_fn([list(p) for p in prompts], reply_ids).to(device=device, dtype=torch.float32)
    return Rollouts(input_ids, attention_mask, mask, logps * mask, ref_logps * mask, values * mask, scores,
                    masked_mean(entropy, mask), width)


def policy_forward(policy, value_head, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int, *,
                   entropy: bool = False):
    """(log π (B, R), values (B, R) or None, entropy (B, R) or None) of the response tokens (positions
    ≥ `start`), through the package's one log-prob path (`ulma.logprobs.model_token_logps`): the LM head
    runs on the response only; the value of token t is read at the hidden state that predicts it."""
    out = model_token_logps(policy, input_ids, attention_mask, start, position_ids=_position_ids(attention_mask),
                            return_entropy=entropy, return_hidden=value_head is not None)
    values = value_head(out.hidden.float()).squeeze(-1) if value_head is not None else None
    return out.logps, values, out.entropy


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
            logps, values, _ = policy_forward(policy, value_head, r.input_ids[idx], r.attention_mask[idx], r.prompt_width)
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
        return reward_model, {**metrics, "cached": True, "cache": portable_path(folder)}
    set_seed(cfg.seed)
    model = apply_lora_from(base.to(device), cfg)
    reward_model = RewardModel(model).to(device)
    metrics = train_reward_model(reward_model, [dict(r) for r in train_rows], kind=kind, pad_token_id=tokenizer.pad_token_id,
                                 rlhf=profile.rlhf, train_config=cfg, eval_batch_size=profile.eval.eval_batch_size,
                                 eval_rows=[dict(r) for r in eval_rows] if eval_rows is not None else None)
    save_reward_model(reward_model, folder, {**metrics, "key": key})
    reward_model.requires_grad_(False)
    return reward_model, {**metrics, "cached": False, "cache": portable_path(folder)}


def _prompt_ids(rows, cfg: TrainConfig, tokenizer) -> list[list[int]]:
    """The prompts of the SFT view's rows, tokenized (cut from the start), duplicates dropped."""
    ids = tokenize_prompts(rows["prompt"], tokenizer, cfg.max_prompt_length)
    return [list(p) for p in dict.fromkeys(tuple(p) for p in ids)]


def train_rlhf(profile: Profile | str, dataset: str, output_dir: str | os.PathLike, *,
               data_dir: str | os.PathLike | None = None, resume: bool = False, overwrite: bool = False,
               reward_fn: RewardFn | None = None) -> dict:
    """Reward model, then PPO: one RLHF run (docs/DESIGN.md, Runs). Returns the metrics.json content.

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
    ppo = train_ppo(policy, tokenizer, prompts, score_fn, rlhf, cfg, checkpoint=folder.ppo_state,
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
        "objective": objective_trace(history),
        "log_history": history,
    }}
    # a fresh file: an "eval" section of earlier weights would no longer apply
    return folder.write_metrics("train", metrics["train"], fresh=True)
