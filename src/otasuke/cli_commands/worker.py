"""``otasuke worker``: a detection worker consuming the ingest stream (scale-out).

Run any number of them, on any machine, against the same PostgreSQL and NATS; they
share one durable consumer. See docs/operator/scale-out.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from dataclasses import asdict
from datetime import timedelta
from typing import Annotated

import typer

from otasuke.bus.consume import BatchHandler, notify_due_claimed
from otasuke.bus.jetstream import BusConfig, with_overrides
from otasuke.bus.worker import BusWorker
from otasuke.cli_commands import err, fail, open_database
from otasuke.detect.correlation_file import keep_state, save_state
from otasuke.detect.engine import Detector
from otasuke.errors import OtasukeError
from otasuke.pipeline import make_channel
from otasuke.settings import get_settings


def worker_command(
    nats_url: Annotated[
        str | None,
        typer.Option(
            "--nats", help="NATS server URL(s), comma-separated (default: OTASUKE_BUS_URL)"
        ),
    ] = None,
    stream: Annotated[str | None, typer.Option(help="JetStream stream name")] = None,
    subject_prefix: Annotated[str | None, typer.Option(help="subject prefix of the stream")] = None,
    durable: Annotated[str | None, typer.Option(help="shared durable consumer name")] = None,
    ack_wait: Annotated[
        float | None, typer.Option(help="seconds before an unacknowledged message is redelivered")
    ] = None,
    fetch: Annotated[int | None, typer.Option(help="messages pulled at once")] = None,
    notify_every: Annotated[
        float, typer.Option(help="seconds between notification passes when idle")
    ] = 30.0,
    stop_when_idle: Annotated[
        float | None,
        typer.Option(help="exit after this many seconds without a message (catch-up, benchmarks)"),
    ] = None,
) -> None:
    """Consume the ingest stream: store events, detect, notify (ack after the commit)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    try:
        config = with_overrides(
            BusConfig.from_settings(settings),
            servers=tuple(u.strip() for u in nats_url.split(",")) if nats_url else None,
            stream=stream,
            subject_prefix=subject_prefix,
            durable=durable,
            ack_wait_seconds=ack_wait,
            fetch_batch=fetch,
        )
    except OtasukeError as error:
        raise fail(error) from None
    if not settings.database_url:
        err.print(
            "[yellow]注意 / note:[/] SQLite database: run only one worker "
            "(several workers need PostgreSQL: OTASUKE_DATABASE_URL)"
        )
    db = open_database(settings)
    detector = Detector.load(
        settings.rules_paths, settings.ioc_paths, cache_dir=settings.rule_cache_dir
    )
    keep_state(detector, settings, "worker")  # correlation windows across restarts
    handler = BatchHandler(
        db,
        detector,
        incident_window=timedelta(minutes=settings.incident_window_minutes),
        notify_target=timedelta(minutes=settings.notify_target_minutes),
    )
    channel = make_channel(settings)
    worker = BusWorker(
        config,
        handler,
        lambda: notify_due_claimed(db, channel, settings),
        notify_every_seconds=notify_every,
        stop_when_idle_seconds=stop_when_idle,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await worker.run(stop)

    try:
        asyncio.run(main())
    finally:
        save_state(detector)
        db.dispose()
        figures = asdict(worker.stats)
        if handler.shared is not None:  # correlation windows shared with other workers
            figures["correlation_loaded"] = handler.shared.loaded
            figures["correlation_written"] = handler.shared.written
        print(json.dumps({"worker": figures}), flush=True)


if __name__ == "__main__":  # until the lead registers it: python -m otasuke.cli_commands.worker
    typer.run(worker_command)
