"""A call-log batch that Redis ran after the writer gave up on it (a reply lost to a timeout
while Redis was frozen: a stopped process, a VM pause, a long fork) is retried by the writer;
the retry must not add the batch's records a second time: every call has exactly one cost
record. Uses a `redis-server` of its own (it is frozen on purpose)."""

from __future__ import annotations

import signal

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from router_service.calllog.codec import loads
from router_service.calllog.owners import owner_key
from router_service.calllog.sinks import RedisStreamSink, SinkError
from router_service.records import CallRecord
from tests.support.records import call_record
from tests.support.redis_server import redis_server_process

pytestmark = pytest.mark.integration

STREAM = "replay-test:calllog"


async def test_a_batch_redis_ran_after_the_client_gave_up_is_written_once() -> None:
    with redis_server_process() as (port, process):
        url = f"redis://127.0.0.1:{port}/0"
        client = Redis.from_url(
            url, socket_connect_timeout=0.5, socket_timeout=0.5, retry=Retry(NoBackoff(), 0)
        )
        blocker = Redis.from_url(url, socket_timeout=10)
        sink = RedisStreamSink(client, STREAM, max_len=1000, owner_ttl_s=60)
        batch = [call_record(request_id="r-1"), call_record(request_id="r-2", cost_micro_usd=7)]
        try:
            await client.ping()  # connected: the batch goes out in full to the frozen Redis
            await blocker.ping()
            process.send_signal(signal.SIGSTOP)
            try:
                with pytest.raises(SinkError):
                    await sink.write(batch)  # no answer in time
            finally:
                process.send_signal(signal.SIGCONT)  # Redis reads the batch and runs it
            await blocker.ping()
            await sink.write(batch)  # the writer's retry of the same batch
            entries = [loads(fields[b"e"]) for _, fields in await blocker.xrange(STREAM)]
            assert [e.request_id for e in entries if isinstance(e, CallRecord)] == ["r-1", "r-2"]
            assert await blocker.exists(owner_key(STREAM, "demo", "r-2"))
            # The next batch is written as usual.
            await sink.write([call_record(request_id="r-3")])
            assert await blocker.xlen(STREAM) == 3
        finally:
            await client.aclose()
            await blocker.aclose()
