"""One trainer for every offline method of docs/METHODS.md, and `train()`: one run from a profile.

`ULMATrainer` is a `transformers.Trainer` whose `compute_loss` takes the method from the registry
(`ulma.losses.get_method`) once, at construction: its data kind picks the one branch of the step
(pairwise or point-wise), its `reference` field says which rows need π_ref, its flags say whether
KTO's KL pairs or token-level unlikelihood's log(1 − p) are needed. Nothing in the step tests a
method's name.

The reference log-probs ℓ_ref come from one of three places (`TrainConfig.reference`):

* ``adapters``: the policy itself under ``peft_model.disable_adapter()`` (no second copy of the weights);
* ``copy``: a frozen deep copy of the starting model;
* ``cached``: computed once, before training, in a no-grad pass and stored under
  ``ulma.models.cache_dir()/reference/<key>.safetensors``; the key hashes the tokenized data, the model
  identity and every setting that changes the numbers, so a second run on the same data and model runs
  no reference forward at all. The values travel with the rows (`reference_logps` column) through the
  collator (computed once, as HALOs and TRL do: the training step touches only the policy).

Every reference forward runs in eval mode under ``torch.no_grad()`` (deterministic: no dropout), and
only on the rows the method needs: ULMA forwards only its negatives, SFT and unlikelihood nothing.
`trainer.forward_counts` counts policy and reference forwards (calls and rows) so that tests and the
efficiency notebook can read them.

KTO's KL estimate uses mismatched pairs (x_i, y_j). We fix the partner j of every row once, at the
dataset level (the next row with another prompt), as TRL's KTO trainer does: the pairs then do not
depend on the shuffle, so their reference log-probs can be cached like the others.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import inspect
import json
import logging
import math
import os
import resource
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from ulma.config import Profile, TrainConfig, load_profile, train_config_for
from ulma.logprobs import model_logps
from ulma.losses import get_method

logger = logging.getLogger(__name__)

REFERENCE_MODES = ("adapters", "copy", "cached")
CACHE_VERSION = 1  # bump when the cached numbers' meaning changes


class InvalidRunError(ValueError):
    """A run that cannot work (unknown method or dataset, a method the dataset has no data for, a bad
    option): raised by `train` before any model loads; the CLI prints it as one line and exits 2."""


# ----------------------------------------------------------------------------------------- helpers
def peak_memory_mb(device: torch.device | None = None) -> float:
    """CUDA max allocated memory on a GPU, else the process's peak resident set size, in MiB."""
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def _trim(attention_mask: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Drop the trailing columns that are padding in every row (right padding)."""
    width = int(attention_mask.any(0).nonzero().max()) + 1 if attention_mask.any() else 1
    return [t[:, :width] for t in (attention_mask, *tensors)]


def dataset_content_hash(dataset, columns: list[str]) -> str:
    """sha256 of the given columns' values, row order included (list columns of ints, or scalars).

    Content, not `datasets`' fingerprint: the latter is random whenever a mapped function (a tokenizer)
    cannot be hashed, which would make every run miss the cache.
    """
    import numpy as np
    import pyarrow.compute as pc

    table = dataset.select_columns(columns).with_format("arrow")[:]
    digest = hashlib.sha256(f"rows={table.num_rows}".encode())
    for name in columns:
        col = table[name]
        digest.update(name.encode())
        if hasattr(col.type, "value_type"):  # list column: values + row lengths
            digest.update(np.asarray(pc.list_value_length(col).to_numpy(zero_copy_only=False), np.int64).tobytes())
            digest.update(np.asarray(pc.list_flatten(col).to_numpy(zero_copy_only=False), np.int64).tobytes())
        else:
            digest.update(np.asarray(col.to_numpy(zero_copy_only=False), np.float64).tobytes())
    return digest.hexdigest()


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A cheap identity of a model's starting weights (LoRA adapters excluded), for the reference cache
    when no `model_id` is given."""
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                continue
            t = p.detach().float()
            digest.update(f"{name}:{tuple(p.shape)}:{t.sum().item():.8e}:{t.square().sum().item():.8e}".encode())
    return "weights-" + digest.hexdigest()[:16]


def add_kl_partners(dataset):
    """Add `kl_completion_ids`: the completion of the next row (cyclically) whose prompt differs.

    KTO's KL term needs mismatched (x_i, y_j) pairs; fixing j per row keeps them independent of the
    shuffle (so that they can be cached) and never pairs a prompt with its own reply.
    """
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


# ----------------------------------------------------------------------------------------- trainer
class ULMATrainer(Trainer):
    """`transformers.Trainer` for the offline methods (sft, dpo, pointwise_dpo, ulma, ... of the registry).

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
        self.method = get_method(method)
        if self.config.reference not in REFERENCE_MODES:
            raise ValueError(f"reference must be one of {REFERENCE_MODES}, got {self.config.reference!r}")
        self.logp_reduction = self.config.logp_reduction or self.method.logp_reduction
        self.needs_reference = self.method.reference != "none"
        self.reference_mode = self.config.reference if self.needs_reference else None
        self.pairwise = self.method.data_kind == "pairwise"
        self.loss_kwargs = self._loss_kwargs()
        self.needs_log1m = self.method.needs_log1m_for(self.loss_kwargs)  # token-level unlikelihood only
        if self.reference_mode == "adapters" and not hasattr(_unwrap(model), "disable_adapter"):
            raise ValueError("reference='adapters' needs a LoRA (peft) model; "
                             "use 'copy' or 'cached' for full fine-tuning")
        if self.method.needs_kl_pairs and train_dataset is not None \
                and "kl_completion_ids" not in train_dataset.column_names:
            train_dataset = add_kl_partners(train_dataset)
        if self.method.needs_kl_pairs and data_collator is not None and not isinstance(data_collator, KLPairsCollator):
            data_collator = KLPairsCollator(data_collator)
        super().__init__(model=model, args=args, train_dataset=train_dataset, data_collator=data_collator, **kwargs)

        # policy_forward_{calls,rows}, reference_forward_{calls,rows} (all reference forwards) and
        # reference_cache_{calls,rows} (the part spent filling the cache before training)
        self.forward_counts: Counter = Counter()
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
            self.ref_model = reference_model if reference_model is not None else _frozen_copy(self.model)
            self.ref_model.eval().requires_grad_(False).to(self.args.device)
        if self.reference_mode == "cached" and self.train_dataset is not None:
            self.train_dataset = self.attach_cached_reference(self.train_dataset, model_id=model_id)

    # -------------------------------------------------------------------------------- set-up
    def _loss_kwargs(self) -> dict[str, Any]:
        """The config values the method's loss function accepts, chosen once by its signature."""
        cfg = self.config
        candidates = {
            "beta": cfg.beta, "c": cfg.c, "aggregation": cfg.aggregation, "continuous": cfg.continuous,
            "positive_threshold": cfg.positive_threshold, "variant": cfg.unlikelihood_variant,
            "desirable_weight": cfg.kto_desirable_weight, "undesirable_weight": cfg.kto_undesirable_weight,
        }
        params = inspect.signature(self.method.loss_fn).parameters
        return {k: v for k, v in candidates.items() if k in params}

    def _reference_rows(self, z: torch.Tensor | None, n: int) -> torch.Tensor:
        """(n,) bool: the rows whose reference log-prob the method reads."""
        if self.pairwise or self.method.reference == "all" or z is None:
            return torch.ones(n, dtype=torch.bool, device=z.device if z is not None else None)
        positive = z >= self.config.positive_threshold
        return ~positive if self.method.reference == "negatives" else positive

    def _cache_key(self, dataset, model_id: str) -> str:
        columns = ["prompt_ids", *(["chosen_ids", "rejected_ids"] if self.pairwise else ["completion_ids", "z"])]
        if self.method.needs_kl_pairs:
            columns.append("kl_completion_ids")
        settings = {
            "version": CACHE_VERSION,
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
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]

    def attach_cached_reference(self, dataset, *, model_id: str | None = None):
        """Return `dataset` with reference log-prob columns, from the disk cache or one no-grad pass.

        Columns (what `ulma.batching`'s collators pass on): point-wise `reference_logps` (NaN on rows the
        method does not read) and, for KTO, `reference_kl_logps`; pairwise `reference_logps` =
        [chosen, rejected] per pair. With several processes the main one computes and writes the file
        while the others wait, then read it.
        """
        from safetensors.torch import load_file, save_file

        from ulma.models import cache_dir

        model_id = model_id or weights_fingerprint(_unwrap(self.model))
        key = self._cache_key(dataset, model_id)
        path = cache_dir() / "reference" / f"{key}.safetensors"
        with self.args.main_process_first(desc="reference log-probs"):
            if path.exists():
                table, self.reference_cache = load_file(path), "hit"
            else:
                table, self.reference_cache = self.compute_reference_table(dataset), "miss"
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
                save_file(table, tmp)
                tmp.replace(path)  # atomic: a reader never sees half a file
        self.reference_cache_path = path
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
            needed = torch.ones(n, dtype=torch.bool)
        else:
            lengths = [len(p) + len(c) for p, c in zip(dataset["prompt_ids"], dataset["completion_ids"])]
            needed = self._reference_rows(torch.tensor(dataset["z"], dtype=torch.float32), n)
        order = sorted(needed.nonzero().flatten().tolist(), key=lambda i: lengths[i])
        table = {"reference_logps": torch.full((n, 2) if self.pairwise else (n,), float("nan"))}
        if self.method.needs_kl_pairs:
            table["reference_kl_logps"] = torch.full((n,), float("nan"))
        collator = self.data_collator
        size = self.config.reference_batch_size
        home = next(self.model.parameters()).device
        self.model.to(self.args.device)  # FSDP/DeepSpeed leave the model on the CPU until train()
        before = Counter(self.forward_counts)
        for start in range(0, len(order), size):
            idx = order[start:start + size]
            rows = [{k: v for k, v in dataset[i].items() if not k.startswith("reference_")} for i in idx]
            batch = self._prepare_inputs(collator(rows))
            with self.compute_loss_context_manager():  # the autocast of training, if any
                logps = self._reference_logps(self.model, batch["input_ids"], batch["attention_mask"], batch["labels"])
                table["reference_logps"][idx] = logps.cpu().view(2, -1).T if self.pairwise else logps.cpu()
                if self.method.needs_kl_pairs:
                    table["reference_kl_logps"][idx] = self._reference_logps(
                        self.model, batch["kl_input_ids"], batch["kl_attention_mask"], batch["kl_labels"]).cpu()
        self.model.to(home)
        for kind in ("calls", "rows"):
            done = self.forward_counts[f"reference_forward_{kind}"] - before[f"reference_forward_{kind}"]
            self.forward_counts[f"reference_cache_{kind}"] += done
        return table

    # -------------------------------------------------------------------------------- forwards
    def _logps(self, module, input_ids, attention_mask, labels, *, log1m: bool = False):
        attention_mask, input_ids, labels = _trim(attention_mask, input_ids, labels)
        # the LM head runs from the first response column on (logits_to_keep): the prompt's logits are
        # never read, and on HH-length prompts that saves ~20 % of a step (docs/PERFORMANCE.md)
        return model_logps(module, input_ids, attention_mask, labels, reduction=self.logp_reduction,
                           return_log1m=log1m)

    @contextlib.contextmanager
    def _reference_module(self, model):
        """The network that computes ℓ_ref, in eval mode (no dropout) and no_grad.

        Under DDP the unwrapped module is called, so that a reference forward never joins a collective
        (processes may skip it); under FSDP/DeepSpeed the wrapped one, which must be called by all.
        """
        if self.ref_model is not None:
            with torch.no_grad():
                yield self.ref_model
            return
        module = model if self._sharded else _unwrap(model)
        peft_model = _unwrap(model)
        disable = peft_model.disable_adapter() if hasattr(peft_model, "disable_adapter") else contextlib.nullcontext()
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad(), disable:
                yield module
        finally:
            module.train(was_training)

    def _reference_logps(self, model, input_ids, attention_mask, labels, rows: torch.Tensor | None = None):
        """(B,) ℓ_ref for the selected rows (all by default), NaN on the others; only those are forwarded."""
        n = input_ids.shape[0]
        out = torch.full((n,), float("nan"), device=input_ids.device)
        idx = torch.arange(n, device=input_ids.device) if rows is None else rows.nonzero().flatten()
        if idx.numel() == 0:
            if not self._sharded:
                return out
            idx_forward = torch.zeros(1, dtype=torch.long, device=input_ids.device)  # keep collectives aligned
        else:
            idx_forward = idx
        with self._reference_module(model) as module:
            logps = self._logps(module, input_ids[idx_forward], attention_mask[idx_forward], labels[idx_forward]).logps
        self.forward_counts["reference_forward_calls"] += 1
        self.forward_counts["reference_forward_rows"] += int(idx_forward.numel())
        if idx.numel():
            out[idx] = logps.to(out.dtype)
        return out

    @property
    def reference_forward_calls(self) -> int:
        return self.forward_counts["reference_forward_calls"]

    @property
    def reference_forward_rows(self) -> int:
        return self.forward_counts["reference_forward_rows"]

    # -------------------------------------------------------------------------------- the step
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """One micro-batch: policy log-probs (one forward; pairwise = chosen and rejected stacked), the
        reference log-probs the method needs, the method's loss. Metrics are stored for `log`."""
        if self._last_log_time is None and model.training:
            self._last_log_time = time.perf_counter()
        policy = self._logps(model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"],
                             log1m=self.needs_log1m)
        self.forward_counts["policy_forward_calls"] += 1
        self.forward_counts["policy_forward_rows"] += int(inputs["input_ids"].shape[0])
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
                    module = model if self._sharded else _unwrap(model)
                    extra["policy_kl_logps"] = self._logps(
                        module, inputs["kl_input_ids"], inputs["kl_attention_mask"], inputs["kl_labels"]).logps
                self.forward_counts["policy_forward_calls"] += 1
                self.forward_counts["policy_forward_rows"] += int(inputs["kl_input_ids"].shape[0])
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
        return self._reference_logps(model, inputs[f"{prefix}input_ids"], inputs[f"{prefix}attention_mask"],
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
            from accelerate.utils import gather_object

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
            from accelerate.utils import gather_object

            parts = gather_object(parts)
        total = Counter()
        for part in parts:
            total.update(part)
        return {k: int(total[k]) for k in ("policy_forward_calls", "policy_forward_rows", "reference_forward_calls",
                                           "reference_forward_rows", "reference_cache_calls", "reference_cache_rows")}


def _unwrap(model):
    """The module inside DDP/accelerate wrappers (a PeftModel stays a PeftModel)."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


def _frozen_copy(model):
    """A frozen copy of the starting policy: with LoRA the adapters are merged into the copy (fresh
    adapters are zero, so this is the base model)."""
    ref = copy.deepcopy(_unwrap(model))
    if hasattr(ref, "merge_and_unload"):
        ref = ref.merge_and_unload()
    return ref.eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------- runs
def resolve_data_dir(data_dir: str | os.PathLike | None, profile_data_dir: str | None) -> str | None:
    """The data root by DESIGN.md's precedence: argument, $ULMA_DATA_DIR, the profile's (`fixtures` =
    tests/fixtures of the project), else None (the hub)."""
    from ulma import data

    value = data_dir or os.environ.get(data.ENV_VAR) or profile_data_dir
    root = data.resolve_data_dir(value) if value else None
    return str(root) if root is not None else None


def training_arguments(cfg: TrainConfig, output_dir: str | os.PathLike, **overrides) -> TrainingArguments:
    """TrainingArguments from a TrainConfig: checkpoints under output_dir/checkpoints, no reporting."""
    cuda = torch.cuda.is_available()
    values = dict(
        output_dir=str(Path(output_dir) / "checkpoints"),
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,  # a float < 1 is a ratio of the total steps
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=2,  # resume needs only the last one
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to="none",
        remove_unused_columns=False,  # the collators read prompt_ids/completion_ids/z/reference_logps
        use_cpu=not cuda,
        bf16=cuda and cfg.dtype == "bfloat16",
        fp16=cuda and cfg.dtype == "float16",
        ddp_find_unused_parameters=False,
        dataloader_num_workers=0,
    )
    values.update(overrides)
    return TrainingArguments(**values)


def load_training_data(method: str, dataset: str, cfg: TrainConfig, data_dir: str | None):
    """The untokenized rows of the method's view, cut to `max_train_examples` source examples.

    Raises InvalidRunError for an unknown method or dataset, or a view the dataset does not have.
    """
    from ulma import data

    try:
        try:
            spec = get_method(method)
        except ValueError as err:
            raise ValueError(f"{err}, or rlhf") from None
        if cfg.reference not in REFERENCE_MODES:
            raise ValueError(f"reference must be one of {REFERENCE_MODES}, got {cfg.reference!r}")
        if spec.reference != "none" and cfg.reference == "adapters" and cfg.lora_r == 0:
            raise ValueError("reference='adapters' needs LoRA (lora_r > 0); "
                             "use 'copy' or 'cached' for full fine-tuning")
        rows = data.load(dataset, spec.data_kind, cfg.train_split, data_dir, **cfg.data_options)
    except (ValueError, KeyError, OSError, NotImplementedError) as err:  # OSError: missing file, no network
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise InvalidRunError(str(message)) from err
    if cfg.max_train_examples is not None:
        limit = cfg.max_train_examples
        rows = rows.filter(lambda r: r["source_index"] < limit)
    return spec, rows


def train(profile: Profile | str, method: str, dataset: str, output_dir: str | os.PathLike, *,
          data_dir: str | os.PathLike | None = None, resume: bool = False,
          callbacks: list[TrainerCallback] | None = None) -> dict:
    """Train one run (DESIGN.md, Runs) and return its metrics (the `metrics.json` content).

    Writes into `output_dir`: config.json, adapter/ (LoRA) or model/ (lora_r 0), tokenizer/,
    metrics.json, checkpoints/. `resume` continues from the last checkpoint when there is one.
    `callbacks` are extra TrainerCallbacks (tests, notebooks).
    """
    if method == "rlhf":
        from ulma.rlhf import train_rlhf

        return train_rlhf(profile, dataset, output_dir, data_dir=data_dir, resume=resume)
    from transformers import set_seed

    from ulma.batching import PairwiseCollator, PointwiseCollator, tokenize_dataset
    from ulma.models import apply_lora, load_model_and_tokenizer, model_identity

    profile = load_profile(profile) if isinstance(profile, (str, Path)) else profile
    cfg = train_config_for(profile, method)
    root = resolve_data_dir(data_dir, cfg.data_dir)
    spec, rows = load_training_data(method, dataset, cfg, root)  # every data error comes before the model
    output_dir = Path(output_dir)

    set_seed(cfg.seed)
    model, tokenizer = load_model_and_tokenizer(cfg.model, dtype=cfg.dtype)
    if cfg.lora_r > 0:
        model = apply_lora(model, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                           target_modules=cfg.lora_target_modules)
    tokenized = tokenize_dataset(rows, tokenizer, spec.data_kind, max_prompt_length=cfg.max_prompt_length,
                                 max_completion_length=cfg.max_completion_length)
    collator = (PairwiseCollator if spec.data_kind == "pairwise" else PointwiseCollator)(tokenizer.pad_token_id)
    args = training_arguments(cfg, output_dir)
    trainer = ULMATrainer(model, args, method=method, config=cfg, train_dataset=tokenized, data_collator=collator,
                          model_id=model_identity(cfg.model), callbacks=callbacks)

    checkpoint = get_last_checkpoint(args.output_dir) if resume and Path(args.output_dir).is_dir() else None
    if resume and checkpoint is None:
        logger.warning("resume: no checkpoint under %s, training from the start", args.output_dir)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    wall = time.perf_counter() - start
    counts = trainer.gathered_forward_counts()  # collective: every process
    peak = max(e.get("peak_memory_mb", 0.0) for e in trainer.state.log_history) if trainer.state.log_history else None

    history = [e for e in trainer.state.log_history if "loss" in e]
    final = dict(history[-1]) if history else {}
    metrics = {"train": {
        **final, **result.metrics,
        "global_step": trainer.state.global_step,
        "wall_time_s": wall,
        "num_tokens": trainer.state.num_input_tokens_seen,
        "tokens_per_s": trainer.session_tokens / wall if wall > 0 else None,
        "peak_memory_mb": peak,
        "reference_forwards": counts["reference_forward_calls"],
        **counts,
        "reference_mode": trainer.reference_mode,
        "reference_cache": trainer.reference_cache,
        "resumed_from": checkpoint,
        "train_rows": len(tokenized),
        "num_processes": args.world_size,
        "log_history": trainer.state.log_history,
    }}
    trainer.save_model(str(output_dir / ("adapter" if cfg.lora_r > 0 else "model")))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(output_dir / "tokenizer")
        run_config = {"profile": profile.to_dict(), "method": method, "dataset": dataset, "data_dir": root,
                      "train": dataclasses.asdict(cfg)}
        (output_dir / "config.json").write_text(json.dumps(run_config, indent=2, sort_keys=True))
        # a fresh file: an "eval" section of earlier weights would no longer apply (evaluation adds its own)
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True, default=str))
    return metrics


def load_trained(output_dir: str | os.PathLike):
    """Load a run back: (model in eval mode, tokenizer, run_config) = base model + adapter, or the full model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ulma.models import load_model_and_tokenizer, resolve_dtype

    output_dir = Path(output_dir)
    run_config = json.loads((output_dir / "config.json").read_text())
    cfg = run_config["train"]
    tokenizer = AutoTokenizer.from_pretrained(output_dir / "tokenizer")
    if (output_dir / "adapter").is_dir():
        from peft import PeftModel

        base, _ = load_model_and_tokenizer(cfg["model"], dtype=cfg["dtype"])
        model = PeftModel.from_pretrained(base, output_dir / "adapter")
    else:
        model = AutoModelForCausalLM.from_pretrained(output_dir / "model", dtype=resolve_dtype(cfg["dtype"]))
    return model.eval(), tokenizer, run_config
