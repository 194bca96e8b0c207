"""Durable ingest throughput and what durability costs (issue 5, Benchmarks; not a test).

    .venv/bin/python bench/ingest.py                      # everything, ~1 minute
    .venv/bin/python bench/ingest.py --seconds 5 --clients 8
    .venv/bin/python bench/ingest.py --json

* **HTTP** ``POST /api/v1/ingest``: uvicorn with the real app (SQLite, WAL, a tmp data
  dir, a FortiGate sensor made with ``otasuke.tenancy.admin.add_sensor``) in a
  subprocess on a free 127.0.0.1 port; ``--clients`` concurrent httpx2 clients post
  batches of 1, 10, 100 and 1,000 FortiGate envelope lines for ``--seconds`` each.
  Ack = 202 = the envelopes appended to the spool and fsynced (group commit); next to
  it the same server with the spool's fsync off (``Spool(fsync=False)``, what
  ``OTASUKE_SPOOL_FSYNC=false`` does). As for the syslog rows the drain does not run
  (the receiver alone: parsing and the database insert come after the answer), and the
  admission limits are lifted in the bench server (the backlog only grows).
* **TCP syslog → spool**: ``start_syslog`` with ``SyslogConfig(fsync=True|False)``,
  drain off (spool only), FortiGate lines over one and four connections; counted
  as acknowledged through ``on_acknowledged``.
* **Drain**: ``--drain-lines`` syslog records (FortiGate lines, as the syslog receiver
  writes them) appended to a spool first, then timed: ``Drain.run_once`` (batches of
  2,000: parse, store idempotently by event id, commit, move the cursor) until the spool
  is empty, into SQLite (WAL, ``synchronous=FULL``) and into PostgreSQL
  (``OTASUKE_TEST_PG``, a fresh schema; skipped when unreachable). Then, on the same
  database, **detection of the drained events**: ``Pipeline.process_pending()`` with the
  bundled rules and IOC lists (loaded before the clock starts) until none is pending.
  ``--drain-only`` runs just these rows.
* **fsync latency** of the disk under the tmp dir: 1,000 × (write 4 KiB + fsync).

Client and server share the machine's cores: the rates are for the whole machine,
not per receiver core.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import orjson

ROOT = Path(__file__).resolve().parents[1]
BATCHES = (1, 10, 100, 1000)


def fortigate_line(seq: int) -> str:
    return (
        f"date=2026-11-24 time=10:{seq // 60 % 60:02d}:{seq % 60:02d} devname=FG60F "
        f"type=traffic subtype=forward level=notice srcip=192.168.10.{seq % 250 + 1} "
        f"srcport={1024 + seq % 60000} dstip=203.0.113.9 dstport=443 action=accept "
        f'service=HTTPS msg="seq={seq}"'
    )


# --- the server subprocess ---------------------------------------------------------------


def serve(data_dir: Path, port: int, fsync_off: bool) -> None:
    import uvicorn

    from otasuke.db.engine import Database
    from otasuke.ingest.parsers import file_parsers
    from otasuke.ingest.receivers.drain import Drain, IngestSpool
    from otasuke.ingest.spool import Spool
    from otasuke.settings import Settings
    from otasuke.web.app import create_app

    settings = Settings(data_dir=data_dir, database_url=f"sqlite:///{data_dir / 'otasuke.db'}")
    object.__setattr__(settings, "ingest_max_pending", 10**12)
    object.__setattr__(settings, "ingest_max_inflight", 10**6)
    object.__setattr__(settings, "ingest_max_spool_bytes", 10**15)
    db = Database(settings.effective_database_url)
    # Load the parser registry before the first request: its lazy loading is not
    # thread-safe (concurrent first requests can see it half filled: "unknown format").
    file_parsers()
    spool = Spool(data_dir / "spool", fsync=not fsync_off)
    drain = Drain(spool, db)  # not started: the receiver alone, as in the syslog rows
    app = create_app(settings, db=db, ingest_spool=IngestSpool.of_drain(spool, drain))
    try:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    finally:
        spool.close()


# --- HTTP --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(data_dir: Path) -> str:
    from otasuke.db.engine import Database
    from otasuke.demo.seed import seed_demo
    from otasuke.tenancy import admin
    from otasuke.tenancy.scope import Viewer

    db = Database(f"sqlite:///{data_dir / 'otasuke.db'}")
    db.migrate()
    with db.session() as s:
        seed_demo(s)
        from sqlalchemy import select

        from otasuke.db.models import Organization

        customer = s.scalars(select(Organization).where(Organization.slug == "tokai-parts")).one()
        _, token = admin.add_sensor(
            s, Viewer.system(), customer, kind="fortigate", name="bench FortiGate"
        )
    db.dispose()
    return token


async def http_cell(
    url: str, token: str, size: int, clients: int, seconds: float, seq0: int
) -> tuple[int, float]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
    counter = [seq0]
    accepted = [0]
    deadline = time.perf_counter() + seconds

    def body() -> bytes:
        start = counter[0]
        counter[0] += size
        return b"\n".join(
            orjson.dumps({"format": "fortigate", "raw": fortigate_line(i), "event_id": f"b{i}"})
            for i in range(start, start + size)
        )

    async def client() -> None:
        async with httpx2.AsyncClient(base_url=url, headers=headers, timeout=60) as c:
            while time.perf_counter() < deadline:
                r = await c.post("/api/v1/ingest", content=body())
                if r.status_code != 202:
                    raise RuntimeError(f"{r.status_code}: {r.text[:200]}")
                accepted[0] += int(r.json()["accepted"])

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return accepted[0], time.perf_counter() - started


def http_bench(fsync_off: bool, clients: int, seconds: float) -> dict[int, float]:
    with tempfile.TemporaryDirectory(prefix="otasuke-bench-", dir=os.environ.get("TMPDIR")) as d:
        data_dir = Path(d)
        token = prepare(data_dir)
        port = free_port()
        args = [sys.executable, __file__, "--serve", str(data_dir), str(port)]
        proc = subprocess.Popen([*args, "--fsync-off"] if fsync_off else args, cwd=ROOT)
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(200):
                try:
                    httpx2.get(url + "/metrics", timeout=1)
                    break
                except httpx2.HTTPError:
                    time.sleep(0.1)
            rates: dict[int, float] = {}
            seq = 0
            for size in BATCHES:
                n, elapsed = asyncio.run(http_cell(url, token, size, clients, seconds, seq))
                seq += n + clients * size
                rates[size] = n / elapsed
        finally:
            proc.terminate()
            proc.wait(30)
    return rates


# --- TCP syslog ----------------------------------------------------------------------------


def syslog_bench(fsync: bool, connections: int, lines: int) -> float:
    from otasuke.db.engine import Database
    from otasuke.ingest.receivers.syslog import SyslogConfig, start_syslog
    from otasuke.settings import Settings

    with tempfile.TemporaryDirectory(prefix="otasuke-bench-", dir=os.environ.get("TMPDIR")) as d:
        data_dir = Path(d)
        settings = Settings(data_dir=data_dir)
        db = Database(f"sqlite:///{data_dir / 'otasuke.db'}")
        db.migrate()
        acked = [0]
        all_acked = threading.Event()
        total = lines * connections

        def on_ack(n: int) -> None:
            acked[0] += n
            if acked[0] >= total:
                all_acked.set()

        config = SyslogConfig(
            spool_dir=data_dir / "spool", tcp_port=0, udp_port=None, fsync=fsync, drain=False
        )
        handle = start_syslog(settings, db, config, on_acknowledged=on_ack)
        port = handle.tcp_port
        assert port is not None
        payloads = [
            b"".join(
                b"<189>" + fortigate_line(c * lines + i).encode() + b"\n" for i in range(lines)
            )
            for c in range(connections)
        ]

        def send(data: bytes) -> None:
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(data)

        started = time.perf_counter()
        threads = [threading.Thread(target=send, args=(p,)) for p in payloads]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if not all_acked.wait(120):
            raise RuntimeError(f"only {acked[0]} of {total} lines acknowledged")
        elapsed = time.perf_counter() - started
        handle.stop()
        db.dispose()
    return total / elapsed


# --- drain ---------------------------------------------------------------------------------

PG = os.environ.get("OTASUKE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def drain_bench(backend: str, lines: int, detector: Any) -> tuple[float, float] | None:
    """Spool ``lines`` syslog records, time the drain into ``backend``, then detection;
    (lines/s, events/s), None when the database is unreachable."""
    import sqlalchemy as sa

    from otasuke.db.engine import Database
    from otasuke.demo.seed import demo_sensor, seed_demo
    from otasuke.ingest.receivers.drain import Drain
    from otasuke.ingest.spool import Spool
    from otasuke.pipeline import Pipeline
    from otasuke.settings import Settings

    with tempfile.TemporaryDirectory(prefix="otasuke-bench-", dir=os.environ.get("TMPDIR")) as d:
        data_dir = Path(d)
        admin = None
        schema = f"otasuke_b_{os.getpid()}_{int(time.time())}"
        if backend == "sqlite":
            db = Database(f"sqlite:///{data_dir / 'otasuke.db'}")
        else:
            admin = sa.create_engine(PG)
            try:
                with admin.begin() as conn:
                    conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            except sa.exc.OperationalError:
                admin.dispose()
                return None
            db = Database(f"{PG}?options=-csearch_path%3D{schema}")
        try:
            db.migrate()
            with db.session() as s:
                seed_demo(s)
                sensor_id = demo_sensor(s, "tokai-parts", "fortigate").id
            spool = Spool(data_dir / "spool")
            for first in range(0, lines, 500):
                spool.append(
                    [
                        orjson.dumps(
                            {
                                "peer": "127.0.0.1",
                                "sensor": sensor_id,
                                "transport": "tcp",
                                "format": "fortigate",
                                "raw": fortigate_line(i),
                                "host": None,
                            }
                        )
                        for i in range(first, min(first + 500, lines))
                    ]
                )
            drain = Drain(spool, db, batch_records=2000)
            started = time.perf_counter()
            while drain.run_once():
                pass
            elapsed = time.perf_counter() - started
            spool.close()
            if drain.stats.accepted != lines:
                raise RuntimeError(f"drain stored {drain.stats.accepted} of {lines} lines")
            pipeline = Pipeline(db, Settings(data_dir=data_dir), detector)
            started = time.perf_counter()
            processed = pipeline.process_pending().events
            detected = time.perf_counter() - started
            if processed != lines:
                raise RuntimeError(f"detection processed {processed} of {lines} events")
        finally:
            db.dispose()
            if admin is not None:
                with admin.begin() as conn:
                    conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
    return lines / elapsed, lines / detected


# --- fsync -----------------------------------------------------------------------------------


def fsync_latency(n: int = 1000) -> tuple[float, float]:
    block = os.urandom(4096)
    times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="otasuke-fsync-", dir=os.environ.get("TMPDIR")) as d:
        fd = os.open(Path(d) / "f", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for _ in range(n):
                t = time.perf_counter()
                os.write(fd, block)
                os.fsync(fd)
                times.append(time.perf_counter() - t)
        finally:
            os.close(fd)
    q = statistics.quantiles(times, n=100)
    return q[49] * 1000, q[98] * 1000


# --- main ----------------------------------------------------------------------------------


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}"


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--syslog-lines", type=int, default=50_000, help="per connection")
    parser.add_argument("--drain-lines", type=int, default=20_000)
    parser.add_argument("--drain-only", action="store_true", help="only the drain rows")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", nargs=2, metavar=("DATA_DIR", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--fsync-off", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), int(args.serve[1]), args.fsync_off)
        return
    logging.getLogger("otasuke").setLevel(logging.ERROR)  # unknown-peer notices of the bench
    load_before = loadavg()
    started = datetime.now(UTC)
    from otasuke.detect.engine import Detector

    detector = Detector.load()
    drain = {b: drain_bench(b, args.drain_lines, detector) for b in ("sqlite", "postgresql")}
    if args.drain_only:
        print(f"{started:%Y-%m-%d %H:%M} UTC, {machine()}, load average (1 min) ", end="")
        print(f"{load_before} → {loadavg()}")
        print_drain(drain, args.drain_lines)
        return
    p50, p99 = fsync_latency()
    http_full = http_bench(False, args.clients, args.seconds)
    http_off = http_bench(True, args.clients, args.seconds)
    syslog: dict[tuple[bool, int], float] = {}
    for conns in (1, 4):
        for fsync in (True, False):
            syslog[(fsync, conns)] = syslog_bench(fsync, conns, args.syslog_lines // conns)
    result = {
        "date": f"{started:%Y-%m-%d %H:%M} UTC",
        "machine": machine(),
        "loadavg_1min": f"{load_before} → {loadavg()}",
        "fsync_4k_ms": {"p50": round(p50, 3), "p99": round(p99, 3)},
        "http_clients": args.clients,
        "http": {str(k): {"on": http_full[k], "off": http_off[k]} for k in BATCHES},
        "syslog": {
            f"{c}conn": {"on": syslog[(True, c)], "off": syslog[(False, c)]} for c in (1, 4)
        },
        "drain_lines": args.drain_lines,
        "drain": drain,
    }
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return
    print(f"{result['date']}, {result['machine']}, load average (1 min) {result['loadavg_1min']}")
    print(f"fsync of 4 KiB (1,000 × write + fsync): p50 {p50:.3f} ms, p99 {p99:.3f} ms\n")
    print("| path | ack = durable (events/s) | durability off (events/s) | durable / off |")
    print("|---|---:|---:|---:|")
    for k in BATCHES:
        full, off = http_full[k], http_off[k]
        print(
            f"| HTTP → spool, batches of {k:,}, {args.clients} clients (fsync on vs off) "
            f"| {full:,.0f} | {off:,.0f} | {full / off:.2f} |"
        )
    for c in (1, 4):
        on, off = syslog[(True, c)], syslog[(False, c)]
        print(
            f"| TCP syslog → spool, {c} connection{'s' if c > 1 else ''} (fsync on vs off) "
            f"| {on:,.0f} | {off:,.0f} | {on / off:.2f} |"
        )
    print()
    print_drain(drain, args.drain_lines)


def print_drain(drain: dict[str, tuple[float, float] | None], lines: int) -> None:
    print("| into | drain: spool → parse → store, lines/s | then detection, events/s |")
    print("|---|---:|---:|")
    for backend, rates in drain.items():
        shown = "unreachable | –" if rates is None else f"{rates[0]:,.0f} | {rates[1]:,.0f}"
        print(f"| {backend}, {lines:,} FortiGate syslog lines | {shown} |")


if __name__ == "__main__":
    main()
