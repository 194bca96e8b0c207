"""Scale-out workers, for real: spool → publisher → JetStream → two ``otasuke worker`` → PostgreSQL.

A worker acknowledges a message only after the commit that stored its events and
their detections. Killing one worker with SIGKILL mid-way leaves its unacknowledged
messages to be delivered again (after ``ack_wait``) to the other: every event is
stored once (unique event id), processed once, alerts are not doubled, and each
serious incident is mailed once (the notifier claims the incident row).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from sqlalchemy import func, select

from otasuke.bus.batch import BusRecord, encode_batch
from otasuke.bus.consume import BatchHandler, notify_due_claimed
from otasuke.bus.jetstream import BusConfig, ensure_consumer, ensure_stream, with_overrides
from otasuke.db.engine import Database
from otasuke.db.models import Alert, Incident, Notification, QuarantinedRecord, StoredEvent
from otasuke.demo.seed import demo_sensor, seed_demo
from otasuke.detect.engine import Detector
from otasuke.ingest.receivers.publish import PublisherHandle, SpoolPublisher
from otasuke.ingest.spool import Spool
from otasuke.notify.channels import Receipt
from otasuke.notify.channels.smtp import SmtpChannel
from otasuke.settings import Settings
from tests.conftest import Inbox, wait_for

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
N = 3000
BATCH = 50
"""Records per bus message: 60 messages, so a kill lands with work on both sides."""
ALERT_EVERY = 50
HOSTS = ("10.0.0.5", "10.0.0.6", "10.0.0.7")
KILL_AT = 900
"""Stored events before worker A is killed."""
RULE = """\
title: Test whoami
id: 6f0c0e3f-0000-4000-8000-000000000001
status: test
level: high
logsource:
  product: windows
  category: process_creation
detection:
  selection:
    Image|endswith: '\\\\whoami.exe'
  condition: selection
"""


def fortigate_line(seq: int) -> str:
    """A FortiGate line; every ALERT_EVERY-th an IPS alert (serious, not blocked)."""
    t = f"10:{seq // 60 % 60:02d}:{seq % 60:02d}"
    if seq % ALERT_EVERY == 0:
        host = HOSTS[seq // ALERT_EVERY % len(HOSTS)]
        return (
            f"date=2026-11-24 time={t} devname=FG60F type=utm subtype=ips level=alert "
            f'severity=high attack="Backdoor.Test" attackid=12345 srcip={host} '
            f'dstip=203.0.113.9 action=detected msg="seq={seq:05d}"'
        )
    return (
        f"date=2026-11-24 time={t} devname=FG60F type=event subtype=system level=notice "
        f'msg="seq={seq:05d}"'
    )


def spool_record(sensor_id: int, seq: int) -> bytes:
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


def tiny_detector_paths(tmp_path: Path, rules_text: str = RULE) -> tuple[Path, Path]:
    """One Sigma rule file and one IOC list: workers start in a second, not in five."""
    rules, iocs = tmp_path / "rules", tmp_path / "iocs"
    rules.mkdir(parents=True)
    iocs.mkdir()
    (rules / "rules.yml").write_text(rules_text)
    (iocs / "bad.txt").write_text("198.51.100.66\n")
    return rules, iocs


def seeded_sensor(db: Database) -> tuple[int, int]:
    with db.session() as s:
        seed_demo(s)
        sensor = demo_sensor(s, "tokai-parts", "fortigate")
        return sensor.id, sensor.customer_id


def consumer_state(config: BusConfig) -> dict[str, int]:
    async def main() -> dict[str, int]:
        nc = await nats.connect(config.servers[0])
        try:
            info = await nc.jetstream().consumer_info(config.stream, config.durable)
            return {
                "pending": info.num_pending or 0,
                "ack_pending": info.num_ack_pending or 0,
                "waiting": info.num_waiting or 0,
                "redelivered": info.num_redelivered or 0,
            }
        finally:
            await nc.close()

    return asyncio.run(main())


def prepare_bus(config: BusConfig) -> None:
    async def main() -> None:
        nc = await nats.connect(config.servers[0])
        try:
            await ensure_stream(nc.jetstream(), config)
            await ensure_consumer(nc.jetstream(), config)
        finally:
            await nc.close()

    asyncio.run(main())


def count(db: Database, stmt: Any) -> int:
    with db.sessions() as s:
        return int(s.scalar(stmt) or 0)


@dataclass
class Worker:
    proc: subprocess.Popen[str]

    def stats(self) -> dict[str, Any]:
        out, _ = self.proc.communicate(timeout=30)
        lines = [line for line in out.splitlines() if line.startswith('{"worker"')]
        return dict(json.loads(lines[-1])["worker"]) if lines else {}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_worker(
    config: BusConfig,
    db: Database,
    tmp_path: Path,
    smtp: tuple[str, int],
    name: str,
    *,
    rules_text: str = RULE,
    extra: tuple[str, ...] = (),
) -> Worker:
    """``otasuke worker`` in its own process; ``rules_text``: its one Sigma rule file."""
    rules, iocs = tiny_detector_paths(tmp_path / name, rules_text)
    env = {
        **os.environ,
        "OTASUKE_DATA_DIR": str(tmp_path / name / "data"),
        "OTASUKE_DATABASE_URL": db.url,
        "OTASUKE_RULES_PATHS": json.dumps([str(rules)]),
        "OTASUKE_IOC_PATHS": json.dumps([str(iocs)]),
        "OTASUKE_SMTP_HOST": smtp[0],
        "OTASUKE_SMTP_PORT": str(smtp[1]),
    }
    args = [
        sys.executable,
        "-m",
        "otasuke.cli_commands.worker",
        "--nats",
        config.servers[0],
        "--stream",
        config.stream,
        "--subject-prefix",
        config.subject_prefix,
        "--durable",
        config.durable,
        "--ack-wait",
        str(config.ack_wait_seconds),
        "--notify-every",
        "0.5",
        *extra,
    ]
    log = (tmp_path / f"{name}.log").open("w")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    log.close()
    return Worker(proc)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.close()


def test_two_workers_one_killed_store_every_event_once(
    pg_db: Database,
    bus_config: BusConfig,
    tmp_path: Path,
    smtp_server: tuple[str, int, Inbox],
    workers: list[Worker],
) -> None:
    config = with_overrides(bus_config, max_batch_records=BATCH, ack_wait_seconds=2.0)
    sensor_id, _ = seeded_sensor(pg_db)
    prepare_bus(config)
    host, port, inbox = smtp_server
    a = start_worker(config, pg_db, tmp_path, (host, port), "a")
    b = start_worker(config, pg_db, tmp_path, (host, port), "b")
    workers.extend([a, b])
    wait_for(lambda: consumer_state(config)["waiting"] >= 2, timeout=20)  # both are pulling

    spool = Spool(tmp_path / "spool")
    publisher = PublisherHandle(SpoolPublisher(spool, config)).start()
    started = time.monotonic()
    for first in range(0, N, 500):  # receivers append in group commits while publishing
        spool.append([spool_record(sensor_id, seq) for seq in range(first, first + 500)])
    stored = select(func.count()).select_from(StoredEvent)
    wait_for(lambda: count(pg_db, stored) >= KILL_AT, timeout=20)
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(timeout=10)
    a.close()
    at_kill = {"stored": count(pg_db, stored), **consumer_state(config)}

    wait_for(lambda: count(pg_db, stored) >= N, timeout=30)
    state = wait_for(
        lambda: (s := consumer_state(config))["pending"] == s["ack_pending"] == 0 and s,
        timeout=20,
    )
    elapsed = time.monotonic() - started
    serious = select(func.count()).select_from(Incident).where(Incident.severity == "serious")
    wait_for(lambda: len(inbox.messages) >= count(pg_db, serious) > 0, timeout=15)
    publisher.stop()
    assert publisher.publisher.backlog_bytes() == 0
    spool.close()
    b.proc.send_signal(signal.SIGTERM)
    assert b.proc.wait(timeout=30) == 0
    b_stats = b.stats()

    with pg_db.sessions() as s:
        uids = s.execute(
            select(StoredEvent.event_uid, func.count()).group_by(StoredEvent.event_uid)
        ).all()
        raws = s.scalars(select(StoredEvent.raw)).all()
        unprocessed = s.scalar(
            select(func.count()).select_from(StoredEvent).where(StoredEvent.processed.is_(False))
        )
        alerts = s.execute(select(Alert.event_id, func.count()).group_by(Alert.event_id)).all()
        incidents = s.scalars(select(Incident)).all()
        sent = s.execute(
            select(Notification.incident_id, func.count())
            .where(Notification.status == "sent")
            .group_by(Notification.incident_id)
        ).all()
    seqs = sorted(int(raw.split("seq=")[1][:5]) for raw in raws)
    duplicated = sum(n - 1 for _, n in uids if n > 1)
    print(
        f"\n2 workers, A killed: {N} events published in {config.max_batch_records}-record "
        f"messages, stored {len(uids)} (duplicated {duplicated}, lost "
        f"{len(set(range(N)) - set(seqs))}) in {elapsed:.1f} s; at the kill {at_kill}; "
        f"after: {state}; worker B {b_stats}; alerts {len(alerts)}, incidents "
        f"{len(incidents)}, mails {len(inbox.messages)}"
    )
    assert seqs == list(range(N)) and duplicated == 0 and unprocessed == 0
    assert len(alerts) == N // ALERT_EVERY and all(n == 1 for _, n in alerts)
    assert len(incidents) == len(HOSTS)  # correlation across two workers: one per host
    assert sorted(n for _, n in sent) == [1] * len(HOSTS)
    assert len(inbox.messages) == len(HOSTS)
    subjects = {str(m["X-Otasuke-Incident"]) for m in inbox.messages}
    assert subjects == {str(i.id) for i in incidents}


def make_body(sensor_id: int, seqs: range, prefix: str = "t") -> bytes:
    records = [
        BusRecord(
            event_id=f"syslog-{sensor_id}-{prefix}-1-{seq}",
            sensor_id=sensor_id,
            raw=fortigate_line(seq),
            format="fortigate",
        )
        for seq in seqs
    ]
    records.append(BusRecord(event_id="spool-t-1-9", sensor_id=None, raw="x", peer="192.0.2.9"))
    records.append(BusRecord(event_id="spool-t-1-10", sensor_id=None, raw="\x00?", damaged=True))
    return encode_batch(records) + b"\nnot json"


def test_a_redelivered_message_stores_and_detects_nothing_twice(
    pg_db: Database, tmp_path: Path
) -> None:
    sensor_id, customer_id = seeded_sensor(pg_db)
    rules, iocs = tiny_detector_paths(tmp_path)
    handler = BatchHandler(pg_db, Detector.load([rules], [iocs], cache_dir=tmp_path / "c"))
    body = make_body(sensor_id, range(200))

    first = handler.handle(body, "T#1")
    again = handler.handle(body, "T#1")  # the worker died after its commit, before its ack
    print(f"\nfirst delivery {first}\nredelivery {again}")
    assert (first.accepted, first.processed, first.alerts, first.quarantined) == (200, 200, 4, 3)
    assert (again.accepted, again.duplicates, again.processed, again.alerts) == (0, 200, 0, 0)
    assert again.quarantined == 3  # quarantine rows are at least once, like the drain's
    events = select(func.count()).select_from(StoredEvent)
    assert count(pg_db, events.where(StoredEvent.customer_id == customer_id)) == 200
    assert count(pg_db, select(func.count()).select_from(Alert)) == 4
    reasons = select(QuarantinedRecord.field)
    with pg_db.sessions() as s:
        assert sorted(s.scalars(reasons)) == sorted(["source", "spool", "bus"] * 2)


class SlowChannel:
    """The real SMTP channel, slowed so that two notifiers surely overlap."""

    name = "smtp"

    def __init__(self, settings: Settings) -> None:
        self.smtp = SmtpChannel(settings)

    def send(self, message: EmailMessage) -> Receipt:
        time.sleep(0.3)  # a slow mail server: the window in which a double send could happen
        return self.smtp.send(message)


def test_two_notifiers_send_each_serious_incident_once(
    pg_db: Database, tmp_path: Path, smtp_server: tuple[str, int, Inbox]
) -> None:
    sensor_id, _ = seeded_sensor(pg_db)
    rules, iocs = tiny_detector_paths(tmp_path)
    handler = BatchHandler(pg_db, Detector.load([rules], [iocs], cache_dir=tmp_path / "c"))
    result = handler.handle(make_body(sensor_id, range(150)), "T#1")
    assert result.serious_pending and result.incidents == len(HOSTS)
    host, port, inbox = smtp_server
    settings = Settings(data_dir=tmp_path / "data", smtp_host=host, smtp_port=port)
    channel = SlowChannel(settings)
    counts: list[int] = []
    notifiers = [
        threading.Thread(target=lambda: counts.append(notify_due_claimed(pg_db, channel, settings)))
        for _ in range(2)
    ]
    for t in notifiers:
        t.start()
    for t in notifiers:
        t.join(timeout=30)
    print(f"\ntwo notifiers sent {counts}")
    assert sorted(counts) in ([0, 3], [1, 2]) and sum(counts) == len(HOSTS)
    assert len(inbox.messages) == len(HOSTS)
    assert notify_due_claimed(pg_db, channel, settings) == 0
