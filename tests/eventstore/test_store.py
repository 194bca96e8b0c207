"""Event store (issue 5 point 6): Parquet per customer and day, export, search, retention."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from sqlalchemy import update

from otasuke.db.engine import Database
from otasuke.db.models import StoredEvent
from otasuke.demo.seed import demo_sensor, seed_demo
from otasuke.eventstore import (
    EventRecord,
    EventStoreError,
    enforce_retention,
    export_processed,
    search_events,
    write_events,
)
from otasuke.eventstore.layout import partitions
from otasuke.eventstore.writer import read_partition
from otasuke.ingest.event import Event, SourceFormat
from otasuke.ingest.store import Source, accept_lines

LATER = datetime.now(UTC) + timedelta(hours=1)  # past the exporter's settle time


def fg(day: str, clock: str, user: str, srcip: str = "203.0.113.5") -> bytes:
    raw = (
        f'date={day} time={clock} devname="FG60F" type="event" subtype="user" '
        f'user="{user}" srcip={srcip} dstip=192.168.1.2 action="deny" msg="failed password"'
    )
    return orjson.dumps({"format": "fortigate", "raw": raw})


def seed(db: Database) -> None:
    with db.session() as s:
        seed_demo(s)
        tokai = Source.of(demo_sensor(s, "tokai-parts", "fortigate"))
        sakura = Source.of(demo_sensor(s, "sakura-clinic", "fortigate"))
    with db.session() as s:
        accept_lines(
            s,
            tokai,
            [
                fg("2026-11-23", "10:00:00", "suzuki"),
                fg("2026-11-24", "10:00:00", "tanaka"),
                fg("2026-11-24", "11:00:00", "admin", srcip="198.51.100.9"),
            ],
        )
        accept_lines(s, sakura, [fg("2026-11-24", "12:00:00", "sakura-secret")])
        s.execute(update(StoredEvent).values(processed=True))


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Database, Path]]:
    """One seeded database and its export, shared by the tests that only read them."""
    base = tmp_path_factory.mktemp("eventstore")
    db = Database(f"sqlite:///{base / 'otasuke.db'}")
    db.migrate()
    seed(db)
    root = base / "events"
    with db.session() as s:
        result = export_processed(s, root, now=LATER)
    assert result.per_customer == {"tokai-parts": 3, "sakura-clinic": 1}
    yield db, root
    db.dispose()


@pytest.fixture
def store(seeded: tuple[Database, Path], tmp_path: Path) -> Path:
    """A copy of the exported store this test may change."""
    return Path(shutil.copytree(seeded[1], tmp_path / "events"))


def uids(root: Path, slug: str, query: str) -> set[str]:
    return {r["event_uid"] for r in search_events(root, slug, query).rows}


def test_export_writes_hive_partitions_per_customer_and_day(store: Path) -> None:
    days = [d for d, _ in partitions(store, "tokai-parts")]
    assert days == [date(2026, 11, 23), date(2026, 11, 24)]  # JST 10:00 and 11:00 are UTC 01:00
    [file] = (store / "customer=tokai-parts" / "date=2026-11-24").glob("*.parquet")
    table = pq.read_table(file)
    assert table.column_names == [
        "event_uid",
        "observed_at",
        "received_at",
        "source_format",
        "host",
        "sensor_id",
        "record_id",
        "fields",
        "raw",
        "id",
    ]
    assert str(table.schema.field("observed_at").type) == "timestamp[us, tz=UTC]"
    row = table.to_pylist()[0]
    assert row["source_format"] == "fortigate" and "failed password" in row["raw"]
    assert orjson.loads(row["fields"])["user"] in {"tanaka", "admin"}


def test_export_again_duplicates_nothing(seeded: tuple[Database, Path], store: Path) -> None:
    db = seeded[0]
    with db.session() as s:
        assert export_processed(s, store, now=LATER).events == 0
    (store / "export-state.json").unlink()  # as if we crashed before saving the mark
    with db.session() as s:
        assert export_processed(s, store, now=LATER).events == 4
    folder = store / "customer=tokai-parts" / "date=2026-11-24"
    assert read_partition(folder).num_rows == 2  # same batch, same file name: replaced
    assert len(search_events(store, "tokai-parts", "").rows) == 3


def test_unprocessed_and_unsettled_events_wait(sqlite_db: Database, tmp_path: Path) -> None:
    seed(sqlite_db)
    with sqlite_db.session() as s:
        s.execute(update(StoredEvent).where(StoredEvent.id >= 3).values(processed=False))
    root = tmp_path / "events"
    with sqlite_db.session() as s:
        assert export_processed(s, root).events == 0  # just received: not settled yet
        assert export_processed(s, root, now=LATER).events == 2  # ids 1, 2; 3 is pending


def test_search_field_free_text_and_phrase(store: Path) -> None:
    assert len(uids(store, "tokai-parts", "user=tanaka")) == 1
    assert len(uids(store, "tokai-parts", '"failed password"')) == 3
    assert len(uids(store, "tokai-parts", "FAILED -tanaka")) == 2
    assert len(uids(store, "tokai-parts", "user=admin OR user=suzuki")) == 2
    assert len(uids(store, "tokai-parts", "srcip!=203.0.113.5")) == 1
    assert len(uids(store, "tokai-parts", "user~ANA")) == 1
    assert len(uids(store, "tokai-parts", "observed_at>=2026-11-24T10:30")) == 1  # JST
    assert len(uids(store, "tokai-parts", "source_format=fortigate (user=x OR NOT user=x)")) == 3


def test_search_since_skips_older_days(store: Path) -> None:
    result = search_events(
        store, "tokai-parts", "", since=datetime(2026, 11, 24, tzinfo=UTC), limit=10
    )
    assert result.files == 1 and len(result.rows) == 2


@pytest.mark.parametrize(
    "query",
    [
        "' OR 1=1 --",
        "sakura-secret",
        "user=sakura-secret",
        '" OR 1=1 --',
        "x') UNION SELECT * FROM read_parquet('../customer=sakura-clinic/*/*.parquet') --",
        "raw~sakura",
        "read_parquet('/')",
        "1=1) OR (1=1",
    ],
)
def test_a_customer_never_reads_another_customers_events(store: Path, query: str) -> None:
    try:
        rows = search_events(store, "tokai-parts", query).rows
    except EventStoreError:
        return  # refused is fine too
    assert all("sakura" not in r["raw"] for r in rows)


@pytest.mark.parametrize("slug", ["../customer=sakura-clinic", "sakura-clinic/..", "", "A"])
def test_a_slug_cannot_name_another_folder(store: Path, slug: str) -> None:
    with pytest.raises(EventStoreError):
        search_events(store, slug, "")


def test_duckdb_cannot_open_files_outside_the_customer(store: Path) -> None:
    import duckdb

    from otasuke.eventstore.search import connect

    folder = store / "customer=tokai-parts"
    con = connect(folder, sorted(folder.rglob("*.parquet")))
    other = next((store / "customer=sakura-clinic").rglob("*.parquet"))
    with pytest.raises(duckdb.Error):
        con.execute(f"SELECT * FROM read_parquet('{other}')")
    with pytest.raises(duckdb.Error):
        con.execute("SET enable_external_access=true")
    assert con.execute("SELECT count(*) FROM events").fetchone() == (3,)


def test_writer_takes_events_and_is_idempotent(tmp_path: Path) -> None:
    event = Event(
        event_id="e-1",
        observed_at=datetime(2026, 11, 24, 1, 0, tzinfo=UTC),
        source_format=SourceFormat("jsonl"),
        fields={"message": "こんにちは"},
        raw='{"message": "こんにちは"}',
    )
    records = [EventRecord.from_event(event, sensor_id=7)]
    first = write_events(tmp_path, "tokai-parts", records)
    second = write_events(tmp_path, "tokai-parts", records)
    assert first == second and len(list(tmp_path.rglob("*.parquet"))) == 1
    [row] = search_events(tmp_path, "tokai-parts", "こんにちは").rows
    assert row["sensor_id"] == 7 and row["observed_at"] == event.observed_at


def test_retention_deletes_only_old_partitions(store: Path) -> None:
    result = enforce_retention(store, "tokai-parts", 1, today=date(2026, 11, 25))
    assert result.deleted == [date(2026, 11, 23)] and result.kept == 1
    assert [d for d, _ in partitions(store, "tokai-parts")] == [date(2026, 11, 24)]
    assert [d for d, _ in partitions(store, "sakura-clinic")] == [date(2026, 11, 24)]
    again = enforce_retention(store, "tokai-parts", 90, today=date(2026, 11, 25))
    assert again.deleted == [] and again.kept == 1
