"""JetStream (NATS): the stream, the shared durable pull consumer, connecting with backoff.

What an acknowledgement means here:

- **PubAck** (publisher side): JetStream has the message in the stream's file store.
  With the server's default ``sync_interval`` (2 minutes) it may still be only in the
  OS page cache, so a power loss of the NATS machine can lose it. The publisher
  therefore moves the spool cursor only after the PubAck, and the operator either
  sets ``jetstream { sync_interval: always }`` in nats-server.conf (NATS ≥ 2.10; every
  acknowledged message is fsynced) or keeps the default knowing that a machine crash
  of the NATS host can lose up to 2 minutes of acknowledged batches
  (docs/operator/scale-out.md). A replicated stream (R3) makes this a quorum ack.
- **Message ack** (worker side): sent only after the PostgreSQL commit of the events and
  their detections. A worker killed before it acks leaves the message to be delivered
  again after ``ack_wait``; the store is idempotent by event id.

The stream uses file storage and a duplicate window (message id = spool range).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from otasuke.errors import ConfigError

log = logging.getLogger(__name__)

HEADER_MSG_ID = "Nats-Msg-Id"
PAYLOAD_MARGIN = 4096
"""Bytes kept free under the server's max_payload for headers and framing."""


@dataclass(frozen=True, slots=True)
class BusConfig:
    """Where the bus is and how the stream and consumer are shaped (settings: from_settings)."""

    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    stream: str = "OTASUKE_INGEST"
    subject_prefix: str = "otasuke.ingest"
    """Publishers send to ``<prefix>.<spool id>``; the stream holds ``<prefix>.>``."""
    durable: str = "otasuke-workers"
    """The durable pull consumer all workers share: each message goes to one of them."""
    duplicate_window_seconds: float = 120.0
    """JetStream drops a message whose Nats-Msg-Id it saw within this window."""
    max_age_seconds: float = 7 * 24 * 3600.0
    """Messages older than this leave the stream even if unacknowledged (0: keep)."""
    max_bytes: int = -1
    """Stream size limit in bytes (-1: none); when reached, new publishes are refused
    (discard new), so the backlog stays in the receivers' spools instead of being lost."""
    replicas: int = 1
    max_batch_records: int = 500
    max_batch_bytes: int = 1024 * 1024
    """Upper bound of one message body; clamped to the server's max_payload."""
    ack_wait_seconds: float = 30.0
    """A message not acknowledged within this is delivered again (workers send
    in-progress while a long transaction runs)."""
    max_ack_pending: int = 1000
    fetch_batch: int = 2
    """Messages a worker pulls at once."""
    connect_timeout_seconds: float = 2.0
    publish_timeout_seconds: float = 10.0
    retry_initial_seconds: float = 0.2
    retry_max_seconds: float = 10.0

    def __post_init__(self) -> None:
        if not self.servers:
            raise ConfigError("no NATS server given", field="bus_url", hint="nats://host:4222")
        if self.max_batch_records < 1 or self.max_batch_bytes < 1024:
            raise ConfigError(
                "batches must hold at least one record and 1 KiB",
                field="bus_batch_records",
                hint="defaults: 500 records, 1 MiB",
            )

    @property
    def stream_subjects(self) -> list[str]:
        return [f"{self.subject_prefix}.>"]

    def subject_for(self, spool_id: str) -> str:
        return f"{self.subject_prefix}.{spool_id}"

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> BusConfig:
        """From ``OTASUKE_BUS_*`` settings where they exist (see SETTING_NAMES), else defaults."""
        given: dict[str, Any] = {}
        url = getattr(settings, "bus_url", None)
        if url:
            given["servers"] = tuple(u.strip() for u in str(url).split(",") if u.strip())
        for name, setting in SETTING_NAMES.items():
            value = getattr(settings, setting, None)
            if value is not None:
                given[name] = value
        given.update(overrides)
        return cls(**given)


SETTING_NAMES = {
    "stream": "bus_stream",
    "subject_prefix": "bus_subject_prefix",
    "durable": "bus_durable",
    "duplicate_window_seconds": "bus_duplicate_window_seconds",
    "max_batch_records": "bus_batch_records",
    "max_batch_bytes": "bus_batch_bytes",
    "ack_wait_seconds": "bus_ack_wait_seconds",
    "replicas": "bus_replicas",
}
"""BusConfig field → the Settings field (OTASUKE_<NAME>) it is read from once it exists."""


def stream_config(config: BusConfig) -> StreamConfig:
    """File storage, work-queue retention, duplicate window, discard new when full."""
    return StreamConfig(
        name=config.stream,
        subjects=config.stream_subjects,
        storage=StorageType.FILE,
        retention=RetentionPolicy.WORK_QUEUE,
        discard=DiscardPolicy.NEW,
        duplicate_window=config.duplicate_window_seconds,
        max_age=config.max_age_seconds,
        max_bytes=config.max_bytes,
        num_replicas=config.replicas,
    )


def consumer_config(config: BusConfig) -> ConsumerConfig:
    """The shared durable pull consumer: explicit acks, redelivery forever after ack_wait."""
    return ConsumerConfig(
        durable_name=config.durable,
        name=config.durable,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=config.ack_wait_seconds,
        max_deliver=-1,
        max_ack_pending=config.max_ack_pending,
        filter_subject=f"{config.subject_prefix}.>",
    )


async def connect(
    config: BusConfig,
    *,
    on_error: Callable[[Exception], Awaitable[None]] | None = None,
    lost: asyncio.Event | None = None,
) -> NatsClient:
    """One connection attempt per server (raises if none answers); callers retry with backoff.

    The client's own reconnect is limited so that a connection that is lost ends up
    closed, and the caller's loop (with its backoff and counters) connects again.
    ``lost`` is set as soon as the connection drops (before any reconnect attempt):
    a reply awaited on it (a PubAck) will never come, so the caller need not wait for
    its timeout.
    """

    async def quiet(err: Exception) -> None:
        log.debug("nats: %s", err)

    async def disconnected() -> None:
        if lost is not None:
            lost.set()

    return await nats.connect(
        servers=list(config.servers),
        connect_timeout=config.connect_timeout_seconds,
        max_reconnect_attempts=3,
        reconnect_time_wait=0.5,
        error_cb=on_error or quiet,
        disconnected_cb=disconnected,
    )


async def close_quietly(nc: NatsClient | None) -> None:
    """Close a connection that may already be broken, never raising.

    ``Client.close`` flushes what is pending and raises ``ConnectionResetError`` when the
    server is gone (NATS stopped under load); raised from a ``finally`` that ended the
    worker process and the publisher thread instead of letting them reconnect.
    """
    if nc is None or nc.is_closed:
        return
    try:
        await nc.close()
    except (NatsError, OSError, TimeoutError) as err:
        log.debug("nats: closing a broken connection: %s: %s", type(err).__name__, err)


async def ensure_stream(js: JetStreamContext, config: BusConfig) -> None:
    """Create the stream, or bring an existing one to this configuration."""
    wanted = stream_config(config)
    try:
        await js.stream_info(config.stream)
    except NotFoundError:
        await js.add_stream(wanted)
        log.info("bus: stream %s created", config.stream)
        return
    await js.update_stream(wanted)


async def ensure_consumer(js: JetStreamContext, config: BusConfig) -> None:
    """Create the shared durable consumer if it does not exist yet."""
    try:
        await js.consumer_info(config.stream, config.durable)
    except NotFoundError:
        await js.add_consumer(config.stream, consumer_config(config))
        log.info("bus: durable consumer %s on %s created", config.durable, config.stream)


async def pull_subscription(
    js: JetStreamContext, config: BusConfig
) -> JetStreamContext.PullSubscription:
    """Bind to the shared durable (creating stream and consumer if needed)."""
    await ensure_stream(js, config)
    await ensure_consumer(js, config)
    return await js.pull_subscribe_bind(durable=config.durable, stream=config.stream)


def payload_limit(nc: NatsClient, config: BusConfig) -> int:
    """Largest message body to send: the configured one, within the server's max_payload."""
    server_max = int(nc.max_payload or config.max_batch_bytes)
    return max(1024, min(config.max_batch_bytes, server_max - PAYLOAD_MARGIN))


@dataclass(slots=True)
class Backoff:
    """Exponential backoff between retries (reset after a success)."""

    initial: float
    maximum: float
    current: float = field(init=False)

    def __post_init__(self) -> None:
        self.current = self.initial

    def next(self) -> float:
        delay = self.current
        self.current = min(self.current * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self.current = self.initial


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` unless ``stop`` is set first; True when stopping."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


def with_overrides(config: BusConfig, **changes: Any) -> BusConfig:
    """A copy of ``config`` with some fields changed (command-line options)."""
    return replace(config, **{k: v for k, v in changes.items() if v is not None})


# --- read-only figures for /metrics and `otasuke status` ------------------------------


@dataclass(frozen=True, slots=True)
class BusFigures:
    """What JetStream says now of the ingest stream and the workers' durable consumer.

    ``consumer_pending`` is the lag: messages in the stream not yet delivered to any
    worker; ``consumer_ack_pending`` are delivered but not yet acknowledged (a worker
    is storing them, or died and they come again after ``ack_wait``).
    """

    up: bool
    error: str | None = None
    """Why the server could not be asked (when ``up`` is False)."""
    stream: str = ""
    consumer: str = ""
    stream_exists: bool = False
    stream_messages: int = 0
    stream_bytes: int = 0
    consumer_exists: bool = False
    consumer_pending: int = 0
    consumer_ack_pending: int = 0
    consumer_redelivered: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "up": self.up,
            "error": self.error,
            "stream": self.stream,
            "consumer": self.consumer,
            "stream_exists": self.stream_exists,
            "stream_messages": self.stream_messages,
            "stream_bytes": self.stream_bytes,
            "consumer_exists": self.consumer_exists,
            "consumer_pending": self.consumer_pending,
            "consumer_ack_pending": self.consumer_ack_pending,
            "consumer_redelivered": self.consumer_redelivered,
        }


async def _ask(config: BusConfig, timeout: float) -> BusFigures:
    async def quiet(err: Exception) -> None:
        log.debug("nats (figures): %s", err)

    nc = await nats.connect(
        servers=list(config.servers),
        connect_timeout=timeout,
        # one try per server: 0 would mean "forever" to nats-py's first connect
        max_reconnect_attempts=1,
        reconnect_time_wait=0.1,
        error_cb=quiet,
    )
    try:
        js = nc.jetstream(timeout=timeout)
        known = replace(BusFigures(up=True), stream=config.stream, consumer=config.durable)
        try:
            stream = await js.stream_info(config.stream)
        except NotFoundError:
            return known
        state = stream.state
        try:
            consumer = await js.consumer_info(config.stream, config.durable)
        except NotFoundError:
            return replace(
                known,
                stream_exists=True,
                stream_messages=int(state.messages),
                stream_bytes=int(state.bytes),
            )
        return replace(
            known,
            stream_exists=True,
            stream_messages=int(state.messages),
            stream_bytes=int(state.bytes),
            consumer_exists=True,
            consumer_pending=int(consumer.num_pending or 0),
            consumer_ack_pending=int(consumer.num_ack_pending or 0),
            consumer_redelivered=int(consumer.num_redelivered or 0),
        )
    finally:
        await nc.close()


async def read_figures(config: BusConfig, timeout: float | None = None) -> BusFigures:
    """Stream and consumer figures, asked within ``timeout`` seconds (default: the connect
    timeout); never raises: an unreachable or silent server gives ``up=False`` and why."""
    limit = timeout if timeout is not None else config.connect_timeout_seconds
    try:
        return await asyncio.wait_for(_ask(config, limit), limit + 0.5)
    except (TimeoutError, OSError, NatsError) as exc:
        reason = str(exc) or exc.__class__.__name__
        return BusFigures(up=False, error=reason, stream=config.stream, consumer=config.durable)


def bus_figures(config: BusConfig, timeout: float | None = None) -> BusFigures:
    """:func:`read_figures` for code without an event loop (``otasuke status``)."""
    return asyncio.run(read_figures(config, timeout))
