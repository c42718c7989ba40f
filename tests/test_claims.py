"""ulma.claims: verdicts at their boundaries, claims on constructed run records with known answers, the
ways a claim is `not measured`, and the committed mini results (which predate per-prompt storage)."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from ulma import claims, selection
from ulma.claims import Claim, evaluate_claim, evaluate_claims, verdict

IDS = [f"p{i:03d}" for i in range(400)]
MOVED = [{"loss": 0.69, "rewards/margins": 0.0, "step": 5}, {"loss": 0.55, "rewards/margins": 0.4, "step": 60}]
FLAT = [{"loss": 1.3864, "rewards/positive": 0.0002, "rewards/negative": 0.0004, "step": 5},
        {"loss": 1.3869, "rewards/positive": 0.0022, "rewards/negative": 0.0022, "step": 60}]


def _record(method, verdicts, *, seed=0, dataset="hh", experiment="04_ulma", reply_chars=None, status="done",
            history=MOVED, labels=None, scores=None, **extra):
    """A run record as experiments.run_one writes it, with per-item generations."""
    n = len(verdicts)
    reply_chars = [100] * n if reply_chars is None else list(reply_chars)
    record = {
        "method": method, "base_method": method, "dataset": dataset, "experiment": experiment, "seed": seed,
        "status": status, "overrides": {},
        "config": {"train": {"data_options": {"labels": labels} if labels else {}}},
        "timings": {"train_s": 100.0}, "memory": {},
        "metrics": {"train": {"log_history": history},
                    "eval": {"win_score": float(np.mean(verdicts)) if n else None,
                             "per_item": {"generations": {"ids": IDS[:n], "verdict": list(verdicts),
                                                          "reply_chars": reply_chars, "reference_chars": [100] * n,
                                                          "score": list(verdicts if scores is None else scores)},
                                          "pairs": {"ids": IDS[:n], "headline": list(verdicts)}}}},
    }
    record.update(extra)
    return record


def _verdicts(p_win, n=120, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random(n) < p_win).astype(float).tolist()


WIN = Claim("a_beats_b", "A beats B on HH", "hh", "win_score", "ulma", "dpo", "greater")


# ------------------------------------------------------------------------------------------- verdicts
def test_verdict_boundaries():
    assert verdict(1e-12, 0.1, "greater") == "reproduced"
    assert verdict(0.0, 0.1, "greater") == "inconclusive"  # touching 0 does not exclude "no difference"
    assert verdict(-0.1, 0.0, "greater") == "inconclusive"
    assert verdict(-0.1, -1e-12, "greater") == "contradicted"
    assert verdict(-0.1, -1e-12, "less") == "reproduced" and verdict(0.0, 0.2, "less") == "inconclusive"
    assert verdict(0.05, 0.2, "less") == "contradicted"
    with pytest.raises(ValueError, match="finite CI"):
        verdict(math.nan, 0.1, "greater")
    with pytest.raises(ValueError, match="direction"):
        verdict(0.1, 0.2, "up")


# ------------------------------------------------------------------------------ constructed records
def test_reproduced_contradicted_inconclusive_on_constructed_runs():
    strong = [_record("ulma", _verdicts(0.8, seed=s), seed=s) for s in range(3)]
    weak = [_record("dpo", _verdicts(0.3, seed=10 + s), seed=s) for s in range(3)]
    row = evaluate_claim(WIN, strong + weak, n_resamples=999)
    assert row["verdict"] == "reproduced" and row["n_seeds"] == 3 and row["n_prompts"] == 120
    want = np.mean([r["metrics"]["eval"]["win_score"] for r in strong]) - \
        np.mean([r["metrics"]["eval"]["win_score"] for r in weak])
    assert row["difference"] == pytest.approx(want)
    assert row["ci_low"] < row["difference"] < row["ci_high"] and row["ci_low"] > 0
    flipped = Claim("b", "t", "hh", "win_score", "dpo", "ulma", "greater")
    assert evaluate_claim(flipped, strong + weak, n_resamples=999)["verdict"] == "contradicted"
    same = [_record("dpo", r["metrics"]["eval"]["per_item"]["generations"]["verdict"], seed=r["seed"]) for r in strong]
    tie = evaluate_claim(WIN, strong + same, n_resamples=999)
    assert tie["difference"] == 0.0 and tie["ci_low"] == tie["ci_high"] == 0.0 and tie["verdict"] == "inconclusive"


def test_only_shared_seeds_and_prompts_are_compared():
    a = [_record("ulma", _verdicts(0.8, n=120, seed=s), seed=s) for s in range(3)]
    b = [_record("dpo", _verdicts(0.3, n=100, seed=s), seed=s) for s in range(2)]
    row = evaluate_claim(WIN, a + b, n_resamples=199)
    assert (row["n_seeds"], row["n_prompts"]) == (2, 100) and "20 prompt(s) not shared" in row["note"]


def test_length_controlled_claim_removes_a_planted_length_advantage():
    """A's replies are longer and the judge rewards length: A's raw win score beats B's, but at equal
    length both win half the time, so the length-controlled difference is near 0 and inconclusive."""
    rng = np.random.default_rng(3)
    n = 400
    gap = rng.normal(150.0, 60.0, n)  # A: 150 chars longer on average
    p_a = 1 / (1 + np.exp(-1.5 * gap / 100))  # P(win) = 0.5 at a zero gap
    a = (rng.random(n) < p_a).astype(float)
    b = (rng.random(n) < 0.5).astype(float)
    records = [_record("ulma", a, reply_chars=100 + gap), _record("dpo", b, reply_chars=[100] * n)]
    raw = evaluate_claim(WIN, records, n_resamples=999)
    lc = evaluate_claim(Claim("lc", "t", "hh", "lc_win_rate", "ulma", "dpo", "greater"), records, n_resamples=300)
    assert raw["verdict"] == "reproduced" and raw["difference"] > 0.25
    assert lc["verdict"] == "inconclusive" and abs(lc["difference"]) < 0.1
    # nearly all of A's replies are longer (gap ~ N(150, 60)): its reading at a zero gap is an extrapolation,
    # and the note says so, naming A alone (B's replies are as long as the reference: a zero gap is its data)
    assert claims.LC_EXTRAPOLATED in lc["note"] and "ulma on hh: 1% of replies no longer" in lc["note"]
    assert "dpo on hh" not in lc["note"] and claims.LC_EXTRAPOLATED not in raw["note"]
    balanced = [_record("ulma", a, reply_chars=100 + gap - 150.0), records[1]]
    assert claims.LC_EXTRAPOLATED not in evaluate_claim(
        Claim("lc", "t", "hh", "lc_win_rate", "ulma", "dpo", "greater"), balanced, n_resamples=50)["note"]


def test_not_measured_reasons():
    good = [_record("ulma", _verdicts(0.8)), _record("dpo", _verdicts(0.3))]
    assert evaluate_claim(WIN, good[:1])["verdict"] == "not measured (no run of dpo on hh)"
    skipped = _record("dpo", [], status="skipped", reason="hh cannot be loaded here")
    assert evaluate_claim(WIN, good[:1] + [skipped])["verdict"] == \
        "not measured (dpo on hh: skipped (hh cannot be loaded here))"
    failed = _record("dpo", [], status="failed", reason="RuntimeError: out of memory")
    assert "failed (RuntimeError: out of memory)" in evaluate_claim(WIN, good[:1] + [failed])["verdict"]
    flat = _record("dpo", _verdicts(0.3), history=FLAT)
    row = evaluate_claim(WIN, good[:1] + [flat])
    assert row["verdict"].startswith("not measured (dpo seed 0 did not train") and math.isnan(row["ci_low"])
    old = _record("dpo", _verdicts(0.3))
    del old["metrics"]["eval"]["per_item"]
    row = evaluate_claim(WIN, good[:1] + [old])
    assert row["verdict"].startswith("not measured (no per-prompt generations results in dpo on hh seed 0")
    assert row["note"] == f"aggregate difference without CI: {np.mean(_verdicts(0.8)) - np.mean(_verdicts(0.3)):+.4g}"
    # the base model trains nothing by design: never flagged
    base = _record("base", _verdicts(0.3), history=FLAT)
    assert evaluate_claim(Claim("x", "t", "hh", "win_score", "ulma", "base", "greater"), good[:1] + [base],
                          n_resamples=199)["verdict"] == "reproduced"


def test_family_rows_get_bonferroni_intervals_and_run_level_costs():
    records = [_record("ulma", _verdicts(0.8)), _record("dpo", _verdicts(0.3)), _record("sft", _verdicts(0.4))]
    family = [Claim(f"u_{b}", "t", "hh", "win_score", "ulma", b, "greater", family="f") for b in ("dpo", "sft")]
    rows = evaluate_claims(records, family + [WIN], n_resamples=499)
    assert [r["confidence"] for r in rows] == [pytest.approx(0.975), pytest.approx(0.975), pytest.approx(0.95)]
    assert rows[0]["ci_high"] - rows[0]["ci_low"] > rows[2]["ci_high"] - rows[2]["ci_low"]  # the wider 97.5 % CI
    cost = Claim("cheap", "t", "hh", "train_s", "ulma", "rlhf", "less")
    runs = [_record("ulma", [1, 0], seed=s, timings={"train_s": t}) for s, t in enumerate((520.0, 530.0))] + \
           [_record("rlhf", [1, 0], seed=s, timings={"train_s": t}) for s, t in enumerate((1240.0, 1250.0))]
    row = evaluate_claim(cost, runs, n_resamples=499)
    assert row["verdict"] == "reproduced" and row["difference"] == pytest.approx(-720.0) and row["n_seeds"] == 2
    assert evaluate_claim(cost, runs[:1] + runs[2:])["verdict"].startswith("not measured (an interval needs >= 2 runs")
    with pytest.raises(ValueError, match="per-prompt metric"):
        Claim("x", "t", "golden_hh", "train_s", "ulma", "rlhf", "less", baseline_dataset="hh")
    with pytest.raises(ValueError, match="unknown metric"):
        Claim("x", "t", "hh", "bleu", "ulma", "rlhf", "greater")


def test_golden_hh_claim_is_a_difference_of_differences():
    """ULMA's judge score rises by 0.20 from HH to Golden HH, SFT's by 0.05: the claimed gain is 0.15."""
    rng = np.random.default_rng(5)
    base = rng.normal(0.0, 0.3, size=(2, 150))
    noise = lambda: rng.normal(0.0, 0.02, size=150)  # noqa: E731
    records = []
    for s in range(2):
        for method, gain in (("ulma", 0.20), ("sft", 0.05)):
            records.append(_record(method, [1.0] * 150, seed=s, scores=base[s] + noise(), experiment="05_golden_hh"))
            records.append(_record(method, [1.0] * 150, seed=s, scores=base[s] + gain + noise(),
                                   dataset="golden_hh", experiment="05_golden_hh"))
    claim = next(c for c in claims.CLAIMS if c.id == "ulma_gains_more_than_sft_golden_hh")
    row = evaluate_claim(claim, records, n_resamples=999)
    assert row["difference"] == pytest.approx(0.15, abs=0.01) and row["verdict"] == "reproduced"
    assert (row["n_seeds"], row["n_prompts"]) == (2, 150)
    assert "difference of differences" in claims.reading(row)


def test_labels_select_the_qa_feedback_variant():
    claim = Claim("qa", "t", "qa_feedback", "preference_accuracy_headline", "pointwise_dpo", "pointwise_dpo",
                  "greater", labels_a="continuous", labels_b="binary")
    cont = _record("pointwise_dpo", _verdicts(0.8), dataset="qa_feedback", labels="continuous")
    binary = _record("pointwise_dpo@labels=binary", _verdicts(0.5), dataset="qa_feedback", labels="binary",
                     base_method="pointwise_dpo", overrides={"data_options": {"labels": "binary"}})
    swept = _record("pointwise_dpo@beta=0.5", _verdicts(0.9), dataset="qa_feedback", labels="binary",
                    base_method="pointwise_dpo", overrides={"beta": 0.5})
    row = evaluate_claim(claim, [cont, binary, swept], n_resamples=499)
    assert row["method_a"] == "pointwise_dpo (continuous)" and row["method_b"] == "pointwise_dpo (binary)"
    assert row["difference"] == pytest.approx(np.mean(_verdicts(0.8)) - np.mean(_verdicts(0.5)))
    assert evaluate_claim(claim, [cont, swept])["verdict"] == \
        "not measured (no run of pointwise_dpo (binary labels) on qa_feedback)"


def test_estimate_of_one_method_with_its_ci():
    runs = [_record("ulma", [1.0] * 60 + [0.0] * 40, seed=s) for s in range(2)]
    out = claims.estimate(runs, "ulma", "hh", "win_score", n_resamples=999)
    assert out["estimate"] == pytest.approx(0.6) and out["ci_low"] < 0.6 < out["ci_high"]
    assert (out["n_prompts"], out["n_seeds"]) == (100, 2)
    flat = _record("dpo", [1.0, 0.0, 0.5], history=FLAT)
    del flat["metrics"]["eval"]["per_item"]
    old = claims.estimate([flat], "dpo", "hh", "win_score")
    assert old["estimate"] == pytest.approx(0.5) and math.isnan(old["ci_low"])
    assert "did not train" in old["note"] and "no per-prompt" in old["note"]
    assert claims.estimate([], "dpo", "hh", "win_score")["note"] == "no run of dpo on hh"


def test_reading_is_computed_from_the_row():
    rows = evaluate_claims([_record("ulma", _verdicts(0.8)), _record("dpo", _verdicts(0.3))], [WIN], n_resamples=199)
    text = claims.reading(rows[0])
    assert text.startswith("A beats B on HH: reproduced") and f"{rows[0]['difference']:+.3g}" in text
    assert "120 test prompts x 1 seed(s)" in text
    missing = evaluate_claims([], [WIN])[0]
    assert claims.reading(missing) == "A beats B on HH: not measured (no run of ulma on hh)."


# ------------------------------------------------------------------------------ committed mini results
def test_the_first_mini_records_degrade_to_not_measured(tmp_path):
    """The first one-seed HH records (tests/fixtures/old_protocol/, trained before the protocol): no claim
    can be decided from them, and each row says why."""
    records = selection.load_records("mini", Path(__file__).parent / "fixtures" / "old_protocol")
    assert len(records) == 7
    rows = evaluate_claims(records)
    assert [r["claim"] for r in rows] == [c.id for c in claims.CLAIMS]
    assert all(r["verdict"].startswith("not measured (") for r in rows)
    by_id = {r["claim"]: r for r in rows}
    # the issue's finding, now computed: point-wise DPO's mini run sat at 2 ln 2
    assert "pointwise_dpo seed 0 did not train" in by_id["pointwise_dpo_ge_dpo_hh"]["verdict"]
    assert "no per-prompt" in by_id["ulma_ge_dpo_hh"]["verdict"]
    paths = claims.write_claims("mini", tmp_path, records=records)
    with open(paths["csv"]) as f:
        table = list(csv.DictReader(f))
    assert [r["claim"] for r in table] == list(by_id) and list(table[0]) == claims.COLUMNS
    assert paths["md"].read_text().count("\n") == len(rows) + 2
