"""The lean request-path Redis connection against real Redis servers: replies in order under
concurrency, errors, scripts Redis has never seen, credentials and database, timeouts and
restarts (after which it reconnects by itself)."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError, ResponseError, TimeoutError

from router_service.store.resp import RespConnection, ScriptSource
from tests.support.redis_server import BUSY, free_port, redis_server_process

pytestmark = pytest.mark.integration


@pytest.fixture
def own_redis() -> Iterator[int]:
    """A redis-server of this test's own (it is reconfigured, blocked or stopped)."""
    with redis_server_process() as (port, _):
        yield port


@pytest.fixture
async def conn(redis_url_fixture: str) -> AsyncIterator[RespConnection]:
    client = Redis.from_url(redis_url_fixture, socket_timeout=2)
    connection = RespConnection.for_client(client)
    assert connection is not None
    yield connection
    await connection.aclose()
    await client.aclose()


async def test_concurrent_callers_each_get_their_own_reply(conn: RespConnection) -> None:
    replies = await asyncio.gather(*(conn.execute("ECHO", f"m{i}") for i in range(500)))
    assert replies == [f"m{i}".encode() for i in range(500)]


async def test_a_caller_who_left_does_not_shift_the_replies(conn: RespConnection) -> None:
    gone = asyncio.ensure_future(conn.execute("ECHO", "gone"))
    await asyncio.sleep(0)  # sent
    gone.cancel()
    assert await conn.execute("ECHO", "next") == b"next"


async def test_error_replies_raise_and_the_connection_stays_usable(conn: RespConnection) -> None:
    with pytest.raises(ResponseError, match="unknown command"):
        await conn.execute("NO-SUCH-COMMAND")
    assert await conn.execute("PING") == b"PONG"
    assert await conn.execute("EXISTS", "resp-test-missing") == 0
    assert await conn.execute("GET", "resp-test-missing") is None


async def test_a_script_redis_has_not_seen_is_loaded(own_redis: int) -> None:
    conn = RespConnection("127.0.0.1", own_redis)
    script = ScriptSource("return {KEYS[1], tonumber(ARGV[1]) + 1}")
    assert await conn.evalsha(script, ["k"], [41]) == [b"k", 42]
    await conn.execute("SCRIPT", "FLUSH")
    assert await conn.evalsha(script, ["k"], [1]) == [b"k", 2]
    await conn.aclose()


async def test_credentials_and_database_come_from_the_client(own_redis: int) -> None:
    admin = Redis(port=own_redis)
    await admin.execute_command("ACL", "SETUSER", "router", "on", ">s3cret", "~*", "+@all")
    url = f"redis://router:s3cret@127.0.0.1:{own_redis}/2"
    client = Redis.from_url(url)
    conn = RespConnection.for_client(client)
    assert conn is not None
    await conn.execute("SET", "where", "db2")
    db2 = Redis(port=own_redis, db=2)
    assert await db2.get("where") == b"db2"
    await db2.aclose()
    assert await admin.get("where") is None
    wrong = RespConnection.for_client(Redis.from_url(url.replace("s3cret", "wrong")))
    assert wrong is not None
    with pytest.raises(ConnectionError, match="refused 'AUTH'"):
        await wrong.execute("PING")
    for closing in (conn, wrong):
        await closing.aclose()
    await client.aclose()
    await admin.aclose()


async def test_a_timeout_replaces_the_connection(own_redis: int) -> None:
    conn = RespConnection("127.0.0.1", own_redis, timeout_s=0.2)
    assert await conn.execute("PING") == b"PONG"
    blocker = Redis(port=own_redis, socket_timeout=10)
    busy = asyncio.create_task(blocker.eval(BUSY, 0, 600))  # type: ignore[misc]
    await asyncio.sleep(0.05)
    with pytest.raises(TimeoutError):
        await conn.execute("PING")
    await busy
    assert await conn.execute("ECHO", "after") == b"after"
    await blocker.aclose()
    await conn.aclose()


async def test_a_restarted_redis_is_reconnected_to() -> None:
    port = free_port()
    conn = RespConnection("127.0.0.1", port, timeout_s=1, connect_timeout_s=0.5)
    with redis_server_process(port=port):
        assert await conn.execute("PING") == b"PONG"
    with pytest.raises(ConnectionError):
        await conn.execute("PING")
    with redis_server_process(port=port):
        assert await conn.execute("PING") == b"PONG"
    await conn.aclose()


def test_only_plain_tcp_standalone_clients_get_a_lean_connection() -> None:
    assert RespConnection.for_client(Redis.from_url("redis://127.0.0.1:1/0")) is not None
    assert RespConnection.for_client(Redis.from_url("rediss://127.0.0.1:1/0")) is None
    assert RespConnection.for_client(Redis.from_url("unix:///tmp/redis.sock")) is None
    assert RespConnection.for_client(object()) is None


async def test_a_silent_connection_is_replaced_when_the_caller_gives_up_first() -> None:
    """A peer that accepts and never answers (a half-open connection): the store's own
    operation timeout cancels the call before the connection's timer fires; the next call
    must not wait on the same dead connection."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn = RespConnection("127.0.0.1", port, timeout_s=0.2)
    for _ in range(2):
        with pytest.raises(builtins.TimeoutError):
            async with asyncio.timeout(0.2):
                await conn.execute("PING")
    assert len(accepted) == 2
    await conn.aclose()
    for writer in accepted:
        writer.close()
    server.close()
    await server.wait_closed()
