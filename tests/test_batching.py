"""ulma.batching: prompt rendering, tokenized views, collators; with small tokenizers built offline."""
from __future__ import annotations

import math
from pathlib import Path

import datasets
import pytest
import torch
from transformers import PreTrainedTokenizerFast

from ulma.batching import (
    IGNORE_INDEX,
    PairwiseCollator,
    PointwiseCollator,
    left_pad_prompts,
    length_grouped_batches,
    padded_fraction,
    random_batches,
    render_prompt,
    row_length,
    tokenize_dataset,
)
from ulma.data import load
from ulma.kl_partners import KLPairsCollator, add_kl_partners

FIXTURES = Path(__file__).parent / "fixtures"
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def byte_tokenizer(chat_template: str | None = None, add_bos: bool = False) -> PreTrainedTokenizerFast:
    """One token per byte (a byte-level BPE with no merges) + <pad>=0, <s>=1, </s>=2; `add_bos`: like Llama's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    vocab.update({ch: i + 3 for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    out = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    out.chat_template = chat_template
    return out


PLAIN = byte_tokenizer()
CHAT = byte_tokenizer(CHAT_TEMPLATE)
EOS = PLAIN.eos_token_id


def decode(ids):
    return PLAIN.decode(ids, skip_special_tokens=False)


def dialogue(turns: int):
    """`turns` messages alternating user/assistant, ending with a user turn (turns is odd)."""
    return [{"role": "user" if k % 2 == 0 else "assistant", "content": f"message number {k}"} for k in range(turns)]


# ------------------------------------------------------------------------------------------- render
def test_render_prompt_plain_template():
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}]
    assert render_prompt(messages, PLAIN) == "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye\n\nAssistant:"


def test_render_prompt_chat_template():
    assert render_prompt([{"role": "user", "content": "hi"}], CHAT) == "<s><|user|>hi</s><|assistant|>"


# ----------------------------------------------------------------------------------------- tokenize
def small(view):
    rows = {
        "pointwise": [
            {"prompt": [{"role": "user", "content": "hi"}], "completion": "yes", "label": 1.0},
            {"prompt": [{"role": "user", "content": "hey"}], "completion": "a" * 50, "label": 0.25},
        ],
        "pairwise": [{"prompt": [{"role": "user", "content": "hi"}], "chosen": "good", "rejected": "b" * 50}],
    }
    rows["sft"] = [{k: v for k, v in r.items() if k != "label"} for r in rows["pointwise"]]
    return datasets.Dataset.from_list(rows[view])


def test_tokenize_pointwise_plain():
    ds = tokenize_dataset(small("pointwise"), PLAIN, "pointwise", max_prompt_length=64, max_completion_length=10)
    assert {"prompt", "completion", "label", "prompt_ids", "completion_ids", "z"} <= set(ds.column_names)
    first, second = ds[0], ds[1]
    assert decode(first["prompt_ids"]) == "\n\nHuman: hi\n\nAssistant:"
    assert first["completion_ids"][-1] == EOS and decode(first["completion_ids"][:-1]) == " yes"  # space after "Assistant:"
    assert len(second["completion_ids"]) == 10 and EOS not in second["completion_ids"]  # cut: no EOS
    assert decode(second["completion_ids"]) == " " + "a" * 9
    assert ds["z"][:] == [1.0, 0.25]


def test_tokenize_sft_and_chat_template():
    ds = tokenize_dataset(small("sft"), CHAT, "sft", max_prompt_length=64, max_completion_length=4)
    assert ds["z"][:] == [1.0, 1.0]
    assert decode(ds[0]["prompt_ids"]) == "<s><|user|>hi</s><|assistant|>"
    assert decode(ds[0]["completion_ids"]) == "yes</s>"  # no leading space with a chat template
    assert ds[0]["completion_ids"] == [*PLAIN("yes", add_special_tokens=False)["input_ids"], EOS]


@pytest.mark.parametrize("template", [None, CHAT_TEMPLATE], ids=["plain", "chat"])
def test_one_bos_whichever_template(template):
    tokenizer = byte_tokenizer(template, add_bos=True)
    ds = tokenize_dataset(small("sft"), tokenizer, "sft", max_prompt_length=64, max_completion_length=8)
    prompt, completion = ds[0]["prompt_ids"], ds[0]["completion_ids"]
    assert prompt[0] == 1 and prompt.count(1) == 1  # the tokenizer's BOS, or the template's, never both
    assert 1 not in completion


def test_tokenize_pairwise():
    ds = tokenize_dataset(small("pairwise"), PLAIN, "pairwise", max_prompt_length=64, max_completion_length=8)
    row = ds[0]
    assert decode(row["chosen_ids"]) == " good</s>"
    assert len(row["rejected_ids"]) == 8 and row["rejected_ids"][-1] != EOS
    assert "z" not in ds.column_names


def test_tokenize_rejects_wrong_view_or_columns():
    with pytest.raises(ValueError, match="missing \\['label'\\]"):
        tokenize_dataset(small("sft"), PLAIN, "pointwise", max_prompt_length=8, max_completion_length=8)
    with pytest.raises(ValueError, match="unknown view"):
        tokenize_dataset(small("sft"), PLAIN, "kto", max_prompt_length=8, max_completion_length=8)


@pytest.mark.parametrize("tokenizer", [PLAIN, CHAT], ids=["plain", "chat"])
def test_long_prompt_is_cut_from_the_start(tokenizer):
    messages = dialogue(21)  # 20 turns of history, then the last user turn
    ds = datasets.Dataset.from_list([{"prompt": messages, "completion": "ok"}])
    full = len(tokenizer(render_prompt(messages, tokenizer), add_special_tokens=False)["input_ids"])
    out = tokenize_dataset(ds, tokenizer, "sft", max_prompt_length=120, max_completion_length=8)[0]
    text = decode(out["prompt_ids"])
    assert full > 120 >= len(out["prompt_ids"])
    # whole early exchanges are dropped, so what is left is a well-formed rendering of the latest turns
    kept = next(k for k in range(0, 21, 2) if render_prompt(messages[k:], tokenizer) == text)
    one_more = tokenizer(render_prompt(messages[kept - 2 :], tokenizer), add_special_tokens=False)["input_ids"]
    assert kept > 0 and len(one_more) > 120  # as many exchanges as fit, no more
    assert text.endswith(render_prompt(messages[-1:], tokenizer)[len("<s>") if tokenizer is CHAT else 0 :])


@pytest.mark.parametrize("tokenizer", [PLAIN, CHAT], ids=["plain", "chat"])
def test_a_last_turn_longer_than_the_limit_keeps_its_end(tokenizer):
    messages = dialogue(3)
    messages[-1]["content"] = "x" * 200 + " the question"
    ds = datasets.Dataset.from_list([{"prompt": messages, "completion": "ok"}])
    out = tokenize_dataset(ds, tokenizer, "sft", max_prompt_length=40, max_completion_length=8)[0]
    assert len(out["prompt_ids"]) == 40
    assert render_prompt(messages, tokenizer).endswith(decode(out["prompt_ids"]))
    assert "the question" in decode(out["prompt_ids"])


def test_tokenize_refuses_an_empty_dataset_and_names_missing_columns():
    from ulma.data import EmptyDatasetError

    empty = datasets.Dataset.from_dict({"prompt": [], "completion": []})
    with pytest.raises(EmptyDatasetError, match="nothing to tokenize: the sft dataset has 0 rows .*require_rows"):
        tokenize_dataset(empty, PLAIN, "sft", max_prompt_length=8, max_completion_length=8)
    with pytest.raises(ValueError, match=r"missing \['label'\] \(it has \['prompt', 'completion'\]\)"):
        tokenize_dataset(datasets.Dataset.from_list([{"prompt": [], "completion": "c"}]), PLAIN, "pointwise",
                         max_prompt_length=8, max_completion_length=8)


def test_tokenize_a_fixture_view():
    ds = load("hh", "pointwise", split="test", data_dir=FIXTURES, on_bad_row="skip")
    out = tokenize_dataset(ds, PLAIN, "pointwise", max_prompt_length=96, max_completion_length=48)
    assert len(out) == len(ds) and out["z"][:] == ds["label"][:]
    assert all(len(p) <= 96 and decode(p).endswith("\n\nAssistant:") for p in out["prompt_ids"])


# ---------------------------------------------------------------------------------------- collators
ROWS = [
    {"prompt_ids": [5, 6, 7], "completion_ids": [8, 9], "z": 1.0},
    {"prompt_ids": [10], "completion_ids": [11, 12, 13, 2], "z": 0.0},
    {"prompt_ids": [14, 15], "completion_ids": [16], "z": 0.5},
]


def test_pointwise_collator_pads_right_and_masks_the_prompt():
    batch = PointwiseCollator(pad_token_id=0)(ROWS)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [10, 11, 12, 13, 2], [14, 15, 16, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    m = IGNORE_INDEX
    assert batch["labels"].tolist() == [[m, m, m, 8, 9], [m, 11, 12, 13, 2], [m, m, 16, m, m]]
    assert batch["z"].dtype == torch.float32 and batch["z"].tolist() == [1.0, 0.0, 0.5]
    assert "reference_logps" not in batch and "kl_input_ids" not in batch


def test_kl_pairs_come_from_the_one_builder_around_the_pointwise_collator():
    """KTO's mismatched pairs are built by ulma.kl_partners alone (the collator has no second builder)."""
    with pytest.raises(TypeError):
        PointwiseCollator(pad_token_id=0, kl_pairs=True)
    rows = add_kl_partners(datasets.Dataset.from_list(ROWS)).to_list()
    batch = KLPairsCollator(PointwiseCollator(pad_token_id=0))(rows)
    m = IGNORE_INDEX
    # every prompt differs: prompt i with completion (i + 1) mod 3
    assert batch["kl_input_ids"].tolist() == [[5, 6, 7, 11, 12, 13, 2], [10, 16, 0, 0, 0, 0, 0], [14, 15, 8, 9, 0, 0, 0]]
    assert batch["kl_labels"].tolist() == [[m, m, m, 11, 12, 13, 2], [m, 16, m, m, m, m, m], [m, m, 8, 9, m, m, m]]
    assert batch["kl_attention_mask"].sum(1).tolist() == [7, 2, 4]


def test_pointwise_collator_passes_reference_logps_with_nan_for_missing():
    rows = [dict(ROWS[0], reference_logps=-3.5), dict(ROWS[1], reference_logps=None), dict(ROWS[2])]
    ref = PointwiseCollator(pad_token_id=0)(rows)["reference_logps"]
    assert ref.dtype == torch.float32 and ref[0].item() == -3.5 and math.isnan(ref[1]) and math.isnan(ref[2])


def test_pairwise_collator_stacks_chosen_then_rejected():
    rows = [
        {"prompt_ids": [5, 6], "chosen_ids": [7, 2], "rejected_ids": [8, 9, 2], "reference_logps": [-1.0, -2.0]},
        {"prompt_ids": [10], "chosen_ids": [11], "rejected_ids": [12, 2], "reference_logps": [-3.0, None]},
    ]
    batch = PairwiseCollator(pad_token_id=0)(rows)
    m = IGNORE_INDEX
    assert batch["input_ids"].tolist() == [[5, 6, 7, 2, 0], [10, 11, 0, 0, 0], [5, 6, 8, 9, 2], [10, 12, 2, 0, 0]]
    assert batch["labels"].tolist() == [[m, m, 7, 2, m], [m, 11, m, m, m], [m, m, 8, 9, 2], [m, 12, 2, m, m]]
    assert batch["attention_mask"].sum(1).tolist() == [4, 2, 5, 3]
    ref = batch["reference_logps"]
    assert ref[:3].tolist() == [-1.0, -3.0, -2.0] and math.isnan(ref[3])
    assert "reference_logps" not in PairwiseCollator(0)([{k: v for k, v in r.items() if k != "reference_logps"} for r in rows])


def test_collators_take_tokenized_dataset_rows():
    ds = tokenize_dataset(small("pointwise"), PLAIN, "pointwise", max_prompt_length=64, max_completion_length=10)
    batch = KLPairsCollator(PointwiseCollator(pad_token_id=PLAIN.pad_token_id))(add_kl_partners(ds).select(range(2)).to_list())
    assert batch["input_ids"].shape == batch["labels"].shape == batch["kl_input_ids"].shape[:1] + batch["input_ids"].shape[1:]
    n_completion = (batch["labels"] != IGNORE_INDEX).sum(1).tolist()
    assert n_completion == [len(ds[0]["completion_ids"]), len(ds[1]["completion_ids"])]
    pairs = tokenize_dataset(small("pairwise"), PLAIN, "pairwise", max_prompt_length=64, max_completion_length=10)
    assert PairwiseCollator(PLAIN.pad_token_id)([pairs[0]])["input_ids"].shape[0] == 2


def test_left_pad_prompts():
    out = left_pad_prompts([[5, 6, 7], [8]], pad_token_id=0)
    assert out["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


# ------------------------------------------------------------------------------------ length grouping
def test_row_length_counts_the_slots_a_row_takes():
    assert row_length(ROWS[0]) == 5
    assert row_length({"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4, 5, 6]}) == 5


def test_padded_fraction_worked_numbers():
    # batch [3, 1]: width 3, 6 slots, 2 pads; batch [2, 2]: none; total 2 / 10
    assert padded_fraction([[3, 1], [2, 2]]) == pytest.approx(0.2)
    assert padded_fraction([]) == 0.0 and padded_fraction([[4]]) == 0.0


def test_length_grouped_batches_are_deterministic_and_hold_every_row_once():
    lengths = [(7 * i) % 23 + 1 for i in range(103)]
    batches = length_grouped_batches(lengths, 4, seed=3, group_batches=5)
    assert batches == length_grouped_batches(lengths, 4, seed=3, group_batches=5)
    assert batches != length_grouped_batches(lengths, 4, seed=4, group_batches=5)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(103))
    assert [len(b) for b in batches] == [4] * 25 + [3]  # the one short batch last
    with pytest.raises(ValueError, match="batch_size"):
        length_grouped_batches(lengths, 0)


def test_length_grouping_pads_less_than_random_batches():
    """Half the rows are 2 tokens long, half 40: random batches of 4 mix them (most slots padding),
    grouped batches do not (one group holds every row, so no batch mixes the two lengths)."""
    lengths = [2, 40] * 32
    grouped = length_grouped_batches(lengths, 4, seed=0, group_batches=16)
    shuffled = random_batches(len(lengths), 4, seed=0)
    as_lengths = lambda batches: [[lengths[i] for i in b] for b in batches]  # noqa: E731
    assert padded_fraction(as_lengths(grouped)) == 0.0
    assert padded_fraction(as_lengths(shuffled)) > 0.3
    assert sorted(i for b in shuffled for i in b) == list(range(64))
