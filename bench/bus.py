"""Throughput of the scale-out path (a measurement, not a test; figures go to the docs).

    .venv/bin/python bench/bus.py --events 30000 --workers 1 2
    .venv/bin/python bench/bus.py --publish-only --nats nats://127.0.0.1:14222

End to end: spool append (fsynced group commits of 500) → publisher (PubAck, cursor
commit) → JetStream → W ``otasuke worker`` processes (full bundled rules and IOC lists)
→ PostgreSQL, stored and processed. Timed from the first append to the last event
processed; worker start-up (rule loading) is excluded. Publish-only: spool → stream.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import nats
import orjson
import sqlalchemy as sa

from otasuke.bus.jetstream import BusConfig, ensure_consumer, ensure_stream
from otasuke.db.engine import Database
from otasuke.db.models import StoredEvent
from otasuke.demo.seed import demo_sensor, seed_demo
from otasuke.ingest.receivers.publish import PublisherHandle, SpoolPublisher
from otasuke.ingest.spool import Spool

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.bus.test_workers import fortigate_line

PG = os.environ.get("OTASUKE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parents[1]


def record(sensor_id: int, seq: int) -> bytes:
    return orjson.dumps(
        {
            "peer": "127.0.0.1",
            "sensor": sensor_id,
            "transport": "tcp",
            "format": "fortigate",
            "raw": fortigate_line(seq),
            "host": None,
        }
    )


async def bus_call(config: BusConfig, what: str) -> int:
    nc = await nats.connect(config.servers[0])
    js = nc.jetstream()
    try:
        if what == "prepare":
            await ensure_stream(js, config)
            await ensure_consumer(js, config)
            return 0
        if what == "waiting":
            return int((await js.consumer_info(config.stream, config.durable)).num_waiting or 0)
        if what == "messages":
            return int((await js.stream_info(config.stream)).state.messages)
        await js.delete_stream(config.stream)
        return 0
    finally:
        await nc.close()


def publish_only(config: BusConfig, events: int, work: Path) -> None:
    spool = Spool(work / "spool")
    for first in range(0, events, 500):
        spool.append([record(1, s) for s in range(first, min(first + 500, events))])
    asyncio.run(bus_call(config, "prepare"))
    publisher = SpoolPublisher(spool, config)
    start = time.perf_counter()

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(publisher.run(stop, idle_seconds=0.001))
        while publisher.backlog_bytes() > 0:
            await asyncio.sleep(0.001)
        stop.set()
        await task

    asyncio.run(run())
    elapsed = time.perf_counter() - start
    stats = publisher.stats
    print(
        f"publish only, {config.max_batch_records} records/message: {events} events, "
        f"{stats.messages} messages in {elapsed:.2f} s = {events / elapsed:,.0f} events/s, "
        f"{stats.messages / elapsed:,.0f} messages/s"
    )
    spool.close()
    asyncio.run(bus_call(config, "delete"))


def end_to_end(config: BusConfig, events: int, workers: int, work: Path) -> None:
    schema = f"otasuke_m_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    db = Database(f"{PG}?options=-csearch_path%3D{schema}")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        db.migrate()
        with db.session() as s:
            seed_demo(s)
            sensor_id = demo_sensor(s, "tokai-parts", "fortigate").id
        asyncio.run(bus_call(config, "prepare"))
        env = {
            **os.environ,
            "OTASUKE_DATA_DIR": str(work / "data"),
            "OTASUKE_DATABASE_URL": db.url,
        }
        for _ in range(workers):
            procs.append(
                subprocess.Popen(
                    [
                        *(sys.executable, "-m", "otasuke.cli_commands.worker"),
                        *("--nats", config.servers[0], "--stream", config.stream),
                        *("--subject-prefix", config.subject_prefix, "--durable", config.durable),
                        *("--notify-every", "5"),
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        while asyncio.run(bus_call(config, "waiting")) < workers:
            time.sleep(0.2)
        spool = Spool(work / "spool")
        publisher = PublisherHandle(SpoolPublisher(spool, config)).start()
        processed = (
            sa.select(sa.func.count())
            .select_from(StoredEvent)
            .where(StoredEvent.processed.is_(True))
        )
        start = time.perf_counter()
        for first in range(0, events, 500):
            spool.append([record(sensor_id, s) for s in range(first, min(first + 500, events))])
        while True:
            with db.sessions() as s:
                if (s.scalar(processed) or 0) >= events:
                    break
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        print(
            f"end to end, {workers} worker(s), {config.max_batch_records} records/message: "
            f"{events} events in {elapsed:.2f} s = {events / elapsed:,.0f} events/s"
        )
        publisher.stop()
        spool.close()
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=60)
        db.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
        asyncio.run(bus_call(config, "delete"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--batch", type=int, default=500, help="records per bus message")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--publish-only", action="store_true")
    args = parser.parse_args()
    for workers in [0] if args.publish_only else args.workers:
        tag = uuid.uuid4().hex[:8]
        config = BusConfig(
            servers=(args.nats,),
            stream=f"OTASUKE_M_{tag}",
            subject_prefix=f"otasuke.m{tag}",
            durable=f"m-{tag}",
            max_batch_records=args.batch,
        )
        with tempfile.TemporaryDirectory() as tmp:
            if args.publish_only:
                publish_only(config, args.events, Path(tmp))
            else:
                end_to_end(config, args.events, workers, Path(tmp))


if __name__ == "__main__":
    main()
