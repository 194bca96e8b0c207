"""ルール補正 (rule repair): slips other engines accept, and errors that are only metadata.

Hayabusa and older SigmaHQ rules sometimes omit the condition or put a number under a
string modifier; pySigma refuses both. :func:`repair` fixes them in place and says what
it fixed (``rules check`` lists it as a note). :func:`is_metadata_error` tells an error in
a rule's description (tags, dates, references…) from one in its detection.
"""

from __future__ import annotations

from typing import Any

from sigma import exceptions as sigma_errors

_STRING_MODIFIERS = frozenset({"contains", "startswith", "endswith", "windash"})
METADATA_ERRORS: tuple[type[Exception], ...] = tuple(
    getattr(sigma_errors, name)
    for name in (
        "SigmaAuthorError",
        "SigmaDateError",
        "SigmaDescriptionError",
        "SigmaFalsePositivesError",
        "SigmaFieldsError",
        "SigmaIdentifierError",
        "SigmaLevelError",
        "SigmaLicenseError",
        "SigmaModifiedError",
        "SigmaNameError",
        "SigmaReferencesError",
        "SigmaRelatedError",
        "SigmaScopeError",
        "SigmaStatusError",
        "SigmaTagError",
        "SigmaTaxonomyError",
        "SigmaTitleError",
    )
)
"""pySigma errors about a rule's description, not its detection: noted, the rule loads."""


def is_metadata_error(error: Exception) -> bool:
    """An error in a rule's metadata (tags, references, id, dates…), not its detection."""
    if isinstance(error, METADATA_ERRORS):
        return True
    return isinstance(error, sigma_errors.SigmaValueError) and str(error).startswith("Sigma tag ")


def repair(document: dict[str, Any]) -> list[str]:
    """Fix, in place, two slips other engines (Hayabusa) accept; say what was fixed.

    * no ``condition`` and exactly one search: that search is the condition;
    * a number under ``contains``/``startswith``/``endswith``: compared as its text, as
      Sigma compares every value.
    """
    detection = document.get("detection")
    if not isinstance(detection, dict):
        return []
    notes: list[str] = []
    searches = [k for k in detection if k != "condition" and k != "timeframe"]
    if "condition" not in detection and len(searches) == 1:
        detection["condition"] = searches[0]
        notes.append(f"no condition: its only search {searches[0]!r} is used")
    for search in detection.values():
        for item in search if isinstance(search, list) else [search]:
            if isinstance(item, dict):
                notes.extend(_numbers_as_text(item))
    return notes


def _numbers_as_text(search: dict[Any, Any]) -> list[str]:
    notes = []
    for key, value in search.items():
        modifiers = set(str(key).split("|")[1:])
        if not modifiers & _STRING_MODIFIERS:
            continue
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            fixed = [
                str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                for v in values
            ]
            search[key] = fixed if isinstance(value, list) else fixed[0]
            notes.append(f"number under {key!r} compared as text")
    return notes


def one_line(err: object) -> str:
    """An error message on one line (pySigma's span several)."""
    return " ".join(str(err).split())
