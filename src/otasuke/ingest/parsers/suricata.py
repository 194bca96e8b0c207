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

import ipaddress
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from otasuke.errors import ParseError
from otasuke.ingest.event import Event, SourceFormat, content_id
from otasuke.ingest.parsers import ParseContext, RawRecord, register_parser
from otasuke.ingest.parsers.jsonl import first_line, flatten, load_object, parse_time, read_lines

INTERNAL_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    )
)
"""社内ネットワーク: RFC 1918, loopback, link-local and IPv6 unique-local ranges."""


def is_internal(address: Any) -> bool:
    """True for an address in INTERNAL_NETWORKS."""
    if not isinstance(address, str):
        return False
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in net for net in INTERNAL_NETWORKS)


def internal_host(src: Any, dest: Any) -> str | None:
    """The PC side of a flow: private src, else private dest, else dest."""
    for candidate in (src, dest):
        if is_internal(candidate):
            return str(candidate)
    if isinstance(dest, str) and dest:
        return dest
    return src if isinstance(src, str) and src else None


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
