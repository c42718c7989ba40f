"""ulma.stats: bootstrap CIs on constructed cases with known answers, the length-controlled win rate on
data with a planted length effect, and the did-not-train flag on flat and moving runs."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ulma import stats


# ------------------------------------------------------------------------------------------ bootstrap
def test_constant_difference_gives_a_degenerate_ci_at_that_value():
    a = np.linspace(0.0, 1.0, 50)
    out = stats.mean_difference(a + 0.25, a, n_resamples=999)
    assert out.estimate == pytest.approx(0.25)
    assert out.ci_low == pytest.approx(0.25) and out.ci_high == pytest.approx(0.25)
    assert (out.n_seeds, out.n_prompts, out.resampled) == (1, 50, "prompts")


def test_symmetric_differences_give_a_ci_covering_zero():
    # differences +1 and −1 in equal numbers: the mean difference is 0 and the CI is about ±2·(1/√100)
    a = np.tile([1.0, 0.0], 50)
    b = 1.0 - a
    out = stats.mean_difference(a, b, n_resamples=1999)
    assert out.estimate == 0.0
    assert -0.3 < out.ci_low < -0.1 and 0.1 < out.ci_high < 0.3


def test_ci_of_a_known_proportion_matches_the_normal_approximation():
    # 100 prompts, 70 wins: SE = sqrt(.7·.3/100) = 0.0458, so the 95 % CI is about 0.70 ± 0.090
    verdicts = ["win"] * 70 + ["lose"] * 30
    out = stats.win_rate(verdicts, n_resamples=4999)
    assert out.estimate == pytest.approx(0.70)
    assert out.ci_low == pytest.approx(0.70 - 0.0898, abs=0.015)
    assert out.ci_high == pytest.approx(0.70 + 0.0898, abs=0.015)


def test_ties_count_half_and_bad_verdicts_are_named():
    assert stats.win_rate(["win", "tie", "lose", "tie"], n_resamples=99).estimate == 0.5
    with pytest.raises(ValueError, match="win/tie/lose"):
        stats.verdict_values(["win", "draw"])


def test_seeds_and_prompts_are_both_resampled():
    # 3 seeds x 40 prompts; the seed effect (+0, +0.2, +0.4) is invisible to a prompts-only bootstrap of the
    # seed-mean but widens the two-way CI
    rng = np.random.default_rng(0)
    base = rng.normal(0.0, 0.1, size=(3, 40))
    a = base + np.array([0.0, 0.2, 0.4])[:, None]
    out = stats.mean_difference(a, np.zeros_like(a), n_resamples=1999)
    assert (out.n_seeds, out.n_prompts, out.resampled) == (3, 40, "seeds x prompts")
    prompts_only = stats.mean_difference(a.mean(0), np.zeros(40), n_resamples=1999)
    assert out.estimate == pytest.approx(prompts_only.estimate)
    assert (out.ci_high - out.ci_low) > 4 * (prompts_only.ci_high - prompts_only.ci_low)
    assert out.ci_low < out.estimate < out.ci_high


def test_misaligned_arrays_and_a_single_prompt():
    with pytest.raises(ValueError, match="not aligned"):
        stats.mean_difference(np.zeros((2, 5)), np.zeros((2, 4)))
    one = stats.mean_difference([1.0], [0.0])
    assert one.estimate == 1.0 and math.isnan(one.ci_low) and one.n_resamples == 0


def test_independent_difference_of_run_level_values():
    # wall times of 3 runs each, every ULMA run faster than every RLHF run by 700 s +- 20
    out = stats.independent_difference([520.0, 530.0, 510.0], [1240.0, 1230.0, 1250.0], n_resamples=999)
    assert out.estimate == pytest.approx(-720.0)
    assert -740.0 <= out.ci_low <= out.ci_high <= -700.0 and out.resampled == "runs"
    single = stats.independent_difference([520.0], [1240.0, 1250.0])
    assert single.estimate == pytest.approx(-725.0) and math.isnan(single.ci_low) and single.n_seeds == 1


# ------------------------------------------------------------------------------ length-controlled win rate
def _planted(n=3000, true_lc=0.4, slope=1.2, mean_gap=120.0, seed=0):
    """Verdicts whose log-odds rise with the length gap; at a zero gap P(win) = true_lc."""
    rng = np.random.default_rng(seed)
    gap = rng.normal(mean_gap, 80.0, size=n)
    logit = math.log(true_lc / (1 - true_lc)) + slope * gap / 100.0
    p = 1.0 / (1.0 + np.exp(-logit))
    return (rng.random(n) < p).astype(float), gap


def test_length_controlled_win_rate_recovers_the_planted_value():
    outcomes, gap = _planted()
    raw = outcomes.mean()
    lc = stats.length_controlled_win_rate(outcomes, gap)
    assert raw > 0.6  # longer replies inflate the raw win rate
    assert lc == pytest.approx(0.4, abs=0.04)
    # chars or tokens: a rescaled gap gives the same reading at zero
    assert stats.length_controlled_win_rate(outcomes, gap / 4.0) == pytest.approx(lc, abs=1e-6)


def test_length_controlled_win_rate_treats_ties_as_half():
    # without a length gap, the reading is the plain mean with ties worth one half
    assert stats.length_controlled_win_rate([1, 0.5, 0.5, 0], [0, 0, 0, 0]) == 0.5
    # a tie is half a win and half a loss: the data with a tie equals (in likelihood) the data doubled with
    # the tie replaced by one win and one loss at the same gap, so both fits give the same reading
    outcomes, gaps = [1, 0, 1, 0, 0.5], [10, -10, -4, 6, 5]
    doubled_outcomes = [1, 0, 1, 0] * 2 + [1, 0]
    doubled_gaps = [10, -10, -4, 6] * 2 + [5, 5]
    half = stats.length_controlled_win_rate(outcomes, gaps)
    # (to 1e-4: the slope ridge, LC_SLOPE_RIDGE, is not doubled with the data)
    assert half == pytest.approx(stats.length_controlled_win_rate(doubled_outcomes, doubled_gaps), abs=1e-4)
    assert half != pytest.approx(stats.length_controlled_win_rate(outcomes[:4], gaps[:4]), abs=1e-3)  # not dropped
    assert stats.length_controlled_win_rate([1, 1, 1], [5, 6, 7]) == 1.0  # all wins: no fit needed
    assert math.isnan(stats.length_controlled_win_rate([1, 0, 1], [5, 5, 5]))


def test_length_controlled_win_rate_agrees_with_scikit_learn():
    """An independent fit: scikit-learn's unpenalized logistic regression on the rows duplicated as a win
    of weight y and a loss of weight 1 − y (a tie: ½ and ½) gives the same intercept."""
    sklearn = pytest.importorskip("sklearn.linear_model")  # not a dependency of ulma: a cross-check only
    LogisticRegression = sklearn.LogisticRegression

    outcomes, gap = _planted(n=500, seed=2)
    outcomes[::9] = 0.5
    scale = np.sqrt(np.mean(gap ** 2))
    features = np.concatenate([gap, gap])[:, None] / scale
    labels = np.concatenate([np.ones_like(outcomes), np.zeros_like(outcomes)])
    weights = np.concatenate([outcomes, 1 - outcomes])
    keep = weights > 0
    model = LogisticRegression(C=np.inf, max_iter=1000, tol=1e-10).fit(features[keep], labels[keep],
                                                                       sample_weight=weights[keep])
    want = 1 / (1 + np.exp(-model.intercept_[0]))
    assert stats.length_controlled_win_rate(outcomes, gap) == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("case", ["mixed", "separated", "one_sided", "small"])
def test_length_controlled_fit_reaches_the_minimum(case):
    """Newton's method ends where the gradient vanishes (the ridge keeps a separated fit finite) and agrees
    with scipy's L-BFGS-B run to a far tighter tolerance than its default."""
    from scipy import optimize

    rng = np.random.default_rng(7)
    n = 6 if case == "small" else 300
    gap = rng.normal(20.0, 80.0, size=n)
    outcomes = rng.choice([0.0, 0.5, 1.0], size=n, p=[0.4, 0.1, 0.5])
    if case == "separated":  # every longer reply wins: no finite maximum-likelihood slope without the ridge
        outcomes = (gap > 0).astype(float)
    if case == "one_sided":  # wins only far out on one side
        outcomes = (gap < -100).astype(float)
    if case == "small":
        outcomes[:2] = [1.0, 0.0]
    x = gap / np.sqrt(np.mean(gap ** 2))
    mean = outcomes.mean()
    start = np.array([math.log(mean / (1 - mean)), 0.0])
    a, b = stats._fit_logistic(start, x, outcomes)
    _, grad = stats._logistic_loss(np.array([a, b]), x, outcomes)
    assert np.max(np.abs(grad)) < 1e-8
    reference = optimize.minimize(stats._logistic_loss, start, args=(x, outcomes), jac=True, method="L-BFGS-B",
                                  options={"gtol": 1e-13, "ftol": 1e-16, "maxiter": 10000}).x
    want = 1 / (1 + math.exp(-reference[0]))
    assert stats.length_controlled_win_rate(outcomes, gap) == pytest.approx(want, abs=1e-7)


def test_length_controlled_fit_says_when_it_runs_out_of_steps():
    """Too few Newton steps for a fit that needs several (a far start, a strong slope): an error, never a
    half-converged estimate returned as if it were the minimum."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=300)
    outcomes = (rng.random(300) < 1 / (1 + np.exp(-(0.5 + 2.0 * x)))).astype(float)
    start = np.array([-5.0, 0.0])
    with pytest.raises(RuntimeError, match="did not converge in 1 Newton steps"):
        stats._fit_logistic(start, x, outcomes, max_iter=1)
    a, b = stats._fit_logistic(start, x, outcomes)  # the default budget reaches it
    assert np.max(np.abs(stats._logistic_loss(np.array([a, b]), x, outcomes)[1])) < 1e-8


def test_lc_win_rate_ci_covers_the_planted_value():
    outcomes, gap = _planted(n=600, seed=1)
    out = stats.lc_win_rate(outcomes, gap, n_resamples=300)
    assert out.ci_low < 0.4 < out.ci_high and out.ci_high - out.ci_low < 0.25
    assert out.ci_high < outcomes.mean()  # the raw rate lies outside the length-controlled CI


# ---------------------------------------------------------------------------------------- did not train
def test_a_flat_run_is_flagged():
    # the mini pointwise_dpo run: loss 2 ln 2 throughout, rewards about 0.002
    start = {"loss": 1.386381, "rewards/positive": 0.00021, "rewards/negative": 0.00040}
    end = {"loss": 1.386872, "rewards/positive": 0.00218, "rewards/negative": 0.00220}
    check = stats.did_not_train(start, end)
    assert check.did_not_train and check.reason.startswith("did not train")
    assert check.changes["rewards/positive-negative"] == pytest.approx(0.00218 - 0.0022 - 0.00021 + 0.0004)


def test_a_moving_run_is_not_flagged_and_thresholds_are_boundaries():
    assert not stats.did_not_train({"loss": 2.76}, {"loss": 2.36}).did_not_train  # SFT: 14 % down
    dpo = stats.did_not_train({"loss": 0.6931, "rewards/margins": 0.0}, {"loss": 0.6931, "rewards/margins": 0.07})
    assert not dpo.did_not_train and "rewards/margins" in dpo.reason
    # exactly 1 % of the starting loss counts as moving; just under does not
    assert not stats.did_not_train({"loss": 2.0}, {"loss": 1.98}).did_not_train
    assert stats.did_not_train({"loss": 2.0}, {"loss": 1.9801}).did_not_train
    # a loss near 0 is judged on the absolute scale (1 % of 1): 0.0284 -> 0.0281 did not move
    assert stats.did_not_train({"loss": 0.02846}, {"loss": 0.02812}).did_not_train
    # PPO: only the KL to the reference tells
    assert stats.did_not_train({"kl": 0.0}, {"kl": 0.001}).did_not_train
    assert not stats.did_not_train({"kl": 0.0}, {"kl": 0.05}).did_not_train
    with pytest.raises(ValueError, match="needs loss"):
        stats.did_not_train({"epoch": 0}, {"epoch": 1})
