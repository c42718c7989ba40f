"""`train()`: one run from a profile, and `build_trainer`, the one factory of `ULMATrainer`.

Everything the loss step needs is built here and injected (the step itself is `ulma.loss_trainer`):
the model and its fresh LoRA adapters, the tokenized rows of the method's view, the collator and the
TrainingArguments. `train()` and benchmarks/bench_trl.py build their trainer through `build_trainer`.
`train()` runs the method's `runner` (`RUNNERS`): "offline" through `ULMATrainer`, "rlhf" in `ulma.rlhf`,
"none" (the base model: nothing trained, evaluated as is); the run folder (`ulma.runs`) gets config.json
first (a folder knows its run), then weights and metrics.json.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig
from transformers import AutoConfig, TrainerCallback, TrainingArguments, set_seed

from ulma import data, rlhf
from ulma.batching import PairwiseCollator, PointwiseCollator, tokenize_dataset
from ulma.config import Profile, TrainConfig, load_profile, train_config_for
from ulma.files import dataset_content_hash, portable_path
from ulma.kl_partners import KLPairsCollator, add_kl_partners
from ulma.loss_config import METHOD_FIELDS, ULMAConfig
from ulma.loss_trainer import ULMATrainer
from ulma.losses import Method, get_method
from ulma.models import load_model_and_tokenizer, model_identity, resolve_model_path, tiny_config, tiny_tokenizer
from ulma.reference import REFERENCE_MODES, weights_fingerprint
from ulma.runs import (InvalidRunError, RunFolder, load_trained, objective_trace, peak_memory_mb, resolve_data_dir,
                       resumed_train_loss)

logger = logging.getLogger(__name__)

# names that lived here before the step, reference, run-folder and file modules existed (imported by users)
__all__ = ["ULMATrainer", "ULMAConfig", "build_trainer", "train", "training_arguments", "load_training_data", "load_trained",
           "InvalidRunError", "resolve_data_dir", "peak_memory_mb", "dataset_content_hash", "add_kl_partners",
           "KLPairsCollator", "weights_fingerprint", "REFERENCE_MODES", "RUNNERS"]


# ----------------------------------------------------------------------------------------- the factory
def training_arguments(cfg: TrainConfig, output_dir: str | os.PathLike, *, method: str = "ulma",
                       base: TrainingArguments | None = None, **overrides) -> ULMAConfig:
    """The ULMAConfig of a profile's run: TrainConfig's optimisation fields as TrainingArguments (checkpoints
    under output_dir/checkpoints), its method fields as they are. `base`: TrainingArguments to take the
    optimisation settings from instead (benchmarks/bench_trl.py)."""
    method_fields = {name: getattr(cfg, name) for name in METHOD_FIELDS}
    if base is not None:
        return ULMAConfig.from_arguments(base, method=method, **method_fields)
    cuda = torch.cuda.is_available()
    values = dict(
        output_dir=str(Path(output_dir) / "checkpoints"),
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
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
        save_total_limit=2,  # resume needs only the last complete one; the other survives a save cut short
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to=cfg.report_to,
        remove_unused_columns=False,  # the collators read prompt_ids/completion_ids/z/reference_logps
        use_cpu=not cuda,
        bf16=cfg.dtype == "bfloat16",  # autocast on a GPU, and on a CPU too (the single_gpu path, tested on tiny)
        fp16=cuda and cfg.dtype == "float16",
        ddp_find_unused_parameters=False,
        dataloader_num_workers=0,
    )
    values.update(overrides)
    return ULMAConfig(method=method, **method_fields, **values)


def load_training_data(method: str, dataset: str, cfg: TrainConfig, data_dir: str | None):
    """The method's registry entry and the untokenized rows of its view, cut to `max_train_examples`
    source examples. Raises InvalidRunError for an unknown method or dataset, or a view the dataset
    does not have."""
    try:
        spec = get_method(method)
        if cfg.reference not in REFERENCE_MODES:
            raise ValueError(f"reference must be one of {REFERENCE_MODES}, got {cfg.reference!r}")
        if spec.needs_reference and spec.runner == "offline" and cfg.reference == "adapters" and cfg.lora_r == 0:
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


def lora_config(cfg: TrainConfig) -> LoraConfig:
    """The peft LoraConfig of a TrainConfig's LoRA fields (the paper: r 8, alpha 32, dropout 0.1 on q_proj, v_proj)."""
    return LoraConfig(task_type="CAUSAL_LM", r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_target_modules))


def build_trainer(method: str, cfg: TrainConfig, tokenized, output_dir: str | os.PathLike, *, model, pad_token_id: int,
                  model_id: str | None = None, callbacks: list[TrainerCallback] | None = None,
                  args: TrainingArguments | None = None, tokenizer=None, dataset_name: str | None = None) -> ULMATrainer:
    """The one way a profile's ULMATrainer is built (train() and benchmarks/bench_trl.py), through the
    public API: `ULMAConfig` from `cfg` (`training_arguments`; `args` supplies the optimisation settings
    instead), a peft LoraConfig from the TrainConfig's LoRA fields when `cfg.lora_r` > 0, the collator
    of the method's data kind, on rows tokenized by `ulma.batching.tokenize_dataset`."""
    spec = get_method(method)
    config = training_arguments(cfg, output_dir, method=method, base=args)
    collator = (PairwiseCollator if spec.data_kind == "pairwise" else PointwiseCollator)(pad_token_id)
    return ULMATrainer(model, config, train_dataset=tokenized, processing_class=tokenizer,
                       peft_config=lora_config(cfg) if cfg.lora_r > 0 else None, data_collator=collator,
                       callbacks=callbacks, model_id=model_id, dataset_name=dataset_name)


# ------------------------------------------------------------------------------------- estimates
# ASSUMPTIONS, not measurements: sustained training FLOP/s by device kind (an A100-class GPU at ~35 % of its
# bf16 peak, as ulma/profiles/single_gpu.yaml; a few CPU cores), and characters per token of English BPE text
ASSUMED_FLOPS = {"cuda": 1.1e14, "cpu": 5e10}
CHARS_PER_TOKEN = 4.0


def approx_parameters(config) -> int:
    """Parameters of a decoder-only transformer from its config: 12·L·d² (attention + MLP) + V·d."""
    d, layers = config.hidden_size, config.num_hidden_layers
    mlp = getattr(config, "intermediate_size", 4 * d)
    return int(layers * (4 * d * d + 3 * d * mlp) + config.vocab_size * d)


def estimate_run(cfg: TrainConfig, spec: Method, rows, *, parameters: int | None, hidden: int | None = None,
                 layers: int | None = None, device: str | None = None) -> dict[str, Any]:
    """Tokens, time and memory of a run, ESTIMATED before the model loads: tokens from the rows' characters
    (CHARS_PER_TOKEN, each part cut at the profile's lengths), time from ASSUMED_FLOPS at ~4 N FLOPs per
    trained token (LoRA: forward + activation gradients) + 2 N per reference token, memory from the weights
    and ~34 bytes per token, layer and hidden unit of activations (16-bit, no recomputation)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")

    def tokens(text, cap):
        return min(len(text) / CHARS_PER_TOKEN, cap)
    prompt = [tokens(" ".join(m["content"] for m in p), cfg.max_prompt_length) for p in rows["prompt"]]
    replies = (list(zip(rows["chosen"], rows["rejected"])) if spec.data_kind == "pairwise"
               else [(c,) for c in rows["completion"]])
    per_row = [len(r) * p + sum(tokens(x, cfg.max_completion_length) for x in r) for p, r in zip(prompt, replies)]
    sequences = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    epochs = cfg.max_steps * sequences / max(len(per_row), 1) if cfg.max_steps > 0 else cfg.num_train_epochs
    trained = sum(per_row) * epochs
    reference = sum(per_row) * (1 if cfg.reference == "cached" else epochs) if spec.needs_reference else 0.0
    out = {"device": device, "rows": len(per_row), "epochs": epochs, "trained_tokens": trained,
           "reference_tokens": reference, "seconds": None, "memory_gb": None}
    if parameters:
        out["seconds"] = (4 * trained + 2 * reference) * parameters / ASSUMED_FLOPS[device]
        width = cfg.max_prompt_length + cfg.max_completion_length
        batch = cfg.per_device_train_batch_size * (2 if spec.data_kind == "pairwise" else 1)
        bytes_per = 2 if cfg.dtype != "float32" else 4
        activations = 34 * batch * width * (hidden or 0) * (layers or 0)
        out["memory_gb"] = (parameters * bytes_per + activations) / 1e9
    return out


def format_estimate(e: dict[str, Any]) -> str:
    time = "unknown (model size unknown)" if e["seconds"] is None else f"~{e['seconds'] / 60:.0f} min"
    memory = "" if e["memory_gb"] is None else f", memory ~{e['memory_gb']:.1f} GB"
    return (f"ESTIMATE (assumed throughput, not measured) on {e['device']}: {e['rows']} rows x {e['epochs']:.2f} "
            f"epochs ~ {e['trained_tokens'] / 1e6:.2f} M trained tokens + {e['reference_tokens'] / 1e6:.2f} M "
            f"reference tokens; training {time}{memory}")


def _model_shape(name: str) -> tuple[int | None, int | None, int | None]:
    """(parameters, hidden size, layers) from the model's config alone, no weights; Nones if unreadable."""
    try:
        config = (tiny_config(len(tiny_tokenizer())) if name == "tiny"
                  else AutoConfig.from_pretrained(resolve_model_path(name)))
        return approx_parameters(config), config.hidden_size, config.num_hidden_layers
    except (OSError, ValueError, AttributeError):  # offline, not a decoder config: the time stays unknown
        return None, None, None


# ----------------------------------------------------------------------------------------- runs
def run_config(profile: Profile, method: str, dataset: str, root: str | None, cfg: TrainConfig) -> dict[str, Any]:
    """config.json of a run: what it is (`ulma.runs.IDENTITY` decides whether a folder holds the same run)."""
    values = {"profile": profile.to_dict(), "method": method, "dataset": dataset, "data_dir": root,
              "train": dataclasses.asdict(cfg)}
    for section in get_method(method).profile_sections:  # e.g. rlhf's PPO settings
        values[section] = dataclasses.asdict(getattr(profile, section))
    return values


def train(profile: Profile | str, method: str, dataset: str, output_dir: str | os.PathLike, *,
          data_dir: str | os.PathLike | None = None, resume: bool = False, overwrite: bool = False,
          callbacks: list[TrainerCallback] | None = None, show_estimate: bool = False) -> dict:
    """Train one run (docs/DESIGN.md, Runs) and return its metrics (the `metrics.json` content).

    Writes into `output_dir`: config.json (first: the folder then knows its run), adapter/ (LoRA) or
    model/ (lora_r 0), tokenizer/, metrics.json, checkpoints/. A folder holding another run is refused
    (InvalidRunError naming the difference) unless `overwrite`. `resume` continues this run from its last
    complete checkpoint. `callbacks` are extra TrainerCallbacks (tests, notebooks). `show_estimate` prints
    `estimate_run`'s tokens, time and memory to stderr before the model loads (the CLI). The method's
    `runner` decides what training is: see the module docstring.
    """
    profile = load_profile(profile) if isinstance(profile, (str, Path)) else profile
    runner = RUNNERS[_known_method(method).runner]
    return runner(profile, method, dataset, output_dir, data_dir=data_dir, resume=resume, overwrite=overwrite,
                  callbacks=callbacks, show_estimate=show_estimate)


def _train_offline(profile: Profile, method: str, dataset: str, output_dir, *, data_dir, resume: bool,
                   overwrite: bool, callbacks, show_estimate: bool = False) -> dict:
    """Runners "offline" (ULMATrainer on the method's loss) and "none" (nothing trained)."""
    cfg = train_config_for(profile, method)
    root = resolve_data_dir(data_dir, cfg.data_dir)
    spec, rows = load_training_data(method, dataset, cfg, root)  # every data error comes before the model
    folder = RunFolder(output_dir)
    folder.claim(run_config(profile, method, dataset, root, cfg), overwrite=overwrite)
    if not spec.trains:
        return _untrained_run(folder, cfg)
    if show_estimate:  # before the model loads: a run too big for this machine is seen before it starts
        parameters, hidden, layers = _model_shape(cfg.model)
        print(format_estimate(estimate_run(cfg, spec, rows, parameters=parameters, hidden=hidden, layers=layers)),
              file=sys.stderr, flush=True)

    set_seed(cfg.seed)  # before the model and its fresh LoRA adapters
    model, tokenizer = load_model_and_tokenizer(cfg.model, dtype=cfg.dtype)
    tokenized = tokenize_dataset(rows, tokenizer, spec.data_kind, max_prompt_length=cfg.max_prompt_length,
                                 max_completion_length=cfg.max_completion_length)
    trainer = build_trainer(method, cfg, tokenized, folder.path, model=model, pad_token_id=tokenizer.pad_token_id,
                            model_id=model_identity(cfg.model), callbacks=callbacks, tokenizer=tokenizer,
                            dataset_name=dataset)
    checkpoint = folder.last_complete_checkpoint() if resume else None
    if resume and checkpoint is None:
        logger.warning("resume: no complete checkpoint under %s, training from the start", folder.checkpoints)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    wall = time.perf_counter() - start
    counts = trainer.gathered_forward_counts()  # collective: every process
    padded = trainer.gathered_padded_fraction()  # collective
    log_history = trainer.state.log_history
    peak = max(e.get("peak_memory_mb", 0.0) for e in log_history) if log_history else None
    summary = dict(result.metrics)
    if checkpoint is not None:  # transformers averages this session's steps only
        resumed_at = int(checkpoint.name.rsplit("-", 1)[1])
        summary["train_loss"] = resumed_train_loss(result.training_loss, trainer.state.global_step - resumed_at,
                                                   log_history, resumed_at)

    history = [e for e in log_history if "loss" in e]
    metrics = {
        **(dict(history[-1]) if history else {}), **summary,
        "global_step": trainer.state.global_step,
        "wall_time_s": wall,
        "num_tokens": trainer.state.num_input_tokens_seen,
        "tokens_per_s": trainer.session_tokens / wall if wall > 0 else None,
        "peak_memory_mb": peak,
        "reference_forwards": counts["reference_forward_calls"],
        **counts,
        "reference_mode": trainer.reference_mode,
        "reference_cache": trainer.reference_cache,
        "resumed_from": portable_path(checkpoint),  # as records keep paths: ~/... , never this machine's home
        "train_rows": len(trainer.train_dataset),
        "group_by_length": cfg.group_by_length,
        "padded_fraction": padded,
        "num_processes": trainer.args.world_size,
        "objective": objective_trace(log_history),
        "log_history": log_history,
    }
    trainer.save_model(str(folder.path / ("adapter" if cfg.lora_r > 0 else "model")))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(folder.path / "tokenizer")
        # a fresh file: an "eval" section of earlier weights would no longer apply (evaluation adds its own)
        return folder.write_metrics("train", metrics, fresh=True)
    return {"train": metrics}


def _train_rlhf(profile: Profile, method: str, dataset: str, output_dir, *, data_dir, resume: bool,
                overwrite: bool, callbacks, show_estimate: bool = False) -> dict:
    """Runner "rlhf": reward model + PPO, its own loop (`ulma.rlhf`); Trainer callbacks do not apply."""
    return rlhf.train_rlhf(profile, dataset, output_dir, data_dir=data_dir, resume=resume, overwrite=overwrite)


# Method.runner -> the function that trains it
RUNNERS = {"offline": _train_offline, "none": _train_offline, "rlhf": _train_rlhf}


def _known_method(method: str) -> Method:
    try:
        return get_method(method)
    except ValueError as err:
        raise InvalidRunError(str(err)) from None


def _untrained_run(folder: RunFolder, cfg: TrainConfig) -> dict:
    """A method that trains nothing (the base model): the folder holds its config and tokenizer, and
    `RunFolder.load` gives the starting model, so evaluation reads it like any run."""
    _, tokenizer = load_model_and_tokenizer(cfg.model, dtype=cfg.dtype)
    tokenizer.save_pretrained(folder.path / "tokenizer")
    return folder.write_metrics("train", {"global_step": 0, "wall_time_s": 0.0, "trained": False}, fresh=True)
