# cython: language_level=3, boundscheck=False, wraparound=False
"""高速化 (speed-ups): compiled twins of the hottest Python loops, for the usual shapes only.

Built by ``make install`` (Cython, in place); without it the Python code runs alone.
Each function does exactly what its Python twin does for the shapes it accepts, and
answers "not mine" (False / None) for anything else, so that the caller runs the Python
code instead: tests/detect/test_speedups.py compares both on the corpus and on generated
records.

* :func:`flatten_event`: the fields of ``otasuke.ingest.parsers.evtx._flatten``
  (``flatten_system`` within it: ``_flatten_system``).
* :func:`view_original`: the string values of ``otasuke.detect.sigma.view.EventView``.
* :func:`rendered_key`: ``otasuke.ingest.parsers.evtx.rendered_key``.
* :class:`RecordScreen`: ``otasuke.detect.sigma.ruleset.PythonRecordScreen`` (the rules'
  literal screen over a file's records), calling Hyperscan's C library; compared with its
  twin in tests/detect/test_native_screen.py.
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


cdef object _NOT_PLAIN = object()


cdef object _plain_value(object value):
    """``_value`` of a scalar (itself) or of a list of scalars (a copy: ``_scalar`` keeps
    each); ``_NOT_PLAIN`` for anything else (the Python code takes it)."""
    cdef object item
    if _is_scalar(value):
        return value
    if type(value) is not list:
        return _NOT_PLAIN
    for item in <list>value:
        if not _is_scalar(item):
            return _NOT_PLAIN
    return list(<list>value)


from datetime import datetime as _datetime

_fromisoformat = _datetime.fromisoformat


def flat_record(object record, dict attribute_names, frozenset skip, frozenset special,
                object make):
    """``otasuke.ingest.parsers.evtx._flatten`` of the usual record in one call:
    :func:`flatten_event`, the renderer's time (``YYYY-MM-DDTHH:MM:SS.ffffffZ``, or 7 to
    9 digits of fraction as other exporters write), the computer name and a record id
    (an integer, or a string of digits), as the named tuple ``make`` of (fields, time,
    host, record_id).
    None for anything else (the Python code then decides, errors included)."""
    cdef object event, system, fields, value, host, record_id
    cdef str text
    if type(record) is not dict:
        return None
    event = (<dict>record).get("Event")
    if type(event) is not dict:
        return None
    system = (<dict>event).get("System")
    if type(system) is not dict:
        return None
    fields = flatten_event(event, system, attribute_names, skip, special)
    if fields is None:
        return None
    value = (<dict>fields).get("TimeCreated")
    if type(value) is not str:
        return None
    text = <str>value
    if not (27 <= len(text) <= 30 and text[len(text) - 1] == "Z" and text[19] == "."
            and text[10] == "T" and text[4] == "-" and text[7] == "-" and text[13] == ":"
            and text[16] == ":" and text.isascii()):
        return None
    if len(text) > 27:  # 7 to 9 digits of fraction: microseconds are the first six
        if not text[26:len(text) - 1].isdigit():
            return None
        text = text[:26] + "Z"
    try:
        value = _fromisoformat(text)
    except ValueError:
        return None
    host = (<dict>fields).get("Computer")
    if type(host) is not str:
        if host is not None and isinstance(host, str):
            return None
        host = None
    record_id = (<dict>fields).get("EventRecordID")
    if type(record_id) is str and 0 < len(<str>record_id) <= 20 and (
            (<str>record_id).isascii() and (<str>record_id).isdigit()):
        record_id = int(record_id)
    elif type(record_id) is not int and record_id is not None:
        return None  # anything else: the Python code reads it
    return tuple.__new__(make, (fields, value, host, record_id))  # a named tuple's _make


cdef bint _copy_payload(object payload, dict fields, dict system, frozenset special):
    """``_flatten_payload`` at the top level, for elements of scalars, lists of scalars and
    ``#text`` wrappers of either (``{"Data": {"#text": ["…", "…"]}}``, classic logs'
    unnamed values); False for anything nested deeper."""
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
        value = _plain_value(value)
        if value is _NOT_PLAIN:
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


# --- The literal screen of EVTX records, in one loop (Hyperscan's C library) -----------------
#
# ``otasuke.detect.sigma.ruleset.RecordScreen`` is the Python twin of :class:`RecordScreen`
# (same answers, tested); ``otasuke.detect.sigma.native`` builds its inputs. Hyperscan's C
# library (``libhs.so.5``: Debian's libhyperscan5 or libvectorscan5) is opened at run time,
# so this module builds without it and the Python screen runs where it is missing.

from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset
from posix.dlfcn cimport RTLD_LOCAL, RTLD_NOW, dlopen, dlsym

ctypedef int (*hs_match_f)(unsigned int, unsigned long long, unsigned long long,
                           unsigned int, void *) noexcept nogil
ctypedef struct hs_compile_error_t:
    char *message
    int expression
ctypedef int (*hs_compile_lit_multi_f)(const char * const *, const unsigned int *,
                                       const unsigned int *, const size_t *, unsigned int,
                                       unsigned int, const void *, void **,
                                       hs_compile_error_t **) noexcept nogil
ctypedef int (*hs_free_compile_error_f)(hs_compile_error_t *) noexcept nogil
ctypedef int (*hs_alloc_scratch_f)(const void *, void **) noexcept nogil
ctypedef int (*hs_free_f)(void *) noexcept nogil
ctypedef int (*hs_scan_f)(const void *, const char *, unsigned int, unsigned int, void *,
                          hs_match_f, void *) noexcept nogil
ctypedef int (*hs_serialize_f)(const void *, char **, size_t *) noexcept nogil
ctypedef int (*hs_deserialize_f)(const char *, size_t, void **) noexcept nogil
ctypedef const char *(*hs_version_f)() noexcept nogil

cdef hs_compile_lit_multi_f _hs_compile_lit_multi = NULL
cdef hs_free_compile_error_f _hs_free_compile_error = NULL
cdef hs_alloc_scratch_f _hs_alloc_scratch = NULL
cdef hs_free_f _hs_free_scratch = NULL
cdef hs_free_f _hs_free_database = NULL
cdef hs_scan_f _hs_scan = NULL
cdef hs_serialize_f _hs_serialize_database = NULL
cdef hs_deserialize_f _hs_deserialize_database = NULL
cdef str _hs_version = None

cdef unsigned int HS_FLAG_CASELESS = 1
cdef unsigned int HS_FLAG_SINGLEMATCH = 8
cdef unsigned int HS_MODE_BLOCK = 1


cdef bint _open_hyperscan():
    global _hs_compile_lit_multi, _hs_free_compile_error, _hs_alloc_scratch
    global _hs_free_scratch, _hs_free_database, _hs_scan, _hs_serialize_database
    global _hs_deserialize_database, _hs_version
    cdef void *library = dlopen(b"libhs.so.5", RTLD_NOW | RTLD_LOCAL)
    if library == NULL:
        return False
    cdef void *version = dlsym(library, b"hs_version")
    _hs_compile_lit_multi = <hs_compile_lit_multi_f>dlsym(library, b"hs_compile_lit_multi")
    _hs_free_compile_error = <hs_free_compile_error_f>dlsym(library, b"hs_free_compile_error")
    _hs_alloc_scratch = <hs_alloc_scratch_f>dlsym(library, b"hs_alloc_scratch")
    _hs_free_scratch = <hs_free_f>dlsym(library, b"hs_free_scratch")
    _hs_free_database = <hs_free_f>dlsym(library, b"hs_free_database")
    _hs_scan = <hs_scan_f>dlsym(library, b"hs_scan")
    _hs_serialize_database = <hs_serialize_f>dlsym(library, b"hs_serialize_database")
    _hs_deserialize_database = <hs_deserialize_f>dlsym(library, b"hs_deserialize_database")
    if (version == NULL or _hs_compile_lit_multi == NULL or _hs_free_compile_error == NULL
            or _hs_alloc_scratch == NULL or _hs_free_scratch == NULL or _hs_scan == NULL
            or _hs_free_database == NULL or _hs_serialize_database == NULL
            or _hs_deserialize_database == NULL):
        return False  # an older library without literal databases (before 5.2)
    _hs_version = (<hs_version_f>version)().decode("ascii", "replace")
    return True


HYPERSCAN = _hs_version if _open_hyperscan() else None
"""The version of the Hyperscan C library in use, or None when it could not be opened."""


cdef class LiteralDatabase:
    """Literals compiled by Hyperscan's C library (block mode, each reported once).

    Literals are bytes (UTF-8); ``caseless`` compares ASCII letters without case. A
    literal's number is its position. Literals may hold any byte, NUL included.
    """

    cdef void *database
    cdef readonly Py_ssize_t size

    def __cinit__(self):
        self.database = NULL

    def __dealloc__(self):
        if self.database != NULL:
            _hs_free_database(self.database)

    @staticmethod
    def compile(list literals, bint caseless):
        if HYPERSCAN is None:
            raise RuntimeError("the Hyperscan C library (libhs.so.5) is not installed")
        cdef LiteralDatabase made = LiteralDatabase()
        cdef unsigned int count = len(literals)
        cdef unsigned int flags = HS_FLAG_SINGLEMATCH | (HS_FLAG_CASELESS if caseless else 0)
        cdef const char **expressions = <const char **>malloc(count * sizeof(char *) + 1)
        cdef unsigned int *all_flags = <unsigned int *>malloc(count * sizeof(unsigned int) + 1)
        cdef unsigned int *ids = <unsigned int *>malloc(count * sizeof(unsigned int) + 1)
        cdef size_t *lengths = <size_t *>malloc(count * sizeof(size_t) + 1)
        cdef hs_compile_error_t *error = NULL
        cdef unsigned int n
        cdef bytes literal
        cdef int status
        try:
            if expressions == NULL or all_flags == NULL or ids == NULL or lengths == NULL:
                raise MemoryError()
            for n in range(count):
                literal = literals[n]
                expressions[n] = literal
                lengths[n] = len(literal)
                all_flags[n] = flags
                ids[n] = n
            status = _hs_compile_lit_multi(
                expressions, all_flags, ids, lengths, count, HS_MODE_BLOCK, NULL,
                &made.database, &error,
            )
            if status != 0:
                message = error.message.decode("utf-8", "replace") if error != NULL else "?"
                if error != NULL:
                    _hs_free_compile_error(error)
                raise ValueError(f"Hyperscan could not compile the literals: {message}")
        finally:
            free(expressions)
            free(all_flags)
            free(ids)
            free(lengths)
        made.size = count
        return made

    @staticmethod
    def load(bytes data, Py_ssize_t size):
        """A database from :meth:`dump` (ValueError: not one, or of another version/CPU)."""
        if HYPERSCAN is None:
            raise RuntimeError("the Hyperscan C library (libhs.so.5) is not installed")
        cdef LiteralDatabase made = LiteralDatabase()
        if _hs_deserialize_database(data, len(data), &made.database) != 0:
            made.database = NULL
            raise ValueError("not a Hyperscan database of this library and CPU")
        made.size = size
        return made

    def dump(self):
        cdef char *data = NULL
        cdef size_t length = 0
        if _hs_serialize_database(self.database, &data, &length) != 0:
            raise MemoryError()
        try:
            return data[:length]
        finally:
            free(data)


cdef struct _Hits:
    unsigned int *patterns
    Py_ssize_t count


cdef int _on_match(unsigned int pattern, unsigned long long start, unsigned long long end,
                   unsigned int flags, void *context) noexcept nogil:
    cdef _Hits *hits = <_Hits *>context
    hits.patterns[hits.count] = pattern  # each pattern once (SINGLEMATCH): room for all
    hits.count += 1
    return 0


cdef unsigned int *_flat(tuple groups, unsigned int **starts) except NULL:
    """``groups`` (tuple of tuples of ints) as CSR arrays: values, and starts (n + 1)."""
    cdef Py_ssize_t n = len(groups), total = 0, at = 0, i
    for group in groups:
        total += len(group)
    starts[0] = <unsigned int *>malloc((n + 1) * sizeof(unsigned int))
    cdef unsigned int *values = <unsigned int *>malloc(total * sizeof(unsigned int) + 1)
    if starts[0] == NULL or values == NULL:
        free(starts[0])
        free(values)
        raise MemoryError()
    for i in range(n):
        starts[0][i] = at
        for value in groups[i]:
            values[at] = value
            at += 1
    starts[0][n] = at
    return values


cdef class BucketScreen:
    """What :class:`RecordScreen` needs of one rule bucket (made by
    ``otasuke.detect.sigma.native.bucket_screen``).

    ``database``: the bucket's rendered patterns, case-stable ones first (``triggered`` of
    them, empty ones standing for none), then the characters whose presence sends a text
    to ``fallback`` (see ``Bucket.prepare_rendered``); ``by_pattern``: the literal numbers
    each of the first ``triggered`` patterns stands for; ``fallback(text)``: the literal
    numbers of a text searched lowercased (the Python search).
    """

    cdef readonly object bucket
    cdef LiteralDatabase database
    cdef Py_ssize_t triggered
    cdef unsigned int *pattern_starts
    cdef unsigned int *pattern_literals
    cdef readonly Py_ssize_t literals
    cdef bint always
    cdef object fallback

    def __cinit__(self):
        self.pattern_starts = NULL
        self.pattern_literals = NULL

    def __init__(self, bucket, LiteralDatabase database, tuple by_pattern, Py_ssize_t literals,
                 bint always, fallback):
        self.bucket = bucket
        self.database = database
        self.triggered = len(by_pattern)
        self.pattern_literals = _flat(by_pattern, &self.pattern_starts)
        self.literals = literals
        self.always = always
        self.fallback = fallback

    def __dealloc__(self):
        free(self.pattern_starts)
        free(self.pattern_literals)


cdef extern from "Python.h":
    int PyUnicode_KIND(object)
    void *PyUnicode_DATA(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    int PyUnicode_1BYTE_KIND

cdef extern from "string.h":
    void *memmem(const void *, size_t, const void *, size_t) nogil
    void *memchr(const void *, int, size_t) nogil
    int memcmp(const void *, const void *, size_t) nogil

cdef object _SLOW = object()
cdef bytes _B_WINDOWS_EVENT = _WINDOWS_EVENT.encode("ascii")
cdef bytes _B_SYSTEM_FIRST = _SYSTEM_FIRST.encode("ascii")
DEF _KEY_ROOM = 128


cdef class RecordScreen:
    """The rules' literal screen over a file's ``records_json()`` items, in one loop.

    :meth:`next_passing` reads items until one may match a rule and returns it with what
    the screen found (``make(key, bucket, found)``), or with None when its key could not be
    read (decode it as usual); items no rule can match are counted in ``ruled_out``. One
    per thread: it holds Hyperscan's scratch space.
    """

    cdef object key_of
    cdef bint compiled_key
    cdef object screen_of
    cdef object make
    cdef dict entries
    cdef void *scratch
    cdef unsigned int *hits
    cdef unsigned int *found
    cdef unsigned char *marks
    cdef Py_ssize_t room
    cdef public Py_ssize_t ruled_out
    # the last key read, by its raw channel and event id text (records of a file mostly
    # share a few keys): the same raw text gives the same key, with nothing allocated
    cdef object last_key
    cdef char last_channel[_KEY_ROOM]
    cdef char last_event_id[_KEY_ROOM]
    cdef Py_ssize_t last_channel_length
    cdef Py_ssize_t last_event_id_length

    def __cinit__(self):
        self.scratch = NULL
        self.hits = NULL
        self.found = NULL
        self.marks = NULL
        self.room = 0

    def __init__(self, key_of, screen_of, make):
        self.key_of = key_of
        self.compiled_key = key_of is rendered_key
        self.screen_of = screen_of
        self.make = make
        self.entries = {}
        self.ruled_out = 0

    def __dealloc__(self):
        if self.scratch != NULL:
            _hs_free_scratch(self.scratch)
        free(self.hits)
        free(self.found)
        free(self.marks)

    cdef object _key(self, str text):
        """``rendered_key(text)`` for the usual record (one-byte text, renderer's prefix,
        a plain EventID, a quoted Channel): found with memmem, the last key reused when
        the raw text is the same. ``_SLOW`` for anything else: ``rendered_key`` decides."""
        if PyUnicode_KIND(text) != PyUnicode_1BYTE_KIND:
            return _SLOW
        cdef const char *data = <const char *>PyUnicode_DATA(text)
        cdef Py_ssize_t size = PyUnicode_GET_LENGTH(text), at, system, end, i
        cdef Py_ssize_t id_start, id_end, channel_start, channel_end
        cdef const char *found
        if size >= len(_B_WINDOWS_EVENT) and memcmp(
                data, <const char *>_B_WINDOWS_EVENT, len(_B_WINDOWS_EVENT)) == 0:
            at = len(_B_WINDOWS_EVENT)
        elif size >= len(_B_SYSTEM_FIRST) and memcmp(
                data, <const char *>_B_SYSTEM_FIRST, len(_B_SYSTEM_FIRST)) == 0:
            at = len(_B_SYSTEM_FIRST)
        else:
            return _SLOW
        system = at
        found = <const char *>memmem(data + at, size - at, b'"EventID":', 10)
        if found == NULL:
            return _SLOW
        at = found - data
        if at != system and memcmp(data + at - 3, b"}},", 3) != 0:
            return _SLOW
        at += 10
        found = <const char *>memchr(data + at, ord(","), size - at)
        if found == NULL:
            return _SLOW
        end = found - data
        id_start, id_end = at, end
        if id_end - id_start >= 2 and data[id_start] == b'"' and data[id_end - 1] == b'"':
            id_start += 1
            id_end -= 1
        if id_end - id_start < 1 or id_end - id_start > 20:
            return _SLOW
        if data[id_start] == b"0" and id_end - id_start > 1:
            return _SLOW  # leading zeros: rendered_key writes the number again
        for i in range(id_start, id_end):
            if data[i] < b"0" or data[i] > b"9":
                return _SLOW
        found = <const char *>memmem(data + end, size - end, b'"Channel":', 10)
        if found == NULL:
            return _SLOW
        at = found - data + 10
        if at >= size or data[at] != b'"':
            return _SLOW
        at += 1
        found = <const char *>memchr(data + at, ord('"'), size - at)
        if found == NULL:
            return _SLOW
        channel_start, channel_end = at, found - data
        if memchr(data + channel_start, ord("\\"), channel_end - channel_start) != NULL:
            return _SLOW
        if size - channel_end - 1 < 12 or memcmp(data + channel_end + 1, b',"Computer":', 12) != 0:
            return _SLOW
        if (self.last_key is not None
                and channel_end - channel_start == self.last_channel_length
                and id_end - id_start == self.last_event_id_length
                and memcmp(data + channel_start, self.last_channel,
                           channel_end - channel_start) == 0
                and memcmp(data + id_start, self.last_event_id, id_end - id_start) == 0):
            return self.last_key
        key = (text[channel_start:channel_end].lower(), text[id_start:id_end])
        if channel_end - channel_start <= _KEY_ROOM:
            memcpy(self.last_channel, data + channel_start, channel_end - channel_start)
            memcpy(self.last_event_id, data + id_start, id_end - id_start)
            self.last_channel_length = channel_end - channel_start
            self.last_event_id_length = id_end - id_start
            self.last_key = key
        return key

    cdef BucketScreen _entry(self, object key):
        cdef BucketScreen entry = self.screen_of(key)
        cdef Py_ssize_t room = max(entry.database.size if entry.database is not None else 0,
                                   entry.literals)
        if entry.database is not None and _hs_alloc_scratch(entry.database.database,
                                                            &self.scratch) != 0:
            raise MemoryError()
        if room > self.room:
            self.hits = <unsigned int *>realloc(self.hits, room * sizeof(unsigned int))
            self.found = <unsigned int *>realloc(self.found, room * sizeof(unsigned int))
            self.marks = <unsigned char *>realloc(self.marks, room)
            if self.hits == NULL or self.found == NULL or self.marks == NULL:
                raise MemoryError()
            memset(self.marks, 0, room)
            self.room = room
        self.entries[key] = entry
        return entry

    cdef object _screen(self, BucketScreen entry, str text):
        """The literal numbers found (a list), or None: no rule of the bucket can match."""
        cdef _Hits hits
        cdef Py_ssize_t size, i, count = 0
        cdef unsigned int pattern, literal, at
        cdef const char *data
        if entry.database is None:
            return [] if entry.always else None
        if not text.isascii() and ("\u0130" in text or "\u212a" in text):
            return self._fallback(entry, text)
        try:
            data = PyUnicode_AsUTF8AndSize(text, &size)
        except UnicodeEncodeError:  # a lone surrogate: the Python search takes it
            return self._fallback(entry, text)
        hits.patterns = self.hits
        hits.count = 0
        if _hs_scan(entry.database.database, data, <unsigned int>size, 0, self.scratch,
                    _on_match, &hits) != 0:
            raise RuntimeError("Hyperscan scan failed")
        if hits.count == 0:
            return [] if entry.always else None
        for i in range(hits.count):
            if self.hits[i] >= entry.triggered:  # a cased non-ASCII pattern may be there
                return self._fallback(entry, text)
        for i in range(hits.count):
            pattern = self.hits[i]
            for at in range(entry.pattern_starts[pattern], entry.pattern_starts[pattern + 1]):
                literal = entry.pattern_literals[at]
                if not self.marks[literal]:
                    self.marks[literal] = 1
                    self.found[count] = literal
                    count += 1
        for i in range(count):
            self.marks[self.found[i]] = 0
        return [self.found[i] for i in range(count)]

    cdef object _fallback(self, BucketScreen entry, str text):
        found = entry.fallback(text)
        if found or entry.always:
            return list(found)
        return None

    def next_passing(self, records):
        """The next item of ``records`` the screen lets through, as (item, screened).

        ``screened`` is None for an item whose key could not be read, or that is not a
        dict with a ``data`` text (the caller decides what to do with it). StopIteration
        at the end; the iterator's own errors propagate.
        """
        cdef object item, data, key, found
        cdef BucketScreen entry
        while True:
            item = next(records)
            if type(item) is not dict:
                return item, None
            data = (<dict>item).get("data")
            if type(data) is not str:
                return item, None
            if self.compiled_key:
                key = self._key(data)
                if key is _SLOW:
                    key = rendered_key(data)
            else:
                key = self.key_of(data)
            if key is None:
                return item, None
            entry = self.entries.get(key)
            if entry is None:
                entry = self._entry(key)
            found = self._screen(entry, data)
            if found is None:
                self.ruled_out += 1
                continue
            return item, self.make(key, entry.bucket, found)
