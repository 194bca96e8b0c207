"""Spool → JetStream, against the real NATS server: batches, PubAck before cursor, duplicates.

"Acknowledged" on the publisher side means JetStream answered the publish with a
PubAck; only then does the spool cursor move. Until then the spool is the point of
record, so NATS being unreachable only grows the spool's backlog.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import orjson
from nats.js import JetStreamContext
from nats.js.api import StorageType

from otasuke.bus.batch import decode_batch
from otasuke.bus.jetstream import HEADER_MSG_ID, BusConfig, ensure_stream, with_overrides
from otasuke.ingest.receivers.publish import SpoolPublisher, spool_identity
from otasuke.ingest.spool import Spool


def spool_record(n: int, sensor: int | None = 7) -> bytes:
    """A spool record as the syslog receiver writes it."""
    raw = f'date=2026-11-24 time=10:00:00 devname=FG60F type=event level=notice msg="seq={n:05d}"'
    if sensor is None:
        return orjson.dumps({"peer": "192.0.2.9", "sensor": None, "transport": "udp", "line": raw})
    return orjson.dumps(
        {
            "peer": "192.0.2.1",
            "sensor": sensor,
            "transport": "tcp",
            "format": "fortigate",
            "raw": raw,
            "host": None,
        }
    )


def with_js(url: str, work: Callable[[JetStreamContext], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        nc = await nats.connect(url)
        try:
            return await work(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(main())


async def stored_messages(js: JetStreamContext, stream: str) -> list[tuple[str, bytes]]:
    """(Nats-Msg-Id, body) of every message in the stream, in order (direct gets)."""
    info = await js.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(stream, seq)
        out.append(((msg.headers or {}).get(HEADER_MSG_ID, ""), msg.data or b""))
    return out


def publish_until_caught_up(publisher: SpoolPublisher, timeout: float = 15.0) -> None:
    """Run the publisher until the spool backlog is empty (or fail after ``timeout``)."""

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(publisher.run(stop, idle_seconds=0.01))
        deadline = asyncio.get_running_loop().time() + timeout
        while publisher.backlog_bytes() > 0 or not publisher.connected:
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.02)  # polling the backlog: the condition waited on
        stop.set()
        await task

    asyncio.run(main())
    assert publisher.backlog_bytes() == 0, f"backlog left: {publisher.stats}"


def test_stream_is_file_backed_and_drops_a_repeated_message_id(bus_config: BusConfig) -> None:
    async def work(js: JetStreamContext) -> None:
        await ensure_stream(js, bus_config)
        info = await js.stream_info(bus_config.stream)
        assert info.config.storage == StorageType.FILE
        assert info.config.duplicate_window == 120.0
        subject = bus_config.subject_for("abc")
        first = await js.publish(subject, b"x", headers={HEADER_MSG_ID: "abc:1:0-1:100"})
        again = await js.publish(subject, b"x", headers={HEADER_MSG_ID: "abc:1:0-1:100"})
        assert (first.duplicate, again.duplicate) == (None, True)
        assert again.seq == first.seq
        info = await js.stream_info(bus_config.stream)
        assert info.state.messages == 1

    with_js(bus_config.servers[0], work)


def test_publisher_batches_records_and_moves_the_cursor_after_the_pubacks(
    bus_config: BusConfig, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    spool.append(
        [spool_record(n) for n in range(1190)] + [spool_record(n, None) for n in range(10)]
    )
    end = spool.read(spool.cursor(), max_records=10_000).next_position
    publisher = SpoolPublisher(spool, bus_config)
    publish_until_caught_up(publisher)

    assert spool.cursor() == end == publisher.position
    assert (publisher.stats.records, publisher.stats.messages) == (1200, 3)  # 500 + 500 + 200
    messages = with_js(bus_config.servers[0], lambda js: stored_messages(js, bus_config.stream))
    records = [r for _, body in messages for r in decode_batch(body)[0]]
    assert len(records) == 1200 and len({r.event_id for r in records}) == 1200
    spool_id = spool_identity(spool.directory)
    assert messages[0][0].startswith(f"{spool_id}:") and messages[-1][0].endswith(
        f"-{end.segment}:{end.offset}"
    )
    routed = [r for r in records if r.sensor_id == 7]
    assert len(routed) == 1190 and routed[0].event_id.startswith(f"syslog-7-{spool_id}-")
    unknown = [r for r in records if r.sensor_id is None]
    assert len(unknown) == 10 and unknown[0].peer == "192.0.2.9"
    spool.close()


def test_republish_after_a_crash_before_the_cursor_move_is_dropped_as_duplicate(
    bus_config: BusConfig, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    spool.append([spool_record(n) for n in range(800)])
    before = spool.cursor()
    publish_until_caught_up(SpoolPublisher(spool, bus_config))
    spool.commit(before)  # the crash: PubAcks received, cursor not moved

    replay = SpoolPublisher(spool, bus_config)
    publish_until_caught_up(replay)
    print(f"\nre-publish after crash: {replay.stats}")
    assert (replay.stats.messages, replay.stats.duplicates) == (2, 2)
    messages = with_js(bus_config.servers[0], lambda js: stored_messages(js, bus_config.stream))
    assert len(messages) == 2
    assert sum(len(decode_batch(body)[0]) for _, body in messages) == 800
    spool.close()


def test_publisher_keeps_the_backlog_in_the_spool_while_nats_is_unreachable(
    bus_config: BusConfig, tmp_path: Path
) -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    down = with_overrides(bus_config, servers=(f"nats://127.0.0.1:{dead_port}",))
    spool = Spool(tmp_path / "spool")
    start = spool.cursor()
    publisher = SpoolPublisher(spool, down)

    async def while_down() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(publisher.run(stop))
        for n in range(0, 1000, 100):  # receivers keep appending while NATS is away
            await asyncio.to_thread(spool.append, [spool_record(i) for i in range(n, n + 100)])
        while publisher.stats.connect_errors < 3:
            await asyncio.sleep(0.02)  # polling the error counter: the condition waited on
        stop.set()
        await task

    asyncio.run(while_down())
    backlog = publisher.backlog_bytes()
    print(f"\nNATS unreachable: {publisher.stats}, backlog {backlog} bytes")
    assert publisher.stats.messages == 0 and publisher.stats.last_error
    assert spool.cursor() == start and backlog > 0

    up = SpoolPublisher(spool, bus_config)  # the same spool, NATS reachable again
    publish_until_caught_up(up)
    messages = with_js(bus_config.servers[0], lambda js: stored_messages(js, bus_config.stream))
    seqs = sorted(int(r.raw[-6:-1]) for _, body in messages for r in decode_batch(body)[0])
    assert seqs == list(range(1000))
    spool.close()


def test_a_record_larger_than_a_message_travels_as_a_marked_head(
    bus_config: BusConfig, tmp_path: Path
) -> None:
    small = with_overrides(bus_config, max_batch_bytes=4096)
    spool = Spool(tmp_path / "spool")
    big = orjson.dumps({"sensor": 7, "format": "fortigate", "raw": "x" * 20_000, "peer": "p"})
    spool.append([spool_record(0), big, spool_record(2)])
    publisher = SpoolPublisher(spool, small)
    publish_until_caught_up(publisher)
    messages = with_js(small.servers[0], lambda js: stored_messages(js, small.stream))
    records = [r for _, body in messages for r in decode_batch(body)[0]]
    assert len(records) == 3 and publisher.stats.oversize_records == 1
    marked = records[1]
    assert marked.damaged and marked.note and "larger than the bus allows" in marked.note
    assert all(len(body) <= 4096 for _, body in messages)
    spool.close()
