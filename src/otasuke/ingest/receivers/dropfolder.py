"""Watched drop folder: files put under ``<drop_dir>/<customer slug>/`` are imported.

For sensors that can only write files (an EDR's export, a nightly EVTX copy, a UTM's log
download): ``<drop_dir>/<customer slug>/<file>`` is stored for the customer,
``<drop_dir>/<customer slug>/<sensor name>/<file>`` for that sensor (its time zone is
used). A file is taken once it has not changed for ``settle_seconds`` (so a copy in
progress is not read half), stored through the same path as ``otasuke import``, then
moved to ``done/`` beside it. A file no parser knows is quarantined and moved to
``failed/`` with a ``.reason.txt``; a folder that names no customer is left alone and
reported in the log once (nothing is imported for a customer that cannot be scoped).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from otasuke.db.engine import Database
from otasuke.db.models import Organization, Sensor
from otasuke.errors import NotFound
from otasuke.ingest.files import store_file
from otasuke.ingest.store import AcceptResult, Source
from otasuke.tenancy.scope import Viewer, access_customer_by_slug

log = logging.getLogger(__name__)
SKIP = frozenset({"done", "failed"})


@dataclass(slots=True)
class DropStats:
    files: int = 0
    accepted: int = 0
    rejected: int = 0
    unknown_folders: set[str] = field(default_factory=set)


class DropFolder:
    """Imports settled files from the drop folder; ``scan_once`` is one pass."""

    def __init__(self, root: Path, db: Database, *, settle_seconds: float = 2.0) -> None:
        self.root = root
        self.db = db
        self.settle = settle_seconds
        self.stats = DropStats()
        root.mkdir(parents=True, exist_ok=True)

    def scan_once(self, now: float | None = None) -> AcceptResult:
        now = time.time() if now is None else now
        total = AcceptResult()
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            customer = self._customer(folder.name)
            if customer is None:
                continue
            for path, sensor_name in self._settled(folder, now):
                source = self._source(customer, sensor_name)
                result = store_file(self.db, source, path)
                total.add(result)
                self.stats.files += 1
                self.stats.accepted += result.accepted
                self.stats.rejected += len(result.rejected)
                self._move(path, ok=result.accepted > 0 or not result.rejected, result=result)
        return total

    def _customer(self, slug: str) -> Organization | None:
        try:
            with self.db.session() as s:
                return access_customer_by_slug(s, Viewer.system(), slug)
        except NotFound:
            if slug not in self.stats.unknown_folders:
                self.stats.unknown_folders.add(slug)
                log.warning("drop folder %s names no customer: its files are left alone", slug)
            return None

    def _settled(self, folder: Path, now: float) -> list[tuple[Path, str | None]]:
        found: list[tuple[Path, str | None]] = []
        for entry in sorted(folder.iterdir()):
            if entry.is_dir() and entry.name not in SKIP:
                found += [(f, entry.name) for f in sorted(entry.iterdir()) if f.is_file()]
            elif entry.is_file():
                found.append((entry, None))
        return [
            (f, sensor)
            for f, sensor in found
            if not f.name.startswith(".") and now - f.stat().st_mtime >= self.settle
        ]

    def _source(self, customer: Organization, sensor_name: str | None) -> Source:
        if sensor_name is not None:
            with self.db.session() as s:
                sensor = s.scalar(
                    select(Sensor).where(
                        Sensor.customer_id == customer.id, Sensor.name == sensor_name
                    )
                )
                if sensor is not None:
                    return Source.of(sensor)
        return Source(customer_id=customer.id, sensor_id=None, sensor_name="drop folder")

    def _move(self, path: Path, *, ok: bool, result: AcceptResult) -> None:
        target = path.parent / ("done" if ok else "failed")
        target.mkdir(exist_ok=True)
        destination = target / path.name
        if destination.exists():
            destination = target / f"{int(time.time())}-{path.name}"
        path.rename(destination)
        if result.rejected:
            reasons = "\n".join(f"{e.line}: {e.error}" for e in result.rejected[:100])
            destination.with_name(destination.name + ".reason.txt").write_text(
                reasons + "\n", encoding="utf-8"
            )


class DropWatcher:
    """Runs :meth:`DropFolder.scan_once` every ``poll_seconds`` in a thread."""

    def __init__(self, folder: DropFolder, poll_seconds: float) -> None:
        self.folder = folder
        self.poll = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drop-folder", daemon=True)

    def start(self) -> DropWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.folder.scan_once()
            except Exception:  # logged and retried next pass; the files stay in place
                log.exception("drop folder scan failed; retrying")
            self._stop.wait(self.poll)
