"""Publisher (スプール→バス): the drain's scale-out variant, spool → NATS JetStream.

Reads spool records from the durable cursor, packs them into batches
(:mod:`otasuke.bus.batch`), publishes each batch and waits for JetStream's PubAck,
and only then moves the cursor. Until the PubAck the spool stays the point of
record: with NATS down, the publisher retries with backoff and the backlog grows
in the spool (``backlog_bytes``, shown in status), nothing is dropped.

A crash between the PubAck and the cursor move re-publishes the batch with the same
``Nats-Msg-Id`` (the spool range), which JetStream drops within its duplicate window;
a batch cut differently after a restart still carries the same event ids, which the
worker's store recognises as duplicates.

Event ids are ``syslog-<sensor>-<spool id>-<segment>-<offset>``: the spool id (a random
name kept in ``<spool>/spool-id``) makes them unique across receiver machines, whose
spool positions overlap.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import threading
import time
from collections.abc import Awaitable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from otasuke.bus.batch import BusRecord, encode_record, envelope_bus_record, message_id
from otasuke.bus.jetstream import (
    HEADER_MSG_ID,
    Backoff,
    BusConfig,
    close_quietly,
    connect,
    ensure_stream,
    payload_limit,
    sleep_or_stop,
)
from otasuke.ingest.spool import Damaged, Position, Record, Spool

log = logging.getLogger(__name__)

SPOOL_ID_FILE = "spool-id"
COMMIT_EVERY_SECONDS = 0.05
"""While busy, the cursor moves at most this often (a crash re-publishes at most this much,
dropped by JetStream as duplicates); when caught up, at once."""


def spool_identity(directory: Path) -> str:
    """This spool's name on the bus: made once (12 hex digits), kept beside the segments."""
    path = directory / SPOOL_ID_FILE
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    name = secrets.token_hex(6)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, name.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return name


def bus_event_id(sensor_id: int, spool_id: str, position: Position) -> str:
    """The idempotency key of a spooled line on the bus: which spool, where in it."""
    return f"syslog-{sensor_id}-{spool_id}-{position.segment}-{position.offset}"


def to_bus_record(spool_id: str, item: Record | Damaged) -> BusRecord:
    """A spool record (or damaged stretch) as it travels on the bus."""
    pos = item.position
    where = f"spool-{spool_id}-{pos.segment}-{pos.offset}"
    if isinstance(item, Damaged):
        return BusRecord(
            event_id=where, sensor_id=None, raw=item.data.decode("utf-8", "replace"), damaged=True
        )
    try:
        obj: Any = orjson.loads(item.payload)
    except orjson.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        return BusRecord(
            event_id=where,
            sensor_id=None,
            raw=item.payload.decode("utf-8", "replace"),
            damaged=True,
            note="spool record is not a JSON object",
        )
    if obj.get("kind") in ("http", "bulk"):  # an HTTP envelope: its own event id, if any
        return envelope_bus_record(spool_id, pos, obj)
    sensor = obj.get("sensor")
    if not isinstance(sensor, int) or isinstance(sensor, bool):
        return BusRecord(
            event_id=where,
            sensor_id=None,
            raw=str(obj.get("line") or obj.get("raw") or ""),
            format=obj.get("format"),
            peer=obj.get("peer"),
            transport=obj.get("transport"),
        )
    return BusRecord(
        event_id=bus_event_id(sensor, spool_id, pos),
        sensor_id=sensor,
        raw=str(obj.get("raw", "")),
        format=obj.get("format"),
        host=obj.get("host") or None,
        peer=obj.get("peer"),
        transport=obj.get("transport"),
    )


def shrink(record: BusRecord, limit: int) -> BusRecord:
    """A record too large for one bus message: the head of it, marked for the quarantine."""
    note = f"record of {len(record.raw.encode())} bytes is larger than the bus allows ({limit})"
    head = record.raw.encode()[: max(0, limit - 1024)].decode("utf-8", "ignore")
    return BusRecord(
        event_id=record.event_id,
        sensor_id=None,
        raw=head,
        format=record.format,
        peer=record.peer,
        transport=record.transport,
        damaged=True,
        note=note,
    )


@dataclass(frozen=True, slots=True)
class Batch:
    """One bus message to publish and the spool range it covers."""

    first: Position
    end: Position
    """Where the next batch starts; the cursor moves here after the PubAck."""
    records: int
    body: bytes


@dataclass(slots=True)
class PublishStats:
    """Counters since start (a seam for /metrics and ``otasuke status``)."""

    records: int = 0
    messages: int = 0
    duplicates: int = 0
    """Batches JetStream reported as already stored (a re-publish after a crash)."""
    bytes: int = 0
    connect_errors: int = 0
    publish_errors: int = 0
    oversize_records: int = 0
    last_error: str | None = None


class SpoolPublisher:
    """Moves spool records to the JetStream stream; one publisher per spool."""

    def __init__(self, spool: Spool, config: BusConfig, *, spool_id: str | None = None) -> None:
        self.spool = spool
        self.config = config
        self.spool_id = spool_id or spool_identity(spool.directory)
        self.subject = config.subject_for(self.spool_id)
        self.position = spool.cursor()
        """End of the last batch JetStream acknowledged (the cursor follows it)."""
        self._committed = self.position
        self._committed_at = time.monotonic()
        self.stats = PublishStats()
        self.connected = False

    def backlog_bytes(self) -> int:
        """Spool bytes not yet acknowledged by JetStream (the backlog shown in status)."""
        return self.spool.backlog_bytes(self.position)

    def read_batch(self, position: Position, limit: int) -> Batch | None:
        """The batch starting at ``position`` (blocking file I/O), or None when caught up."""
        read = self.spool.read(position, max_records=self.config.max_batch_records, max_bytes=limit)
        items: list[Record | Damaged] = [*read.records, *read.damaged]
        items.sort(key=lambda r: r.position)
        if not items:
            if read.next_position != position:  # only empty segments were skipped
                return Batch(position, read.next_position, 0, b"")
            return None
        lines: list[bytes] = []
        size = 0
        end = read.next_position
        for item in items:
            record = to_bus_record(self.spool_id, item)
            line = encode_record(record)
            if len(line) + 1 > limit:
                self.stats.oversize_records += 1
                line = encode_record(shrink(record, limit))
            if lines and size + len(line) + 1 > limit:
                end = item.position  # the rest goes in the next batch
                break
            lines.append(line)
            size += len(line) + 1
        return Batch(position, end, len(lines), b"\n".join(lines))

    async def publish(self, js: JetStreamContext, batch: Batch) -> None:
        """Publish one batch and wait for the PubAck; the cursor may move past it afterwards."""
        if batch.records:
            ack = await js.publish(
                self.subject,
                batch.body,
                timeout=self.config.publish_timeout_seconds,
                stream=self.config.stream,
                headers={HEADER_MSG_ID: message_id(self.spool_id, batch.first, batch.end)},
            )
            self.stats.messages += 1
            self.stats.records += batch.records
            self.stats.bytes += len(batch.body)
            if ack.duplicate:
                self.stats.duplicates += 1
        self.position = batch.end

    async def commit(self) -> None:
        """Move the spool cursor to the end of the last acknowledged batch (fsynced)."""
        if self.position != self._committed:
            position = self.position
            await asyncio.to_thread(self.spool.commit, position)
            self._committed = position
            self._committed_at = time.monotonic()

    async def run(self, stop: asyncio.Event, idle_seconds: float = 0.05) -> None:
        """Publish until ``stop`` is set; NATS errors are counted and retried with backoff."""
        backoff = Backoff(self.config.retry_initial_seconds, self.config.retry_max_seconds)
        while not stop.is_set():
            nc: NatsClient | None = None
            lost = asyncio.Event()
            try:
                nc = await connect(self.config, lost=lost)
                js = nc.jetstream()
                await ensure_stream(js, self.config)
                self.connected = True
                backoff.reset()
                await self._publish_loop(nc, js, stop, idle_seconds, lost)
            except (NatsError, OSError, TimeoutError) as err:
                self._failed(err, connected=self.connected)
                if await sleep_or_stop(stop, backoff.next()):
                    break
            finally:
                self.connected = False
                await self.commit()  # what was acknowledged so far
                await close_quietly(nc)  # raising here would end the publisher thread

    async def _publish_loop(
        self,
        nc: NatsClient,
        js: JetStreamContext,
        stop: asyncio.Event,
        idle_seconds: float,
        lost: asyncio.Event | None = None,
    ) -> None:
        """Read the next batch while the current one waits for its PubAck (two fsyncs of the
        cursor cost more than a publish here, so the cursor moves at most every
        ``COMMIT_EVERY_SECONDS`` while busy, and at once when caught up).

        When the connection drops (``lost``), the loop ends at once instead of waiting out
        the PubAck timeout; the caller reconnects and publishes the same batch again under
        the same message id, which JetStream drops if the first copy was stored."""
        lost = lost or asyncio.Event()
        limit = payload_limit(nc, self.config)
        batch = await asyncio.to_thread(self.read_batch, self.position, limit)
        while not stop.is_set():
            if nc.is_closed or lost.is_set():
                raise NatsError("connection to NATS lost")
            if batch is None:
                await self.commit()
                await sleep_or_stop(stop, idle_seconds)
                batch = await asyncio.to_thread(self.read_batch, self.position, limit)
                continue
            ahead = asyncio.ensure_future(asyncio.to_thread(self.read_batch, batch.end, limit))
            try:
                await unless_lost(self.publish(js, batch), lost)
            finally:
                following = await ahead
            if time.monotonic() - self._committed_at >= COMMIT_EVERY_SECONDS:
                await self.commit()
            batch = following

    def _failed(self, err: BaseException, *, connected: bool) -> None:
        if connected:
            self.stats.publish_errors += 1
        else:
            self.stats.connect_errors += 1
        self.stats.last_error = f"{err.__class__.__name__}: {err}"
        log.warning(
            "publisher: NATS %s (%s); %d spool bytes wait, retrying",
            "publish failed" if connected else "unreachable",
            self.stats.last_error,
            self.backlog_bytes(),
        )


async def unless_lost(work: Awaitable[None], lost: asyncio.Event) -> None:
    """Await ``work``, or cancel it and raise as soon as the connection is lost."""
    task = asyncio.ensure_future(work)
    if not task.done():
        watch = asyncio.ensure_future(lost.wait())
        try:
            await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
    if not task.done():
        task.cancel()
        with suppress(asyncio.CancelledError, NatsError, OSError, TimeoutError):
            await task
        raise NatsError("connection to NATS lost while waiting for the PubAck")
    task.result()


class PublisherHandle:
    """A publisher running in a thread of its own (own asyncio loop); ``stop()`` ends it."""

    def __init__(self, publisher: SpoolPublisher) -> None:
        self.publisher = publisher
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spool-publisher", daemon=True)

    def start(self) -> PublisherHandle:
        self._thread.start()
        self._ready.wait()
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self._stop = asyncio.Event()
            self._ready.set()
            await self.publisher.run(self._stop)

        try:
            self._loop.run_until_complete(main())
        finally:
            self._loop.close()

    def stop(self, timeout: float = 30) -> None:
        """Stop after the batch in flight (whose cursor moves only if it was acknowledged)."""
        if self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)


def start_publisher(spool: Spool, config: BusConfig) -> PublisherHandle:
    """Start publishing ``spool`` to JetStream in a background thread (instead of the drain)."""
    return PublisherHandle(SpoolPublisher(spool, config)).start()
