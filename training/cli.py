"""The ``train`` and ``evaluate`` subcommands of ``llm-router`` (and of ``python -m training``).

``register`` only declares arguments; everything heavy (scikit-learn, onnx, matplotlib) is
imported when a command runs, so ``llm-router --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import textwrap
from collections.abc import Callable

__all__ = ["main", "register"]

EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``train``, ``evaluate`` and ``promote`` to a command's subparsers."""
    train = subparsers.add_parser(
        "train",
        help="train a difficulty classifier artifact from outcome data",
        description=textwrap.dedent(
            """\
            Train the difficulty classifier for one weak (cheap) and one strong (frontier)
            model from outcome JSONL (the outcome format, docs/OUTCOMES.md). Labels: does the weak
            model's answer score below the strong one's. Other model pairs in the data are
            used as auxiliary labels. The model is cross-validated, calibrated, exported to
            ONNX and written with its metadata and an evaluation report (out-of-fold, on the
            training data only) to --out, replacing the artifact there (a file, or a
            directory that holds something else, is refused)."""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _pair_and_data(train, data_help="outcome JSONL to train on (repeatable)")
    train.add_argument(
        "--out", type=pathlib.Path, required=True, metavar="DIR", help="artifact directory to write"
    )
    train.add_argument(
        "--exclude",
        type=pathlib.Path,
        action="append",
        default=[],
        metavar="FILE",
        help="drop training rows whose prompt also appears in this outcome "
        "file, e.g. an evaluation split (repeatable; only prompts are read)",
    )
    train.add_argument(
        "--c",
        type=float,
        default=None,
        metavar="C",
        help="inverse L2 regularisation strength (default 3.0)",
    )
    train.add_argument(
        "--ngram-weight",
        type=float,
        default=None,
        metavar="W",
        help="scale of the n-gram features against the structure features while fitting; "
        "smaller generalises better to unseen task families (default 0.1)",
    )
    train.add_argument(
        "--target-weight",
        type=float,
        default=1.0,
        metavar="W",
        help="weight of the target pair's labels (default 1.0)",
    )
    train.add_argument(
        "--auxiliary-weight",
        type=float,
        default=1.0,
        metavar="W",
        help="weight of each auxiliary pair's labels; 0 trains on the target "
        "pair alone (default 1.0)",
    )
    train.add_argument(
        "--auxiliary-min-quality",
        type=float,
        default=0.6,
        metavar="R",
        help="auxiliary weak models must reach R x the reference model's mean score (0.6)",
    )
    train.add_argument("--folds", type=int, default=None, help="cross-validation folds (5)")
    train.add_argument("--seed", type=int, default=0, help="seed of the fold split (0)")
    train.set_defaults(run=_reporting_errors(_run_train))

    evaluate = subparsers.add_parser(
        "evaluate",
        help="measure an artifact on outcome data against baselines",
        description=textwrap.dedent(
            """\
            Score every prompt with a classifier artifact and report RouteLLM's routing
            metrics for the weak/strong pair: APGR (10 quantile bins, trapezoid rule),
            CPT(50%) and CPT(80%) as shares of strong calls, and the strong-call share and
            cost relative to always-strong at 95% of the strong model's quality. Baselines:
            random (mean over 100 seeds), prompt length, always-weak, always-strong. Rows
            lacking either model's outcome are skipped and counted. Costs are the recorded
            cost_usd, else catalog prices (see --price)."""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument(
        "--model",
        type=pathlib.Path,
        default=None,
        metavar="DIR",
        help="artifact directory (default: the shipped default artifact)",
    )
    _pair_and_data(evaluate, data_help="outcome JSONL to evaluate on (repeatable)")
    evaluate.add_argument(
        "--json",
        type=pathlib.Path,
        required=True,
        metavar="OUT",
        help="where to write the metrics as JSON",
    )
    evaluate.add_argument(
        "--plot",
        type=pathlib.Path,
        default=None,
        metavar="OUT.png",
        help="also draw the cost-quality curves to this PNG",
    )
    evaluate.add_argument(
        "--price",
        action="append",
        default=[],
        metavar="MODEL=USD",
        help="blended USD per million tokens for MODEL, used where the data "
        "has no cost_usd (defaults: weak 1.20, strong 5.00)",
    )
    evaluate.add_argument(
        "--split",
        default=None,
        metavar="SPLIT",
        help="evaluate only the rows marked with this split, e.g. test (default: every row)",
    )
    evaluate.set_defaults(run=_reporting_errors(_run_evaluate))

    promote = subparsers.add_parser(
        "promote",
        help="roll out a retrained classifier if it routes at least as well as the current one",
        description=textwrap.dedent(
            """\
            Evaluate a candidate artifact and the current one on the same held-out rows (by
            default those marked split=test, which `train` never reads) and, when the
            candidate's APGR is at least the current one's (plus --min-gain), point the
            --current symlink at it atomically, and the `previous` symlink beside it at the
            artifact it replaces (to roll back to). Routers watching the link load the new
            artifact without a restart. Then, promoted or not, prune the directory of
            --current: delete the artifact directories (those with a metadata.json) other than
            the --keep most recent and those a symlink there names (current, previous) or the
            candidate, and staging directories left by killed runs for over an hour. Exit
            status 0 either way; the decision is printed."""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    promote.add_argument(
        "--candidate",
        type=pathlib.Path,
        required=True,
        metavar="DIR",
        help="the artifact directory to roll out, e.g. one written by `train --out`",
    )
    promote.add_argument(
        "--current",
        type=pathlib.Path,
        required=True,
        metavar="LINK",
        help="the symlink the routers load (created if missing)",
    )
    _pair_and_data(promote, data_help="outcome JSONL with held-out rows (repeatable)")
    promote.add_argument(
        "--split", default="test", help="rows to compare on (default: test; 'all': every row)"
    )
    promote.add_argument(
        "--min-gain", type=float, default=0.0, help="APGR gain required to promote (default 0)"
    )
    promote.add_argument(
        "--min-rows",
        type=int,
        default=100,
        help="held-out rows (of --split) with outcomes of both --weak and --strong needed to "
        "decide anything; rows lacking either model's outcome do not count, and with fewer "
        "rows nothing is promoted (default 100)",
    )
    promote.add_argument(
        "--keep",
        type=_count,
        default=5,
        metavar="N",
        help="artifact directories to keep beside --current, the most recent by creation "
        "time; current, previous and the candidate are kept too (default 5)",
    )
    promote.set_defaults(run=_reporting_errors(_run_promote))


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (0 or more)")
    return value


def _reporting_errors(
    run: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """The command, with expected failures (bad data, bad artifact) shown as one line and
    exit status 2 instead of a traceback."""

    def reporting(args: argparse.Namespace) -> int:
        from classifier.errors import ClassifierError
        from training.errors import TrainingError

        if args.weak == args.strong:
            print(
                f"llm-router: --weak and --strong are both {args.weak!r}; give the cheap model and "
                "the frontier model whose outcomes the data compares",
                file=sys.stderr,
            )
            return EXIT_USAGE
        try:
            return run(args)
        except (TrainingError, ClassifierError) as exc:
            print(f"llm-router: {exc}", file=sys.stderr)
            return EXIT_USAGE

    return reporting


def _pair_and_data(parser: argparse.ArgumentParser, data_help: str) -> None:
    parser.add_argument(
        "--data", type=pathlib.Path, action="append", required=True, metavar="FILE", help=data_help
    )
    parser.add_argument(
        "--weak", required=True, metavar="MODEL", help="the cheap model, as named in the outcomes"
    )
    parser.add_argument(
        "--strong",
        required=True,
        metavar="MODEL",
        help="the frontier model, as named in the outcomes",
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=0.0,
        help="weak falls short when strong - weak exceeds this (default 0)",
    )


def _run_train(args: argparse.Namespace) -> int:
    from training.errors import TrainingError
    from training.model import ModelConfig
    from training.pipeline import TrainConfig, train
    from training.report import format_table

    defaults = ModelConfig()
    config = TrainConfig(
        data=tuple(args.data),
        weak=args.weak,
        strong=args.strong,
        out=args.out,
        exclude=tuple(args.exclude),
        margin=args.margin,
        target_weight=args.target_weight,
        auxiliary_weight=args.auxiliary_weight,
        auxiliary_min_quality=args.auxiliary_min_quality,
        model=ModelConfig(
            c=defaults.c if args.c is None else args.c,
            ngram_weight=defaults.ngram_weight if args.ngram_weight is None else args.ngram_weight,
            folds=defaults.folds if args.folds is None else args.folds,
            seed=args.seed,
        ),
    )
    try:
        metadata, evaluation = train(config, echo=_echo)
    except OSError as exc:  # reading the data raises DatasetError: this is the writing
        raise TrainingError(f"cannot write the artifact {args.out}: {exc.strerror}") from None
    print(
        format_table(
            evaluation.report, title="out-of-fold on the training data (for a test split: evaluate)"
        )
    )
    if skipped := metadata.training["rows_without_any_pair"]:
        print(f"skipped {skipped} rows lacking a usable pair of outcomes")
    print(
        f"wrote {args.out} (version {metadata.version}, "
        f"recommended threshold {metadata.recommended_threshold:.3f})"
    )
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    from classifier.scorer import DEFAULT_ARTIFACT
    from training.errors import TrainingError
    from training.pipeline import EvaluateConfig, evaluate
    from training.report import format_table, plot_curves

    config = EvaluateConfig(
        data=tuple(args.data),
        weak=args.weak,
        strong=args.strong,
        model=DEFAULT_ARTIFACT if args.model is None else args.model,
        margin=args.margin,
        prices_per_mtok=_prices(args.price),
        split=args.split,
    )
    evaluation = evaluate(config, echo=_echo)
    try:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(evaluation.report, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise TrainingError(f"cannot write {args.json}: {exc.strerror}") from None
    title = f"{args.weak} -> {args.strong}"
    print(format_table(evaluation.report, title=title))
    if evaluation.report["rows_skipped"]:
        print(f"skipped {evaluation.report['rows_skipped']} rows lacking either outcome")
    print(f"wrote {args.json}")
    if args.plot is not None:
        try:
            args.plot.parent.mkdir(parents=True, exist_ok=True)
            plot_curves(evaluation, args.plot, title)
        except OSError as exc:
            raise TrainingError(f"cannot write {args.plot}: {exc.strerror}") from None
        print(f"wrote {args.plot}")
    return 0


def _run_promote(args: argparse.Namespace) -> int:
    from training.promote import promote

    result = promote(
        args.candidate,
        args.current,
        args.data,
        weak=args.weak,
        strong=args.strong,
        split=None if args.split == "all" else args.split,
        min_gain=args.min_gain,
        min_rows=args.min_rows,
        echo=_echo,
    )
    print(result.reason)
    _prune(args.current.parent, keep=args.keep, candidate=args.candidate)
    return 0


def _prune(directory: pathlib.Path, *, keep: int, candidate: pathlib.Path) -> None:
    """Prune the artifact directory after a promotion run. A failure is reported, not fatal:
    the promotion is done, and a failed exit would make the CronJob train again."""
    from training.errors import TrainingError
    from training.models_dir import prune

    if not directory.is_dir():
        return
    try:
        pruned = prune(directory, keep=keep, protect=[candidate])
    except (OSError, TrainingError) as exc:
        print(f"warning: could not prune {directory}: {exc}", file=sys.stderr)
        return
    if pruned.artifacts:
        print(
            f"pruned {len(pruned.artifacts)} old artifacts from {directory} (kept the {keep} most "
            f"recent and those linked): {', '.join(sorted(pruned.artifacts))}"
        )
    if pruned.staging:
        print(
            f"removed {len(pruned.staging)} staging entries left by killed runs: "
            f"{', '.join(sorted(pruned.staging))}"
        )
    for error in pruned.errors:
        print(f"warning: could not prune {directory}/{error}", file=sys.stderr)


def _prices(items: list[str]) -> dict[str, float]:
    from training.errors import TrainingError

    prices = {}
    for item in items:
        model, _, value = item.rpartition("=")
        try:
            prices[model] = float(value)
        except ValueError:
            model = ""
        if not model:
            raise TrainingError(f"--price expects MODEL=USD_PER_MILLION_TOKENS, got {item!r}")
    return prices


def _echo(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m training``: the same subcommands as ``llm-router``."""
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train and evaluate the LLM Router's difficulty classifier.",
    )
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code
