"""顧客別フィルタ (customer filters) from the database, applied by the detector.

Analysts paste a Sigma filter for one customer in the console (table ``customer_filters``,
:class:`otasuke.db.models.CustomerFilter`). :func:`refresh_customer_filters` is called by
:meth:`otasuke.detect.engine.Detector.refresh_tunings` before every batch: one cheap query
(row count, highest id and newest creation time: rows are only added and removed) says whether anything changed;
if so every customer's filters are compiled again and handed to
:meth:`~otasuke.detect.engine.Detector.set_customer_filters`, so they narrow that
customer's rules only. A row that no longer compiles (e.g. after a pySigma upgrade) is
logged and left out; the customer's other filters still apply.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from otasuke.db.models import CustomerFilter
from otasuke.detect.sigma.filters import FilterProblem, filter_from_text
from otasuke.detect.sigma.rules import RuleTree

if TYPE_CHECKING:
    from otasuke.detect.engine import Detector

log = logging.getLogger(__name__)

_seen: WeakKeyDictionary[Detector, tuple[tuple[object, ...], frozenset[int]]] = WeakKeyDictionary()
"""Per detector: the table version last applied and the customers that had filters."""


def refresh_customer_filters(detector: Detector, s: Session) -> bool:
    """Apply the database's customer filters to ``detector`` if they changed; True if so."""
    version = tuple(
        s.execute(
            select(
                func.count(CustomerFilter.id),
                func.max(CustomerFilter.id),
                func.max(CustomerFilter.created_at),
            )
        ).one()
    )
    previous = _seen.get(detector)
    if previous is not None and previous[0] == version:
        return False
    if previous is None and version[0] == 0:
        _seen[detector] = (version, frozenset())
        return False
    trees: dict[int, list[RuleTree]] = defaultdict(list)
    for row in s.scalars(select(CustomerFilter).order_by(CustomerFilter.id)):
        try:
            trees[row.customer_id].append(filter_from_text(row.document, f"filter {row.id}"))
        except FilterProblem as err:
            log.warning(
                "customer filter %s (customer %s) not applied: %s", row.id, row.customer_id, err
            )
    before = previous[1] if previous is not None else frozenset()
    for customer_id in before - trees.keys():
        detector.set_customer_filters(customer_id, [])
    for customer_id, filters in trees.items():
        detector.set_customer_filters(customer_id, filters)
    _seen[detector] = (version, frozenset(trees))
    return True
