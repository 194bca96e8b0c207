"""相関状態の共有: two bus workers share one customer's correlation windows (PostgreSQL).

The workers share one JetStream consumer, so a customer's failed logons reach both. Each
test here drives two BatchHandlers (two workers: each its own Detector, its own memory)
on one database with bus messages of EVTX records, as ``otasuke worker`` receives them.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select

from otasuke.bus.batch import BusRecord, encode_batch
from otasuke.bus.consume import BatchHandler
from otasuke.bus.jetstream import BusConfig, with_overrides
from otasuke.db.engine import Database
from otasuke.db.models import Alert, CorrelationState, StoredEvent
from otasuke.demo.seed import demo_sensor, seed_demo
from otasuke.detect.engine import Detector
from otasuke.detect.ioc import IocSet
from otasuke.detect.sigma import RuleSet
from otasuke.ingest.receivers.publish import PublisherHandle, SpoolPublisher
from otasuke.ingest.spool import Spool
from tests.bus.test_workers import consumer_state, count, prepare_bus, start_worker
from tests.conftest import Inbox, wait_for
from tests.detect.test_sigma_correlation import BASE, BRUTE

pytestmark = pytest.mark.postgres

BRUTE_ID = "22222222-0000-0000-0000-000000000001"
T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def failed_logon(n: int, ip: str) -> str:
    """A rendered EVTX record: failed logon (4625) number ``n`` from ``ip``."""
    stamp = (T0 + timedelta(seconds=10 * n)).isoformat().replace("+00:00", "Z")
    return orjson.dumps(
        {
            "Event": {
                "System": {
                    "EventID": 4625,
                    "TimeCreated": {"#attributes": {"SystemTime": stamp}},
                    "EventRecordID": n,
                    "Channel": "Security",
                    "Computer": "pc1",
                },
                "EventData": {"IpAddress": ip, "TargetUserName": "admin"},
            }
        }
    ).decode()


@pytest.fixture
def workers(pg_db: Database, tmp_path: Path) -> Iterator[tuple[BatchHandler, BatchHandler, int]]:
    (tmp_path / "rules.yml").write_text(f"{BASE}\n---\n{BRUTE}")
    with pg_db.session() as s:
        seed_demo(s)
        sensor_id = demo_sensor(s, "tokai-parts", "windows").id

    def worker() -> BatchHandler:
        rules = RuleSet.load([tmp_path])
        assert not rules.refused and rules.correlations
        return BatchHandler(pg_db, Detector(rules, IocSet()))

    yield worker(), worker(), sensor_id


def message(sensor_id: int, ip: str, *numbers: int) -> bytes:
    return encode_batch(
        [
            BusRecord(
                event_id=f"{ip}-{n}", sensor_id=sensor_id, raw=failed_logon(n, ip), format="evtx"
            )
            for n in numbers
        ]
    )


def brute_force_alerts(db: Database, ip: str) -> int:
    with db.session() as s:
        alerts = s.scalars(select(Alert).where(Alert.rule_id == BRUTE_ID)).all()
        return sum(1 for a in alerts if ip in orjson.dumps(a.matched).decode())


def test_five_failed_logons_split_over_two_workers_raise_one_alert(
    workers: tuple[BatchHandler, BatchHandler, int], pg_db: Database
) -> None:
    a, b, sensor = workers
    ip = "203.0.113.7"
    a.handle(message(sensor, ip, 1, 2), "T#1")
    b.handle(message(sensor, ip, 3), "T#2")
    a.handle(message(sensor, ip, 4), "T#3")
    assert brute_force_alerts(pg_db, ip) == 0  # four so far: the rule wants five
    b.handle(message(sensor, ip, 5), "T#4")
    assert brute_force_alerts(pg_db, ip) == 1
    assert a.shared is not None and b.shared is not None
    assert a.shared.loaded >= 1 and b.shared.loaded >= 1  # each took the other's windows
    with pg_db.session() as s:
        [state] = s.scalars(select(CorrelationState)).all()
        assert state.version == 4  # one write per message


def test_without_sharing_the_split_burst_is_missed(
    workers: tuple[BatchHandler, BatchHandler, int], pg_db: Database
) -> None:
    """What the shared windows are for: each worker alone counts only its own share."""
    a, b, sensor = workers
    a.shared = b.shared = None
    ip = "203.0.113.8"
    for n, worker in enumerate([a, b, a, b, a, b], start=1):
        worker.handle(message(sensor, ip, n), f"T#{n}")
    assert brute_force_alerts(pg_db, ip) == 0  # 3 + 3: neither saw five


def test_a_rolled_back_message_is_not_counted_twice(
    workers: tuple[BatchHandler, BatchHandler, int],
    pg_db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker whose transaction fails had fed the events to its memory; it must read
    the windows again, so the redelivered message counts once."""
    a, b, sensor = workers
    ip = "203.0.113.9"
    a.handle(message(sensor, ip, 1, 2), "T#1")
    fail = {"once": True}
    original = a._handle

    def failing(*args: object) -> object:
        result = original(*args)  # type: ignore[arg-type]
        if fail.pop("once", False):
            raise RuntimeError("the database went away before the commit")
        return result

    monkeypatch.setattr(a, "_handle", failing)
    with pytest.raises(RuntimeError):
        a.handle(message(sensor, ip, 3, 4), "T#2")
    a.handle(message(sensor, ip, 3, 4), "T#2")  # delivered again
    assert brute_force_alerts(pg_db, ip) == 0  # 4 events, not 6
    b.handle(message(sensor, ip, 5), "T#3")
    assert brute_force_alerts(pg_db, ip) == 1


def test_two_worker_processes_over_nats_raise_each_brute_force_once(
    pg_db: Database,
    bus_config: BusConfig,
    tmp_path: Path,
    smtp_server: tuple[str, int, Inbox],
) -> None:
    """Real ``otasuke worker`` processes pulling one message at a time from JetStream:
    four attackers' five failed logons each, interleaved, spread over both workers."""
    config = with_overrides(bus_config, max_batch_records=1, ack_wait_seconds=5.0)
    with pg_db.session() as s:
        seed_demo(s)
        sensor_id = demo_sensor(s, "tokai-parts", "windows").id
    prepare_bus(config)
    host, port, _inbox = smtp_server
    rules = f"{BASE}\n---\n{BRUTE}"
    started = [
        start_worker(
            config, pg_db, tmp_path, (host, port), name, rules_text=rules, extra=("--fetch", "1")
        )
        for name in ("a", "b")
    ]
    try:
        wait_for(lambda: consumer_state(config)["waiting"] >= 2, timeout=30)
        spool = Spool(tmp_path / "spool")
        publisher = PublisherHandle(SpoolPublisher(spool, config)).start()
        ips = [f"198.51.100.{n}" for n in range(1, 5)]
        for n in range(1, 6):
            for ip in ips:  # one record per append: one message each, as they come
                record = {"sensor": sensor_id, "peer": "127.0.0.1", "transport": "tcp"}
                spool.append(
                    [orjson.dumps({**record, "format": "evtx", "raw": failed_logon(n, ip)})]
                )
                time.sleep(0.02)
        processed = select(func.count()).select_from(StoredEvent).where(StoredEvent.processed)
        wait_for(lambda: count(pg_db, processed) >= 5 * len(ips), timeout=60)
        publisher.stop()
        spool.close()
        for worker in started:
            worker.proc.send_signal(signal.SIGTERM)
            assert worker.proc.wait(timeout=30) == 0
        stats = [worker.stats() for worker in started]
    finally:
        for worker in started:
            worker.close()
    print(f"\nshared correlation, 2 worker processes: {stats}")
    assert all(s.get("messages", 0) > 0 for s in stats), stats  # both took a share
    # each took windows the other had moved, and wrote its own back
    assert all(s["correlation_loaded"] > 0 and s["correlation_written"] > 0 for s in stats)
    assert [brute_force_alerts(pg_db, ip) for ip in ips] == [1, 1, 1, 1]
