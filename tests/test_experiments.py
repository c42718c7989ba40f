"""Runs → JSON (skip, resume, reuse, not measured, n/a), tables and figures from results/ alone.

Training and evaluation are replaced by fakes that write what the real ones write (adapter/, metrics.json)
and count their calls, so these tests check the bookkeeping in well under a second each; the notebooks'
test (test_notebooks.py) runs the real ones on the `tiny` profile.
"""
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from ulma import catalog, experiments, grid, report
from ulma.config import ConfigError, load_profile

ROOT = Path(__file__).resolve().parents[1]


class FakeRuns:
    """Stands in for ulma.trainer.train and ulma.evaluation.evaluate_run; counts calls."""

    def __init__(self):
        self.trained, self.evaluated = [], []

    def train(self, prof, method, dataset, run_dir, data_dir, resume):
        self.trained.append((method, dataset, prof.train.seed, prof.train.c, resume))
        (run_dir / "config.json").write_text(json.dumps({"method": method}))  # first, as ulma.runs.RunFolder.claim
        (run_dir / "adapter").mkdir(parents=True, exist_ok=True)
        seed = prof.train.seed
        metrics = {"train": {"loss": 1.0 + seed, "wall_time_s": 2.0, "tokens_per_s": 100.0 + seed,
                             "peak_memory_mb": 50.0, "policy_forward_calls": 4,
                             "global_step": prof.train.max_steps if prof.train.max_steps > 0 else 4,
                             "reference_forward_calls": 0}}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    def evaluate(self, run_dir, data_dir):
        self.evaluated.append(run_dir.name)
        seed = int(run_dir.name.rsplit("seed", 1)[1])
        return {"perplexity": 10.0 + seed, "preference_accuracy": 0.5 + 0.1 * seed, "judge": "minilm_harmlessness",
                "wins": 3 + seed, "ties": 1, "losses": 4 - seed, "win_rate": (3 + seed) / 8,
                "judge_info": {"accuracy": 0.75}}


@pytest.fixture
def fake(monkeypatch, tmp_path):
    runs = FakeRuns()
    monkeypatch.setattr(grid, "_train", runs.train)
    monkeypatch.setattr(grid, "_evaluate", runs.evaluate)
    monkeypatch.setenv("ULMA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ULMA_DATA_DIR", raising=False)
    return runs


@pytest.fixture
def tiny():
    return load_profile("tiny")


def _run(profile, experiment, dataset, method, seed=0, tmp=None, **kw):
    return experiments.run_one(profile, experiment, dataset, method, seed, results_dir=tmp / "results", **kw)


def test_train_false_copies_an_identical_run_and_trains_nothing(fake, tiny, tmp_path):
    """Notebooks run with train=False (`reproduce --no-train`) show 04's HH runs in 07 as training would:
    the identical run's record is copied; a run without one stays not_run, and nothing is trained."""
    _run(tiny, "04_ulma", "hh", "kto", tmp=tmp_path)
    records = experiments.run_grid(tiny, "07_efficiency", ["hh"], ["kto", "ulma"], [0],
                                   results_dir=tmp_path / "results", train=False)
    assert len(fake.trained) == 1 and [r["status"] for r in records] == ["done", "not_run"]
    assert records[0]["reused_from"] == "04_ulma/hh__kto__seed0.json"
    assert (tmp_path / "results" / "tiny" / "07_efficiency" / "hh__kto__seed0.json").exists()


def test_same_config_is_skipped_changed_config_reruns(fake, tiny, tmp_path):
    first = _run(tiny, "04_ulma", "hh", "ulma", tmp=tmp_path)
    assert first["status"] == "done" and len(fake.trained) == 1
    path = tmp_path / "results" / "tiny" / "04_ulma" / "hh__ulma__seed0.json"
    saved = json.loads(path.read_text())
    assert saved["config_hash"] == first["config_hash"] and saved["metrics"]["eval"]["perplexity"] == 10.0
    assert {"torch", "transformers", "peft", "datasets", "ulma", "python", "device"} <= set(saved["versions"])
    assert saved["config"]["train"]["seed"] == 0 and saved["timings"]["train_s"] >= 0
    assert "train_peak_rss_mb" in saved["memory"]
    assert str(tmp_path / "cache" / "runs" / "tiny" / "04_ulma" / "hh__ulma__seed0") == saved["run_dir"]

    again = _run(tiny, "04_ulma", "hh", "ulma", tmp=tmp_path)
    assert len(fake.trained) == 1 and again["config_hash"] == first["config_hash"]  # skipped

    changed = tiny.override({"learning_rate": 1e-3})
    rerun = _run(changed, "04_ulma", "hh", "ulma", tmp=tmp_path)
    assert len(fake.trained) == 2 and rerun["config_hash"] != first["config_hash"]

    _run(changed, "04_ulma", "hh", "ulma", tmp=tmp_path, force=True)
    assert len(fake.trained) == 3


def test_force_time_retrains_each_shared_run_once(fake, tiny, tmp_path):
    _run(tiny, "04_ulma", "hh", "ulma", tmp=tmp_path)
    since = experiments.now()
    _run(tiny, "04_ulma", "hh", "ulma", tmp=tmp_path, force=since)
    _run(tiny, "07_efficiency", "hh", "ulma", tmp=tmp_path, force=since)  # reuses the fresh 04 run
    assert len(fake.trained) == 2


def test_identical_run_of_another_experiment_is_reused(fake, tiny, tmp_path):
    _run(tiny, "04_ulma", "hh", "kto", tmp=tmp_path)
    reused = _run(tiny, "07_efficiency", "hh", "kto", tmp=tmp_path)
    assert len(fake.trained) == 1 and reused["status"] == "done"
    assert reused["reused_from"] == "04_ulma/hh__kto__seed0.json" and reused["experiment"] == "07_efficiency"
    assert reused["metrics"]["eval"]["perplexity"] == 10.0
    _run(tiny, "06_ablations", "hh", "ulma@c=0.5", tmp=tmp_path)
    assert fake.trained[-1][3] == 0.5


def test_interrupted_evaluation_resumes_without_retraining(fake, tiny, tmp_path, monkeypatch):
    def broken(run_dir, data_dir):
        raise KeyboardInterrupt

    monkeypatch.setattr(grid, "_evaluate", broken)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny, "04_ulma", "hh", "sft", tmp=tmp_path)
    monkeypatch.setattr(grid, "_evaluate", fake.evaluate)
    record = _run(tiny, "04_ulma", "hh", "sft", tmp=tmp_path)
    assert record["status"] == "done" and len(fake.trained) == 1 and record["timings"]["train_s"] > 0


def test_partial_run_folder_resumes_training(fake, tiny, tmp_path):
    record = _run(tiny, "04_ulma", "hh", "dpo", tmp=tmp_path)
    run_dir = tmp_path / "cache" / "runs" / "tiny" / "04_ulma" / "hh__dpo__seed0"
    (tmp_path / "results" / "tiny" / "04_ulma" / "hh__dpo__seed0.json").unlink()
    (run_dir / "metrics.json").unlink()  # as if killed mid-training: checkpoints, no final metrics
    (run_dir / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (run_dir / "checkpoints" / "checkpoint-2" / "trainer_state.json").write_text("{}")  # a save that finished
    again = _run(tiny, "04_ulma", "hh", "dpo", tmp=tmp_path)
    assert fake.trained[-1][-1] is True and again["timings"]["resumed"] is True
    assert again["config_hash"] == record["config_hash"]


def test_a_checkpoints_folder_without_a_finished_save_is_not_recorded_as_a_resume(fake, tiny, tmp_path):
    _run(tiny, "04_ulma", "hh", "dpo", tmp=tmp_path)
    run_dir = tmp_path / "cache" / "runs" / "tiny" / "04_ulma" / "hh__dpo__seed0"
    (tmp_path / "results" / "tiny" / "04_ulma" / "hh__dpo__seed0.json").unlink()
    (run_dir / "metrics.json").unlink()
    (run_dir / "checkpoints" / "checkpoint-2").mkdir(parents=True)  # killed during its first save
    again = _run(tiny, "04_ulma", "hh", "dpo", tmp=tmp_path)
    # the trainer is asked to resume (it looks, warns and starts over); the record says it did not resume
    assert fake.trained[-1][-1] is True and again["timings"]["resumed"] is False


def test_failed_run_is_recorded_and_grid_goes_on(fake, tiny, tmp_path, monkeypatch):
    def train(prof, method, dataset, run_dir, data_dir, resume):
        if method == "kto":
            raise RuntimeError("boom")
        return fake.train(prof, method, dataset, run_dir, data_dir, resume)

    monkeypatch.setattr(grid, "_train", train)
    with pytest.raises(RuntimeError, match="1 run\\(s\\) failed"):
        experiments.run_grid(tiny, "04_ulma", ["hh"], ["kto", "ulma"], [0], results_dir=tmp_path / "results")
    failed = json.loads((tmp_path / "results" / "tiny" / "04_ulma" / "hh__kto__seed0.json").read_text())
    assert failed["status"] == "failed" and "boom" in failed["reason"] and "Traceback" in failed["traceback"]
    assert (tmp_path / "results" / "tiny" / "04_ulma" / "hh__ulma__seed0.json").exists()


def test_not_applicable_and_not_measured(fake, tiny, tmp_path):
    na = _run(tiny, "04_ulma", "red_team", "dpo", tmp=tmp_path)
    assert na["status"] == "not_applicable" and "pairwise" in na["reason"]
    empty = tmp_path / "empty_data"
    empty.mkdir()
    skipped = _run(tiny, "05_golden_hh", "golden_hh", "ulma", tmp=tmp_path, data_dir=str(empty))
    assert skipped["status"] == "skipped" and "golden_hh" in skipped["reason"]
    assert fake.trained == []
    table = report.experiment_table("tiny", "05_golden_hh", tmp_path / "results")
    assert table.loc[0, "result"].startswith("not measured: golden_hh")
    assert math.isnan(table.loc[0, "perplexity"])
    table = report.experiment_table("tiny", "04_ulma", tmp_path / "results")
    assert table.loc[0, "result"].startswith("n/a: red_team has no pairwise view")


def test_tables_fold_seeds_into_mean_and_std(fake, tiny, tmp_path):
    results = tmp_path / "results"
    experiments.run_grid(tiny, "04_ulma", ["hh", "red_team"], ["ulma", "dpo"], [0, 1], results_dir=results)
    table = report.make_table("tiny", "04_ulma", results)
    assert list(table.columns[: len(report.TABLE_COLUMNS["04_ulma"])]) == report.TABLE_COLUMNS["04_ulma"]
    hh_ulma = table[(table.dataset == "hh") & (table.method == "ulma")].iloc[0]
    assert hh_ulma["seeds"] == 2 and hh_ulma["perplexity"] == pytest.approx(10.5)
    assert hh_ulma["perplexity_std"] == pytest.approx(math.sqrt(0.5)) and hh_ulma["win"] == pytest.approx(3.5)
    csv = pd.read_csv(results / "tiny" / "tables" / "04_ulma.csv")
    assert list(csv.columns) == list(table.columns) and len(csv) == 4
    md = (results / "tiny" / "tables" / "04_ulma.md").read_text()
    assert "| hh | ulma | 2 | matched | 6 | 4 | 10.5 ± 0.71 |" in md  # budget: S = 6 steps of N = 4 sequences
    assert "n/a: red_team has no pairwise view" in md
    assert md.count("\n") == 2 + 4


def test_sweeps_and_ablation_variants_come_from_data(tiny):
    variants = experiments.get_experiment("06").variants_for(tiny)
    assert variants["ulma@c=0.5"] == experiments.Variant("ulma", {"c": 0.5})
    assert variants["pointwise_dpo@beta=0.5"].overrides == {"beta": 0.5}
    assert {"sft", "positive_dpo", "negative_dpo", "negative_unlikelihood"} <= set(variants)
    fewer = tiny.override({"experiments.methods": ["sft", "ulma"]})
    assert "pointwise_dpo@c=0.5" not in experiments.get_experiment("06").variants_for(fewer)
    assert experiments.get_experiment("04").variants_for(fewer).keys() == {"base", "sft", "ulma"}  # base always


def test_run_profile_folds_overrides(tiny):
    mini = load_profile("mini")
    exp = experiments.get_experiment("04_ulma")
    prof = experiments.run_profile(mini, exp, "qa_feedback", experiments.Variant("dpo", {"beta": 0.3}), seed=2)
    assert prof.train.per_device_train_batch_size == 4  # the profile's method override
    assert prof.train.data_options == {**mini.train.data_options, "labels": "continuous"}  # dicts merge
    assert prof.train.beta == 0.3 and prof.train.seed == 2
    assert prof.experiments.method_overrides == {}


def _fake_results(tmp_path, fake, tiny):
    results = tmp_path / "results"
    for name in ("03_pointwise_dpo", "04_ulma", "05_golden_hh", "06_ablations", "07_efficiency"):
        experiments.run_grid(tiny, name, results_dir=results, data_dir="fixtures")
    experiments.write_gradient_weights(tiny, results_dir=results, methods=("sft", "ulma"))
    return results


def test_figures_are_redrawn_from_results_alone(fake, tiny, tmp_path, monkeypatch):
    results = _fake_results(tmp_path, fake, tiny)
    copy = tmp_path / "copy" / "results"
    shutil.copytree(results, copy)

    def no_training(*args, **kwargs):
        raise AssertionError("figures must not train")

    monkeypatch.setattr(grid, "_train", no_training)
    monkeypatch.setattr(grid, "_evaluate", no_training)
    import ulma.trainer

    monkeypatch.setattr(ulma.trainer, "train", no_training)
    figures = tmp_path / "copy" / "figures"
    import ulma.figures

    paths = ulma.figures.draw_figures("tiny", copy, figures)
    assert sorted(paths) == sorted(ulma.figures.expected_figures("tiny", figures))
    assert all(p.stat().st_size > 1000 for p in paths)


def test_gradient_weights_follow_methods_md(tmp_path):
    rows = experiments.gradient_weights(log_ratios=[-20.0, 0.0, 20.0], beta=0.1)
    w = {(r["method"], r["sample"], r["log_ratio"]): r["weight"] for r in rows}
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    for d in (-20.0, 0.0, 20.0):
        assert w[("pointwise_dpo", "positive", d)] == pytest.approx(0.1 * sig(-0.1 * d), abs=1e-6)
        assert w[("pointwise_dpo", "negative", d)] == pytest.approx(-0.1 * sig(0.1 * d), abs=1e-6)
        assert w[("ulma", "positive", d)] == pytest.approx(1.0)
        assert w[("ulma", "negative", d)] == pytest.approx(-0.1 * sig(0.1 * d), abs=1e-6)
        assert w[("unlikelihood", "negative", d)] == pytest.approx(-1.0)
        assert w[("negative_unlikelihood", "negative", d)] == pytest.approx(-1.0)
        assert w[("negative_unlikelihood", "positive", d)] == 0.0
        assert w[("positive_dpo", "negative", d)] == 0.0 and w[("negative_dpo", "positive", d)] == 0.0
        assert w[("dpo", "chosen", d)] == pytest.approx(0.1 * sig(-0.1 * d), abs=1e-6)
    path = experiments.write_gradient_weights("tiny", results_dir=tmp_path)
    assert path == tmp_path / "tiny" / "02_gradients" / "gradient_weights.csv"
    assert report.weights_at("tiny", 0.0, tmp_path).splitlines()[2] == "pointwise_dpo".ljust(22) + " positive  +0.0500"


def test_the_plan_counts_a_run_another_experiment_recorded_as_nothing_to_train(fake, tiny, tmp_path, capsys):
    """04's KTO run is 07's too (same config): 07's plan marks it reused (its estimate 0), `to_train` leaves
    it out, and the per-experiment line says it is copied, not run; the README's count agrees."""
    _run(tiny, "04_ulma", "hh", "kto", tmp=tmp_path)
    results = tmp_path / "results"
    planned = grid.plan(tiny, "07_efficiency", ["hh"], ["kto", "ulma"], [0], results_dir=results)
    kto, ulma = planned
    assert kto["reused"] == str(results / "tiny" / "04_ulma" / "hh__kto__seed0.json")
    assert (kto["done"], kto["estimate_s"]) == (False, 0.0) and ulma["reused"] is None
    assert grid.to_train(planned) == [ulma]
    grid.print_plan("07_efficiency", planned)
    assert "plan: 2 run(s), 0 already recorded, 1 to copy from another experiment's record, 1 to run" in capsys.readouterr().out
    assert grid.recorded_configs(results / "tiny") == {kto["config_hash"]: kto["reused"]}
    assert grid.recorded_configs(results / "tiny", force=True) == {}  # forced: nothing is reused
    progress = report.grid_progress(tiny, results)
    todo = {p["config_hash"] for p in grid.to_train(grid.plan_profile(tiny, results))}
    assert kto["config_hash"] not in todo and progress["to_train"] == len(todo) > 0


def test_a_notebook_is_out_of_date_when_a_run_it_would_copy_lands(fake, tiny, tmp_path):
    """07 shows 04's KTO run once it copies it: until then the record lives in 04's folder only, so 07's
    skip check digests it too (`reproduce --no-train` executes 07 again when 04's run lands)."""
    from ulma.reproduce import _inputs_digest, _reused_records

    results = tmp_path / "results"
    source = tmp_path / "07_efficiency.py"
    source.write_text("x = 1\n")
    root = results / "tiny"
    root.mkdir(parents=True)
    assert _reused_records(tiny, "07_efficiency", results) == []
    before = _inputs_digest(source, root, [])
    _run(tiny, "04_ulma", "hh", "kto", tmp=tmp_path)
    reused = _reused_records(tiny, "07_efficiency", results)
    assert reused == [root / "04_ulma" / "hh__kto__seed0.json"]
    assert _inputs_digest(source, root, reused) != before


def test_grid_plans_with_measured_costs_and_train_false_trains_nothing(fake, tiny, tmp_path, capsys):
    results = tmp_path / "results"
    # nothing measured yet: the plan says so, then each run's actual time is printed
    experiments.run_grid(tiny, "04_ulma", ["hh"], ["ulma"], [0], results_dir=results)
    out = capsys.readouterr().out
    assert "plan: 1 run(s), 0 already recorded, 1 to run" in out and "cost unknown" in out
    # plant measured costs. ulma: loops of 40 / 80 / 60 s over 4 steps x 4 sequences (2.5 / 5 / 3.75 s per
    # sequence, median 3.75) inside 60 / 120 / 90 s of training (setup 20 / 40 / 30, median 30); evaluations
    # of 10 pairs in 20 s (2 s a pair), 4 prompts x 8 tokens in 16 s (0.5 s a token), judge + perplexity 4 s
    for seed, train_s in ((0, 60.0), (1, 120.0), (2, 90.0)):
        path = results / "tiny" / "04_ulma" / f"hh__ulma__seed{seed}.json"
        record = json.loads(path.read_text()) if seed == 0 else {**json.loads(
            (results / "tiny" / "04_ulma" / "hh__ulma__seed0.json").read_text()), "seed": seed}
        record["timings"] = {"train_s": train_s, "eval_s": 40.0}
        record["budget"] = {"rule": "matched", "steps": 4, "sequences_per_step": 4}
        record["metrics"]["train"].update(wall_time_s=train_s * 2 / 3, global_step=4)
        record["metrics"]["eval"].update(
            test_split=tiny.eval.test_split, preference_pairs=10, num_generations=4, max_new_tokens=8,
            timings={"preference_s": 20.0, "generation_s": 16.0, "perplexity_s": 3.0, "judge_s": 1.0})
        path.write_text(json.dumps(record))
    costs = grid.measured_costs(results, "tiny")
    assert costs["ulma"] == {"setup_s": 30.0, "s_per_sequence": 3.75}
    assert costs["*"] == {"setup_s": 30.0, "s_per_sequence": 3.75, "s_per_pair": 2.0, f"pairs:{tiny.eval.test_split}": 10.0,
                          "s_per_new_token": 0.5, "other_s": 4.0}
    ev = tiny.eval  # tiny judges num_generations prompts of max_new_tokens; scores at most max_eval_samples pairs
    evaluation = min(10, ev.max_eval_samples or 10) * 2.0 + ev.num_generations * ev.max_new_tokens * 0.5 + 4.0
    assert grid.estimate_seconds(costs, "ulma", 6, 4, ev) == pytest.approx(30.0 + 6 * 4 * 3.75 + evaluation)
    assert grid.estimate_seconds(costs, "base", 0, 0, ev) == pytest.approx(evaluation)  # trains nothing
    assert grid.estimate_seconds({}, "ulma", 6, 4, ev) is None  # nothing measured
    # the same rates per dataset (only HH ran here); a dataset's own rates win over the pooled ones: another
    # dataset's ulma runs at 1 s a sequence after 10 s of setup, its evaluation 0.25 s a pair over 40 pairs
    assert costs["hh/ulma"] == costs["ulma"] and costs["hh/*"] == costs["*"]
    qa = {**costs, "qa_feedback/ulma": {"setup_s": 10.0, "s_per_sequence": 1.0},
          "qa_feedback/*": {"s_per_pair": 0.25, f"pairs:{ev.test_split}": 40.0}}
    qa_pairs = min(40, ev.max_eval_samples or 40)
    qa_evaluation = qa_pairs * 0.25 + ev.num_generations * ev.max_new_tokens * 0.5 + 4.0  # the rest: pooled
    assert grid.estimate_seconds(qa, "ulma", 6, 4, ev, "qa_feedback") == pytest.approx(
        10.0 + 6 * 4 * 1.0 + qa_evaluation)
    assert grid.estimate_seconds(qa, "ulma", 6, 4, ev, "hh") == pytest.approx(30.0 + 6 * 4 * 3.75 + evaluation)
    # a method not measured on the dataset: its own pooled rate, else the dataset's pooled one (setup: pooled)
    qa = {**costs, "qa_feedback/*": {**qa["qa_feedback/*"], "s_per_sequence": 9.0}}
    assert grid.estimate_seconds(qa, "ulma", 6, 4, ev, "qa_feedback") == pytest.approx(
        30.0 + 6 * 4 * 3.75 + qa_evaluation)
    assert grid.estimate_seconds(qa, "sft", 6, 4, ev, "qa_feedback") == pytest.approx(
        30.0 + 6 * 4 * 9.0 + qa_evaluation)
    planned = grid.plan(tiny, "04_ulma", ["hh"], ["ulma", "sft"], [0, 5], results_dir=results)
    assert [(p["method"], p["seed"], p["done"]) for p in planned] == [
        ("ulma", 0, True), ("ulma", 5, False), ("sft", 0, False), ("sft", 5, False)]
    assert planned[0]["estimate_s"] is None and all(p["estimate_s"] > evaluation for p in planned[1:])
    # a run that can only record why it cannot run costs nothing: pairwise DPO on red-team (no pairs)
    (red,) = grid.plan(tiny, "04_ulma", ["red_team"], ["dpo"], [0], results_dir=results)
    assert red["skip"].startswith("red_team has no pairwise view") and red["estimate_s"] == 0.0
    # sft has no measurement of its own: every method's rates, for its own steps and sequences
    sft = catalog.run_profile(tiny, catalog.get_experiment("04_ulma"), "hh", catalog.Variant("sft"), 0)
    steps = catalog.run_budget(tiny, catalog.get_experiment("04_ulma"), sft, "sft")
    assert planned[2]["estimate_s"] == pytest.approx(grid.estimate_seconds(
        costs, "sft", steps["steps"], steps["sequences_per_step"], ev))
    # ... and the plan says so beside its estimate; ulma's own rates leave nothing to note
    assert planned[2]["estimate_gaps"] == ["no sft run measured: other methods' rate"]
    assert planned[1]["estimate_gaps"] == []
    costs_without_generation = {k: {n: v for n, v in c.items() if n != "s_per_new_token"} for k, c in costs.items()}
    assert grid.estimate_gaps(costs_without_generation, "base", ev) == ["generation not measured yet: not counted"]

    trained = len(fake.trained)
    records = experiments.run_grid(tiny, "04_ulma", ["hh"], ["ulma", "sft"], [0], results_dir=results, train=False)
    assert len(fake.trained) == trained and not capsys.readouterr().out  # nothing trained, nothing planned
    assert records[0]["status"] == "done" and records[1]["status"] == "not_run"
    experiments.run_grid(tiny, "04_ulma", ["hh"], ["ulma", "sft"], [0], results_dir=results)
    out = capsys.readouterr().out
    assert f"1 already recorded, 1 to run (≈ {planned[2]['estimate_s'] / 60:.1f} min)" in out
    assert "(no sft run measured: other methods' rate)" in out
    assert len(fake.trained) == trained + 1


def test_the_grid_produces_a_base_row(tiny, tmp_path, monkeypatch):
    """`base` (registry runner "none") is evaluated as is: a run folder without weights, a done record."""
    monkeypatch.setenv("ULMA_CACHE_DIR", str(tmp_path / "cache"))
    evaluated = []

    def evaluate(run_dir, data_dir):
        evaluated.append(json.loads((run_dir / "config.json").read_text())["method"])
        return {"perplexity": 12.0}

    monkeypatch.setattr(grid, "_evaluate", evaluate)
    record = experiments.run_one(tiny, "04_ulma", "hh", "base", 0, results_dir=tmp_path / "results", data_dir="fixtures")
    assert record["status"] == "done" and evaluated == ["base"]
    assert record["metrics"]["train"] == {"global_step": 0, "wall_time_s": 0.0, "trained": False}
    assert record["base_method"] == "base" and record["config"]["rlhf"] is None


def test_a_partial_run_without_config_is_restarted_not_refused(fake, tiny, tmp_path):
    """A run folder interrupted by an older version (checkpoints, no config.json) under the right marker."""
    first = _run(tiny, "04_ulma", "hh", "ulma", tmp=tmp_path)
    run_dir = tmp_path / "cache" / "runs" / "tiny" / "04_ulma" / "hh__ulma__seed0"
    for name in ("config.json", "metrics.json", "ULMA_TRAIN_MEASURED.json"):
        (run_dir / name).unlink()
    shutil.rmtree(run_dir / "adapter")
    (run_dir / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    again = _run(tiny, "04_ulma", "hh", "ulma", tmp=tmp_path, force=True)
    assert again["status"] == "done" and again["config_hash"] == first["config_hash"]
    assert fake.trained[-1][-1] is False and not (run_dir / "checkpoints").exists()  # started over, no resume


def test_records_of_the_paper_budget_are_read_and_labelled_with_it():
    """The first mini records (HH, one seed, tests/fixtures/old_protocol/: trained by epochs before budgets
    were matched, since removed from results/): the report reads them, labels them `paper (same epochs)`
    with the steps they took, and flags the runs whose objective did not move. Their config hashes differ
    from the current protocol's (the grid reruns them), none by accident."""
    from ulma import catalog, store

    old = ROOT / "tests" / "fixtures" / "old_protocol"
    table = report.experiment_table("mini", "04_ulma", old)
    hh = table[table["dataset"] == "hh"]
    assert list(hh["method"]) == list(catalog.ALL_METHODS) and hh["perplexity"].notna().all()
    assert set(hh["budget"]) == {"paper (same epochs)"}
    steps = dict(zip(hh["method"], hh["steps"]))
    assert steps["sft"] == 32 and steps["ulma"] == 64  # the unequal budget the matched rule removes
    flagged = hh[hh["result"].str.startswith(report.DID_NOT_TRAIN)]
    assert "pointwise_dpo" in set(flagged["method"])  # loss 1.3864 -> 1.3869: did not train
    prof = store.as_profile("mini")
    r = json.loads((old / "mini" / "04_ulma" / "hh__ulma__seed0.json").read_text())
    key = grid._identify(prof, catalog.get_experiment("04_ulma"), "hh", "ulma", 0, "results", r["data_dir"])[4]
    assert key != r["config_hash"]


def test_matched_budget_gives_every_method_the_same_steps_and_sequences(tiny):
    mini = load_profile("mini")
    assert mini.experiments.budget == "matched"
    exp = experiments.get_experiment("04_ulma")
    steps, sequences = {}, {}
    for method in ("sft", "dpo", "pointwise_dpo", "ulma", "kto", "rlhf"):
        run = experiments.run_profile(mini, exp, "hh", experiments.Variant(method), 0)
        budget = catalog.run_budget(mini, exp, run, method)
        steps[method], sequences[method] = budget["steps"], budget["sequences_per_step"]
        if method != "rlhf":
            assert run.train.max_steps == budget["steps"]
    # S = 256 pairs x 2 point-wise rows x 1 epoch / 8 sequences = 64; DPO 4 pairs = 8 sequences
    assert set(steps.values()) == {64} and set(sequences.values()) == {8}
    assert experiments.run_profile(mini, exp, "hh", experiments.Variant("dpo"), 0).train.per_device_train_batch_size == 4
    assert experiments.run_profile(mini, exp, "hh", experiments.Variant("rlhf"), 0).rlhf.ppo_steps == 64
    # the paper's protocol as a named variant: same epochs, no step count set
    paper = mini.override({"experiments.budget": "paper"})
    run = experiments.run_profile(paper, exp, "hh", experiments.Variant("sft"), 0)
    assert run.train.max_steps == -1 and catalog.run_budget(paper, exp, run, "sft")["label"] == "paper (same epochs)"
    with pytest.raises(ConfigError, match="experiments.budget"):
        mini.override({"experiments.budget": "same"})
    odd = mini.override({"train.per_device_train_batch_size": 7})
    with pytest.raises(ValueError, match="must be even"):
        catalog.budget_overrides(odd, "dpo")


def test_base_row_comes_first_and_calibration_uses_a_validation_slice(tiny):
    for name in ("03_pointwise_dpo", "04_ulma", "05_golden_hh", "06_ablations"):
        assert list(experiments.get_experiment(name).variants_for(tiny))[0] == "base", name
    mini = load_profile("mini")
    cal = experiments.get_experiment("06_calibration")
    variants = cal.variants_for(mini)
    # lr {2e-4, 5e-4} x beta {0.1, 0.5, 1, 2}, each family's own value among them (DPO 0.1, point-wise 1.0):
    # every grid value is listed, so the grid stays the same after its choice becomes the default
    assert sum(label.startswith("dpo@") for label in variants) == 2 * 4
    assert sum(label.startswith("pointwise_dpo@") for label in variants) == 2 * 4
    chosen = mini.override({"experiments.method_overrides": {"pointwise_dpo": {"beta": 0.5}}, "learning_rate": 5e-4})
    assert set(cal.variants_for(chosen)) == set(variants)
    assert variants["pointwise_dpo@learning_rate=0.0005,beta=1"].overrides == {"learning_rate": 5e-4, "beta": 1.0}
    run = experiments.run_profile(mini, cal, "hh", variants["dpo@learning_rate=0.0005,beta=2"], 0)
    assert run.eval.test_split == "mini_valid" and run.train.train_split == "mini_train"
    assert run.train.max_steps == 32 and run.train.learning_rate == 5e-4 and run.train.beta == 2.0  # half of S


def test_validation_slice_is_the_tail_of_mini_train_and_never_mini_test():
    from ulma import data

    hh_train = data.load("hh", "pairwise", "mini_train", "fixtures")
    valid = data.load("hh", "pairwise", "mini_valid", "fixtures")
    test = data.load("hh", "pairwise", "mini_test", "fixtures")
    prompts = lambda rows: {json.dumps(r["prompt"]) + r["chosen"] for r in rows}  # noqa: E731
    assert len(valid) >= 1 and prompts(valid) <= prompts(hh_train) and not prompts(valid) & prompts(test)
    # the runs train on mini_train's first max_train_examples (24 at tiny): none of them is a validation row
    trained = hh_train.filter(lambda r: r["source_index"] < load_profile("tiny").train.max_train_examples)
    assert not prompts(valid) & prompts(trained)


def test_tables_flag_a_run_that_did_not_train(fake, tiny, tmp_path):
    results = tmp_path / "results"
    experiments.run_grid(tiny, "04_ulma", ["hh"], ["ulma", "pointwise_dpo"], [0], results_dir=results)
    path = results / "tiny" / "04_ulma" / "hh__pointwise_dpo__seed0.json"
    record = json.loads(path.read_text())
    # point-wise DPO's committed mini run: 2 ln 2 barely moved, rewards ~0.002
    record["metrics"]["train"]["objective"] = {"start": {"loss": 1.3864, "rewards/positive": 0.0},
                                               "end": {"loss": 1.3869, "rewards/positive": 0.002}}
    path.write_text(json.dumps(record))
    ulma_path = results / "tiny" / "04_ulma" / "hh__ulma__seed0.json"
    record = json.loads(ulma_path.read_text())
    record["metrics"]["train"]["objective"] = {"start": {"loss": 2.5}, "end": {"loss": 2.0}}
    ulma_path.write_text(json.dumps(record))
    table = report.experiment_table("tiny", "04_ulma", results).set_index("method")
    assert table.loc["pointwise_dpo", "result"].startswith("did not train (1 of 1 seeds)")
    assert table.loc["ulma", "result"] == "ok"


def test_calibration_choice_follows_the_stated_rule():
    """Per family: trained runs only, highest headline accuracy, then lower perplexity, then smaller β, lr."""
    table = pd.DataFrame([
        # point-wise DPO: the best accuracy (0.70) did not train -> excluded; 0.62 twice -> lower perplexity
        ("pointwise_dpo@learning_rate=0.0002,beta=0.1", 2e-4, 0.1, 0.70, 15.0, "did not train (1 of 1 seeds): x"),
        ("pointwise_dpo@learning_rate=0.0002,beta=1", 2e-4, 1.0, 0.62, 14.0, "ok"),
        ("pointwise_dpo@learning_rate=0.0005,beta=2", 5e-4, 2.0, 0.62, 13.5, "ok"),
        ("pointwise_dpo@learning_rate=0.0005,beta=0.5", 5e-4, 0.5, 0.55, 12.0, "ok"),
        # DPO: a tie on both measurements -> the smaller beta
        ("dpo@learning_rate=0.0002,beta=0.5", 2e-4, 0.5, 0.60, 14.0, "ok"),
        ("dpo@learning_rate=0.0002,beta=0.1", 2e-4, 0.1, 0.60, 14.0, "ok"),
        # SFT: nothing trained -> no values
        ("sft@learning_rate=0.0002", 2e-4, 0.1, 0.5, 14.0, "did not train (1 of 1 seeds): y"),
    ], columns=["method", "learning_rate", "beta", "preference_accuracy_headline", "perplexity", "result"])
    chosen = report.calibration_choice(table).set_index("method")
    assert chosen.loc["pointwise_dpo", ["learning_rate", "beta", "perplexity"]].tolist() == [5e-4, 2.0, 13.5]
    assert chosen.loc["pointwise_dpo", "runs"] == 4 and chosen.loc["pointwise_dpo", "trained"] == 3
    assert chosen.loc["dpo", "beta"] == 0.1
    assert chosen.loc["sft", "trained"] == 0 and math.isnan(chosen.loc["sft", "beta"])


def test_changed_data_changes_the_config_hash(tiny, tmp_path):
    """The config hash covers the content of the data read (not its folder's name): a copy of the same
    files gives the same hash, one changed row gives another, so changed data never reuses a result."""
    from ulma import store
    from ulma.data import FIXTURES_DIR

    copy = tmp_path / "data"
    shutil.copytree(FIXTURES_DIR, copy)
    same = store.config_hash(store.resolved_config(tiny, "ulma", "hh", str(copy)))
    assert same == store.config_hash(store.resolved_config(tiny, "ulma", "hh", str(FIXTURES_DIR)))
    assert all(store.data_fingerprints("hh", ("train", "test"), str(copy)).values())
    target = next((copy / "hh-rlhf" / "harmless-base").glob("test*"))
    import gzip
    raw = gzip.decompress(target.read_bytes()) if target.suffix == ".gz" else target.read_bytes()
    raw = raw.replace(b"Assistant:", b"Assistant: ", 1)
    target.write_bytes(gzip.compress(raw) if target.suffix == ".gz" else raw)
    changed = store.config_hash(store.resolved_config(tiny, "ulma", "hh", str(copy)))
    assert changed != same


def test_batch_sizes_of_no_grad_passes_are_not_part_of_a_runs_identity(tiny):
    """eval/generation/reference batch sizes change the speed only: the hash stays (no rerun); a setting that
    changes what is computed (how many prompts are judged, length grouping of training batches) changes it."""
    from ulma import store

    def key(**overrides):
        prof = tiny.override({**{f"eval.{k}": v for k, v in overrides.items() if k != "train"},
                              **overrides.get("train", {})})
        return store.config_hash(store.resolved_config(prof, "ulma", "hh", "fixtures"))

    base = key()
    assert key(eval_batch_size=3) == key(generation_batch_size=5) == base
    assert key(train={"train.reference_batch_size": 7}) == base
    assert key(num_generations=3) != base
    assert key(train={"train.group_by_length": True}) != base


def test_records_and_notebook_parameters_carry_no_machine_path(tmp_path):
    """Paths kept in records are relative to the repository, or ~/ under the home folder."""
    from ulma.files import REPO_ROOT, portable_path

    assert portable_path(REPO_ROOT / "data" / "hh-rlhf") == "data/hh-rlhf"
    assert portable_path(Path.home() / ".cache" / "ulma") == "~/.cache/ulma"
    assert portable_path("bundled") == "bundled" and portable_path(None) is None
    assert portable_path(REPO_ROOT / "results") == "results"


def test_claim_runs_get_the_claim_seeds_and_the_rest_one(tiny):
    """The protocol's >= 3 seeds for the runs a claim compares, >= 1 for the rest: trained plain methods
    on a claim's dataset get `claim_seeds` too; the base model (nothing to train), a dataset no claim
    reads and a sweep variant keep the profile's seeds."""
    prof = tiny.override({"experiments.seeds": [0], "experiments.claim_seeds": [1, 2]})
    main = experiments.get_experiment("04_ulma")
    assert grid.run_seeds(prof, main, "hh", "ulma") == [0, 1, 2]
    assert grid.run_seeds(prof, main, "hh", "dpo") == [0, 1, 2]
    assert grid.run_seeds(prof, main, "hh", "base") == [0]
    assert grid.run_seeds(prof, main, "red_team", "ulma") == [0]  # no claim reads red-team
    ablations = experiments.get_experiment("06_ablations")
    sweep = next(label for label in ablations.variants_for(prof) if "@" in label)
    assert grid.run_seeds(prof, ablations, "hh", sweep) == [0]
    planned = grid.plan(prof, "04_ulma", ["hh"], ["base", "ulma"])
    assert [(p["method"], p["seed"]) for p in planned] == [("base", 0), ("ulma", 0), ("ulma", 1), ("ulma", 2)]
    with pytest.raises(ConfigError, match="experiments.claim_seeds"):
        tiny.override({"experiments.claim_seeds": [-1]})


def test_binary_qa_labels_run_beside_the_continuous_ones_on_qa_feedback_only(tiny):
    """The continuous-vs-binary claim's other arm: 03 runs point-wise DPO on QA-feedback's binary view too,
    with the claim seeds (only a data option differs), and on no other dataset (HH has no `labels`)."""
    prof = tiny.override({"experiments.seeds": [0], "experiments.claim_seeds": [1, 2]})
    exp = experiments.get_experiment("03_pointwise_dpo")
    label = "pointwise_dpo@labels=binary"
    binary = exp.variant(label, prof)
    assert binary.method == "pointwise_dpo" and binary.datasets == ("qa_feedback",)
    assert grid.run_seeds(prof, exp, "qa_feedback", label) == [0, 1, 2]
    planned = grid.plan(prof, exp.name, ["hh", "qa_feedback"], ["pointwise_dpo", label])
    assert [(p["dataset"], p["method"]) for p in planned if p["seed"] == 0] == [
        ("hh", "pointwise_dpo"), ("qa_feedback", "pointwise_dpo"), ("qa_feedback", label)]
    runs = {p["method"]: experiments.run_profile(prof, exp, "qa_feedback", exp.variant(p["method"], prof), 0)
            for p in planned if p["dataset"] == "qa_feedback"}
    assert runs[label].train.data_options["labels"] == "binary"  # the variant wins over 03's continuous default
    assert runs["pointwise_dpo"].train.data_options["labels"] == "continuous"
    with pytest.raises(ValueError, match="qa_feedback only, not 'hh'"):
        grid.run_one(prof, exp.name, "hh", label, 0)


def test_a_missing_local_copy_is_named_by_its_repository_path():
    """The reason a skipped run records (Golden HH offline) is committed: it names the repository's
    folder, never the machine's."""
    why = grid.dataset_unavailable("golden_hh", "sft", "mini_train", str(ROOT / "data"), {})
    if why is None:
        pytest.skip("this checkout holds a copy of Golden HH")
    assert why.startswith("no local file data/hh-golden/") and str(ROOT) not in why


def test_the_mini_profile_holds_the_calibrations_choice():
    """The protocol: the calibration picks each family's learning rate and β on mini_valid, and the mini
    profile trains every member of the family with them (docs/EXPERIMENTS.md, Calibration). A new
    calibration record that changes the choice fails here until mini.yaml follows it."""
    from ulma.config import train_config_for

    table, choice = report.calibration_tables("mini")
    if table.empty:
        pytest.skip("no committed calibration runs")
    prof = load_profile("mini")
    assert set(choice["method"]) == set(catalog.CALIBRATION_FAMILIES)
    for row in choice.itertuples():
        assert row.trained > 0, f"no run of {row.method}'s family trained"
        for method in catalog.CALIBRATION_FAMILIES[row.method]:
            cfg = train_config_for(prof, method)
            assert math.isclose(cfg.learning_rate, row.learning_rate), (method, cfg.learning_rate, row.learning_rate)
            if row.method != "sft":  # SFT's family takes the learning rate alone
                assert math.isclose(cfg.beta, row.beta), (method, cfg.beta, row.beta)


def test_calibration_tables_are_written_with_the_choice(tmp_path):
    """Notebook 06 writes the calibration table and the rule's choice beside it (from the committed
    records of mini's calibration; a folder without them gives empty tables and writes nothing)."""
    root = Path(__file__).resolve().parents[1] / "results" / "mini"
    if not (root / "06_calibration").is_dir():
        pytest.skip("no committed calibration runs")
    shutil.copytree(root / "06_calibration", tmp_path / "mini" / "06_calibration")
    table, choice = report.calibration_tables("mini", tmp_path, write=True)
    assert len(table) == len(list((root / "06_calibration").glob("*.json")))
    assert set(choice["method"]) == {label.split("@")[0] for label in table["method"]}
    written = pd.read_csv(tmp_path / "mini" / "tables" / "06_calibration_choice.csv")
    assert list(written["method"]) == list(choice["method"])
    empty, _ = report.calibration_tables("mini", tmp_path / "none", write=True)
    assert empty.empty and not (tmp_path / "none").exists()
