"""`ULMATrainer`: the loss step of every offline method of the registry, and its metrics. Nothing else.

A `transformers.Trainer` whose `compute_loss` takes the method from the registry (`ulma.losses.get_method`)
once, at construction: its data kind picks the one branch of the step (pairwise or point-wise), its
`reference` field the rows that need π_ref, `Method.loss_kwargs` the loss keywords taken from the
TrainConfig, its flags KTO's KL pairs or token-level unlikelihood's log(1 − p). Nothing here tests a
method's name. The reference log-probs come from `ulma.reference` (adapters disabled, a frozen copy, or
the checked disk cache whose values travel with the rows through the collator, so that the training step
touches only the policy); KTO's partners from `ulma.kl_partners`; `forward_counts` (`ForwardCounts`)
counts policy and reference forwards for the tests and the efficiency notebook. `ulma.trainer` builds it.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object
from transformers import Trainer, TrainingArguments

from ulma.config import TrainConfig
from ulma.files import dataset_content_hash
from ulma.kl_partners import KLPairsCollator, add_kl_partners
from ulma.logprobs import model_logps
from ulma.losses import Method, get_method
from ulma.reference import (REFERENCE_MODES, ForwardCounts, ReferenceCache, ReferenceProvider, cache_path,
                            frozen_copy, reference_rows, trim, unwrap, weights_fingerprint)
from ulma.runs import peak_memory_mb


class ULMATrainer(Trainer):
    """`transformers.Trainer` for the offline methods (runner "offline" of the registry).

    Build outside, inject inside: the caller gives the model (a `PeftModel` for LoRA), the tokenized
    dataset (`ulma.batching.tokenize_dataset`) and its collator; `method` names a registry entry and
    `config` supplies its hyperparameters and the reference mode. `model_id` names the starting weights
    for the reference cache (`ulma.models.model_identity`); without it the weights are fingerprinted.
    `reference_model` overrides the frozen copy of mode ``copy``.
    """

    loss_is_scaled_for_ga = False  # compute_loss returns a micro-batch mean: the Trainer divides by GA steps

    def __init__(self, model, args: TrainingArguments, *, method: str, config: TrainConfig | None = None,
                 train_dataset=None, data_collator=None, model_id: str | None = None, reference_model=None,
                 **kwargs):
        self.config = config or TrainConfig()
        self.method: Method = get_method(method)
        if self.method.loss_fn is None:
            raise ValueError(f"{method!r} is not trained by a loss (runner {self.method.runner!r}): use train()")
        if self.config.reference not in REFERENCE_MODES:
            raise ValueError(f"reference must be one of {REFERENCE_MODES}, got {self.config.reference!r}")
        self.logp_reduction = self.config.logp_reduction or self.method.logp_reduction
        self.needs_reference = self.method.needs_reference
        self.reference_mode = self.config.reference if self.needs_reference else None
        self.pairwise = self.method.data_kind == "pairwise"
        self.loss_kwargs = self.method.loss_kwargs(self.config)
        self.needs_log1m = self.method.needs_log1m_for(self.loss_kwargs)  # token-level unlikelihood only
        if self.reference_mode == "adapters" and not hasattr(unwrap(model), "disable_adapter"):
            raise ValueError("reference='adapters' needs a LoRA (peft) model; "
                             "use 'copy' or 'cached' for full fine-tuning")
        if self.method.needs_kl_pairs and train_dataset is not None \
                and "kl_completion_ids" not in train_dataset.column_names:
            train_dataset = add_kl_partners(train_dataset)
        if self.method.needs_kl_pairs and data_collator is not None and not isinstance(data_collator, KLPairsCollator):
            data_collator = KLPairsCollator(data_collator)
        super().__init__(model=model, args=args, train_dataset=train_dataset, data_collator=data_collator, **kwargs)

        self.forward_counts = ForwardCounts()
        self.reference_cache: str | None = None  # "hit" | "miss" | None (mode cached only)
        self.reference_cache_path: Path | None = None
        self._sharded = self.is_fsdp_enabled or self.is_deepspeed_enabled
        self._metric_sums: dict[str, float] = defaultdict(float)
        self._metric_counts: dict[str, float] = defaultdict(float)
        self._tokens_since_log = 0
        self.session_tokens = 0  # policy input tokens since this Trainer started, all processes (not before a resume)
        self._last_log_time: float | None = None  # set by the first training step: setup is not timed

        self.ref_model = None
        if self.reference_mode == "copy":
            self.ref_model = reference_model if reference_model is not None else frozen_copy(self.model)
            self.ref_model.eval().requires_grad_(False).to(self.args.device)
        self.reference = ReferenceProvider(self.reference_mode or "adapters", reduction=self.logp_reduction,
                                           ref_model=self.ref_model, sharded=self._sharded, counts=self.forward_counts)
        if self.reference_mode == "cached" and self.train_dataset is not None:
            self.train_dataset = self.attach_cached_reference(self.train_dataset, model_id=model_id)

    # -------------------------------------------------------------------------------- reference cache
    def _reference_rows(self, z: torch.Tensor | None, n: int) -> torch.Tensor:
        return reference_rows(self.method, None if self.pairwise else z, n, self.config.positive_threshold)

    def _cache_settings(self, dataset, model_id: str) -> dict[str, Any]:
        columns = ["prompt_ids", *(["chosen_ids", "rejected_ids"] if self.pairwise else ["completion_ids", "z"])]
        if self.method.needs_kl_pairs:
            columns.append("kl_completion_ids")
        return {
            "data": dataset_content_hash(dataset, columns),
            "model": model_id,
            "dtype": str(next(self.model.parameters()).dtype),
            "autocast": "bf16" if self.args.bf16 else "fp16" if self.args.fp16 else "no",
            "max_prompt_length": self.config.max_prompt_length,
            "max_completion_length": self.config.max_completion_length,
            "logp_reduction": self.logp_reduction,
            "data_kind": self.method.data_kind,
            "rows": self.method.reference,
            "positive_threshold": self.config.positive_threshold,
            "kl_pairs": self.method.needs_kl_pairs,
        }

    def attach_cached_reference(self, dataset, *, model_id: str | None = None):
        """Return `dataset` with reference log-prob columns, from the checked disk cache or one no-grad pass.

        Columns (what `ulma.batching`'s collators pass on): point-wise `reference_logps` (NaN on rows the
        method does not read) and, for KTO, `reference_kl_logps`; pairwise `reference_logps` =
        [chosen, rejected] per pair. With several processes the main one computes and writes the file
        while the others wait, then read it.
        """
        model_id = model_id or weights_fingerprint(unwrap(self.model))
        cache = ReferenceCache(cache_path(self._cache_settings(dataset, model_id)))
        expected = {"reference_logps": len(dataset)}
        with self.args.main_process_first(desc="reference log-probs"):
            table = cache.load(expected)
            self.reference_cache = "hit" if table is not None else "miss"
            if table is None:
                table = self.compute_reference_table(dataset)
                cache.save(table)
        self.reference_cache_path = cache.path
        for name, values in table.items():
            if name in dataset.column_names:
                dataset = dataset.remove_columns(name)
            dataset = dataset.add_column(name, values.tolist())
        return dataset

    @torch.no_grad()
    def compute_reference_table(self, dataset) -> dict[str, torch.Tensor]:
        """The reference log-probs of every row the method needs, in batches of `reference_batch_size`
        sorted by length (little padding); NaN elsewhere."""
        n = len(dataset)
        if self.pairwise:
            lengths = [len(p) + max(len(c), len(r)) for p, c, r in
                       zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"])]
        else:
            lengths = [len(p) + len(c) for p, c in zip(dataset["prompt_ids"], dataset["completion_ids"])]
        z = None if self.pairwise else torch.tensor(dataset["z"], dtype=torch.float32)
        needed = self._reference_rows(z, n)
        order = sorted(needed.nonzero().flatten().tolist(), key=lambda i: lengths[i])
        table = {"reference_logps": torch.full((n, 2) if self.pairwise else (n,), float("nan"))}
        if self.method.needs_kl_pairs:
            table["reference_kl_logps"] = torch.full((n,), float("nan"))
        size = self.config.reference_batch_size
        home = next(self.model.parameters()).device
        self.model.to(self.args.device)  # FSDP/DeepSpeed leave the model on the CPU until train()
        before = ForwardCounts(self.forward_counts)
        for start in range(0, len(order), size):
            idx = order[start:start + size]
            rows = [{k: v for k, v in dataset[i].items() if not k.startswith("reference_")} for i in idx]
            batch = self._prepare_inputs(self.data_collator(rows))
            with self.compute_loss_context_manager():  # the autocast of training, if any
                logps = self.reference.logps(self.model, batch["input_ids"], batch["attention_mask"], batch["labels"])
                table["reference_logps"][idx] = logps.cpu().view(2, -1).T if self.pairwise else logps.cpu()
                if self.method.needs_kl_pairs:
                    table["reference_kl_logps"][idx] = self.reference.logps(
                        self.model, batch["kl_input_ids"], batch["kl_attention_mask"], batch["kl_labels"]).cpu()
        self.model.to(home)
        for kind in ("calls", "rows"):
            done = self.forward_counts[f"reference_forward_{kind}"] - before[f"reference_forward_{kind}"]
            self.forward_counts[f"reference_cache_{kind}"] += done
        return table

    @property
    def reference_forward_calls(self) -> int:
        return self.forward_counts["reference_forward_calls"]

    @property
    def reference_forward_rows(self) -> int:
        return self.forward_counts["reference_forward_rows"]

    # -------------------------------------------------------------------------------- the step
    def _logps(self, module, input_ids, attention_mask, labels, *, log1m: bool = False):
        # the LM head runs from the first response column on (logits_to_keep): the prompt's logits are
        # never read, and on HH-length prompts that saves ~20 % of a step (docs/PERFORMANCE.md)
        return model_logps(module, *trim(attention_mask, input_ids, labels), reduction=self.logp_reduction,
                           return_log1m=log1m)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """One micro-batch: policy log-probs (one forward; pairwise = chosen and rejected stacked), the
        reference log-probs the method needs, the method's loss. Metrics are stored for `log`."""
        if self._last_log_time is None and model.training:
            self._last_log_time = time.perf_counter()
        policy = self._logps(model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"],
                             log1m=self.needs_log1m)
        self.forward_counts.add("policy", inputs["input_ids"].shape[0])
        z = None if self.pairwise else inputs["z"]
        reference = self._batch_reference(model, inputs, "reference_logps", "", z)

        if self.pairwise:
            n = policy.logps.shape[0] // 2
            out = self.method.loss_fn(policy.logps[:n], policy.logps[n:], reference[:n], reference[n:],
                                      **self.loss_kwargs)
        else:
            extra = {}
            if self.needs_log1m:
                extra["policy_log1m"] = policy.log1m
            if self.method.needs_kl_pairs:
                with torch.no_grad():  # the KL estimate is detached (KTO)
                    module = model if self._sharded else unwrap(model)
                    extra["policy_kl_logps"] = self._logps(
                        module, inputs["kl_input_ids"], inputs["kl_attention_mask"], inputs["kl_labels"]).logps
                self.forward_counts.add("policy", inputs["kl_input_ids"].shape[0])
                extra["reference_kl_logps"] = self._batch_reference(model, inputs, "reference_kl_logps", "kl_", None)
            out = self.method.loss_fn(policy.logps, reference, z, **self.loss_kwargs, **extra)

        if model.training:
            self._store_metrics(out.metrics, int(inputs["attention_mask"].sum()))
        return (out.loss, out.metrics) if return_outputs else out.loss

    def _batch_reference(self, model, inputs, cached_name: str, prefix: str, z):
        """ℓ_ref for this micro-batch: the cached column, or a forward of the needed rows; None if unused."""
        if not self.needs_reference:
            return None
        rows = self._reference_rows(z, inputs[f"{prefix}input_ids"].shape[0])
        if self.reference_mode == "cached":
            values = inputs.get(cached_name)
            if values is None or torch.isnan(values[rows]).any():
                raise RuntimeError(f"reference='cached' but the batch lacks {cached_name} for some rows that need it; "
                                   "was the dataset passed through attach_cached_reference?")
            return values.float()
        return self.reference.logps(model, inputs[f"{prefix}input_ids"], inputs[f"{prefix}attention_mask"],
                                    inputs[f"{prefix}labels"], rows)

    # -------------------------------------------------------------------------------- metrics
    def _store_metrics(self, metrics: dict[str, Any], num_tokens: int) -> None:
        """Accumulate one micro-batch's metrics. A class metric (`loss/positive`, ...) is a mean over that
        class's rows: it is weighted by the class's `count/...`, so an absent class (reported as 0) does
        not pull the average down."""
        values = {name: float(value) for name, value in metrics.items()}
        for name, value in values.items():
            weight = values.get(f"count/{name.rsplit('/', 1)[-1]}", 1.0) if not name.startswith("count/") else 1.0
            if math.isfinite(value) and weight > 0:
                self._metric_sums[name] += value * weight
                self._metric_counts[name] += weight
        self._tokens_since_log += num_tokens

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the method's metrics averaged over the micro-batches (of every process) since the last
        log, `num_tokens` (cumulative policy input tokens), `tokens_per_s` and `peak_memory_mb`."""
        local = {"sums": dict(self._metric_sums), "counts": dict(self._metric_counts),
                 "tokens": self._tokens_since_log, "peak": peak_memory_mb(self.args.device)}
        if self.args.world_size > 1:
            parts = gather_object([local])
        else:
            parts = [local]
        sums, counts = defaultdict(float), defaultdict(float)
        for part in parts:
            for name, value in part["sums"].items():
                sums[name] += value
                counts[name] += part["counts"][name]
        for name in sorted(sums):
            logs.setdefault(name, sums[name] / counts[name])
        tokens = sum(p["tokens"] for p in parts)
        now = time.perf_counter()
        self.state.num_input_tokens_seen += tokens  # saved in checkpoints: survives a resume
        self.session_tokens += tokens
        logs["num_tokens"] = self.state.num_input_tokens_seen
        if tokens and self._last_log_time is not None:
            logs["tokens_per_s"] = tokens / max(now - self._last_log_time, 1e-9)
        logs["peak_memory_mb"] = max(p["peak"] for p in parts)
        self._metric_sums.clear()
        self._metric_counts.clear()
        self._tokens_since_log = 0
        self._last_log_time = now
        super().log(logs, start_time)

    def gathered_forward_counts(self) -> dict[str, int]:
        """`forward_counts` summed over processes (a collective: call it on every process)."""
        parts = [dict(self.forward_counts)]
        if self.args.world_size > 1:
            parts = gather_object(parts)
        total = ForwardCounts()
        for part in parts:
            total.update(part)
        return total.as_dict()
