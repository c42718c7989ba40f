"""Command line: ``python -m ulma <command> ...`` (also the ``ulma`` script).

Each subcommand is one `Command` in `COMMANDS`: its name, a help line, a function that declares its
arguments and one that runs it and returns the exit code. Adding ``evaluate`` or ``reproduce`` is one
entry each. Heavy imports (torch, transformers) happen inside the run functions, so ``--help`` is quick.

Exit codes: 0 done; 2 bad input (argparse's usage errors, an unknown profile, method or dataset, a
method the dataset has no data for, a bad ``--set``), reported as one ``error:`` line before any model
loads.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _error(message: object) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _add_profile_arguments(parser: argparse.ArgumentParser) -> None:
    """--profile and --set, shared by every command that takes a profile."""
    parser.add_argument("--profile", default="tiny",
                        help="tiny | mini | paper | path to a profile YAML (default: tiny)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a profile field, e.g. --set learning_rate=0.0001 --set train.max_steps=10 "
                             "(repeatable)")


def _load_profile(args: argparse.Namespace):
    from ulma.config import load_profile

    return load_profile(args.profile, args.overrides)


# ---------------------------------------------------------------------------------------------- train
def _train_arguments(parser: argparse.ArgumentParser) -> None:
    _add_profile_arguments(parser)
    parser.add_argument("--method", required=True,
                        help="a method of ulma.losses.METHODS (sft, dpo, pointwise_dpo, ulma, ...) or rlhf")
    parser.add_argument("--dataset", required=True, help="hh | golden_hh | red_team | qa_feedback")
    parser.add_argument("--output-dir", required=True,
                        help="run folder: config.json, adapter/, metrics.json, checkpoints/")
    parser.add_argument("--data-dir", default=None,
                        help="local data root (`fixtures` = the project's test fixtures); "
                             "default $ULMA_DATA_DIR, then the profile's")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the last checkpoint in OUTPUT_DIR/checkpoints")


def _train(args: argparse.Namespace) -> int:
    try:
        profile = _load_profile(args)
    except ValueError as err:
        return _error(err)
    from ulma.trainer import InvalidRunError, train

    try:
        metrics = train(profile, args.method, args.dataset, args.output_dir, data_dir=args.data_dir, resume=args.resume)
    except InvalidRunError as err:
        return _error(err)
    summary = {k: v for k, v in metrics.get("train", metrics).items() if not isinstance(v, (list, dict))}
    print(json.dumps({"output_dir": args.output_dir, **summary}, indent=2, sort_keys=True, default=str))
    return 0


# ------------------------------------------------------------------------------------------- evaluate
def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="a run folder written by `ulma train`")
    parser.add_argument("--judge", default=None,
                        help="minilm_harmlessness | reward_model | llm | none (default: the run's profile's judge)")
    parser.add_argument("--data-dir", default=None,
                        help="local data root; default $ULMA_DATA_DIR, then the run's profile's")


def _evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    if not (Path(args.run) / "config.json").exists():
        return _error(f"{args.run} is not a run folder (no config.json): train one with `python -m ulma train`")
    from ulma.evaluation import evaluate_run
    from ulma.judges import JUDGES

    if args.judge not in (None, "none", *JUDGES):
        return _error(f"unknown judge {args.judge!r}; known: {sorted(JUDGES)} or none")
    metrics = evaluate_run(args.run, judge=args.judge, data_dir=args.data_dir)
    summary = {k: v for k, v in metrics.items() if not isinstance(v, (list, dict))}
    print(json.dumps({"run": args.run, **summary}, indent=2, sort_keys=True, default=str))
    return 0


# ------------------------------------------------------------------------------------------ reproduce
def _reproduce_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="mini", help="tiny | mini | paper | path to a profile YAML (default: mini)")
    parser.add_argument("--only", default=None, help="comma-separated notebook numbers or names, e.g. 03,04")
    parser.add_argument("--force", action="store_true", help="re-execute the notebooks and retrain every run once")
    parser.add_argument("--timeout", type=int, default=None, help="seconds per cell (default: the profile's notebook_timeout)")
    parser.add_argument("--results-dir", default="results", help="default: results/ of the repository")
    parser.add_argument("--figures-dir", default="figures", help="default: figures/ of the repository")


def _reproduce(args: argparse.Namespace) -> int:
    from ulma.reproduce import main as reproduce_main

    return reproduce_main(args.profile, args.only, args.force, args.timeout, args.results_dir, args.figures_dir)


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
