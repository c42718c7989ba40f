"""ulma.figures and ulma.notebook: every figure drawn from a results folder alone, labelled for a reader, saved as PNG + PDF;
the intervals, the reading and the sample table computed from constructed run records with known answers."""
import json
import math
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from ulma import experiments, figures, notebook, readout, report

ROOT = Path(__file__).resolve().parents[1]
SNAKE = re.compile(r"\b[a-z]+_[a-z0-9_]+\b")
Z = 1.959963984540054  # the 97.5 % normal quantile


def _write(results: Path, experiment: str, dataset: str, method: str, seed: int = 0, *, status: str = "done",
           reason: str | None = None, wins: int = 32, ties: int = 0, judged: int = 64, accuracy: float = 0.6,
           pairs: int = 100, perplexity: float = 15.0, judge_accuracy: float = 0.6, history=None, generations=None,
           note: str = "", beta: float = 0.1, c: float = 0.0, train_s: float = 100.0, lc: float | None = None,
           headline: float | None = None, reward_model_accuracy: float | None = None):
    """A run record with the fields the figures read (the schema of ulma.experiments.run_one)."""
    record = {"dataset": dataset, "method": method, "base_method": method.split("@")[0], "seed": seed,
              "status": status, "reason": reason, "note": note, "config": {"train": {"beta": beta, "c": c}}}
    if status == "done":
        losses = judged - wins - ties
        record["metrics"] = {
            "eval": {"perplexity": perplexity, "preference_accuracy": accuracy, "preference_pairs": pairs,
                     "win_rate": wins / judged, "wins": wins, "ties": ties, "losses": losses,
                     "num_generations": judged, "judge_info": {"accuracy": judge_accuracy}},
            "train": {"global_step": 10, "wall_time_s": train_s, "tokens_per_s": 50.0, "peak_memory_mb": 900.0,
                      "log_history": history or []},
        }
        record["timings"] = {"train_s": train_s}
        if lc is not None:
            record["metrics"]["eval"]["lc_win_rate"] = lc
        if headline is not None:
            record["metrics"]["eval"]["preference_accuracy_headline"] = headline
        if reward_model_accuracy is not None:
            record["metrics"]["train"]["reward_model_accuracy"] = reward_model_accuracy  # as ulma.rlhf writes it
        if generations is not None:
            record["generations"] = generations
    path = experiments.result_path(results, "tiny", experiment, dataset, method, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def _history(losses, positive=None, negative=None):
    rows = []
    for i, loss in enumerate(losses):
        row = {"step": 5 * (i + 1), "loss": loss}
        if positive is not None:
            row.update({"rewards/positive": positive[i], "rewards/negative": negative[i]})
        rows.append(row)
    return rows + [{"step": 5 * len(losses), "train_runtime": 1.0, "train_loss": 0.5}]  # the summary entry


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A results folder with every experiment: HH measured, red-team not measured, no ablations."""
    root = tmp_path_factory.mktemp("results")
    experiments.write_gradient_weights("tiny", results_dir=root)
    skip = "red_team (mini_train) cannot be loaded here: no local file /data/hh-rlhf/red_team.jsonl.gz"
    for exp in ("03_pointwise_dpo", "04_ulma"):
        methods = ["sft", "dpo", "pointwise_dpo", "ulma"] if exp == "04_ulma" else ["dpo", "pointwise_dpo"]
        for i, method in enumerate(methods):
            positive = [0.01 * k for k in range(4)] if method != "sft" else None
            negative = [-0.02 * k for k in range(4)] if method != "sft" else None
            gens = [{"index": k, "prompt": f"Human: question {k}?", "reference": f"chosen {k}",
                     "generation": f"{method} reply {k}", "judge": {"verdict": "win" if k % 2 else "lose"}}
                    for k in range(4)]
            _write(root, exp, "hh", method, wins=20 + 12 * i, history=_history([2.0, 1.8, 1.7, 1.5], positive, negative),
                   generations=gens)
            _write(root, exp, "red_team", method, status="skipped", reason=skip)
    for method in ("sft", "ulma"):
        _write(root, "05_golden_hh", "hh", method)
        _write(root, "05_golden_hh", "golden_hh", method, status="skipped", reason="no offline copy of Golden HH")
    _write(root, "06_ablations", "hh", "sft", status="skipped", reason="not run yet", note="positives only")
    for method, seconds in (("ulma", 100.0), ("sft", 60.0)):
        _write(root, "07_efficiency", "hh", method, train_s=seconds)
    rlhf = _write(root, "07_efficiency", "hh", "rlhf", train_s=300.0)
    record = json.loads(rlhf.read_text())
    record["metrics"]["train"].update(reward_model={"wall_time_s": 120.0}, ppo={"wall_time_s": 150.0}, wall_time_s=290.0)
    rlhf.write_text(json.dumps(record))
    return root


def _texts(fig):
    """Every axis label, tick label, axes title and legend entry of a figure (not its notes)."""
    out = []
    for ax in fig.axes:
        out += [ax.get_xlabel(), ax.get_ylabel(), ax.get_title()]
        out += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
        if ax.get_legend():
            out += [t.get_text() for t in ax.get_legend().get_texts()]
    for legend in fig.legends:
        out += [t.get_text() for t in legend.get_texts()]
    return [t for t in out if t]


# ------------------------------------------------------------------------------------------- statistics
def test_wilson_interval_worked_numbers():
    n, p = 64, 42 / 64
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2)) / (1 + Z**2 / n)
    low, high = readout.wilson(42, 64)
    assert low == pytest.approx(centre - half, abs=1e-9) and high == pytest.approx(centre + half, abs=1e-9)
    assert (round(low, 3), round(high, 3)) == (0.534, 0.761)


def test_mean_ci_over_seeds_worked_numbers():
    mean, low, high = readout.mean_ci([1.0, 2.0, 3.0])
    t = 4.302652729911275  # t(0.975, 2 degrees of freedom)
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - t / math.sqrt(3), 2.0 + t / math.sqrt(3)))
    assert math.isnan(readout.mean_ci([0.7])[1])


def test_summary_uses_seeds_when_there_are_several_and_prompts_otherwise(tmp_path):
    _write(tmp_path, "04_ulma", "hh", "ulma", 0, wins=32)
    _write(tmp_path, "04_ulma", "hh", "ulma", 1, wins=45)
    _write(tmp_path, "04_ulma", "hh", "sft", 0, wins=42)
    table = readout.summary(readout.runs_frame("tiny", "04_ulma", tmp_path), "win_rate").set_index("method")
    t = 12.706204736174698  # t(0.975, 1)
    mean, sem = (0.5 + 45 / 64) / 2, (45 / 64 - 0.5) / 2
    assert table.loc["ulma", ["mean", "low", "high"]].tolist() == pytest.approx([mean, mean - t * sem, mean + t * sem])
    assert table.loc["ulma", "ci"] == "seeds" and table.loc["sft", "ci"] == "prompts"
    assert table.loc["sft", ["low", "high"]].tolist() == pytest.approx(list(readout.wilson(42, 64)))


# ---------------------------------------------------------------------------------------------- figures
def test_every_figure_is_drawn_from_results_alone_and_saved_as_png_and_pdf(results, tmp_path):
    paths = figures.draw_figures("tiny", results, tmp_path / "figures")
    assert paths == figures.expected_figures("tiny", tmp_path / "figures")
    for png in paths:
        width, height = struct.unpack(">II", png.read_bytes()[16:24])  # the IHDR chunk
        assert png.read_bytes().startswith(b"\x89PNG") and min(width, height) >= 300, png
        assert png.with_suffix(".pdf").read_bytes().startswith(b"%PDF"), png
    # 200 dpi: pixels = inches × 200
    fig = figures.figure_pipeline("tiny", results)
    png = figures.save(fig, tmp_path / "one")[0]
    assert struct.unpack(">II", png.read_bytes()[16:24]) == tuple(round(x * 200) for x in fig.get_size_inches())


def test_saving_twice_gives_the_same_files(results, tmp_path):
    fig = figures.figure_quality("tiny", "04_ulma", results)
    first = [p.read_bytes() for p in figures.save(fig, tmp_path / "a.png")]
    second = [p.read_bytes() for p in figures.save(fig, tmp_path / "a")]
    assert first == second  # no creation date in the PDF: redrawing unchanged results changes no file


@pytest.mark.parametrize("draw", [
    lambda r: figures.figure_quality("tiny", "04_ulma", r),
    lambda r: figures.figure_quality("tiny", "03_pointwise_dpo", r),
    lambda r: figures.figure_golden("tiny", r),
    lambda r: figures.figure_efficiency("tiny", r),
], ids=["quality_04", "quality_03", "golden", "efficiency"])
def test_metric_axes_say_which_way_is_better_with_paper_names(results, draw):
    fig = draw(results)
    labels = [ax.get_ylabel() for ax in fig.axes if ax.axison]
    assert labels and all(("↑" in y) or ("↓" in y) for y in labels), labels
    texts = _texts(fig)
    assert not [t for t in texts if SNAKE.search(t)], [t for t in texts if SNAKE.search(t)]
    ticks = {t.get_text() for ax in fig.axes for t in ax.get_xticklabels()}
    assert ticks & {"SFT", "ULMA", "Point-wise DPO", "DPO", "RLHF (RM+PPO)"}


def test_quality_figure_has_chance_lines_intervals_and_names_what_is_missing_once(results):
    fig = figures.figure_quality("tiny", "04_ulma", results)
    win, accuracy, perplexity = fig.axes
    for ax in (win, accuracy):
        assert any(list(line.get_ydata()) == [0.5, 0.5] for line in ax.get_lines())  # chance
        assert ax.containers and any(type(c).__name__ == "ErrorbarContainer" for c in ax.containers)
    assert not any(list(line.get_ydata()) == [0.5, 0.5] for line in perplexity.get_lines())
    note = fig._supxlabel.get_text()
    assert note.count("Red-team") == 1 and "Wilson" in note and "/data/" not in note  # no machine paths


def test_empty_panels_are_one_note(results):
    fig = figures.figure_ablations("tiny", results)  # nothing measured
    assert len(fig.axes) == 1 and not fig.axes[0].axison
    assert [t.get_text() for t in fig.axes[0].texts][0].startswith("Ablations: no measured runs yet.")
    outcomes = figures.figure_judge_outcomes("tiny", "04_ulma", results)
    assert [ax.get_title() for ax in outcomes.axes] == ["HH"]  # no red-team panel with overlapping messages
    assert outcomes._supxlabel.get_text().replace("\n", " ").count("not measured") == 1
    golden = figures.figure_golden("tiny", results)
    assert golden._suptitle.get_text().startswith("HH only: Golden HH: not measured")


def test_gradient_figure_is_small_multiples_on_a_log_magnitude_axis(results):
    fig = figures.figure_gradients("tiny", results)
    assert len(fig.axes) == len(experiments.GRADIENT_METHODS)
    assert {ax.get_yscale() for ax in fig.axes} == {"log"}  # no symlog kink
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1  # legend off the data
    titles = {ax.get_title() for ax in fig.axes}
    assert "Positive DPO\nnegative: weight 0" in titles and "SFT" in titles
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["positive / chosen sample (weight > 0: likelihood raised)",
                      "negative / rejected sample (weight < 0: likelihood lowered)"]
    point_wise = next(ax for ax in fig.axes if ax.get_title() == "Point-wise DPO")
    pos = point_wise.get_lines()[0]
    at_zero = list(pos.get_xdata()).index(0.0)
    assert pos.get_ydata()[at_zero] == pytest.approx(0.05)  # β/2 at Δ = 0


def test_training_curves_plot_the_logged_history_and_the_margin(results):
    fig = figures.figure_training_curves("tiny", "04_ulma", "hh", results)
    rows = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert rows == ["SFT", "DPO", "Point-wise DPO", "ULMA"]  # the table's order
    ulma_rewards = fig.axes[3 * 3 + 1]  # row ULMA, column rewards
    lines = {line.get_label(): line for line in ulma_rewards.get_lines() if not line.get_label().startswith("_")}
    assert set(lines) == {"positives", "negatives", "margin"}
    assert list(lines["margin"].get_ydata()) == pytest.approx([0.03 * k for k in range(4)])
    assert list(fig.axes[0].get_lines()[0].get_xdata()) == [5, 10, 15, 20]  # the summary entry is dropped
    sft_kl = fig.axes[2]
    assert not sft_kl.axison and sft_kl.texts[0].get_text() == "not logged for SFT"


def test_sample_generations_side_by_side_with_the_verdict(results, tmp_path):
    table = notebook.sample_generations("tiny", "04_ulma", "hh", n=2, results_dir=results)
    assert list(table.columns) == ["prompt", "chosen reply (dataset)", "SFT", "DPO", "Point-wise DPO", "ULMA"]
    assert table["ULMA"].tolist() == ["ulma reply 0 [lose]", "ulma reply 1 [win]"]
    empty = notebook.sample_generations("tiny", "04_ulma", "hh", results_dir=tmp_path)
    assert list(empty.columns) == ["note"] and "No sample generations" in empty["note"][0]


def test_method_names():
    assert readout.method_name("pointwise_dpo") == "Point-wise DPO"
    assert readout.method_name("ulma@c=0.5") == "ULMA (c = 0.5)"
    assert readout.method_name("pointwise_dpo@beta=0.5") == "Point-wise DPO (β = 0.5)"
    assert readout.method_name("rlhf") == "RLHF (RM+PPO)"


# ---------------------------------------------------------------------------------------------- reading
def test_reading_names_the_best_method_and_whether_the_intervals_separate_it(results, tmp_path):
    text = notebook.reading("tiny", "04_ulma", results)
    # ULMA wins 56/64, point-wise DPO 44/64: Wilson intervals [0.77, 0.94] and [0.57, 0.78] overlap
    assert "**Win rate vs chosen reply ↑**: best ULMA 0.875 [0.772, 0.935], next Point-wise DPO 0.688" in text
    assert "overlap: these data do not separate them" in text
    assert "One seed per method" in text and "judge agrees with human labels on only 60.0%" in text
    assert "Datasets without results: Red-team: not measured" in text
    _write(tmp_path, "04_ulma", "hh", "ulma", wins=60, judge_accuracy=0.9)
    _write(tmp_path, "04_ulma", "hh", "kto", wins=10, judge_accuracy=0.9, history=_history([1.0, 0.8]))
    # SFT's loss did not move (1.3863 -> 1.3864): named as not trained, never ranked, though it would be best
    _write(tmp_path, "04_ulma", "hh", "sft", wins=63, judge_accuracy=0.9, history=_history([1.3863, 1.3864]))
    clear = notebook.reading("tiny", "04_ulma", tmp_path)
    assert "best ULMA 0.938" in clear and "next KTO 0.156" in clear and "Their 95 % intervals do not overlap." in clear
    assert "judge agrees" not in clear  # 90 % is not a weak judge
    assert "**Did not train**" in clear and "not ranked above): SFT." in clear


def test_reading_says_when_the_judge_is_no_better_than_chance(tmp_path):
    """A judge at or below 50 % on held-out human pairs (the offline QA-feedback head: 48.7 %) makes its win
    rates uninformative, and the reading says so in the dataset's own criterion."""
    _write(tmp_path, "04_ulma", "qa_feedback", "ulma", wins=40, judge_accuracy=0.487)
    _write(tmp_path, "04_ulma", "qa_feedback", "sft", wins=30, judge_accuracy=0.487)
    text = notebook.reading("tiny", "04_ulma", tmp_path)
    assert "no better than chance on held-out human pairs (48.7%): its win rates say nothing of helpfulness" in text
    assert "**QA-feedback**: 2 methods measured" in text
    _write(tmp_path, "04_ulma", "qa_feedback", "sft", status="skipped", reason="not run yet")
    assert "**QA-feedback**: 1 method measured" in notebook.reading("tiny", "04_ulma", tmp_path)
    assert "weak evidence" not in text


def test_reading_gives_rlhfs_reward_model_accuracy_and_flags_one_at_chance(tmp_path):
    """PPO follows its reward model: the reading gives each seed's held-out accuracy, and names a seed whose
    reward model is no better than chance (the mini HH RLHF seed 1's: 38.3 %); the table has the column."""
    for seed, accuracy in ((0, 0.588), (1, 0.383), (2, 0.569)):
        _write(tmp_path, "04_ulma", "hh", "rlhf", seed, wins=30, judge_accuracy=0.9, reward_model_accuracy=accuracy)
    _write(tmp_path, "04_ulma", "hh", "ulma", wins=40, judge_accuracy=0.9)
    text = notebook.reading("tiny", "04_ulma", tmp_path)
    assert ("RLHF's reward model ranks held-out human pairs right in 58.8% (seed 0), 38.3% (seed 1), 56.9% (seed 2); "
            "seed 1: no better than chance") in text
    table = report.experiment_table("tiny", "04_ulma", tmp_path).set_index("method")
    assert table.loc["rlhf", "reward_model_accuracy"] == pytest.approx((0.588 + 0.383 + 0.569) / 3)
    assert math.isnan(table.loc["ulma", "reward_model_accuracy"])
    _write(tmp_path, "04_ulma", "hh", "rlhf", 1, wins=30, judge_accuracy=0.9, reward_model_accuracy=0.55)
    assert "no better than chance" not in notebook.reading("tiny", "04_ulma", tmp_path)


def test_reading_leads_with_the_protocols_headlines(tmp_path):
    """The length-controlled win rate and the one-rule preference accuracy are read first; the raw win rate
    follows; a record without a metric (written before it existed) only skips that line."""
    _write(tmp_path, "04_ulma", "hh", "ulma", wins=40, lc=0.70, headline=0.62, judge_accuracy=0.9)
    _write(tmp_path, "04_ulma", "hh", "dpo", wins=44, lc=0.55, headline=0.66, judge_accuracy=0.9)
    text = notebook.reading("tiny", "04_ulma", tmp_path)
    lc = text.index("**Length-controlled win rate vs chosen reply ↑**: best ULMA 0.7")
    raw = text.index("**Win rate vs chosen reply ↑**: best DPO 0.688")
    head = text.index("**Preference accuracy, log-ratio to the base model ↑**: best DPO 0.66")
    assert lc < raw < head
    _write(tmp_path, "04_ulma", "hh", "ulma", wins=40, judge_accuracy=0.9)  # an older record: no headlines
    _write(tmp_path, "04_ulma", "hh", "dpo", wins=44, judge_accuracy=0.9)
    older = notebook.reading("tiny", "04_ulma", tmp_path)
    assert "Length-controlled" not in older and "**Win rate vs chosen reply ↑**: best DPO" in older


def test_reading_without_runs_says_how_to_get_them(tmp_path):
    assert notebook.reading("tiny", "06_ablations", tmp_path).startswith("No measured runs at this profile yet")


def test_setup_differences_put_the_profile_beside_the_paper():
    table = notebook.setup_differences("tiny").set_index("setting")
    assert table.loc["model", "differs"] == "≠" and table.loc["judge", "paper profile"] == "llm"


# ------------------------------------------------------------------------------------------------ quiet
def test_quiet_silences_bars_trainer_prints_and_repeats():
    script = """
import logging, warnings
from ulma import notebook
notebook.quiet()
import tqdm.auto
from transformers import TrainingArguments
for _ in tqdm.auto.tqdm(range(3), disable=False): pass   # a bar asked for explicitly
tqdm.auto.tqdm.write("a per-step log dict")
log = logging.getLogger("ulma.data")
for _ in range(3):
    log.warning("skipped 5 malformed examples")
print(TrainingArguments(output_dir="unused", report_to=[]).disable_tqdm)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"  # the Trainer keeps its (silenced) bar, not the printing callback
    assert done.stderr.strip().splitlines() == ["WARNING ulma.data: skipped 5 malformed examples"]
