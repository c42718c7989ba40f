"""Run the numbered notebooks in order through papermill: ``python -m ulma reproduce --profile mini``.

Each notebook gets, of ``profile``, ``results_dir``, ``figures_dir`` (absolute paths), ``force``, ``train``
(True: the runs without a record are trained; False with ``--no-train``) and ``recompute`` (True: notebook
01 recomputes its statistics), only the parameters it declares (``papermill.inspect_notebook``), so that the
executed copy, its metadata and the log hold exactly what it ran with. Before executing, the planned runs of
every selected experiment and their estimated time (`ulma.grid.plan`) are printed; after the last notebook
the claims table ``results/<profile>/tables/claims.{csv,md}`` is written (`ulma.claims.write_claims`). Each
notebook gets the profile's ``notebook_timeout`` per cell, and an executed copy under
``results/<profile>/notebooks/``. Per notebook the log (``results/<profile>/reproduce_log.json``) holds the
wall time and the peak resident memory of the kernel's process tree (sampled every 0.5 s: the kernel is a
subprocess, so this process' own rusage would not show it). A notebook whose executed copy completed with
the same parameters, the same source and the same records it shows (`_inputs_digest`), by the same
`ulma` code (`code_digest`: a change to how tables and readings render executes it again), is skipped,
and finished runs skip inside the notebooks (their JSONs), so an interrupted reproduction resumes where it
stopped.
"""
from __future__ import annotations

import functools
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from ulma import claims, report
from ulma.catalog import EXPERIMENTS
from ulma.files import portable_path
from ulma.grid import plan, print_plan, to_train
from ulma.store import PeakMemory, as_profile, now, package_versions, project_root, read_record, resolve_path, write_record

KERNEL = "python3"


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def select_notebooks(only: list[str] | str | None = None) -> list[Path]:
    """The numbered notebooks in order; ``only`` keeps those whose stem or number prefix is listed."""
    found = sorted(p for p in notebooks_dir().glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no numbered notebooks in {notebooks_dir()} (reproduce runs from a checkout)")
    if only is None:
        return found
    wanted = [w.strip() for w in (only.split(",") if isinstance(only, str) else only) if w.strip()]
    chosen = [p for p in found if p.stem in wanted or p.stem.split("_")[0] in wanted]
    missing = [w for w in wanted if not any(p.stem == w or p.stem.split("_")[0] == w for p in chosen)]
    if missing:
        raise ValueError(f"no notebook {missing}; available: {[p.stem for p in found]}")
    return chosen


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """The `ulma` package's Python sources (path and content): the code an executed notebook rendered with.
    Kept beside the inputs digest, not in it: committed copies must match their records and sources (a
    test), while a code change only makes the next `reproduce` execute them again."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\n" + path.read_bytes())
    return digest.hexdigest()[:16]


def _inputs_digest(source: Path, root: Path, reused: Sequence[Path] = ()) -> str:
    """The notebook's source and the records it shows: its experiments' folders (``NN_*/``, 06 covers the
    calibration too), every folder for a notebook without one (08 figures, 09 claims), and the `reused`
    records of other experiments its runs would copy (`_reused_records`: 04's HH runs are 07's too). A record
    that lands or changes makes the executed copy out of date, so `--no-train` executes it again."""
    folders = [p for p in sorted(root.glob(f"{source.stem[:2]}_*")) if p.is_dir()] or [
        p for p in sorted(root.glob("*")) if p.is_dir() and p.name not in ("notebooks", "tables")]
    records = hashlib.sha256()
    for path in [*sorted(p for folder in folders for p in folder.glob("*.json")), *sorted(map(Path, reused))]:
        records.update(f"{path.parent.name}/{path.name}\n".encode() + path.read_bytes())
    return f"{_digest(source)}+{records.hexdigest()[:16]}"


def _experiments_of(stem: str) -> list[str]:
    """The experiments a notebook runs: those that are part of it (06: the calibration), then its own."""
    return [n for n, e in EXPERIMENTS.items() if e.part_of == stem] + [stem]


def _reused_records(prof, stem: str, results_dir) -> list[Path]:
    """The records of other experiments that the notebook's runs would copy, having none of their own yet
    (`ulma.grid.plan`'s ``reused``)."""
    paths = set()
    for name in _experiments_of(stem):
        exp = EXPERIMENTS.get(name)
        if exp is None or not (exp.variants or exp.sweeps):
            continue
        rows = plan(prof, name, exp.datasets_for(prof), list(exp.variants_for(prof)), results_dir=results_dir)
        paths.update(Path(r["reused"]) for r in rows if r.get("reused"))
    return sorted(paths)


def _completed(executed: Path, parameters: dict[str, Any], inputs_digest: str) -> bool:
    """The executed copy completed from these inputs (`_inputs_digest`; metadata key ``source_digest``, the
    name it had when it digested the source alone) by this code (`code_digest`) with exactly these
    parameters."""
    nb = read_record(executed)
    if not nb:
        return False
    meta = nb.get("metadata", {})
    pm = meta.get("papermill", {})
    return (
        meta.get("ulma", {}).get("parameters") == parameters
        and meta.get("ulma", {}).get("source_digest") == inputs_digest
        and meta.get("ulma", {}).get("code_digest") == code_digest()
        and bool(pm.get("end_time"))
        and not pm.get("exception")
    )


def reproduce(
    profile: str = "mini",
    notebooks: list[str] | str | None = None,
    timeout: int | None = None,
    results_dir: str = "results",
    *,
    figures_dir: str = "figures",
    force: bool = False,
    train: bool = True,
) -> list[dict[str, Any]]:
    """Execute the notebooks in order; return (and write) the log entries. Raises if one failed.

    ``train=False`` trains nothing: the notebooks show the records that exist (a run without one shows as
    not run) and redraw their tables and figures from them; the executed copies and the log say
    ``train: False``, so a later call that trains executes them again.

    ``force`` re-executes every notebook and retrains every run once: runs finished before this call
    count as stale (an ISO time passed on as the notebooks' ``force``), runs shared between notebooks
    are trained once.
    """
    # lazy: papermill and nbformat are only needed to execute notebooks (and papermill's import is slow)
    import nbformat
    import papermill

    prof = as_profile(profile)
    timeout = timeout or prof.experiments.notebook_timeout
    root = resolve_path(results_dir) / prof.name
    out_dir = root / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)  # papermill does not create it
    log_path = root / "reproduce_log.json"
    log = read_record(log_path) or {"notebooks": {}}
    force_since = now() if force else False
    offered = {
        "profile": str(profile),
        "results_dir": portable_path(resolve_path(results_dir)),  # relative inside the repository:
        "figures_dir": portable_path(resolve_path(figures_dir)),  # the notebooks resolve it against it
        "train": train,
        "recompute": True,
    }
    log.update(profile=prof.name, started_at=now(), timeout_s=timeout, versions=package_versions())
    entries, failed = [], []
    selected = select_notebooks(notebooks)
    if train:
        print_planned(prof, [p.stem for p in selected], results_dir, force_since)
    for source in selected:
        parameters = declared_parameters(papermill, source, offered)
        run_parameters = declared_parameters(papermill, source, {**parameters, "force": force_since})
        executed = out_dir / source.name
        digest = _inputs_digest(source, root, _reused_records(prof, source.stem, results_dir))
        if not force and _completed(executed, parameters, digest):
            print(f"{source.stem:20s} skipped: completed before with the same parameters", flush=True)
            entries.append({"notebook": source.stem, **log["notebooks"].get(source.stem, {}),
                            "status": "skipped (completed before)"})
            continue  # its log entry keeps the measurements of the run that completed it
        # marked with the digest after execution: a notebook that trains (or copies a reused run) adds records
        entry = _execute(papermill, nbformat, source, executed, parameters, run_parameters, timeout,
                         lambda source=source: _inputs_digest(source, root,
                                                              _reused_records(prof, source.stem, results_dir)))
        print(f"{source.stem:20s} {entry['status']:9s} {entry['wall_s']:8.1f} s   peak RSS of the kernel "
              f"{entry['kernel_peak_rss_mb']:8.0f} MB" + (f"   {entry['error']}" if entry.get("error") else ""),
              flush=True)
        if entry["status"] != "completed":
            failed.append(source.stem)
        log["notebooks"][source.stem] = entry
        entries.append({"notebook": source.stem, **entry})
        log["finished_at"] = now()
        write_record(log_path, log)
    if failed:
        raise RuntimeError(f"notebook(s) failed: {failed}; executed copies with the error under {out_dir}")
    paths = claims.write_claims(prof.name, resolve_path(results_dir))
    print(f"claims: {paths['csv']}", flush=True)
    # the README's results section, when these are the repository's own results (never a test's copy)
    readme = project_root() / "README.md" if resolve_path(results_dir) == project_root() / "results" else None
    summary = report.write_summary(prof.name, results_dir, readme=readme)
    log["claims"] = {"written_at": now(), **{kind: str(p.relative_to(root)) for kind, p in
                                             (*paths.items(), ("summary", summary))}}
    write_record(log_path, log)
    return entries


def declared_parameters(papermill, source: Path, offered: dict[str, Any]) -> dict[str, Any]:
    """The offered parameters `source` declares in its parameters cell."""
    declared = papermill.inspect_notebook(str(source))
    return {k: v for k, v in offered.items() if k in declared}


def print_planned(prof, stems: list[str], results_dir, force) -> list[dict[str, Any]]:
    """Print (and return) the runs the selected notebooks will train, with their estimated time. A notebook
    runs its own experiment and, for 06, the calibration first; runs shared between experiments show in each."""
    rows = []
    for stem in stems:
        for name in _experiments_of(stem):
            exp = EXPERIMENTS.get(name)
            if exp is None or not (exp.variants or exp.sweeps):
                continue
            planned = plan(prof, name, exp.datasets_for(prof), list(exp.variants_for(prof)),
                           force=force, results_dir=results_dir)  # each run's seeds (claims get more)
            print_plan(name, planned)
            rows += [{**p, "experiment": name} for p in planned]
    # a run another experiment shares (same resolved config) trains once and is reused: count it once
    todo = {p["config_hash"]: p for p in to_train(rows)}
    known = [p["estimate_s"] for p in todo.values() if p["estimate_s"] is not None]
    shared = len(to_train(rows)) - len(todo)
    guessed = sum(1 for p in todo.values() if p.get("estimate_gaps"))
    if len(stems) > 1 or shared:
        print(f"total: {len(todo)} run(s) to train ({shared} shared between experiments, counted once), "
              f"≈ {sum(known) / 3600:.1f} h" + (f" + {len(todo) - len(known)} of unknown cost" if len(known) < len(todo)
                                                else "")
              + (f"; {guessed} estimated without a measurement of their own (noted above)" if guessed else ""),
              flush=True)
    return rows


def _execute(papermill, nbformat, source: Path, executed: Path, parameters, run_parameters, timeout,
             digest: Callable[[], str]) -> dict[str, Any]:
    """Execute one notebook with `run_parameters` (`parameters` plus ``force`` where it declares it)."""
    entry: dict[str, Any] = {"started_at": now(), "parameters": run_parameters, "executed": portable_path(executed)}
    t0 = time.perf_counter()
    with PeakMemory(descendants=True, interval=0.5) as mem:
        try:
            papermill.execute_notebook(
                str(source), str(executed), parameters=run_parameters, kernel_name=KERNEL, cwd=str(source.parent),
                execution_timeout=timeout, progress_bar=False,
            )
            entry["status"] = "completed"
        except Exception as exc:  # noqa: BLE001 - recorded; the executed copy holds the traceback
            entry.update(status="failed", error=f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}")
    entry.update(wall_s=round(time.perf_counter() - t0, 2), kernel_peak_rss_mb=round(mem.peak_mb, 1), finished_at=now())
    if entry["status"] == "completed":
        _mark(nbformat, executed, parameters, digest())
    return entry


def _mark(nbformat, executed: Path, parameters: dict[str, Any], digest: str) -> None:
    """Record the inputs and code digests and the parameters (``force`` aside) a completed copy counts for."""
    nb = nbformat.read(executed, as_version=4)
    nb.metadata["ulma"] = {"source_digest": digest, "code_digest": code_digest(), "parameters": parameters}
    for key in ("input_path", "output_path"):  # papermill keeps the absolute paths it was given
        if key in nb.metadata.get("papermill", {}):
            nb.metadata["papermill"][key] = portable_path(nb.metadata["papermill"][key])
    nbformat.write(nb, executed)


def main(profile: str, only: str | None, force: bool, timeout: int | None, results_dir: str,
         figures_dir: str = "figures", *, plan_only: bool = False, train: bool = True) -> int:
    """The ``reproduce`` subcommand: 0 when every notebook completed, 1 otherwise. ``plan_only``: print the
    plan (`print_planned`) and stop; ``train=False``: execute the notebooks on the existing records."""
    if plan_only:
        print_planned(as_profile(profile), [p.stem for p in select_notebooks(only)], results_dir,
                      now() if force else False)
        return 0
    try:
        reproduce(profile, only, timeout, results_dir, figures_dir=figures_dir, force=force, train=train)
    except RuntimeError as exc:
        print(exc)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(reproduce(), indent=2))
