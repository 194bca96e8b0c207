"""Fault: NATS stops for a while under syslog load, then comes back (issue 5, point 4).

Scale-out as an operator runs it: ``otasuke serve`` with ``OTASUKE_BUS_URL`` (its
receivers spool every line, its publisher moves the spool to JetStream) and one
``otasuke worker`` (JetStream → PostgreSQL). A PRIVATE nats-server (its own port and
store directory, never the shared one on 4222) is stopped a third of the way into a
sustained TCP syslog load — gracefully (SIGTERM) or hard (SIGKILL) — and started
again ~3 s later on the same port and store. Meanwhile the receivers go on
acknowledging into the spool and the publisher's backlog (spool bytes past its
cursor, read from the spool directory itself) grows; once NATS is back the
publisher reconnects and re-publishes, the worker re-binds its consumer, and every
acknowledged line is stored exactly once (unique event id, one row per ``seq``).

REQ-MON-24H (monitoring goes on through an outage of a part), REQ-MON-NET.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import nats
import orjson
import pytest
from sqlalchemy import func, select

from otasuke.bus.jetstream import BusConfig
from otasuke.db.engine import Database
from otasuke.db.models import StoredEvent
from otasuke.demo.seed import demo_sensor, seed_demo
from tests.bus.test_workers import tiny_detector_paths
from tests.conftest import free_port, need, wait_for
from tests.e2e.test_serve import wait_until_serving
from tests.ingest.test_fault_db_down import SEQ, N, Sender

pytestmark = pytest.mark.postgres

NATS_SERVER = Path(os.environ.get("OTASUKE_NATS_SERVER", "/usr/sbin/nats-server"))
OUTAGE_AT = N // 3
"""Lines sent before NATS is stopped."""
MIN_OUTAGE_SECONDS = 3.0
ACK_WAIT = 3.0
"""Seconds before JetStream delivers an unacknowledged message again (30 by default)."""
RECEIVED = re.compile(r'^otasuke_events_received_total\{transport="tcp"\} ([0-9.e+]+)$', re.M)


@dataclass
class PrivateNats:
    """A throw-away nats-server with JetStream on 127.0.0.1:<port>, store in ``root``."""

    root: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [str(NATS_SERVER), "-js", "-sd", str(self.root / "store")]
        args += ["-a", "127.0.0.1", "-p", str(self.port), "-l", str(self.root / "nats.log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.proc is not None and (self.proc.poll() is not None or up(self.port)))
        if self.proc.poll() is not None:
            raise AssertionError(f"nats-server exited ({self.proc.returncode}):\n{self.log()}")

    def stop(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=15)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        path = self.root / "nats.log"
        return path.read_text("utf-8", "replace")[-3000:] if path.exists() else ""


def up(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def private_nats() -> Iterator[PrivateNats]:
    if not NATS_SERVER.is_file():
        need(
            f"{NATS_SERVER} not found: apt-get install nats-server "
            "(or set OTASUKE_NATS_SERVER to the nats-server binary)"
        )
    root = Path(tempfile.mkdtemp(prefix="otasuke-nats-"))
    server = PrivateNats(root, free_port())
    try:
        server.start()
        yield server
    finally:
        if server.running():
            server.stop(signal.SIGTERM)
        shutil.rmtree(root, ignore_errors=True)


def publisher_backlog(spool: Path) -> int:
    """Spool bytes past the cursor the publisher commits after each PubAck (read-only)."""
    try:
        cursor = orjson.loads((spool / "cursor.json").read_bytes())
        segment, offset = int(cursor["segment"]), int(cursor["offset"])
    except FileNotFoundError:
        segment, offset = 0, 0
    total = 0
    for path in spool.glob("*.seg"):
        try:
            seg, size = int(path.stem), path.stat().st_size
        except (ValueError, FileNotFoundError):  # deleted behind the cursor meanwhile
            continue
        if seg > segment:
            total += size
        elif seg == segment:
            total += max(size - offset, 0)
    return total


def received_tcp(web: int) -> int:
    """Lines ``otasuke serve`` took in over TCP syslog (its /metrics)."""
    body = httpx2.get(f"http://127.0.0.1:{web}/metrics", timeout=5).text
    match = RECEIVED.search(body)
    return int(float(match.group(1))) if match else 0


def consumer_state(url: str) -> dict[str, int]:
    """The shared durable consumer's counts (what ``nats consumer info`` shows)."""

    async def main() -> dict[str, int]:
        nc = await nats.connect(url)
        try:
            config = BusConfig()
            info = await nc.jetstream().consumer_info(config.stream, config.durable)
            return {
                "pending": info.num_pending or 0,
                "ack_pending": info.num_ack_pending or 0,
                "redelivered": info.num_redelivered or 0,
            }
        finally:
            await nc.close()

    return asyncio.run(main())


def stop_procs(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_nats_down_under_load_everything_drains_nothing_lost(
    how: signal.Signals, private_nats: PrivateNats, pg_db: Database, tmp_path: Path
) -> None:
    began = time.monotonic()
    with pg_db.session() as s:
        seed_demo(s)
        tokai = demo_sensor(s, "tokai-parts", "fortigate")
        tokai.syslog_source = "127.0.0.1"
        sensor_id = tokai.id
    rules, iocs = tiny_detector_paths(tmp_path)
    data, web, syslog = tmp_path / "data", free_port(), free_port()
    env = {
        **os.environ,
        "OTASUKE_DATA_DIR": str(data),
        "OTASUKE_PORT": str(web),
        "OTASUKE_DATABASE_URL": pg_db.url,
        "OTASUKE_BUS_URL": private_nats.url,
        "OTASUKE_RULES_PATHS": json.dumps([str(rules)]),
        "OTASUKE_IOC_PATHS": json.dumps([str(iocs)]),
        "OTASUKE_SYSLOG_TCP_PORT": str(syslog),
        "OTASUKE_SYSLOG_UDP_PORT": str(syslog),
    }
    for name in ("OTASUKE_SMTP_HOST", "OTASUKE_SPOOL_DIR"):
        env.pop(name, None)
    spool = data / "spool"
    procs: list[subprocess.Popen[str]] = []
    for name, cmd in (
        ("serve", ["serve"]),
        ("worker", ["worker", "--notify-every", "5", "--ack-wait", str(ACK_WAIT)]),
    ):
        log = (tmp_path / f"{name}.log").open("w")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "otasuke.cli", *cmd],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
        log.close()

    stored_q = (
        select(func.count()).select_from(StoredEvent).where(StoredEvent.sensor_id == sensor_id)
    )

    def stored() -> int:
        with pg_db.sessions() as s:
            return int(s.scalar(stored_q) or 0)

    def logs() -> str:
        tails = [f"--- {p.name}\n{p.read_text()[-6000:]}" for p in tmp_path.glob("*.log")]
        return "\n".join(tails) + f"\n--- nats\n{private_nats.log()}"

    sender = Sender(syslog)
    peak = at_stop = 0
    outage = caught_up = 0.0
    acknowledged = 0
    consumer: dict[str, int] = {}
    stored_in_outage: tuple[int, int] = (0, 0)
    try:
        wait_until_serving(web)
        sender.start()
        # 1. load flows through the bus into PostgreSQL while NATS is up
        wait_for(lambda: sender.sent >= OUTAGE_AT or sender.error, timeout=20)
        assert sender.error is None, sender.error
        wait_for(lambda: stored() > 0, timeout=15)

        # 2. NATS goes away
        private_nats.stop(how)
        down_at = time.monotonic()
        at_stop = publisher_backlog(spool)
        time.sleep(0.5)  # what the worker had in hand is committed by now
        first = stored()
        while time.monotonic() - down_at < MIN_OUTAGE_SECONDS:
            peak = max(peak, publisher_backlog(spool))
            time.sleep(0.05)
        stored_in_outage = (first, stored())
        assert sender.error is None, sender.error
        # the receivers went on acknowledging; the publisher kept it in the spool
        assert peak > at_stop + 50_000, (at_stop, peak)
        assert stored_in_outage[1] == stored_in_outage[0], "stored without NATS?"

        # 3. NATS comes back on the same port and store
        private_nats.start()
        back_at = time.monotonic()
        outage = back_at - down_at
        sender.join(timeout=30)
        assert not sender.is_alive(), "sender did not finish"
        assert sender.error is None, sender.error
        acknowledged = wait_for(lambda: (n := received_tcp(web)) >= N and n, timeout=15)
        wait_for(lambda: stored() >= N, timeout=40)
        caught_up = time.monotonic() - back_at
        wait_for(lambda: publisher_backlog(spool) == 0, timeout=10)
        # nothing left in the stream: every message delivered and acknowledged (a message
        # whose ack was lost with NATS comes again after ack_wait and is a duplicate)
        consumer = wait_for(
            lambda: (
                (c := consumer_state(private_nats.url))["pending"] == c["ack_pending"] == 0 and c
            ),
            timeout=15,
        )
    except AssertionError as err:
        raise AssertionError(f"{err}\n{logs()}") from None
    finally:
        sender.stop.set()
        stop_procs(procs)

    with pg_db.sessions() as s:
        rows = s.execute(
            select(StoredEvent.event_uid, StoredEvent.raw).where(StoredEvent.sensor_id == sensor_id)
        ).all()
    uids = Counter(uid for uid, _ in rows)
    seqs: Counter[int] = Counter()
    for _, raw in rows:
        match = SEQ.search(raw)
        assert match, f"stored row without seq: {raw!r}"
        seqs[int(match.group(1))] += 1
    duplicated = sorted(n for n, c in seqs.items() if c > 1)
    lost = sorted(set(range(1, N + 1)) - set(seqs))
    worker_out = (tmp_path / "worker.log").read_text()
    counters = [line for line in worker_out.splitlines() if line.startswith('{"worker"')]
    print(
        f"\nNATS {how.name}: sent={N} acknowledged={acknowledged} found={len(rows)} "
        f"distinct={len(seqs)} "
        f"duplicated={len(duplicated)} duplicate_ids={sum(c - 1 for c in uids.values())} "
        f"lost={len(lost)} backlog_at_stop={at_stop} peak_backlog_bytes={peak} "
        f"outage_seconds={outage:.1f} stored_during_outage={stored_in_outage} "
        f"caught_up_after_restart={caught_up:.1f}s consumer={consumer} "
        f"runtime={time.monotonic() - began:.1f}s worker={counters[-1] if counters else '?'}"
    )
    assert acknowledged == N
    assert not duplicated, f"stored more than once: {duplicated[:20]}"
    assert not lost, f"acknowledged but not stored: {lost[:20]} ({len(lost)} in all)"
    assert len(rows) == N and all(c == 1 for c in uids.values())
