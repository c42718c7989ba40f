"""The reference model π_ref: which network computes ℓ_ref, on which rows, and the checked disk cache.

Three providers (`TrainConfig.reference`), one interface (`ReferenceProvider.logps`):

* ``adapters``: the policy itself under ``peft_model.disable_adapter()`` (no second copy of the weights);
* ``copy``: a frozen deep copy of the starting model (`frozen_copy`; LoRA merged, so the base model);
* ``cached``: ℓ_ref computed once in a no-grad pass and stored as safetensors under
  ``ulma.models.cache_dir()/reference/`` (`ReferenceCache`). The file carries a sha256 of its tensors in
  its header: a file that fails it, or cannot be read at all (truncated), is reported with a warning that
  names its path and recomputed, never used. Training (`ulma.trainer`) and evaluation's preference
  accuracy share this cache format and its key rule (`cache_path`).

Every reference forward runs in eval mode (no dropout: deterministic) under ``torch.no_grad()``, through
the one log-prob path `ulma.logprobs.model_logps`, and only on the rows the method reads
(`reference_rows`: ULMA forwards only its negatives). `ForwardCounts` counts policy and reference
forwards (calls and rows) for the tests and the efficiency notebook.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
from collections import Counter
from pathlib import Path
from typing import Iterator, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from ulma.files import atomic_write, content_key
from ulma.logprobs import model_logps
from ulma.losses import Method
from ulma.models import cache_dir

logger = logging.getLogger(__name__)

REFERENCE_MODES = ("adapters", "copy", "cached")
CACHE_VERSION = 2  # 2: files carry a checksum; bump when the cached numbers' meaning changes
COUNTS = ("policy_forward_calls", "policy_forward_rows", "reference_forward_calls", "reference_forward_rows",
          "reference_cache_calls", "reference_cache_rows")


class ForwardCounts(Counter):
    """policy_forward_{calls,rows}, reference_forward_{calls,rows} (every reference forward) and
    reference_cache_{calls,rows} (the part spent filling the cache before training)."""

    def add(self, who: str, rows: int) -> None:
        self[f"{who}_forward_calls"] += 1
        self[f"{who}_forward_rows"] += int(rows)

    def as_dict(self) -> dict[str, int]:
        return {k: int(self[k]) for k in COUNTS}


def unwrap(model):
    """The module inside DDP/accelerate wrappers (a PeftModel stays a PeftModel)."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


def frozen_copy(model):
    """A frozen copy of the starting policy: with LoRA the adapters are merged into the copy (fresh
    adapters are zero, so this is the base model)."""
    ref = copy.deepcopy(unwrap(model))
    if hasattr(ref, "merge_and_unload"):
        ref = ref.merge_and_unload()
    return ref.eval().requires_grad_(False)


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A cheap identity of a model's starting weights (LoRA adapters excluded), for the cache key when
    no model id is given."""
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                continue
            t = p.detach().float()
            digest.update(f"{name}:{tuple(p.shape)}:{t.sum().item():.8e}:{t.square().sum().item():.8e}".encode())
    return "weights-" + digest.hexdigest()[:16]


def reference_rows(method: Method, z: torch.Tensor | None, n: int, positive_threshold: float) -> torch.Tensor:
    """(n,) bool: the rows whose ℓ_ref the method reads (`Method.reference`); z None = every row (pairs,
    KTO's mismatched pairs)."""
    if method.reference == "all" or z is None:
        return torch.ones(n, dtype=torch.bool, device=z.device if z is not None else None)
    positive = z >= positive_threshold
    return ~positive if method.reference == "negatives" else positive


class ReferenceProvider:
    """ℓ_ref of a batch by mode ``adapters`` or ``copy`` (mode ``cached`` reads the rows' column instead).

    `sharded` (FSDP/DeepSpeed): the wrapped model must be called by every process, so a batch that needs
    no row still forwards one to keep the collectives aligned; otherwise (DDP) the unwrapped module is
    called, so that a reference forward never joins a collective."""

    def __init__(self, mode: str, *, reduction: str, ref_model=None, sharded: bool = False,
                 counts: ForwardCounts | None = None):
        if mode not in REFERENCE_MODES:
            raise ValueError(f"reference must be one of {REFERENCE_MODES}, got {mode!r}")
        self.mode, self.reduction, self.ref_model, self.sharded = mode, reduction, ref_model, sharded
        self.counts = counts if counts is not None else ForwardCounts()

    @contextlib.contextmanager
    def module(self, model) -> Iterator[torch.nn.Module]:
        """The network that computes ℓ_ref, in eval mode (no dropout) and no_grad."""
        if self.ref_model is not None:
            with torch.no_grad():
                yield self.ref_model
            return
        module = model if self.sharded else unwrap(model)
        peft_model = unwrap(model)
        disable = peft_model.disable_adapter() if hasattr(peft_model, "disable_adapter") else contextlib.nullcontext()
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad(), disable:
                yield module
        finally:
            module.train(was_training)

    def logps(self, model, input_ids, attention_mask, labels, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) ℓ_ref for the selected rows (all by default), NaN on the others; only those are forwarded."""
        n = input_ids.shape[0]
        out = torch.full((n,), float("nan"), device=input_ids.device)
        idx = torch.arange(n, device=input_ids.device) if rows is None else rows.nonzero().flatten()
        if idx.numel() == 0:
            if not self.sharded:
                return out
            forward = torch.zeros(1, dtype=torch.long, device=input_ids.device)  # keep collectives aligned
        else:
            forward = idx
        with self.module(model) as module:
            logps = model_logps(module, *trim(attention_mask[forward], input_ids[forward], labels[forward]),
                                reduction=self.reduction).logps
        self.counts.add("reference", forward.numel())
        if idx.numel():
            out[idx] = logps.to(out.dtype)
        return out


def trim(attention_mask: torch.Tensor, input_ids: torch.Tensor, labels: torch.Tensor):
    """(input_ids, attention_mask, labels) without the trailing columns that are padding in every row."""
    width = int(attention_mask.any(0).nonzero().max()) + 1 if attention_mask.any() else 1
    return input_ids[:, :width], attention_mask[:, :width], labels[:, :width]


# ------------------------------------------------------------------------------------------ disk cache
def cache_path(settings: Mapping, prefix: str = "") -> Path:
    """Where the cached ℓ_ref of these settings live: the key hashes everything that changes the numbers
    (the caller's settings: tokenized content, model identity, dtype, reduction, ...) and CACHE_VERSION."""
    key = content_key({"version": CACHE_VERSION, **settings}, 24)
    return cache_dir() / "reference" / f"{prefix}{key}.safetensors"


def _checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


class ReferenceCache:
    """One cache file of reference log-probs: named tensors plus their sha256 in the safetensors header."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self, expected_rows: Mapping[str, int] | None = None) -> dict[str, torch.Tensor] | None:
        """The cached tensors; None when the file is absent, or (with a warning naming its path) when it
        cannot be read, fails its checksum, or lacks a tensor of the expected length — the caller then
        recomputes and `save`s over it."""
        if not self.path.exists():
            return None
        try:
            with safe_open(str(self.path), "pt") as f:
                stored = (f.metadata() or {}).get("sha256")
            tensors = load_file(str(self.path))
        except (SafetensorError, OSError, ValueError) as err:
            return self._reject(f"cannot be read ({type(err).__name__}: {err})")
        if stored is None or stored != _checksum(tensors):
            return self._reject("its checksum does not match its contents (altered or written by an older version)")
        for name, rows in (expected_rows or {}).items():
            if name not in tensors or tensors[name].shape[0] != rows:
                return self._reject(f"{name!r} is missing or has not {rows} rows")
        return tensors

    def _reject(self, why: str) -> None:
        logger.warning("reference cache %s: %s; recomputing it", self.path, why)
        return None

    def save(self, tensors: Mapping[str, torch.Tensor]) -> None:
        tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
        with atomic_write(self.path) as tmp:
            save_file(tensors, str(tmp), metadata={"sha256": _checksum(tensors)})
