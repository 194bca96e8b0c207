"""イベントストア (event store): every customer's raw and normalised events as Parquet.

Kept per customer and day under ``<data_dir>/events`` (:mod:`.layout`), written
in batches (:mod:`.writer`) by the exporter after detection (:mod:`.export`),
searched with DuckDB inside one customer's folder only (:mod:`.query`,
:mod:`.search`) and deleted after the contract's retention (:mod:`.retention`).
"""

from __future__ import annotations

from otasuke.eventstore.export import EventExporter, ExportResult, export_processed
from otasuke.eventstore.layout import EventStoreError, events_root
from otasuke.eventstore.retention import RetentionResult, enforce_retention, retention_days
from otasuke.eventstore.search import SearchResult, search_events
from otasuke.eventstore.writer import EventRecord, write_events, write_stored

__all__ = [
    "EventExporter",
    "EventRecord",
    "EventStoreError",
    "ExportResult",
    "RetentionResult",
    "SearchResult",
    "enforce_retention",
    "events_root",
    "export_processed",
    "retention_days",
    "search_events",
    "write_events",
    "write_stored",
]
