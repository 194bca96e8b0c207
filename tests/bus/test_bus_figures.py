"""Bus backlog and consumer lag in /metrics and ``otasuke status`` (issue 5 points 4 and 8).

Against the real NATS JetStream on 127.0.0.1:4222, one fresh stream per test: publish
N, the lag is N; a worker takes k and acknowledges them, the lag is N-k. A bus URL
pointing at a closed port gives ``otasuke_bus_up 0`` and 「NATS に接続できません」,
and neither the scrape nor the status fails.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import nats
import orjson
import pytest
import typer
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient
from typer.testing import CliRunner

from otasuke.bus.jetstream import (
    BusConfig,
    ensure_consumer,
    ensure_stream,
    pull_subscription,
    read_figures,
)
from otasuke.cli_commands.status import status_command
from otasuke.db.engine import Database
from otasuke.i18n import language
from otasuke.ingest.receivers.publish import start_publisher
from otasuke.ingest.receivers.syslog import SyslogConfig, start_syslog
from otasuke.ingest.spool import Spool
from otasuke.metrics import Metrics, render_metrics, spool_backlog_bytes
from otasuke.settings import Settings, get_settings
from otasuke.web.api import metrics as metrics_api
from otasuke.web.app import create_app
from tests.conftest import seeded_data_dir, wait_for

N, K = 7, 3
cli = typer.Typer()
cli.command("status")(status_command)
cli.command("noop")(lambda: None)  # a second command keeps "status" a subcommand


async def publish(config: BusConfig, n: int) -> None:
    nc = await nats.connect(list(config.servers))
    try:
        js = nc.jetstream()
        await ensure_stream(js, config)
        await ensure_consumer(js, config)
        for i in range(n):
            await js.publish(config.subject_for("spool1"), f"batch {i}".encode())
    finally:
        await nc.close()


async def take(config: BusConfig, n: int, *, ack: bool) -> None:
    """What a worker does: fetch ``n`` messages, acknowledge them (or not yet)."""
    nc = await nats.connect(list(config.servers))
    try:
        sub = await pull_subscription(nc.jetstream(), config)
        msgs = await sub.fetch(n, timeout=5)
        assert len(msgs) == n
        if ack:
            for m in msgs:
                await m.ack_sync()
    finally:
        await nc.close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"nats://127.0.0.1:{port}"  # nothing listens there once the socket is closed


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A seeded SQLite database and a spool with two records nobody has published yet."""
    data, db = seeded_data_dir(tmp_path, monkeypatch)
    db.dispose()
    spool = Spool(data / "spool")
    spool.append([b"a" * 100, b"b" * 50])
    spool.close()
    yield data
    get_settings.cache_clear()


def use_bus(monkeypatch: pytest.MonkeyPatch, url: str, config: BusConfig | None) -> None:
    monkeypatch.setenv("OTASUKE_BUS_URL", url)
    if config is not None:
        monkeypatch.setenv("OTASUKE_BUS_STREAM", config.stream)
        monkeypatch.setenv("OTASUKE_BUS_SUBJECT_PREFIX", config.subject_prefix)
        monkeypatch.setenv("OTASUKE_BUS_DURABLE", config.durable)
    get_settings.cache_clear()


def scrape(data: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    settings = get_settings()
    db = Database(settings.effective_database_url)
    try:
        app = create_app(settings, db=db)
        app.include_router(metrics_api.router)
        app.state.metrics = Metrics()
        response = TestClient(app).get("/metrics")
        assert response.status_code == 200, response.text
        return samples(response.content)
    finally:
        db.dispose()


def status(*args: str) -> str:
    with language("ja"):
        result = CliRunner().invoke(cli, ["status", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_lag_is_what_no_worker_has_taken_yet(bus_config: BusConfig) -> None:
    before = asyncio.run(read_figures(bus_config))
    assert before.up and not before.stream_exists and not before.consumer_exists
    asyncio.run(publish(bus_config, N))
    f = asyncio.run(read_figures(bus_config))
    assert (f.stream_messages, f.consumer_pending, f.consumer_ack_pending) == (N, N, 0)
    assert f.stream_bytes > 0
    asyncio.run(take(bus_config, K, ack=True))
    f = asyncio.run(read_figures(bus_config))  # work queue: acknowledged ones leave the stream
    assert (f.stream_messages, f.consumer_pending, f.consumer_ack_pending) == (N - K, N - K, 0)
    asyncio.run(take(bus_config, 1, ack=False))
    f = asyncio.run(read_figures(bus_config))
    assert (f.consumer_pending, f.consumer_ack_pending) == (N - K - 1, 1)


def test_metrics_and_status_show_the_lag(
    bus_config: BusConfig, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(publish(bus_config, N))
    asyncio.run(take(bus_config, K, ack=True))
    use_bus(monkeypatch, bus_config.servers[0], bus_config)
    unpublished = spool_backlog_bytes(data_dir / "spool")
    assert unpublished == 166  # two records with their 8-byte headers

    got = scrape(data_dir)
    stream = (("stream", bus_config.stream),)
    consumer = (("consumer", bus_config.durable), ("stream", bus_config.stream))
    assert got[("otasuke_bus_up", ())] == 1
    assert got[("otasuke_bus_stream_messages", stream)] == N - K
    assert got[("otasuke_bus_consumer_pending", consumer)] == N - K
    assert got[("otasuke_bus_consumer_ack_pending", consumer)] == 0
    assert got[("otasuke_bus_unpublished_bytes", ())] == unpublished
    assert got[("otasuke_pending_events", ())] == 0  # the database figures are still there

    text = status()
    assert "接続しています" in text
    assert f"ストリーム {bus_config.stream} のメッセージ" in text
    assert f"{N - K} 件 (" in text
    lag_line = next(line for line in text.splitlines() if "コンシューマーの遅れ" in line)
    assert lag_line.rstrip(" │|").endswith(str(N - K))
    unpublished_line = next(line for line in text.splitlines() if "NATS へ未送信" in line)
    assert f"{unpublished} バイト" in unpublished_line
    data = orjson.loads(status("--format", "json"))
    assert data["bus"]["up"] is True
    assert (data["bus"]["consumer_pending"], data["bus"]["stream_messages"]) == (N - K, N - K)


def test_nats_unreachable_is_reported_not_fatal(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = closed_port_url()
    use_bus(monkeypatch, url, None)
    got = scrape(data_dir)
    assert got[("otasuke_bus_up", ())] == 0
    assert got[("otasuke_bus_unpublished_bytes", ())] == 166  # the backlog waits in the spool
    assert not [name for name, _labels in got if name.startswith("otasuke_bus_consumer")]
    assert got[("otasuke_sensors", ())] > 0  # the rest of the scrape is whole

    text = status()
    assert "NATS に接続できません" in text and url in text
    assert "NATS へ未送信" in text and "166 バイト" in text
    assert "センサー" in text or "Sensors" in text  # the customer tables follow
    data = orjson.loads(status("--format", "json"))
    assert data["bus"]["up"] is False and data["bus"]["error"]


def test_settings_feed_the_bus_config() -> None:
    settings = Settings(bus_url="nats://a:4222, nats://b:4222", bus_durable="w")
    config = BusConfig.from_settings(settings)
    assert config.servers == ("nats://a:4222", "nats://b:4222") and config.durable == "w"


def test_syslog_to_nats_backlog_then_lag(
    bus_config: BusConfig, settings: Settings, sqlite_db: Database, tmp_path: Path
) -> None:
    """Receivers in bus mode: the spool depth is what the publisher has not yet sent,
    read from the cursor file it moves (the drain does not run); once published, it is lag."""
    config = SyslogConfig(spool_dir=tmp_path / "spool", tcp_port=0, udp_port=None, drain=False)
    handle = start_syslog(settings, sqlite_db, config)
    mine = Metrics()
    mine.watch_syslog(handle)
    publisher = None
    try:
        assert handle.tcp_port is not None
        with socket.create_connection(("127.0.0.1", handle.tcp_port), timeout=10) as sock:
            sock.sendall(
                b"<13>Nov 24 10:00:00 nas01 app: one\n<13>Nov 24 10:00:01 nas01 app: two\n"
            )
        waiting = wait_for(lambda: spool_backlog_bytes(config.spool_dir) or None, timeout=10)
        assert mine.snapshot()["spool_depth_bytes"] == waiting > 0
        asyncio.run(publish(bus_config, 0))  # the workers' stream and consumer exist
        publisher = start_publisher(handle.spool, bus_config)
        wait_for(lambda: spool_backlog_bytes(config.spool_dir) == 0, timeout=15)
        figures = asyncio.run(read_figures(bus_config))
        got = samples(render_metrics(sqlite_db, mine, spool_dir=config.spool_dir, bus=figures))
    finally:
        if publisher is not None:
            publisher.stop()
        mine.unwatch_syslog(handle)
        handle.stop()
    consumer = (("consumer", bus_config.durable), ("stream", bus_config.stream))
    assert got[("otasuke_spool_depth_bytes", ())] == 0
    assert got[("otasuke_bus_unpublished_bytes", ())] == 0
    assert got[("otasuke_bus_up", ())] == 1
    sent = publisher.publisher.stats.messages
    assert publisher.publisher.stats.records == 2 and sent >= 1
    assert got[("otasuke_bus_stream_messages", (("stream", bus_config.stream),))] == sent
    assert got[("otasuke_bus_consumer_pending", consumer)] == sent  # no worker took them
