"""Suricata EVE JSON parser (IDS ログ): one EVE object per line, every event type.

``fields`` is the EVE object flattened with dotted keys as Suricata names them
(``event_type``, ``src_ip``, ``dest_port``, ``alert.signature``, ``dns.rrname``,
``http.hostname``, ``tls.sni`` …); lists of objects become one list per key
(``dns.answers.rdata``).

``observed_at`` is ``timestamp`` (``2021-06-06T15:59:46.457984+0200``); a timestamp
without an offset is read in the sensor's ``device_tz``.

``host`` is the internal side of the flow (社内端末): the private-range address
among ``src_ip``/``dest_ip``. When both are private it is ``src_ip`` (the client that
opened the flow: the PC querying DNS, scanning or beaconing); when neither is, it is
``dest_ip``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from otasuke.errors import ParseError
from otasuke.ingest.event import Event, SourceFormat, content_id
from otasuke.ingest.netaddr import internal_host
from otasuke.ingest.parsers import ParseContext, RawRecord, register_parser
from otasuke.ingest.parsers.jsonl import first_line, flatten, load_object, parse_time, read_lines


class SuricataEveParser:
    """Suricata EVE JSON (alert, flow, dns, http, tls, fileinfo, anomaly …)."""

    name: ClassVar[str] = "suricata_eve"

    def parse(self, raw: str | Mapping[str, Any], ctx: ParseContext) -> Event:
        obj, text = load_object(raw, "Suricata EVE")
        event_type = obj.get("event_type")
        if not isinstance(event_type, str) or not event_type:
            raise ParseError(
                "event_type is missing or not text",
                field="event_type",
                hint="is this Suricata EVE JSON? use format 'jsonl' for other JSON logs",
            )
        if "timestamp" not in obj:
            raise ParseError(
                "timestamp is missing",
                field="timestamp",
                hint="Suricata writes it on every EVE record; check the eve-log output",
            )
        observed_at = parse_time(obj["timestamp"], "timestamp", ctx.device_tz)
        fields = flatten(obj)
        return Event(
            event_id=content_id(text),
            observed_at=observed_at,
            source_format=SourceFormat.SURICATA_EVE,
            fields=fields,
            host=internal_host(fields.get("src_ip"), fields.get("dest_ip")),
            raw=text,
        )

    def sniff(self, path: Path, head: bytes) -> bool:
        """A first line that is a JSON object with ``event_type`` and ``timestamp``."""
        line = first_line(head)
        return line.startswith("{") and '"event_type"' in line and '"timestamp"' in line

    def read_file(self, path: Path) -> Iterator[RawRecord]:
        return read_lines(path, self.name)


register_parser(SuricataEveParser())
