"""Faults, for real: kill -9 under load, a crash between commit and cursor move.

"Acknowledged" for TCP syslog means: appended to the spool and fsynced, which is
what the receiver waits for before it reads the connection further. The receiver
in the child process counts those lines (``on_acknowledged``) into a file after
every fsync; the test kills it with SIGKILL mid-load, restarts it, lets the drain
finish and checks that every acknowledged line is stored exactly once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from otasuke.db.engine import Database
from otasuke.db.models import StoredEvent
from otasuke.demo.seed import demo_sensor, seed_demo
from otasuke.ingest.receivers.drain import Drain
from otasuke.ingest.spool import Spool
from otasuke.settings import Settings
from tests.conftest import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
N = 5000
KILL_AFTER = 2000
"""Acknowledged lines before the kill."""
WINDOW = 800
"""Lines the client may send ahead of the acknowledgements (keeps the load sustained)."""
RATE = 10_000
"""Lines per second the client offers: 5,000 lines take about half a second."""
BATCH = 50
SEQ = re.compile(r'msg="seq=([0-9]+)"')


def child_main(argv: list[str]) -> None:
    """The receiver + drain process the test kills: ``DB_URL SPOOL_DIR ACK_FILE PORT``."""
    from otasuke.ingest.receivers.syslog import SyslogConfig, start_syslog

    db_url, spool_dir, ack_file, port = argv
    db = Database(db_url)
    fd = os.open(ack_file, os.O_RDWR | os.O_CREAT, 0o600)
    total = 0

    def acknowledged(n: int) -> None:
        nonlocal total
        total += n
        os.pwrite(fd, struct.pack("<Q", total), 0)

    config = SyslogConfig(spool_dir=Path(spool_dir), tcp_port=int(port), udp_port=None)
    handle = start_syslog(Settings(), db, config, on_acknowledged=acknowledged)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("READY", json.dumps(asdict(handle.recovery)), flush=True)
    stop.wait()
    handle.stop()
    print("STOPPED", json.dumps(asdict(handle.drain.stats)), flush=True)


@dataclass
class Child:
    proc: subprocess.Popen[str]
    recovery: dict[str, int]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def start_child(db: Database, spool: Path, ack: Path, port: int) -> Child:
    code = "import sys; from tests.ingest.test_faults import child_main; child_main(sys.argv[1:])"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, db.url, str(spool), str(ack), str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ready = proc.stdout.readline()
    assert ready.startswith("READY "), ready
    recovery = json.loads(ready.split(" ", 1)[1])
    return Child(proc, recovery)


def read_ack(path: Path) -> int:
    data = path.read_bytes()[:8] if path.exists() else b""
    return int(struct.unpack("<Q", data)[0]) if len(data) == 8 else 0


def line(seq: int) -> bytes:
    return (
        f"<189>date=2026-11-24 time=10:00:00 devname=FG60F type=event subtype=system "
        f'level=notice msg="seq={seq:05d}"\n'
    ).encode()


class Client(threading.Thread):
    """Sends numbered lines over one TCP connection, at most WINDOW ahead of the acks."""

    def __init__(
        self,
        port: int,
        first: int,
        last: int,
        ack: Path,
        kill: Child | None = None,
        db: Database | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.port, self.first, self.last, self.ack = port, first, last, ack
        self.kill, self.db = kill, db
        """Kill this child with SIGKILL right after a send, once KILL_AFTER lines are acked
        and the drain has stored some (so receiver and drain are both at work)."""
        self.stored_at_kill = 0
        self.sent = first
        self.acked_at_kill: int | None = None
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port)) as sock:
                pace = time.monotonic()
                while self.sent < self.last:
                    pace += BATCH / RATE  # a sustained load of RATE lines/s, not a wait
                    time.sleep(max(0.0, pace - time.monotonic()))
                    deadline = time.monotonic() + 20
                    while self.sent - self.first - read_ack(self.ack) > WINDOW:
                        if time.monotonic() > deadline:
                            raise TimeoutError("no acknowledgements for 20 s")
                        time.sleep(0.001)  # waiting on the receiver's ack counter (a condition)
                    if self.kill is not None and self.sent >= KILL_AFTER + 1000:
                        wait_for(self.drained, timeout=20)  # a slow drain: let it start first
                    kill_now = (
                        self.kill is not None
                        and read_ack(self.ack) >= KILL_AFTER
                        and self.drained()
                    )
                    # the batch just before the kill is larger, so it is surely still in flight
                    size = 10 * BATCH if kill_now else BATCH
                    batch = range(self.sent, min(self.sent + size, self.last))
                    sock.sendall(b"".join(line(i) for i in batch))
                    self.sent = batch[-1] + 1
                    if kill_now and self.kill is not None:
                        self.kill.proc.send_signal(signal.SIGKILL)  # lines are in flight
                        self.kill.proc.wait(timeout=10)
                        self.acked_at_kill = read_ack(self.ack)
                        self.stored_at_kill = len(seqs(self.db)) if self.db else 0
                        return
        except OSError as err:  # the receiver was killed
            self.error = err

    def drained(self) -> bool:
        assert self.db is not None
        with self.db.sessions() as s:
            return bool(s.scalar(select(func.count()).select_from(StoredEvent)))


def seqs(db: Database) -> list[int]:
    with db.sessions() as s:
        raws = s.scalars(select(StoredEvent.raw))
        return [int(m.group(1)) for raw in raws if (m := SEQ.search(raw))]


def test_kill_9_under_load_loses_no_acknowledged_line(any_db: Database, tmp_path: Path) -> None:
    sqlite_db = any_db  # the same run on SQLite and on PostgreSQL
    with sqlite_db.session() as s:
        seed_demo(s)
        demo_sensor(s, "tokai-parts", "fortigate").syslog_source = "127.0.0.1"
    spool, ack, port = tmp_path / "spool", tmp_path / "acked", free_port()

    child = start_child(sqlite_db, spool, ack, port)
    client = Client(port, 0, N, ack, kill=child, db=sqlite_db)
    client.start()
    client.join(timeout=30)
    child.close()
    assert client.error is None and client.acked_at_kill is not None
    acked_before_kill, sent_before_kill = client.acked_at_kill, client.sent
    assert acked_before_kill < sent_before_kill, "nothing was in flight at the kill"
    ack.unlink()

    child = start_child(sqlite_db, spool, ack, port)  # restart: recover, drain the backlog
    rest = Client(port, sent_before_kill, N, ack)
    rest.start()
    rest.join(timeout=30)
    assert rest.error is None and rest.sent == N
    acked_after = N - sent_before_kill
    wait_for(lambda: read_ack(ack) >= acked_after, timeout=20)
    acknowledged = set(range(acked_before_kill)) | set(range(sent_before_kill, N))
    wait_for(lambda: acknowledged <= set(seqs(sqlite_db)), timeout=30)
    child.proc.send_signal(signal.SIGTERM)
    assert child.proc.wait(timeout=30) == 0
    child.close()

    found = Counter(seqs(sqlite_db))
    duplicated = sum(n - 1 for n in found.values() if n > 1)
    lost = sorted(acknowledged - set(found))
    unacknowledged_found = len(set(found) - acknowledged)
    print(
        f"\nkill -9 under load: sent {N}, acknowledged {len(acknowledged)} "
        f"({acked_before_kill} before the kill), found {len(set(found) & acknowledged)}, "
        f"duplicated {duplicated}, lost {len(lost)}; in flight at the kill "
        f"{sent_before_kill - acked_before_kill} (of which stored anyway "
        f"{unacknowledged_found}); stored when killed {client.stored_at_kill}; "
        f"recovery after the kill: {child.recovery}"
    )
    assert lost == [] and duplicated == 0
    reopened = Spool(spool)  # everything drained: nothing left behind the cursor
    assert reopened.read(reopened.cursor()).records == []
    reopened.close()


def test_crash_between_commit_and_cursor_move_stores_nothing_twice(
    sqlite_db: Database, tmp_path: Path
) -> None:
    import orjson

    with sqlite_db.session() as s:
        seed_demo(s)
        sensor = demo_sensor(s, "tokai-parts", "fortigate")
        sensor_id, customer_id = sensor.id, sensor.customer_id
    spool = Spool(tmp_path / "spool")
    spool.append(
        [
            orjson.dumps(
                {
                    "peer": "127.0.0.1",
                    "sensor": sensor_id,
                    "transport": "tcp",
                    "format": "fortigate",
                    "raw": line(i).decode()[5:].strip(),
                    "host": None,
                }
            )
            for i in range(300)
        ]
    )
    before = spool.cursor()
    first = Drain(spool, sqlite_db, batch_records=1000)
    assert first.run_once() == 300
    assert first.stats.accepted == 300
    spool.commit(before)  # the crash: committed to the database, cursor not moved

    replay = Drain(spool, sqlite_db, batch_records=1000)
    assert replay.position == before
    assert replay.run_once() == 300
    print(f"\nreplay after commit-before-cursor crash: {replay.stats}")
    assert (replay.stats.accepted, replay.stats.duplicates) == (0, 300)
    with sqlite_db.sessions() as s:
        count = s.scalar(
            select(func.count())
            .select_from(StoredEvent)
            .where(StoredEvent.customer_id == customer_id)
        )
    assert count == 300
    assert sorted(seqs(sqlite_db)) == list(range(300))
    spool.close()


@pytest.mark.parametrize("damage", ["torn", "flipped"])
def test_damaged_spool_records_are_quarantined_not_lost(
    sqlite_db: Database, tmp_path: Path, damage: str
) -> None:
    import orjson

    from otasuke.db.models import QuarantinedRecord

    with sqlite_db.session() as s:
        seed_demo(s)
        sensor_id = demo_sensor(s, "tokai-parts", "fortigate").id
    directory = tmp_path / "spool"
    spool = Spool(directory)
    spool.append(
        [
            orjson.dumps(
                {
                    "peer": "127.0.0.1",
                    "sensor": sensor_id,
                    "transport": "tcp",
                    "format": "fortigate",
                    "raw": line(i).decode()[5:].strip(),
                }
            )
            for i in range(50)
        ]
    )
    spool.close()
    [path] = [p for p in directory.glob("*.seg") if p.stat().st_size]
    data = bytearray(path.read_bytes())
    if damage == "torn":
        del data[-20:]
    else:
        data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    reopened = Spool(directory)
    print(f"\n{damage}: {reopened.report}")
    assert (reopened.report.intact_records, reopened.report.damaged_records) == (49, 1)
    drain = Drain(reopened, sqlite_db)
    drain.run_once()
    assert drain.stats.accepted == 49
    with sqlite_db.sessions() as s:
        kept = s.scalar(
            select(func.count())
            .select_from(QuarantinedRecord)
            .where(QuarantinedRecord.field == "spool")
        )
    # a torn tail was never acknowledged and is cut at recovery (counted there);
    # a damaged record in the middle is kept in the quarantine
    assert kept == (0 if damage == "torn" else 1)
    reopened.close()
