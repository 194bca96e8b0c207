"""Shared fixtures: the corpus, real services (fail in CI, skip elsewhere)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("OTASUKE_CORPUS", ROOT.parent / "shared" / "corpus"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(reason: str) -> None:
    """A missing prerequisite fails in CI and skips elsewhere, saying how to get it."""
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def corpus() -> Path:
    """../shared/corpus; tests that read it fail in CI and skip elsewhere when absent."""
    if not CORPUS.is_dir():
        need(f"corpus not found at {CORPUS}: set OTASUKE_CORPUS or check out shared/ beside main/")
    return CORPUS
