"""Faults, for real, on the HTTP path: kill -9 of `otasuke serve` right after 202s.

202 from ``POST /api/v1/ingest`` means the envelopes are fsynced in the spool. The
test sends batches to a real ``otasuke serve`` process, kills it with SIGKILL while
it answers them, starts it again on the same data folder and checks that every
acknowledged event is stored exactly once: the half with their own ``event_id`` by
that id, the other half (ids from their spool place) by the sequence number in
their text. Real SQLite, real spool files.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import httpx2
import orjson
from sqlalchemy import select

from otasuke.db.engine import Database
from otasuke.db.models import StoredEvent
from otasuke.demo.seed import seed_demo
from otasuke.settings import Settings
from tests.bus.test_workers import tiny_detector_paths
from tests.conftest import free_port, wait_for
from tests.e2e.test_serve import wait_until_serving

BATCH = 100
KILL_AFTER = 3000
"""Acknowledged events before the kill."""
SEQ = re.compile(r'msg="seq=([0-9]+)"')


def envelope(seq: int) -> bytes:
    env: dict[str, object] = {
        "format": "fortigate",
        "raw": "date=2026-11-24 time=10:00:00 devname=FG60F type=event subtype=system "
        f'level=notice msg="seq={seq}"',
    }
    if seq % 2 == 0:
        env["event_id"] = f"k-{seq}"
    return orjson.dumps(env)


def start_serve(data: Path, tmp: Path, port: int) -> subprocess.Popen[bytes]:
    rules, iocs = tiny_detector_paths(tmp / f"rules-{port}-{os.urandom(3).hex()}")
    env = {
        **os.environ,
        "OTASUKE_DATA_DIR": str(data),
        "OTASUKE_PORT": str(port),
        "OTASUKE_SYSLOG_TCP_PORT": str(free_port()),
        "OTASUKE_SYSLOG_UDP_PORT": str(free_port()),
        "OTASUKE_RULES_PATHS": orjson.dumps([str(rules)]).decode(),
        "OTASUKE_IOC_PATHS": orjson.dumps([str(iocs)]).decode(),
    }
    for name in ("OTASUKE_DATABASE_URL", "OTASUKE_BUS_URL", "OTASUKE_SMTP_HOST"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "otasuke.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until_serving(port)
    return proc


class Sender(threading.Thread):
    """Sends batch after batch; remembers which events were acknowledged (202)."""

    def __init__(self, port: int, token: str, first: int, stop_after: int | None = None) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/api/v1/ingest"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.next = first
        self.stop_after = stop_after
        self.acked: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        with httpx2.Client(timeout=30) as client:
            while self.stop_after is None or self.next < self.stop_after:
                seqs = range(self.next, self.next + BATCH)
                self.next += BATCH
                body = b"\n".join(envelope(n) for n in seqs)
                try:
                    r = client.post(self.url, content=body, headers=self.headers)
                except httpx2.HTTPError:  # the server was killed: this batch is not acked
                    return
                if r.status_code != 202:
                    self.error = AssertionError(f"{r.status_code}: {r.text}")
                    return
                self.acked.extend(seqs)


def stored(db: Database) -> tuple[Counter[int], set[str]]:
    with db.session() as s:
        rows = s.execute(select(StoredEvent.event_uid, StoredEvent.raw)).all()
    seqs: Counter[int] = Counter()
    uids = set()
    for uid, raw in rows:
        match = SEQ.search(raw or "")
        if match:
            seqs[int(match.group(1))] += 1
            uids.add(uid)
    return seqs, uids


def test_kill_9_of_serve_after_202_loses_and_doubles_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    data.mkdir(parents=True)
    db = Database(settings.effective_database_url)
    db.migrate()
    with db.session() as s:
        _, tokens = seed_demo(s)
    token = tokens["tokai-parts/本社UTM FortiGate 60F"]
    port = free_port()
    server = start_serve(data, tmp_path, port)
    try:
        sender = Sender(port, token, 0)
        sender.start()
        wait_for(lambda: len(sender.acked) >= KILL_AFTER, timeout=60)
        server.send_signal(signal.SIGKILL)  # the sender has its next batch in flight
        server.wait(timeout=10)
        sender.join(timeout=30)
        assert sender.error is None, sender.error
        acked_before = set(sender.acked)
        sent_before = sender.next
        assert len(acked_before) < sent_before, "nothing was in flight at the kill"

        port = free_port()
        server = start_serve(data, tmp_path, port)
        rest = Sender(port, token, sent_before, stop_after=sent_before + 10 * BATCH)
        rest.start()
        rest.join(timeout=60)
        assert rest.error is None and len(rest.acked) == 10 * BATCH
        acknowledged = acked_before | set(rest.acked)

        def all_stored() -> bool:
            seqs, _ = stored(db)
            return acknowledged <= set(seqs)

        wait_for(all_stored, timeout=60)
        seqs, uids = stored(db)
        doubled = {n: c for n, c in seqs.items() if c > 1}
        assert doubled == {}, f"stored more than once: {sorted(doubled)[:10]}"
        assert {f"k-{n}" for n in acknowledged if n % 2 == 0} <= uids
        in_flight = set(range(len(acked_before), sent_before)) - acked_before
        print(
            f"\nkill -9 of serve after {len(acked_before)} acknowledged events: "
            f"acknowledged {len(acknowledged)}, found {len(acknowledged & set(seqs))}, "
            f"doubled 0; in flight at the kill {len(in_flight)} "
            f"(stored anyway {len(in_flight & set(seqs))})"
        )
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)
        db.dispose()
