"""ulma.rlhf: the pure functions against hand-computed values, the reward model and PPO on `tiny`, and a
whole run (reward model + PPO) on the project's fixtures."""
from __future__ import annotations

import dataclasses
import json
import math

import datasets
import pytest
import torch

from ulma import rlhf
from ulma.batching import tokenize_dataset, tokenize_prompts
from ulma.config import load_profile
from ulma.models import apply_lora, load_model_and_tokenizer
from ulma.trainer import load_trained

BASE = {"data_options": {"on_bad_row": "skip"}}  # the fixtures hold malformed rows on purpose


pytestmark = pytest.mark.usefixtures("one_thread", "isolated")  # tests/conftest.py


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


# ------------------------------------------------------------------------------- pure functions
def test_bradley_terry_and_regression_losses():
    out = rlhf.bradley_terry_loss(t(1.0, 0.0, 2.0), t(0.0, 0.0, 3.0))
    # margins 1, 0, -1: mean of log(1 + e^-1), log 2, log(1 + e)
    expected = (math.log1p(math.exp(-1)) + math.log(2) + math.log1p(math.e)) / 3
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.metrics["rewards/accuracies"].item() == pytest.approx(1 / 3)
    assert out.metrics["rewards/margins"].item() == pytest.approx(0.0)

    out = rlhf.regression_loss(t(0.0, 1.0, 0.5), t(1.0, 1.0, 0.0))
    assert out.loss.item() == pytest.approx((1 + 0 + 0.25) / 3)
    # r > ½ against z > ½: wrong for the first, right for the second and the third (both below)
    assert out.metrics["rewards/accuracies"].item() == pytest.approx(2 / 3)


def test_gae_matches_hand_computation():
    rewards, values = t(1.0, 0.0, 2.0)[None], t(0.5, 1.0, 1.5)[None]
    gamma, lam = 0.9, 0.5
    # δ2 = 2 - 1.5 = 0.5; δ1 = 0 + .9*1.5 - 1 = 0.35; δ0 = 1 + .9*1 - .5 = 1.4
    a2 = 0.5
    a1 = 0.35 + gamma * lam * a2  # 0.575
    a0 = 1.4 + gamma * lam * a1  # 1.65875
    adv, ret = rlhf.gae(rewards, values, torch.ones(1, 3), gamma, lam)
    assert adv[0].tolist() == pytest.approx([a0, a1, a2])
    assert ret[0].tolist() == pytest.approx([a0 + 0.5, a1 + 1.0, a2 + 1.5])

    # a padded third token: the episode ends at the second (V = 0 past it), padding gets 0
    adv, ret = rlhf.gae(rewards, values, t(1, 1, 0)[None], gamma, lam)
    d1 = 0.0 - 1.0
    d0 = 1 + gamma * 1.0 - 0.5
    assert adv[0].tolist() == pytest.approx([d0 + gamma * lam * d1, d1, 0.0])
    assert ret[0, 2].item() == 0.0


def test_clipped_policy_loss_matches_hand_computation():
    old = t(0.0, 0.0, 0.0)
    new = torch.log(t(1.5, 0.5, 1.1))  # ratios 1.5, 0.5, 1.1
    adv = t(1.0, 1.0, -2.0)
    out = rlhf.policy_loss(new, old, adv, torch.ones(3), cliprange=0.2)
    # max(-A·ρ, -A·clip(ρ)): -min(1.5, 1.2) = -1.2 (clipped); -min(.5, .8) = -.5; max(2.2, 2.2) = 2.2
    assert out.loss.item() == pytest.approx((-1.2 - 0.5 + 2.2) / 3, rel=1e-6)
    assert out.metrics["policy/clipfrac"].item() == pytest.approx(1 / 3)
    masked = rlhf.policy_loss(new, old, adv, t(1, 1, 0), cliprange=0.2)
    assert masked.loss.item() == pytest.approx((-1.2 - 0.5) / 2, rel=1e-6)


def test_clipped_value_loss_matches_hand_computation():
    values, old, returns = t(1.0, 0.0, 0.5), t(0.5, 0.0, 0.0), t(2.0, 1.0, 0.0)
    out = rlhf.value_loss(values, old, returns, torch.ones(3), cliprange_value=0.2, vf_coef=0.1)
    # clipped values 0.7, 0.0, 0.2; max of (1, 1.69), (1, 1), (0.25, 0.04) = 1.69, 1, 0.25
    expected = 0.5 * (1.69 + 1.0 + 0.25) / 3
    assert out.metrics["value/loss"].item() == pytest.approx(expected, rel=1e-6)
    assert out.loss.item() == pytest.approx(0.1 * expected, rel=1e-6)
    assert out.metrics["value/clipfrac"].item() == pytest.approx(1 / 3)


def test_kl_penalized_rewards_and_controller():
    logps, ref = t(-1.0, -2.0, -3.0)[None].repeat(2, 1), t(-1.5, -2.0, -2.0)[None].repeat(2, 1)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    rewards = rlhf.kl_penalized_rewards(t(10.0, 20.0), logps, ref, mask, kl_coef=0.2)
    assert rewards[0].tolist() == pytest.approx([-0.1, 0.0, 0.2 + 10.0])
    assert rewards[1].tolist() == pytest.approx([-0.1, 0.0 + 20.0, 0.0])  # the score lands on the last real token

    # KL 9 against target 6: error 0.5 clipped to 0.2; 8 rollouts over horizon 10000
    assert rlhf.update_kl_coef(0.2, 9.0, target=6.0, horizon=10000, n_steps=8) == pytest.approx(0.2 * (1 + 0.2 * 8 / 10000))
    # KL 4.5: error -0.25 -> -0.2; KL 6.6: error 0.1 (inside the clip)
    assert rlhf.update_kl_coef(0.2, 4.5, target=6.0, horizon=100, n_steps=10) == pytest.approx(0.2 * (1 - 0.2 * 0.1))
    assert rlhf.update_kl_coef(0.2, 6.6, target=6.0, horizon=100, n_steps=10) == pytest.approx(0.2 * (1 + 0.1 * 0.1))


def test_defaults_are_those_of_methods_md():
    c = load_profile("paper").rlhf
    assert (c.init_kl_coef, c.target_kl, c.kl_horizon, c.gamma, c.lam) == (0.2, 6.0, 10000, 1.0, 0.95)
    assert (c.cliprange, c.cliprange_value, c.vf_coef, c.ppo_epochs, c.mini_batch_size, c.rollout_batch_size) == (
        0.2, 0.2, 0.1, 1, 2, 8)
    assert (c.temperature, c.top_p, c.top_k, c.max_new_tokens, c.reward_learning_rate) == (0.95, 0.7, 50, 512, 1e-6)


def test_last_token_and_response_mask_ignore_pad_equal_to_eos():
    # pad == eos == 2 (as SmolLM2): the reply's own EOS is the last token, found from the mask
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    assert rlhf.last_token_index(mask).tolist() == [2, 3, 0]
    responses = torch.tensor([[5, 2, 2, 2], [5, 6, 7, 8], [2, 2, 2, 2]])
    assert rlhf.response_mask(responses, 2).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


# ------------------------------------------------------------------------------- reward model
def _keyword_pairs(n: int) -> datasets.Dataset:
    """Separable pairs: the chosen reply says 'thank you', the rejected one does not."""
    topics = ["cats", "rain", "tea", "maps", "jazz", "bikes", "chess", "bread", "ships", "stars"]
    rows = []
    for i in range(n):
        topic = topics[i % len(topics)]
        rows.append({"prompt": [{"role": "user", "content": f"Tell me about {topic} ({i})."}],
                     "chosen": f"thank you, {topic} are nice",
                     "rejected": f"no. {topic} are {'bad' if i % 2 else 'dull'}"})
    return datasets.Dataset.from_list(rows)


def test_reward_model_learns_a_separable_preference():
    profile = load_profile("tiny")
    model, tokenizer = load_model_and_tokenizer("tiny")
    torch.manual_seed(0)
    reward_model = rlhf.RewardModel(apply_lora(model, r=8, alpha=32, dropout=0.0))
    rows = tokenize_dataset(_keyword_pairs(40), tokenizer, "pairwise", max_prompt_length=64, max_completion_length=32)
    rows = [dict(r) for r in rows.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])]
    train_rows, held_out = rows[:32], rows[32:]
    before = rlhf.evaluate_reward_model(reward_model, held_out, "pairwise", tokenizer.pad_token_id)
    config = dataclasses.replace(profile.rlhf, reward_learning_rate=1e-2, reward_epochs=4, reward_batch_size=8)
    metrics = rlhf.train_reward_model(reward_model, train_rows, kind="pairwise", pad_token_id=tokenizer.pad_token_id,
                                      rlhf=config, train_config=profile.train, eval_rows=held_out)
    assert metrics["steps"] == 16
    assert metrics["accuracy"] >= 0.875 > 0.5  # 7 of 8 held-out pairs at least
    assert metrics["held_out"]["loss"] < before["loss"]
    assert metrics["log_history"][-1]["loss"] < metrics["log_history"][0]["loss"]


def test_reward_model_evaluation_batches_rows_of_similar_length_without_changing_its_numbers():
    """The held-out pass sorts rows by length (each batch pads to its own longest row): every row once, in
    non-decreasing length, and the same loss and accuracy as scoring one row at a time."""
    from ulma.batching import length_sorted_batches, row_length

    model, tokenizer = load_model_and_tokenizer("tiny")
    torch.manual_seed(0)
    reward_model = rlhf.RewardModel(apply_lora(model, r=8, alpha=32, dropout=0.0))
    pairs = _keyword_pairs(12).map(lambda r, i: {"chosen": r["chosen"] + " and more" * (i % 5)}, with_indices=True)
    rows = [dict(r) for r in tokenize_dataset(pairs, tokenizer, "pairwise", max_prompt_length=64,
                                              max_completion_length=48).select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])]
    batches = length_sorted_batches(rows, 5)
    assert sorted(i for b in batches for i in b) == list(range(12)) and [len(b) for b in batches] == [5, 5, 2]
    lengths = [row_length(rows[i]) for b in batches for i in b]
    assert lengths == sorted(lengths) and len(set(lengths)) > 2
    batched = rlhf.evaluate_reward_model(reward_model, rows, "pairwise", tokenizer.pad_token_id, batch_size=5)
    single = rlhf.evaluate_reward_model(reward_model, rows, "pairwise", tokenizer.pad_token_id, batch_size=1)
    assert batched["loss"] == pytest.approx(single["loss"], rel=1e-5)
    assert batched["accuracy"] == pytest.approx(single["accuracy"], abs=1e-6)


# ------------------------------------------------------------------------------------- PPO
def _count_lowercase(prompts: list[str], replies: list[str]) -> list[float]:
    return [float(sum(c in "abcdefghijklmnopqrstuvwxyz" for c in r)) for r in replies]


def test_ppo_raises_a_programmatic_reward_with_bounded_kl():
    profile = load_profile("tiny")
    model, tokenizer = load_model_and_tokenizer("tiny")
    torch.manual_seed(0)
    policy = apply_lora(model, r=8, alpha=32, dropout=0.0)
    prompts = tokenize_prompts([[{"role": "user", "content": f"Question number {i}?"}] for i in range(16)], tokenizer, 64)
    config = dataclasses.replace(profile.rlhf, ppo_steps=20, rollout_batch_size=8, mini_batch_size=2,
                                 ppo_learning_rate=1e-2, max_new_tokens=8)
    out = rlhf.train_ppo(policy, tokenizer, prompts, rlhf.text_scorer(_count_lowercase, tokenizer), config, profile.train)
    history = out["log_history"]
    assert len(history) == 20 and out["steps"] == 20
    for key in ("reward", "kl", "entropy", "clipfrac", "value_loss", "policy_loss", "kl_coef"):
        assert all(math.isfinite(h[key]) for h in history), key
    first = sum(h["reward"] for h in history[:5]) / 5
    last = sum(h["reward"] for h in history[-5:]) / 5
    # a random tiny model writes ~1 lowercase letter in 8 bytes; PPO about doubles it (seeds 0-2: +0.9 to +1.4)
    assert last > first + 0.5, (first, last)
    assert history[0]["kl"] == pytest.approx(0.0, abs=1e-4)  # the fresh LoRA is the reference
    assert max(h["kl"] for h in history) < 5.0
    assert history[0]["clipfrac"] == 0.0 or history[0]["clipfrac"] < 0.5
    # the controller moves kl_coef by at most 0.2·8/10000 relative per step
    assert all(abs(h["kl_coef"] / 0.2 - 1) < 20 * 0.2 * 8 / 10000 + 1e-9 for h in history)


# ------------------------------------------------------------------------------------- runs
def _profile(**overrides):
    return load_profile("tiny", {**BASE, **overrides})


def test_train_rlhf_writes_a_run_and_reuses_the_reward_model(tmp_path):
    profile = _profile(**{"rlhf.ppo_steps": 2})
    metrics = rlhf.train_rlhf(profile, "hh", tmp_path / "run", data_dir="fixtures")["train"]
    for name in ("config.json", "metrics.json", "adapter/adapter_config.json", "tokenizer/tokenizer_config.json"):
        assert (tmp_path / "run" / name).exists(), name
    assert metrics["reward_model"]["kind"] == "pairwise" and not metrics["reward_model_cached"]
    assert 0.0 <= metrics["reward_model_accuracy"] <= 1.0
    assert metrics["reward_model_s"] > 0 and metrics["ppo_s"] > 0 and metrics["global_step"] == 2
    assert metrics["wall_time_s"] >= metrics["reward_model_s"] + metrics["ppo_s"]
    assert len(metrics["log_history"]) == 2 and metrics["peak_memory_mb"] > 0
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())["train"]
    assert saved["reward_model"]["wall_time_s"] == metrics["reward_model_s"]  # what report.py reads
    assert json.loads((tmp_path / "run" / "config.json").read_text())["method"] == "rlhf"
    model, _, run_config = load_trained(tmp_path / "run")  # evaluation loads it like any run
    assert run_config["dataset"] == "hh" and hasattr(model, "disable_adapter")

    again = rlhf.train_rlhf(profile, "hh", tmp_path / "again", data_dir="fixtures")["train"]
    assert again["reward_model_cached"] and again["reward_model_s"] == metrics["reward_model_s"]
    assert again["reward_model_accuracy"] == metrics["reward_model_accuracy"]
    # the policy does not depend on whether the reward model was trained or read back
    assert again["log_history"][0]["reward"] == pytest.approx(metrics["log_history"][0]["reward"], abs=1e-5)


def test_red_team_trains_a_regression_reward_model(tmp_path):
    metrics = rlhf.train_rlhf(_profile(**{"rlhf.ppo_steps": 1}), "red_team", tmp_path, data_dir="fixtures")["train"]
    assert metrics["reward_model"]["kind"] == "pointwise"
    assert math.isfinite(metrics["reward_model"]["held_out"]["loss"])


def test_reward_fn_replaces_the_reward_model_and_resume_continues(tmp_path):
    profile = _profile(**{"rlhf.ppo_steps": 4, "train.save_steps": 2})
    full = rlhf.train_rlhf(profile, "hh", tmp_path / "full", data_dir="fixtures", reward_fn=_count_lowercase)["train"]
    assert full["reward_model"]["kind"] == "reward_fn" and full["reward_model_s"] == 0.0

    short = _profile(**{"rlhf.ppo_steps": 2, "train.save_steps": 2})
    rlhf.train_rlhf(short, "hh", tmp_path / "resumed", data_dir="fixtures", reward_fn=_count_lowercase)
    resumed = rlhf.train_rlhf(profile, "hh", tmp_path / "resumed", data_dir="fixtures", reward_fn=_count_lowercase,
                              resume=True)["train"]
    assert [h["step"] for h in resumed["log_history"]] == [1, 2, 3, 4]
    for a, b in zip(full["log_history"], resumed["log_history"]):
        assert b["reward"] == pytest.approx(a["reward"], abs=1e-5) and b["kl"] == pytest.approx(a["kl"], abs=1e-4)


def test_unknown_dataset_is_an_invalid_run(tmp_path):
    from ulma.trainer import InvalidRunError

    with pytest.raises(InvalidRunError):
        rlhf.train_rlhf(_profile(), "nope", tmp_path)


def test_ppo_log_probs_come_from_the_one_log_prob_path():
    """model_token_logps (response window only) equals log_softmax of a full forward, with left padding."""
    from ulma.logprobs import model_token_logps

    model, _ = load_model_and_tokenizer("tiny")
    model = apply_lora(model, r=4, alpha=8, dropout=0.0).eval()
    input_ids = torch.tensor([[0, 0, 5, 6, 7, 8, 9, 10], [3, 4, 5, 6, 7, 11, 12, 2]])
    attention_mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1]])
    position_ids = rlhf._position_ids(attention_mask)
    with torch.no_grad():
        out = model_token_logps(model, input_ids, attention_mask, 5, position_ids=position_ids,
                                return_entropy=True, return_hidden=True)
        full = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                     output_hidden_states=True)
    expected = full.logits[:, 4:-1].float().log_softmax(-1)
    assert out.logps.shape == (2, 3)
    torch.testing.assert_close(out.logps, expected.gather(-1, input_ids[:, 5:, None]).squeeze(-1))
    torch.testing.assert_close(out.entropy, -(expected.exp() * expected).sum(-1))
    torch.testing.assert_close(out.hidden, full.hidden_states[-1][:, 4:-1])
    logps, values, entropy = rlhf.policy_forward(model, rlhf.scalar_head(model.config.hidden_size, zero=True),
                                                 input_ids, attention_mask, 5)
    assert values.shape == (2, 3) and entropy is None and torch.equal(values, torch.zeros(2, 3))
    torch.testing.assert_close(logps.detach(), out.logps)
