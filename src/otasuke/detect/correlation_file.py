"""相関ルールの状態の保存 (correlation state across restarts, REQ-MON-24H).

Correlation windows live in the detector's memory (:mod:`.sigma.correlation_state`), so a
restart used to forget them and a brute-force attack spanning a restart was missed. The
simplest reliable design: each detecting process (the in-process worker of ``otasuke
serve``, each ``otasuke worker``) writes its windows as one JSON file under
``<data_dir>/correlation/``:

* at most every ``correlation_state_seconds`` (between batches, in the detecting thread,
  so never while the state changes) and on a clean shutdown;
* atomically: written to a temporary file, flushed to disk, then renamed over the old one,
  so a crash leaves the previous snapshot whole;
* read back at start (:meth:`CorrelationStateFile.claim`): windows of rules no longer
  loaded or changed, and sliding windows already past, are left out
  (:meth:`~.sigma.correlation_state.CorrelationEngine.restore`).

Which file: a process takes the first free *slot* ``<role>-<n>.json`` whose lock file it
can lock (``flock``, held until it exits). One worker always gets slot 0 back after a
restart; several workers on one machine each get their own slot, never writing the same
file. (Bus workers on PostgreSQL also share each customer's windows through the database,
:mod:`.correlation_shared`, which then decides over this file.) An unreadable snapshot is moved aside as ``*.bad`` and logged, never silently
dropped. The state is bounded (``max_groups`` windows), so is the file.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from otasuke.detect.sigma.correlation_state import CorrelationEngine

if TYPE_CHECKING:
    from otasuke.detect.engine import Detector
    from otasuke.settings import Settings

log = logging.getLogger(__name__)

MAX_SLOTS = 64
"""Detecting processes of one role on one machine, at most."""


class CorrelationStateFile:
    """One process's correlation snapshot file (its slot held locked)."""

    def __init__(self, path: Path, every_seconds: float, lock: IO[bytes] | None = None) -> None:
        self.path = path
        self.every_seconds = every_seconds
        self._lock = lock
        self._last = time.monotonic()
        self.saved = 0
        """Snapshots written."""

    @classmethod
    def claim(cls, directory: Path, role: str, every_seconds: float) -> CorrelationStateFile:
        """The first free slot ``<role>-<n>.json`` in ``directory`` (created if needed)."""
        directory.mkdir(parents=True, exist_ok=True)
        for n in range(MAX_SLOTS):
            lock = (directory / f"{role}-{n}.lock").open("ab")
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            return cls(directory / f"{role}-{n}.json", every_seconds, lock)
        raise RuntimeError(f"more than {MAX_SLOTS} {role} processes share {directory}")

    def load(self, engine: CorrelationEngine | None) -> int:
        """Restore the snapshot into ``engine``; the windows brought back (0: none)."""
        if engine is None or not self.path.exists():
            return 0
        try:
            data: Any = orjson.loads(self.path.read_bytes())
            restored = engine.restore(data)
        except (OSError, ValueError, KeyError, TypeError) as err:
            bad = self.path.with_suffix(".bad")
            os.replace(self.path, bad)
            log.warning("correlation snapshot %s unreadable (%s); moved to %s", self.path, err, bad)
            return 0
        log.info("correlation state: %d windows restored from %s", restored, self.path)
        return restored

    def maybe_save(self, engine: CorrelationEngine | None) -> bool:
        """Save if ``every_seconds`` have passed since the last save; True if saved."""
        if self.every_seconds <= 0 or time.monotonic() - self._last < self.every_seconds:
            return False
        self.save(engine)
        return True

    def save(self, engine: CorrelationEngine | None) -> None:
        """Write the snapshot now (atomically)."""
        self._last = time.monotonic()
        if engine is None:
            return
        body = orjson.dumps(engine.snapshot())
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, self.path)
        self.saved += 1

    def close(self) -> None:
        """Give the slot back (the process exiting does too)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def keep_state(detector: Detector, settings: Settings, role: str) -> CorrelationStateFile | None:
    """Claim this process's slot, restore its windows into ``detector`` and keep saving.

    None when ``correlation_state_seconds`` is 0, no rule is a correlation, or no slot
    could be claimed (logged as an error; detection goes on).
    """
    if settings.correlation_state_seconds <= 0 or detector.correlation is None:
        return None
    try:
        state = CorrelationStateFile.claim(
            settings.data_dir / "correlation", role, settings.correlation_state_seconds
        )
    except (OSError, RuntimeError) as err:  # detection goes on; the operator is told
        log.error("correlation state will not be kept across restarts: %s", err)
        return None
    state.load(detector.correlation)
    detector.state_file = state
    return state


def save_state(detector: Detector) -> None:
    """On a clean shutdown: write the windows one last time and give the slot back."""
    state = detector.state_file
    if state is None:
        return
    try:
        state.save(detector.correlation)
    except OSError as err:
        log.error("correlation state not saved to %s: %s", state.path, err)
    state.close()
