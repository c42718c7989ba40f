"""Statistics for comparing methods from stored per-prompt results: pure functions on numpy arrays.

* `paired_bootstrap`: a 95 % CI of any effect of aligned per-(seed, prompt) values (a difference of
  means, of perplexities, of length-controlled win rates, a difference of differences) by
  `scipy.stats.bootstrap`. **Clusters**: the values of a comparison form a seeds × prompts table (the
  same test prompts are scored in every seed's run, and method A's row s, column p is paired with
  method B's row s, column p). With one seed the test prompts are resampled (a paired bootstrap over
  prompts). With two or more seeds, seeds and prompts are resampled *independently* (the two-way
  "pigeonhole" bootstrap for crossed random effects, Owen 2007, Ann. Appl. Stat. 1(2)): each prompt
  keeps its values from every resampled seed, so the interval covers both the finite test set and
  the run-to-run spread of training, and it is conservative when either factor is small. The same
  resampled indices are applied to every method of a comparison (pairing).
* `mean_difference`, `win_rate`: the common cases of the above; `independent_difference`: two
  independent samples of one value per run (costs), each resampled on its own.
* `length_controlled_win_rate`: the judge's verdict regressed on the reply-length difference by a
  logistic regression (maximum likelihood by Newton's method), read at a zero difference, as
  length-controlled AlpacaEval does (Dubois et al. 2024). Ties enter as half a win and half a loss
  (the fractional target 0.5 of the log-likelihood), never dropped.
* `did_not_train`: whether a run's objective moved between its start and end, against named thresholds.

Verdict values: ``win`` = 1, ``tie`` = 0.5, ``lose`` = 0 (`VERDICT_VALUE`).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import stats as _scipy_stats

VERDICT_VALUE = {"win": 1.0, "tie": 0.5, "lose": 0.0}
CONFIDENCE = 0.95
N_RESAMPLES = 9999  # scipy.stats.bootstrap's default
N_RESAMPLES_LC = 1000  # each resample refits a logistic regression per method (~2 ms each); Efron & Tibshirani
# (1993) advise >= 1000 resamples for percentile intervals

# --- did-not-train thresholds (a run is flagged when NO signal moved past its threshold) -------------
# Loss: a change of 1 % of max(|loss at start|, 1). Above 1 that is relative: SFT's NLL (~2.5 nats per
# token on mini) must fall by 0.025, point-wise DPO's 2 ln 2 ≈ 1.39 by 0.014, i.e. a margin between the
# positive and negative rewards of ~0.03 (each −log σ(±r) term moves by about r/2). Below 1 it is an
# absolute 0.01 nats: DPO's ln 2 ≈ 0.69 then needs a mean margin of ~0.02, and losses that sit near 0
# (the unlikelihood "ascent" loss is a difference of two log-probs) have no relative scale at all.
MIN_RELATIVE_LOSS_CHANGE = 0.01
LOSS_SCALE_FLOOR = 1.0
# Implicit rewards and their margins (β·log π_θ/π_ref): 0.01 nats of reward is, at β = 0.1, a 0.1-nat
# (~10 %) change of a reply's probability relative to the reference; below it the rewards have not
# separated. Point-wise DPO's mini run moved its rewards by 0.002.
MIN_REWARD_CHANGE = 0.01
# KL to the reference at the end (nats): below 0.01 the policy's replies are, on average, within ~1 % of
# the reference's log-probability per reply: PPO that ended there did not move.
MIN_KL = 0.01


# ------------------------------------------------------------------------------------------ bootstrap
@dataclass(frozen=True)
class BootstrapResult:
    """A point estimate (on the data as observed), its CI and what it was computed from."""

    estimate: float
    ci_low: float
    ci_high: float
    confidence: float
    n_seeds: int
    n_prompts: int
    n_resamples: int
    resampled: str  # "prompts" | "seeds x prompts" | "none (degenerate)"

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _as_table(values, name: str) -> np.ndarray:
    """Values as a float array of shape (seeds, prompts, ...): a 1-D array is one seed."""
    array = np.asarray(values, dtype=float)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim < 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{name} must be (prompts,) or (seeds, prompts[, k]) with at least one value; got shape "
                         f"{array.shape}")
    return array


def paired_bootstrap(arrays: Sequence[Any], effect: Callable[..., float], *, confidence: float = CONFIDENCE,
                     n_resamples: int = N_RESAMPLES, seed: int = 0, method: str = "percentile") -> BootstrapResult:
    """A CI of ``effect(*arrays)`` resampling seeds and prompts as clusters (module docstring).

    `arrays`: one array per method (or per method × dataset), each of shape (prompts,) or (seeds,
    prompts[, k]), aligned: row s / column p is the same seed / test prompt in all of them. `effect`
    receives the arrays restricted to the resampled rows and columns (same shape rank) and returns a
    float. `method`: scipy's ``percentile`` (default: defined even when every value is equal, where BCa
    is not) or ``BCa``. A table of one prompt cannot be resampled: the CI is then NaN.
    """
    tables = [_as_table(a, f"arrays[{i}]") for i, a in enumerate(arrays)]
    if not tables:
        raise ValueError("paired_bootstrap needs at least one array")
    shape = tables[0].shape[:2]
    for i, t in enumerate(tables[1:], 1):
        if t.shape[:2] != shape:
            raise ValueError(f"arrays are not aligned: arrays[0] has (seeds, prompts) = {shape}, arrays[{i}] has "
                             f"{t.shape[:2]}")
    n_seeds, n_prompts = shape
    estimate = float(effect(*tables))

    def statistic(*indices):
        s = indices[0].astype(int) if n_seeds > 1 else np.zeros(1, dtype=int)
        p = indices[-1].astype(int)
        return effect(*(t[s][:, p] for t in tables))

    if n_prompts < 2:
        return BootstrapResult(estimate, math.nan, math.nan, confidence, n_seeds, n_prompts, 0, "none (one prompt)")
    samples = (np.arange(n_seeds), np.arange(n_prompts)) if n_seeds > 1 else (np.arange(n_prompts),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", _scipy_stats.DegenerateDataWarning)
        result = _scipy_stats.bootstrap(samples, statistic, paired=False, vectorized=False,
                                        n_resamples=n_resamples, confidence_level=confidence, method=method,
                                        rng=np.random.default_rng(seed))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return BootstrapResult(estimate, low, high, confidence, n_seeds, n_prompts, n_resamples,
                           "seeds x prompts" if n_seeds > 1 else "prompts")


def independent_difference(a, b, *, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES, seed: int = 0,
                           method: str = "percentile") -> BootstrapResult:
    """mean(a) − mean(b) of two independent samples (one value per run: wall time, peak memory), each
    resampled on its own (`scipy.stats.bootstrap`, ``paired=False``). An interval needs ≥ 2 values in
    each sample: with fewer the CI is NaN (``resampled`` says so). ``n_seeds`` is the smaller sample."""
    x, y = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if x.size == 0 or y.size == 0:
        raise ValueError(f"independent_difference needs values in both samples; got {x.size} and {y.size}")
    estimate = float(x.mean() - y.mean())
    n = int(min(x.size, y.size))
    if n < 2:
        return BootstrapResult(estimate, math.nan, math.nan, confidence, n, 0, 0, "none (fewer than 2 runs)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", _scipy_stats.DegenerateDataWarning)
        result = _scipy_stats.bootstrap((x, y), lambda u, v: _mean(u) - _mean(v), paired=False, vectorized=False,
                                        n_resamples=n_resamples, confidence_level=confidence, method=method,
                                        rng=np.random.default_rng(seed))
    return BootstrapResult(estimate, float(result.confidence_interval.low), float(result.confidence_interval.high),
                           confidence, n, 0, n_resamples, "runs")


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x))


def mean_difference(a, b, **kwargs) -> BootstrapResult:
    """mean(a) − mean(b) of paired per-(seed, prompt) values (e.g. verdict values 1/½/0 of two methods)."""
    return paired_bootstrap([a, b], lambda x, y: _mean(x) - _mean(y), **kwargs)


def win_rate(verdicts, **kwargs) -> BootstrapResult:
    """The win rate counting a tie as ½ (the mean of verdict values) with its bootstrap CI. `verdicts`:
    values 1/0.5/0 or the strings ``win``/``tie``/``lose``, shape (prompts,) or (seeds, prompts)."""
    return paired_bootstrap([verdict_values(verdicts)], _mean, **kwargs)


def verdict_values(verdicts) -> np.ndarray:
    """``win``/``tie``/``lose`` (or numbers already) as 1 / 0.5 / 0; anything else is an error."""
    array = np.asarray(verdicts, dtype=object)
    flat = [VERDICT_VALUE.get(v, v) if isinstance(v, str) else v for v in array.ravel()]
    bad = [v for v in flat if isinstance(v, str) or v is None or float(v) not in (0.0, 0.5, 1.0)]
    if bad:
        raise ValueError(f"verdicts must be win/tie/lose or 1/0.5/0; got {bad[:3]!r}")
    return np.asarray(flat, dtype=float).reshape(array.shape)


def log_perplexity(nll, tokens) -> float:
    """log of exp(Σ NLL / Σ tokens): the token-weighted log-perplexity of a set of replies."""
    total = float(np.sum(tokens))
    if total <= 0:
        raise ValueError("log_perplexity needs at least one token")
    return float(np.sum(nll)) / total


# -------------------------------------------------------------------------- length-controlled win rate
def _logistic_loss(params: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Negative log-likelihood of logit P(win) = a + b·x with fractional targets y, plus the slope ridge;
    and its gradient. log σ(z) = −logaddexp(0, −z) keeps it finite for any z."""
    a, b = params
    z = a + b * x
    loss = float(np.sum(y * np.logaddexp(0.0, -z) + (1.0 - y) * np.logaddexp(0.0, z))) + 0.5 * LC_SLOPE_RIDGE * b * b
    residual = 0.5 * (1.0 + np.tanh(0.5 * z)) - y  # σ(z) − y, stable
    return loss, np.array([residual.sum(), float(residual @ x) + LC_SLOPE_RIDGE * b])


# a ridge on the standardized slope, negligible beside the n·ln 2 scale of the log-likelihood, that keeps
# the fit finite when the length gap separates wins from losses (then no maximum-likelihood slope exists)
LC_SLOPE_RIDGE = 1e-3


def length_controlled_win_rate(outcomes, length_difference) -> float:
    """P(win) at a zero length difference from a logistic regression of the verdict on the length gap.

    `outcomes`: 1 / 0.5 / 0 (win / tie / lose of the policy's reply against the reference reply);
    `length_difference`: policy reply length minus reference reply length (chars or tokens). The model is
    logit P(win) = a + b·Δ/s with s the root mean square of Δ (a scale only: Δ is not centred, so Δ = 0
    stays "equally long"), fitted by maximum likelihood (`_fit_logistic`: Newton's method with the exact
    2 × 2 Hessian; a tie is the fractional target ½, i.e. half a win and half a loss; `LC_SLOPE_RIDGE`);
    the answer is σ(a). Degenerate cases: every outcome equal -> that value (the fit would run to ±∞);
    every Δ equal to 0 -> the plain mean; every Δ equal and non-zero -> NaN (nothing says what a zero gap
    would give).
    """
    y = np.asarray(outcomes, dtype=float).ravel()
    x = np.asarray(length_difference, dtype=float).ravel()
    if y.shape != x.shape or y.size == 0:
        raise ValueError(f"outcomes and length_difference must have the same non-zero size; got {y.size} and {x.size}")
    if np.any(~np.isin(y, (0.0, 0.5, 1.0))):
        raise ValueError("outcomes must be 1 (win), 0.5 (tie) or 0 (lose)")
    if np.all(y == y[0]):
        return float(y[0])
    scale = float(np.sqrt(np.mean(x ** 2)))
    if scale == 0.0:
        return float(np.mean(y))
    if np.all(x == x[0]):
        return math.nan
    mean = float(np.mean(y))
    start = np.array([math.log(mean / (1.0 - mean)), 0.0])  # the intercept-only fit
    a, _ = _fit_logistic(start, x / scale, y)
    return float(0.5 * (1.0 + math.tanh(0.5 * a)))


def _fit_logistic(params: np.ndarray, x: np.ndarray, y: np.ndarray, *, max_iter: int = 50) -> np.ndarray:
    """The minimum of `_logistic_loss` by Newton's method with a backtracking (Armijo) line search.

    Two parameters, so the exact Hessian is a 2 × 2 solve and Newton's quadratic convergence takes a
    handful of steps; a claim's bootstrap fits 2,000 of these, and scipy's general-purpose L-BFGS-B (the
    fit before) took several times as long (`benchmarks/bench_claims.py` measures both). The loss is
    strictly convex (the slope ridge; the intercept stays bounded since the targets are not all equal and
    x is not constant), so the search converges from any start. It ends with a full step once the Newton
    decrement is tiny (quadratic convergence: the parameters are then exact to rounding), or where no step
    lowers the loss any more (the minimum, to float precision).
    """
    n = x.size
    loss, grad = _logistic_loss(params, x, y)
    for _ in range(max_iter):
        with np.errstate(over="ignore"):  # cosh overflows to inf far out, where the weight is 0 anyway
            w = 0.25 / np.cosh(0.5 * (params[0] + params[1] * x)) ** 2  # σ(z)(1 − σ(z))
        wx = w * x
        hessian = np.array([[w.sum(), wx.sum()], [wx.sum(), float(wx @ x) + LC_SLOPE_RIDGE]])
        step = np.linalg.solve(hessian, grad)
        decrement = float(grad @ step)  # g·H⁻¹g: twice the loss a full step would still gain
        if decrement <= 1e-10 * n:  # well inside the quadratic region, where the loss no longer resolves a
            return params - step    # line search: the full step, then the error is at rounding level
        t = 1.0
        while t >= 1e-10:
            candidate = params - t * step
            new_loss, new_grad = _logistic_loss(candidate, x, y)
            if new_loss <= loss - 1e-4 * t * decrement:
                break
            t *= 0.5
        else:  # no decrease left at float precision
            return params
        params, loss, grad = candidate, new_loss, new_grad
    if decrement > 1e-12 * n:
        raise RuntimeError(f"the length-controlled fit did not converge in {max_iter} Newton steps")
    return params


def lc_statistic(table: np.ndarray) -> float:
    """LC win rate of a (seeds, prompts, 2) table of (outcome, length difference): the bootstrap's statistic
    (`lc_win_rate` here, the LC claims in `ulma.claims`, which recognise it by identity)."""
    return length_controlled_win_rate(table[..., 0], table[..., 1])


def lc_win_rate(outcomes, length_difference, *, n_resamples: int = N_RESAMPLES_LC, **kwargs) -> BootstrapResult:
    """`length_controlled_win_rate` with a bootstrap CI (seeds × prompts clusters as `paired_bootstrap`)."""
    return paired_bootstrap([stack(outcomes, length_difference)], lc_statistic, n_resamples=n_resamples, **kwargs)


def stack(*columns) -> np.ndarray:
    """Per-(seed, prompt) columns (each (prompts,) or (seeds, prompts)) as one (seeds, prompts, k) table."""
    tables = [_as_table(c, f"column {i}") for i, c in enumerate(columns)]
    return np.stack(tables, axis=-1)


# ---------------------------------------------------------------------------------------- did not train
@dataclass(frozen=True)
class TrainingCheck:
    """`did_not_train`'s answer: the flag, a one-line reason, and each signal's change."""

    did_not_train: bool
    reason: str
    changes: dict[str, float] = field(default_factory=dict)


def _margins(values: Mapping[str, Any]) -> dict[str, float]:
    """The reward keys of a log entry, plus the margins derivable from them (chosen − rejected,
    positive − negative) when they are not logged."""
    out = {k: float(v) for k, v in values.items() if k.startswith("rewards/") and k != "rewards/accuracies"
           and _finite(v)}
    for good, bad in (("chosen", "rejected"), ("positive", "negative")):
        if f"rewards/{good}" in out and f"rewards/{bad}" in out:
            out.setdefault(f"rewards/{good}-{bad}", out[f"rewards/{good}"] - out[f"rewards/{bad}"])
    return out


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def did_not_train(start: Mapping[str, Any], end: Mapping[str, Any]) -> TrainingCheck:
    """Whether a run's objective failed to move: flagged when NO signal moved past its threshold.

    Signals (whichever both `start` and `end` hold): ``loss`` (relative change ≥
    `MIN_RELATIVE_LOSS_CHANGE` of max(|start|, `LOSS_SCALE_FLOOR`)); every ``rewards/*`` value and margin
    (absolute change ≥ `MIN_REWARD_CHANGE`); ``kl`` at the end (≥ `MIN_KL`). A run with none of these
    signals cannot be judged: ValueError naming what it had.
    """
    changes: dict[str, float] = {}
    moved: list[str] = []
    if _finite(start.get("loss")) and _finite(end.get("loss")):
        rel = abs(end["loss"] - start["loss"]) / max(abs(start["loss"]), LOSS_SCALE_FLOOR)
        changes["loss (relative)"] = rel
        if rel >= MIN_RELATIVE_LOSS_CHANGE:
            moved.append(f"loss {start['loss']:.4g} -> {end['loss']:.4g}")
    before, after = _margins(start), _margins(end)
    for key in sorted(set(before) & set(after)):
        delta = after[key] - before[key]
        changes[key] = delta
        if abs(delta) >= MIN_REWARD_CHANGE:
            moved.append(f"{key} {before[key]:+.4f} -> {after[key]:+.4f}")
    if _finite(end.get("kl")):
        changes["kl (end)"] = float(end["kl"])
        if abs(end["kl"]) >= MIN_KL:
            moved.append(f"kl {end['kl']:.4f}")
    if not changes:
        raise ValueError(f"did_not_train needs loss, rewards/* or kl in both start and end; got start keys "
                         f"{sorted(start)} and end keys {sorted(end)}")
    if moved:
        return TrainingCheck(False, "trained: " + "; ".join(moved), changes)
    shown = ", ".join(f"{k} {v:+.4g}" for k, v in changes.items())
    return TrainingCheck(True, f"did not train: {shown} (thresholds: loss {MIN_RELATIVE_LOSS_CHANGE:.0%} relative, "
                               f"rewards {MIN_REWARD_CHANGE}, kl {MIN_KL})", changes)
