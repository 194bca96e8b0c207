"""高速化 (compiled speed-ups): ``otasuke._speedups`` must give exactly what the Python
code gives, on every corpus record and on generated ones; where it declines a shape, the
Python code runs instead. ``make install`` builds it; CI requires it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from unittest.mock import patch

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otasuke.detect.sigma import view as view_module
from otasuke.detect.sigma.view import _NAMES, EventView, text_of
from otasuke.ingest.parsers import ParseContext
from otasuke.ingest.parsers import evtx as evtx_module
from otasuke.ingest.parsers.evtx import _ATTRIBUTE_NAMES, EvtxParser, _flatten, rendered_key
from tests.detect.test_rendered_screen import KEY_TEXTS

try:
    from otasuke import _speedups
except ImportError:  # pragma: no cover - depends on the build
    if os.environ.get("CI") == "true":
        raise  # CI builds it (make install): its absence is a failure there
    pytest.skip(
        "otasuke._speedups is not built (run `make install`); the Python code runs alone",
        allow_module_level=True,
    )

CTX = ParseContext(sensor="test")


def python_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evtx_module, "_compiled_flatten", None)
    monkeypatch.setattr(evtx_module, "_compiled_flat_record", None)
    monkeypatch.setattr(view_module, "_view_original", None)


def flat_and_view(record: dict[str, Any]) -> tuple[Any, ...]:
    """Everything detection reads of a record: fields (with order), time, host, id, view."""
    try:
        flat = _flatten(record, CTX)
    except Exception as error:  # the same error either way
        return ("error", type(error).__name__, str(error))
    view = EventView(flat.fields)
    return (
        list(flat.fields.items()),
        flat.observed_at,
        flat.host,
        flat.record_id,
        list(view.original.items()),
        view.search_text(),
        view.all_values(cased=True),
    )


def both_ways(record: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = flat_and_view(record)
    with monkeypatch.context() as patch:
        python_only(patch)
        assert flat_and_view(record) == compiled


def test_the_corpus_gives_the_same_fields_and_views(
    corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parser = EvtxParser()
    records = [
        orjson.loads(record.raw)
        for path in sorted((corpus / "evtx").rglob("*.evtx"))
        for record in parser.read_rendered(path)
        if isinstance(record.raw, str)
    ]
    assert len(records) > 10_000
    taken = sum(
        _speedups.flatten_event(
            r["Event"],
            r["Event"]["System"],
            _ATTRIBUTE_NAMES,
            evtx_module._PAYLOAD_SKIP,
            evtx_module._PAYLOAD_SPECIAL,
        )
        is not None
        for r in records
    )
    assert taken > len(records) * 0.9  # the compiled code does the usual records
    compiled = [flat_and_view(r) for r in records]
    with monkeypatch.context() as patch:
        python_only(patch)
        assert [flat_and_view(r) for r in records] == compiled


SCALARS = st.one_of(
    st.text(alphabet='aZ\\" İΣ日', max_size=6),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
)
NAMES = st.sampled_from(
    ["Image", "image", "EventID", "Channel", "ProcessID", "Data", "#text", "#attributes", "A b"]
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(NAMES, inner, max_size=3)),
    max_leaves=6,
)


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    system: dict[str, Any] = draw(st.dictionaries(NAMES, VALUES, max_size=4))
    system.update(
        {
            "Provider": {"#attributes": draw(st.dictionaries(NAMES, VALUES, max_size=3))},
            "EventID": draw(
                st.one_of(
                    st.integers(0, 70000),
                    st.booleans(),
                    st.text(alphabet="0127 ", max_size=4),
                    st.fixed_dictionaries(
                        {"#attributes": st.just({"Qualifiers": 0}), "#text": SCALARS}
                    ),
                )
            ),
            "TimeCreated": {"#attributes": {"SystemTime": "2025-11-27T07:40:10.165324Z"}},
            "Channel": draw(SCALARS),
        }
    )
    event: dict[str, Any] = {"System": system}
    event.update(draw(st.dictionaries(st.sampled_from(["EventData", "UserData", "Other"]), VALUES)))
    return {"Event": event}


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(record=records())
def test_generated_records_give_the_same_fields_and_views(
    record: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Odd shapes, nested values, names that differ in case, names a System field has:
    the compiled code either gives the Python answer or leaves the record to it."""
    both_ways(record, monkeypatch)


@settings(max_examples=300, deadline=None)
@given(fields=st.dictionaries(NAMES, VALUES, max_size=6))
def test_views_of_any_fields_are_the_same(fields: dict[str, Any]) -> None:
    with patch.object(view_module, "_view_original", None):
        python = EventView(fields)  # learns the names it has not seen (not those with spaces)
    made = _speedups.view_original(fields, _NAMES, text_of)
    if made is None:
        assert any(name not in _NAMES for name in fields)
    else:
        assert list(made[0].items()) == list(python.original.items())
        assert made[1] == python._scalar


def test_a_record_it_declines_is_flattened_by_python() -> None:
    record = {
        "Event": {
            "System": {
                "EventID": "4688",
                "Channel": "Security",
                "TimeCreated": {"#attributes": {"SystemTime": "2025-11-27T07:40:10.165324Z"}},
            },
            "EventData": {"Data": [{"#text": "a"}, "b"]},
        }
    }
    assert (
        _speedups.flatten_event(
            record["Event"],
            record["Event"]["System"],
            _ATTRIBUTE_NAMES,
            evtx_module._PAYLOAD_SKIP,
            evtx_module._PAYLOAD_SPECIAL,
        )
        is None
    )
    fields = _flatten(record, CTX).fields
    assert fields["EventID"] == 4688
    assert fields["Data"] == ["a", "b"]


def test_the_key_read_from_the_text_is_the_same(corpus: Path) -> None:
    parser = EvtxParser()
    texts = [
        record.raw
        for path in sorted((corpus / "evtx").rglob("*.evtx"))
        for record in parser.read_rendered(path)
    ]
    assert parser.rendered_key is _speedups.rendered_key  # what otasuke detect calls
    assert [_speedups.rendered_key(t) for t in texts] == [rendered_key(t) for t in texts]
    assert sum(rendered_key(t) is not None for t in texts) > 10_000


@settings(max_examples=1000, deadline=None)
@given(KEY_TEXTS)
def test_any_text_gives_the_same_key(text: str) -> None:
    """Negative positions (a brace not found), quotes, leading zeros: the same answer."""
    assert _speedups.rendered_key(text) == rendered_key(text)


@settings(max_examples=300, deadline=None)
@given(
    original=st.dictionaries(
        st.sampled_from(["image", "user", "data", "x"]),
        st.one_of(st.none(), st.text(alphabet="aZİΣς ", max_size=5), st.lists(st.text(max_size=3))),
    ),
    names=st.lists(st.sampled_from(["image", "user", "data", "x", "absent"]), max_size=6),
)
def test_lowered_values_are_the_same(original: dict[str, Any], names: list[str]) -> None:
    python, compiled = view_module.Lowered(original), _speedups.Lowered(original)
    for name in names:
        assert compiled[name] == python[name]
        assert compiled.get(name, "d") == python.get(name, "d")
    assert dict(compiled) == dict(python)
    assert "absent" not in compiled or compiled["absent"] is None


@pytest.mark.parametrize(
    "system",
    [
        {"EventRecordID": "12"},
        {"EventRecordID": " 12 "},
        {"EventRecordID": "-12"},
        {"EventRecordID": "１２"},
        {"TimeCreated": {"#attributes": {"SystemTime": "2025-11-27T07:40:10.1653246Z"}}},
        {"TimeCreated": {"#attributes": {"SystemTime": "2025-11-27T07:40:10.165324999Z"}}},
        {"TimeCreated": {"#attributes": {"SystemTime": "2025-11-27T07:40:10.16532x9Z"}}},
        {"EventRecordID": True},
        {"EventRecordID": 1.5},
        {"EventRecordID": None, "Computer": 7},
        {"TimeCreated": {"#attributes": {"SystemTime": "2025-11-27 07:40:10+09:00"}}},
        {"TimeCreated": {"#attributes": {"SystemTime": "2025-13-27T07:40:10.165324Z"}}},
        {"TimeCreated": {"#attributes": {"SystemTime": 20251127}}},
    ],
)
def test_odd_times_hosts_and_ids_read_alike(
    system: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the compiled record reader leaves to Python (or refuses) ends the same."""
    record = {
        "Event": {
            "System": {
                "EventID": 4688,
                "Channel": "Security",
                "Computer": "pc",
                "EventRecordID": 3,
                "TimeCreated": {"#attributes": {"SystemTime": "2025-11-27T07:40:10.165324Z"}},
                **system,
            },
            "EventData": {"NewProcessName": "C:\\x.exe"},
        }
    }
    both_ways(record, monkeypatch)
