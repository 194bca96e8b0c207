"""観測 (observability): the figures behind ``GET /metrics`` and ``otasuke status``.

Two kinds of figures, both exposed in the Prometheus text format through a
:class:`~prometheus_client.CollectorRegistry` made for each scrape (never the
global one, so tests and several apps in one process stay apart):

* **read from the database at scrape time** (:class:`DatabaseCollector`): what the
  database already holds is counted there, so it is always true and needs no
  hook anywhere: events stored by format, quarantined records by field, alerts by
  source, notifications by status, events pending detection and the age of the
  oldest, silent sensors, open incidents by severity, overdue notifications and
  the notification latency (SLA start → customer told);
* **counted in this process** (:class:`Metrics`): what no table holds: lines
  received per transport, shed under overload, duplicates removed, and the
  spool's depth. The syslog receivers' own counters are read from their handle
  (:func:`watch_syslog`); the HTTP ingest API calls :func:`count_accepted`.

Every name starts with ``otasuke_``. Totals read from the database go down if
rows are deleted (Prometheus treats that as a counter reset).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from otasuke.db.engine import Database
from otasuke.db.models import Alert, Incident, Notification, QuarantinedRecord, StoredEvent
from otasuke.health import sensor_states, silent_count
from otasuke.standard.incident import Severity

if TYPE_CHECKING:
    from otasuke.bus.jetstream import BusFigures

LATENCY_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 2700.0, 3600.0, 7200.0)
"""Seconds; REQ-MON-60MIN is the 3600 bucket, the issue's target (p99 ≤ 10 s) the first."""


class SyslogLike(Protocol):
    """What :func:`watch_syslog` reads of a running :class:`SyslogHandle`."""

    @property
    def stats(self) -> Any: ...

    drain: Any


# --- counted in this process ---------------------------------------------------------


class Metrics(Collector):
    """In-process counters; thread-safe. One default instance: :data:`METRICS`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received: dict[str, int] = {}
        self.shed: dict[str, int] = {}
        self.deduplicated = 0
        self.malformed: dict[str, int] = {}
        self._syslog: list[SyslogLike] = []

    def count_received(self, transport: str, n: int = 1) -> None:
        with self._lock:
            self.received[transport] = self.received.get(transport, 0) + n

    def count_shed(self, transport: str, n: int = 1) -> None:
        """Events refused under overload (HTTP 429, a full queue): never silently."""
        with self._lock:
            self.shed[transport] = self.shed.get(transport, 0) + n

    def count_malformed(self, transport: str) -> None:
        """A session closed because its sender broke the framing (RELP)."""
        with self._lock:
            self.malformed[transport] = self.malformed.get(transport, 0) + 1

    def count_duplicates(self, n: int) -> None:
        with self._lock:
            self.deduplicated += n

    def count_accepted(self, result: Any, transport: str) -> None:
        """One :class:`~otasuke.ingest.store.AcceptResult` of a batch received by ``transport``."""
        lines = int(result.accepted) + int(result.duplicates) + len(result.rejected)
        with self._lock:
            self.received[transport] = self.received.get(transport, 0) + lines
            self.deduplicated += int(result.duplicates)

    def watch_syslog(self, handle: SyslogLike) -> None:
        """Read a running syslog handle's counters and spool backlog at every scrape."""
        with self._lock:
            self._syslog.append(handle)

    def unwatch_syslog(self, handle: SyslogLike) -> None:
        with self._lock:
            self._syslog = [h for h in self._syslog if h is not handle]

    def snapshot(self) -> dict[str, Any]:
        """Counters now, the syslog handles' included (also for ``otasuke status``)."""
        with self._lock:
            received, shed = dict(self.received), dict(self.shed)
            deduplicated, handles = self.deduplicated, list(self._syslog)
        depth: int | None = None
        damaged = 0
        for h in handles:
            st = h.stats
            received["tcp"] = received.get("tcp", 0) + int(st.tcp_lines)
            received["udp"] = received.get("udp", 0) + int(st.udp_datagrams)
            shed["udp"] = shed.get("udp", 0) + int(st.udp_shed)
            deduplicated += int(h.drain.stats.duplicates)
            damaged += int(h.drain.stats.damaged_records)
            if getattr(getattr(h, "config", None), "drain", True):
                depth = (depth or 0) + int(h.drain.backlog_bytes())
            elif (spool := getattr(h, "spool", None)) is not None:
                # bus mode: the publisher, not this drain, moves the spool's cursor file
                depth = (depth or 0) + int(spool_backlog_bytes(spool.directory) or 0)
        return {
            "received": received,
            "shed": shed,
            "deduplicated": deduplicated,
            "spool_depth_bytes": depth,
            "spool_damaged_records": damaged,
        }

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        received = CounterMetricFamily(
            "otasuke_events_received",
            "Lines or records received, by transport.",
            labels=["transport"],
        )
        for transport, n in sorted(snap["received"].items()):
            received.add_metric([transport], n)
        yield received
        shed = CounterMetricFamily(
            "otasuke_events_shed",
            "Events refused under overload (counted, never silent).",
            labels=["transport"],
        )
        for transport, n in sorted(snap["shed"].items()):
            shed.add_metric([transport], n)
        yield shed
        malformed = CounterMetricFamily(
            "otasuke_receiver_sessions_malformed",
            "Sessions closed because the sender broke the framing, by transport.",
            labels=["transport"],
        )
        for transport, n in sorted(dict(self.malformed).items()):
            malformed.add_metric([transport], n)
        yield malformed
        yield CounterMetricFamily(
            "otasuke_events_deduplicated",
            "Events received again (same customer and event id) and stored once.",
            value=snap["deduplicated"],
        )
        yield CounterMetricFamily(
            "otasuke_spool_damaged_records",
            "Damaged spool records found by the drain (kept in the quarantine).",
            value=snap["spool_damaged_records"],
        )
        if snap["spool_depth_bytes"] is not None:
            yield GaugeMetricFamily(
                "otasuke_spool_depth_bytes",
                "Spool bytes not yet drained into the database.",
                value=snap["spool_depth_bytes"],
            )


METRICS = Metrics()
"""The process's counters (what ``/metrics`` shows unless the app has its own)."""


def count_accepted(result: Any, transport: str) -> None:
    METRICS.count_accepted(result, transport)


def count_received(transport: str, n: int = 1) -> None:
    METRICS.count_received(transport, n)


def count_shed(transport: str, n: int = 1) -> None:
    METRICS.count_shed(transport, n)


def count_malformed(transport: str) -> None:
    METRICS.count_malformed(transport)


def watch_syslog(handle: SyslogLike) -> None:
    METRICS.watch_syslog(handle)


# --- read from the database -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DbFigures:
    """What the database says now (the same figures ``otasuke status`` prints)."""

    events_by_format: dict[str, int]
    quarantined_by_field: dict[str, int]
    alerts_by_source: dict[str, int]
    notifications_by_status: dict[str, int]
    pending_events: int
    pending_oldest_seconds: float
    sensors: int
    sensors_silent: int
    open_incidents_by_severity: dict[str, int]
    notify_overdue: int
    notify_latencies: list[float]


def _grouped(s: Session, column: Any) -> dict[str, int]:
    rows = s.execute(select(column, func.count()).group_by(column)).all()
    return {str(key) if key is not None else "none": int(n) for key, n in rows}


def db_figures(s: Session, now: datetime) -> DbFigures:
    oldest = s.scalar(
        select(func.min(StoredEvent.received_at)).where(StoredEvent.processed.is_(False))
    )
    pending = s.scalar(
        select(func.count()).select_from(StoredEvent).where(StoredEvent.processed.is_(False))
    )
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    states = sensor_states(s, now)
    open_rows = s.execute(
        select(Incident.severity, func.count())
        .where(Incident.closed.is_(False))
        .group_by(Incident.severity)
    ).all()
    overdue = s.scalar(
        select(func.count())
        .select_from(Incident)
        .where(
            Incident.severity == Severity.SERIOUS.value,
            Incident.notified_at.is_(None),
            Incident.closed.is_(False),
            Incident.notify_deadline < now,
        )
    )
    latencies = [
        (told - started).total_seconds()
        for started, told in s.execute(
            select(Incident.sla_started_at, Incident.notified_at).where(
                Incident.sla_started_at.is_not(None), Incident.notified_at.is_not(None)
            )
        ).all()
        if started is not None and told is not None
    ]
    return DbFigures(
        events_by_format=_grouped(s, StoredEvent.source_format),
        quarantined_by_field=_grouped(s, QuarantinedRecord.field),
        alerts_by_source=_grouped(s, Alert.source),
        notifications_by_status=_grouped(s, Notification.status),
        pending_events=int(pending or 0),
        pending_oldest_seconds=max((now - oldest).total_seconds(), 0.0) if oldest else 0.0,
        sensors=len(states),
        sensors_silent=silent_count(states),
        open_incidents_by_severity={str(k): int(n) for k, n in open_rows},
        notify_overdue=int(overdue or 0),
        notify_latencies=latencies,
    )


def _labelled(
    family: CounterMetricFamily | GaugeMetricFamily, values: dict[str, int]
) -> CounterMetricFamily | GaugeMetricFamily:
    for key, n in sorted(values.items()):
        family.add_metric([key], n)
    return family


def latency_histogram(latencies: Sequence[float]) -> HistogramMetricFamily:
    buckets: list[tuple[str, float]] = [
        (str(bound), float(sum(1 for x in latencies if x <= bound))) for bound in LATENCY_BUCKETS
    ]
    buckets.append(("+Inf", float(len(latencies))))
    return HistogramMetricFamily(
        "otasuke_notify_latency_seconds",
        "Serious incidents: seconds from the SLA start (first evidence) to the customer told.",
        buckets=buckets,
        sum_value=float(sum(latencies)),
    )


class DatabaseCollector(Collector):
    """Reads :func:`db_figures` at each scrape."""

    def __init__(self, db: Database, now: datetime | None = None) -> None:
        self.db = db
        self.now = now

    def collect(self) -> Iterable[Metric]:
        now = self.now or datetime.now(UTC)
        with self.db.sessions() as s:
            f = db_figures(s, now)
        yield _labelled(
            CounterMetricFamily(
                "otasuke_events_parsed", "Events parsed and stored, by format.", labels=["format"]
            ),
            f.events_by_format,
        )
        yield _labelled(
            CounterMetricFamily(
                "otasuke_events_quarantined",
                "Records kept in the quarantine, by the field that was wrong.",
                labels=["reason_field"],
            ),
            f.quarantined_by_field,
        )
        yield _labelled(
            CounterMetricFamily("otasuke_alerts", "Alerts, by detector.", labels=["source"]),
            f.alerts_by_source,
        )
        yield _labelled(
            CounterMetricFamily(
                "otasuke_notifications", "Notifications, by status.", labels=["status"]
            ),
            f.notifications_by_status,
        )
        yield GaugeMetricFamily(
            "otasuke_pending_events",
            "Events stored but not yet through detection (the worker's lag).",
            value=f.pending_events,
        )
        yield GaugeMetricFamily(
            "otasuke_pending_oldest_seconds",
            "Age of the oldest event waiting for detection (0 when none waits).",
            value=f.pending_oldest_seconds,
        )
        yield GaugeMetricFamily("otasuke_sensors", "Registered sensors.", value=f.sensors)
        yield GaugeMetricFamily(
            "otasuke_sensors_silent",
            "Sensors silent longer than their threshold (REQ-MON-24H).",
            value=f.sensors_silent,
        )
        yield _labelled(
            GaugeMetricFamily(
                "otasuke_incidents_open", "Open incidents, by severity.", labels=["severity"]
            ),
            f.open_incidents_by_severity,
        )
        yield GaugeMetricFamily(
            "otasuke_notify_overdue",
            "Serious incidents past their notification deadline and not yet told (REQ-MON-60MIN).",
            value=f.notify_overdue,
        )
        yield latency_histogram(f.notify_latencies)


class _WorkerCollector(Collector):
    def __init__(self, worker: Any) -> None:
        self.worker = worker

    def collect(self) -> Iterable[Metric]:
        ready = self.worker is not None and self.worker.ready.is_set()
        failing = self.worker is not None and self.worker.last_error is not None
        yield GaugeMetricFamily(
            "otasuke_worker_ready", "1 when the in-process worker runs detection.", value=ready
        )
        yield GaugeMetricFamily(
            "otasuke_worker_failing", "1 when the worker's last run failed.", value=failing
        )


class _SpoolDirCollector(Collector):
    def __init__(self, spool_dir: Path) -> None:
        self.spool_dir = spool_dir

    def collect(self) -> Iterable[Metric]:
        depth = spool_backlog_bytes(self.spool_dir)
        if depth is not None:
            yield GaugeMetricFamily(
                "otasuke_spool_depth_bytes",
                "Spool bytes not yet drained into the database.",
                value=depth,
            )


class BusCollector(Collector):
    """JetStream figures read at this scrape (:func:`otasuke.bus.jetstream.read_figures`)
    and the spool bytes the publisher has not yet had acknowledged."""

    def __init__(self, figures: BusFigures, unpublished_bytes: int | None) -> None:
        self.figures = figures
        self.unpublished_bytes = unpublished_bytes

    def collect(self) -> Iterable[Metric]:
        f = self.figures
        yield GaugeMetricFamily(
            "otasuke_bus_up",
            "1 when the NATS JetStream server answered this scrape, 0 when it could not be asked.",
            value=1 if f.up else 0,
        )
        if self.unpublished_bytes is not None:
            yield GaugeMetricFamily(
                "otasuke_bus_unpublished_bytes",
                "Spool bytes not yet acknowledged by JetStream (the publisher's backlog).",
                value=self.unpublished_bytes,
            )
        if f.stream_exists:
            for name, help_text, value in (
                (
                    "otasuke_bus_stream_messages",
                    "Messages in the ingest stream.",
                    f.stream_messages,
                ),
                ("otasuke_bus_stream_bytes", "Bytes in the ingest stream.", f.stream_bytes),
            ):
                family = GaugeMetricFamily(name, help_text, labels=["stream"])
                family.add_metric([f.stream], value)
                yield family
        if f.consumer_exists:
            for name, help_text, value in (
                (
                    "otasuke_bus_consumer_pending",
                    "Consumer lag: messages not yet delivered to any worker.",
                    f.consumer_pending,
                ),
                (
                    "otasuke_bus_consumer_ack_pending",
                    "Messages delivered to a worker and not yet acknowledged.",
                    f.consumer_ack_pending,
                ),
                (
                    "otasuke_bus_consumer_redelivered",
                    "Messages delivered more than once and still unacknowledged.",
                    f.consumer_redelivered,
                ),
            ):
                family = GaugeMetricFamily(name, help_text, labels=["stream", "consumer"])
                family.add_metric([f.stream, f.consumer], value)
                yield family


def spool_backlog_bytes(spool_dir: Path) -> int | None:
    """Spool bytes past the drain's cursor, read without opening the spool (None: no spool).

    Opening a :class:`~otasuke.ingest.spool.Spool` would recover it (and could cut
    a tail another process is writing); this only reads ``cursor.json`` and sizes.
    """
    if not spool_dir.is_dir():
        return None
    try:
        cursor = orjson.loads((spool_dir / "cursor.json").read_bytes())
        segment, offset = int(cursor["segment"]), int(cursor["offset"])
    except (FileNotFoundError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        segment, offset = 0, 0
    total = 0
    for path in spool_dir.glob("*.seg"):
        try:
            seg = int(path.stem)
            size = path.stat().st_size
        except (ValueError, FileNotFoundError):
            continue
        if seg > segment:
            total += size
        elif seg == segment:
            total += max(size - offset, 0)
    return total


def render_metrics(
    db: Database,
    metrics: Metrics | None = None,
    *,
    worker: Any = None,
    spool_dir: Path | None = None,
    now: datetime | None = None,
    bus: BusFigures | None = None,
) -> bytes:
    """The Prometheus text exposition of every figure (a fresh registry per scrape).

    ``spool_dir`` is read for the spool depth only when no syslog handle is watched.
    ``bus`` (figures read from JetStream for this scrape) adds the ``otasuke_bus_*``
    gauges; the unpublished backlog is what lies past the cursor in ``spool_dir``.
    """
    metrics = metrics or METRICS
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    registry.register(DatabaseCollector(db, now))
    registry.register(_WorkerCollector(worker))
    if spool_dir is not None and metrics.snapshot()["spool_depth_bytes"] is None:
        registry.register(_SpoolDirCollector(spool_dir))
    if bus is not None:
        unpublished = spool_backlog_bytes(spool_dir) if spool_dir is not None else None
        registry.register(BusCollector(bus, unpublished))
    return generate_latest(registry)
