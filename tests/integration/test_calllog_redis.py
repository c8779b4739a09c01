"""The call log on a real Redis: the stream, feedback across replicas, export, a dead Redis."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc import aio
from redis.asyncio import Redis

from router_service._proto import router_pb2 as pb
from router_service.calllog.codec import dumps, loads
from router_service.calllog.entries import Feedback
from router_service.calllog.outcomes import check_outcome_row
from router_service.calllog.owners import owner_key
from router_service.calllog.reader import LogScan
from router_service.cli import main
from router_service.config import RouterConfig
from router_service.records import CallRecord
from tests.component.test_route_api import route_request
from tests.support.configs import DEMO_KEY, fast_config, fast_raw
from tests.support.progress import Recorder, Terminal
from tests.support.records import call_record
from tests.support.redis_server import free_port
from tests.support.servers import Running, auth, running_router
from tests.support.stores import delete_prefix, unique_prefix
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

OTHER_KEY = "other-app-key"


@pytest.fixture
async def stream(redis_url_fixture: str) -> AsyncIterator[str]:
    """A stream key of this test's own; it and its owner keys are deleted afterwards."""
    key = f"llm-router-test:{uuid.uuid4().hex}:calllog"
    yield key
    redis = Redis.from_url(redis_url_fixture)
    try:
        doomed = [k async for k in redis.scan_iter(match=f"{key}*")]
        if doomed:
            await redis.delete(*doomed)
    finally:
        await redis.aclose()


@pytest.fixture
async def prefix(redis_url_fixture: str) -> AsyncIterator[str]:
    """A store key prefix of this test's own (budgets, stats); its keys are deleted afterwards."""
    prefix = unique_prefix()
    yield prefix
    redis = Redis.from_url(redis_url_fixture)
    try:
        await delete_prefix(redis, prefix)
    finally:
        await redis.aclose()


def config(redis_url: str, stream: str, prefix: str, **changes: Any) -> RouterConfig:
    other = {"key_sha256": hashlib.sha256(OTHER_KEY.encode()).hexdigest()}
    return fast_config(
        store={"backend": "redis", "redis_url": redis_url, "key_prefix": prefix},
        call_log={"enabled": True, "stream": stream, "flush_interval_s": 0.01},
        apps={"other": other},
        **changes,
    )


async def route(running: Running, key: str = DEMO_KEY, **changes: Any) -> pb.RouteSummary:
    events = [e async for e in running.router.Route(route_request(**changes), metadata=auth(key))]
    return events[-1].done


async def stream_entries(redis_url: str, stream: str) -> list[Any]:
    redis = Redis.from_url(redis_url)
    try:
        return [loads(fields[b"e"]) for _, fields in await redis.xrange(stream)]
    finally:
        await redis.aclose()


async def test_records_go_to_the_stream_and_feedback_reaches_any_replica(
    redis_url_fixture: str, stream: str, prefix: str
) -> None:
    cfg = config(redis_url_fixture, stream, prefix)
    async with running_router(cfg) as a, running_router(cfg) as b:
        done = await route(a, request_id="xr-1")
        redis = Redis.from_url(redis_url_fixture)
        key = owner_key(stream, "demo", "xr-1")
        try:
            await eventually(lambda: redis.exists(key))
            ttl = await redis.ttl(key)
        finally:
            await redis.aclose()
        assert 3 * 24 * 3600 - 60 < ttl <= 3 * 24 * 3600
        # Replica b never saw the call: ownership comes from Redis.
        await b.router.Feedback(
            pb.FeedbackRequest(request_id="xr-1", score=0.5), metadata=auth(DEMO_KEY)
        )
        with pytest.raises(aio.AioRpcError) as caught:
            await b.router.Feedback(
                pb.FeedbackRequest(request_id="xr-1", score=0.5), metadata=auth(OTHER_KEY)
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    entries = await stream_entries(redis_url_fixture, stream)
    (record,) = [e for e in entries if isinstance(e, CallRecord)]
    assert record.request_id == "xr-1" and record.cost_micro_usd == done.cost_micro_usd
    assert record.prompt is not None
    (feedback,) = [e for e in entries if isinstance(e, Feedback)]
    assert (feedback.app, feedback.request_id, feedback.score) == ("demo", "xr-1", 0.5)


async def test_a_request_refused_as_invalid_is_in_the_stream_with_no_owner_key(
    redis_url_fixture: str, stream: str, prefix: str
) -> None:
    async with running_router(config(redis_url_fixture, stream, prefix)) as running:
        with pytest.raises(aio.AioRpcError) as caught:
            await route(running, request_id="bad-1", max_output_tokens=-1)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (record,) = await stream_entries(redis_url_fixture, stream)
    assert isinstance(record, CallRecord)
    assert (record.request_id, record.status, record.decision) == ("bad-1", "invalid", None)
    redis = Redis.from_url(redis_url_fixture)
    try:
        assert not await redis.exists(owner_key(stream, "demo", "bad-1"))
    finally:
        await redis.aclose()


async def test_deployments_under_different_key_prefixes_keep_their_logs_apart(
    redis_url_fixture: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefixes = [unique_prefix(), unique_prefix()]
    raws = [
        fast_raw(
            store={"backend": "redis", "redis_url": redis_url_fixture, "key_prefix": prefix},
            call_log={"enabled": True, "flush_interval_s": 0.01},
        )
        for prefix in prefixes
    ]
    redis = Redis.from_url(redis_url_fixture)
    try:
        for i, raw in enumerate(raws):
            async with running_router(RouterConfig.model_validate(raw)) as running:
                await route(running, request_id=f"deployment-{i}")
                await running.router.Feedback(
                    pb.FeedbackRequest(request_id=f"deployment-{i}", score=1.0),
                    metadata=auth(DEMO_KEY),
                )
        for i, prefix in enumerate(prefixes):
            entries = await stream_entries(redis_url_fixture, f"{prefix}:calllog")
            assert [e.request_id for e in entries] == [f"deployment-{i}"] * 2
            assert await redis.exists(owner_key(f"{prefix}:calllog", "demo", f"deployment-{i}"))
        # The report reads the stream of the config it is given, as the server resolves it.
        path = tmp_path / "router.yaml"
        path.write_text(yaml.safe_dump(raws[1]))
        assert await asyncio.to_thread(main, ["report", "--config", str(path)]) == 0
        out = capsys.readouterr().out
        assert f"call log: Redis stream {prefixes[1]}:calllog" in out
        assert "over 1 calls" in out
    finally:
        for prefix in prefixes:
            await delete_prefix(redis, prefix)
        await redis.aclose()


async def test_export_reads_the_stream(
    redis_url_fixture: str, stream: str, prefix: str, tmp_path: Path
) -> None:
    cfg = config(redis_url_fixture, stream, prefix, exploration={"shadow_rate": 1.0})
    async with running_router(cfg) as running:
        for i in range(3):
            done = await route(running, request_id=f"ex-{i}")
            await running.router.Feedback(
                pb.FeedbackRequest(request_id=done.request_id, score=1.0), metadata=auth(DEMO_KEY)
            )
        await route(running, key=OTHER_KEY, request_id="not-opted-in")
        shadow = running.server.feedback_loop.shadow if running.server.feedback_loop else None
        assert shadow is not None

        async def graded() -> bool:
            return shadow.counts["graded"] == 3

        await eventually(graded)
    out = tmp_path / "outcomes.jsonl"
    code = await asyncio.to_thread(
        main,
        [
            *("export", "--redis", redis_url_fixture, "--stream", stream, "--out", str(out)),
            *("--served-score", "feedback"),
        ],
    )
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for row in rows:
        check_outcome_row(row)
    assert sorted(r["id"] for r in rows) == [f"demo/ex-{i}" for i in range(3)]
    # The served model scored by the feedback sent (--served-score feedback).
    assert all(r["outcomes"]["glm-5.2"]["score"] == 1.0 for r in rows)
    assert all(set(r["outcomes"]) == {"glm-5.2", "gpt-5.5"} for r in rows)


async def test_export_reads_the_stream_with_a_bar_of_its_length(
    redis_url_fixture: str, stream: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis = Redis.from_url(redis_url_fixture)
    try:
        for index in range(2500):
            await redis.xadd(stream, {"e": dumps(call_record(request_id=f"r{index}"))})
        scan, bar = LogScan(), Recorder()
        assert await scan.stream_length(redis, stream) == 2500
        assert len([entry async for entry in scan.stream(redis, stream, bar)]) == 2500
        # A page at a time, never per entry.
        assert bar.updates == [1000, 1000, 500]
        # With --since, Redis cannot count what is read without reading it.
        assert await LogScan(since=0.0).stream_length(redis, stream) is None
    finally:
        await redis.aclose()
    monkeypatch.setattr(sys, "stderr", Terminal())
    argv = ["export", "--redis", redis_url_fixture, "--stream", stream]
    code = await asyncio.to_thread(main, [*argv, "--out", str(tmp_path / "out.jsonl")])
    assert code == 0
    assert "reading the call log:   0%|          | 0.00/2.50k [" in sys.stderr.getvalue()


async def test_a_dead_redis_holds_the_log_and_calls_go_on() -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    cfg = config(dead, "llm-router-test:dead:calllog", unique_prefix())
    async with running_router(cfg) as running:
        for i in range(3):
            done = await route(running, request_id=f"dead-{i}")
            assert done.finish_reason == "stop"
        log = running.server.feedback_loop.call_log if running.server.feedback_loop else None
        assert log is not None
        await asyncio.sleep(1.0)  # several failed writes: the records wait, none is dropped
        assert log.written == 0 and log.dropped["sink_error"] == 0
        # The replica remembers its own calls: the app's feedback is still accepted.
        await running.router.Feedback(
            pb.FeedbackRequest(request_id="dead-0", score=1.0), metadata=auth(DEMO_KEY)
        )
        # For a call it does not know it must ask Redis, which is down: UNAVAILABLE.
        with pytest.raises(aio.AioRpcError) as caught:
            await running.router.Feedback(
                pb.FeedbackRequest(request_id="elsewhere", score=1.0), metadata=auth(DEMO_KEY)
            )
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    # Still down at shutdown: each batch is tried once more, then dropped and counted (the
    # three calls' records and the feedback).
    assert log.dropped["sink_error"] == 4 and log.written == 0
