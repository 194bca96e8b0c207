"""``otasuke status``, ``otasuke search`` and ``otasuke retention`` as an operator runs them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import typer
from sqlalchemy import update
from typer.testing import CliRunner

from otasuke.cli_commands.retention import retention_command
from otasuke.cli_commands.search import search_command
from otasuke.cli_commands.status import status_command
from otasuke.db.models import Sensor, StoredEvent
from otasuke.demo.seed import demo_sensor
from otasuke.eventstore import export_processed
from otasuke.i18n import language
from otasuke.ingest.store import Source, accept_lines
from otasuke.settings import get_settings
from tests.conftest import seeded_data_dir

app = typer.Typer()
app.command("status")(status_command)
app.command("search")(search_command)
app.command("retention")(retention_command)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    data, db = seeded_data_dir(tmp_path, monkeypatch)
    with db.session() as s:
        tokai = Source.of(demo_sensor(s, "tokai-parts", "fortigate"))
        s.execute(update(Sensor).values(created_at=datetime.now(UTC) - timedelta(hours=3)))
    raw = 'date=2026-11-24 time=10:00:00 devname="FG60F" type="event" user="suzuki" msg="login"'
    other = 'date=2026-11-24 time=10:00:00 devname="FG60F" type="event" user="sato" msg="x"'
    with db.session() as s:
        accept_lines(s, tokai, [orjson.dumps({"format": "fortigate", "raw": raw})])
        sakura = Source.of(demo_sensor(s, "sakura-clinic", "fortigate"))
        accept_lines(s, sakura, [orjson.dumps({"format": "fortigate", "raw": other})])
        s.execute(update(StoredEvent).values(processed=True))
    with db.session() as s:
        export_processed(s, data / "events", now=datetime.now(UTC) + timedelta(hours=1))
    db.dispose()
    yield data
    get_settings.cache_clear()


def test_status_shows_the_silent_sensor(data_dir: Path) -> None:
    runner = CliRunner()
    with language("ja"):
        result = runner.invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert "ログが届いていません" in result.output and "正常" in result.output
    data = orjson.loads(runner.invoke(app, ["status", "--format", "json"]).output)
    tokai = next(c for c in data["customers"] if c["slug"] == "tokai-parts")
    states = {x["name"]: x["state"] for x in tokai["sensors"]}
    assert states["本社UTM FortiGate 60F"] == "ok"
    assert states["工場LAN IDS"] == "silent"
    assert tokai["events_today"] == 1 and tokai["pending"] == 0
    assert data["sensors_silent"] == 4


def test_status_of_an_unknown_customer_fails_clearly(data_dir: Path) -> None:
    result = CliRunner().invoke(app, ["status", "--customer", "nobody"])
    assert result.exit_code == 2


def test_search_one_customer(data_dir: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app, ["search", "--customer", "tokai-parts", "user=suzuki", "-f", "json"]
    )
    assert result.exit_code == 0, result.output
    [row] = orjson.loads(result.output)
    assert row["fields"]["user"] == "suzuki"
    for query in ["user=sato", "' OR 1=1 --", "sato"]:
        out = runner.invoke(app, ["search", "-c", "tokai-parts", query, "-f", "json"]).output
        assert orjson.loads(out) == []
    table = runner.invoke(app, ["search", "-c", "tokai-parts", "--since", "2026-11-24", "login"])
    assert table.exit_code == 0 and "FG60F" in table.output
    bad = runner.invoke(app, ["search", "-c", "tokai-parts", "--since", "yesterday", ""])
    assert bad.exit_code == 2


def test_retention_dry_run_then_real(data_dir: Path) -> None:
    runner = CliRunner()
    dry = runner.invoke(app, ["retention", "--days", "1", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert list((data_dir / "events").rglob("*.parquet"))
    keep = runner.invoke(app, ["retention"])
    assert keep.exit_code == 0 and list((data_dir / "events").rglob("*.parquet"))
