# Types of the compiled module (_speedups.pyx); see its docstrings.
from collections.abc import Callable
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

class Lowered(dict[str, Any]):
    def __init__(self, original: dict[str, Any]) -> None: ...
    def get(self, name: str, default: Any = None) -> Any: ...
