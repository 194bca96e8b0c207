"""One error base for everything Otasuke raises on purpose (STYLE §2).

Whoever reads an error should be able to fix the input: each error names the
field, where the input came from, and what to do (REQ-ONBOARD-PAINS).
"""

from __future__ import annotations


class OtasukeError(ValueError):
    """Base of every error Otasuke raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        source: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.source = source
        self.hint = hint

    def __str__(self) -> str:
        parts = []
        if self.source:
            parts.append(f"{self.source}: ")
        if self.field:
            parts.append(f"{self.field}: ")
        parts.append(self.message)
        if self.hint:
            parts.append(f" ({self.hint})")
        return "".join(parts)

    def to_dict(self) -> dict[str, str | None]:
        return {
            "error": self.message,
            "field": self.field,
            "source": self.source,
            "hint": self.hint,
        }


class ParseError(OtasukeError):
    """A record could not be parsed; it goes to quarantine with this reason."""


class RuleError(OtasukeError):
    """A detection rule could not be loaded or compiled."""


class ContractError(OtasukeError):
    """A contract breaks a rule of the standard (REQ-PRICE, REQ-PACKAGE, REQ-TYPE2)."""

    def __init__(
        self, message: str, *, rule: str, field: str | None = None, hint: str | None = None
    ):
        super().__init__(message, field=field, hint=hint)
        self.rule = rule


class NotFound(OtasukeError):
    """Absent or not visible to the caller: the same answer for both (REQ-TEAM)."""


class Forbidden(OtasukeError):
    """Visible, but the caller's role may not do this."""


class ConfigError(OtasukeError):
    """A setting is missing or wrong."""
