# Types of the compiled module (_speedups.pyx); see its docstrings.
from collections.abc import Callable, Iterator
from typing import Any

def view_original(
    fields: dict[str, Any], names: dict[str, str], text_of: Callable[[Any], Any]
) -> tuple[dict[str, Any], bool] | None: ...
def flatten_event(
    event: dict[str, Any],
    system: dict[str, Any],
    attribute_names: dict[str, dict[Any, str]],
    skip: frozenset[str],
    special: frozenset[str],
) -> dict[str, Any] | None: ...
def rendered_key(text: str) -> tuple[str | None, str] | None: ...
def flat_record(
    record: Any,
    attribute_names: dict[str, dict[Any, str]],
    skip: frozenset[str],
    special: frozenset[str],
    make: Callable[..., Any],
) -> Any: ...

class Lowered(dict[str, Any]):
    def __init__(self, original: dict[str, Any]) -> None: ...
    def get(self, name: str, default: Any = None) -> Any: ...

HYPERSCAN: str | None

class LiteralDatabase:
    size: int
    @staticmethod
    def compile(literals: list[bytes], caseless: bool) -> LiteralDatabase: ...
    @staticmethod
    def load(data: bytes, size: int) -> LiteralDatabase: ...
    def dump(self) -> bytes: ...

class BucketScreen:
    bucket: Any
    literals: int
    def __init__(
        self,
        bucket: Any,
        database: LiteralDatabase | None,
        by_pattern: tuple[tuple[int, ...], ...],
        literals: int,
        always: bool,
        fallback: Callable[[str], Any],
    ) -> None: ...

class RecordScreen:
    ruled_out: int
    def __init__(
        self,
        key_of: Callable[[str], Any],
        screen_of: Callable[[Any], BucketScreen],
        make: Callable[..., Any],
    ) -> None: ...
    def next_passing(self, records: Iterator[Any]) -> tuple[Any, Any]: ...
