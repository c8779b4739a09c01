"""`llm-router export` and `llm-router report`: read the call log back.

Both read the log where the server writes it, resolved from the same config (`--config`, else
the embedded defaults, as `serve` does): the Redis Stream when the config or `REDIS_URL` names
a Redis (its key `call_log.stream`, else derived from `store.key_prefix`), else the JSONL files
in `call_log.directory` (`var/calllog`). `--redis`, `--stream` and `--calllog` override.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router_service.cli.client import add_tls_arguments, host_port, open_channel, rpc_failure
from router_service.cli.serve import add_config_argument

if TYPE_CHECKING:
    from router_service.calllog.entries import LogEntry
    from router_service.calllog.reader import LogScan, Progress
    from router_service.calllog.report import Report

DEFAULT_ADMIN_KEY = "demo-admin-key"
_RELATIVE = re.compile(r"^(\d+)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, *, now: float | None = None) -> float:
    """`7d`, `12h`, `30m` (ago) or an ISO date or time (UTC unless it says otherwise), as Unix
    time."""
    value = text.strip()
    match = _RELATIVE.match(value)
    if match is not None:
        ago = int(match.group(1)) * _UNIT_S[match.group(2)]
        return (time.time() if now is None else now) - ago
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected e.g. 7d, 12h, 30m, 2025-05-01 or 2025-05-01T12:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass(frozen=True, slots=True)
class _Source:
    """Where the log is read: the Redis Stream `stream` when `redis` is set, else `directory`."""

    redis: str | None
    stream: str
    directory: Path

    def __str__(self) -> str:
        return f"Redis stream {self.stream}" if self.redis else str(self.directory)


def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(
        parser,
        "the router's config: read the log where that router writes it (default: the "
        "embedded defaults, as `serve` without --config); repeated, layered as `serve` does",
    )
    parser.add_argument(
        "--calllog",
        type=Path,
        metavar="DIR",
        help="the JSONL call-log directory (default: the config's call_log.directory)",
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        help="read the Redis Stream instead (default: the config's store.redis_url, else "
        "REDIS_URL when set, like the server)",
    )
    parser.add_argument(
        "--stream",
        help="the stream key (default: the config's call_log.stream, else derived from "
        "store.key_prefix, as the server does)",
    )
    parser.add_argument(
        "--since",
        type=parse_since,
        metavar="WHEN",
        help="only entries since WHEN: 7d, 12h, 30m, or an ISO date/time",
    )


def register(commands: argparse._SubParsersAction[Any]) -> None:
    export = commands.add_parser(
        "export",
        help="join the call log and feedback into outcome JSONL for `llm-router train`",
        description=(
            "Join cost records, feedback and shadow judge grades into an outcome dataset "
            "(docs/OUTCOMES.md): one row per answered call of an app with "
            "training_data_opt_in; the served model's outcome is the app's feedback (else the "
            "judge's grade), and shadow-graded calls add the other tier's model."
        ),
    )
    export.add_argument("--out", type=Path, required=True, help="the JSONL file to write")
    export.add_argument(
        "--test-share",
        type=float,
        default=0.2,
        help="share of rows marked split=test (stable per call; default 0.2)",
    )
    export.add_argument(
        "--served-score",
        choices=["feedback", "judge"],
        default="judge",
        help="score of the served model in shadow-graded calls: the judge's grade (default: "
        "both arms compared by one grader, so the labels are not biased by two scales), or "
        "the app's feedback",
    )
    _add_source_arguments(export)
    export.set_defaults(run=_export)

    report = commands.add_parser(
        "report",
        help="spend, routing mix, cache hit rates and budget state per app",
        description=(
            "Summarize the call log per app: spend, routing mix, cache hit rates, budget "
            "state (from the server's Admin.GetBudget with --target, else this month's spend) "
            "and the costliest tasks, as a table; --png also draws it."
        ),
    )
    _add_source_arguments(report)
    report.add_argument("--png", type=Path, metavar="FILE", help="also write a chart here")
    report.add_argument(
        "--target",
        type=host_port,
        metavar="HOST:PORT",
        help="a router to ask for budget state (Admin RPCs)",
    )
    report.add_argument(
        "--key",
        "--admin-key",
        dest="admin_key",
        default=os.environ.get("LLM_ROUTER_ADMIN_KEY", DEFAULT_ADMIN_KEY),
        help="admin key for --target (env LLM_ROUTER_ADMIN_KEY, default: the local one)",
    )
    report.set_defaults(key_env="LLM_ROUTER_ADMIN_KEY")
    add_tls_arguments(report)
    report.set_defaults(run=_report)


def _source(args: argparse.Namespace) -> _Source:
    """Where the server the config describes writes its log, unless the flags say otherwise;
    `ConfigError` for a config that does not load."""
    from router_service.config import check_redis_url, load_config

    config = load_config(*args.config)
    return _Source(
        redis=check_redis_url(args.redis, "--redis")
        if args.redis
        else config.store.resolved_redis_url(os.environ),
        stream=args.stream or config.call_log.stream_key(config.store.key_prefix),
        directory=args.calllog or config.call_log.directory,
    )


def _meter(unit: str, total: int | None) -> AbstractContextManager[Progress | None]:
    """A bar for reading the log, drawn when stderr is a terminal; none without tqdm (it comes
    with the training extra, which the service image leaves out)."""
    try:
        from training.progress import meter
    except ImportError:
        return nullcontext()
    bar: AbstractContextManager[Progress] = meter("reading the call log", unit, total)
    return bar


def _read(args: argparse.Namespace) -> tuple[list[LogEntry], LogScan, _Source]:
    import asyncio

    from redis.asyncio import Redis

    from router_service.calllog.reader import LogScan

    source = _source(args)
    scan = LogScan(since=args.since)
    url = source.redis
    if url is None:
        with _meter("B", scan.jsonl_size(source.directory)) as bar:
            return list(scan.jsonl(source.directory, bar)), scan, source

    async def read() -> list[LogEntry]:
        redis = Redis.from_url(url, socket_connect_timeout=5.0)
        try:
            with _meter("entry", await scan.stream_length(redis, source.stream)) as bar:
                return [entry async for entry in scan.stream(redis, source.stream, bar)]
        finally:
            await redis.aclose()

    return asyncio.run(read()), scan, source


def _write_rows(rows: list[dict[str, Any]], out: Path) -> None:
    """Write `rows` as JSONL to `out` through a `.partial` file beside it, so that `out` is
    never half written; the partial file is removed when writing fails."""
    import json

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8") as file:
            for row in rows:
                file.write(json.dumps(row, ensure_ascii=False) + "\n")
        partial.replace(out)
    except OSError:
        partial.unlink(missing_ok=True)
        raise


def _export(args: argparse.Namespace) -> int:
    from collections import Counter

    from redis.exceptions import RedisError

    from router_service.calllog.export import build_outcomes
    from router_service.config import ConfigError

    if not 0 <= args.test_share <= 1:
        print("llm-router: --test-share must be between 0 and 1", file=sys.stderr)
        return 2
    if args.out.is_dir():
        print(
            f"llm-router: --out {args.out} is a directory; give the file to write", file=sys.stderr
        )
        return 2
    try:
        entries, scan, source = _read(args)
    except ConfigError as exc:
        print(f"llm-router: {exc}", file=sys.stderr)
        return 2
    except (OSError, RedisError) as exc:
        print(f"llm-router: cannot read the call log: {exc}", file=sys.stderr)
        return 1
    rows, summary = build_outcomes(
        entries, test_share=args.test_share, served_score=args.served_score
    )
    try:
        _write_rows(rows, args.out)
    except OSError as exc:
        print(f"llm-router: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    models = Counter(model for row in rows for model in row["outcomes"])
    print(
        f"exported {summary.rows} rows ({summary.both_arms} with both arms) from "
        f"{summary.calls} calls in {source} to {args.out}"
    )
    if models:
        print("  outcomes per model: " + ", ".join(f"{m} {n}" for m, n in models.most_common()))
    print(
        f"  skipped: {summary.unanswered} unanswered calls, {summary.no_outcome} answered "
        f"without feedback or a judge grade, {summary.from_cache} answered from the response "
        f"cache, {summary.invalid} requests refused as invalid"
    )
    if summary.no_prompt:
        apps = ", ".join(f"{app}: {n}" for app, n in summary.no_prompt.most_common())
        print(
            f"  NOT TRAINABLE: {sum(summary.no_prompt.values())} calls of apps without "
            f"training_data_opt_in have no prompt text ({apps}); set "
            "apps.<app>.training_data_opt_in: true to include their future calls"
        )
    print(
        f"  read {summary.feedback} feedback ({summary.unmatched} feedback/grades without "
        f"their call), {summary.grades} judge grades, {summary.shadow_calls} shadow/judge "
        "call records (spend only)"
    )
    if scan.malformed:
        print(f"  {scan.malformed} unreadable log entries were skipped")
    return 0


def _budgets(report: Report, args: argparse.Namespace) -> None:
    """Fill in each app's budget from the server's Admin.GetBudget."""
    import asyncio

    import grpc
    from grpc import aio

    from router_service._proto import router_pb2 as pb
    from router_service._proto import router_pb2_grpc
    from router_service.calllog.report import Budget

    async def fetch() -> None:
        metadata = (("authorization", f"Bearer {args.admin_key}"),)
        async with open_channel(args, use_aio=True) as channel:
            admin = router_pb2_grpc.AdminStub(channel)
            for name, summary in report.apps.items():
                try:
                    reply = await admin.GetBudget(
                        pb.GetBudgetRequest(app_id=name), metadata=metadata, timeout=10
                    )
                except aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.NOT_FOUND:
                        continue
                    report.budget_note = f"budget state not available: {rpc_failure(exc, args)}"
                    return
                summary.budget = Budget(
                    limit_usd=reply.monthly_limit_usd,
                    spent_usd=reply.spent_usd,
                    reserved_usd=reply.reserved_usd,
                    state=reply.state,
                    period=reply.period,
                    soft_threshold=reply.soft_threshold if reply.has_limit else None,
                )

    asyncio.run(fetch())


def _report(args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError

    from router_service.calllog.report import render, summarize
    from router_service.config import ConfigError

    try:
        entries, scan, source = _read(args)
    except ConfigError as exc:
        print(f"llm-router: {exc}", file=sys.stderr)
        return 2
    except (OSError, RedisError) as exc:
        print(f"llm-router: cannot read the call log: {exc}", file=sys.stderr)
        return 1
    report = summarize(entries)
    report.malformed = scan.malformed
    if args.target:
        _budgets(report, args)
    else:
        report.budget_note = "budget: this month's spend from the log; --target shows limits"
    sys.stdout.write(f"call log: {source}\n\n" + render(report))
    if args.png is not None:
        try:
            from router_service.calllog.chart import write_chart
        except ImportError:
            print(
                "llm-router: --png needs matplotlib (pip install 'llm-router[training]')",
                file=sys.stderr,
            )
            return 1
        try:
            args.png.parent.mkdir(parents=True, exist_ok=True)
            write_chart(report, args.png)
        except OSError as exc:
            print(f"llm-router: cannot write the chart {args.png}: {exc.strerror}", file=sys.stderr)
            return 1
        print(f"chart written to {args.png}")
    return 0
