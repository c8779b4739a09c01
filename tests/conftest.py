"""Fixtures shared by every level of tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.configs import fast_config
from tests.support.redis_server import redis_url
from tests.support.servers import Running, running_router


@pytest.fixture(scope="session")
def redis_url_fixture() -> Iterator[str]:
    """A reachable Redis (see tests.support.redis_server)."""
    with redis_url() as url:
        yield url


@pytest.fixture
async def router() -> AsyncIterator[Running]:
    """The embedded defaults, made fast, on a free port."""
    async with running_router(fast_config()) as running:
        yield running
