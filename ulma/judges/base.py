"""The `Judge` interface (docs/EXPERIMENTS.md, Metrics) and what every judge shares.

A judge scores a reply to a prompt (`Judge.score`, higher = better) and compares a reply against a
reference reply, usually the dataset's chosen one (`Judge.compare` -> ``"win"`` | ``"tie"`` | ``"lose"``
from the point of view of the reply). `ScoreJudge` derives the comparison from score differences.
Prompts are chat messages (``[{"role": "user"|"assistant", "content": ...}, ...]`` ending with a user
turn, the data views' format); a plain string is taken as one user turn.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

VERDICTS = ("win", "tie", "lose")
Prompt = Sequence[dict[str, str]] | str


def as_messages(prompt: Prompt) -> list[dict[str, str]]:
    """A prompt as chat messages (a string is one user turn)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def transcript(prompt: Prompt, reply: str | None = None) -> str:
    """``"Human: ...\\n\\nAssistant: ..."``: the HH transcript layout, optionally ending with `reply`."""
    turns = [f"{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in as_messages(prompt)]
    if reply is not None:
        turns.append(f"Assistant: {reply}")
    return "\n\n".join(turns)


def verdict_from_margin(margin: float, tie_margin: float = 0.0) -> str:
    """``win`` if margin > tie_margin, ``lose`` if margin < -tie_margin, else ``tie`` (NaN: tie)."""
    if not math.isfinite(margin) or abs(margin) <= tie_margin:
        return "tie"
    return "win" if margin > 0 else "lose"


# ------------------------------------------------------------------------------------------ interface
class Judge:
    """A judge: `score(prompt, reply) -> float`, `compare(prompt, reply, reference_reply) -> verdict`.

    `name` identifies it; `info` says what the numbers mean (model, criterion, held-out accuracy, counts)
    and is stored beside every score. The ``*_batch`` versions are what the evaluation calls; the
    defaults loop, and judges that can batch override them.
    """

    name: str = "judge"

    def __init__(self) -> None:
        self.info: dict[str, Any] = {"judge": self.name}

    def score(self, prompt: Prompt, reply: str) -> float:
        return self.score_batch([prompt], [reply])[0]

    def compare(self, prompt: Prompt, reply: str, reference_reply: str) -> str:
        return self.compare_batch([prompt], [reply], [reference_reply])[0]

    def score_batch(self, prompts: Sequence[Prompt], replies: Sequence[str]) -> list[float]:
        raise NotImplementedError

    def compare_batch(self, prompts: Sequence[Prompt], replies: Sequence[str],
                      reference_replies: Sequence[str]) -> list[str]:
        raise NotImplementedError

    def judge_batch(self, prompts: Sequence[Prompt], replies: Sequence[str], reference_replies: Sequence[str]
                    ) -> tuple[list[float], list[float], list[str]]:
        """(scores of `replies`, scores of `reference_replies`, verdicts of replies against references)."""
        return (self.score_batch(prompts, replies), self.score_batch(prompts, reference_replies),
                self.compare_batch(prompts, replies, reference_replies))


class ScoreJudge(Judge):
    """A judge whose comparison is its score difference: ``win`` when score(reply) − score(reference)
    exceeds `tie_margin`, ``lose`` below −`tie_margin`, else ``tie`` (always for identical texts)."""

    def __init__(self, tie_margin: float = 0.0) -> None:
        super().__init__()
        self.tie_margin = float(tie_margin)
        self.info["tie_margin"] = self.tie_margin

    def compare_batch(self, prompts, replies, reference_replies):
        return self.judge_batch(prompts, replies, reference_replies)[2]

    def judge_batch(self, prompts, replies, reference_replies):
        n = len(prompts)
        scores = self.score_batch(list(prompts) * 2, list(replies) + list(reference_replies))
        # identical texts tie outright: batched kernels can differ in the last bits between rows
        verdicts = ["tie" if replies[i] == reference_replies[i] else
                    verdict_from_margin(scores[i] - scores[n + i], self.tie_margin) for i in range(n)]
        return scores[:n], scores[n:], verdicts



def pair_columns(pairs) -> tuple[list, list[str], list[str]]:
    if hasattr(pairs, "column_names"):
        return list(pairs["prompt"]), list(pairs["chosen"]), list(pairs["rejected"])
    return [r["prompt"] for r in pairs], [r["chosen"] for r in pairs], [r["rejected"] for r in pairs]


def pairwise_accuracy(judge: Judge, pairs) -> float:
    """Fraction of pairs whose chosen reply the judge scores above the rejected one (ties count ½)."""
    prompts, chosen, rejected = pair_columns(pairs)
    scores = judge.score_batch(prompts * 2, chosen + rejected)
    n = len(prompts)
    return sum(1.0 if scores[i] > scores[n + i] else 0.5 if scores[i] == scores[n + i] else 0.0 for i in range(n)) / n
