"""`ULMAConfig` and `ULMATrainer`: the TRL-shaped API, the loss step of every offline method, its metrics.

`ULMATrainer(model, args=ULMAConfig(method=...), train_dataset=rows, processing_class=tokenizer,
peft_config=LoraConfig(...))` takes raw rows in TRL's standard formats (preference
``prompt/chosen/rejected`` or unpaired ``prompt/completion/label``, plain or conversational), turns them
into the view its method trains on (`ulma.data.standard`: pairs become point-wise rows for the point-wise
methods) and tokenizes them (`ulma.batching`); rows already tokenized (``prompt_ids`` ...) are used as
they are (`ulma.trainer.build_trainer`, the profiles' path). Its `compute_loss` takes the method from the
registry (`ulma.losses.get_method`) once: its data kind picks the one branch of the step (pairwise or
point-wise), its `reference` field the rows that need π_ref, `Method.loss_kwargs` the loss keywords taken
from the ULMAConfig, its flags KTO's KL pairs or token-level unlikelihood's log(1 − p). Nothing here tests
a method's name. The reference log-probs come from `ulma.reference` (adapters disabled, a frozen copy, or
the checked disk cache whose values travel with the rows through the collator); KTO's partners from
`ulma.kl_partners`; `forward_counts` (`ForwardCounts`) counts policy and reference forwards.
"""
from __future__ import annotations

import logging
import math
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import datasets
import torch
from accelerate.utils import gather_object
from transformers import AutoTokenizer, Trainer, TrainingArguments

from ulma import data
from ulma.batching import PairwiseCollator, PointwiseCollator, row_length, tokenize_dataset
from ulma.data.parsing import VIEW_FEATURES
from ulma.data.standard import RowProblem, detect_format, normalize, view_columns
from ulma.files import dataset_content_hash
from ulma.kl_partners import KLPairsCollator, add_kl_partners
from ulma.logprobs import model_logps
from ulma.loss_config import ULMAConfig
from ulma.losses import HYPERPARAMETERS, Method, get_method
from ulma.models import load_model_and_tokenizer, model_identity
from ulma.reference import (ForwardCounts, ReferenceCache, ReferenceProvider, cache_path,
                            frozen_copy, reference_rows, trim, unwrap, weights_fingerprint)
from ulma.runs import peak_memory_mb

logger = logging.getLogger(__name__)

TOKENIZED = {"pairwise": ("prompt_ids", "chosen_ids", "rejected_ids"), "pointwise": ("prompt_ids", "completion_ids", "z"),
             "sft": ("prompt_ids", "completion_ids", "z")}


# -------------------------------------------------------------------------------------------- data
def method_view(dataset, view: str, *, name: str = "train_dataset") -> datasets.Dataset:
    """`view` (sft | pointwise | pairwise) of raw rows in a standard format (`ulma.data.standard`):
    a `datasets.Dataset` (or a list of dicts) of preference or unpaired rows, plain or conversational;
    or a path / hub id / built-in source name, read by `ulma.data.load`. A bad row raises a
    `ulma.data.DataError` naming `name`, the row and the field."""
    if isinstance(dataset, (str, os.PathLike)):
        return data.load(dataset, view, "train")
    records = dataset.to_list() if isinstance(dataset, datasets.Dataset) else list(dataset)
    if not records:
        raise data.EmptyDatasetError(f"{name}: no rows")
    fmt = detect_format(records, name)
    rows = []
    for i, record in enumerate(records):
        try:
            rows.append(normalize(record, fmt))
        except RowProblem as err:
            raise data.DataError(f"{name}, row {i}: {err}", file=name, row=i) from None
    return datasets.Dataset.from_dict(view_columns(rows, list(range(len(rows))), fmt, view, name), features=VIEW_FEATURES[view])


def is_tokenized(dataset, view: str) -> bool:
    return isinstance(dataset, datasets.Dataset) and set(TOKENIZED[view]) <= set(dataset.column_names)


class ULMATrainer(Trainer):
    """`transformers.Trainer` for the offline methods (runner "offline" of the registry), shaped like TRL's.

    `model`: a causal LM, or a name for `ulma.models.load_model_and_tokenizer` (``tiny``, a hub id, a
    folder). `args`: a `ULMAConfig` (plain TrainingArguments get the ULMAConfig defaults for the method
    fields). `train_dataset` / `eval_dataset`: raw rows in a standard format, a path or hub id, or rows
    tokenized by `ulma.batching.tokenize_dataset` (then `processing_class` is not needed).
    `processing_class`: the tokenizer (default: the model's, from its name). `peft_config`: a
    `peft.LoraConfig` to wrap the model in fresh adapters. `ref_model` replaces the frozen copy of
    reference mode ``copy``; `model_id` names the starting weights for the reference cache (default: the
    model's name, else a fingerprint of its weights); `dataset_name` goes into the model card.
    """

    loss_is_scaled_for_ga = False  # compute_loss returns a micro-batch mean: the Trainer divides by GA steps

    def __init__(self, model, args: ULMAConfig | TrainingArguments | None = None, train_dataset=None,
                 eval_dataset=None, processing_class=None, peft_config=None, data_collator=None, callbacks=None, *,
                 ref_model=None, model_id: str | None = None, dataset_name: str | None = None, **kwargs):
        if args is None:
            args = ULMAConfig(output_dir="ulma_output")
        elif not isinstance(args, ULMAConfig):
            args = ULMAConfig.from_arguments(args)
        if args.remove_unused_columns:
            logger.warning("remove_unused_columns=True would drop the token columns ulma's collators read: set to False")
            args.remove_unused_columns = False
        self.method: Method = get_method(args.method)
        if isinstance(model, (str, os.PathLike)):
            name = str(model)
            model, tokenizer = load_model_and_tokenizer(name)
            processing_class = processing_class if processing_class is not None else tokenizer
            model_id = model_id or model_identity(name)
        if peft_config is not None:
            if hasattr(model, "peft_config"):
                raise ValueError("peft_config given, but the model already has adapters: pass one or the other")
            from peft import get_peft_model
            model = get_peft_model(model, peft_config)
        view = self.method.data_kind
        if any(d is not None and not is_tokenized(d, view) for d in (train_dataset, eval_dataset)):
            processing_class = processing_class if processing_class is not None else _tokenizer_of(model)
        self.dataset_name = dataset_name or (str(train_dataset) if isinstance(train_dataset, (str, os.PathLike)) else None)
        train_dataset = self._prepare(train_dataset, view, processing_class, args, "train_dataset")
        eval_dataset = self._prepare(eval_dataset, view, processing_class, args, "eval_dataset")

        self.logp_reduction = args.logp_reduction or self.method.logp_reduction
        self.needs_reference = self.method.needs_reference
        self.reference_mode = args.reference if self.needs_reference else None
        self.pairwise = self.method.data_kind == "pairwise"
        self.loss_kwargs = self.method.loss_kwargs(args)
        self.needs_log1m = self.method.needs_log1m_for(self.loss_kwargs)  # token-level unlikelihood only
        if self.reference_mode == "adapters" and not hasattr(unwrap(model), "disable_adapter"):
            raise ValueError("reference='adapters' needs a LoRA (peft) model (give peft_config); "
                             "use 'copy' or 'cached' for full fine-tuning")
        if self.method.needs_kl_pairs:
            train_dataset, eval_dataset = (d if d is None or "kl_completion_ids" in d.column_names else add_kl_partners(d)
                                           for d in (train_dataset, eval_dataset))
        if args.train_sampling_strategy in ("group_by_length", "batch_rebalance"):
            # transformers' sampler reads the lengths from this column (else it would look for input_ids,
            # which tokenized rows do not have): the token slots a row takes in its collated batch
            train_dataset, eval_dataset = (d if d is None or args.length_column_name in d.column_names else
                                           d.add_column(args.length_column_name, [row_length(r) for r in d])
                                           for d in (train_dataset, eval_dataset))
        if data_collator is None:
            pad = getattr(processing_class, "pad_token_id", None)
            pad = pad if pad is not None else getattr(unwrap(model).config, "pad_token_id", None) or 0
            data_collator = (PairwiseCollator if self.pairwise else PointwiseCollator)(pad)
        if self.method.needs_kl_pairs and not isinstance(data_collator, KLPairsCollator):
            data_collator = KLPairsCollator(data_collator)
        super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         data_collator=data_collator, processing_class=processing_class, callbacks=callbacks, **kwargs)

        self.forward_counts = ForwardCounts()
        self.reference_cache: str | None = None  # "hit" | "miss" | None (mode cached only)
        self.reference_cache_path: Path | None = None
        self._sharded = self.is_fsdp_enabled or self.is_deepspeed_enabled
        self._metric_sums: dict[str, float] = defaultdict(float)
        self._metric_counts: dict[str, float] = defaultdict(float)
        self._eval_sums: dict[str, float] = defaultdict(float)
        self._eval_counts: dict[str, float] = defaultdict(float)
        self._tokens_since_log = 0
        self._slots = {"tokens": 0, "slots": 0}  # the policy batches' real tokens and token slots (padding)
        self._start_logged = False
        self.session_tokens = 0  # policy input tokens since this Trainer started, all processes (not before a resume)
        self._last_log_time: float | None = None  # set by the first training step: setup is not timed

        self.ref_model = None
        if self.reference_mode == "copy":
            self.ref_model = ref_model if ref_model is not None else frozen_copy(self.model)
            self.ref_model.eval().requires_grad_(False).to(self.args.device)
        self.reference = ReferenceProvider(self.reference_mode or "adapters", reduction=self.logp_reduction,
                                           ref_model=self.ref_model, sharded=self._sharded, counts=self.forward_counts)
        if self.reference_mode == "cached":
            if self.train_dataset is not None:
                self.train_dataset = self.attach_cached_reference(self.train_dataset, model_id=model_id)
            if self.eval_dataset is not None:
                cache = self.reference_cache
                self.eval_dataset = self.attach_cached_reference(self.eval_dataset, model_id=model_id)
                self.reference_cache = cache or self.reference_cache  # the training rows' hit or miss

    @property
    def config(self) -> ULMAConfig:
        """The method's settings (the ULMAConfig, i.e. `args`)."""
        return self.args

    @staticmethod
    def _prepare(dataset, view: str, tokenizer, args: ULMAConfig, name: str):
        """Rows of the method's view with token columns (module docstring); None stays None."""
        if dataset is None or is_tokenized(dataset, view):
            return dataset
        rows = method_view(dataset, view, name=name)
        data.require_rows(rows, f"{name} ({view} view)")
        return tokenize_dataset(rows, tokenizer, view, max_prompt_length=args.max_prompt_length,
                                max_completion_length=args.max_completion_length)

    # -------------------------------------------------------------------------------- reference cache
    def _reference_rows(self, z: torch.Tensor | None, n: int) -> torch.Tensor:
        return reference_rows(self.method, None if self.pairwise else z, n, self.args.positive_threshold)

    def _cache_settings(self, dataset, model_id: str) -> dict[str, Any]:
        columns = ["prompt_ids", *(["chosen_ids", "rejected_ids"] if self.pairwise else ["completion_ids", "z"])]
        if self.method.needs_kl_pairs:
            columns.append("kl_completion_ids")
        return {
            "data": dataset_content_hash(dataset, columns),
            "model": model_id,
            "dtype": str(next(self.model.parameters()).dtype),
            "autocast": "bf16" if self.args.bf16 else "fp16" if self.args.fp16 else "no",
            "max_prompt_length": self.args.max_prompt_length,
            "max_completion_length": self.args.max_completion_length,
            "logp_reduction": self.logp_reduction,
            "data_kind": self.method.data_kind,
            "rows": self.method.reference,
            "positive_threshold": self.args.positive_threshold,
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
        size = self.args.reference_batch_size
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

        metrics = dict(out.metrics)
        if reference is not None:  # the mean per-token log-ratio to π_ref, on the rows whose reference is known
            known = torch.isfinite(reference)
            ratio = policy.logps.detach() - torch.where(known, reference, torch.zeros_like(reference)).to(policy.logps.dtype)
            if self.logp_reduction == "sum":
                ratio = ratio / policy.num_tokens.clamp(min=1).to(ratio.dtype)
            metrics["log_ratio"] = torch.where(known, ratio, torch.zeros_like(ratio)).sum() / known.sum().clamp(min=1)
            metrics["count/log_ratio"] = known.sum().to(ratio.dtype)
        if model.training:
            tokens = int(inputs["attention_mask"].sum())
            self._slots["tokens"] += tokens
            self._slots["slots"] += inputs["attention_mask"].numel()
            if not self._start_logged and self.state.global_step == 0:
                self._log_start({**metrics, "loss": out.loss.detach()})
            self._store_metrics(metrics, tokens)
        return (out.loss, metrics) if return_outputs else out.loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation: the loss and the method's metrics (logged as ``eval_<name>``), no logits."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, metrics = self.compute_loss(model, inputs, return_outputs=True)
        _accumulate(self._eval_sums, self._eval_counts, metrics)
        return loss.detach(), None, None

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
        """Accumulate one micro-batch's metrics (`_accumulate`) and its policy input tokens."""
        _accumulate(self._metric_sums, self._metric_counts, metrics)
        self._tokens_since_log += num_tokens

    def _gathered_means(self, sums: dict[str, float], counts: dict[str, float]) -> dict[str, float]:
        """Weighted means over every process (a collective when there are several), plus
        `rewards/margins` = chosen − rejected where the method logs both and not the margin (TRL's KTO)."""
        parts = [{"sums": dict(sums), "counts": dict(counts)}]
        if self.args.world_size > 1:
            parts = gather_object(parts)
        total, weight = defaultdict(float), defaultdict(float)
        for part in parts:
            for name, value in part["sums"].items():
                total[name] += value
                weight[name] += part["counts"][name]
        means = {name: total[name] / weight[name] for name in sorted(total) if weight[name] > 0}
        if {"rewards/chosen", "rewards/rejected"} <= set(means) and "rewards/margins" not in means:
            means["rewards/margins"] = means["rewards/chosen"] - means["rewards/rejected"]
        return means

    def _log_start(self, metrics: dict[str, Any]) -> None:
        """The entry at step 0: the first micro-batch's metrics, before any update (the start of every
        training curve; a resumed run has its own)."""
        self._start_logged = True
        sums, counts = defaultdict(float), defaultdict(float)
        _accumulate(sums, counts, metrics)
        logs = self._gathered_means(sums, counts)
        logs["num_tokens"] = self.state.num_input_tokens_seen
        super().log(logs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the method's metrics averaged over the micro-batches (of every process) since the last
        log, `num_tokens` (cumulative policy input tokens), `tokens_per_s` and `peak_memory_mb`; in an
        evaluation's log, the evaluation's metrics as ``eval_<name>``."""
        if "eval_loss" in logs or any(k.startswith("eval_") for k in logs) and "loss" not in logs:
            for name, value in self._gathered_means(self._eval_sums, self._eval_counts).items():
                logs.setdefault(f"eval_{name}", value)
            self._eval_sums.clear()
            self._eval_counts.clear()
            return super().log(logs, start_time)
        for name, value in self._gathered_means(self._metric_sums, self._metric_counts).items():
            logs.setdefault(name, value)
        local = {"tokens": self._tokens_since_log, "peak": peak_memory_mb(self.args.device)}
        parts = gather_object([local]) if self.args.world_size > 1 else [local]
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

    # -------------------------------------------------------------------------------- saving
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the weights (the adapter alone for a peft model, loadable by
        `peft.AutoPeftModelForCausalLM.from_pretrained`) and, for the final save, a model card README.md."""
        super().save_model(output_dir, _internal_call)
        if not _internal_call and self.is_world_process_zero():
            folder = Path(output_dir or self.args.output_dir)
            (folder / "README.md").write_text(self.model_card(), encoding="utf-8")

    def model_card(self) -> str:
        """A model card stub: base model, method and its hyperparameters, data, training length."""
        base = getattr(unwrap(self.model).config, "_name_or_path", "") or "(a model without a hub name)"
        adapter = hasattr(unwrap(self.model), "peft_config")
        # the loss keywords this method reads (`Method.hyperparameters`), by their config names
        hyper = {HYPERPARAMETERS[k]: getattr(self.args, HYPERPARAMETERS[k]) for k in self.method.hyperparameters}
        hyper.update(logp_reduction=self.logp_reduction, reference=self.reference_mode or "none",
                     max_prompt_length=self.args.max_prompt_length, max_completion_length=self.args.max_completion_length,
                     learning_rate=self.args.learning_rate, per_device_train_batch_size=self.args.per_device_train_batch_size,
                     gradient_accumulation_steps=self.args.gradient_accumulation_steps, seed=self.args.seed)
        rows = len(self.train_dataset) if self.train_dataset is not None else 0
        lines = ["---", f"base_model: {base}" if not base.startswith("(") else "base_model: null",
                 "library_name: " + ("peft" if adapter else "transformers"), "tags: [ulma, " + self.method.name + "]",
                 "---", "", f"# {self.method.name} ({'LoRA adapter' if adapter else 'full weights'})", "",
                 f"Trained with [ulma](https://arxiv.org/abs/2312.02554)'s `ULMATrainer`, method `{self.method.name}`.", "",
                 f"- base model: {base}", f"- data: {self.dataset_name or 'unnamed'} ({rows} {self.method.data_kind} rows)",
                 f"- optimizer steps: {self.state.global_step}", "", "| hyperparameter | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in hyper.items()]
        if adapter:
            lines += ["", "Load: `peft.AutoPeftModelForCausalLM.from_pretrained(<this folder>)`."]
        return "\n".join(lines) + "\n"

    def gathered_padded_fraction(self) -> float | None:
        """The share of the policy's training token slots (micro-batch rows × their padded width) that were
        padding, over every process, since this Trainer started (a collective: call it on every process)."""
        parts = [dict(self._slots)]
        if self.args.world_size > 1:
            parts = gather_object(parts)
        slots = sum(p["slots"] for p in parts)
        return 1.0 - sum(p["tokens"] for p in parts) / slots if slots else None

    def gathered_forward_counts(self) -> dict[str, int]:
        """`forward_counts` summed over processes (a collective: call it on every process)."""
        parts = [dict(self.forward_counts)]
        if self.args.world_size > 1:
            parts = gather_object(parts)
        total = ForwardCounts()
        for part in parts:
            total.update(part)
        return total.as_dict()


def _tokenizer_of(model):
    """The tokenizer saved with `model`'s weights (TRL's default processing class); a pad token is set."""
    name = getattr(unwrap(model).config, "_name_or_path", "") or ""
    if not name:
        raise ValueError("raw rows need a tokenizer: pass processing_class= (the model has no name to load one from)")
    tokenizer = AutoTokenizer.from_pretrained(name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _accumulate(sums: dict[str, float], counts: dict[str, float], metrics: dict[str, Any]) -> None:
    """Add one micro-batch's metrics. A class metric (`loss/chosen`, ...) is a mean over that class's rows:
    it is weighted by the class's `count/...` (and `log_ratio` by `count/log_ratio`), so an absent class
    (reported as 0) does not pull the average down."""
    values = {name: float(value) for name, value in metrics.items()}
    for name, value in values.items():
        weight = values.get(f"count/{name.rsplit('/', 1)[-1]}", 1.0) if not name.startswith("count/") else 1.0
        if math.isfinite(value) and weight > 0:
            sums[name] += value * weight
            counts[name] += weight
