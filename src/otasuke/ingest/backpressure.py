"""Admission control (過負荷保護) for the HTTP ingest: refuse a batch rather than drown.

The contract: a refused batch (HTTP 429 with ``Retry-After``) is **not stored at
all** — not one line of it; the sender keeps it and sends it again later. Every
refused event is counted (``otasuke_events_shed_total{transport="http"}``), so
shedding is never silent.

Three limits:

* ``ingest_max_pending`` (default :data:`DEFAULT_MAX_PENDING`): events accepted
  but not yet through detection — still in the spool, or stored with
  ``processed = false``. A batch is refused when the backlog is above the limit
  or the batch would take it above;
* ``ingest_max_inflight`` (default :data:`DEFAULT_MAX_INFLIGHT`): ingest requests
  being spooled at once;
* ``ingest_max_spool_bytes``: spool bytes not yet drained into the database (or
  published to the bus). This one protects the disk when the consumer is down or
  slow; its ``Retry-After`` is the upper bound, since the consumer's catching up
  is not observed in bytes.

:func:`decide` is the decision as pure code; :class:`Admission` keeps the cheap
cached reading of the backlog (one ``COUNT`` at most every ``refresh_seconds``,
plus what this process has admitted since) and the observed processing rate that
``Retry-After`` is computed from.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_MAX_PENDING = 200_000
DEFAULT_MAX_INFLIGHT = 32
RETRY_MIN_SECONDS = 1
RETRY_MAX_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Decision:
    """Admit, or refuse with a reason, a ``Retry-After`` and what to tell the sender."""

    admitted: bool
    reason: str = ""
    retry_after: int = 0
    status: int = 202
    hint: str = ""


ADMIT = Decision(admitted=True)


def retry_after_seconds(excess: int, rate: float) -> int:
    """Seconds until ``excess`` events are processed at ``rate`` per second, bounded 1–60.

    An unknown or zero rate (nothing seen processed yet) gives the upper bound.
    """
    if excess <= 0:
        return RETRY_MIN_SECONDS
    if rate <= 0:
        return RETRY_MAX_SECONDS
    return max(RETRY_MIN_SECONDS, min(RETRY_MAX_SECONDS, math.ceil(excess / rate)))


def decide(
    *,
    pending: int,
    incoming: int,
    max_pending: int,
    inflight: int,
    max_inflight: int,
    rate: float,
    spool_bytes: int = 0,
    max_spool_bytes: int | None = None,
) -> Decision:
    """The admission decision for a batch of ``incoming`` events (pure: no I/O, no clock).

    ``pending`` is the backlog estimate, ``inflight`` the requests being stored now
    (this one not included), ``rate`` the observed processing rate (events/s),
    ``spool_bytes`` the spool's undrained bytes (``max_spool_bytes`` None: no limit).
    """
    if incoming > max_pending:
        return Decision(
            admitted=False,
            reason=f"batch of {incoming} events is larger than the backlog limit {max_pending}",
            status=413,
            hint=f"split the batch: send at most {max_pending} events per request",
        )
    if inflight >= max_inflight:
        return Decision(
            admitted=False,
            reason=f"too many ingest requests at once (limit {max_inflight})",
            retry_after=RETRY_MIN_SECONDS,
            status=429,
            hint="keep this batch and send it again after Retry-After seconds; "
            "use fewer concurrent connections",
        )
    if max_spool_bytes is not None and spool_bytes > max_spool_bytes:
        return Decision(
            admitted=False,
            reason=f"spool backlog is {spool_bytes} bytes not yet drained "
            f"(limit {max_spool_bytes})",
            retry_after=RETRY_MAX_SECONDS,
            status=429,
            hint="keep this batch and send it again after Retry-After seconds; "
            "nothing of it was stored",
        )
    if pending + incoming > max_pending:
        return Decision(
            admitted=False,
            reason=f"detection backlog is {pending} events (limit {max_pending})",
            retry_after=retry_after_seconds(pending + incoming - max_pending, rate),
            status=429,
            hint="keep this batch and send it again after Retry-After seconds; "
            "nothing of it was stored",
        )
    return ADMIT


class Admission:
    """The backlog estimate, the in-flight count and the processing rate of one app.

    Estimate = last reading of pending events (``COUNT`` in the database plus records
    waiting in the spool) + events spooled by this process since that reading started
    + events of batches admitted and still being spooled.
    Conservative: a batch committed while the count runs may be counted twice
    until the next reading. Thread-safe.
    """

    def __init__(
        self,
        read_pending: Callable[[], int],
        *,
        read_spool_bytes: Callable[[], int] | None = None,
        refresh_seconds: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read_pending
        self._read_spool = read_spool_bytes
        self.spool_bytes = 0
        """Undrained spool bytes at the last reading (plus what was spooled since)."""
        self._refresh = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._reading = threading.Lock()
        self.pending_read = 0
        self.read_at: float | None = None
        self.committed_since = 0
        self.reserved = 0
        self.inflight = 0
        self.rate = 0.0
        """Observed processing rate, events/s (an exponentially weighted mean)."""

    def stale(self) -> bool:
        return self.read_at is None or self._clock() - self.read_at >= self._refresh

    def refresh(self) -> None:
        """Count the pending events again (blocking; one reader at a time, others skip)."""
        if not self._reading.acquire(blocking=False):
            return
        try:
            with self._lock:
                committed_before = self.committed_since
            started = self._clock()
            pending = int(self._read())
            spool_bytes = int(self._read_spool()) if self._read_spool is not None else 0
            with self._lock:
                self.spool_bytes = spool_bytes
                if self.read_at is not None and started > self.read_at:
                    processed = self.pending_read + committed_before - pending
                    observed = max(processed, 0) / (started - self.read_at)
                    self.rate = observed if self.rate == 0 else 0.5 * self.rate + 0.5 * observed
                self.pending_read = pending
                self.read_at = started
                self.committed_since -= committed_before
        finally:
            self._reading.release()

    def estimate(self) -> int:
        with self._lock:
            return self.pending_read + self.committed_since + self.reserved

    def try_admit(
        self,
        incoming: int,
        *,
        max_pending: int,
        max_inflight: int,
        max_spool_bytes: int | None = None,
    ) -> Decision:
        """Decide for a batch; when admitted, it is reserved and in flight until :meth:`done`."""
        with self._lock:
            decision = decide(
                pending=self.pending_read + self.committed_since + self.reserved,
                incoming=incoming,
                max_pending=max_pending,
                inflight=self.inflight,
                max_inflight=max_inflight,
                rate=self.rate,
                spool_bytes=self.spool_bytes,
                max_spool_bytes=max_spool_bytes,
            )
            if decision.admitted:
                self.inflight += 1
                self.reserved += incoming
            return decision

    def done(self, reserved: int, accepted: int, spooled_bytes: int = 0) -> None:
        """An admitted batch is finished: ``accepted`` of its events are in the spool (or the
        database), taking ``spooled_bytes`` of spool."""
        with self._lock:
            self.inflight -= 1
            self.reserved -= reserved
            self.committed_since += accepted
            self.spool_bytes += spooled_bytes
