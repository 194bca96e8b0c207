"""``otasuke serve``: the web server (console, portal, ingest API) with the in-process worker."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer

from otasuke import metrics
from otasuke.bus.jetstream import BusConfig
from otasuke.cli_commands import open_database
from otasuke.detect.engine import Detector
from otasuke.ingest.receivers.drain import IngestSpool
from otasuke.ingest.receivers.dropfolder import DropFolder, DropWatcher
from otasuke.ingest.receivers.publish import start_publisher
from otasuke.ingest.receivers.relp import start_relp
from otasuke.ingest.receivers.syslog import SyslogConfig, start_syslog
from otasuke.pipeline import Pipeline
from otasuke.settings import Settings, get_settings


def serve(settings: Settings, detector: Detector | None = None) -> None:
    import uvicorn

    from otasuke.web.app import create_app

    db = open_database(settings)

    def make_pipeline() -> Pipeline:
        d = detector or Detector.load(
            settings.rules_paths, settings.ioc_paths, cache_dir=settings.rule_cache_dir
        )
        return Pipeline(db, settings, d)

    config = SyslogConfig.from_settings(settings)
    bus = BusConfig.from_settings(settings) if settings.bus_url else None
    if bus is not None:  # receivers publish; `otasuke worker` processes store and detect
        config = replace(config, drain=False)
    syslog = start_syslog(settings, db, config)
    try:  # RELP shares the syslog receivers' loop, spool and sensor table
        relp = start_relp(settings, syslog)
    except BaseException:
        syslog.stop()
        raise
    publisher = start_publisher(syslog.spool, bus) if bus is not None else None
    # One spool per data folder: HTTP ingest appends to the syslog receivers' spool,
    # moved on by the same drain (or publisher).
    if publisher is not None:
        pub = publisher.publisher
        ingest = IngestSpool(syslog.spool, pub, lambda: pub.stats.records)
    else:
        ingest = IngestSpool.of_drain(syslog.spool, syslog.drain)
    app = create_app(settings, db=db, make_pipeline=make_pipeline, ingest_spool=ingest)
    metrics.watch_syslog(syslog)
    drop = DropWatcher(
        DropFolder(settings.drop_dir or settings.data_dir / "drop", db),
        settings.drop_poll_seconds,
    ).start()
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
    finally:
        metrics.METRICS.unwatch_syslog(syslog)
        drop.stop()
        if relp is not None:
            relp.stop()
        if publisher is not None:
            publisher.stop()
        syslog.stop()


def serve_command(
    host: Annotated[str | None, typer.Option(help="listen address")] = None,
    port: Annotated[int | None, typer.Option(help="listen port")] = None,
) -> None:
    """Serve the provider console, the customer portal and the ingest API."""
    settings = get_settings()
    if host is not None:
        settings.host = host
    if port is not None:
        settings.port = port
    serve(settings)
