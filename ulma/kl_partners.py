"""KTO's mismatched pairs (x_i, y_j): the one builder of the partner j of every row.

KTO's KL estimate needs completions paired with prompts they do not answer. The partner of row i is fixed
once, at the dataset level — the next row (cyclically) whose prompt differs — as TRL's KTO trainer does:
the pairs then do not depend on the shuffle, so their reference log-probs can be cached like the others,
and a prompt is never paired with its own reply.
"""
from __future__ import annotations

import torch


def add_kl_partners(dataset):
    """Add `kl_completion_ids`: the completion of the next row (cyclically) whose prompt differs."""
    prompts, completions = dataset["prompt_ids"], dataset["completion_ids"]
    n, partners = len(prompts), []
    for i in range(n):
        j = (i + 1) % n
        for _ in range(n - 1):
            if prompts[j] != prompts[i]:
                break
            j = (j + 1) % n
        partners.append(completions[j])
    return dataset.add_column("kl_completion_ids", partners)


class KLPairsCollator:
    """Wraps a point-wise collator: adds `kl_input_ids`, `kl_attention_mask`, `kl_labels` (prompt i with
    its fixed partner completion, see `add_kl_partners`) and, when cached, `reference_kl_logps`."""

    def __init__(self, base):
        self.base = base

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        strip = ("kl_completion_ids", "reference_kl_logps")
        batch = self.base([{k: v for k, v in r.items() if k not in strip} for r in rows])
        kl_rows = []
        for r in rows:
            kl = {k: v for k, v in r.items() if k not in strip and k != "reference_logps"}
            kl["completion_ids"] = r["kl_completion_ids"]
            if "reference_kl_logps" in r:
                kl["reference_logps"] = r["reference_kl_logps"]
            kl_rows.append(kl)
        kl_batch = self.base(kl_rows)
        for key in ("input_ids", "attention_mask", "labels"):
            batch[f"kl_{key}"] = kl_batch[key]
        if "reference_logps" in kl_batch and "reference_kl_logps" in rows[0]:
            batch["reference_kl_logps"] = kl_batch["reference_logps"]
        return batch
