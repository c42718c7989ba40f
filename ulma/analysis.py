"""Analyses that need no training: dataset statistics (notebook 01) and gradient weights (notebook 02).

``gradient_weights`` is the paper's gradient analysis: the per-sample weight −∂L/∂ℓ_θ of every loss of the
registry, computed with autograd from `ulma.losses` (not from the closed forms).
"""
from __future__ import annotations

import csv
import os
import statistics
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from ulma import data
from ulma.batching import render_prompt
from ulma.catalog import get_experiment
from ulma.config import Profile
from ulma.files import portable_path
from ulma.losses import get_method
from ulma.models import load_model_and_tokenizer, resolve_model_path, tiny_tokenizer
from ulma.runs import resolve_data_dir
from ulma.store import as_profile, now, package_versions, resolve_path, short_error, write_record

# ------------------------------------------------------------------------------------------ datasets
DATASET_COLUMNS = [
    "dataset", "split", "view", "rows", "rows_used", "positives", "negatives", "other_labels", "label_mean",
    "prompt_tokens_mean", "prompt_tokens_p95", "prompt_over_max", "completion_tokens_mean",
    "completion_tokens_p95", "result",
]


def dataset_stats(profile: str | Profile = "mini", datasets: list[str] | None = None, *, data_dir: str | None = None,
                  results_dir: str | os.PathLike = "results", max_token_rows: int = 1000) -> list[dict[str, Any]]:
    """Notebook 01: per dataset, split (the profile's train and test splits) and view: rows, rows the
    training uses (``max_train_examples``), label balance, token lengths (over the first
    ``max_token_rows`` rows, by the profile's tokenizer and prompt rendering). A dataset that cannot be
    had gives a ``not measured`` row. Written to ``results/<profile>/01_datasets/dataset_stats.json``."""
    prof = as_profile(profile)
    datasets = get_experiment("01_datasets").datasets_for(prof) if datasets is None else datasets
    root = resolve_data_dir(data_dir, prof.train.data_dir)
    tokenizer = _tokenizer(prof.train.model)
    rows = []
    for name in datasets:
        for split in (prof.train.train_split, prof.eval.test_split):
            for view in data.VIEWS:
                row: dict[str, Any] = {"dataset": name, "split": split, "view": view}
                if view not in data.SOURCES[name].views:
                    rows.append({**row, "result": f"n/a: {name} has no {view} view"})
                    continue
                try:
                    ds = data.load(name, view, split, root, **_options(name, prof))
                except (FileNotFoundError, ConnectionError) as exc:
                    rows.append({**row, "result": f"not measured: {short_error(exc)}"})
                    continue
                row["rows"] = len(ds)
                if split == prof.train.train_split and prof.train.max_train_examples is not None:
                    row["rows_used"] = sum(i < prof.train.max_train_examples for i in list(ds["source_index"]))
                else:
                    row["rows_used"] = len(ds)
                if view == "pointwise":
                    labels = list(ds["label"])
                    row.update(positives=sum(z >= 1.0 for z in labels), negatives=sum(z <= 0.0 for z in labels),
                               other_labels=sum(0.0 < z < 1.0 for z in labels), label_mean=statistics.fmean(labels))
                if len(ds) == 0:
                    rows.append({**row, "result": "ok (no rows)"})
                    continue
                head = ds.select(range(min(len(ds), max_token_rows)))
                prompts = [len(tokenizer(render_prompt(p, tokenizer))["input_ids"]) for p in list(head["prompt"])]
                replies = list(head["chosen"]) + list(head["rejected"]) if view == "pairwise" else list(head["completion"])
                completions = [len(ids) for ids in tokenizer(replies, add_special_tokens=False)["input_ids"]]
                row.update(
                    prompt_tokens_mean=statistics.fmean(prompts), prompt_tokens_p95=_p95(prompts),
                    prompt_over_max=sum(n > prof.train.max_prompt_length for n in prompts) / len(prompts),
                    completion_tokens_mean=statistics.fmean(completions), completion_tokens_p95=_p95(completions),
                    result="ok",
                )
                rows.append(row)
    rows = [{c: r.get(c) for c in DATASET_COLUMNS} for r in rows]
    write_record(resolve_path(results_dir) / prof.name / "01_datasets" / "dataset_stats.json",
                 {"profile": prof.name, "data_dir": portable_path(root), "rows": rows, "versions": package_versions(), "written_at": now()})
    return rows


def _options(name: str, prof: Profile) -> dict[str, Any]:
    return {k: v for k, v in prof.train.data_options.items() if k in data.SOURCES[name].options}


def _p95(values: list[int]) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))])


def _tokenizer(model: str):
    if model == "tiny":
        return tiny_tokenizer()
    try:
        return AutoTokenizer.from_pretrained(resolve_model_path(model))
    except OSError:
        return load_model_and_tokenizer(model)[1]


# --------------------------------------------------------------------------------- gradient analysis
GRADIENT_METHODS = ("sft", "pointwise_dpo", "positive_dpo", "negative_dpo", "ulma", "unlikelihood",
                    "negative_unlikelihood", "dpo")


def gradient_weights(
    methods: tuple[str, ...] | list[str] = GRADIENT_METHODS,
    *,
    beta: float = 0.1,
    c: float = 0.0,
    log_ratios: Any = None,
) -> list[dict[str, Any]]:
    """Per-sample gradient weight w = −∂L/∂ℓ_θ(x,y) against the log-ratio Δ = ℓ_θ − ℓ_ref (docs/METHODS.md).

    Computed with autograd from ``ulma.losses`` (not from the closed forms): a batch of samples of one
    class, one per Δ, through the method's loss; the class mean divides each gradient by the batch size,
    which is multiplied back. w > 0 raises the sample's likelihood, w < 0 lowers it. For pairwise DPO the
    other reply of the pair has log-ratio 0 (its weight depends on both: the pairwise coupling).
    Returns rows ``{method, sample, log_ratio, weight, beta, c}``.
    """
    grid = torch.linspace(-50.0, 50.0, 201) if log_ratios is None else torch.as_tensor(log_ratios, dtype=torch.float32)
    n = len(grid)
    rows = []
    for name in methods:
        spec = get_method(name)
        fn = spec.loss_fn
        # the hyperparameters under study, for the methods that read them (the registry says which)
        kwargs = {k: v for k, v in {"beta": beta, "c": c}.items() if k in spec.hyperparameters}
        if spec.data_kind == "pairwise":
            for sample in ("chosen", "rejected"):
                ref = torch.zeros(n)
                own = grid.clone().requires_grad_(True)
                other = torch.zeros(n)
                chosen, rejected = (own, other) if sample == "chosen" else (other, own)
                out = fn(chosen, rejected, ref, ref, **kwargs)
                (grad,) = torch.autograd.grad(out.loss, own)
                rows += _weight_rows(name, sample, grid, -grad * n, beta, c)
            continue
        samples = {"positive": 1.0} if spec.data_kind == "sft" else {"positive": 1.0, "negative": 0.0}
        for sample, z in samples.items():
            policy = grid.clone().requires_grad_(True)
            extra = {}
            if spec.needs_kl_pairs:  # KTO: the batch KL estimate is 0 here
                extra = {"policy_kl_logps": torch.zeros(n), "reference_kl_logps": torch.zeros(n)}
            out = fn(policy, torch.zeros(n), torch.full((n,), z), **kwargs, **extra)
            grad = None
            if out.loss.requires_grad:  # a loss that ignores this class may not depend on the input at all
                (grad,) = torch.autograd.grad(out.loss, policy, allow_unused=True)
            grad = torch.zeros(n) if grad is None else grad
            rows += _weight_rows(name, sample, grid, -grad * n, beta, c)
    return rows


def _weight_rows(method, sample, grid, weights, beta, c) -> list[dict[str, Any]]:
    return [
        {"method": method, "sample": sample, "log_ratio": float(d), "weight": float(w), "beta": beta, "c": c}
        for d, w in zip(grid.tolist(), weights.detach().tolist())
    ]


def write_gradient_weights(profile: str | Profile = "mini", *, results_dir="results", **kwargs) -> Path:
    """Notebook 02: gradient weights at the profile's β and c → results/<profile>/02_gradients/gradient_weights.csv."""
    prof = as_profile(profile)
    kwargs.setdefault("beta", prof.train.beta)
    kwargs.setdefault("c", prof.train.c)
    rows = gradient_weights(**kwargs)
    path = resolve_path(results_dir) / prof.name / "02_gradients" / "gradient_weights.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
