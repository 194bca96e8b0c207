"""``otasuke import``: files through the same pipeline as live ingest.

EVTX, Suricata EVE JSON and FortiGate syslog files (folders are walked) are
parsed and stored for the customer exactly as the ingest API stores them,
then detection, incidents and notification run. At the end: events accepted,
duplicates, records rejected with their reasons, alerts, incidents.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import select

from otasuke.cli_commands import err, fail, open_database, out
from otasuke.db.engine import Database
from otasuke.db.models import Sensor
from otasuke.detect.engine import Detector
from otasuke.errors import OtasukeError
from otasuke.ingest.files import store_file
from otasuke.ingest.store import AcceptResult, Source
from otasuke.pipeline import Pipeline, ProcessResult, pending_count
from otasuke.settings import Settings, get_settings
from otasuke.tenancy.scope import Viewer, access_customer_by_slug


def walk(paths: list[Path]) -> Iterator[Path]:
    for p in paths:
        if p.is_dir():
            yield from sorted(x for x in p.rglob("*") if x.is_file() and not x.name.startswith("."))
        else:
            yield p


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


def import_files(db: Database, source: Source, paths: list[Path]) -> AcceptResult:
    """Parse and store every record of every file; unrecognised files are quarantined."""
    files = list(walk(paths))
    total = AcceptResult()
    with _progress() as progress:
        task = progress.add_task("取り込み / import", total=len(files))
        for path in files:
            progress.update(task, description=f"取り込み / import {path.name[:40]}")
            total.add(store_file(db, source, path))
            progress.advance(task)
    return total


def run_pipeline(
    db: Database,
    settings: Settings,
    detector: Detector | None = None,
) -> ProcessResult:
    """Detection, incidents and notification over everything pending, with progress."""
    if detector is None:
        with _progress() as progress:
            task = progress.add_task("ルール読込 / loading rules", total=None)

            def tick(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            detector = Detector.load(
                settings.rules_paths,
                settings.ioc_paths,
                progress=tick,
                cache_dir=settings.rule_cache_dir,
            )
    pipeline = Pipeline(db, settings, detector)
    with db.session() as s:
        pending = pending_count(s)
    with _progress() as progress:
        task = progress.add_task("検知 / detection", total=pending)
        result = pipeline.process_pending(on_batch=lambda n: progress.advance(task, n))
    return result


def import_command(
    paths: Annotated[list[Path], typer.Argument(help="files or folders", exists=True)],
    customer: Annotated[str, typer.Option("--customer", "-c", help="customer slug")],
    sensor: Annotated[str | None, typer.Option("--sensor", help="sensor name")] = None,
) -> None:
    """Import EVTX / Suricata EVE / FortiGate files for a customer through the real pipeline."""
    settings = get_settings()
    db = open_database(settings)
    try:
        with db.session() as s:
            org = access_customer_by_slug(s, Viewer.system(), customer)
            sensor_row = None
            if sensor is not None:
                sensor_row = s.scalar(
                    select(Sensor).where(Sensor.customer_id == org.id, Sensor.name == sensor)
                )
                if sensor_row is None:
                    raise OtasukeError(
                        "no such sensor for this customer",
                        field="--sensor",
                        hint="otasuke customers --format json lists them",
                    )
            source = (
                Source.of(sensor_row)
                if sensor_row
                else Source(customer_id=org.id, sensor_id=None, sensor_name="import")
            )
    except OtasukeError as exc:
        raise fail(exc) from None
    started = time.perf_counter()
    accepted = import_files(db, source, paths)
    stored = time.perf_counter()
    result = run_pipeline(db, settings)
    print_summary(
        accepted,
        result,
        store_seconds=stored - started,
        total_seconds=time.perf_counter() - started,
    )
    db.dispose()


def print_summary(
    accepted: AcceptResult,
    result: ProcessResult,
    *,
    store_seconds: float | None = None,
    total_seconds: float | None = None,
) -> None:
    table = Table(title="取り込み結果 / import result", show_header=False, min_width=60)
    table.add_row("受け付けたイベント / events accepted", f"{accepted.accepted:,}")
    table.add_row("重複 / duplicates (already stored)", f"{accepted.duplicates:,}")
    table.add_row("拒否 / rejected (quarantined)", f"{len(accepted.rejected):,}")
    table.add_row("アラート / alerts", f"{result.alerts:,}")
    table.add_row("インシデント / incidents touched", f"{result.incidents:,}")
    table.add_row("通知 / notifications sent", f"{result.notified:,}")
    if store_seconds and total_seconds:
        table.add_row(
            "保存の速さ / stored per second",
            f"{accepted.accepted / store_seconds:,.0f} ({store_seconds:.1f} s)",
        )
        table.add_row(
            "全体の速さ / events per second, all steps",
            f"{accepted.accepted / total_seconds:,.0f} ({total_seconds:.1f} s)",
        )
    out.print(table)
    if accepted.rejected:
        reasons: Counter[str] = Counter()
        example: dict[str, str] = {}
        for e in accepted.rejected:
            where, _, reason = e.error.rpartition(": ")
            reasons[reason[:120]] += 1
            example.setdefault(reason[:120], where)
        out.print("[bold]拒否の理由 / reasons for rejection[/] (quarantined, see the console)")
        for reason, n in reasons.most_common(20):
            out.print(f"  {n:>6,}  {reason}  e.g. {example[reason]}", soft_wrap=True)
