"""count_hits: every match counted, per hour or per Japanese day, with the search's language."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from otasuke.eventstore import EventRecord, EventStoreError, write_events
from otasuke.eventstore.query import JST
from otasuke.eventstore.search import DAY, HOUR, count_hits, search_events


def record(n: int, at: datetime, user: str) -> EventRecord:
    return EventRecord(
        event_uid=f"e{n}",
        observed_at=at.astimezone(UTC),
        received_at=at.astimezone(UTC),
        source_format="jsonl",
        host="PC-01",
        sensor_id=1,
        record_id=None,
        fields=f'{{"user": "{user}"}}',
        raw=f"login user={user}",
    )


def test_days_are_japanese_days(tmp_path: Path) -> None:
    # 23:30 and 00:30 Japan time are one hour apart but on two Japanese days.
    start = datetime(2026, 11, 20, 23, 30, tzinfo=JST)
    times = [start, start + timedelta(hours=1), start + timedelta(days=3)]
    write_events(tmp_path, "tokai-parts", [record(i, t, "suzuki") for i, t in enumerate(times)])
    write_events(tmp_path, "sakura-clinic", [record(9, start, "suzuki")])
    hits = count_hits(tmp_path, "tokai-parts", "user=suzuki")
    assert hits.total == 3 and hits.bucket_seconds == DAY
    days = [(b.astimezone(JST).strftime("%m-%d %H:%M"), n) for b, n in hits.buckets]
    assert days == [("11-20 00:00", 1), ("11-21 00:00", 1), ("11-23 00:00", 1)]
    # the table shows at most `limit`; the count still covers all
    assert len(search_events(tmp_path, "tokai-parts", "suzuki", limit=1).rows) == 1


def test_hours_within_two_days_and_nothing_when_nothing_matches(tmp_path: Path) -> None:
    start = datetime(2026, 11, 24, 9, 10, tzinfo=JST)
    times = [start, start + timedelta(minutes=20), start + timedelta(hours=3)]
    write_events(tmp_path, "tokai-parts", [record(i, t, "tanaka") for i, t in enumerate(times)])
    hits = count_hits(tmp_path, "tokai-parts", "tanaka")
    assert hits.bucket_seconds == HOUR
    assert [(b.astimezone(JST).hour, n) for b, n in hits.buckets] == [(9, 2), (12, 1)]
    assert count_hits(tmp_path, "tokai-parts", "user=nobody").total == 0
    assert count_hits(tmp_path, "sakura-clinic", "").total == 0  # no folder at all
    with pytest.raises(EventStoreError) as err:
        count_hits(tmp_path, "tokai-parts", "(tanaka")
    assert err.value.field == "query"
