"""IOC 照合 (indicator of compromise lists): known malware servers in events.

Bundled: the maltrail malware lists (MIT) in ``data/maltrail/``; see its README.
Usage: ``IocSet.load(default_ioc_paths()).detections(event)``.
"""

from __future__ import annotations

from pathlib import Path

from otasuke.detect.ioc.formats import Indicator, IndicatorKind, IocSource
from otasuke.detect.ioc.iocset import IocSet

DATA = Path(__file__).resolve().parent / "data"


def default_ioc_paths() -> list[Path]:
    """The bundled lists: one folder, ``data/maltrail`` (maltrail commit 8adace15)."""
    return [DATA / "maltrail"]


__all__ = ["Indicator", "IndicatorKind", "IocSet", "IocSource", "default_ioc_paths"]
