"""SQLite 参照実装 (reference): what pySigma's SQLite backend finds, the way Zircolite runs it.

The most used Python Sigma tool (Zircolite) converts each rule to SQL with pySigma's
SQLite backend and runs every query over an in-memory table holding one row per event
and one ``TEXT COLLATE NOCASE`` column per field name. This module does the same, so the
benchmark (``bench/detect.py``) and the differential test can compare our engine with it:

* rules: the same files, the same sysmon + Windows log-source pipelines, converted by
  ``sigma.backends.sqlite`` (a development dependency, imported only here);
* events: the fields our EVTX parser gives (so only rule evaluation differs), one column
  per field, names compared case-insensitively by SQLite as by Sigma; a name with spaces
  also fills the column without them (Sigma's ``ThreatName``), as our event view does;
  booleans are stored as ``'true'``/``'false'`` (as Zircolite does), a list (the unnamed
  ``<Data>`` elements) as its elements joined by newlines (JSON text would double every
  backslash and make ``contains: '\\\\'`` match any Windows path);
* ``REGEXP`` is Python's ``re.search`` on the stored text; a column a rule names but no
  event has is added as NULLs when the query first fails on it.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
import yaml

from otasuke.detect.sigma.rules import NETWORK_CATEGORIES, rule_files, rule_info

TABLE = "logs"
_NO_COLUMN = re.compile(r"no such column: (.+)$")


@dataclass(frozen=True, slots=True)
class SqlRule:
    """One Sigma rule as the SQLite backend converts it."""

    rule_id: str
    path: str
    queries: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SqlRefusal:
    """A rule the backend does not convert, and its message."""

    path: str
    reason: str


def convert_rules(
    paths: Sequence[Path], progress: Callable[[int, int], None] | None = None
) -> tuple[list[SqlRule], list[SqlRefusal]]:
    """Every Windows rule under ``paths`` converted to SQLite queries (``SELECT rowid …``).

    Rules of other log sources (Linux, network, web…) are left out: the reference runs over
    Windows event logs, where our engine never evaluates them (SQL has no log source, so a
    ``not selection`` of a Zeek rule would match every Windows record there).
    """
    from sigma.backends.sqlite.sqlite import sqliteBackend
    from sigma.collection import SigmaCollection
    from sigma.exceptions import SigmaError
    from sigma.pipelines.sysmon.sysmon import sysmon_pipeline
    from sigma.pipelines.windows.windows import windows_logsource_pipeline
    from sigma.rule import SigmaRule

    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    converted: list[SqlRule] = []
    refused: list[SqlRefusal] = []
    files = rule_files(paths)
    backend: Any = sqliteBackend(sysmon_pipeline() + windows_logsource_pipeline())  # type: ignore[no-untyped-call]
    for done, path in enumerate(files, start=1):
        try:
            documents = [d for d in yaml.load_all(path.read_text("utf-8"), Loader=loader) if d]
            collection = SigmaCollection.from_dicts(documents, collect_errors=True)
        except (OSError, UnicodeDecodeError, yaml.YAMLError, SigmaError) as err:
            refused.append(SqlRefusal(str(path), f"{type(err).__name__}: {err}"))
            continue
        for rule in collection.rules:
            if not isinstance(rule, SigmaRule):
                refused.append(SqlRefusal(str(path), f"{type(rule).__name__} not converted"))
                continue
            if not _windows_logsource(rule):
                continue
            try:
                queries = backend.convert_rule(rule)
            except SigmaError as err:
                refused.append(SqlRefusal(str(path), f"{type(err).__name__}: {err}"))
                continue
            rows = tuple(_select_rowid(q) for q in queries if isinstance(q, str))
            if rows:
                converted.append(SqlRule(rule_info(rule, path).id, str(path), rows))
        if progress is not None:
            progress(done, len(files))
    return converted, refused


def _select_rowid(query: str) -> str:
    prefix = f"SELECT * FROM {TABLE} WHERE "
    if not query.startswith(prefix):
        raise ValueError(f"unexpected SQL shape: {query[:80]!r}")
    return f"SELECT rowid FROM {TABLE} WHERE " + query[len(prefix) :]


def sql_value(value: Any) -> Any:
    """A field value as a table cell: text, numbers, 'true'/'false', lists one item a line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else str(value)
    if value is None or isinstance(value, str | float):
        return value
    if isinstance(value, list | tuple):
        return "\n".join(str(sql_value(item)) for item in value if item is not None)
    return orjson.dumps(value, default=str).decode()


def event_row(fields: Mapping[str, Any]) -> dict[str, Any]:
    """One table row: lowercased column name → value (later names win, as in our view)."""
    row: dict[str, Any] = {}
    for key, value in fields.items():
        row[key.lower()] = sql_value(value)
    for key, value in fields.items():
        if " " in key:
            row.setdefault(key.lower().replace(" ", ""), sql_value(value))
    return row


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@lru_cache(maxsize=4096)
def _pattern(expression: str) -> re.Pattern[str]:
    return re.compile(expression)


def _regexp(expression: str, value: Any) -> bool:
    if value is None:
        return False
    try:
        return _pattern(expression).search(str(value)) is not None
    except re.error:
        return False


class EventTable:
    """An in-memory SQLite table of events: rowid ``n`` is the n-th row added (from 1)."""

    def __init__(self, rows: Iterable[Mapping[str, Any]]) -> None:
        materialised = list(rows)
        columns: list[str] = []
        seen: set[str] = set()
        for row in materialised:
            for name in row:
                if name not in seen:
                    seen.add(name)
                    columns.append(name)
        self.connection = sqlite3.connect(":memory:")
        self.connection.create_function("regexp", 2, _regexp, deterministic=True)
        self.columns = set(columns)
        definition = ", ".join(f"{_quote(c)} TEXT COLLATE NOCASE" for c in columns) or "x"
        self.connection.execute(f"CREATE TABLE {TABLE} ({definition})")
        position = {name: at for at, name in enumerate(columns)}
        width = len(columns)

        def values(row: Mapping[str, Any]) -> list[Any]:
            out: list[Any] = [None] * width
            for name, value in row.items():
                out[position[name]] = value
            return out

        placeholders = ", ".join("?" * width)
        names = ", ".join(_quote(c) for c in columns)
        self.connection.executemany(
            f"INSERT INTO {TABLE} ({names}) VALUES ({placeholders})",
            (values(row) for row in materialised),
        )
        self.size = len(materialised)

    def rowids(self, query: str) -> list[int]:
        """The rowids a backend query selects; unknown columns are added (all NULL)."""
        for _attempt in range(64):
            try:
                return [r[0] for r in self.connection.execute(query)]
            except sqlite3.OperationalError as err:
                missing = _NO_COLUMN.search(str(err))
                if missing is None:
                    raise
                name = missing.group(1).strip().strip("`\"'")
                self.connection.execute(
                    f"ALTER TABLE {TABLE} ADD COLUMN {_quote(name)} TEXT COLLATE NOCASE"
                )
                self.columns.add(name.lower())
        raise RuntimeError(f"too many missing columns in {query[:80]!r}")

    def matches(self, rules: Sequence[SqlRule]) -> set[tuple[str, int]]:
        """(rule id, row index from 0) for every row each rule's queries select."""
        found: set[tuple[str, int]] = set()
        for rule in rules:
            for query in rule.queries:
                found.update((rule.rule_id, rowid - 1) for rowid in self.rowids(query))
        return found

    def close(self) -> None:
        self.connection.close()


def _windows_logsource(rule: Any) -> bool:
    """A rule whose log source may concern Windows (see ``rules.applies_to_windows``)."""
    product = (rule.logsource.product or "").lower()
    if product:
        return product == "windows"
    return (rule.logsource.category or "").lower() not in NETWORK_CATEGORIES
