"""ログソース対応付け (log source mapping): which Sigma rules may see a non-Windows event.

A Sigma rule names a log source (``product``/``category``/``service``); an event from a
network sensor or a Linux host is tagged here with the log sources it belongs to, and the
rule set evaluates on it only the non-Windows rules whose log source it covers — never a
Windows rule. Each tag comes with field aliases: the Sigma taxonomy's names added beside
the source's own (Suricata ``dns.rrname`` is also ``query``; Zeek ``http`` ``uri`` is also
``c-uri``), so that a rule about DNS queries fires on a Zeek ``dns.log`` and on a Suricata
``dns`` event alike. The source's own names stay, for rules written for that product.

=============================  ====================================  ========================
source                         log sources (product, category, svc)  aliases added
=============================  ====================================  ========================
Zeek ``dns.log``               (zeek, dns, dns)                      answer, record_type
Zeek ``conn.log``              (zeek, firewall, conn)                src_ip, dst_ip, …_port
Zeek ``http.log``              (zeek, proxy, http)                   c-uri, cs-host, …
Zeek any other ``<path>.log``  (zeek, –, <path>)                     –
Suricata ``dns``               (suricata, dns, –)                    query, answer, record_type
Suricata ``http``              (suricata, proxy, –)                  c-uri, cs-host, …
Suricata ``flow``/``netflow``  (suricata, firewall, –)               dst_ip, dst_port
FortiGate ``traffic``          (fortinet, firewall, –)               src_ip, dst_ip, …
PAN-OS ``TRAFFIC``             (paloalto, firewall, –)               src_ip, dst_ip, …_port
Cisco ASA connection messages  (cisco, firewall, asa)                (already Sigma names)
SonicWall with addresses       (sonicwall, firewall, –)              (already Sigma names)
Sophos XG ``Firewall``         (sophos, firewall, –)                 (already Sigma names)
pfSense/OPNsense filterlog     (pfsense, firewall, filterlog)        (already Sigma names)
iptables / firewalld           (linux, firewall, iptables)           src_ip, dst_ip, …_port
auditd                         (linux, –, auditd)                    –
sshd                           (linux, –, sshd) and (linux, –, auth) –
other syslog (Linux hosts)     (linux, –, syslog) and (linux, –,     –
                               <program>) for cron, sudo, vsftpd,
                               clamav, guacamole
=============================  ====================================  ========================

Every firewall source also gets ``blocked`` (``"true"``/``"false"``) from its own verdict
(``action``, Sophos ``status``): Sigma's generic firewall rules ask for it where vendors'
words differ (``allow``, ``pass``, ``accept``, ``built`` … against ``deny``, ``drop`` …).

Linux rules written for ``product: linux`` with no service are mostly keyword searches
(``keywords:`` over every value): they see sshd and plain syslog lines, never a UTM's
lines, whose formats have parsers of their own above.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from otasuke.ingest.event import Event, SourceFormat


@dataclass(frozen=True, slots=True)
class LogSource:
    """A Sigma ``logsource`` (lowercased; None: not stated)."""

    product: str | None = None
    category: str | None = None
    service: str | None = None

    def accepts(self, event_source: LogSource) -> bool:
        """Whether a rule with this log source may be evaluated on events of ``event_source``."""
        return (
            (self.product is None or self.product == event_source.product)
            and (self.category is None or self.category == event_source.category)
            and (self.service is None or self.service == event_source.service)
        )


EventSources = tuple[LogSource, ...]

_ZEEK_CATEGORY = {"dns": "dns", "conn": "firewall", "http": "proxy"}
_ZEEK_DNS = {"answer": "answers", "record_type": "qtype_name"}
_ZEEK_CONN = {
    "src_ip": "id.orig_h",
    "src_port": "id.orig_p",
    "dst_ip": "id.resp_h",
    "dst_port": "id.resp_p",
}
_ZEEK_HTTP = {
    "c-uri": "uri",
    "cs-uri": "uri",
    "cs-host": "host",
    "r-dns": "host",
    "c-useragent": "user_agent",
    "cs-method": "method",
    "sc-status": "status_code",
    "cs-referrer": "referrer",
    "dst_ip": "id.resp_h",
    "src_ip": "id.orig_h",
}
_SURICATA_DNS = {
    "query": ("dns.rrname", "dns.queries.rrname"),
    "answer": ("dns.answers.rdata", "dns.rdata"),
    "record_type": ("dns.rrtype", "dns.queries.rrtype"),
}
_SURICATA_HTTP = {
    "c-uri": ("http.url",),
    "cs-uri": ("http.url",),
    "cs-host": ("http.hostname",),
    "r-dns": ("http.hostname",),
    "c-useragent": ("http.http_user_agent",),
    "cs-method": ("http.http_method",),
    "sc-status": ("http.status",),
    "cs-referrer": ("http.http_refer",),
    "dst_ip": ("dest_ip",),
}
_SURICATA_FLOW = {"dst_ip": ("dest_ip",), "dst_port": ("dest_port",)}
_FORTIGATE = {
    "src_ip": ("srcip",),
    "dst_ip": ("dstip",),
    "src_port": ("srcport",),
    "dst_port": ("dstport",),
}
_PALOALTO = {
    "src_ip": ("src",),
    "dst_ip": ("dst",),
    "src_port": ("sport",),
    "dst_port": ("dport",),
}
_IPTABLES = {
    "src_ip": ("SRC",),
    "dst_ip": ("DST",),
    "src_port": ("SPT",),
    "dst_port": ("DPT",),
}
_FIREWALL_PRODUCTS = {
    SourceFormat.CISCO_ASA: LogSource("cisco", "firewall", "asa"),
    SourceFormat.SONICWALL: LogSource("sonicwall", "firewall"),
    SourceFormat.FILTERLOG: LogSource("pfsense", "firewall", "filterlog"),
}
"""Parsers that already name addresses and ports as Sigma does: firewall when they have them."""
_SYSLOG_PROGRAMS = {
    "cron": "cron",
    "crond": "cron",
    "crontab": "cron",
    "sudo": "sudo",
    "vsftpd": "vsftpd",
    "clamd": "clamav",
    "freshclam": "clamav",
    "clamav": "clamav",
    "guacd": "guacamole",
    "guacamole": "guacamole",
}
"""Syslog program names → the Sigma ``service`` of Linux rules written for them."""


_ALLOWED = frozenset(
    {"allow", "allowed", "accept", "accepted", "pass", "permit", "permitted", "built", "forward"}
    | {"close", "timeout", "client-rst", "server-rst"}  # FortiGate: a session that was let through
)
_BLOCKED = frozenset(
    {"deny", "denied", "drop", "dropped", "block", "blocked", "reject", "rejected"}
    | {"reset-both", "reset-client", "reset-server"}
)


def _firewall(
    fields: Mapping[str, Any], table: Mapping[str, tuple[str, ...]] | None = None
) -> dict[str, Any]:
    """A firewall record's fields with Sigma's names and ``blocked`` from its verdict."""
    out = _aliased(fields, table or {})
    if "blocked" not in out:
        verdict = out.get("action") or out.get("status")
        word = verdict.lower() if isinstance(verdict, str) else None
        if word in _ALLOWED:
            out["blocked"] = "false"
        elif word in _BLOCKED:
            out["blocked"] = "true"
    return out


def is_zeek(event: Event) -> bool:
    """A Zeek record (its own format, or JSON lines carrying Zeek's ``_path`` and ``ts``)."""
    if event.source_format is SourceFormat.ZEEK:
        return True
    fields = event.fields
    return event.source_format is SourceFormat.JSONL and "_path" in fields and "ts" in fields


def is_auditd(event: Event) -> bool:
    """An auditd record (its own format, or one carrying ``msg=audit(…)``)."""
    if event.source_format is SourceFormat.AUDITD:
        return True
    msg = event.fields.get("msg")
    return (
        event.source_format is SourceFormat.JSONL
        and isinstance(msg, str)
        and msg.startswith("audit(")
    )


def sigma_event(event: Event) -> tuple[EventSources, Mapping[str, Any]]:
    """The log sources of a non-Windows event and its fields with Sigma aliases added.

    No log source (an empty tuple): no Sigma rule is evaluated on the event.
    """
    fields = event.fields
    fmt = event.source_format
    if fmt is SourceFormat.SURICATA_EVE:
        return _suricata(fields)
    if fmt is SourceFormat.FORTIGATE:
        if fields.get("type") == "traffic":
            return (LogSource("fortinet", "firewall"),), _firewall(fields, _FORTIGATE)
        return (), fields
    if is_zeek(event):
        return _zeek(fields)
    if is_auditd(event):
        return (LogSource("linux", None, "auditd"),), fields
    if fmt in _FIREWALL_PRODUCTS:
        if "dst_ip" in fields or "dst_port" in fields:
            return (_FIREWALL_PRODUCTS[fmt],), _firewall(fields)
        return (), fields
    if fmt is SourceFormat.PALOALTO:
        if fields.get("type") == "TRAFFIC":
            return (LogSource("paloalto", "firewall"),), _firewall(fields, _PALOALTO)
        return (), fields
    if fmt is SourceFormat.SOPHOS:
        if fields.get("log_type") == "Firewall":
            return (LogSource("sophos", "firewall"),), _firewall(fields)
        return (), fields
    if fmt is SourceFormat.IPTABLES:
        return (LogSource("linux", "firewall", "iptables"),), _firewall(fields, _IPTABLES)
    if fmt is SourceFormat.SSHD:
        return (LogSource("linux", None, "sshd"), LogSource("linux", None, "auth")), fields
    if fmt is SourceFormat.SYSLOG:
        return _linux_syslog(fields), fields
    return (), fields


def _linux_syslog(fields: Mapping[str, Any]) -> EventSources:
    """A plain syslog line: Linux ``syslog``, and the program's own service where known."""
    program = fields.get("app")
    service = _SYSLOG_PROGRAMS.get(program.lower()) if isinstance(program, str) else None
    if service is None:
        return (LogSource("linux", None, "syslog"),)
    return (LogSource("linux", None, "syslog"), LogSource("linux", None, service))


def _zeek(fields: Mapping[str, Any]) -> tuple[EventSources, Mapping[str, Any]]:
    path = fields.get("_path")
    if not isinstance(path, str) or not path:
        return (), fields
    service = path.lower()
    source = LogSource("zeek", _ZEEK_CATEGORY.get(service), service)
    table = {"dns": _ZEEK_DNS, "conn": _ZEEK_CONN, "http": _ZEEK_HTTP}.get(service)
    if table is None:
        return (source,), fields
    return (source,), _aliased(fields, {k: (v,) for k, v in table.items()})


def _suricata(fields: Mapping[str, Any]) -> tuple[EventSources, Mapping[str, Any]]:
    kind = fields.get("event_type")
    if kind == "dns":
        return (LogSource("suricata", "dns"),), _aliased(fields, _SURICATA_DNS)
    if kind == "http":
        return (LogSource("suricata", "proxy"),), _aliased(fields, _SURICATA_HTTP)
    if kind in ("flow", "netflow"):
        return (LogSource("suricata", "firewall"),), _firewall(fields, _SURICATA_FLOW)
    return (), fields


def _aliased(fields: Mapping[str, Any], table: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
    """``fields`` plus each Sigma name of ``table`` not already there (first source found)."""
    out = dict(fields)
    for sigma_name, sources in table.items():
        if sigma_name in out:
            continue
        for source in sources:
            if source in fields:
                out[sigma_name] = fields[source]
                break
    return out
