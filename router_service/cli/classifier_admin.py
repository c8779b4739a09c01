"""`llm-router classifier show|reload|seed`: the running router's classifier, through Admin, and
the first artifact of a fresh deployment's artifact volume."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from router_service.cli.admin_client import add_admin_arguments, admin_call


def register(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "classifier",
        help="show or reload the running router's difficulty classifier",
        description="Show the classifier artifact a running router uses, or make it load one "
        "(the configured path again, or another) without a restart. A bad artifact is "
        "refused with the reason and the current one keeps serving. Needs an admin key.",
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="the active artifact: version, models, thresholds")
    show.set_defaults(run=_show)
    reload = actions.add_parser("reload", help="load an artifact now")
    reload.add_argument(
        "path",
        nargs="?",
        default="",
        help="artifact directory, as the router sees it: a relative path is taken from the "
        "router's working directory (default: the configured one)",
    )
    reload.set_defaults(run=_reload)
    for sub in (show, reload):
        add_admin_arguments(sub)
    seed = actions.add_parser(
        "seed",
        help="put the shipped artifact in an empty artifact directory and link it as current",
        description="For a fresh deployment whose routers load DIR/current (a symlink the "
        "retraining job's `promote` swaps): when DIR/current does not exist yet, copy the "
        "artifact shipped with the service to DIR/<its version> and point DIR/current at it. "
        "Does nothing when DIR/current exists, and never replaces a link made meanwhile: safe "
        "in several pods at once on a shared volume. Runs locally (a Kubernetes init "
        "container).",
    )
    seed.add_argument("directory", type=Path, help="the artifact directory, e.g. /models")
    seed.set_defaults(run=_seed)


def print_classifier(info: Any, out: TextIO) -> None:
    loaded = datetime.fromtimestamp(info.loaded_at.seconds, UTC).isoformat(timespec="seconds")
    out.write(
        f"classifier {info.version}\n"
        f"  {info.weak_model} -> {info.strong_model} · recommended threshold "
        f"{info.recommended_threshold:.3f}\n"
        f"  from {info.path} · loaded {loaded}\n"
        f"  features {info.feature_spec}\n"
    )


def _show(args: argparse.Namespace) -> int:
    from router_service._proto import router_pb2 as pb

    response = admin_call(args, "GetClassifier", pb.GetClassifierRequest())
    if response is None:
        return 1
    print_classifier(response.classifier, sys.stdout)
    return 0


def _seed(args: argparse.Namespace) -> int:
    import os
    import shutil
    import tempfile

    from classifier.scorer import DEFAULT_ARTIFACT, load_scorer

    directory: Path = args.directory
    current = directory / "current"
    if current.is_symlink() or current.exists():
        print(f"{current} exists; nothing to do")
        return 0
    version = load_scorer(DEFAULT_ARTIFACT).version
    target = directory / version
    # Several pods may start at once on a fresh shared volume, and the retraining job may
    # promote meanwhile: each seed copies under a name of its own and renames the copy into
    # place (the first rename wins, the others drop theirs), and `current` is created only
    # where there is none, never replaced. Everything stays in `directory`, one filesystem, so
    # each rename is atomic.
    try:
        if not target.exists():
            staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=directory))
            try:
                shutil.copytree(DEFAULT_ARTIFACT, staging, dirs_exist_ok=True)
                # mkdtemp makes the directory private; the routers may run as another user.
                os.chmod(staging, 0o755)  # noqa: S103
                try:
                    staging.rename(target)
                except OSError:
                    if not target.is_dir():
                        raise  # not another seed's copy in place: a real failure
            finally:
                shutil.rmtree(staging, ignore_errors=True)  # gone when the rename succeeded
        try:
            current.symlink_to(version)
        except FileExistsError:
            print(f"{current} exists (linked meanwhile); nothing to do")
            return 0
    except OSError as exc:
        print(
            f"llm-router: cannot seed {directory}: {exc} (this process runs as uid "
            f"{os.getuid()}, gid {os.getgid()}: the directory must be writable by one of them)",
            file=sys.stderr,
        )
        return 1
    print(f"{current} -> {version} (the shipped artifact)")
    return 0


def _reload(args: argparse.Namespace) -> int:
    from router_service._proto import router_pb2 as pb

    response = admin_call(args, "ReloadClassifier", pb.ReloadClassifierRequest(path=args.path))
    if response is None:
        return 1
    print_classifier(response.classifier, sys.stdout)
    return 0
