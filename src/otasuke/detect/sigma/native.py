"""ネイティブ選別 (native screen): the rules' literal screen in one compiled loop.

``otasuke detect`` reads EVTX records as JSON text and searches each for the literals of
the rules its key can match (:meth:`RuleSet.text_screen`); two records in three stop
there. Done from Python, each record costs a generator step, a named tuple, a call of the
Hyperscan binding and a set — more than the search itself. ``otasuke._speedups.RecordScreen``
does the same for a file's records in one loop of compiled code calling Hyperscan's C
library, and hands back only the records that may match; what it finds is what the Python
screen finds (tests/detect/test_native_screen.py).

It needs both the compiled module (``make install``) and the C library ``libhs.so.5``
(Debian: ``libhyperscan5``, or ``libvectorscan5``), opened at run time: without either,
:func:`available` is False and the Python screen runs. The C library compiles its own
databases (the binding's carry another version), kept in the cache folder as the
binding's are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from otasuke.detect.sigma.index import cached_database, database_entry

if TYPE_CHECKING:
    from otasuke.detect.sigma.index import Bucket

_speedups: Any
try:  # built by `make install` (Cython)
    from otasuke import _speedups
except ImportError:  # pragma: no cover - depends on the build
    _speedups = None


def hyperscan_library() -> str | None:
    """The version of Hyperscan's C library the compiled screen opened, or None."""
    return None if _speedups is None else _speedups.HYPERSCAN


def available() -> bool:
    """Whether the compiled screen can run here: module built, C library installed, and
    the library able to work on this CPU (it needs SSSE3; tried once on a tiny database)."""
    global _WORKS
    if _WORKS is None:
        _WORKS = False
        if hyperscan_library() is not None:
            try:
                _speedups.LiteralDatabase.compile([b"otasuke"], True)
                _WORKS = True
            except (ValueError, RuntimeError, MemoryError):
                pass
    return _WORKS


_WORKS: bool | None = None


def bucket_screen(bucket: Bucket) -> Any:
    """A bucket's ``BucketScreen``: its :meth:`~Bucket.screen_patterns` compiled by the C
    library (ASCII letters without case), the literal numbers of each pattern, and the
    Python search of lowercased texts for the records the compiled one leaves to it."""
    assert _speedups is not None
    database = None
    patterns: list[str] = []
    by_pattern: tuple[tuple[int, ...], ...] = ()
    if bucket.payloads:
        patterns = bucket.screen_patterns()
        by_pattern = bucket.rendered_patterns()[1]
        database = _database(patterns, bucket)
    return _speedups.BucketScreen(
        bucket,
        database,
        by_pattern,
        len(bucket.payloads),
        bool(bucket.always),
        _LazySearch(bucket),
    )


def _database(patterns: list[str], bucket: Bucket) -> Any:
    tag = f"libhs {hyperscan_library()} caseless"
    # a bucket from the cache: its key names its literals, hence its patterns
    entry = database_entry(bucket.cache_dir, tag, enumerate(patterns), bucket.key)

    def compile_patterns() -> Any:
        # An empty pattern stands for none: one that cannot occur in UTF-8 keeps its number.
        literals = [p.encode("utf-8", "surrogatepass") or _NEVER for p in patterns]
        return database_type.compile(literals, True)

    database_type = _speedups.LiteralDatabase
    return cached_database(
        entry,
        lambda data: database_type.load(data, len(patterns)),
        compile_patterns,
        lambda database: database.dump(),
    )


_NEVER = b"\xff\xfe\xff"
"""Bytes no UTF-8 text holds (0xFF is never part of UTF-8): a pattern that never matches."""


class _LazySearch:
    """The bucket's :meth:`~Bucket.lowered_search`, built when first needed (most buckets
    never see a record that needs it)."""

    __slots__ = ("_bucket", "_search")

    def __init__(self, bucket: Bucket) -> None:
        self._bucket = bucket
        self._search: Any = None

    def __call__(self, text: str) -> set[int]:
        search = self._search
        if search is None:
            search = self._search = self._bucket.lowered_search()
        result: set[int] = search(text)
        return result


def record_screen(
    key_of: Callable[[str], Any], screen_of: Callable[[Any], Any], make: Callable[..., Any]
) -> Any:
    """The compiled ``RecordScreen`` (``screen_of(key)``: the key's ``BucketScreen``;
    ``make(key, bucket, found)``: what a passing record carries)."""
    assert _speedups is not None
    return _speedups.RecordScreen(key_of, screen_of, make)
