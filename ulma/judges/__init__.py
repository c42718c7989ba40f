"""Judges of generated replies (docs/EXPERIMENTS.md, Metrics): one interface, three implementations,
one module each, and `get_judge(name, **options)`, which builds one by name:

* ``llm`` (`ulma.judges.llm`): an OpenAI-compatible chat-completions API, standard library only. Pairwise
  comparison as the paper did with GPT-4, both orders; retries inside a total deadline per question and
  per batch, Ctrl-C stops it at once, verdicts cached on disk by content hash, no secret in any message.
* ``reward_model`` (`ulma.judges.reward_model`): any Hugging Face sequence-classification reward model.
* ``minilm_harmlessness`` (`ulma.judges.minilm`): the offline judge of the ``mini`` profile, a linear
  Bradley–Terry head on frozen all-MiniLM-L6-v2 embeddings, with its held-out accuracy in `info`.

The interface (`Judge`, `ScoreJudge`, `VERDICTS`) is `ulma.judges.base`. `get_judge` takes each judge's
own options; options may also come as sections keyed by judge name (``minilm_harmlessness={...},
llm={...}``, a profile's ``eval.judge_options``), of which it uses only the section of the judge it
builds, and an option the judge does not take is a ValueError naming it.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Callable

from ulma.judges.base import (VERDICTS, Judge, Prompt, ScoreJudge, as_messages, pair_columns, pairwise_accuracy,
                              transcript, verdict_from_margin)
from ulma.judges.llm import (LLM_CRITERIA, JudgeDeadlineError, JudgeError, LLMJudge, combine_orders, parse_choice,
                             parse_rating, scrub, urllib_transport)
from ulma.judges.minilm import (ENCODER_NAME, FEATURE_KINDS, HEAD_DEFAULTS, JUDGE_VERSION, MiniLMHarmlessnessJudge,
                                SentenceEncoder, embed_features, embedding_cache_path, load_harmlessness_judge,
                                sentence_encoder, train_harmlessness_judge)
from ulma.judges.reward_model import RewardModelJudge

__all__ = ["VERDICTS", "Judge", "Prompt", "ScoreJudge", "as_messages", "pair_columns", "pairwise_accuracy",
           "transcript", "verdict_from_margin", "LLM_CRITERIA", "JudgeDeadlineError", "JudgeError", "LLMJudge",
           "combine_orders", "parse_choice", "parse_rating", "scrub", "urllib_transport", "ENCODER_NAME",
           "FEATURE_KINDS", "HEAD_DEFAULTS", "JUDGE_VERSION", "MiniLMHarmlessnessJudge", "SentenceEncoder",
           "embed_features", "embedding_cache_path", "load_harmlessness_judge", "sentence_encoder",
           "train_harmlessness_judge", "RewardModelJudge", "JUDGES", "EXTRA_OPTIONS", "judge_option_names",
           "get_judge"]

JUDGES: dict[str, Callable[..., Judge]] = {
    "llm": LLMJudge,
    "reward_model": RewardModelJudge,
    "minilm_harmlessness": load_harmlessness_judge,
}


# options a judge takes besides its signature's named parameters (its **options)
EXTRA_OPTIONS: dict[str, tuple[str, ...]] = {"minilm_harmlessness": tuple(HEAD_DEFAULTS)}


def judge_option_names(name: str) -> list[str]:
    """The options `get_judge(name, ...)` accepts: the builder's named parameters and `EXTRA_OPTIONS`."""
    params = inspect.signature(JUDGES[name]).parameters.values()
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return sorted(named | set(EXTRA_OPTIONS.get(name, ())))


def get_judge(name: str, **options) -> Judge:
    """Build the judge `name` (`JUDGES`) with its options; ValueError listing the names otherwise.

    ``llm``: model, base_url, api_key, criterion ("harmlessness" | "helpfulness"), cache_dir, max_retries,
    backoff, max_backoff, timeout, call_deadline, batch_deadline, max_tokens, max_workers, transport.
    ``reward_model``: model (required), tie_margin, batch_size, max_length, device, dtype.
    ``minilm_harmlessness``: data_dir, train_split, test_split, retrain, max_train_pairs, max_test_pairs,
    tie_margin, `HEAD_DEFAULTS` options.

    An option whose name is a judge name is that judge's section (``minilm_harmlessness={...}``): the
    section of `name` is merged over the plain options and the other judges' sections are ignored, so one
    mapping (a profile's ``eval.judge_options``) can hold every judge's options. A plain option that
    `name` does not take is a ValueError naming it and the options it takes (never a TypeError deep
    inside, never silently dropped).
    """
    if name not in JUDGES:
        raise ValueError(f"unknown judge {name!r}; known: {sorted(JUDGES)}")
    sections = {key: options.pop(key) for key in list(options) if key in JUDGES}
    for key, section in sections.items():
        if section is not None and not isinstance(section, Mapping):
            raise ValueError(f"options of judge {key!r} must be a mapping, got {section!r}")
    options.update(sections.get(name) or {})
    accepted = judge_option_names(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"judge {name!r} takes no option(s) {unknown}; its options: {', '.join(accepted)}")
    return JUDGES[name](**options)