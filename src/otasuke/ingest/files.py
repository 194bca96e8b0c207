"""Files through the same store as live ingest: ``otasuke import`` and the drop folder."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

from otasuke.db.engine import Database
from otasuke.db.models import QuarantinedRecord
from otasuke.errors import OtasukeError, ParseError
from otasuke.ingest.parsers import parser_for_file
from otasuke.ingest.store import AcceptResult, LineError, Source, accept_records

CHUNK = 2000
"""Records per transaction."""


def store_file(db: Database, source: Source, path: Path) -> AcceptResult:
    """Parse and store every record of one file; a file no parser knows is quarantined whole."""
    result = AcceptResult()
    try:
        parser = parser_for_file(path)
    except ParseError as exc:
        quarantine_file(db, source, path, exc)
        result.rejected.append(LineError(0, f"{path}: {exc.message}", None, exc.hint))
        return result
    records = parser.read_file(path)
    while chunk := list(islice(records, CHUNK)):
        with db.session() as s:
            result.add(accept_records(s, source, chunk))
    return result


def quarantine_file(db: Database, source: Source, path: Path, exc: OtasukeError) -> None:
    """Keep the head of a refused file with the reason (nothing rejected vanishes)."""
    with path.open("rb") as fh:
        head = fh.read(4096).decode("utf-8", "replace").replace("\x00", "\\x00")
    with db.session() as s:
        s.add(
            QuarantinedRecord(
                customer_id=source.customer_id,
                sensor_id=source.sensor_id,
                location=str(path)[:500],
                source_format=None,
                field=None,
                reason=str(exc),
                raw=head,
            )
        )
