"""検知エンジン: every detector over one event (Sigma, IOC lists, device alerts).

Loading the rules takes seconds, so one :class:`Detector` is built per process
and reused for every event.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from otasuke.detect.detection import Detection
from otasuke.detect.device import device_detections
from otasuke.detect.ioc import IocSet, default_ioc_paths
from otasuke.detect.sigma import RuleSet, default_rule_paths
from otasuke.ingest.event import Event, SourceFormat

SIGMA_FORMATS = frozenset({SourceFormat.EVTX})
"""Formats the Sigma rule set is evaluated on (network formats come with issue 4)."""


class Detector:
    """All detectors, loaded once."""

    def __init__(self, rules: RuleSet, iocs: IocSet) -> None:
        self.rules = rules
        self.iocs = iocs

    @classmethod
    def load(
        cls,
        rule_paths: Sequence[Path] = (),
        ioc_paths: Sequence[Path] = (),
        *,
        progress: Callable[[int, int], None] | None = None,
        cache_dir: Path | None = None,
    ) -> Detector:
        rules = RuleSet.load(
            list(rule_paths) or default_rule_paths(), progress=progress, cache_dir=cache_dir
        )
        iocs = IocSet.load(list(ioc_paths) or default_ioc_paths())
        return cls(rules, iocs)

    def detect(self, event: Event) -> list[Detection]:
        found: list[Detection] = []
        if event.source_format in SIGMA_FORMATS:
            found.extend(self.rules.detections(event))
        found.extend(device_detections(event))
        found.extend(self.iocs.detections(event))
        return found
