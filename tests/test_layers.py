"""The pure core (standard/, detect rule logic) does no I/O and imports nothing from web/ or db/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "otasuke"
PURE = [
    SRC / "standard",
    SRC / "detect" / "detection.py",
    SRC / "detect" / "tuning.py",
    SRC / "incidents" / "explain.py",
]
FORBIDDEN = ("otasuke.web", "otasuke.db", "sqlalchemy", "fastapi", "smtplib", "socket")


def modules(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        out.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p])
    return out


@pytest.mark.parametrize("path", modules(PURE), ids=lambda p: str(p.relative_to(SRC)))
def test_pure_core_imports(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            assert not name.startswith(FORBIDDEN), f"{path.name} imports {name}"
