"""相関状態の共有 (correlation windows shared by the bus workers, REQ-MON-EP).

Each detecting process keeps its correlation windows in memory
(:mod:`.sigma.correlation_state`). The ``otasuke worker`` processes share one JetStream
consumer, so one customer's events are spread over them: a brute force of five failed
logons, three seen by one worker and two by another, raised nothing. With PostgreSQL the
windows are therefore also kept per customer in the table ``correlation_states``, and a
worker uses them within the transaction of each bus message:

1. Before it feeds the first event of customer C to its correlations (only events that
   matched a rule some correlation watches), it takes C's transaction-scoped advisory lock
   — the lock incident grouping takes for C anyway — reads C's row and, unless the row's
   version is the one this worker wrote or read last, replaces its own windows of C with
   the row's.
2. After the message's events are detected, C's windows are written back, version + 1,
   in the same transaction: they commit or roll back with the events and alerts.
3. After the commit the worker remembers the version; after a rollback it forgets it, so
   the next message reads the row again (its own windows had moved on with the events the
   rollback undid, which are delivered again).

The lock serialises the workers only while they feed the same customer's correlated
events; other customers, and events no correlation watches, go on in parallel. Limits:
windows decided when they close (``lt``, ``lte``, ``eq``, ``neq``) are closed by the clock
of whichever worker sees time pass first, so such a window can be raised by two workers
(incident grouping then folds the second alert into the first incident).
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from sqlalchemy.orm import Session

from otasuke.db.models import CorrelationState, now_utc
from otasuke.detect.sigma.correlation_state import SNAPSHOT_FORMAT, CorrelationEngine

Lock = Callable[[Session, int], None]
"""Takes one customer's transaction-scoped lock (PostgreSQL ``pg_advisory_xact_lock``)."""


class SharedCorrelation:
    """One worker's side of the shared windows: the versions it holds, per customer."""

    def __init__(self, engine: CorrelationEngine, lock: Lock) -> None:
        self.engine = engine
        self.lock = lock
        self.versions: dict[int, int] = {}
        """Customer → version of its row that this worker's windows are at."""
        self.loaded = 0
        """Customers' windows taken from the database (another worker had moved them)."""
        self.written = 0
        """Customers' windows written back."""

    def begin(self, s: Session) -> SharedTransaction:
        """The shared windows within one bus message's transaction."""
        return SharedTransaction(self, s)


class SharedTransaction:
    """Customers entered in one transaction; their windows are written back at its end."""

    def __init__(self, shared: SharedCorrelation, s: Session) -> None:
        self.shared = shared
        self.s = s
        self.entered: dict[int, int] = {}
        """Customer → version read in this transaction (0: no row yet)."""

    def enter(self, customer: str | int | None) -> None:
        """Called before one of ``customer``'s events is fed to the correlations."""
        if customer is None:
            return
        customer_id = int(customer)
        if customer_id in self.entered:
            return
        shared = self.shared
        shared.lock(self.s, customer_id)
        row = self.s.get(CorrelationState, customer_id, populate_existing=True)
        version = row.version if row is not None else 0
        if shared.versions.get(customer_id) != version:
            empty = {"format": SNAPSHOT_FORMAT, "groups": []}
            shared.engine.replace_customer(
                customer_id, orjson.loads(row.state) if row is not None else empty
            )
            shared.loaded += row is not None
        self.entered[customer_id] = version

    def write(self) -> None:
        """Write back the windows of every customer entered (before the commit)."""
        for customer_id, version in self.entered.items():
            state = orjson.dumps(self.shared.engine.snapshot(customer_id)).decode()
            row = self.s.get(CorrelationState, customer_id)
            if row is None:
                self.s.add(
                    CorrelationState(customer_id=customer_id, version=version + 1, state=state)
                )
            else:
                row.version = version + 1
                row.state = state
                row.updated_at = now_utc()
            self.shared.written += 1
        self.s.flush()

    def finish(self, committed: bool) -> None:
        """After the transaction: remember the versions written, or forget the customers."""
        versions = self.shared.versions
        for customer_id, version in self.entered.items():
            if committed:
                versions[customer_id] = version + 1
            else:
                versions.pop(customer_id, None)
