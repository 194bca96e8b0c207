"""相関ルールの状態を再起動後も保つ (REQ-MON-24H): a brute force spanning a restart is caught.

The detector's correlation windows are saved to a file under the data folder and read
back by the next process; what has expired or no longer means the same is left out.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
from sqlalchemy import func, select

from otasuke.db.engine import Database
from otasuke.db.models import Alert, Organization, StoredEvent
from otasuke.demo.seed import seed_demo
from otasuke.detect.correlation_file import CorrelationStateFile, keep_state, save_state
from otasuke.detect.engine import Detector
from otasuke.detect.ioc import IocSet
from otasuke.detect.sigma import RuleSet
from otasuke.ingest.store import Source, accept_lines
from otasuke.pipeline import Pipeline
from otasuke.settings import Settings
from otasuke.worker import BackgroundWorker
from tests.detect import test_sigma_correlation_values as v
from tests.detect.test_sigma_correlation import BASE, BRUTE, FAILED, detector, fired, logon

BRUTE_ID = "22222222-0000-0000-0000-000000000001"


def test_half_a_burst_before_the_restart_and_half_after_fires_once(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    before = detector(rules, BRUTE)
    found = [x for i in range(3) for x in before.detect(logon(i * 20), customer=7)]
    found += before.detect(logon(61, ip="198.51.100.1"), customer=8)  # another customer
    assert not fired(found, BRUTE_ID)
    state = CorrelationStateFile.claim(tmp_path / "state", "worker", 60)
    state.save(before.correlation)
    state.close()

    after = detector(rules, BRUTE)  # a new process: nothing in memory
    again = CorrelationStateFile.claim(tmp_path / "state", "worker", 60)
    assert again.path == state.path  # the same slot back
    assert again.load(after.correlation) == 2
    assert not fired(after.detect(logon(100), customer=7), BRUTE_ID)
    [hit] = fired(after.detect(logon(120), customer=7), BRUTE_ID)
    assert hit.matched == {"IpAddress": "192.0.2.7", "count": 5}
    later = [x for i in range(5) for x in after.detect(logon(130 + i), customer=8)]
    assert len(fired(later, BRUTE_ID)) == 1  # customer 8: 1 before + 4 of these = 5
    # and never twice for the same burst
    assert not fired(after.detect(logon(140), customer=7), BRUTE_ID)
    again.close()


def test_expired_windows_and_changed_rules_are_left_out(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    before = detector(rules, BRUTE)
    before.detect(logon(0, ip="192.0.2.1"), customer=1)  # passed by the snapshot's clock
    before.detect(logon(400, ip="192.0.2.2"), customer=1)
    assert before.correlation is not None
    snapshot = orjson.loads(orjson.dumps(before.correlation.snapshot()))
    after = detector(rules, BRUTE)
    assert after.correlation is not None
    assert after.correlation.restore(snapshot) == 1
    changed = detector(rules, BRUTE.replace("timespan: 5m", "timespan: 1h"))
    assert changed.correlation is not None
    assert changed.correlation.restore(snapshot) == 0  # means something else now


def test_each_process_gets_its_own_slot(tmp_path: Path) -> None:
    first = CorrelationStateFile.claim(tmp_path, "worker", 60)
    second = CorrelationStateFile.claim(tmp_path, "worker", 60)
    assert (first.path.name, second.path.name) == ("worker-0.json", "worker-1.json")
    first.close()
    third = CorrelationStateFile.claim(tmp_path, "worker", 60)
    assert third.path.name == "worker-0.json"
    second.close()
    third.close()


def test_an_unreadable_snapshot_is_moved_aside_not_lost(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    d = detector(rules, BRUTE)
    state = CorrelationStateFile.claim(tmp_path / "state", "serve", 60)
    state.path.write_bytes(b"{not json")
    assert state.load(d.correlation) == 0
    assert (tmp_path / "state" / "serve-0.bad").read_bytes() == b"{not json"
    state.close()


def test_keep_state_saves_on_schedule_and_on_shutdown(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    settings = Settings(data_dir=tmp_path / "data", correlation_state_seconds=3600)
    d: Detector = detector(rules, BRUTE)
    state = keep_state(d, settings, "worker")
    assert state is not None and d.state_file is state
    d.detect(logon(0), customer=1)
    assert not state.maybe_save(d.correlation)  # not due yet
    save_state(d)
    data = orjson.loads((tmp_path / "data" / "correlation" / "worker-0.json").read_bytes())
    [group] = data["groups"]
    assert group["rule"] == BRUTE_ID and group["customer"] == "1" and group["times"]
    assert FAILED not in str(group["group"])
    assert d.state_file is state
    off = Settings(data_dir=tmp_path / "data", correlation_state_seconds=0)
    assert keep_state(detector(rules, BRUTE), off, "worker") is None


def test_numeric_windows_survive_a_restart(tmp_path: Path) -> None:
    def restarted(kind: str, condition: str, before: list[int]) -> Detector:
        folder = tmp_path / kind
        folder.mkdir()
        first = v.detector(folder, v.correlation(kind, condition))
        assert not v.fired(v.feed(first, *(v.sent(i, n) for i, n in enumerate(before))))
        assert first.correlation is not None
        snapshot = orjson.loads(orjson.dumps(first.correlation.snapshot()))
        second = v.detector(folder, v.correlation(kind, condition))
        assert second.correlation is not None and second.correlation.restore(snapshot) == 1
        return second

    p50 = restarted("value_percentile", "{gte: 100, field: Bytes, percentile: 50}", [10, 10, 200])
    [hit] = v.fired(v.feed(p50, v.sent(3, 200)))  # sorted numbers came back too
    assert hit.matched["p50"] == 105
    median = restarted("value_median", "{lt: 100, field: Bytes}", [50, 60])
    assert not v.fired(v.feed(median, v.sent(2, 500)))
    [closed] = v.fired(median.flush())  # the window opened before the restart closes after
    assert closed.matched["median"] == 60 and closed.matched["count"] == 3


def test_serve_worker_restarted_mid_burst_still_raises_the_brute_force(
    tmp_path: Path, settings: Settings, sqlite_db: Database
) -> None:
    """`otasuke serve`'s in-process worker stopped after 3 failed logons and started again
    with a new detector (a new process): the 5th logon raises the correlation alert."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yml").write_text("\n---\n".join([BASE, BRUTE]))
    settings.rules_paths = [rules]
    with sqlite_db.session() as s:
        seed_demo(s)
        customer = s.scalar(select(Organization).where(Organization.slug == "tokai-parts"))
        assert customer is not None
        source = Source(customer_id=customer.id, sensor_id=None, sensor_name="pc1")
        customer_id = customer.id

    def failed_logons(*seconds: int) -> None:
        lines = [
            orjson.dumps(
                {
                    "format": "winlogbeat",
                    "raw": orjson.dumps(
                        {
                            "EventID": 4625,
                            "Channel": "Security",
                            "Hostname": "pc1",
                            "IpAddress": "203.0.113.9",
                            "TargetUserName": "admin",
                            "EventTime": f"2026-04-01 09:00:{n:02d}",
                        }
                    ).decode(),
                }
            )
            for n in seconds
        ]
        with sqlite_db.session() as s:
            assert not accept_lines(s, source, lines).rejected

    def run_worker_until_idle() -> None:
        worker = BackgroundWorker(
            lambda: Pipeline(sqlite_db, settings, Detector(RuleSet.load([rules]), IocSet())), 0.05
        )
        worker.start()
        deadline = time.monotonic() + 20
        while True:
            assert time.monotonic() < deadline, worker.last_error
            with sqlite_db.session() as s:
                pending = s.scalar(
                    select(func.count(StoredEvent.id)).where(StoredEvent.processed.is_(False))
                )
            if worker.ready.is_set() and not pending:
                break
            time.sleep(0.05)
        worker.stop()
        assert worker.last_error is None

    def brute_alerts() -> int:
        with sqlite_db.session() as s:
            return len(
                s.scalars(
                    select(Alert).where(Alert.customer_id == customer_id, Alert.rule_id == BRUTE_ID)
                ).all()
            )

    failed_logons(0, 10, 20)
    run_worker_until_idle()
    assert brute_alerts() == 0
    assert (settings.data_dir / "correlation" / "serve-0.json").exists()
    failed_logons(30, 40)
    run_worker_until_idle()
    assert brute_alerts() == 1
