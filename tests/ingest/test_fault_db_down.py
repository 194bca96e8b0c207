"""Fault: PostgreSQL stops for a while under syslog load, then comes back (issue 5, point 4).

A PRIVATE PostgreSQL server (initdb in a temporary directory, its own port on
127.0.0.1) is started for this test only, so the shared server on 5432 is never
touched. FortiGate lines numbered ``seq=N`` arrive over TCP at a steady pace; a
third of the way in the private server is killed (``pg_ctl stop -m immediate``)
and started again a few seconds later. The receivers keep acknowledging lines
into the spool meanwhile, the drain's backlog grows and is visible, and once the
database is back everything drains: every acknowledged line stored exactly once.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import func, select

from otasuke.db.engine import Database
from otasuke.db.models import StoredEvent
from otasuke.demo.seed import demo_sensor, seed_demo
from otasuke.ingest.receivers.syslog import SyslogConfig, start_syslog
from otasuke.settings import Settings
from tests.conftest import free_port, need, wait_for

PG_BIN = Path(os.environ.get("OTASUKE_PG_BIN", "/usr/lib/postgresql/15/bin"))
N = 3000
BATCH = 10
PACE_SECONDS = 0.025  # 10 lines every 25 ms: 3,000 lines in about 7.5 s
OUTAGE_AT = N // 3
MIN_OUTAGE_SECONDS = 3.0
SEQ = re.compile(r"seq=(\d+)")


def fortigate_line(seq: int) -> str:
    return (
        f"<189>date=2026-11-24 time=10:00:00 devname=FG60F-tokai devid=FG60F0000000001 "
        f'type=event subtype=system level=notice logid=0100032001 msg="seq={seq}"\n'
    )


@dataclass
class PrivatePostgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1:<port>, run as the postgres user."""

    root: Path
    port: int
    as_user: list[str] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(
            [*self.as_user, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            log = self.root / "postgres.log"
            tail = log.read_text("utf-8", "replace")[-2000:] if log.exists() else ""
            raise AssertionError(
                f"{' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}\n{tail}"
            )

    def initdb(self) -> None:
        self.run(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "--no-sync", "-E", "UTF8", "--locale=C",
        )  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self.run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "postgres.log"),
            "-o", options, "-w", "-t", "30", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self.run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        done = subprocess.run(
            [*self.as_user, str(PG_BIN / "pg_ctl"), "-D", str(self.data), "status"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        return done.returncode == 0


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).is_file():
            need(
                f"{PG_BIN / tool} not found: apt-get install postgresql-15 "
                "(or set OTASUKE_PG_BIN to the directory holding initdb, pg_ctl, postgres)"
            )
    as_user: list[str] = []
    owner: tuple[int, int] | None = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        import pwd

        runuser = shutil.which("runuser")
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            need("running as root, but there is no 'postgres' user to start PostgreSQL as")
            raise
        if runuser is None:
            need("running as root, but runuser (util-linux) is missing to start PostgreSQL")
            raise AssertionError("unreachable")
        owner = pw.pw_uid, pw.pw_gid
        as_user = [runuser, "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="otasuke-pg-"))
    if owner is not None:
        os.chown(root, *owner)
    pg = PrivatePostgres(root, free_port(), as_user)
    try:
        pg.initdb()
        pg.start()
        yield pg
    finally:
        try:
            if pg.data.exists() and pg.running():
                pg.stop("fast")
        finally:
            shutil.rmtree(root, ignore_errors=True)


class Sender(threading.Thread):
    """Sends N numbered lines over one TCP connection, BATCH lines every PACE_SECONDS."""

    def __init__(self, port: int) -> None:
        super().__init__(name="fault-sender", daemon=True)
        self.port = port
        self.sent = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
                next_at = time.monotonic()
                for start in range(1, N + 1, BATCH):
                    if self.stop.is_set():
                        return
                    chunk = "".join(
                        fortigate_line(i) for i in range(start, min(start + BATCH, N + 1))
                    )
                    sock.sendall(chunk.encode())
                    self.sent = min(start + BATCH - 1, N)
                    next_at += PACE_SECONDS
                    self.stop.wait(max(0.0, next_at - time.monotonic()))
        except BaseException as err:  # reported by the test
            self.error = err


def test_postgres_down_under_load_everything_drains_nothing_lost(
    private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    began = time.monotonic()
    settings = Settings(data_dir=tmp_path / "data", base_url="http://127.0.0.1:8000")
    db = Database(private_pg.url)
    db.migrate()
    with db.session() as s:
        seed_demo(s)
        tokai = demo_sensor(s, "tokai-parts", "fortigate")
        tokai.syslog_source = "127.0.0.1"
        sensor_id, customer_id = tokai.id, tokai.customer_id

    acked = 0
    acked_lock = threading.Lock()

    def on_acknowledged(n: int) -> None:
        nonlocal acked
        with acked_lock:
            acked += n

    def acknowledged() -> int:
        with acked_lock:
            return acked

    def stored_count() -> int:
        with db.sessions() as s:
            return int(
                s.scalar(
                    select(func.count())
                    .select_from(StoredEvent)
                    .where(StoredEvent.sensor_id == sensor_id)
                )
                or 0
            )

    config = SyslogConfig(spool_dir=tmp_path / "spool", tcp_port=0, udp_port=0)
    handle = start_syslog(settings, db, config, on_acknowledged=on_acknowledged)
    sender = Sender(handle.tcp_port or 0)
    pg_up = True
    db_errors_in_outage = 0
    peak_backlog = 0
    outage_seconds = 0.0
    try:
        sender.start()
        # 1. load flows and is stored while the database is up
        wait_for(lambda: acknowledged() >= OUTAGE_AT or sender.error, timeout=15)
        assert sender.error is None, sender.error
        wait_for(lambda: stored_count() > 0, timeout=15)

        # 2. the database goes away, hard
        accepted_at_stop = handle.drain.stats.accepted
        acked_at_stop = acknowledged()
        private_pg.stop("immediate")
        pg_up = False
        down_at = time.monotonic()
        time.sleep(0.3)  # a batch in flight at the kill either committed or failed by now
        accepted_in_outage = handle.drain.stats.accepted
        while time.monotonic() - down_at < MIN_OUTAGE_SECONDS or handle.drain.stats.db_errors == 0:
            peak_backlog = max(peak_backlog, handle.drain.backlog_bytes())
            assert time.monotonic() - down_at < 15, "the drain never reported a database error"
            time.sleep(0.05)
        peak_backlog = max(peak_backlog, handle.drain.backlog_bytes())
        acked_in_outage = acknowledged()
        # the spool keeps taking lines, the store does not
        assert acked_in_outage > acked_at_stop, (acked_at_stop, acked_in_outage)
        assert handle.drain.stats.accepted == accepted_in_outage
        assert handle.drain.stats.accepted >= accepted_at_stop
        assert peak_backlog > 0
        db_errors_in_outage = handle.drain.stats.db_errors
        assert db_errors_in_outage > 0

        # 3. the database comes back
        private_pg.start()
        pg_up = True
        outage_seconds = time.monotonic() - down_at

        sender.join(timeout=30)
        assert not sender.is_alive(), "sender did not finish"
        assert sender.error is None, sender.error
        assert sender.sent == N
        wait_for(lambda: acknowledged() == N, timeout=15)
        wait_for(lambda: handle.drain.backlog_bytes() == 0, timeout=20)
        wait_for(lambda: stored_count() >= N, timeout=10)
    finally:
        sender.stop.set()
        handle.stop()
        if not pg_up:
            db.dispose()  # the fixture removes the stopped cluster

    with db.sessions() as s:
        rows = s.execute(
            select(StoredEvent.raw, StoredEvent.fields, StoredEvent.customer_id).where(
                StoredEvent.sensor_id == sensor_id
            )
        ).all()
    db.dispose()

    seqs: Counter[int] = Counter()
    for raw, fields, cust in rows:
        assert cust == customer_id
        match = SEQ.search(str((fields or {}).get("msg") or raw))
        assert match, f"stored row without seq: {raw!r}"
        seqs[int(match.group(1))] += 1
    total_acked = acknowledged()
    duplicated = sorted(n for n, c in seqs.items() if c > 1)
    lost = sorted(set(range(1, total_acked + 1)) - set(seqs))
    stats = handle.drain.stats
    print(
        f"\nacknowledged={total_acked} stored={len(rows)} distinct={len(seqs)} "
        f"duplicated={len(duplicated)} lost={len(lost)} peak_backlog_bytes={peak_backlog} "
        f"outage_seconds={outage_seconds:.1f} db_errors={stats.db_errors} "
        f"drain_duplicates={stats.duplicates} quarantined={stats.quarantined} "
        f"errors={stats.errors} runtime={time.monotonic() - began:.1f}s"
    )
    assert total_acked == N
    assert not duplicated, f"stored more than once: {duplicated[:20]}"
    assert not lost, f"acknowledged but not stored: {lost[:20]} ({len(lost)} in all)"
    assert len(rows) == N
    assert stats.db_errors >= db_errors_in_outage > 0
    assert stats.quarantined == 0 and stats.errors == 0
