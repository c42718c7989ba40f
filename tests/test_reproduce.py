"""`ulma reproduce`: notebooks in order through papermill, executed copies, a log, and resume.

Two one-cell notebooks stand in for the real ones (those run in test_notebooks.py), so this checks the
runner itself: parameters injected, executed copies and the log written, a completed notebook skipped
on the next call, a changed one run again, a failure recorded and raised.
"""
import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from ulma import claims, grid
from ulma import reproduce as runner
from ulma.config import load_profile


def _notebook(path, body, extra=""):
    params = new_code_cell('profile = "mini"\nresults_dir = "results"\nfigures_dir = "figures"\nforce = False' + extra,
                           metadata={"tags": ["parameters"]})
    nb = new_notebook(cells=[params, new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.mark.slow
def test_reproduce_runs_in_order_logs_and_resumes(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "01_first.ipynb", "from pathlib import Path\n"
                                         "Path(results_dir, 'seen.txt').write_text(profile)")
    _notebook(folder / "02_second.ipynb", "assert force is False and train is True\nx = list(range(10**6))",
              extra="\ntrain = False")
    monkeypatch.setattr(runner, "notebooks_dir", lambda: folder)
    results = tmp_path / "results"

    entries = runner.reproduce("tiny", results_dir=str(results))
    assert [e["notebook"] for e in entries] == ["01_first", "02_second"]
    assert all(e["status"] == "completed" and e["wall_s"] > 0 and e["kernel_peak_rss_mb"] > 10 for e in entries)
    assert (results / "seen.txt").read_text() == "tiny"
    executed = results / "tiny" / "notebooks" / "02_second.ipynb"
    assert nbformat.read(executed, as_version=4).metadata.papermill.parameters["profile"] == "tiny"
    log = json.loads((results / "tiny" / "reproduce_log.json").read_text())
    assert set(log["notebooks"]) == {"01_first", "02_second"} and log["versions"]["python"]
    # each notebook got exactly the parameters it declares, and the log and the executed copy say the same
    for stem in ("01_first", "02_second"):
        injected = dict(nbformat.read(results / "tiny" / "notebooks" / f"{stem}.ipynb", as_version=4).metadata.papermill.parameters)
        assert injected == log["notebooks"][stem]["parameters"]
    assert "train" not in log["notebooks"]["01_first"]["parameters"]
    assert log["notebooks"]["02_second"]["parameters"]["train"] is True
    # the claims table is written at the end: one row per claim, nothing measured here
    claims_csv = results / "tiny" / "tables" / "claims.csv"
    rows = claims_csv.read_text().splitlines()
    assert len(rows) == 1 + len(claims.CLAIMS) and all("not measured" in r for r in rows[1:])
    assert log["claims"]["csv"] == "tables/claims.csv"
    assert "peak RSS of the kernel" in capsys.readouterr().out

    again = runner.reproduce("tiny", results_dir=str(results))
    assert [e["status"] for e in again] == ["skipped (completed before)"] * 2

    _notebook(folder / "02_second.ipynb", "raise ValueError('broken on purpose')")
    with pytest.raises(RuntimeError, match="02_second"):
        runner.reproduce("tiny", notebooks="02", results_dir=str(results))
    log = json.loads((results / "tiny" / "reproduce_log.json").read_text())
    assert log["notebooks"]["02_second"]["status"] == "failed"
    assert "broken on purpose" in log["notebooks"]["02_second"]["error"]
    assert log["notebooks"]["01_first"]["status"] == "completed"


@pytest.mark.slow
def test_no_train_executes_on_the_records_and_a_training_call_executes_again(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "04_main.ipynb", "from pathlib import Path\n"
                                        "Path(results_dir, f'train_{train}.txt').write_text('x')",
              extra="\ntrain = True")
    monkeypatch.setattr(runner, "notebooks_dir", lambda: folder)
    results = tmp_path / "results"
    entries = runner.reproduce("tiny", results_dir=str(results), train=False)
    assert [e["status"] for e in entries] == ["completed"]
    assert (results / "train_False.txt").exists() and not (results / "train_True.txt").exists()
    assert "to train" not in capsys.readouterr().out  # no plan printed: nothing will train
    log = json.loads((results / "tiny" / "reproduce_log.json").read_text())
    assert log["notebooks"]["04_main"]["parameters"]["train"] is False
    # the copy executed without training is not "completed" for a call that trains
    again = runner.reproduce("tiny", results_dir=str(results))
    assert [e["status"] for e in again] == ["completed"] and (results / "train_True.txt").exists()


def test_a_change_to_the_ulma_code_executes_the_notebooks_again(tmp_path, monkeypatch):
    """A copy rendered by other `ulma` code (its tables, readings) is out of date; the same code skips it."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "04_main.ipynb", "x = 1")
    monkeypatch.setattr(runner, "notebooks_dir", lambda: folder)
    results = tmp_path / "results"
    assert [e["status"] for e in runner.reproduce("tiny", results_dir=str(results), train=False)] == ["completed"]
    executed = json.loads((results / "tiny" / "notebooks" / "04_main.ipynb").read_text())
    assert executed["metadata"]["ulma"]["code_digest"] == runner.code_digest()
    again = runner.reproduce("tiny", results_dir=str(results), train=False)
    assert [e["status"] for e in again] == ["skipped (completed before)"]
    monkeypatch.setattr(runner, "code_digest", lambda: "another-version")
    changed = runner.reproduce("tiny", results_dir=str(results), train=False)
    assert [e["status"] for e in changed] == ["completed"]


def test_select_notebooks_by_number_or_name(tmp_path, monkeypatch):
    for name in ("01_a", "02_b", "03_c"):
        (tmp_path / f"{name}.ipynb").write_text("{}")
    monkeypatch.setattr(runner, "notebooks_dir", lambda: tmp_path)
    assert [p.stem for p in runner.select_notebooks("03,01_a")] == ["01_a", "03_c"]
    with pytest.raises(ValueError, match="no notebook"):
        runner.select_notebooks(["09"])


def test_the_plan_of_the_selected_experiments_is_printed_before_training(tmp_path, capsys):
    """`reproduce` prints the runs of each selected notebook's experiment (06: the calibration first) with
    their estimated time; a stem that is no experiment (01, 09) plans nothing."""
    prof = load_profile("tiny")
    rows = runner.print_planned(prof, ["01_datasets", "06_ablations", "09_claims"], tmp_path / "results", False)
    out = capsys.readouterr().out
    assert out.index("[06_calibration] plan:") < out.index("[06_ablations] plan:") and "[01_datasets]" not in out
    assert {r["experiment"] for r in rows} == {"06_calibration", "06_ablations"}
    assert all(not r["done"] and r["estimate_s"] is None for r in rows)  # nothing recorded or measured yet
    assert "cost unknown" in out
    # the ablations' sweeps hold the default value twice (c = 0 and beta = its own): one config, trained once
    todo = [r for r in rows if not r["skip"]]
    shared = len(todo) - len({r["config_hash"] for r in todo})
    assert shared > 0 and f"total: {len(todo) - shared} run(s) to train ({shared} shared between experiments" in out


def test_stale_records_finds_another_protocol_and_runs_outside_the_grid(tmp_path):
    prof = load_profile("tiny")
    row = grid.plan(prof, "04_ulma", ["hh"], ["ulma"], [0], results_dir=tmp_path)[0]
    folder = tmp_path / "tiny" / "04_ulma"
    folder.mkdir(parents=True)
    record = {"dataset": "hh", "method": "ulma", "seed": 0, "status": "done", "config_hash": row["config_hash"]}
    Path(row["path"]).write_text(json.dumps(record))
    (folder / "notes.json").write_text(json.dumps({"not": "a run record"}))  # not looked at
    assert grid.stale_records(prof, tmp_path) == []
    Path(row["path"]).write_text(json.dumps({**record, "config_hash": "0123456789abcdef"}))
    (folder / "hh__gone__seed0.json").write_text(json.dumps({**record, "method": "gone"}))
    stale = {Path(s["path"]).name: s["reason"] for s in grid.stale_records(prof, tmp_path)}
    assert stale.keys() == {Path(row["path"]).name, "hh__gone__seed0.json"}
    assert "another config" in stale[Path(row["path"]).name] and "0123456789abcdef" in stale[Path(row["path"]).name]
    assert stale["hh__gone__seed0.json"] == "not a run of the profile's grid"


def test_committed_mini_records_are_all_of_the_current_protocol():
    """No table or claim of the committed results puts runs of two protocols side by side: a change of the
    profile that changes a run's config retrains it, and its older record leaves results/ (git keeps it)."""
    assert grid.stale_records("mini") == []


def test_committed_mini_notebooks_show_the_committed_records():
    """Every executed notebook under results/mini/notebooks/ was executed on the records committed beside
    it (its inputs digest: source, its experiments' records and those its runs would copy) and completed, as
    reproduce_log.json says: a record that lands without `reproduce --no-train` fails here."""
    from ulma.reproduce import _inputs_digest, _reused_records, select_notebooks
    from ulma.store import read_record

    root = Path(__file__).resolve().parents[1] / "results" / "mini"
    log = read_record(root / "reproduce_log.json")
    prof = load_profile("mini")
    out_of_date = []
    for source in select_notebooks(None):
        nb = read_record(root / "notebooks" / source.name)
        meta = nb["metadata"]
        digest = _inputs_digest(source, root, _reused_records(prof, source.stem, root.parent))
        if meta["ulma"]["source_digest"] != digest or meta["papermill"].get("exception"):
            out_of_date.append(source.stem)
        assert log["notebooks"][source.stem]["status"] == "completed"
    assert not out_of_date, f"executed on other records: {out_of_date}: python -m ulma reproduce --profile mini --no-train"


def test_readme_results_section_is_the_summary_computed_from_results():
    """The README's results section is `ulma.report.results_summary` of the committed results (reproduce
    rewrites it): its counts and numbers come from claims.csv and the records, never typed."""
    from pathlib import Path

    from ulma import report

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    block = readme.split("<!-- results:mini -->\n", 1)[1].split("<!-- /results:mini -->", 1)[0]
    summary = report.results_summary("mini")
    fix = "python -c \"from ulma import report; report.write_summary('mini', readme='README.md')\""
    assert block == summary, f"the README's results section is out of date: {fix}"
    assert (root / "results" / "mini" / "tables" / report.SUMMARY_FILE).read_text() == summary


def test_write_summary_replaces_only_the_marked_block(tmp_path):
    import shutil
    from pathlib import Path

    from ulma import report

    root = Path(__file__).resolve().parents[1]
    shutil.copytree(root / "results" / "mini", tmp_path / "results" / "mini")
    readme = tmp_path / "README.md"
    readme.write_text("# head\n<!-- results:mini -->\nold text\n<!-- /results:mini -->\n## tail\n")
    path = report.write_summary("mini", tmp_path / "results", readme=readme)
    text = path.read_text()
    assert "claims of the paper" in text and "planned runs" in text
    assert readme.read_text() == "# head\n<!-- results:mini -->\n" + text + "<!-- /results:mini -->\n## tail\n"
    other = tmp_path / "OTHER.md"
    other.write_text("no markers\n")
    report.write_summary("mini", tmp_path / "results", readme=other)
    assert other.read_text() == "no markers\n"


def test_results_summary_rows_name_their_metric_and_say_why_claims_are_unmeasured(tmp_path):
    import csv

    from ulma import report

    tables = tmp_path / "results" / "mini" / "tables"
    tables.mkdir(parents=True)
    fields = ["claim", "text", "metric", "difference", "ci_low", "ci_high", "n_seeds", "verdict"]
    rows = [["a", "ULMA beats DPO on HH", "lc_win_rate", 0.08, 0.02, 0.14, 3, "reproduced"],
            ["b", "ULMA trains faster than RLHF", "train_s", -120.0, -150.0, -90.0, 2, "reproduced"],
            ["c", "Golden", "judge_score", "", "", "", 0, "not measured (ulma on golden_hh: skipped (golden_hh "
             "(mini_train) cannot be loaded here: no local file x.jsonl))"],
            ["d", "KTO", "lc_win_rate", "", "", "", 0, "not measured (no run of kto on hh)"]]
    with open(tables / "claims.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([fields, *rows])
    text = report.results_summary("mini", tmp_path / "results")
    assert ("**2 reproduced**, **0 contradicted**, **0 inconclusive**, **2 not measured** (1 for want of an "
            "offline copy of their data, 1 waiting for runs)") in text
    assert "| ULMA beats DPO on HH | reproduced | 3 of 3 | LC win rate +0.08 [+0.02, +0.14] |" in text
    assert "| ULMA trains faster than RLHF | reproduced | 2 of 3 | train s -120 [-150, -90] |" in text
    # mini's protocol gives a claim's runs 3 seeds: a verdict on 2 is marked provisional
    assert "fewer than the protocol's 3 seeds is provisional" in text
    assert "†" not in text  # no note says the LC reading extrapolates
    with open(tables / "claims.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([fields + ["note"], rows[0] + ["prompts resampled; LC extrapolated (ulma on hh: "
                                                                    "4% of replies no longer than the reference)"]])
    text = report.results_summary("mini", tmp_path / "results")
    assert "provisional" not in text
    assert "| ULMA beats DPO on HH | reproduced † | 3 of 3 |" in text
    assert "† LC win rate extrapolated: under 10% of one arm's" in text
    assert "Golden" not in text and "KTO" not in text  # unmeasured claims are counted, not listed
    assert "0 of " in text  # no run record in this results folder


def test_results_summary_says_how_many_planned_runs_cannot_run_here(tmp_path, monkeypatch):
    """Planned runs that are neither recorded nor left to train (their data has no copy here) are counted,
    so that "nothing is left to train" does not read as every planned run done."""
    import csv

    from ulma import report

    tables = tmp_path / "results" / "mini" / "tables"
    tables.mkdir(parents=True)
    with open(tables / "claims.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["claim", "text", "metric", "difference", "ci_low", "ci_high", "n_seeds",
                                       "verdict"], ["a", "A", "lc_win_rate", 0.1, 0.0, 0.2, 3, "inconclusive"]])
    progress = {"planned": 10, "done": 7, "compute_s": 3600.0, "devices": ["cpu"], "to_train": 0,
                "estimate_s": 0.0, "unknown": 0}
    monkeypatch.setattr(report, "grid_progress", lambda *a, **k: progress)
    text = report.results_summary("mini", tmp_path / "results")
    assert ("Grid: 7 of 10 planned runs have a record of the current protocol (1.0 h of compute on cpu); nothing "
            "is left to train; the other 3 cannot run here") in text
    progress.update(done=10)
    text = report.results_summary("mini", tmp_path / "results")
    assert "nothing is left to train. `make reproduce`" in text and "cannot run here" not in text
    progress.update(done=8, to_train=2, estimate_s=7200.0)
    assert "2 runs are left to train" in report.results_summary("mini", tmp_path / "results")
    assert "cannot run here" not in report.results_summary("mini", tmp_path / "results")


def test_an_executed_notebook_is_out_of_date_when_a_record_it_shows_changes(tmp_path):
    from ulma.reproduce import _inputs_digest

    source = tmp_path / "04_ulma.py"
    source.write_text("x = 1\n")
    claims_source = tmp_path / "09_claims.py"
    claims_source.write_text("y = 2\n")
    root = tmp_path / "results" / "mini"
    for folder in ("03_pointwise_dpo", "04_ulma", "notebooks"):
        (root / folder).mkdir(parents=True)
    (root / "04_ulma" / "hh__ulma__seed0.json").write_text('{"status": "done"}')
    before, claims_before = _inputs_digest(source, root), _inputs_digest(claims_source, root)
    (root / "03_pointwise_dpo" / "hh__dpo__seed0.json").write_text('{"status": "done"}')
    assert _inputs_digest(source, root) == before  # another experiment's record: 04 is still current
    assert _inputs_digest(claims_source, root) != claims_before  # 09 reads every experiment
    (root / "04_ulma" / "hh__dpo__seed1.json").write_text('{"status": "done"}')  # a record lands
    assert _inputs_digest(source, root) != before
