"""Fixtures for the bus tests: the real NATS server, one fresh stream per test."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from otasuke.bus.jetstream import BusConfig
from tests.conftest import need

NATS_URL = os.environ.get("OTASUKE_TEST_NATS", "nats://127.0.0.1:4222")
START_NATS = (
    "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- "
    "-a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log"
)


def reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 4222), 2):
            return True
    except OSError:
        return False


@pytest.fixture
def nats_url() -> str:
    """The NATS server with JetStream (fails in CI, skips elsewhere when down)."""
    if not reachable(NATS_URL):
        need(f"NATS not reachable at {NATS_URL}; start it with '{START_NATS}'")
    return NATS_URL


async def delete_stream(url: str, stream: str) -> None:
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(stream)
    except NotFoundError:
        pass
    finally:
        await nc.close()


@pytest.fixture
def bus_config(nats_url: str) -> Iterator[BusConfig]:
    """A uniquely named stream, subject prefix and durable; the stream is deleted afterwards."""
    tag = uuid.uuid4().hex[:10]
    config = BusConfig(
        servers=(nats_url,),
        stream=f"OTASUKE_T_{tag}",
        subject_prefix=f"otasuke.t{tag}",
        durable=f"workers-{tag}",
        retry_initial_seconds=0.05,
        retry_max_seconds=0.5,
    )
    try:
        yield config
    finally:
        asyncio.run(delete_stream(nats_url, config.stream))
