"""``otasuke detect``: Sigma ルール評価 over log files, stand-alone (no database).

Walks the given files and folders, parses every file a registered file parser
recognises (EVTX today), matches each event against the Sigma rules (the bundled
SigmaHQ Windows rules unless ``--rules`` is given) and writes one JSON line per match
to stdout or ``--output``: the rule with its DRL 1.1 attribution (author, licence,
link) and the event. Progress and the summary go to stderr, so stdout stays JSONL.

With several files the scan runs in ``--workers`` processes (default: one per CPU), forked
after the rules are loaded so they share the compiled rules; the output is the same as
with one worker: the files in walk order, each file's matches in record order.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, Any, Protocol

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from otasuke.detect.sigma import RuleSet, default_cache_dir, default_rule_paths
from otasuke.detect.sigma.index import IndexKey
from otasuke.detect.sigma.rules import CompiledRule
from otasuke.detect.sigma.ruleset import Screened
from otasuke.detect.sigma.view import EventView
from otasuke.errors import OtasukeError, ParseError
from otasuke.ingest.parsers import FileParser, ParseContext, RawRecord, parser_for_file

_MAX_NOTES = 20


class OutputFormat(StrEnum):
    JSONL = "jsonl"
    TABLE = "table"


@dataclass
class Tally:
    """What one run saw (集計), for the summary."""

    files: int = 0
    skipped_files: int = 0
    records: int = 0
    screened: int = 0
    """Records no rule could match, found so on their text and never decoded."""
    parse_errors: int = 0
    matches: int = 0
    fired: Counter[str] = field(default_factory=Counter)
    notes: int = 0

    def add(self, other: Tally) -> None:
        """Count what a worker saw in one file (not its notes: they are replayed)."""
        self.files += other.files
        self.skipped_files += other.skipped_files
        self.records += other.records
        self.screened += other.screened
        self.parse_errors += other.parse_errors
        self.matches += other.matches
        self.fired.update(other.fired)


class Matchable(Protocol):
    """What a match row needs of a parsed record: an Event, or a parser's lighter form."""

    @property
    def fields(self) -> Mapping[str, Any]: ...

    @property
    def observed_at(self) -> datetime: ...

    @property
    def host(self) -> str | None: ...

    @property
    def record_id(self) -> int | None: ...


@dataclass
class FileResult:
    """One file scanned by a worker: its counts, notes and output, in order."""

    tally: Tally
    notes: list[str]
    jsonl: bytes = b""
    rows: list[dict[str, Any]] = field(default_factory=list)


def detect_command(
    paths: Annotated[
        list[Path], typer.Argument(help="EVTX files or folders (walked recursively).")
    ],
    rules: Annotated[
        list[Path] | None,
        typer.Option(
            "--rules", help="Sigma rule file or folder; repeatable. Default: bundled rules."
        ),
    ] = None,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="jsonl (one match per line) or table.")
    ] = OutputFormat.JSONL,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write matches here, not stdout.")
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            help="Compiled-rule cache folder. Default: $OTASUKE_CACHE_DIR or ~/.cache/otasuke.",
        ),
    ] = None,
    no_cache: Annotated[
        bool,
        typer.Option("--no-cache", help="Compile every rule; neither read nor write the cache."),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            "-j",
            min=1,
            help="Processes scanning files in parallel. Default: one per CPU (1: in-process).",
        ),
    ] = None,
) -> None:
    """検知 / detect: match log files against Sigma rules, without a database."""
    err = Console(stderr=True)
    missing = [p for p in [*paths, *(rules or [])] if not p.exists()]
    if missing:
        for path in missing:
            err.print(f"[red]見つかりません / not found:[/red] {path}")
        raise typer.Exit(2)
    started = time.perf_counter()
    cache = None if no_cache else (cache_dir or default_cache_dir())
    ruleset = _load_rules(rules or default_rule_paths(), err, cache)
    # The compiled rules are long-lived: move them out of the cyclic GC's sight, or every
    # full collection during the scan walks them again (measured: ~2× slower scan).
    # Frozen before the workers fork, they also stay shared (no copy-on-write by the GC).
    gc.collect()
    gc.freeze()
    loaded = time.perf_counter()
    tally = Tally()
    rows: list[dict[str, Any]] = []
    jsonl = output_format is OutputFormat.JSONL
    sink: IO[str] = output.open("w", encoding="utf-8") if output else sys.stdout
    try:
        files = list(_walk(paths))
        processes = _worker_count(workers, len(files))
        if processes > 1:
            for result in _scan_forked(files, ruleset, processes, jsonl, err):
                tally.add(result.tally)
                for text in result.notes:
                    _note(err, tally, text)
                if jsonl:
                    sink.write(result.jsonl.decode())
                else:
                    rows.extend(result.rows)
        else:
            with _progress(err) as progress:
                task = progress.add_task("検知 / detect", total=len(files))
                for path in files:
                    for row in _scan_file(path, ruleset, tally, lambda t: _note(err, tally, t)):
                        if jsonl:
                            sink.write(orjson.dumps(row, default=str).decode() + "\n")
                        else:
                            rows.append(row)
                    progress.advance(task)
        if output_format is OutputFormat.TABLE:
            Console(file=sink, width=200 if output else None).print(_table(rows))
    finally:
        if output:
            sink.close()
        else:
            sink.flush()
    _summary(err, ruleset, tally, load_s=loaded - started, scan_s=time.perf_counter() - loaded)


def _worker_count(requested: int | None, files: int) -> int:
    """Processes to scan with: one per CPU unless told, never more than files."""
    if requested is None:
        requested = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    if files < 2 or requested < 2:
        return 1
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1  # the workers must inherit the loaded rules, not load them again
    if threading.active_count() > 1:
        return 1  # forking a process with other threads running may deadlock
    return min(requested, files)


_FORKED: tuple[RuleSet, bool] | None = None
"""(rules, JSONL?) for the forked workers, set in the parent just before it forks."""


def _scan_forked(
    files: list[Path], ruleset: RuleSet, processes: int, jsonl: bool, err: Console
) -> Iterator[FileResult]:
    """Each file scanned in a forked worker; results in file order as they complete."""
    global _FORKED
    _FORKED = (ruleset, jsonl)
    sys.stdout.flush()
    sys.stderr.flush()
    # Chunks of files: fewer round trips than one per file (thousands of small files),
    # and enough chunks per worker to even out the file sizes.
    chunk = max(1, min(64, len(files) // (processes * 8)))
    pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork"))
    try:
        # map() forks every worker before the pool's own thread and the progress bar's
        # start (forking with threads running may deadlock); a worker that dies raises
        # BrokenProcessPool here instead of hanging.
        results = pool.map(_scan_in_worker, files, chunksize=chunk)
        with _progress(err) as progress:
            task = progress.add_task(f"検知 / detect ({processes} workers)", total=len(files))
            for result in results:
                progress.advance(task)
                yield result
    finally:
        pool.shutdown(cancel_futures=True)
        _FORKED = None


def _scan_in_worker(path: Path) -> FileResult:
    assert _FORKED is not None, "only in a worker forked by _scan_forked"
    ruleset, jsonl = _FORKED
    tally = Tally()
    notes: list[str] = []
    rows = list(_scan_file(path, ruleset, tally, notes.append))
    if jsonl:
        lines = b"".join(orjson.dumps(row, default=str) + b"\n" for row in rows)
        return FileResult(tally=tally, notes=notes, jsonl=lines)
    return FileResult(tally=tally, notes=notes, rows=rows)


def _load_rules(paths: list[Path], err: Console, cache_dir: Path | None) -> RuleSet:
    with _progress(err) as progress:
        task = progress.add_task("ルール読込 / loading rules", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        return RuleSet.load(paths, progress=advance, cache_dir=cache_dir)


def _progress(err: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


def _walk(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
            )
        else:
            yield path


def _scan_file(
    path: Path, ruleset: RuleSet, tally: Tally, note: Callable[[str], None]
) -> Iterator[dict[str, Any]]:
    """The match rows of one file, in record order."""
    for rule, event in scan_file(path, ruleset, tally, note):
        yield _match_row(rule, event, path)


def scan_file(
    path: Path,
    ruleset: RuleSet,
    tally: Tally,
    note: Callable[[str], None],
    *,
    screen_text: bool = True,
) -> Iterator[tuple[CompiledRule, Matchable]]:
    """(rule, record) per match of one file, in record order (the hot path of ``detect``).

    A parser that reads records as text and screens them before decoding (EVTX:
    ``read_screened``, ``rendered_key``) lets the rules' literal prefilter run on the text
    first (:meth:`RuleSet.record_screen`): a record no rule can match is not decoded
    (about two in three of the corpus), so its fields are never built and a fault in
    them (a time that is not ISO 8601) is not counted as a parse error. The matches are
    the same as when every record is decoded (tested; ``screen_text=False`` decodes all).
    """
    try:
        parser: FileParser = parser_for_file(path)
    except (ParseError, OSError) as error:
        tally.skipped_files += 1
        note(f"スキップ / skipped: {error}")
        return
    tally.files += 1
    ctx = ParseContext(sensor=str(path))
    # Detection needs neither the content hash nor the raw text: use the parser's lighter
    # form when it has one (EVTX), with the same fields and the same parse errors.
    parse: Callable[[Any, ParseContext], Matchable] = getattr(
        parser, "parse_for_detection", parser.parse
    )
    read: Callable[..., Iterator[tuple[RawRecord, Screened | None]]] | None
    read = getattr(parser, "read_screened", None)
    key_of: Callable[[str], IndexKey | None] | None = getattr(parser, "rendered_key", None)
    screen = None
    ruled_out_before = 0
    records: Iterator[tuple[RawRecord, Screened | None]]
    if screen_text and read is not None and key_of is not None:
        screen = ruleset.record_screen(key_of)  # the thread's: its count goes on
        ruled_out_before = screen.ruled_out
        records = read(path, screen)
    else:
        records = ((record, None) for record in parser.read_file(path))
    matching_rules = ruleset.matching_rules
    fired = tally.fired
    count = 0
    try:
        for record, screened in records:
            count += 1
            try:
                event = parse(record.raw, ctx)
            except OtasukeError as error:
                tally.parse_errors += 1
                note(f"解析エラー / parse error {record.location}: {error}")
                continue
            matched = matching_rules(EventView(event.fields), screened)
            if matched:
                for rule in matched:
                    tally.matches += 1
                    fired[rule.info.id] += 1
                    yield rule, event
    finally:  # counted once per file (the loop runs for every record that passes)
        ruled_out = screen.ruled_out - ruled_out_before if screen is not None else 0
        tally.records += count + ruled_out
        tally.screened += ruled_out


def _note(err: Console, tally: Tally, text: str) -> None:
    tally.notes += 1
    if tally.notes <= _MAX_NOTES:
        err.print(text, markup=False, highlight=False)
    elif tally.notes == _MAX_NOTES + 1:
        err.print("… (further notes left out; see the summary)")


def _match_row(rule: CompiledRule, event: Matchable, path: Path) -> dict[str, Any]:
    info = rule.info
    return {
        "rule_id": info.id,
        "rule_title": info.title,
        "level": info.level,
        "rule_author": info.author,
        "rule_licence": info.licence,
        "rule_licence_url": info.licence_url,
        "rule_url": info.rule_url,
        "file": str(path),
        "record_id": event.record_id,
        "timestamp": event.observed_at.isoformat().replace("+00:00", "Z"),
        "computer": event.host,
        "event": dict(event.fields),
    }


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"Sigma 検知 / matches: {len(rows)}")
    for column in ("時刻 / time (UTC)", "端末 / computer", "level", "rule", "author", "record"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["timestamp"],
            row["computer"] or "-",
            row["level"],
            row["rule_title"],
            row["rule_author"],
            f"{Path(row['file']).name}#{row['record_id']}",
        )
    return table


def _summary(err: Console, ruleset: RuleSet, tally: Tally, *, load_s: float, scan_s: float) -> None:
    rate = tally.records / scan_s if scan_s > 0 else 0.0
    reasons = Counter(r.reason.split(":")[0] for r in ruleset.refused)
    err.print(
        f"ファイル / files: {tally.files} (スキップ / skipped {tally.skipped_files})  "
        f"レコード / records: {tally.records} (本文を解析せず除外 / ruled out unparsed: "
        f"{tally.screened})  解析エラー / parse errors: {tally.parse_errors}\n"
        f"検知 / matches: {tally.matches}  発火ルール / rules fired: {len(tally.fired)}  "
        f"{rate:,.0f} events/s ({scan_s:.2f} s; rules loaded in {load_s:.2f} s)\n"
        f"ルール / rules: {len(ruleset.rules)} loaded, {len(ruleset.refused)} refused",
        highlight=False,
    )
    for reason, count in reasons.most_common():
        err.print(f"  refused {count}: {reason}", markup=False, highlight=False)
