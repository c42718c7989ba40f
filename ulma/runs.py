"""The run folder: the one module that knows its files, writes them and reads them back.

A run folder (docs/DESIGN.md, Runs) holds

    config.json    what the run is: profile, method, dataset, data root, resolved TrainConfig (+ rlhf)
    metrics.json   {"train": ..., "eval": ...}: training writes its section fresh, evaluation merges its own
    adapter/ | model/, tokenizer/, value_head.pt (rlhf)      the trained weights
    checkpoints/   the Trainer's checkpoint-N/ folders (PPO: ppo_state.pt), for --resume

Every write is atomic (`ulma.files`). A folder knows its run: `claim` writes config.json before training
starts and refuses a folder that holds another run (naming the difference) unless `overwrite`, so neither a
new run nor `--resume` can mix two configurations. `last_complete_checkpoint` skips a checkpoint whose save
was interrupted (its trainer_state.json, written last by transformers, is missing or unreadable).
"""
from __future__ import annotations

import logging
import os
import re
import resource
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from ulma import data
from ulma.files import read_json, write_json
from ulma.models import load_model_and_tokenizer, resolve_dtype

logger = logging.getLogger(__name__)

# the parts of config.json that decide what a run trains: a folder holding other values is another run
# (the profile's eval and experiments sections, and paths, do not change the weights)
IDENTITY = ("method", "dataset", "data_dir", "train", "rlhf", "reward")
# settings that may change between a run and its continuation: how long it trains (a resumed run may be
# extended) and how often it logs and saves; they do not make the weights of the steps taken so far differ
CONTINUABLE = ("train.max_steps", "train.num_train_epochs", "train.save_steps", "train.logging_steps",
               "rlhf.ppo_steps", "train.report_to")
# every entry a run writes: what `overwrite` removes (never anything else in the folder)
ENTRIES = ("config.json", "metrics.json", "adapter", "model", "tokenizer", "value_head.pt", "checkpoints")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class InvalidRunError(ValueError):
    """A run that cannot work (unknown method or dataset, a method the dataset has no data for, a bad
    option, a folder holding another run): raised before any model loads; the CLI prints it as one
    line and exits 2."""


def resolve_data_dir(data_dir: str | os.PathLike | None, profile_data_dir: str | None) -> str | None:
    """The data root as a string, by `ulma.data.resolve_data_dir`'s precedence (argument, $ULMA_DATA_DIR,
    the profile's, default). A folder is made absolute, so that equal roots compare equal; the symbolic
    roots ``hub`` and ``bundled`` stay as they are; None is the default (the repository's data/, else the hub)."""
    root = data.resolve_data_dir(data_dir, profile_data_dir)
    return root if root is None or isinstance(root, str) else str(Path(root).resolve())


def peak_memory_mb(device: torch.device | None = None) -> float:
    """CUDA max allocated memory on a GPU, else the process's peak resident set size, in MiB."""
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """'key: old -> new' for every leaf that differs (nested dicts flattened with dots)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


class RunFolder:
    """One run's folder (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.config_path = self.path / "config.json"
        self.metrics_path = self.path / "metrics.json"
        self.checkpoints = self.path / "checkpoints"
        self.ppo_state = self.checkpoints / "ppo_state.pt"  # the PPO loop's state (ulma.rlhf), what --resume reads

    # ------------------------------------------------------------------------------ identity
    def read_config(self) -> dict | None:
        return read_json(self.config_path)

    def holds_files(self) -> bool:
        return any((self.path / name).exists() for name in ENTRIES)

    def claim(self, run_config: Mapping[str, Any], *, overwrite: bool = False) -> None:
        """Make this folder the given run's: write config.json now, before any training.

        A folder that holds another run (config.json of another identity, or run files without one)
        raises InvalidRunError naming the difference, unless `overwrite`: then the old run's entries
        (ENTRIES, nothing else) are removed first. The same run's folder is kept (its checkpoints serve
        `resume`), also when only its length or its logging and saving intervals differ (CONTINUABLE)."""
        old = self.read_config()
        differences = None if old is None else [
            d for d in _differences({k: old.get(k) for k in IDENTITY}, {k: run_config.get(k) for k in IDENTITY})
            if d.split(":", 1)[0] not in CONTINUABLE]
        if differences != [] and self.holds_files():
            if not overwrite:
                what = ("files of a run without a readable config.json" if old is None
                        else "another run (" + "; ".join(differences) + ")")
                raise InvalidRunError(f"{self.path} holds {what}; use another folder, or overwrite=True to replace it")
            logger.warning("overwriting the run in %s", self.path)
            self.clear()
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.config_path, run_config)

    def clear(self) -> None:
        """Remove the run's entries (ENTRIES), nothing else; tolerant of another process removing them too."""
        for name in ENTRIES:
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)

    # ------------------------------------------------------------------------------- metrics
    def read_metrics(self) -> dict:
        return read_json(self.metrics_path) or {}

    def write_metrics(self, section: str, values: Mapping[str, Any], *, fresh: bool = False) -> dict:
        """Set one section of metrics.json and return the file's content. `fresh` drops the other
        sections: new weights make an earlier "eval" section wrong."""
        metrics = {} if fresh else self.read_metrics()
        metrics[section] = dict(values)
        write_json(self.metrics_path, metrics)
        return metrics

    # ---------------------------------------------------------------------------- checkpoints
    def last_complete_checkpoint(self) -> Path | None:
        """The highest checkpoint-N/ whose save finished (trainer_state.json readable), else None.
        An incomplete one (a save interrupted by SIGINT or a crash) is skipped with a warning."""
        if not self.checkpoints.is_dir():
            return None
        found = sorted(((int(m.group(1)), p) for p in self.checkpoints.iterdir()
                        if p.is_dir() and (m := _CHECKPOINT.match(p.name))), reverse=True)
        for _, path in found:
            if read_json(path / "trainer_state.json") is not None:
                return path
            logger.warning("skipping the incomplete checkpoint %s (its save was interrupted)", path)
        return None

    def has_saved_state(self) -> bool:
        """Whether a resume would continue from saved training state (a complete Trainer checkpoint, or
        the PPO loop's state) rather than start over."""
        return self.last_complete_checkpoint() is not None or self.ppo_state.exists()

    def has_weights(self) -> bool:
        return any((self.path / name).is_dir() for name in ("adapter", "model"))

    # -------------------------------------------------------------------------------- load back
    def load(self):
        """(model in eval mode, tokenizer, run_config): base model + adapter, the full model, or (a run
        that trains nothing) the starting model itself."""
        run_config = self.read_config()
        if run_config is None:
            raise FileNotFoundError(f"{self.config_path} is missing or unreadable: not a run folder")
        cfg = run_config["train"]
        if (self.path / "adapter").is_dir():
            base, _ = load_model_and_tokenizer(cfg["model"], dtype=cfg["dtype"])
            model = PeftModel.from_pretrained(base, self.path / "adapter")
        elif (self.path / "model").is_dir():
            model = AutoModelForCausalLM.from_pretrained(self.path / "model", dtype=resolve_dtype(cfg["dtype"]))
        else:
            model, _ = load_model_and_tokenizer(cfg["model"], dtype=cfg["dtype"])
        tokenizer = AutoTokenizer.from_pretrained(self.path / "tokenizer")
        return model.eval(), tokenizer, run_config


def load_trained(output_dir: str | os.PathLike):
    """Load a run back: (model in eval mode, tokenizer, run_config) = base model + adapter, or the full model."""
    return RunFolder(output_dir).load()


def resumed_train_loss(session_loss: float, session_steps: int, history: list[dict], resumed_at: int) -> float:
    """The mean training loss over every step of a resumed run, not only those after the resume.

    transformers' `train_loss` averages the steps of this session (global_step − resumed_at). The steps
    before the resume are known from the log history the checkpoint carries: each logged `loss` is the
    mean over the steps since the previous log. Steps after the last log before the checkpoint were never
    recorded; they are left out (weighting by the steps each value covers), so the result is exact when
    the checkpoint step is a multiple of `logging_steps` and otherwise the mean over the steps logged.
    """
    total, steps, previous = session_loss * session_steps, session_steps, 0
    for entry in history:
        step = entry.get("step", 0)
        if "loss" in entry and step <= resumed_at:
            total += entry["loss"] * (step - previous)
            steps += step - previous
            previous = step
    return total / steps if steps else session_loss


# what a run's objective is read from in its log history: the loss and the implicit rewards of the offline
# methods (rewards/chosen, rewards/rejected, rewards/margins, ...; KTO's kl), PPO's reward and KL
OBJECTIVE_KEYS = ("loss", "kl", "reward")
OBJECTIVE_PREFIXES = ("rewards/",)


def objective_trace(history: list[dict]) -> dict | None:
    """{"start": ..., "end": ...}: the objective's values in the first and the last logged window of
    training (the offline methods log a step-0 entry: the first micro-batch at the starting weights), so
    that a run whose objective did not move can be flagged."""
    entries = [e for e in history if any(k in e for k in OBJECTIVE_KEYS) and "train_runtime" not in e]
    if not entries:
        return None

    def pick(entry: dict) -> dict:
        return {k: v for k, v in entry.items() if k in OBJECTIVE_KEYS or k.startswith(OBJECTIVE_PREFIXES) or k == "step"}

    return {"start": pick(entries[0]), "end": pick(entries[-1])}
