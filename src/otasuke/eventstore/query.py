"""The search language of ``otasuke search`` (検索式): a few terms, compiled to bound SQL.

The user's text never becomes SQL: it is split into terms, every value is passed
to DuckDB as a bound parameter, and a field name must match :data:`FIELD_NAME`.

=========================  ===================================================
term                       matches events where
=========================  ===================================================
``mimikatz``               the raw record or the fields contain the word
                           (case-insensitive)
``"failed password"``      the same for a phrase
``host=PC-01``             a column equals the value (see :data:`COLUMNS`)
``EventID=4625``           a normalised field equals it (any other name)
``srcip!=10.0.0.1``        the value differs, or the field is missing
``user~admin``             the value contains the text (case-insensitive)
``observed_at>=2026-11-24T09:00``  times and numbers compare in order
                           (a time without an offset is Japan time)
``a b``, ``a AND b``       both
``a OR b``                 either (AND binds tighter); ``( … )`` groups
``NOT a``, ``-a``          not
=========================  ===================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from otasuke.eventstore.layout import EventStoreError
from otasuke.i18n import _

JST = ZoneInfo("Asia/Tokyo")
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.@-]{0,127}")
COMPARISON = re.compile(rf"({FIELD_NAME.pattern})(!=|>=|<=|=|~|>|<)")
TEXT_COLUMNS = ("event_uid", "host", "source_format", "raw")
INT_COLUMNS = ("sensor_id", "record_id", "id")
TIME_COLUMNS = ("observed_at", "received_at")
COLUMNS = TEXT_COLUMNS + INT_COLUMNS + TIME_COLUMNS
MAX_TERMS = 64


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    """``(``, ``)``, ``word``, ``phrase`` or ``cmp``."""
    text: str
    field: str = ""
    op: str = ""


@dataclass(frozen=True, slots=True)
class Compiled:
    """A WHERE clause with ``?`` placeholders and its parameters, in order."""

    sql: str
    params: tuple[Any, ...]


def _quoted(text: str, start: int) -> tuple[str, int]:
    """The string starting at the quote ``text[start]``; return it and the index after it."""
    out = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if ch == '"':
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise EventStoreError(
        _('a quote (") is not closed'), field="query", hint=_('write "…" around a phrase')
    )


def _bare(text: str, start: int) -> tuple[str, int]:
    i = start
    while i < len(text) and not text[i].isspace() and text[i] not in "()":
        i += 1
    return text[start:i], i


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "()":
            tokens.append(Token(ch, ch))
            i += 1
        elif ch == '"':
            value, i = _quoted(text, i)
            tokens.append(Token("phrase", value))
        elif m := COMPARISON.match(text, i):
            i = m.end()
            if i < len(text) and text[i] == '"':
                value, i = _quoted(text, i)
            else:
                value, i = _bare(text, i)
            tokens.append(Token("cmp", value, field=m.group(1), op=m.group(2)))
        else:
            value, i = _bare(text, i)
            tokens.append(Token("word", value))
    if len(tokens) > MAX_TERMS:
        raise EventStoreError(_("a query has at most {n} terms").format(n=MAX_TERMS), field="query")
    return tokens


def parse_time(value: str) -> datetime:
    """ISO 8601 date or time; without an offset it is Japan time (JST)."""
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise EventStoreError(
            _("{value} is not a date or time").format(value=repr(value)),
            field="query",
            hint="2026-11-24T09:00",
        ) from None
    return t if t.tzinfo is not None else t.replace(tzinfo=JST)


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.i = 0
        self.params: list[Any] = []

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def keyword(self, word: str) -> bool:
        t = self.peek()
        if t is not None and t.kind == "word" and t.text == word:
            self.i += 1
            return True
        return False

    def parse(self) -> str:
        sql = self.or_expr()
        if self.peek() is not None:
            raise EventStoreError(_("a ')' has no '('"), field="query")
        return sql

    def or_expr(self) -> str:
        parts = [self.and_expr()]
        while self.keyword("OR"):
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"

    def and_expr(self) -> str:
        parts = [self.unary()]
        while (t := self.peek()) is not None and t.kind != ")" and t.text != "OR":
            self.keyword("AND")
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    def unary(self) -> str:
        t = self.peek()
        if t is None:
            raise EventStoreError(_("the query ends too early"), field="query")
        if self.keyword("NOT"):
            return f"(NOT {self.unary()})"
        self.i += 1
        if t.kind == "(":
            inner = self.or_expr()
            if (close := self.peek()) is None or close.kind != ")":
                raise EventStoreError(_("a '(' is not closed"), field="query")
            self.i += 1
            return inner
        if t.kind == ")":
            raise EventStoreError(_("a ')' has no '('"), field="query")
        if t.kind == "cmp":
            return self.comparison(t)
        if t.kind == "word" and len(t.text) > 1 and t.text[0] == "-" and t.text[1] != "-":
            return f"(NOT {self.free_text(t.text[1:])})"
        return self.free_text(t.text)

    def free_text(self, text: str) -> str:
        needle = text.lower()
        self.params += [needle, needle]
        return "(contains(lower(raw), ?) OR contains(lower(fields), ?))"

    def comparison(self, t: Token) -> str:
        if t.op == "~":
            column = t.field if t.field in COLUMNS else self.json_value(t.field)
            self.params.append(t.text.lower())
            return f"contains(lower(CAST({column} AS VARCHAR)), ?)"
        column, value = self.operand(t.field, t.op, t.text)
        self.params.append(value)
        if t.op == "!=":
            return f"({column} IS DISTINCT FROM ?)"
        return f"({column} {t.op} ?)"

    def json_value(self, name: str) -> str:
        """A normalised field: a flat key with dots ("alert.signature") or a nested path."""
        self.params += [f'$."{name}"', f"$.{name}"]
        return "coalesce(json_extract_string(fields, ?), json_extract_string(fields, ?))"

    def operand(self, name: str, op: str, text: str) -> tuple[str, Any]:
        """SQL for the field ``name`` and the value to compare it with."""
        if name in TIME_COLUMNS:
            return name, parse_time(text)
        if name in INT_COLUMNS:
            try:
                return name, int(text)
            except ValueError:
                raise EventStoreError(
                    _("{name} is a number, not {value}").format(name=name, value=repr(text)),
                    field="query",
                    hint=f"{name}=12",
                ) from None
        if name in TEXT_COLUMNS:
            return name, text
        value = self.json_value(name)
        if op in ("<", "<=", ">", ">="):
            try:
                return f"TRY_CAST({value} AS DOUBLE)", float(text)
            except ValueError:
                return value, text
        return value, text


def compile_query(text: str) -> Compiled:
    """``text`` as a WHERE clause over the event columns; an empty query matches everything."""
    tokens = tokenize(text)
    if not tokens:
        return Compiled("TRUE", ())
    parser = _Parser(tokens)
    sql = parser.parse()
    return Compiled(sql, tuple(parser.params))
