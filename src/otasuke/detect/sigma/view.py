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

from collections.abc import Mapping
from typing import Any

Text = str | list[str] | None


def sigma_name(key: str) -> str:
    """The lowercased name Sigma rules use for an event field (spaces dropped)."""
    return key.lower().replace(" ", "")


def text_of(value: Any) -> Text:
    """The string Sigma compares: ``true``/``false`` for booleans, digits for numbers."""
    if isinstance(value, str):
        return value
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


class EventView:
    """One event's fields keyed by lowercased name, as strings and lowercased strings."""

    __slots__ = ("_all_lower", "_all_original", "lower", "original")

    def __init__(self, fields: Mapping[str, Any]) -> None:
        original: dict[str, Text] = {}
        lower: dict[str, Text] = {}
        for key, value in fields.items():
            name = key.lower()
            text = text_of(value)
            if type(text) is str:
                folded: Text = text.lower()
            elif text is None:
                folded = None
            else:
                folded = [item.lower() for item in text]
            original[name] = text
            lower[name] = folded
            if " " in name:
                joined = name.replace(" ", "")
                if joined not in fields:
                    original.setdefault(joined, text)
                    lower.setdefault(joined, folded)
        self.original = original
        self.lower = lower
        self._all_lower: list[str] | None = None
        self._all_original: list[str] | None = None

    def all_values(self, *, cased: bool) -> list[str]:
        """Every value of every field (for keyword searches), flattened."""
        cache = self._all_original if cased else self._all_lower
        if cache is None:
            cache = []
            for value in (self.original if cased else self.lower).values():
                if type(value) is str:
                    cache.append(value)
                elif value is not None:
                    cache.extend(value)
            if cased:
                self._all_original = cache
            else:
                self._all_lower = cache
        return cache

    def key(self) -> tuple[str | None, str | None]:
        """(Channel, EventID), lowercased: the rule index key."""
        channel = self.lower.get("channel")
        event_id = self.lower.get("eventid")
        return (
            channel if type(channel) is str else None,
            event_id if type(event_id) is str else None,
        )
