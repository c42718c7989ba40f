"""Evaluation: perplexity, preference accuracy, batched greedy generation, evaluate_run on tiny runs."""
from __future__ import annotations

import copy
import json
import math

import datasets
import pytest
import torch

from ulma.batching import render_prompt, tokenize_dataset
from ulma.evaluation import evaluate_run
from ulma.scoring import generate, perplexity, preference_accuracy
from ulma.judges import ScoreJudge
from ulma.models import apply_lora, load_model_and_tokenizer

PROMPTS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "How do I bake bread at home?"}],
    [{"role": "user", "content": "Tell me a joke."}, {"role": "assistant", "content": "Why did the chicken cross?"},
     {"role": "user", "content": "Why?"}],
    [{"role": "user", "content": "What is the capital of France, and why is it famous?"}],
    [{"role": "user", "content": "ok"}],
]


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = load_model_and_tokenizer("tiny")
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def lively():
    """The tiny model with larger random weights: its greedy replies depend on the prompt (the default
    initialisation repeats one token whatever the prompt, which would make generation tests vacuous)."""
    from transformers import LlamaForCausalLM

    from ulma.models import tiny_config, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = tiny_config(len(tokenizer))
    config.initializer_range = 0.2
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _tokenized(rows, tokenizer, view):
    return tokenize_dataset(datasets.Dataset.from_list(rows), tokenizer, view, max_prompt_length=64,
                            max_completion_length=32)


def _hand_logp(model, prompt_ids, completion_ids, reduction="sum"):
    """log π(completion | prompt) from one unpadded forward and a full log-softmax."""
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logp = model(input_ids=ids).logits[0, :-1].double().log_softmax(-1)
    targets = ids[0, 1:]
    token = logp.gather(1, targets[:, None])[:, 0][len(prompt_ids) - 1:]
    return token.sum().item() if reduction == "sum" else token.mean().item(), len(completion_ids)


# ---------------------------------------------------------------------------------------- perplexity
def test_perplexity_is_exp_of_token_weighted_nll(tiny):
    model, tokenizer = tiny
    rows = [{"prompt": PROMPTS[0], "completion": "Hello there, friend."},
            {"prompt": PROMPTS[2], "completion": "To get to the other side."}]
    data = _tokenized(rows, tokenizer, "sft")
    nll, tokens = 0.0, 0
    for r in data:
        lp, n = _hand_logp(model, r["prompt_ids"], r["completion_ids"])
        nll, tokens = nll - lp, tokens + n
    want = math.exp(nll / tokens)
    assert perplexity(model, tokenizer, data, batch_size=2) == pytest.approx(want, rel=1e-5)  # padded batch
    assert perplexity(model, tokenizer, data, batch_size=1) == pytest.approx(want, rel=1e-5)
    # token-weighted, not a mean of per-row perplexities
    per_row = [math.exp(-_hand_logp(model, r["prompt_ids"], r["completion_ids"])[0] / len(r["completion_ids"]))
               for r in data]
    assert want != pytest.approx(sum(per_row) / 2, rel=1e-3)


def test_perplexity_needs_tokenized_rows(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="tokenize_dataset"):
        perplexity(model, tokenizer, [{"prompt": PROMPTS[0], "completion": "x"}], batch_size=1)


# ------------------------------------------------------------------------------- preference accuracy
REPLIES = [("Sure thing.", "I refuse!"), ("zzzz qqqq", "The answer is four."), ("abc", "No way, no how.")]


def _pairs(model, tokenizer, reference=None, reduction="mean", beta=0.1):
    """Pairs ordered so that the chosen reply has the larger margin (hand-computed); their margins."""
    rows, margins = [], []
    for prompt, (a, b) in zip(PROMPTS, REPLIES):
        tok = _tokenized([{"prompt": prompt, "chosen": a, "rejected": b}], tokenizer, "pairwise")[0]
        la = _hand_logp(model, tok["prompt_ids"], tok["chosen_ids"], reduction)[0]
        lb = _hand_logp(model, tok["prompt_ids"], tok["rejected_ids"], reduction)[0]
        if reference is not None:
            la -= _hand_logp(reference, tok["prompt_ids"], tok["chosen_ids"], reduction)[0]
            lb -= _hand_logp(reference, tok["prompt_ids"], tok["rejected_ids"], reduction)[0]
            la, lb = beta * la, beta * lb
        chosen, rejected = (a, b) if la > lb else (b, a)
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        margins.append(abs(la - lb))
    return rows, margins


def _swap(rows):
    return [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} for r in rows]


def test_preference_accuracy_by_likelihood_for_sft(tiny):
    model, tokenizer = tiny
    rows, margins = _pairs(model, tokenizer)
    data = _tokenized(rows, tokenizer, "pairwise")
    right = preference_accuracy(model, data, method="sft", reference=None, batch_size=2)
    assert right["accuracy"] == 1.0 and right["ranking"] == "log_likelihood" and right["logp_reduction"] == "mean"
    assert right["margin_mean"] == pytest.approx(sum(margins) / 3, rel=1e-4)
    wrong = preference_accuracy(model, _tokenized(_swap(rows), tokenizer, "pairwise"), method="unlikelihood",
                                reference=None, batch_size=3)
    assert wrong["accuracy"] == 0.0 and wrong["margin_mean"] == pytest.approx(-right["margin_mean"], rel=1e-6)


def test_preference_accuracy_by_implicit_reward(tiny):
    model, tokenizer = tiny
    reference, _ = load_model_and_tokenizer("tiny", seed=1)
    rows, margins = _pairs(model, tokenizer, reference, reduction="sum", beta=0.5)
    data = _tokenized(rows, tokenizer, "pairwise")
    out = preference_accuracy(model, data, method="dpo", beta=0.5, reference=reference, batch_size=2)
    assert out["accuracy"] == 1.0 and out["ranking"] == "implicit_reward" and out["logp_reduction"] == "sum"
    assert out["margin_mean"] == pytest.approx(sum(margins) / 3, rel=1e-4)
    swapped = preference_accuracy(model, _tokenized(_swap(rows), tokenizer, "pairwise"), method="dpo", beta=0.5,
                                  reference=reference)
    assert swapped["accuracy"] == 0.0
    # the policy as its own reference: every margin is 0, every pair a tie worth one half
    same = preference_accuracy(model, data, method="ulma", reference=model)
    assert same["accuracy"] == 0.5 and same["ties"] == 3 and same["margin_mean"] == 0.0


def test_preference_pass_scores_each_distinct_sequence_once(tiny):
    """Pairs that share a reply (QA-feedback compares four answers per question in up to six pairs) score
    it once; every pair's numbers are those of scoring each sequence on its own, in row order."""
    model, tokenizer = tiny
    reference, _ = load_model_and_tokenizer("tiny", seed=1)
    prompt, (a, b, c) = PROMPTS[1], ("Knead, rest, bake.", "Buy it.", "Flour and water, then an oven.")
    rows = [{"prompt": prompt, "chosen": x, "rejected": y} for x, y in ((a, b), (a, c), (c, b), (b, a))]
    rows.append({"prompt": PROMPTS[3], "chosen": a, "rejected": b})  # the same replies to another prompt
    data = _tokenized(rows, tokenizer, "pairwise")
    out = preference_accuracy(model, data, method="dpo", beta=0.5, reference=reference, batch_size=2)
    assert out["sequences_scored"] == 3 + 2 and out["num_pairs"] == 5
    assert sum(len(batch) for batch in out["batch_lengths"]) == 5
    for row, outcome, headline, nll in zip(data, out["outcomes"], out["headline_outcomes"], out["chosen_nll"]):
        ratio = [_hand_logp(model, row["prompt_ids"], row[k], "sum")[0]
                 - _hand_logp(reference, row["prompt_ids"], row[k], "sum")[0] for k in ("chosen_ids", "rejected_ids")]
        assert outcome == (1.0 if ratio[0] > ratio[1] else 0.0)
        mean = [ratio[0] / len(row["chosen_ids"]), ratio[1] / len(row["rejected_ids"])]
        assert headline == (1.0 if mean[0] > mean[1] else 0.0)
        assert nll == pytest.approx(-_hand_logp(model, row["prompt_ids"], row["chosen_ids"], "sum")[0], rel=1e-5)
    assert out["outcomes"][0] + out["outcomes"][3] == 1.0  # the same pair both ways: opposite outcomes


def test_preference_accuracy_with_adapters_disabled_as_reference(tiny):
    _, tokenizer = tiny
    base, _ = load_model_and_tokenizer("tiny")
    policy = apply_lora(copy.deepcopy(base), r=4, alpha=8, dropout=0.0)
    data = _tokenized(_pairs(base, tokenizer)[0], tokenizer, "pairwise")
    fresh = preference_accuracy(policy, data, method="pointwise_dpo", reference="adapters")
    assert fresh["accuracy"] == 0.5 and fresh["ties"] == 3  # fresh LoRA (B = 0) is the base model exactly
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(name)))
    by_adapters = preference_accuracy(policy, data, method="kto", reference="adapters")
    by_copy = preference_accuracy(policy, data, method="kto", reference=base)
    assert by_adapters["margin_mean"] == pytest.approx(by_copy["margin_mean"], rel=1e-5, abs=1e-9)
    assert by_adapters["margin_mean"] != 0.0


def test_preference_accuracy_rejects_a_missing_reference(tiny):
    model, tokenizer = tiny
    data = _tokenized(_pairs(model, tokenizer)[0], tokenizer, "pairwise")
    with pytest.raises(ValueError, match="needs a reference"):
        preference_accuracy(model, data, method="dpo", reference=None)
    with pytest.raises(ValueError, match="peft"):
        preference_accuracy(model, data, method="dpo", reference="adapters")


def test_preference_accuracy_reference_cache(tiny, tmp_path):
    """The first pass writes the reference log-probs, the next reads them (no reference model needed) and
    gives the same margins to the bit; a cache of another length is ignored, not misread."""
    model, tokenizer = tiny
    reference, _ = load_model_and_tokenizer("tiny", seed=1)
    rows, margins = _pairs(model, tokenizer, reference, reduction="sum", beta=0.5)
    data = _tokenized(rows, tokenizer, "pairwise")
    cache = tmp_path / "ref.safetensors"
    first = preference_accuracy(model, data, method="dpo", beta=0.5, reference=reference, batch_size=2,
                                reference_cache=cache)
    assert first["reference_cache"] == "miss" and cache.exists()
    again = preference_accuracy(model, data, method="dpo", beta=0.5, reference=None, batch_size=2,
                                reference_cache=cache)
    assert again["reference_cache"] == "hit" and again["margin_mean"] == first["margin_mean"]
    assert again["margin_mean"] == pytest.approx(sum(margins) / 3, rel=1e-4)
    # another method that ranks by implicit reward reads the same reference half (here with reduction sum)
    assert preference_accuracy(model, data, method="ulma", beta=0.5, reference=None, logp_reduction="sum",
                               batch_size=2, reference_cache=cache)["margin_mean"] == first["margin_mean"]
    # fewer pairs than the cache holds: not this cache's data, so it needs the reference again
    with pytest.raises(ValueError, match="needs a reference"):
        preference_accuracy(model, data.select(range(2)), method="dpo", reference=None, reference_cache=cache)
    # sft ranks by likelihood, but its headline column reads the same reference half
    sft = preference_accuracy(model, data, method="sft", reference=None, reference_cache=cache)
    assert sft["reference_cache"] == "hit" and sft["ranking"] == "log_likelihood"
    assert sft["headline_accuracy"] is not None
    # without a cache or reference, sft still gets its own column, and the headline says why it is missing
    bare = preference_accuracy(model, data, method="sft", reference=None)
    assert bare["reference_cache"] is None and bare["headline_accuracy"] is None
    assert "no reference" in bare["headline_note"] and bare["accuracy"] == sft["accuracy"]


def test_headline_ranks_every_method_by_the_token_mean_log_ratio(tiny):
    """The headline margin is [mean log π/π_ref](w) − [mean log π/π_ref](l), the same for every method
    (β and the method's reduction play no part); the base model against itself ties every pair."""
    model, tokenizer = tiny
    reference, _ = load_model_and_tokenizer("tiny", seed=1)
    rows = [{"prompt": p, "chosen": a, "rejected": b} for p, (a, b) in zip(PROMPTS, REPLIES)]
    data = _tokenized(rows, tokenizer, "pairwise")
    want = []
    for r in data:
        ratio = [_hand_logp(model, r["prompt_ids"], r[c], "mean")[0]
                 - _hand_logp(reference, r["prompt_ids"], r[c], "mean")[0] for c in ("chosen_ids", "rejected_ids")]
        want.append(ratio[0] - ratio[1])
    outs = {m: preference_accuracy(model, data, method=m, beta=b, reference=reference, batch_size=2)
            for m, b in (("dpo", 0.5), ("ulma", 0.1), ("sft", 0.1), ("kto", 2.0))}
    expected = [1.0 if m > 0 else 0.0 for m in want]
    for m, out in outs.items():
        assert out["headline_outcomes"] == expected, m
        assert out["headline_accuracy"] == pytest.approx(sum(expected) / 3)
        assert out["headline_margin_mean"] == pytest.approx(sum(want) / 3, rel=1e-4, abs=1e-7)
        assert out["outcomes"] is not None and len(out["outcomes"]) == 3
    # the own column differs by method: dpo ranks by summed log-ratios, sft by likelihood
    assert outs["dpo"]["margin_mean"] != pytest.approx(outs["sft"]["margin_mean"], rel=1e-3)
    base = preference_accuracy(model, data, method="base", reference=model)
    assert base["headline_accuracy"] == 0.5 and base["headline_ties"] == 3 and base["headline_margin_mean"] == 0.0
    assert base["ranking"] == "log_likelihood" and base["logp_reduction"] == "mean"
    # per-pair chosen NLL and token counts (for the perplexity of the same pass)
    first = data[0]
    assert base["chosen_tokens"][0] == len(first["chosen_ids"])
    want_nll = -_hand_logp(model, first["prompt_ids"], first["chosen_ids"])[0]
    assert base["chosen_nll"][0] == pytest.approx(want_nll, rel=1e-5)


def test_item_ids_are_stable_and_distinguish_repeats():
    from ulma.scoring import item_ids

    ids = item_ids([PROMPTS[0], PROMPTS[1], PROMPTS[0], [dict(m) for m in PROMPTS[1]]])
    assert ids[0] != ids[1] and ids[2] == ids[0] + "~1" and ids[3] == ids[1] + "~1"
    assert item_ids([PROMPTS[1]]) == [ids[1]] and len(ids[0]) == 12


def test_reference_cache_path_keys_on_content_model_and_settings(tiny, tmp_path, monkeypatch):
    from ulma.scoring import reference_cache_path

    monkeypatch.setenv("ULMA_CACHE_DIR", str(tmp_path))
    model, tokenizer = tiny
    data = _tokenized(_pairs(model, tokenizer)[0], tokenizer, "pairwise")
    key = dict(model_name="tiny", dtype=torch.float32, reduction="sum", batch_size=16)
    path = reference_cache_path(data, **key)
    assert path == reference_cache_path(data, **key) and path.parent == tmp_path / "reference"
    assert path != reference_cache_path(data.select(range(2)), **key)
    for change in ({"reduction": "mean"}, {"batch_size": 8}, {"dtype": torch.bfloat16}):
        assert path != reference_cache_path(data, **{**key, **change})


# ---------------------------------------------------------------------------------------- generation
def test_generate_batched_equals_one_by_one_and_is_deterministic(lively):
    model, tokenizer = lively
    batched = generate(model, tokenizer, PROMPTS, max_new_tokens=10, batch_size=3, progress=False)
    single = [generate(model, tokenizer, [p], max_new_tokens=10, batch_size=1, progress=False)[0] for p in PROMPTS]
    assert batched == single
    assert generate(model, tokenizer, PROMPTS, max_new_tokens=10, batch_size=5, progress=False) == batched
    assert len(set(batched)) == len(PROMPTS)  # replies depend on the prompt


def test_generate_left_pads_and_keeps_the_end_of_long_prompts(tiny, monkeypatch):
    from ulma import scoring

    model, tokenizer = tiny
    seen = []
    real = scoring.greedy_decode

    def spy(model, input_ids, attention_mask, *args, **kwargs):
        seen.append({"input_ids": input_ids.clone(), "attention_mask": attention_mask.clone()})
        return real(model, input_ids, attention_mask, *args, **kwargs)

    monkeypatch.setattr(scoring, "greedy_decode", spy)
    long = [{"role": "user", "content": "blah " * 100}, {"role": "assistant", "content": "mm"},
            {"role": "user", "content": "the last question?"}]
    generate(model, tokenizer, [PROMPTS[0], long], max_new_tokens=3, batch_size=2, max_prompt_length=40,
             progress=False)
    ids, mask = seen[0]["input_ids"], seen[0]["attention_mask"]
    assert ids.shape[1] <= 40 and mask[1].all()  # the long prompt is cut to at most 40 tokens
    assert mask[0, 0] == 0 and mask[0, -1] == 1 and ids[0, 0] == tokenizer.pad_token_id  # left padding
    text = tokenizer.decode(ids[1], skip_special_tokens=True)
    assert text.endswith("Human: the last question?\n\nAssistant:")
    assert render_prompt(long, tokenizer).endswith(text)


def test_generate_stops_at_eos(lively):
    model, tokenizer = lively
    prompt_ids = tokenizer(render_prompt(PROMPTS[1], tokenizer))["input_ids"]
    out = model.generate(input_ids=torch.tensor([prompt_ids]), max_new_tokens=12, do_sample=False)
    tokens = out[0, len(prompt_ids):].tolist()
    stop = tokens[3]
    cut = tokens.index(stop)
    assert cut > 0
    model.generation_config.eos_token_id = stop  # pretend that token is the end of the turn
    try:
        reply = generate(model, tokenizer, [PROMPTS[1]], max_new_tokens=12, progress=False)[0]
    finally:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    assert reply == tokenizer.decode(tokens[:cut], skip_special_tokens=True).strip()
    assert len(reply) < len(tokenizer.decode(tokens, skip_special_tokens=True).strip())


def test_generate_stops_each_row_at_its_eos_and_the_batch_when_all_have_stopped(lively):
    """Per-row stopping in one left-padded batch: each reply ends at its own first EOS (as generated alone),
    a row that has ended leaves the batch (the next step runs on the rows still going), and decoding stops
    once every row has ended (max cut + 1 forwards, not the 12-token budget), each step after the prompt
    feeding one token (the KV cache)."""
    model, tokenizer = lively
    alone = []
    for prompt in PROMPTS:
        ids = tokenizer(render_prompt(prompt, tokenizer))["input_ids"]
        alone.append(model.generate(input_ids=torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0, len(ids):].tolist())
    # the first row's second token and the others' sixth are ends of turn: every row ends by its sixth token
    stops = sorted({alone[0][1]} | {tokens[5] for tokens in alone[1:]})
    cuts = [next(k for k, t in enumerate(tokens) if t in stops) for tokens in alone]
    assert len(set(cuts)) > 1 and max(cuts) <= 5  # rows end at different steps
    shapes = []
    hook = model.register_forward_pre_hook(lambda m, args, kwargs: shapes.append(kwargs["input_ids"].shape),
                                           with_kwargs=True)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, *stops]
    try:
        out = generate(model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=len(PROMPTS), progress=False,
                       details=True)
    finally:
        hook.remove()
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    assert [g.num_tokens for g in out] == cuts and not any(g.truncated for g in out)
    assert [g.text for g in out] == [tokenizer.decode(t[:c], skip_special_tokens=True).strip() for t, c in zip(alone, cuts)]
    rows, widths = zip(*shapes)
    assert len(widths) == max(cuts) + 1 < 12  # stopped when the last row ended
    assert widths[0] > 1 and widths[1:] == (1,) * max(cuts)  # KV cache: one new token per step
    # step k runs the rows whose EOS comes at step k or later
    assert list(rows) == [sum(c >= k for c in cuts) for k in range(max(cuts) + 1)]
    assert rows[0] == len(PROMPTS) > rows[-1]


def test_greedy_decode_gives_generate_s_tokens_on_a_left_padded_batch(lively):
    """`greedy_decode` (rows leave the batch at their EOS) against transformers' `generate` (greedy, the same
    EOS, padding after a row's end) on one left-padded batch: the same tokens, up to each row's EOS."""
    from ulma.batching import left_pad_prompts, tokenize_prompts
    from ulma.scoring import greedy_decode

    model, tokenizer = lively
    ids = tokenize_prompts(PROMPTS, tokenizer, 64)
    batch = left_pad_prompts(ids, tokenizer.pad_token_id)
    assert not batch["attention_mask"].all()  # the prompts differ in length: some rows are padded
    free = model.generate(**batch, max_new_tokens=12, do_sample=False, eos_token_id=None,
                          pad_token_id=tokenizer.pad_token_id)[:, batch["input_ids"].shape[1]:].tolist()
    stops = sorted({free[0][2], free[-1][7]})  # two rows end early, at different steps; the others run on
    reference = model.generate(**batch, max_new_tokens=12, do_sample=False, eos_token_id=stops,
                               pad_token_id=tokenizer.pad_token_id)[:, batch["input_ids"].shape[1]:].tolist()
    ours = greedy_decode(model, batch["input_ids"], batch["attention_mask"], stops, max_new_tokens=12)
    for mine, theirs in zip(ours, reference):
        end = next((k + 1 for k, t in enumerate(theirs) if t in stops), len(theirs))
        assert mine == theirs[:end]
    assert sorted(map(len, ours))[0] < 12 and max(map(len, ours)) == 12  # some rows ended, some ran the budget


def test_generate_details_count_tokens_and_flag_the_budget(lively):
    model, tokenizer = lively
    prompt_ids = tokenizer(render_prompt(PROMPTS[1], tokenizer))["input_ids"]
    out = model.generate(input_ids=torch.tensor([prompt_ids]), max_new_tokens=12, do_sample=False)
    tokens = out[0, len(prompt_ids):].tolist()
    stop = tokens[3]
    cut = tokens.index(stop)
    model.generation_config.eos_token_id = stop
    try:
        ended, cut_short = (generate(model, tokenizer, [PROMPTS[1]], max_new_tokens=m, progress=False, details=True)[0]
                            for m in (12, cut))
    finally:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    assert ended.num_tokens == cut and not ended.truncated  # stopped at EOS within the budget
    assert cut_short.num_tokens == cut and cut_short.truncated  # the budget ran out just before the EOS
    assert ended.text == cut_short.text == tokenizer.decode(tokens[:cut], skip_special_tokens=True).strip()


# --------------------------------------------------------------------------------------- evaluate_run
class LengthJudge(ScoreJudge):
    """A stand-in judge: score = reply length; says so in `info`."""

    name = "length"

    def __init__(self):
        super().__init__()
        self.info["accuracy"] = None

    def score_batch(self, prompts, replies):
        return [float(len(r)) for r in replies]


def _hand_made_run(path, dataset, method, overrides=None):
    """A run folder as docs/DESIGN.md lays it out (config.json, adapter/, tokenizer/, metrics.json)."""
    import dataclasses

    path.mkdir(parents=True, exist_ok=True)
    from ulma.config import load_profile, train_config_for

    profile = load_profile("tiny", overrides or {})
    cfg = train_config_for(profile, method)
    model, tokenizer = load_model_and_tokenizer("tiny")
    model = apply_lora(model, r=4, alpha=8, dropout=0.0)
    model.save_pretrained(path / "adapter")
    tokenizer.save_pretrained(path / "tokenizer")
    (path / "config.json").write_text(json.dumps({"profile": profile.to_dict(), "method": method, "dataset": dataset,
                                                  "data_dir": "fixtures", "train": dataclasses.asdict(cfg)}))
    (path / "metrics.json").write_text(json.dumps({"train": {"loss": 1.0}, "other": 1}))
    return path


def _test_rows(dataset, split):
    from ulma import data

    return len(data.load(dataset, "sft", split, "fixtures", on_bad_row="skip"))


def test_evaluate_run_on_a_hand_made_hh_run(tmp_path):
    run = _hand_made_run(tmp_path, "hh", "ulma")
    result = evaluate_run(run, judge=LengthJudge(), data_dir="fixtures", progress=False)
    rows = _test_rows("hh", result["test_split"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train"] == {"loss": 1.0} and metrics["other"] == 1  # other keys kept
    assert metrics["eval"] == json.loads(json.dumps(result))
    assert math.isfinite(result["perplexity"]) and result["perplexity"] > 1
    assert result["perplexity_rows"] == min(16, rows)  # tiny: max_eval_samples 16
    # fresh adapters = the reference: every implicit reward margin is 0
    assert result["preference_accuracy"] == 0.5 and result["preference_ranking"] == "implicit_reward"
    n = min(4, rows)  # tiny: num_generations 4
    assert result["num_generations"] == n and result["wins"] + result["ties"] + result["losses"] == n
    assert result["win_rate"] + result["tie_rate"] + result["lose_rate"] == pytest.approx(1.0)
    lines = [json.loads(line) for line in (run / "generations.jsonl").read_text().splitlines()]
    assert len(lines) == n
    assert set(lines[0]) >= {"prompt", "reference", "generation", "judge"}
    assert lines[0]["judge"]["score"] == len(lines[0]["generation"])
    assert lines[0]["judge"]["verdict"] in ("win", "tie", "lose")
    # the headline ranks the fresh adapters (= the base model) at exactly one half too
    assert result["preference_accuracy_headline"] == 0.5
    assert result["preference_headline_ties"] == result["preference_pairs"]
    # per-item lists, aligned with their ids, and the length bookkeeping
    items = result["per_item"]
    pairs, gens, ppl = items["pairs"], items["generations"], items["perplexity"]
    assert len(pairs["ids"]) == len(pairs["own"]) == len(pairs["headline"]) == result["preference_pairs"]
    assert set(pairs["own"]) == {0.5} and set(pairs["headline"]) == {0.5}
    assert len(ppl["ids"]) == len(ppl["nll"]) == len(ppl["tokens"]) == result["perplexity_rows"]
    assert result["perplexity_source"] == "pairwise pass"  # HH: the SFT rows are the pairs' chosen replies
    assert math.exp(sum(ppl["nll"]) / sum(ppl["tokens"])) == pytest.approx(result["perplexity"], rel=1e-4)
    assert gens["ids"] == [line["id"] for line in lines] and gens["ids"][:n] == ppl["ids"][:n]
    assert gens["reply_chars"] == [len(line["generation"]) for line in lines]
    assert gens["verdict"] == [{"win": 1.0, "tie": 0.5, "lose": 0.0}[line["judge"]["verdict"]] for line in lines]
    assert result["win_score"] == pytest.approx((result["wins"] + 0.5 * result["ties"]) / n)
    assert 0.0 <= result["lc_win_rate"] <= 1.0 and result["lc_length_unit"] == "chars"
    # tiny's budget is 8 tokens and a random model never says EOS: every reply is cut
    assert gens["truncated"] == [1] * n and result["truncated_fraction"] == 1.0
    assert result["generation_budget_ok"] is False and gens["reply_tokens"] == [8] * n
    assert result["mean_reply_tokens"] == 8 and result["mean_reply_chars"] == result["mean_generation_chars"]
    assert result["mean_reference_chars"] == pytest.approx(sum(gens["reference_chars"]) / n)
    # up to 8 replies as text, for side-by-side reading from the results JSON alone (ulma.notebook reads
    # metrics.eval.generations: index, prompt, reference, generation, judge.verdict)
    shown = result["generations"]
    assert [x["generation"] for x in shown] == [line["generation"] for line in lines][:8] and len(shown) == n
    assert [x["index"] for x in shown] == list(range(n)) and shown[0]["judge"] == lines[0]["judge"]
    assert shown[0]["prompt"] == lines[0]["prompt"][-1]["content"] and shown[0]["reference"] == lines[0]["reference"]
    # the padding of the one scoring pass (HH: the pairwise pass served the perplexity too)
    assert result["scoring_passes"] == 1 and 0.0 <= result["padded_fraction"] < 1.0


def test_a_second_method_reads_the_base_models_reference_log_probs_from_the_cache(tmp_path, monkeypatch):
    """The reference half of the pairwise pass is computed once per (pairs, base model) and read back by
    every other method's evaluation, with equal headline numbers (both runs are fresh adapters)."""
    monkeypatch.setenv("ULMA_CACHE_DIR", str(tmp_path / "cache"))
    first = evaluate_run(_hand_made_run(tmp_path / "ulma", "hh", "ulma"), judge="none", data_dir="fixtures",
                         progress=False)
    second = evaluate_run(_hand_made_run(tmp_path / "sft", "hh", "sft"), judge="none", data_dir="fixtures",
                          progress=False)
    assert first["preference_reference_cache"] == "miss" and second["preference_reference_cache"] == "hit"
    assert len(list((tmp_path / "cache" / "reference").glob("eval-pairs-*.safetensors"))) == 1
    assert second["per_item"]["pairs"]["headline"] == first["per_item"]["pairs"]["headline"]


def test_evaluate_run_of_the_base_model_ranks_at_one_half(tmp_path):
    """A run that trained nothing (``base``: no adapter/ or model/, as `ulma.trainer.train` leaves it) is
    the starting model; both headline and own columns are computed, the headline at exactly ½ (the model
    is its own reference)."""
    run = _hand_made_run(tmp_path, "hh", "base")
    import shutil

    shutil.rmtree(run / "adapter")
    result = evaluate_run(run, judge="none", data_dir="fixtures", progress=False)
    assert result["preference_accuracy_headline"] == 0.5 and result["preference_headline_margin"] == 0.0
    assert result["preference_ranking"] == "log_likelihood" and result["preference_logp_reduction"] == "mean"
    assert result["judge"] is None and result["per_item"]["generations"]["verdict"] is None
    assert all(x["judge"] is None for x in result["generations"])


def test_evaluate_run_stops_replies_at_eos(tmp_path, lively):
    """A full-model run whose generation config names a frequent token as EOS: replies that reach it end
    there (fewer tokens than the budget, not truncated); the others are cut at the budget."""
    from ulma import data
    from ulma.batching import tokenize_prompts

    model, tokenizer = lively
    run = _hand_made_run(tmp_path, "hh", "sft", {"eval.max_new_tokens": 6})
    import shutil

    shutil.rmtree(run / "adapter")
    prompts = data.load("hh", "sft", "mini_test", "fixtures", on_bad_row="skip")["prompt"][:4]
    firsts = []
    for ids in tokenize_prompts(prompts, tokenizer, 64):
        out = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=6, do_sample=False)
        firsts.append(out[0, len(ids):].tolist())
    stop = firsts[0][2]  # the first prompt's third reply token: that reply ends after 2 tokens
    want = [(f.index(stop), False) if stop in f else (6, True) for f in firsts]
    saved = copy.deepcopy(model)
    saved.generation_config.eos_token_id = [tokenizer.eos_token_id, stop]
    saved.save_pretrained(run / "model")
    result = evaluate_run(run, judge="none", data_dir="fixtures", progress=False)
    items = result["per_item"]["generations"]
    assert list(zip(items["reply_tokens"], map(bool, items["truncated"]))) == want
    assert want[0] == (2, False)
    assert result["truncated_fraction"] == pytest.approx(sum(t for _, t in want) / len(want))
    assert result["mean_reply_tokens"] == pytest.approx(sum(n for n, _ in want) / len(want))


def test_evaluate_run_red_team_has_no_preference_accuracy(tmp_path):
    run = _hand_made_run(tmp_path, "red_team", "ulma", {"eval.num_generations": 2})
    result = evaluate_run(run, judge="none", data_dir="fixtures", progress=False)
    assert result["preference_accuracy"] is None and "pairwise" in result["preference_note"]
    lines = (run / "generations.jsonl").read_text().splitlines()
    rows = _test_rows("red_team", result["test_split"])
    assert result["judge"] is None and result["num_generations"] == len(lines) == min(2, rows)
    assert (result["perplexity"] is None) == (rows == 0)
    assert all("judge" not in json.loads(line) for line in lines)
    if rows:  # no pairs to share a pass with: the positives get their own
        assert result["perplexity_source"] == "sft pass" and "pairs" not in result["per_item"]
        assert len(result["per_item"]["perplexity"]["ids"]) == result["perplexity_rows"]


@pytest.mark.slow
def test_evaluate_run_on_a_trained_run(tmp_path, monkeypatch):
    from ulma.trainer import train

    monkeypatch.setenv("ULMA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ULMA_DATA_DIR", raising=False)
    run = tmp_path / "run"
    train("tiny", "sft", "hh", run, data_dir="fixtures")
    result = evaluate_run(run, judge=LengthJudge(), progress=False)  # data dir from the profile: fixtures
    assert result["preference_ranking"] == "log_likelihood" and 0.0 <= result["preference_accuracy"] <= 1.0
    assert "train" in json.loads((run / "metrics.json").read_text())


def test_the_offline_judge_learns_each_datasets_own_criterion():
    """QA-feedback's replies are judged by a MiniLM head trained on QA-feedback's human comparisons
    (helpfulness and correctness), never by the HH harmlessness head; HH, Golden HH (HH's test prompts: one
    judge, so their scores subtract) and red-team (harmlessness, no pairs of its own) by the HH head."""
    from ulma.config import load_profile
    from ulma.evaluation import judge_options
    from ulma.judges import judge_option_names

    mini = load_profile("mini")
    qa = judge_options("minilm_harmlessness", dataset="qa_feedback", profile=mini, data_dir="bundled")
    assert qa["dataset"] == "qa_feedback" and qa["train_split"] == "mini_train" and qa["test_split"] == "mini_test"
    for dataset in ("hh", "golden_hh", "red_team"):
        assert judge_options("minilm_harmlessness", dataset=dataset, profile=mini, data_dir=None)["dataset"] == "hh"
    assert "dataset" in judge_option_names("minilm_harmlessness")  # get_judge takes it
    assert judge_options("llm", dataset="qa_feedback", profile=mini, data_dir=None)["criterion"] == "helpfulness"
    # a dataset of the user's own files (no built-in source): harmlessness, judged by the HH head
    own = judge_options("llm", dataset="data/mine.jsonl", profile=mini, data_dir=None)
    assert own["criterion"] == "harmlessness"
    assert judge_options("minilm_harmlessness", dataset="data/mine.jsonl", profile=mini, data_dir=None)["dataset"] == "hh"
