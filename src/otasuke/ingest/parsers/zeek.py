"""Zeek log parser (Zeek ログ): conn, dns, http, ssl, files, notice, weird … as JSON or TSV.

``fields`` keep Zeek's own names (``id.orig_h``, ``id.resp_p``, ``query``, ``uri`` …) and
``_path``, the log type (``dns`` for ``dns.log``), which Sigma rules for ``product: zeek``
read as their ``service``. Records come as:

* JSON lines (``LogAscii::use_json``): the object as it is; ``_path`` from the record,
  else from the file name (``dns.log``, ``dns.json.gz``, ``dns.09:00:00-10:00:00.log``),
  else guessed from the fields a log type always has (``query`` → dns …);
* TSV with the ``#separator``/``#fields``/``#types`` header: each line becomes an object
  under the header's names, typed by ``#types`` (count/int/port → int, double/interval/time
  → float, bool ``T``/``F``, set/vector → lists split on ``#set_separator``); the unset
  value (``-``) leaves the field out, the empty one (``(empty)``) is ``""`` or ``[]``.

``observed_at`` is ``ts`` (epoch seconds or ISO 8601). ``host`` is the internal side of
``id.orig_h``/``id.resp_h`` (社内端末), as for Suricata.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, ClassVar

import orjson

from otasuke.errors import ParseError
from otasuke.ingest.event import Event, SourceFormat, content_id
from otasuke.ingest.netaddr import internal_host
from otasuke.ingest.parsers import ParseContext, RawRecord, register_parser
from otasuke.ingest.parsers.jsonl import first_line, flatten, load_object, parse_time

FORMAT = SourceFormat.ZEEK
_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")
_KNOWN = frozenset(
    """conn dns http ssl x509 files notice weird dhcp arp software smtp ssh rdp ntlm kerberos
    smb_files smb_mapping dce_rpc ftp pe ntp ocsp modbus rfb ldap_search known_hosts
    known_services known_certs dpd analyzer tunnel snmp sip syslog radius""".split()  # noqa: SIM905
)
"""Log types whose file name alone (with a ``ts`` field) makes a file a Zeek log."""
_GUESSES = (
    ("dns", ("query", "qtype_name")),
    ("dns", ("trans_id", "rcode")),
    ("http", ("method", "uri")),
    ("http", ("status_code", "user_agent")),
    ("ssl", ("server_name", "cipher")),
    ("ssl", ("version", "cipher")),
    ("x509", ("certificate.subject",)),
    ("files", ("fuid", "mime_type")),
    ("files", ("fuid", "source")),
    ("notice", ("note", "msg")),
    ("weird", ("name", "addl")),
    ("weird", ("name", "notice", "peer")),
    ("conn", ("conn_state",)),
    ("conn", ("history", "orig_bytes")),
)


def log_path(fields: Mapping[str, Any]) -> str | None:
    """The Zeek log type of a record without ``_path``, from fields only that type has."""
    for path, names in _GUESSES:
        if all(name in fields for name in names):
            return path
    return None


def path_from_name(path: Path) -> str | None:
    """``dns`` for ``dns.log``, ``dns.json.gz``, ``dns.09:00:00-10:00:00.log``."""
    stem = path.name.split(".", 1)[0]
    return stem or None


class ZeekParser:
    """Zeek logs (JSON lines, or TSV records read from a file with its header)."""

    name: ClassVar[str] = "zeek"

    def parse(self, raw: str | Mapping[str, Any], ctx: ParseContext) -> Event:
        obj, text = load_object(raw, "Zeek")
        fields = flatten(obj)
        if "ts" not in fields and "_write_ts" in fields:
            fields["ts"] = fields["_write_ts"]
        if "ts" not in fields:
            raise ParseError(
                "ts is missing",
                field="ts",
                hint="Zeek writes ts on every record; is this a Zeek log?",
            )
        if not isinstance(fields.get("_path"), str):
            guessed = log_path(fields)
            if guessed is not None:
                fields["_path"] = guessed
        return Event(
            event_id=content_id(text),
            observed_at=parse_time(fields["ts"], "ts", ctx.device_tz),
            source_format=FORMAT,
            fields=fields,
            host=internal_host(fields.get("id.orig_h"), fields.get("id.resp_h")),
            raw=text,
        )

    def sniff(self, path: Path, head: bytes) -> bool:
        """A TSV header, or a JSON line with ``ts`` and ``uid``/``id.orig_h`` (also gzip)."""
        if head[:2] == b"\x1f\x8b":
            try:
                with gzip.open(path, "rb") as stream:
                    head = stream.read(4096)
            except (OSError, EOFError):
                return False
        line = first_line(head)
        if line.startswith("#separator"):
            return True
        if not line.startswith("{"):
            return False
        if '"_path"' in line or ('"ts"' in line and ('"uid' in line or '"id.orig_h"' in line)):
            return True
        zeek_name = path.suffix in (".log", ".gz") and path_from_name(path) in _KNOWN
        return zeek_name and '"ts"' in line

    def read_file(self, path: Path) -> Iterator[RawRecord]:
        default_path = path_from_name(path)
        with _open_text(path) as stream:
            header: dict[str, str] = {}
            names: list[str] = []
            types: list[str] = []
            for number, line in enumerate(stream, start=1):
                text = line.rstrip("\r\n")
                where = f"{path}:{number}"
                if not text.strip():
                    continue
                if text.lstrip().startswith("#"):
                    text = text.lstrip()
                    key, value = _header_line(text, header)
                    if key == "fields":
                        names = value.split(header.get("separator", "\t"))
                    elif key == "types":
                        types = value.split(header.get("separator", "\t"))
                    continue
                if names:
                    record = _tsv_record(text, names, types, header)
                    record.setdefault("_path", header.get("path") or default_path)
                    yield RawRecord(format=self.name, raw=record, location=where)
                else:
                    yield RawRecord(
                        format=self.name, raw=_json_record(text, default_path), location=where
                    )


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="")
    return path.open(encoding="utf-8", errors="replace", newline="")


def _json_record(text: str, default_path: str | None) -> str | dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text  # parse() reports it with the location
    if not isinstance(value, dict):
        return text
    if default_path and "_path" not in value:
        value["_path"] = default_path
    return value


def _header_line(text: str, header: dict[str, str]) -> tuple[str, str]:
    if text.startswith("#separator"):
        raw = text[len("#separator") :].strip()
        header["separator"] = _unescape(raw)
        return "separator", header["separator"]
    separator = header.get("separator", "\t")
    key, _, value = text[1:].partition(separator)
    header[key] = value
    return key, value


def _tsv_record(
    text: str, names: list[str], types: list[str], header: Mapping[str, str]
) -> dict[str, Any]:
    values = text.split(header.get("separator", "\t"))
    unset = header.get("unset_field", "-")
    empty = header.get("empty_field", "(empty)")
    set_separator = header.get("set_separator", ",")
    record: dict[str, Any] = {}
    for position, name in enumerate(names):
        if position >= len(values):
            break
        value = values[position]
        if value == unset:
            continue
        kind = types[position] if position < len(types) else "string"
        container = kind.startswith(("set[", "vector["))
        if value == empty:
            record[name] = [] if container else ""
        elif container:
            inner = kind[kind.index("[") + 1 : -1]
            record[name] = [_typed(v, inner) for v in value.split(set_separator)]
        else:
            record[name] = _typed(value, kind)
    return record


def _typed(value: str, kind: str) -> Any:
    try:
        if kind in ("count", "int", "port"):
            return int(value)
        if kind in ("double", "interval", "time"):
            return float(value)
    except ValueError:
        return value
    if kind == "bool":
        return value == "T"
    return _unescape(value)


def _unescape(value: str) -> str:
    """Zeek writes separators and non-printable bytes as ``\\xHH``."""
    if "\\x" not in value:
        return value
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value)


register_parser(ZeekParser())
