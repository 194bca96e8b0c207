"""REQ-MON-24H: a sensor that falls silent raises one alert, cleared when its logs flow again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy import func, select, update

from otasuke.db.engine import Database
from otasuke.db.models import Alert, AuditEntry, Incident, Sensor
from otasuke.demo.seed import demo_sensor, seed_demo
from otasuke.health import SensorStatus, SensorWatch, check_sensors, sensor_states
from otasuke.i18n import language
from otasuke.ingest.store import Source, accept_lines

LINE = orjson.dumps(
    {
        "format": "fortigate",
        "raw": 'date=2026-11-24 time=10:00:00 devname="FG60F" type="event" msg="ok"',
    }
)


def silence_incidents(db: Database, sensor_id: int) -> list[Incident]:
    with db.session() as s:
        return list(
            s.scalars(
                select(Incident).where(Incident.family == f"health:sensor-silent:{sensor_id}")
            )
        )


def test_req_mon_24h_silent_sensor_one_incident_then_cleared(sqlite_db: Database) -> None:
    with sqlite_db.session() as s:
        seed_demo(s)
        sensor = demo_sensor(s, "tokai-parts", "fortigate")
        sensor_id, source = sensor.id, Source.of(sensor)
        s.execute(update(Sensor).values(created_at=datetime.now(UTC) - timedelta(hours=3)))

    with sqlite_db.session() as s, language("ja"):
        states = check_sensors(s, datetime.now(UTC))
    state = next(st for st in states if st.sensor_id == sensor_id)
    assert state.status is SensorStatus.SILENT and state.last_event_at is None
    [incident] = silence_incidents(sqlite_db, sensor_id)
    assert incident.title == "本社UTM FortiGate 60F からのログが届いていません"
    assert incident.severity == "info" and not incident.closed
    with sqlite_db.session() as s:
        [alert] = s.scalars(select(Alert).where(Alert.incident_id == incident.id)).all()
        assert (alert.source, alert.rule_id) == ("health", f"sensor-silent:{sensor_id}")

    with sqlite_db.session() as s:  # a minute later: still the same one incident
        check_sensors(s, datetime.now(UTC) + timedelta(minutes=1))
    assert len(silence_incidents(sqlite_db, sensor_id)) == 1

    with sqlite_db.session() as s:  # the UTM sends again
        accept_lines(s, source, [LINE])
    cleared_at = datetime.now(UTC)
    with sqlite_db.session() as s:
        states = check_sensors(s, cleared_at)
    assert next(st for st in states if st.sensor_id == sensor_id).status is SensorStatus.OK
    [incident] = silence_incidents(sqlite_db, sensor_id)
    assert incident.closed
    with sqlite_db.session() as s:
        [entry] = s.scalars(
            select(AuditEntry).where(AuditEntry.target == f"incident:{incident.id}")
        ).all()
        assert (entry.actor, entry.action) == ("system", "incident.close")
        assert entry.at == cleared_at and entry.details["sensor_id"] == sensor_id

    with sqlite_db.session() as s:  # silent again later: a new incident
        check_sensors(s, cleared_at + timedelta(hours=2))
    assert [i.closed for i in silence_incidents(sqlite_db, sensor_id)] == [True, False]


def test_new_sensor_waits_without_alert(sqlite_db: Database) -> None:
    with sqlite_db.session() as s:
        seed_demo(s)
    now = datetime.now(UTC)
    with sqlite_db.session() as s:
        states = check_sensors(s, now)
        assert {st.status for st in states} == {SensorStatus.WAITING}
        assert s.scalar(select(func.count()).select_from(Incident)) == 0


def test_rate_and_watch_interval(sqlite_db: Database) -> None:
    with sqlite_db.session() as s:
        seed_demo(s)
        source = Source.of(demo_sensor(s, "sakura-clinic", "fortigate"))
    with sqlite_db.session() as s:
        accept_lines(s, source, [LINE])
    with sqlite_db.session() as s:
        [state] = [st for st in sensor_states(s, datetime.now(UTC)) if st.event_count]
        assert state.events_last_hour == 1 and state.status is SensorStatus.OK
    watch = SensorWatch(sqlite_db, interval_seconds=3600)
    assert watch.run_if_due() is not None
    assert watch.run_if_due() is None  # not due again within the interval
