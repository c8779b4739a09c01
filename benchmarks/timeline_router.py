"""`llm-router serve` with timestamps at the steps of each `Route` call, for `bench_timeline`.

Run as `python -m benchmarks.timeline_router MARKS.jsonl serve ...`: the same server, with a
few functions wrapped (nothing in `router_service` knows) so that each records
`time.perf_counter()` when it runs. On Linux that clock is CLOCK_MONOTONIC, shared by every
process, so the client can read the marks against its own. Calls must come one at a time: the
marks of one call are kept in one list and written as one JSON line when its `Route` ends.

Marks, in the order a call passes them (a later one may be missing when a call takes another
path, e.g. a cached answer never reaches the upstream):

    handler            `Route` starts (the request has crossed gRPC)
    authenticate       the caller's key is checked (after the RPC's trace is started)
    validate           the request is checked and converted
    prepare            the prompt is canonicalised and sized
    admit              the admission (rate limit and budget hold) is sent to the store ...
    plan               ... and the loop has run once, so that its request left
    classify_start     the classifier is asked ...
    embedded           ... has embedded the prompt ...
    classify_end       ... and has scored it
    hold_wait          the decision is made; waiting for the admission's budget hold ...
    held               ... which is there
    decision_message   the decision event is built (the stream's producer task is started)
    producer_run       the producer task runs for the first time ...
    endpoint_post      ... and reaches the provider's HTTP endpoint
    decision_written   gRPC has taken the decision event
    upstream_request   the request goes to the provider
    upstream_bytes     the provider's first bytes arrive
    first_batch        the first deltas go to gRPC
    end                `Route` ends
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from classifier import scorer
from router_service import pipeline
from router_service.admission import Admission
from router_service.api import batching, router_servicer
from router_service.api.router_servicer import RouterServicer
from router_service.classification import ClassifierRuntime
from router_service.cli import main
from router_service.providers import h1
from router_service.providers.http import HttpEndpoint

_marks: list[tuple[str, float]] = []


def mark(name: str) -> None:
    """Note `name` once per call (the first time it happens)."""
    if all(seen != name for seen, _ in _marks):
        _marks.append((name, time.perf_counter()))


def around(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function`, marking `name` each time it is called."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        mark(name)
        return function(*args, **kwargs)

    return wrapped


def install(out: Path) -> None:
    route = RouterServicer.Route
    delta_events = router_servicer.delta_events  # type: ignore[attr-defined]
    classify = ClassifierRuntime.classify
    hold_for = Admission.hold_for

    async def traced_route(self: RouterServicer, request: Any, context: Any) -> AsyncIterator[Any]:
        _marks.clear()
        mark("handler")
        try:
            async for event in route(self, request, context):
                yield event
                if event.WhichOneof("event") == "decision":
                    mark("decision_written")
        finally:
            mark("end")
            with out.open("a") as f:
                f.write(json.dumps(dict(_marks)) + "\n")

    embed = scorer.embed

    def traced_embed(text: str) -> Any:
        try:
            return embed(text)
        finally:
            mark("embedded")

    scorer.embed = traced_embed  # type: ignore[assignment]

    def traced_classify(self: ClassifierRuntime, messages: Any) -> Any:
        mark("classify_start")
        try:
            return classify(self, messages)
        finally:
            mark("classify_end")

    async def traced_hold_for(self: Admission, worst_case_micro_usd: int) -> Any:
        mark("hold_wait")
        try:
            return await hold_for(self, worst_case_micro_usd)
        finally:
            mark("held")

    produce = batching.Batches._run

    async def traced_produce(self: batching.Batches[Any], source: Any) -> None:
        mark("producer_run")
        await produce(self, source)

    plan = pipeline.Pipeline._plan

    async def traced_plan(self: pipeline.Pipeline, *args: Any, **kwargs: Any) -> Any:
        mark("plan")
        return await plan(self, *args, **kwargs)

    RouterServicer.Route = traced_route  # type: ignore[method-assign]
    RouterServicer._caller = around("authenticate", RouterServicer._caller)  # type: ignore[method-assign]
    router_servicer.validate_route_request = around(  # type: ignore[attr-defined]
        "validate",
        router_servicer.validate_route_request,  # type: ignore[attr-defined]
    )
    router_servicer.decision_message = around(  # type: ignore[attr-defined]
        "decision_message",
        router_servicer.decision_message,  # type: ignore[attr-defined]
    )
    pipeline._prepare = around("prepare", pipeline._prepare)
    pipeline.Pipeline._admit_on_arrival = around(  # type: ignore[method-assign]
        "admit", pipeline.Pipeline._admit_on_arrival
    )
    pipeline.Pipeline._plan = traced_plan  # type: ignore[method-assign]
    batching.Batches._run = traced_produce  # type: ignore[method-assign]
    HttpEndpoint._post = around("endpoint_post", HttpEndpoint._post)  # type: ignore[method-assign]
    ClassifierRuntime.classify = traced_classify  # type: ignore[method-assign]
    Admission.hold_for = traced_hold_for  # type: ignore[method-assign]
    router_servicer.delta_events = around("first_batch", delta_events)  # type: ignore[attr-defined]
    connection = h1._Connection
    connection.send = around("upstream_request", connection.send)  # type: ignore[method-assign]
    connection.data_received = around(  # type: ignore[method-assign]
        "upstream_bytes", connection.data_received
    )


if __name__ == "__main__":
    install(Path(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
