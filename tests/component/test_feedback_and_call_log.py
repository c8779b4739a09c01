"""The call log (JSONL) and the Feedback RPC over real gRPC."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from router_service._proto import router_pb2 as pb
from router_service.calllog.codec import loads
from router_service.calllog.entries import Feedback
from router_service.calllog.reader import LogScan
from router_service.config import RouterConfig
from router_service.records import CallRecord
from tests.component.test_route_api import route_request
from tests.support.configs import DEMO_KEY, fast_config
from tests.support.servers import Running, auth, running_router

OTHER_KEY = "other-app-key"


def config(directory: Path, flush_interval_s: float = 0.01) -> RouterConfig:
    """The call log on in `directory`, and a second app, `other`, without training opt-in."""
    other = {"key_sha256": hashlib.sha256(OTHER_KEY.encode()).hexdigest()}
    return fast_config(
        call_log={
            "enabled": True,
            "directory": str(directory),
            "flush_interval_s": flush_interval_s,
        },
        apps={"other": other},
    )


async def route(running: Running, key: str = DEMO_KEY, **changes: Any) -> pb.RouteSummary:
    request = route_request(**changes)
    events = [e async for e in running.router.Route(request, metadata=auth(key))]
    return events[-1].done


def logged(directory: Path) -> list[Any]:
    return list(LogScan().jsonl(directory))


async def test_every_call_is_logged_with_prompt_text_only_for_opted_in_apps(
    tmp_path: Path,
) -> None:
    async with running_router(config(tmp_path)) as running:
        demo = await route(running, request_id="mine-1")
        other = await route(running, key=OTHER_KEY, request_id="theirs-1")
    entries = logged(tmp_path)
    by_id = {e.request_id: e for e in entries if isinstance(e, CallRecord)}
    assert set(by_id) == {"mine-1", "theirs-1"}
    mine, theirs = by_id["mine-1"], by_id["theirs-1"]
    assert mine.app == "demo" and mine.cost_micro_usd == demo.cost_micro_usd
    assert mine.prompt is not None and mine.prompt[-1][0] == "user"
    assert theirs.app == "other" and theirs.prompt is None
    assert theirs.cost_micro_usd == other.cost_micro_usd
    (path,) = list(tmp_path.iterdir())  # noqa: ASYNC240 (a test's temporary directory)
    assert path.name.startswith("calllog-") and path.suffix == ".jsonl"
    assert path.stat().st_mode & 0o777 == 0o600
    line = next(json.loads(x) for x in path.read_text().splitlines() if "theirs-1" in x)
    assert line["messages"] is None and "quarterly report" not in json.dumps(line)


async def test_a_cancelled_call_records_the_attempt_it_cut_short(tmp_path: Path) -> None:
    slow = {"ttft_ms": 0, "tokens_per_second": 400, "answer_tokens": 2000}
    directory = tmp_path / "log"
    settings = config(directory)
    settings = settings.model_copy(
        update={"providers": fast_config(providers={"sim-openai": slow}).providers}
    )
    async with running_router(settings) as running:
        request = route_request(request_id="left-1", max_output_tokens=2000)
        call = running.router.Route(request, metadata=auth(DEMO_KEY))
        async for event in call:
            if event.HasField("delta"):
                break
        call.cancel()
        await asyncio.sleep(0.05)
    [record] = [e for e in logged(directory) if isinstance(e, CallRecord)]
    assert record.status == "cancelled"
    assert [(a.model, a.outcome.value) for a in record.attempts] == [("glm-5.2", "cancelled")]


async def test_invalid_requests_of_a_known_app_are_logged_without_a_decision(
    tmp_path: Path,
) -> None:
    many = [pb.Message(role="user", content="Summarize the PRIVATE-PROMPT-TEXT.")] * 300
    invalid: dict[str, dict[str, Any]] = {
        "too-many": {"messages": many},
        "bad-enum": {"hints": pb.RouteHints(tier=7)},  # type: ignore[arg-type]
        "absurd": {"max_output_tokens": 2_000_000_000},
        # Refused by the policy, after the request's own checks.
        "no-model": {"hints": pb.RouteHints(force_model="nope")},
    }
    async with running_router(config(tmp_path)) as running:
        for request_id, changes in [*invalid.items(), ("bad id!", {})]:
            with pytest.raises(aio.AioRpcError) as caught:
                await route(running, request_id=request_id, **changes)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # Without a known app key nothing is logged: anyone could fill the log.
        with pytest.raises(aio.AioRpcError) as caught:
            await route(running, key="not-a-key", request_id="anonymous", messages=many)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Feedback is for routed calls only.
        with pytest.raises(aio.AioRpcError) as caught:
            await running.router.Feedback(
                pb.FeedbackRequest(request_id="too-many", score=1.0), metadata=auth(DEMO_KEY)
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        await route(running, request_id="fine")
    records = {e.request_id: e for e in logged(tmp_path) if isinstance(e, CallRecord)}
    # An id that is not valid itself is not recorded: that call's record has none.
    assert set(records) == {*invalid, "", "fine"}
    for request_id in [*invalid, ""]:
        record = records[request_id]
        assert (record.app, record.status, record.decision) == ("demo", "invalid", None)
        assert record.cost_micro_usd == 0 and record.attempts == () and record.prompt is None
    assert records["too-many"].error == "300 messages; the limit is 256"
    assert records["bad-enum"].error == "hints.tier has unknown value 7"
    assert records["absurd"].error == "max_output_tokens is 2000000000; the limit is 65536"
    assert records["no-model"].error == "hints.force_model: unknown model 'nope'"
    assert records[""].error.startswith("request_id must be")
    assert records["fine"].decision is not None and records["fine"].status == "ok"
    (path,) = list(tmp_path.iterdir())  # noqa: ASYNC240 (a test's temporary directory)
    assert "PRIVATE-PROMPT-TEXT" not in path.read_text()


async def test_a_request_grpc_could_not_parse_is_logged_for_its_app(tmp_path: Path) -> None:
    # A RouteRequest whose task (field 1, length-delimited) holds bytes that are not UTF-8.
    async with running_router(config(tmp_path)) as running:
        call = running.channel.unary_stream(
            "/router.v1.Router/Route",
            request_serializer=lambda b: b,
            response_deserializer=pb.RouteEvent.FromString,
        )
        with pytest.raises(aio.AioRpcError) as caught:
            async for _ in call(b"\x0a\x02\xff\xfe", metadata=auth(DEMO_KEY)):
                pass
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (record,) = logged(tmp_path)
    assert isinstance(record, CallRecord)
    assert (record.app, record.request_id, record.status) == ("demo", "", "invalid")
    assert "invalid UTF-8" in record.error


async def test_feedback_on_the_apps_own_request_is_logged(tmp_path: Path) -> None:
    async with running_router(config(tmp_path)) as running:
        done = await route(running)
        reply = await running.router.Feedback(
            pb.FeedbackRequest(request_id=done.request_id, score=0.25, label="thumbs_down"),
            metadata=auth(DEMO_KEY),
        )
        assert reply.accepted
    (given,) = [e for e in logged(tmp_path) if isinstance(e, Feedback)]
    assert (given.app, given.request_id, given.score, given.label) == (
        "demo",
        done.request_id,
        0.25,
        "thumbs_down",
    )


async def test_feedback_on_unknown_or_another_apps_request_is_not_found(tmp_path: Path) -> None:
    async with running_router(config(tmp_path)) as running:
        theirs = await route(running, key=OTHER_KEY, request_id="shared-id")
        for request_id in ("never-made", theirs.request_id):
            with pytest.raises(aio.AioRpcError) as caught:
                await running.router.Feedback(
                    pb.FeedbackRequest(request_id=request_id, score=1.0), metadata=auth(DEMO_KEY)
                )
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        # The same id made by this app too: each app's feedback joins its own call.
        await route(running, request_id="shared-id")
        await running.router.Feedback(
            pb.FeedbackRequest(request_id="shared-id", score=1.0), metadata=auth(DEMO_KEY)
        )
    assert [e.app for e in logged(tmp_path) if isinstance(e, Feedback)] == ["demo"]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (pb.FeedbackRequest(score=1.0), "request_id is empty"),
        (pb.FeedbackRequest(request_id="bad id!", score=1.0), "request_id must be"),
        (pb.FeedbackRequest(request_id="r", score=1.5), "score is 1.5"),
        (pb.FeedbackRequest(request_id="r", score=float("nan")), "score is nan"),
        (pb.FeedbackRequest(request_id="r", score=1, label="x" * 200), "label is longer"),
    ],
)
async def test_bad_feedback_is_invalid_argument(
    router: Running, request_: pb.FeedbackRequest, message: str
) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await router.router.Feedback(request_, metadata=auth(DEMO_KEY))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (caught.value.details() or "")


async def test_feedback_needs_an_app_key(router: Running) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await router.router.Feedback(pb.FeedbackRequest(request_id="r", score=1.0))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_without_a_call_log_feedback_is_unavailable(router: Running) -> None:
    done = await route(router)
    with pytest.raises(aio.AioRpcError) as caught:
        await router.router.Feedback(
            pb.FeedbackRequest(request_id=done.request_id, score=1.0), metadata=auth(DEMO_KEY)
        )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "call log is disabled" in (caught.value.details() or "")


async def test_shutdown_writes_what_is_queued(tmp_path: Path) -> None:
    # A long flush interval: nothing is written until the server stops.
    async with running_router(config(tmp_path, flush_interval_s=60)) as running:
        for i in range(5):
            await route(running, request_id=f"q-{i}")
        assert (
            running.server.feedback_loop is not None
            and running.server.feedback_loop.call_log is not None
        )
        assert running.server.feedback_loop.call_log.pending == 5
    assert sorted(e.request_id for e in logged(tmp_path)) == [f"q-{i}" for i in range(5)]


async def test_an_unwritable_log_drops_and_counts_but_never_fails_a_call(tmp_path: Path) -> None:
    # The call log's directory is a file: every write fails, up to shutdown.
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    async with running_router(config(blocked)) as running:
        log = running.server.feedback_loop.call_log if running.server.feedback_loop else None
        assert log is not None
        for i in range(3):
            done = await route(running, request_id=f"d-{i}")
            assert done.finish_reason == "stop"
    assert log.dropped["sink_error"] == 3 and log.written == 0
    assert blocked.read_text() == ""


async def test_a_log_writable_again_loses_nothing(tmp_path: Path) -> None:
    blocked = tmp_path / "calllog"
    blocked.write_text("")  # a file where the directory should be: writes fail
    async with running_router(config(blocked)) as running:
        log = running.server.feedback_loop.call_log if running.server.feedback_loop else None
        assert log is not None
        for i in range(3):
            await route(running, request_id=f"w-{i}")
        await asyncio.sleep(0.5)  # failed writes, retried
        assert log.written == 0 and log.dropped["sink_error"] == 0
        blocked.unlink()
        blocked.mkdir()
        for _ in range(100):  # the next retry (backoff up to 2 s) writes them
            if log.written == 3:
                break
            await asyncio.sleep(0.05)
        assert log.written == 3
    assert sorted(e.request_id for e in logged(blocked)) == [f"w-{i}" for i in range(3)]
    assert sum(log.dropped.values()) == 0


def test_unreadable_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    good = json.dumps(
        {
            "kind": "feedback",
            "v": 1,
            "request_id": "r",
            "app": "a",
            "at": 5.0,
            "score": 1.0,
            "label": "",
            "comment": "",
        }
    )
    (tmp_path / "calllog-2025-05-01.jsonl").write_text(f"{good}\nnot json\n{{}}\n{good}\n")
    (tmp_path / "unrelated.txt").write_text("ignored")
    scan = LogScan()
    assert [e.request_id for e in scan.jsonl(tmp_path)] == ["r", "r"]
    assert scan.malformed == 2
    assert loads(good) == Feedback(request_id="r", app="a", at=5.0, score=1.0)


async def test_a_full_queue_drops_and_counts_without_waiting(tmp_path: Path) -> None:
    from router_service.calllog import build_call_log
    from router_service.config import CallLogConfig
    from tests.support.records import call_record

    log = build_call_log(CallLogConfig(directory=tmp_path, queue_size=2), redis=None)
    log.start()
    for i in range(5):
        log.observe(call_record(request_id=f"f-{i}"))
    assert log.dropped["queue_full"] == 3 and log.pending == 2
    # Every call was remembered for feedback, logged or not.
    assert await log.owners.owns("demo", "f-4")
    await log.aclose()
    assert [e.request_id for e in logged(tmp_path)] == ["f-0", "f-1"]
    assert log.submit(call_record()) is False and log.dropped["closed"] == 1


async def test_invalid_requests_are_logged_up_to_a_per_app_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client looping on a malformed request cannot push other apps' cost records out of
    the log: past the per-app, per-minute allowance its records are dropped and counted."""
    from router_service.calllog import build_call_log, writer
    from router_service.config import CallLogConfig
    from router_service.records import invalid_call
    from tests.support.records import call_record

    now = [600.0]
    monkeypatch.setattr(writer.time, "monotonic", lambda: now[0])
    log = build_call_log(CallLogConfig(directory=tmp_path), redis=None)
    log.start()
    for i in range(writer.INVALID_PER_MINUTE + 5):
        log.observe(invalid_call("loud", f"bad-{i}", "too many messages"))
    log.observe(invalid_call("quiet", "q-0", "too many messages"))
    log.observe(call_record(request_id="routed"))
    assert log.dropped[writer.INVALID_FLOOD] == 5
    now[0] += 60  # the next minute: a new allowance
    log.observe(invalid_call("loud", "next-minute", "too many messages"))
    assert log.dropped[writer.INVALID_FLOOD] == 5
    await log.aclose()
    ids = [e.request_id for e in logged(tmp_path)]
    assert len(ids) == writer.INVALID_PER_MINUTE + 3
    assert {"q-0", "routed", "next-minute"} <= set(ids)
    assert f"bad-{writer.INVALID_PER_MINUTE}" not in ids
