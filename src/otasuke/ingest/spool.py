"""Durable spool (スプール): an append-only log that every receiver writes before it acknowledges.

Layout under ``<data_dir>/spool``::

    000000000001.seg   segment files, named by an id that only grows
    000000000002.seg
    cursor.json        the consumer's checkpoint {"segment": 2, "offset": 4096}

A record is ``u32 length | u32 CRC32 | payload`` (little endian); the CRC covers the
four length bytes and the payload, so a flipped bit in either is caught.

Concurrency model: **threads**. :meth:`Spool.append` is thread-safe and returns only
after its records are fsynced. Appenders that arrive while an fsync is running
queue behind it and share the next one (group commit): with 8 threads, one fsync
acknowledges up to 8 batches. Asyncio code calls it through
``loop.run_in_executor`` (see :mod:`otasuke.ingest.receivers.syslog`).

The consumer reads in order from its cursor, never beyond what is fsynced, and
moves the cursor with :meth:`Spool.commit` (temp file + fsync + rename + fsync of
the folder) after its own work is durable: at-least-once. Segments behind the
cursor are deleted.

On open, :meth:`Spool.recover` scans every unconsumed segment, keeps every intact
record, truncates a torn or corrupt tail of the last segment and returns the
counts (:class:`RecoveryReport`); a damaged record in the middle of a segment is
skipped by the reader and handed to the consumer as :class:`Damaged`, so it can be
kept in the quarantine. Writing always starts a new segment after a restart: a
segment that was open at a crash is never appended to again.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from otasuke.errors import OtasukeError

log = logging.getLogger(__name__)

HEADER = struct.Struct("<II")
SUFFIX = ".seg"
CURSOR_FILE = "cursor.json"
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
MAX_RECORD_BYTES = 16 * 1024 * 1024
"""A larger record is refused on append, and a length above it marks damage on read."""


class SpoolError(OtasukeError):
    """The spool was used wrongly or its folder is unusable."""


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """Where a record starts: segment id and byte offset in that segment."""

    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class Record:
    """One intact record as read back."""

    position: Position
    payload: bytes


@dataclass(frozen=True, slots=True)
class Damaged:
    """Bytes between two intact records that do not form a record (CRC or length wrong)."""

    position: Position
    data: bytes


@dataclass(slots=True)
class RecoveryReport:
    """What :meth:`Spool.recover` found; logged, and returned for status pages and tests."""

    segments: int = 0
    intact_records: int = 0
    damaged_records: int = 0
    """Stretches of damaged bytes, each counted once (a corrupt record, a torn tail)."""
    damaged_bytes: int = 0
    truncated_bytes: int = 0
    """Bytes cut off the end of the last segment (part of ``damaged_bytes``)."""

    @property
    def clean(self) -> bool:
        return self.damaged_records == 0


@dataclass(slots=True)
class ReadBatch:
    """Records read from a cursor position, and where the next read starts."""

    records: list[Record] = field(default_factory=list)
    damaged: list[Damaged] = field(default_factory=list)
    next_position: Position = Position(0, 0)


def encode(payload: bytes) -> bytes:
    """One framed record."""
    length = len(payload)
    crc = zlib.crc32(payload, zlib.crc32(length.to_bytes(4, "little")))
    return HEADER.pack(length, crc) + payload


def _intact_at(data: bytes | memoryview, pos: int) -> int | None:
    """Length of the intact record at ``pos``, or None."""
    if pos + HEADER.size > len(data):
        return None
    length: int
    crc: int
    length, crc = HEADER.unpack_from(data, pos)
    end = pos + HEADER.size + length
    if length > MAX_RECORD_BYTES or end > len(data):
        return None
    body = data[pos + HEADER.size : end]
    if zlib.crc32(body, zlib.crc32(bytes(data[pos : pos + 4]))) != crc:
        return None
    return length


def scan(data: bytes, base: int = 0) -> Iterator[tuple[int, bytes | None, int]]:
    """Walk framed records: ``(offset, payload, size)``; payload None marks a damaged stretch.

    After damage the scan looks for the next offset where an intact record starts
    (a CRC match), so one bad record costs only itself.
    """
    view = memoryview(data)
    pos = 0
    n = len(data)
    while pos < n:
        length = _intact_at(view, pos)
        if length is not None:
            size = HEADER.size + length
            yield base + pos, bytes(view[pos + HEADER.size : pos + size]), size
            pos += size
            continue
        start = pos
        pos += 1
        while pos < n and _intact_at(view, pos) is None:
            pos += 1
        yield base + start, None, pos - start


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """The append-only spool in ``directory``; open it, append, read, commit, close."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync: bool = True,
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        directory.mkdir(parents=True, exist_ok=True)
        self._cond = threading.Condition()
        self._fd = -1
        self._segment = 0
        self._written = 0
        """Offset in the open segment after the last write."""
        self._synced = 0
        """Offset in the open segment up to which data is on disk."""
        self._write_seq = 0
        self._synced_seq = 0
        self._syncing = False
        self._closed = False
        self.appended_records = 0
        self.fsyncs = 0
        self.report = self.recover()
        self._open_segment(max([*self.segments(), self.cursor().segment, 0]) + 1)

    # --- files ---------------------------------------------------------------------

    def segments(self) -> list[int]:
        """Ids of the segment files present, oldest first."""
        ids = []
        for path in self.directory.glob(f"*{SUFFIX}"):
            try:
                ids.append(int(path.stem))
            except ValueError:
                continue
        return sorted(ids)

    def segment_path(self, segment: int) -> Path:
        return self.directory / f"{segment:012d}{SUFFIX}"

    def _open_segment(self, segment: int) -> None:
        path = self.segment_path(segment)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._segment = segment
        self._written = self._synced = os.fstat(self._fd).st_size
        if self.fsync:
            _fsync_dir(self.directory)

    # --- recovery ------------------------------------------------------------------

    def recover(self) -> RecoveryReport:
        """Check every unconsumed segment; truncate a damaged tail of the last one; report."""
        report = RecoveryReport()
        cursor = self.cursor()
        segments = [s for s in self.segments() if s >= cursor.segment]
        for segment in segments:
            path = self.segment_path(segment)
            data = path.read_bytes()
            start = cursor.offset if segment == cursor.segment else 0
            report.segments += 1
            last_good = start
            for offset, payload, size in scan(data[start:], start):
                if payload is None:
                    report.damaged_records += 1
                    report.damaged_bytes += size
                else:
                    report.intact_records += 1
                    last_good = offset + size
            if segment == segments[-1] and last_good < len(data):
                report.truncated_bytes = len(data) - last_good
                with path.open("r+b") as fh:
                    fh.truncate(last_good)
                    fh.flush()
                    os.fsync(fh.fileno())
        level = logging.INFO if report.clean else logging.WARNING
        log.log(
            level,
            "spool %s recovered: %d segments, %d intact records, %d damaged records "
            "(%d bytes, %d truncated from the tail)",
            self.directory,
            report.segments,
            report.intact_records,
            report.damaged_records,
            report.damaged_bytes,
            report.truncated_bytes,
        )
        return report

    # --- append (group commit) -------------------------------------------------------

    def append(self, batch: list[bytes]) -> None:
        """Write ``batch`` as records; return once they are on disk (fsynced)."""
        if not batch:
            return
        for payload in batch:
            if len(payload) > MAX_RECORD_BYTES:
                raise SpoolError(
                    f"record of {len(payload)} bytes is larger than {MAX_RECORD_BYTES}",
                    field="payload",
                    hint="split the input; syslog lines are cut at the receiver's max line size",
                )
        data = b"".join(encode(p) for p in batch)
        with self._cond:
            if self._closed:
                raise SpoolError("spool is closed", hint="open it again")
            while self._written > 0 and self._written + len(data) > self.segment_bytes:
                if self._syncing:
                    self._cond.wait()
                    continue
                self._rotate()
            _write_all(self._fd, data)
            self._written += len(data)
            self._write_seq += 1
            self.appended_records += len(batch)
            mine = self._write_seq
            if not self.fsync:
                self._synced, self._synced_seq = self._written, mine
                return
            self._wait_synced(mine)

    def _wait_synced(self, mine: int) -> None:
        """Become the leader that fsyncs for everyone queued, or wait for the leader."""
        while self._synced_seq < mine:
            if self._syncing:
                self._cond.wait()
                continue
            self._syncing = True
            target_seq, target_offset, fd = self._write_seq, self._written, self._fd
            self._cond.release()
            try:
                os.fsync(fd)
            finally:
                self._cond.acquire()
                self._syncing = False
                self._cond.notify_all()
            self.fsyncs += 1
            if fd == self._fd:
                self._synced = max(self._synced, target_offset)
            self._synced_seq = max(self._synced_seq, target_seq)

    def _rotate(self) -> None:
        """Seal the open segment (fsynced) and start the next; under the lock, no fsync running."""
        if self.fsync:
            os.fsync(self._fd)
            self.fsyncs += 1
        os.close(self._fd)
        self._synced_seq = self._write_seq
        self._open_segment(self._segment + 1)
        self._cond.notify_all()

    # --- read and commit -----------------------------------------------------------

    def cursor(self) -> Position:
        """The consumer's checkpoint: the first record not yet done."""
        path = self.directory / CURSOR_FILE
        try:
            obj = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return Position(0, 0)
        except orjson.JSONDecodeError as err:
            raise SpoolError(
                f"cursor file is not valid JSON: {err}",
                source=str(path),
                hint="it is written atomically; restore it from a backup or remove it to "
                "re-read every segment (duplicates are removed by event id)",
            ) from None
        return Position(int(obj["segment"]), int(obj["offset"]))

    def read(
        self, position: Position, max_records: int = 1000, max_bytes: int = 4 << 20
    ) -> ReadBatch:
        """Records from ``position`` on, in order, never past what is fsynced."""
        batch = ReadBatch(next_position=position)
        segment, offset = position.segment, position.offset
        while len(batch.records) < max_records:
            with self._cond:
                active, durable = self._segment, self._synced
            if segment > active:
                break
            path = self.segment_path(segment)
            if segment < active and not path.exists():
                later = [s for s in self.segments() if segment < s <= active]
                segment, offset = (later[0] if later else active), 0
                batch.next_position = Position(segment, offset)
                continue
            end = path.stat().st_size if segment < active else durable
            if offset >= end:
                if segment == active:
                    break
                segment, offset = segment + 1, 0
                batch.next_position = Position(segment, offset)
                continue
            consumed = self._read_some(path, segment, offset, end, batch, max_records, max_bytes)
            if consumed == 0:
                break
            offset += consumed
            batch.next_position = Position(segment, offset)
        return batch

    @staticmethod
    def _read_some(
        path: Path,
        segment: int,
        offset: int,
        end: int,
        batch: ReadBatch,
        max_records: int,
        max_bytes: int,
    ) -> int:
        """Read records of one segment from ``offset``; return the bytes consumed."""
        want = min(end - offset, max_bytes)
        with path.open("rb") as fh:
            while True:
                fh.seek(offset)
                data = fh.read(want)
                consumed = 0
                for rel, payload, size in scan(data):
                    if payload is None:
                        if rel + size < len(data) or offset + rel + size == end:
                            damaged = Damaged(
                                Position(segment, offset + rel), data[rel : rel + size]
                            )
                            batch.damaged.append(damaged)
                            consumed = rel + size
                            continue
                        break  # a record cut by ``want``: read it whole next time
                    batch.records.append(Record(Position(segment, offset + rel), payload))
                    consumed = rel + size
                    if len(batch.records) >= max_records:
                        break
                if consumed or want >= end - offset:
                    return consumed
                want = end - offset  # one record larger than max_bytes

    def commit(self, position: Position) -> None:
        """Move the consumer's cursor to ``position`` (durably) and delete finished segments."""
        path = self.directory / CURSOR_FILE
        tmp = path.with_suffix(".tmp")
        body = orjson.dumps({"segment": position.segment, "offset": position.offset})
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, body)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if self.fsync:
            _fsync_dir(self.directory)
        with self._cond:
            active = self._segment
        for segment in self.segments():
            if segment < position.segment and segment < active:
                self.segment_path(segment).unlink(missing_ok=True)

    def backlog_bytes(self, position: Position) -> int:
        """Bytes written but not yet consumed (spool depth)."""
        total = 0
        for segment in self.segments():
            if segment >= position.segment:
                size = self.segment_path(segment).stat().st_size
                total += size - (position.offset if segment == position.segment else 0)
        return max(total, 0)

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            while self._syncing:
                self._cond.wait()
            if self.fsync:
                os.fsync(self._fd)
            os.close(self._fd)
            self._closed = True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
