"""Command line: ``python -m ulma <command> ...`` (also the ``ulma`` script).

Each subcommand is one `Command` in `COMMANDS`: its name, a help line, a function that declares its
arguments and one that runs it and returns the exit code. Adding ``evaluate`` or ``reproduce`` is one
entry each. Only the light modules (config, the registry) are imported at the top; each command imports the
layer it runs (trainer, evaluation, reproduce) when it runs, so that ``--help`` and a rejected option
answer in about a second, before transformers, datasets and peft load.

Exit codes: 0 done; 2 bad input (argparse's usage errors, an unknown or unreadable profile, a field
outside its range (`ulma.config.ConfigError`, from the profile or a ``--set``), an unknown method or
dataset, a method the dataset has no data for, an output folder whose parent does not exist, an unknown
judge or one that cannot be built), reported as one ``error:`` line before any model loads and before
anything is written.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ulma.config import JUDGE_NAMES, ConfigError, load_profile, profile_from_dict
from ulma.losses import METHODS


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _error(message: object) -> int:
    text = " ".join(str(message).split())  # one line, whatever the message held
    print(f"error: {text}", file=sys.stderr)
    return 2


def _add_profile_arguments(parser: argparse.ArgumentParser) -> None:
    """--profile and --set, shared by every command that takes a profile."""
    parser.add_argument("--profile", default="tiny",
                        help="tiny | mini | single_gpu | paper | path to a profile YAML (default: tiny)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a profile field, e.g. --set learning_rate=0.0001 --set train.max_steps=10 "
                             "(repeatable)")


def _load_profile(args: argparse.Namespace):
    return load_profile(args.profile, args.overrides)


# ---------------------------------------------------------------------------------------------- train
def _train_arguments(parser: argparse.ArgumentParser) -> None:
    _add_profile_arguments(parser)
    parser.add_argument("--method", required=True,
                        help="a method of ulma.losses.METHODS (sft, dpo, pointwise_dpo, ulma, ...) or rlhf")
    parser.add_argument("--dataset", required=True,
                        help="hh | golden_hh | red_team | qa_feedback, or your own data: a JSON/JSONL/Parquet file, a "
                             "folder or a hub id in TRL's preference (prompt/chosen/rejected) or unpaired "
                             "(prompt/completion/label) format, plain or conversational")
    parser.add_argument("--output-dir", required=True,
                        help="run folder: config.json, adapter/, metrics.json, checkpoints/")
    parser.add_argument("--data-dir", default=None,
                        help="local data root (`fixtures` = the project's test fixtures); "
                             "default $ULMA_DATA_DIR, then the profile's")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the last checkpoint in OUTPUT_DIR/checkpoints")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run that OUTPUT_DIR holds when it is another run (another method, "
                             "dataset or config); without it such a folder is refused")


def _check_output_dir(output_dir: str) -> str | None:
    """Why `output_dir` cannot hold a run (a file, or a parent folder that does not exist), or None.

    The parent is not created on the user's behalf: a typo in it would otherwise train for hours into a
    folder nobody looks at.
    """
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        return f"--output-dir {output_dir} exists and is not a folder"
    parent = path.absolute().parent
    if not parent.is_dir():
        return f"--output-dir {output_dir}: its parent folder {parent} does not exist (create it first)"
    return None


def _train(args: argparse.Namespace) -> int:
    try:
        profile = _load_profile(args)  # every field checked against its range (ulma.config)
    except ConfigError as err:
        return _error(err)
    if args.method not in METHODS:
        return _error(f"unknown method {args.method!r}; known: {', '.join(sorted(METHODS))}")
    problem = _check_output_dir(args.output_dir)
    if problem:
        return _error(problem)
    from ulma.runs import InvalidRunError
    from ulma.trainer import train

    try:  # train() checks the dataset, the view, the data and the folder's run before it loads the model
        metrics = train(profile, args.method, args.dataset, args.output_dir, data_dir=args.data_dir, resume=args.resume,
                        overwrite=args.overwrite, show_estimate=True)  # tokens, time, memory: printed before the model loads
    except (InvalidRunError, ConfigError) as err:
        return _error(str(err).replace("overwrite=True", "--overwrite"))  # the library's word, the CLI's name
    close_process_group()
    summary = {k: v for k, v in metrics.get("train", metrics).items() if not isinstance(v, (list, dict))}
    print(json.dumps({"output_dir": args.output_dir, **summary}, indent=2, sort_keys=True, default=str))
    return 0


def close_process_group() -> None:
    """End the process group that ``accelerate launch`` / torchrun runs open (a no-op in one process).

    Left to interpreter exit, gloo's worker threads can be torn down while still running: the run has
    finished and saved, yet one rank aborts ("terminate called without an active exception", SIGABRT) and
    the launcher reports a failure. torch asks for `destroy_process_group` before exit; the barrier first
    lets every rank finish its last collective.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------- evaluate
def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="a run folder written by `ulma train`")
    parser.add_argument("--judge", default=None,
                        help="minilm_harmlessness | reward_model | llm | none (default: the run's profile's judge)")
    parser.add_argument("--data-dir", default=None,
                        help="local data root; default $ULMA_DATA_DIR, then the run's profile's")


def _evaluate(args: argparse.Namespace) -> int:
    config_path = Path(args.run) / "config.json"
    if not config_path.exists():
        return _error(f"{args.run} is not a run folder (no config.json): train one with `python -m ulma train`")
    if args.judge not in (None, "none", *JUDGE_NAMES):
        return _error(f"unknown judge {args.judge!r}; known: {', '.join(JUDGE_NAMES)} or none")
    try:
        run_config = json.loads(config_path.read_text())
        profile = profile_from_dict(run_config["profile"])
        dataset, train_data_dir = run_config["dataset"], run_config["train"].get("data_dir")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:  # ConfigError is a ValueError
        return _error(f"{config_path}: not a readable run config ({type(err).__name__}: {err})")
    from ulma.evaluation import evaluate_run, judge_options
    from ulma.judges import get_judge
    from ulma.runs import resolve_data_dir

    name = profile.eval.judge if args.judge is None else args.judge
    judge = "none"
    if name not in (None, "", "none"):
        # built here, before evaluate_run loads the model: a judge without its key, model or data fails
        # in a second with one line instead of after the generations
        root = resolve_data_dir(args.data_dir, train_data_dir)
        try:
            judge = get_judge(name, **judge_options(name, dataset=dataset, profile=profile, data_dir=root))
        except (ValueError, ImportError, OSError) as err:
            return _error(f"judge {name}: {err}")
    metrics = evaluate_run(args.run, judge=judge, data_dir=args.data_dir)
    summary = {k: v for k, v in metrics.items() if not isinstance(v, (list, dict))}
    print(json.dumps({"run": args.run, **summary}, indent=2, sort_keys=True, default=str))
    return 0


# ------------------------------------------------------------------------------------------ reproduce
def _reproduce_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="mini", help="tiny | mini | single_gpu | paper | path to a profile YAML (default: mini)")
    parser.add_argument("--only", default=None, help="comma-separated notebook numbers or names, e.g. 03,04")
    parser.add_argument("--force", action="store_true", help="re-execute the notebooks and retrain every run once")
    parser.add_argument("--timeout", type=int, default=None, help="seconds per cell (default: the profile's notebook_timeout)")
    parser.add_argument("--results-dir", default="results", help="default: results/ of the repository")
    parser.add_argument("--figures-dir", default="figures", help="default: figures/ of the repository")
    parser.add_argument("--plan", action="store_true",
                        help="print the runs still to train and their estimated time, then stop (trains nothing)")
    parser.add_argument("--no-train", dest="train", action="store_false",
                        help="execute the notebooks on the records there are: train nothing (a run without a record "
                             "shows as not run); tables, figures and claims are redrawn from results/")


def _reproduce(args: argparse.Namespace) -> int:
    try:
        load_profile(args.profile)  # a bad profile fails here in one line, not inside the first notebook
    except ConfigError as err:
        return _error(err)
    if args.timeout is not None and args.timeout < 1:
        return _error(f"--timeout = {args.timeout}: must be an integer >= 1 (seconds per cell)")
    if args.force and not args.train:
        return _error("--force retrains every run and --no-train trains none: give one of them")
    from ulma.reproduce import main as reproduce_main

    return reproduce_main(args.profile, args.only, args.force, args.timeout, args.results_dir, args.figures_dir,
                          plan_only=args.plan, train=args.train)


# ------------------------------------------------------------------------------------------- registry
COMMANDS: list[Command] = [
    Command("train", "train one method on one dataset (one run folder)", _train_arguments, _train),
    Command("reproduce", "run the numbered notebooks in order (papermill); finished work is skipped",
            _reproduce_arguments, _reproduce),
    Command("evaluate", "evaluate a trained run: perplexity, preference accuracy, generations, judge",
            _evaluate_arguments, _evaluate),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ulma", description="ULMA: point-wise DPO, ULMA and baselines")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub_parser = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(sub_parser)
        sub_parser.set_defaults(handler=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
