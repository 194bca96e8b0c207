"""照合用ビュー (match view): an event's fields as Sigma compares them.

Sigma field names match case-insensitively and values compare as strings, so each event
is turned once into two dicts keyed by the lowercased field name: the string form of each
value (``original``) and its lowercased form (``lower``). Lists stay lists of strings.
When two field names differ only in case, the later one wins (EVTX: ``EventData``'s
``ProcessId`` over ``System``'s ``ProcessID``, which is what Sigma rules mean). A name
with spaces (Windows Defender's ``Threat Name``) is also reachable without them
(Sigma's ``ThreatName``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Text = str | list[str] | None


def sigma_name(key: str) -> str:
    """The lowercased name Sigma rules use for an event field (spaces dropped)."""
    return key.lower().replace(" ", "")


def _bool_text(value: bool) -> str:
    return "true" if value else "false"


_SCALAR_TEXT: dict[type, Callable[[Any], str]] = {
    str: str,
    int: str,
    float: str,
    bool: _bool_text,
}
"""The conversion of the usual scalar types, looked up by exact type (hot path)."""


def text_of(value: Any) -> Text:
    """The string Sigma compares: ``true``/``false`` for booleans, digits for numbers."""
    convert = _SCALAR_TEXT.get(type(value))
    if convert is not None:
        return convert(value)
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return [t for t in (_scalar_text(item) for item in value) if t is not None]
    return str(value)


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_view_original: Callable[..., tuple[dict[str, Text], bool] | None] | None
_compiled_lowered: Callable[[dict[str, Text]], dict[str, Text]] | None
try:  # built by `make install` (Cython); the Python below does the same without it
    from otasuke._speedups import Lowered as _compiled_lowered
    from otasuke._speedups import view_original as _view_original
except ImportError:  # pragma: no cover - depends on the build
    _view_original = _compiled_lowered = None

_NAMES: dict[str, str] = {}
"""Field name → lowercased name, for every name seen without a space (EVTX has a few
hundred); no more than :data:`_MAX_NAMES` are kept, so odd JSON cannot grow it forever."""
_MAX_NAMES = 100_000
_STR = frozenset({str})


class Lowered(dict[str, Text]):
    """An event's values lowercased, each made when a rule first looks at that field.

    Most of an event's ~26 fields are never looked at by a rule (the prefilter has
    already searched the whole event), so lowercasing them all up front was wasted work.
    Read it with ``lowered[name]``: a missing field is ``None``. ``get`` answers the same.
    """

    __slots__ = ("_original",)

    def __init__(self, original: dict[str, Text]) -> None:
        super().__init__()
        self._original = original

    def __missing__(self, name: str) -> Text:
        value = self._original.get(name)
        folded: Text
        if type(value) is str:
            folded = value.lower()
        elif value is None:
            folded = None
        else:
            folded = [item.lower() for item in value]
        self[name] = folded
        return folded

    def get(self, name: str, default: Any = None) -> Any:
        value = self[name]
        return default if value is None else value


class EventView:
    """One event's fields keyed by lowercased name, as strings and lowercased strings."""

    __slots__ = ("_all_lower", "_all_original", "_scalar", "_search_text", "lower", "original")

    def __init__(self, fields: Mapping[str, Any]) -> None:
        if _view_original is not None and type(fields) is dict:
            made = _view_original(fields, _NAMES, text_of)  # compiled: the same, faster
            if made is not None:
                self._set(*made)
                return
        try:  # the usual case: every field name seen before (one dict built in C)
            original: dict[str, Any] = {_NAMES[key]: value for key, value in fields.items()}
        except KeyError:
            self._init_learning(fields)
            return
        scalar = True  # every value a string: the dict's values are the value list
        if not _STR.issuperset(map(type, original.values())):
            for name, value in original.items():  # values replaced in place, keys unchanged
                kind = type(value)
                if kind is str:
                    continue
                if kind is int:
                    original[name] = str(value)
                else:
                    text = text_of(value)
                    if type(text) is not str:
                        scalar = False
                    original[name] = text
        self._set(original, scalar)

    def _set(self, original: dict[str, Text], scalar: bool) -> None:
        self.original: dict[str, Text] = original
        self.lower: dict[str, Text] = (_compiled_lowered or Lowered)(original)
        """The lowercased values (:class:`Lowered`, or its compiled twin)."""
        self._scalar = scalar
        """Every value a string: the values are the list :meth:`all_values` gives."""
        self._all_lower: list[str] | None = None
        self._all_original: list[str] | None = None
        self._search_text: str | None = None

    def _init_learning(self, fields: Mapping[str, Any]) -> None:
        """The general path; it also remembers the lowercased names for the fast one."""
        original: dict[str, Text] = {}
        scalar = True
        learn = len(_NAMES) < _MAX_NAMES
        for key, value in fields.items():
            name = key.lower()
            if learn and " " not in name:  # names with spaces always take this path
                _NAMES[key] = name
            kind = type(value)
            if kind is str:
                original[name] = value
            elif kind is int:
                original[name] = str(value)
            else:
                text = text_of(value)
                if type(text) is not str:
                    scalar = False
                original[name] = text
            if " " in name:
                joined = name.replace(" ", "")
                if joined not in fields:
                    original.setdefault(joined, original[name])
        self._set(original, scalar)

    def all_values(self, *, cased: bool) -> list[str]:
        """Every value of every field (for keyword searches), flattened."""
        cache = self._all_original if cased else self._all_lower
        if cache is None:
            if not cased:
                cache = [value.lower() for value in self.all_values(cased=True)]
                self._all_lower = cache
                return cache
            values = self.original.values()
            if self._scalar:
                cache = list(values)  # type: ignore[arg-type]  # all str when scalar
            else:
                cache = []
                for value in values:
                    if type(value) is str:
                        cache.append(value)
                    elif value is not None:
                        cache.extend(value)
            self._all_original = cache
        return cache

    def search_text(self) -> str:
        """Every lowercased value joined by ``"\\0"``: what the literal prefilter searches."""
        text = self._search_text
        if text is None:
            # One lowercasing of the joined text equals the joined lowercased values:
            # str.lower maps characters alone except final sigma, which looks only at
            # cased neighbours, and "\0" is not one.
            if self._scalar:
                values: Any = self.original.values()  # all str when scalar
                text = "\0".join(values).lower()
            else:
                text = "\0".join(self.all_values(cased=True)).lower()
            self._search_text = text
        return text

    def key(self) -> tuple[str | None, str | None]:
        """(Channel, EventID), lowercased: the rule index key."""
        lower = self.lower
        channel = lower["channel"]
        event_id = lower["eventid"]
        return (
            channel if type(channel) is str else None,
            event_id if type(event_id) is str else None,
        )
