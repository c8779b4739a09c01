"""`llm-router feedback` and `llm-router simulate-traffic`: send outcomes and traffic by hand.

`simulate-traffic` replays the prompts of an outcome JSONL file (e.g. the public data in
`../shared/data/`) through `Route`, the way an app would, and sends each answer's feedback: the
score the dataset recorded for its weak model when the router chose the cheap tier, for its
strong model when it chose frontier. It is how the README's loop produces logged A/B outcomes
on the embedded defaults.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router_service.cli.client import (
    add_connection_arguments,
    open_channel,
    rpc_failure,
    seconds,
)


def register(commands: argparse._SubParsersAction[Any]) -> None:
    feedback = commands.add_parser(
        "feedback",
        help="send a quality score for an earlier request",
        description="Send Router.Feedback: the quality (0-1) of the answer to REQUEST_ID, "
        "which must be a request of the app whose key is used.",
    )
    feedback.add_argument("request_id", help="the request id (shown by `route`)")
    feedback.add_argument("--score", type=float, required=True, help="quality in [0, 1]")
    feedback.add_argument("--label", default="", help='e.g. "thumbs_up"')
    feedback.add_argument(
        "--comment", default="", help="free text stored with the score in the call log"
    )
    add_connection_arguments(feedback)
    feedback.set_defaults(run=_feedback)

    simulate = commands.add_parser(
        "simulate-traffic",
        help="route the prompts of an outcome JSONL file and send their recorded feedback",
        description=(
            "Route each prompt of an outcome dataset (docs/OUTCOMES.md) through Router.Route "
            "and, with --weak and --strong, send Feedback with the score the dataset recorded "
            "for the weak model (cheap tier served) or the strong model (frontier served)."
        ),
    )
    simulate.add_argument("--data", type=Path, required=True, help="outcome JSONL file")
    simulate.add_argument("--limit", type=int, default=200, help="prompts to route (default 200)")
    simulate.add_argument("--concurrency", type=int, default=8, help="calls in flight (default 8)")
    simulate.add_argument("--weak", help="the dataset's model whose score a cheap answer gets")
    simulate.add_argument("--strong", help="the dataset's model whose score a frontier answer gets")
    simulate.add_argument(
        "--task", help="route every prompt as this task class (default: the row's task)"
    )
    add_connection_arguments(simulate)
    simulate.add_argument("--timeout", type=seconds, default=120.0, help="deadline per call")
    simulate.set_defaults(run=_simulate)


def _feedback(args: argparse.Namespace) -> int:
    import grpc

    from router_service._proto import router_pb2 as pb
    from router_service._proto import router_pb2_grpc

    metadata = (("authorization", f"Bearer {args.key}"),)
    request = pb.FeedbackRequest(
        request_id=args.request_id, score=args.score, label=args.label, comment=args.comment
    )
    with open_channel(args) as channel:
        try:
            router_pb2_grpc.RouterStub(channel).Feedback(request, metadata=metadata, timeout=30)
        except grpc.RpcError as exc:
            print(f"llm-router: {rpc_failure(exc, args)}", file=sys.stderr)
            return 1
    print(f"feedback recorded for {args.request_id}")
    return 0


@dataclass
class _Tally:
    routed: int = 0
    failed: int = 0
    feedback: int = 0
    explored: int = 0
    cost_usd: float = 0.0
    by_tier: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)


def _simulate(args: argparse.Namespace) -> int:
    import asyncio
    import itertools

    from router_service.calllog.outcomes import OutcomeFormatError, read_outcomes
    from training.dataset import no_pair

    if args.limit < 1 or args.concurrency < 1:
        print("llm-router: --limit and --concurrency must be at least 1", file=sys.stderr)
        return 2
    if (args.weak is None) != (args.strong is None):
        print("llm-router: give both --weak and --strong, or neither", file=sys.stderr)
        return 2
    try:
        rows = list(itertools.islice(read_outcomes(args.data), args.limit))
    except (OSError, OutcomeFormatError) as exc:
        print(f"llm-router: {exc}", file=sys.stderr)
        return 1
    if args.weak is not None and rows:
        lacking = sum(
            args.weak not in row["outcomes"] or args.strong not in row["outcomes"] for row in rows
        )
        if lacking == len(rows):
            why = no_pair(args.weak, args.strong, (row["outcomes"] for row in rows))
            print(f"llm-router: {why}", file=sys.stderr)
            return 2
        if lacking:
            print(
                f"note: {lacking} of {len(rows)} rows lack an outcome of {args.weak!r} or "
                f"{args.strong!r}: a call gets no feedback when routed to the tier whose model "
                "its row lacks",
                file=sys.stderr,
            )
    started = time.perf_counter()
    tally = asyncio.run(_replay(args, rows))
    tiers = "".join(f"{tier} {n}, " for tier, n in sorted(tally.by_tier.items()))
    print(
        f"routed {tally.routed} of {len(rows)} prompts in {time.perf_counter() - started:.1f} s "
        f"({tiers}{tally.explored} explored), ${tally.cost_usd:.4f}; "
        f"feedback sent for {tally.feedback}"
    )
    for error, count in sorted(tally.errors.items()):
        print(f"  {count} failed: {error}")
    return 0 if tally.routed else 1


async def _replay(args: argparse.Namespace, rows: list[dict[str, Any]]) -> _Tally:
    import asyncio

    from grpc import aio

    from router_service._proto import router_pb2 as pb
    from router_service._proto import router_pb2_grpc

    metadata = (("authorization", f"Bearer {args.key}"),)
    tally = _Tally()
    batch = uuid.uuid4().hex[:8]
    queue: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()
    for item in enumerate(rows):
        queue.put_nowait(item)

    async def one(router: router_pb2_grpc.RouterAsyncStub, i: int, row: dict[str, Any]) -> None:
        request = pb.RouteRequest(
            task=args.task or row["task"] or "default",
            messages=[pb.Message(role=m["role"], content=m["content"]) for m in row["messages"]],
            request_id=f"sim-{batch}-{i}",
        )
        decision = done = None
        async for event in router.Route(request, metadata=metadata, timeout=args.timeout):
            kind = event.WhichOneof("event")
            if kind == "decision":
                decision = event.decision
            elif kind == "done":
                done = event.done
        assert decision is not None
        assert done is not None
        tier = pb.Tier.Name(decision.tier).removeprefix("TIER_").lower()
        tally.routed += 1
        tally.by_tier[tier] = tally.by_tier.get(tier, 0) + 1
        tally.explored += decision.experiment_arm == "explore"
        tally.cost_usd += done.cost_usd
        source = args.weak if decision.tier == pb.TIER_CHEAP else args.strong
        outcome = row["outcomes"].get(source) if source else None
        if outcome is not None:
            await router.Feedback(
                pb.FeedbackRequest(
                    request_id=decision.request_id, score=outcome["score"], label=source
                ),
                metadata=metadata,
                timeout=args.timeout,
            )
            tally.feedback += 1

    async def worker(router: router_pb2_grpc.RouterAsyncStub) -> None:
        while not queue.empty():
            i, row = queue.get_nowait()
            try:
                await one(router, i, row)
            except aio.AioRpcError as exc:
                tally.failed += 1
                error = rpc_failure(exc, args)
                tally.errors[error] = tally.errors.get(error, 0) + 1

    async with open_channel(args, use_aio=True) as channel:
        router = router_pb2_grpc.RouterStub(channel)
        await asyncio.gather(*(worker(router) for _ in range(args.concurrency)))
    return tally
