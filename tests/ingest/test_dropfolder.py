"""The watched drop folder: a settled file is stored for its customer, then moved aside."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import select

from otasuke.db.engine import Database
from otasuke.db.models import QuarantinedRecord, StoredEvent
from otasuke.demo.seed import demo_sensor, seed_demo
from otasuke.ingest.receivers.dropfolder import DropFolder

LINE = (
    'date=2026-11-24 time=09:00:0{n} devname="FG" type="utm" subtype="ips" level="alert" '
    'srcip=203.0.113.9 dstip=192.168.1.5 action="dropped" attack="Test.Attack" '
    'severity="high" attackid=1\n'
)


def test_drop_folder_imports_per_customer_and_sensor(sqlite_db: Database, tmp_path: Path) -> None:
    with sqlite_db.session() as s:
        seed_demo(s)
        sensor = demo_sensor(s, "sakura-clinic", "fortigate")
        sensor_id, sensor_name, customer_id = sensor.id, sensor.name, sensor.customer_id
    root = tmp_path / "drop"
    folder = DropFolder(root, sqlite_db, settle_seconds=2)
    (root / "sakura-clinic" / sensor_name).mkdir(parents=True)
    utm = root / "sakura-clinic" / sensor_name / "fg-20261124.log"
    utm.write_text(LINE.format(n=1) + LINE.format(n=2), encoding="utf-8")
    junk = root / "sakura-clinic" / "notes.bin"
    junk.write_bytes(b"\x00\x01 not a log")
    stranger = root / "no-such-company"
    stranger.mkdir()
    (stranger / "fg.log").write_text(LINE.format(n=3), encoding="utf-8")

    assert folder.scan_once().accepted == 0  # still settling: a copy may be in progress
    old = utm.stat().st_mtime - 10
    for path in (utm, junk, stranger / "fg.log"):
        os.utime(path, (old, old))
    result = folder.scan_once()
    assert result.accepted == 2 and len(result.rejected) == 1

    assert (utm.parent / "done" / utm.name).exists() and not utm.exists()
    assert (junk.parent / "failed" / "notes.bin.reason.txt").read_text(encoding="utf-8")
    assert (stranger / "fg.log").exists()  # no customer: left alone, nothing imported
    with sqlite_db.session() as s:
        rows = s.scalars(select(StoredEvent)).all()
        assert {(r.customer_id, r.sensor_id) for r in rows} == {(customer_id, sensor_id)}
        assert s.scalars(select(QuarantinedRecord)).one().customer_id == customer_id
    assert folder.scan_once().accepted == 0  # moved files are not read twice
