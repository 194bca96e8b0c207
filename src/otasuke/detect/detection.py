"""検知結果 (detection): what any detector says about one event.

Sigma rules, IOC lists and the alerts a UTM or IDS already raised all produce
:class:`Detection`; the incidents room turns them into alerts and incidents.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

SIGMA_LEVELS = ("informational", "low", "medium", "high", "critical")


class DetectionSource(StrEnum):
    SIGMA = "sigma"
    IOC = "ioc"
    SURICATA = "suricata"
    FORTIGATE = "fortigate"
    DEVICE = "device"
    """An alert another security device raised (PAN-OS, Cisco ASA, SonicWall, Sophos, CEF)."""
    HEALTH = "health"
    """Otasuke's own checks: a sensor fell silent (REQ-MON-24H)."""


@dataclass(frozen=True, slots=True)
class Detection:
    """One detector's finding on one event."""

    source: DetectionSource
    rule_id: str
    """Sigma rule id, IDS signature id, IOC list name …"""
    title: str
    level: str
    """One of SIGMA_LEVELS."""
    blocked: bool = False
    """The customer's device already blocked it (防御済み: handled by the defence)."""
    author: str | None = None
    """Rule author; DRL 1.1 requires it on every alert from a Sigma rule."""
    licence: str | None = None
    licence_url: str | None = None
    rule_url: str | None = None
    description: str = ""
    references: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    matched: Mapping[str, Any] = field(default_factory=dict)
    """The event's fields that the detector looked at and found."""

    def __post_init__(self) -> None:
        if self.level not in SIGMA_LEVELS:
            raise ValueError(f"level must be one of {SIGMA_LEVELS}, not {self.level!r}")
