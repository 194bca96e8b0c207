"""The spool: acknowledged means fsynced; damage is found, counted and never silent."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from otasuke.ingest.spool import HEADER, Position, Spool, SpoolError, encode


def drain_all(spool: Spool, position: Position | None = None) -> tuple[list[bytes], int, Position]:
    """Every record from ``position`` (default: the cursor); payloads, damaged count, end."""
    position = position or spool.cursor()
    payloads: list[bytes] = []
    damaged = 0
    while True:
        batch = spool.read(position, max_records=7, max_bytes=256)
        payloads += [r.payload for r in batch.records]
        damaged += len(batch.damaged)
        if batch.next_position == position:
            return payloads, damaged, position
        position = batch.next_position


def test_append_read_round_trip_across_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1000)
    sent = [f"line {i} ".encode() * (i % 5 + 1) for i in range(300)]
    for start in range(0, 300, 10):
        spool.append(sent[start : start + 10])
    assert len(spool.segments()) > 5
    payloads, damaged, end = drain_all(spool)
    assert payloads == sent and damaged == 0
    spool.commit(end)
    assert len(spool.segments()) == 1  # consumed segments deleted, the open one kept
    spool.close()


def test_large_record_and_limits(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=4096)
    big = os.urandom(100_000)
    spool.append([b"a", big, b"b"])
    assert drain_all(spool)[0] == [b"a", big, b"b"]
    with pytest.raises(SpoolError, match="larger than"):
        spool.append([b"x" * (17 * 1024 * 1024)])
    spool.close()


def test_group_commit_under_8_threads(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    start = threading.Barrier(8)

    def appender(n: int) -> None:
        start.wait()
        for i in range(200):
            spool.append([f"{n}:{i}".encode()])

    threads = [threading.Thread(target=appender, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    payloads, _, _ = drain_all(spool)
    assert sorted(payloads) == sorted(f"{n}:{i}".encode() for n in range(8) for i in range(200))
    for n in range(8):  # each appender's records stay in its order
        mine = [p for p in payloads if p.startswith(f"{n}:".encode())]
        assert mine == [f"{n}:{i}".encode() for i in range(200)]
    print(f"1600 appends by 8 threads: {spool.fsyncs} fsyncs")
    assert spool.fsyncs < 1600  # appenders shared fsyncs
    spool.close()


def _one_segment(tmp_path: Path, count: int) -> tuple[Path, list[bytes]]:
    spool = Spool(tmp_path)
    sent = [f"record {i:04d}".encode() for i in range(count)]
    spool.append(sent)
    spool.close()
    [segment] = [s for s in spool.segments() if spool.segment_path(s).stat().st_size]
    return spool.segment_path(segment), sent


def test_torn_tail_is_truncated_and_reported(tmp_path: Path) -> None:
    path, sent = _one_segment(tmp_path, 100)
    size = path.stat().st_size
    record = HEADER.size + len(sent[0])
    with path.open("r+b") as fh:
        fh.truncate(size - record // 2)  # the last record half written
    spool = Spool(tmp_path)
    report = spool.report
    print(f"torn tail: {report}")
    assert report.intact_records == 99
    assert report.damaged_records == 1
    assert report.truncated_bytes == record - record // 2
    assert path.stat().st_size == size - record
    assert drain_all(spool)[0] == sent[:99]
    spool.append([b"after"])  # writing goes on in a new segment
    assert drain_all(spool)[0] == [*sent[:99], b"after"]
    spool.close()


def test_corrupt_record_is_skipped_counted_and_rest_recovered(tmp_path: Path) -> None:
    path, sent = _one_segment(tmp_path, 100)
    record = HEADER.size + len(sent[0])
    data = bytearray(path.read_bytes())
    data[10 * record + HEADER.size + 3] ^= 0x40  # a payload byte of record 10
    data[50 * record + 1] ^= 0x01  # the length field of record 50
    path.write_bytes(bytes(data))
    spool = Spool(tmp_path)
    report = spool.report
    print(f"corrupted records: {report}")
    assert (report.intact_records, report.damaged_records) == (98, 2)
    assert report.damaged_bytes == 2 * record
    assert report.truncated_bytes == 0
    payloads, damaged, _ = drain_all(spool)
    assert payloads == [p for i, p in enumerate(sent) if i not in (10, 50)]
    assert damaged == 2  # handed to the consumer, which keeps them in the quarantine
    spool.close()


def test_corrupt_last_record_is_truncated(tmp_path: Path) -> None:
    path, sent = _one_segment(tmp_path, 20)
    data = bytearray(path.read_bytes())
    data[-2] ^= 0xFF
    path.write_bytes(bytes(data))
    spool = Spool(tmp_path)
    assert (spool.report.intact_records, spool.report.damaged_records) == (19, 1)
    assert drain_all(spool)[0] == sent[:19]
    spool.close()


def test_cursor_survives_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=200)
    spool.append([f"r{i}".encode() for i in range(50)])
    batch = spool.read(spool.cursor(), max_records=20)
    assert [r.payload for r in batch.records] == [f"r{i}".encode() for i in range(20)]
    spool.commit(batch.next_position)
    spool.close()
    assert not list(tmp_path.glob("*.tmp"))
    again = Spool(tmp_path, segment_bytes=200)
    assert again.cursor() == batch.next_position
    assert again.report.intact_records == 30  # only the unconsumed part is checked
    assert drain_all(again)[0] == [f"r{i}".encode() for i in range(20, 50)]
    again.close()


def test_segment_ids_never_repeat_after_everything_was_consumed(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([b"one"])
    first = spool.read(spool.cursor())
    spool.commit(first.next_position)
    spool.close()
    for path in tmp_path.glob("*.seg"):
        path.unlink()  # as if every segment had been consumed and deleted
    again = Spool(tmp_path)
    again.append([b"two"])
    second = again.read(again.cursor())
    assert [r.payload for r in second.records] == [b"two"]
    assert second.records[0].position > first.records[0].position
    again.close()


def test_encode_frames_length_and_crc() -> None:
    framed = encode(b"abc")
    assert HEADER.unpack_from(framed)[0] == 3 and framed[HEADER.size :] == b"abc"
