"""Per-sequence log-probabilities of response tokens: ℓ(x, y) = Σ_t log π(y_t | x, y_<t) (docs/METHODS.md).

`sequence_logps` never builds a float32 log-softmax of the whole (B, T, V) logits. It gathers the label
logit and subtracts a log-sum-exp computed over chunks of the response rows only (as TRL's
`selective_log_softmax`), upcasting one chunk at a time. Its backward pass is written out (a custom
autograd function) and recomputes the softmax chunk by chunk, so training keeps only the logits and their
gradient alive, both in the logits' dtype; autograd through a chunked `logsumexp` would instead save a
float32 copy of every chunk, i.e. the whole float32 (B, T, V) again. benchmarks/bench_logprobs.py
measures the difference.

`naive_sequence_logps` is the textbook version (full `log_softmax` in float32, DPO reference
`_get_batch_logps`); the tests check the two agree and the benchmark compares their memory and time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100
REDUCTIONS = ("sum", "mean")
DEFAULT_CHUNK_SIZE = 256  # rows (tokens) per chunk: 256 × V=49152 × 4 bytes = 48 MiB of float32
# log(1 − p) is clamped here (the log of float32's smallest normal number, about −87.3): a token with
# p = 1 to float precision would otherwise give −inf and an infinite unlikelihood loss.
LOG1M_FLOOR = math.log(torch.finfo(torch.float32).tiny)


@dataclass
class LogpsOutput:
    """logps (B,) and log1m (B,): float32 (float64 for float64 logits); num_tokens (B,) long."""

    logps: torch.Tensor
    num_tokens: torch.Tensor
    log1m: torch.Tensor | None = None


def _validate(logits, labels, reduction, chunk_size=None):
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or not logits.is_floating_point():
        raise ValueError(f"logits must be a floating (B, T, V) tensor, got {_describe(logits)}")
    if (not isinstance(labels, torch.Tensor) or labels.dim() != 2 or labels.is_floating_point()
            or labels.dtype == torch.bool):
        raise ValueError(f"labels must be an integer (B, T) tensor, got {_describe(labels)}")
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"labels shape {tuple(labels.shape)} must equal logits' (B, T) {tuple(logits.shape[:2])}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    valid = labels[:, 1:] != IGNORE_INDEX
    targets = labels[:, 1:][valid]
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= logits.shape[-1]):
        raise ValueError(f"labels must be -100 or token ids in [0, {logits.shape[-1]}), "
                         f"got values in [{int(targets.min())}, {int(targets.max())}]")


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__


def _reduce(token_values, batch_index, num_tokens, batch_size, reduction):
    """Per-token values (M,) → per-sequence (B,); `mean` of a zero-token sequence is 0, not 0/0."""
    out = token_values.new_zeros(batch_size).index_add(0, batch_index, token_values)
    if reduction == "mean":
        out = out / num_tokens.clamp(min=1).to(out.dtype)
    return out


def _segments(valid: torch.Tensor, chunk_size: int) -> list[tuple[int, int]]:
    """Row ranges [start, end) covering the True entries of `valid` (N,) in order, each ≤ chunk_size long.

    Slices of contiguous rows are views: `index_select` of scattered rows would copy every chunk, and on
    CPU it is several times slower than the arithmetic itself. One prompt-response-padding row gives one
    run, so a batch costs about B · ceil(response length / chunk_size) chunks."""
    edges = torch.diff(valid.to(torch.int8), prepend=valid.new_zeros(1, dtype=torch.int8),
                       append=valid.new_zeros(1, dtype=torch.int8))
    starts = (edges == 1).nonzero().squeeze(1).tolist()
    ends = (edges == -1).nonzero().squeeze(1).tolist()
    return [(i, min(i + chunk_size, e)) for s, e in zip(starts, ends) for i in range(s, e, chunk_size)]


class _TokenLogps(torch.autograd.Function):
    """Logit rows (N, V), the segments of response rows, their targets (M,) → log p (M,), log(1 − p) (M,)."""

    @staticmethod
    def forward(ctx, logits2d, targets, segments, want_log1m):
        compute = torch.promote_types(logits2d.dtype, torch.float32)
        logp = torch.empty(targets.numel(), dtype=compute, device=logits2d.device)
        lse = torch.empty_like(logp)
        lse_other = torch.empty_like(logp) if want_log1m else None
        k = 0  # position of the segment's first row among the response rows
        for start, end in segments:
            x = logits2d[start:end].to(compute)  # a view when the logits are already float32
            n = end - start
            tgt = targets[k:k + n, None]
            lse[k:k + n] = torch.logsumexp(x, dim=-1)
            logp[k:k + n] = x.gather(1, tgt).squeeze(1)
            if want_log1m:
                # log(1 − p_y) = logsumexp over the other tokens − logsumexp over all: exact even when
                # p_y → 1, where log1p(−exp(log p)) has lost every digit.
                lse_other[k:k + n] = torch.logsumexp(x.scatter(1, tgt, -math.inf), dim=-1)
            k += n
        logp = (logp - lse).clamp(max=0.0)  # rounding can give +1e-7
        log1m = (lse_other - lse).clamp(min=LOG1M_FLOOR) if want_log1m else logp.new_empty(0)
        ctx.save_for_backward(logits2d, targets, lse, lse_other if want_log1m else lse)
        ctx.segments, ctx.want_log1m = segments, want_log1m
        return logp, log1m

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_logp, grad_log1m):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        logits2d, targets, lse, lse_other = ctx.saved_tensors
        grad = torch.zeros_like(logits2d)
        compute = lse.dtype
        use_log1m = ctx.want_log1m and grad_log1m is not None
        if grad_logp is None:
            grad_logp = torch.zeros_like(lse)
        if use_log1m:
            # where log(1 − p) sat on its floor the function is flat: no gradient
            grad_log1m = torch.where(lse_other - lse > LOG1M_FLOOR, grad_log1m, torch.zeros_like(grad_log1m))
        k = 0
        for start, end in ctx.segments:
            n = end - start
            x = logits2d[start:end].to(compute)  # may be a view of the logits: never modified in place
            tgt, g = targets[k:k + n, None], grad_logp[k:k + n, None]
            p = (x - lse[k:k + n, None]).exp_()
            if use_log1m:
                # d log p_y/dx = onehot_y − p;  d log(1 − p_y)/dx_j = q_j − p_j with q_j = p_j/(1 − p_y)
                # for j ≠ y and q_y = 0. Together: −(g + g1)·p + g1·q, plus g at y.
                g1 = grad_log1m[k:k + n, None]
                q = (x - lse_other[k:k + n, None]).exp_().scatter_(1, tgt, 0.0)
                p.mul_(-(g + g1)).add_(q.mul_(g1))
            else:
                p.mul_(-g)
            grad[start:end] = p.scatter_add_(1, tgt, g)
            k += n
        return grad, None, None, None


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, *, reduction: str = "sum",
                   chunk_size: int = DEFAULT_CHUNK_SIZE, return_log1m: bool = False) -> LogpsOutput:
    """Per-sequence log π(y|x) over the response tokens, without a full (B, T, V) float32 log-softmax.

    Args:
        logits: (B, T, V), any floating dtype; position t predicts token t + 1 (the shift is done here).
        labels: (B, T) long, the input ids with -100 on the prompt and the padding.
        reduction: ``sum`` over the response tokens, or ``mean`` per token (0 for a response of 0 tokens).
        chunk_size: most response tokens (rows of V logits) processed, and upcast to float32, at a time.
        return_log1m: also return Σ_t log(1 − π(y_t|x, y_<t)) (reduced the same way), for the token-level
            unlikelihood loss (Welleck et al. 2019); clamped below at ``LOG1M_FLOOR`` per token.

    Returns:
        LogpsOutput(logps (B,), num_tokens (B,) long, log1m (B,) or None), float32 (float64 for float64
        logits). Differentiable w.r.t. ``logits``.
    """
    _validate(logits, labels, reduction, chunk_size)
    b, t, v = logits.shape
    # Row r = b·T + t of the flattened logits predicts labels[b, t + 1]; the last position of each row
    # predicts nothing. Padding the shifted labels keeps rows and targets aligned without copying logits.
    shifted = torch.cat([labels[:, 1:], labels.new_full((b, 1), IGNORE_INDEX)], dim=1)
    valid = shifted != IGNORE_INDEX
    num_tokens = valid.sum(dim=1)
    flat = valid.reshape(-1)
    rows = flat.nonzero().squeeze(1)
    targets = shifted.reshape(-1)[rows]
    batch_index = torch.div(rows, t, rounding_mode="floor")
    logp, log1m = _TokenLogps.apply(logits.reshape(b * t, v), targets, _segments(flat, chunk_size), return_log1m)
    return LogpsOutput(
        logps=_reduce(logp, batch_index, num_tokens, b, reduction),
        num_tokens=num_tokens,
        log1m=_reduce(log1m, batch_index, num_tokens, b, reduction) if return_log1m else None,
    )


def response_window(labels: torch.Tensor) -> int:
    """How many final positions' logits `sequence_logps` reads for these labels.

    Position t predicts token t + 1, so the logits from one column before the batch's first labelled
    column to the end are all it needs. Passing this as a causal LM's ``logits_to_keep`` runs the LM head
    (a fifth of SmolLM2's matmul FLOPs; V·d per position) and its backward only on the response, and
    shrinks the (B, T, V) logits by the same factor; slice the labels to the same window
    (``labels[:, -keep:]``). Returns T when the first column is labelled or nothing is.
    """
    width = labels.shape[1]
    labelled = (labels != IGNORE_INDEX).any(0)
    if not labelled.any():
        return width
    first = int(labelled.nonzero()[0])
    return width - max(first - 1, 0)


def model_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor, *,
                reduction: str = "sum", return_log1m: bool = False) -> LogpsOutput:
    """`sequence_logps` of a causal LM's forward, computing logits on the response window only when the
    model's forward takes ``logits_to_keep`` (transformers' causal LMs do); else on every position."""
    keep = response_window(labels) if accepts_logits_to_keep(model) else labels.shape[1]
    kwargs = {"logits_to_keep": keep} if keep < labels.shape[1] else {}
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs).logits
    return sequence_logps(logits, labels[:, labels.shape[1] - logits.shape[1]:], reduction=reduction,
                          return_log1m=return_log1m)


@dataclass
class TokenLogpsOutput:
    """Per-token results of `model_token_logps` for the tokens from position `start` on (R = T − start):
    logps (B, R) float32; entropy (B, R) float32 or None; hidden (B, R, H), the last hidden state at the
    position that predicts each token (what a value head reads), or None."""

    logps: torch.Tensor
    entropy: torch.Tensor | None = None
    hidden: torch.Tensor | None = None


def model_token_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int, *,
                      position_ids: torch.Tensor | None = None, return_entropy: bool = False,
                      return_hidden: bool = False) -> TokenLogpsOutput:
    """log π(x_t | x_<t) of every token t ≥ `start` of a causal LM's forward, unreduced (PPO's ratios and
    per-token KL need each token). Like `model_logps`, the LM head runs on the window that is read
    (``logits_to_keep``), never on the prompt; position t − 1 predicts token t. `position_ids` are passed
    on (left-padded prompts count attended tokens only, as `generate` does)."""
    width = input_ids.shape[1] - start
    keep = width + 1 if accepts_logits_to_keep(model) else input_ids.shape[1]
    kwargs = {"logits_to_keep": keep} if keep < input_ids.shape[1] else {}
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                output_hidden_states=return_hidden, **kwargs)
    logits = out.logits[:, out.logits.shape[1] - width - 1 : -1]
    logp_all = logits.float().log_softmax(-1)  # (B, R, V): every token's value is read, and PPO's R is short
    logps = logp_all.gather(-1, input_ids[:, start:].unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1) if return_entropy else None
    hidden = out.hidden_states[-1][:, start - 1 : -1] if return_hidden else None
    return TokenLogpsOutput(logps, entropy, hidden)


_ACCEPTS: dict[type, bool] = {}


def accepts_logits_to_keep(model) -> bool:
    """Whether the innermost model's forward has a ``logits_to_keep`` argument (through PEFT and DDP)."""
    import inspect

    inner = model
    while True:
        if hasattr(inner, "module") and isinstance(inner.module, torch.nn.Module):
            inner = inner.module  # DDP / accelerate wrappers
        elif hasattr(inner, "get_base_model"):
            inner = inner.get_base_model()  # PEFT: its forward takes **kwargs and passes them on
        else:
            break
    cls = type(inner)
    if cls not in _ACCEPTS:
        try:
            _ACCEPTS[cls] = "logits_to_keep" in inspect.signature(cls.forward).parameters
        except (TypeError, ValueError):
            _ACCEPTS[cls] = False
    return _ACCEPTS[cls]


def naive_sequence_logps(logits: torch.Tensor, labels: torch.Tensor, *, reduction: str = "sum",
                         return_log1m: bool = False) -> LogpsOutput:
    """Reference implementation: full float32 `log_softmax` over (B, T, V), then gather and mask.

    Same arguments and result as `sequence_logps`; log(1 − p) here is ``log(−expm1(log p))``, which loses
    precision as p → 1 (the chunked version is exact there). For tests and the benchmark only.
    """
    _validate(logits, labels, reduction)
    compute = torch.promote_types(logits.dtype, torch.float32)
    logits, labels = logits[:, :-1].to(compute), labels[:, 1:]
    mask = labels != IGNORE_INDEX
    token_logps = logits.log_softmax(-1).gather(2, labels.clamp(min=0).unsqueeze(2)).squeeze(2)
    token_logps = token_logps.clamp(max=0.0)
    num_tokens = mask.sum(dim=1)
    denom = num_tokens.clamp(min=1).to(compute) if reduction == "mean" else 1.0
    zero = torch.zeros_like(token_logps)
    logps = torch.where(mask, token_logps, zero).sum(-1) / denom
    log1m = None
    if return_log1m:
        token_log1m = torch.log(-torch.expm1(token_logps)).clamp(min=LOG1M_FLOOR)
        log1m = torch.where(mask, token_log1m, zero).sum(-1) / denom
    return LogpsOutput(logps=logps, num_tokens=num_tokens, log1m=log1m)
