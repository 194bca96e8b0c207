# cython: language_level=3, boundscheck=False, wraparound=False
"""高速化 (speed-ups): compiled twins of two hot Python loops, for the usual shapes only.

Built by ``make install`` (Cython, in place); without it the Python code runs alone.
Each function does exactly what its Python twin does for the shapes it accepts, and
answers "not mine" (False / None) for anything else, so that the caller runs the Python
code instead: tests/detect/test_speedups.py compares both on the corpus and on generated
records.

* :func:`flatten_event`: the fields of ``otasuke.ingest.parsers.evtx._flatten``
  (``flatten_system`` within it: ``_flatten_system``).
* :func:`view_original`: the string values of ``otasuke.detect.sigma.view.EventView``.
* :func:`rendered_key`: ``otasuke.ingest.parsers.evtx.rendered_key``.
"""

cimport cython


cdef inline bint _is_scalar(object value):
    cdef type kind = type(value)
    return kind is str or kind is int or kind is float or kind is bool or value is None


cdef bint flatten_system(dict system, dict fields, dict attribute_names) except -1:
    """Copy an EVTX ``System`` element into ``fields`` as ``_flatten_system`` does.

    Only for a dict whose keys are strings and whose values are JSON scalars or elements
    ``{"#attributes": {name: scalar, ...}, "#text": scalar}`` (both parts optional). For
    anything else it answers False, having maybe written part of ``fields``: the caller
    starts again with an empty dict and the Python loop.
    """
    cdef object key, value, attributes, attr, attr_value, names, name
    for key, value in system.items():
        if type(key) is not str:
            return False
        if _is_scalar(value):
            if value is not None:
                fields[key] = value
            continue
        if type(value) is not dict:
            return False
        attributes = (<dict>value).get("#attributes")
        if attributes is not None:
            if type(attributes) is not dict:
                return False
            names = attribute_names.get(key)
            for attr, attr_value in (<dict>attributes).items():
                if type(attr) is not str or not _is_scalar(attr_value):
                    return False
                name = attr
                if names is not None:
                    name = (<dict>names).get(attr, attr)
                fields[name] = attr_value
        if "#text" in <dict>value:
            attr_value = (<dict>value)["#text"]
            if not _is_scalar(attr_value):
                return False
            fields[key] = attr_value
    return True


def flatten_event(dict event, dict system, dict attribute_names, frozenset skip, frozenset special):
    """The fields ``_flatten`` makes of an EVTX ``Event`` element, or None.

    Only for the usual record: :func:`flatten_system`'s ``System``, an integer
    ``EventID`` (bare or as ``#text``), and payload elements (``EventData``, each child of
    ``UserData``) that are null or dicts of scalars under string keys that are neither
    ``System`` names nor in ``special``. ``skip``: the Event keys that are not payload.
    """
    cdef dict fields = {}
    cdef object event_id, key, payload, child_key, child
    if not flatten_system(system, fields, attribute_names):
        return None
    event_id = system.get("EventID")
    if type(event_id) is dict:
        event_id = (<dict>event_id).get("#text")
    if type(event_id) is str:  # some exports write "4688"
        event_id = (<str>event_id).strip()
        if not ((<str>event_id).isascii() and (<str>event_id).isdigit()):
            return None
        event_id = int(event_id)
    elif type(event_id) is not int:
        return None
    fields["EventID"] = event_id
    for key, payload in event.items():
        if key in skip:
            continue
        if key == "UserData" and type(payload) is dict:
            for child_key, child in (<dict>payload).items():
                if child_key != "#attributes" and not _copy_payload(child, fields, system, special):
                    return None
        elif not _copy_payload(payload, fields, system, special):
            return None
    return fields


cdef bint _copy_payload(object payload, dict fields, dict system, frozenset special):
    """``_flatten_payload`` at the top level, for elements of scalars and ``#text`` wrappers
    of scalars (``{"Data": {"#text": "…"}}``); False for anything nested deeper."""
    cdef object key, value, text
    cdef bint plain = True
    if payload is None:
        return True
    if type(payload) is not dict:
        return False
    for key, value in (<dict>payload).items():
        if type(key) is not str or not _is_scalar(value) or key in system or key in special:
            plain = False
            break
    if plain:
        fields.update(<dict>payload)
        return True
    for key, value in (<dict>payload).items():  # the general loop, at the top level
        if type(key) is not str:
            continue
        if key == "#attributes":
            continue
        if type(value) is dict:
            if "#text" not in <dict>value:
                return False  # a nested element: flattened by its leaves in Python
            value = (<dict>value)["#text"]
        if not _is_scalar(value):
            return False
        if key == "#text":
            fields.setdefault("Data", value)
            continue
        if key in system or key == "EventID":
            key = "EventData." + key
        fields[key] = value
    return True


def view_original(dict fields, dict names, object text_of):
    """``(original, scalar)`` of an EventView over ``fields``, or None.

    ``names``: field name → lowercased name (the view's table of names seen); None when
    a name is not in it (the caller's general path learns it). Values become the strings
    Sigma compares: str as is, int and float by ``str``, bool as ``true``/``false``,
    anything else by ``text_of`` (None stays None, a list a list of strings: then
    ``scalar`` is False). A later name with the same lowercase replaces the earlier
    value in its place, as a dict comprehension does.
    """
    cdef dict original = {}
    cdef object key, value, name
    cdef type kind
    cdef bint converted = False
    for key, value in fields.items():
        name = names.get(key)
        if name is None:
            return None
        kind = type(value)
        if kind is str:
            original[name] = value
        elif kind is int or kind is float:
            original[name] = str(value)
        elif kind is bool:
            original[name] = "true" if value else "false"
        else:
            original[name] = text_of(value)
            converted = True
    if not converted:
        return original, True
    for value in original.values():  # a later value may have replaced a list
        if type(value) is not str:
            return original, False
    return original, True


cdef str _WINDOWS_EVENT = (
    '{"Event":{"#attributes":{"xmlns":"http://schemas.microsoft.com/win/2004/08/events/event"},'
    '"System":{'
)
cdef str _SYSTEM_AFTER_ATTRIBUTES = ',"System":{'
cdef str _SYSTEM_FIRST = '{"Event":{"System":{'
cdef str _EVENT_ATTRIBUTES = '{"Event":{"#attributes":{'
cdef str _QUALIFIED = '{"#attributes":{'
cdef str _QUALIFIED_TEXT = '},"#text":'
cdef str _NULL_CHANNEL = 'null,"Computer":'


@cython.wraparound(True)  # slices and indices below may be negative, as in Python
@cython.boundscheck(True)
def rendered_key(str text):
    """``otasuke.ingest.parsers.evtx.rendered_key``, line for line (see its docstring)."""
    cdef Py_ssize_t at, close, system, end
    cdef str digits, channel
    if text.startswith(_WINDOWS_EVENT):
        at = len(_WINDOWS_EVENT)
    elif text.startswith(_SYSTEM_FIRST):
        at = len(_SYSTEM_FIRST)
    elif text.startswith(_EVENT_ATTRIBUTES):
        close = text.find("}", len(_EVENT_ATTRIBUTES))
        if close < 0 or not text.startswith(_SYSTEM_AFTER_ATTRIBUTES, close + 1):
            return None
        at = close + 1 + len(_SYSTEM_AFTER_ATTRIBUTES)
    else:
        return None
    system = at
    at = text.find('"EventID":', at)
    if at < 0 or (at != system and not text.startswith("}},", at - 3)):
        return None
    at += 10
    if text.startswith(_QUALIFIED, at):
        at = text.find("}", at + len(_QUALIFIED))
        if not text.startswith(_QUALIFIED_TEXT, at):
            return None
        at += len(_QUALIFIED_TEXT)
        end = text.find("}", at)
        if not text.startswith(",", end + 1):
            return None
    else:
        end = text.find(",", at)
    digits = text[at:end]
    if digits[:1] == '"' and digits[-1:] == '"':
        digits = digits[1:-1]
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 20):
        return None
    if digits[0] == "0" and len(digits) > 1:
        digits = str(int(digits))
    at = text.find('"Channel":', end)
    if at < 0:
        return None
    at += 10
    if text.startswith(_NULL_CHANNEL, at):
        return None, digits
    if text[at : at + 1] != '"':
        return None
    at += 1
    end = text.find('"', at)
    channel = text[at:end]
    if end < 0 or "\\" in channel or not text.startswith(',"Computer":', end + 1):
        return None
    return channel.lower(), digits


cdef class Lowered(dict):
    """``otasuke.detect.sigma.view.Lowered``: an event's values lowercased on first look."""

    cdef dict _original

    def __init__(self, dict original):
        self._original = original

    def __missing__(self, name):
        cdef object value = self._original.get(name)
        cdef object folded
        if type(value) is str:
            folded = (<str>value).lower()
        elif value is None:
            folded = None
        else:
            folded = [item.lower() for item in value]
        self[name] = folded
        return folded

    def get(self, name, default=None):
        cdef object value = self[name]
        return default if value is None else value
