"""機器アラートの取込み (device alerts passed through): what the IDS/UTM already flagged.

A Suricata ``alert`` and a FortiGate security-profile log (IPS, アンチウイルス,
Web フィルタ, アノマリ, アプリケーション制御, DLP) become a :class:`Detection` as
the device reported it; every other event gives none.

===========  =============================  ======================================
Detection    Suricata EVE (event_type        FortiGate (type=utm + subtype, or the
field        ``alert``)                      older type=ips/virus/webfilter/
                                             anomaly/app-ctrl/dlp)
===========  =============================  ======================================
source       SURICATA                       FORTIGATE
rule_id      ``alert.signature_id``         ``attackid`` / ``virus`` / ``appid`` /
                                            web-filter ``cat`` … (first present)
title        ``alert.signature``            ``attack`` / ``virus`` / ``app`` /
                                            ``msg`` (first present)
level        ``alert.severity`` 1 high,     ``crlevel`` else ``severity``:
             2 medium, 3 low, 4+            critical, high, medium, low,
             informational, absent medium   info(rmation) → informational; absent:
                                            by subtype (virus high, ips/anomaly/dlp
                                            medium, webfilter medium, app-ctrl low)
blocked      ``alert.action`` == blocked    ``action`` in BLOCKING_ACTIONS (blocked,
             (or event_type ``drop``)       block, dropped, reset, deny,
                                            clear_session …)
matched      src/dest ip and port, proto,   srcip/srcport/dstip/dstport, the
             signature, action, category    attack/virus/app/url, action, category
===========  =============================  ======================================

Web filter and application-control logs that merely record allowed traffic
(action pass/passthrough/allow/accept at level information/notice) are not
alerts and give no detection.

The other UTMs' own alerts (source DEVICE; ``rule_id`` and ``title`` as below,
``blocked`` when the action says deny/drop/reset/block, ``matched`` the device's
address, port, action and signature fields):

==========  ===================================  ===================  ===============
format      alert when                           rule_id / title      level
==========  ===================================  ===================  ===============
cef         Fortinet: name ``utm:<subtype>`` as  signature_id / name  severity 0-3 low,
            FortiGate above; others: severity                         4-6 medium, 7-8
            4 (Medium) or more                                        high, 9-10
                                                                      critical
paloalto    type THREAT (url: only when the      threatid / threatid  ``severity``
            action blocks or severity > info)
cisco_asa   message 733100 (threat detection),   message_id /         4000xx, 3380xx
            4000xx (IPS signatures), 338001-     message              high; 733100
            338004/338008 (botnet filter)                             medium
sonicwall   ``ipscat`` present, or ``msg`` says  m / msg              ``ipspri`` 1
            Alert / Virus / Spyware / Botnet                          high, 2 medium,
                                                                      3 low; else
                                                                      medium
sophos      SFOS log_type IDP / Anti-Virus /     log_id / message or  medium (AV/ATP
            ATP / Sandbox; UTM sub ips / virus   name                 high)
            / atp
==========  ===================================  ===================  ===============

``is_blocked`` also knows iptables (``action`` block), filterlog (block/reject),
Cisco ASA (``action`` deny), PAN-OS, SonicWall, Sophos and CEF actions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from otasuke.detect.detection import Detection, DetectionSource
from otasuke.ingest.event import Event, SourceFormat

SURICATA_LEVELS = {1: "high", 2: "medium", 3: "low"}
FORTIGATE_LEVELS = {
    "critical": "critical",
    "high": "high",
    "medium": "medium",
    "low": "low",
    "info": "informational",
    "information": "informational",
    "informational": "informational",
}
FORTIGATE_DEFAULT_LEVELS = {
    "virus": "high",
    "ips": "medium",
    "anomaly": "medium",
    "dlp": "medium",
    "webfilter": "medium",
    "app-ctrl": "low",
}
FORTIGATE_ALERT_TYPES = frozenset(FORTIGATE_DEFAULT_LEVELS)
BLOCKING_ACTIONS = frozenset(
    {
        "blocked",
        "block",
        "dropped",
        "drop",
        "drop_session",
        "reset",
        "reset_client",
        "reset_server",
        "deny",
        "denied",
        "clear_session",
        "ban",
        "ban-ip",
        "quarantine",
        "quarantine-ip",
        "quarantine-interface",
        *("block", "reject", "reset-both", "reset-client", "reset-server", "block-url"),
        *("block-ip", "block-continue", "sinkhole", "drop-icmp", "drop-all-packets"),
    }
)
"""FortiGate ``action``/``status`` values meaning the UTM stopped it (防御済み)."""
SURICATA_MATCHED = (
    *("src_ip", "src_port", "dest_ip", "dest_port", "proto"),
    *("alert.signature", "alert.signature_id", "alert.action", "alert.category"),
)
FORTIGATE_MATCHED = (
    *("srcip", "srcport", "dstip", "dstport", "service", "attack", "virus", "app"),
    *("hostname", "url", "action", "catdesc", "appcat", "dtype"),
)
ALLOWING_ACTIONS = frozenset({"pass", "passthrough", "allow", "accept", "permit", "exempt"})
QUIET_LEVELS = frozenset({"information", "notice", "debug"})


def device_detections(event: Event) -> list[Detection]:
    """The device's own alert in this event, or [] when it is not one."""
    if event.source_format is SourceFormat.SURICATA_EVE:
        return _suricata(event.fields)
    if event.source_format is SourceFormat.FORTIGATE:
        return _fortigate(event.fields)
    handler = OTHER_DEVICES.get(event.source_format)
    return handler(event.fields) if handler is not None else []


def is_blocked(event: Event) -> bool:
    """The device says it blocked, dropped or reset this traffic."""
    fields = event.fields
    if event.source_format is SourceFormat.SURICATA_EVE:
        return fields.get("event_type") == "drop" or fields.get("alert.action") == "blocked"
    if event.source_format is SourceFormat.FORTIGATE:
        return _fortigate_blocked(fields)
    keys = ACTION_KEYS.get(event.source_format, ())
    return any(_text(fields.get(key)).lower() in BLOCKING_ACTIONS for key in keys)


def _fortigate_blocked(fields: Mapping[str, Any]) -> bool:
    """``action`` (FortiOS 4+) or ``status`` (FortiOS 3) says the UTM stopped it."""
    return any(_text(fields.get(key)).lower() in BLOCKING_ACTIONS for key in ("action", "status"))


def _suricata(fields: Mapping[str, Any]) -> list[Detection]:
    if fields.get("event_type") != "alert":
        return []
    signature = _text(fields.get("alert.signature")) or "Suricata alert"
    severity = fields.get("alert.severity")
    if isinstance(severity, int) and not isinstance(severity, bool):
        level = SURICATA_LEVELS.get(severity, "informational" if severity > 3 else "high")
    else:
        level = "medium"
    action = _text(fields.get("alert.action"))
    blocked = action == "blocked"
    matched = {key: fields[key] for key in SURICATA_MATCHED if fields.get(key) not in (None, "")}
    category = _text(fields.get("alert.category"))
    description = (
        f"Suricata raised '{signature}'"
        + (f" ({category})" if category else "")
        + f" for traffic from {_endpoint(fields, 'src_ip', 'src_port')}"
        + f" to {_endpoint(fields, 'dest_ip', 'dest_port')}"
        + ("; the sensor blocked it." if blocked else "; the sensor let it through.")
    )
    return [
        Detection(
            source=DetectionSource.SURICATA,
            rule_id=_text(fields.get("alert.signature_id")) or signature,
            title=signature,
            level=level,
            blocked=blocked,
            description=description,
            tags=_mitre_tags(fields),
            matched=matched,
        )
    ]


def _fortigate(fields: Mapping[str, Any]) -> list[Detection]:
    kind = _fortigate_kind(fields)
    if kind is None:
        return []
    action = _text(fields.get("action")).lower()
    level_text = _text(fields.get("level")).lower()
    allowed = kind in ("webfilter", "app-ctrl") and action in ALLOWING_ACTIONS
    if allowed and (level_text in QUIET_LEVELS or not level_text):
        return []
    title = _first(fields, "attack", "virus", "app", "msg") or f"FortiGate {kind} event"
    rule_id = _first(fields, "attackid", "virus", "virusid", "appid", "cat", "eventtype", "logid")
    severity = _first(fields, "crlevel", "severity").lower()
    level = FORTIGATE_LEVELS.get(severity, FORTIGATE_DEFAULT_LEVELS[kind])
    blocked = _fortigate_blocked(fields)
    matched = {key: fields[key] for key in FORTIGATE_MATCHED if fields.get(key) not in (None, "")}
    description = (
        f"FortiGate {kind} reported '{title}' for traffic from "
        f"{_endpoint(fields, 'srcip', 'srcport')} to {_endpoint(fields, 'dstip', 'dstport')}"
        + (f"; the UTM took action '{action}'." if action else ".")
    )
    return [
        Detection(
            source=DetectionSource.FORTIGATE,
            rule_id=rule_id or kind,
            title=title,
            level=level,
            blocked=blocked,
            description=description,
            references=(_text(fields["ref"]),) if _text(fields.get("ref")) else (),
            matched=matched,
        )
    ]


def _fortigate_kind(fields: Mapping[str, Any]) -> str | None:
    """ips/virus/webfilter/anomaly/app-ctrl/dlp, from type=utm+subtype or the old type."""
    log_type = _text(fields.get("type")).lower()
    kind = _text(fields.get("subtype")).lower() if log_type == "utm" else log_type
    if kind == "antivirus":
        kind = "virus"
    return kind if kind in FORTIGATE_ALERT_TYPES else None


def _mitre_tags(fields: Mapping[str, Any]) -> tuple[str, ...]:
    tags: list[str] = []
    for key in ("alert.metadata.mitre_tactic_id", "alert.metadata.mitre_technique_id"):
        values = fields.get(key)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str) and value:
                tags.append(f"attack.{value.lower()}")
    return tuple(tags)


def _first(fields: Mapping[str, Any], *keys: str) -> str:
    for key in keys:
        text = _text(fields.get(key))
        if text and text.upper() != "N/A":
            return text
    return ""


def _endpoint(fields: Mapping[str, Any], ip_key: str, port_key: str) -> str:
    ip = _text(fields.get(ip_key)) or "?"
    port = _text(fields.get(port_key))
    return f"{ip}:{port}" if port else ip


def _text(value: Any) -> str:
    if value is None or isinstance(value, list | dict):
        return ""
    return str(value).strip()


# --- other UTMs (CEF, PAN-OS, Cisco ASA, SonicWall, Sophos) --------------------------

CEF_LEVELS = {"low": "low", "medium": "medium", "high": "high", "very-high": "critical"}
PAN_ALWAYS = frozenset({"virus", "wildfire-virus", "spyware", "vulnerability", "flood", "scan"})
ASA_ALERTS = {"733100": "medium", "338001": "high", "338002": "high", "338003": "high"}
ASA_ALERTS |= {"338004": "high", "338008": "high"}
SONICWALL_ALERT = re.compile(r"Alert|Virus|Spyware|Botnet|Malware|Intrusion", re.IGNORECASE)
SOPHOS_ALERT_TYPES = frozenset(
    {"idp", "anti-virus", "atp", "sandbox", "advanced threat protection"}
)
SOPHOS_UTM_ALERTS = frozenset({"ips", "virus", "atp", "av"})
DEVICE_MATCHED = (
    *("src", "dst", "spt", "dpt", "act", "sport", "dport", "action", "threatid", "misc"),
    *("src_ip", "dst_ip", "src_port", "dst_port", "srcip", "dstip", "srcport", "dstport"),
    *("message_id", "msg", "name", "status", "ipscat", "category", "log_type", "signature_id"),
)
ACTION_KEYS: dict[SourceFormat, tuple[str, ...]] = {
    SourceFormat.CEF: ("act",),
    SourceFormat.PALOALTO: ("action",),
    SourceFormat.CISCO_ASA: ("action",),
    SourceFormat.SONICWALL: ("fw_action",),
    SourceFormat.SOPHOS: ("status", "action"),
    SourceFormat.FILTERLOG: ("action",),
    SourceFormat.IPTABLES: ("action",),
}
"""Fields whose value in BLOCKING_ACTIONS means the device stopped the traffic."""


def _device(
    fields: Mapping[str, Any], fmt: SourceFormat, rule_id: str, title: str, level: str
) -> list[Detection]:
    keys = ACTION_KEYS.get(fmt, ())
    blocked = any(_text(fields.get(key)).lower() in BLOCKING_ACTIONS for key in keys)
    if fmt is SourceFormat.SONICWALL and "prevent" in _text(fields.get("msg")).lower():
        blocked = True
    matched = {key: fields[key] for key in DEVICE_MATCHED if fields.get(key) not in (None, "")}
    description = f"{fmt.value} reported '{title}'" + (
        "; the device blocked it." if blocked else "."
    )
    return [
        Detection(
            source=DetectionSource.DEVICE,
            rule_id=rule_id or title,
            title=title,
            level=level,
            blocked=blocked,
            description=description,
            matched=matched,
        )
    ]


def _cef(fields: Mapping[str, Any]) -> list[Detection]:
    title = _first(fields, "name", "signature_id") or "CEF event"
    if _text(fields.get("device_vendor")).lower() == "fortinet":
        log_type, _, subtype = title.partition(":")
        kind = _fortigate_kind({"type": log_type, "subtype": subtype.split(" ")[0]})
        if kind is None:
            return []
        level = FORTIGATE_DEFAULT_LEVELS[kind]
        title = _first(fields, "FTNTFGTattack", "FTNTFGTvirus", "FTNTFGTapp", "msg") or title
        return _device(fields, SourceFormat.CEF, _text(fields.get("signature_id")), title, level)
    severity = _text(fields.get("severity")).lower()
    if severity.isdigit():
        number = int(severity)
        if number < 4:
            return []
        level = "medium" if number < 7 else "high" if number < 9 else "critical"
    elif severity in ("medium", "high", "very-high"):
        level = CEF_LEVELS[severity]
    else:
        return []
    return _device(fields, SourceFormat.CEF, _text(fields.get("signature_id")), title, level)


def _paloalto(fields: Mapping[str, Any]) -> list[Detection]:
    if _text(fields.get("type")) != "THREAT":
        return []
    subtype = _text(fields.get("subtype")).lower()
    severity = _text(fields.get("severity")).lower()
    blocked = _text(fields.get("action")).lower() in BLOCKING_ACTIONS
    if subtype not in PAN_ALWAYS and not blocked and severity in ("", "informational"):
        return []
    title = _first(fields, "threatid", "misc") or f"PAN-OS {subtype}"
    level = FORTIGATE_LEVELS.get(severity, "medium")
    return _device(fields, SourceFormat.PALOALTO, title, title, level)


def _cisco_asa(fields: Mapping[str, Any]) -> list[Detection]:
    message_id = _text(fields.get("message_id"))
    level = ASA_ALERTS.get(message_id) or ("high" if message_id.startswith("4000") else None)
    if level is None:
        return []
    title = _text(fields.get("message"))[:200] or f"ASA {message_id}"
    return _device(fields, SourceFormat.CISCO_ASA, message_id, title, level)


def _sonicwall(fields: Mapping[str, Any]) -> list[Detection]:
    msg = _text(fields.get("msg"))
    if not fields.get("ipscat") and not SONICWALL_ALERT.search(msg):
        return []
    level = {"1": "high", "2": "medium", "3": "low"}.get(_text(fields.get("ipspri")), "medium")
    title = _first(fields, "ipscat", "msg") or "SonicWall alert"
    return _device(fields, SourceFormat.SONICWALL, _text(fields.get("m")), title, level)


def _sophos(fields: Mapping[str, Any]) -> list[Detection]:
    log_type = _text(fields.get("log_type")).lower()
    sub = _text(fields.get("sub")).lower()
    if log_type not in SOPHOS_ALERT_TYPES and sub not in SOPHOS_UTM_ALERTS:
        return []
    level = (
        "high" if log_type in ("anti-virus", "atp") or sub in ("virus", "av", "atp") else "medium"
    )
    title = _first(fields, "message", "name", "log_subtype") or f"Sophos {log_type or sub}"
    rule_id = _first(fields, "log_id", "id")
    return _device(fields, SourceFormat.SOPHOS, rule_id, title, level)


OTHER_DEVICES: dict[SourceFormat, Callable[[Mapping[str, Any]], list[Detection]]] = {
    SourceFormat.CEF: _cef,
    SourceFormat.PALOALTO: _paloalto,
    SourceFormat.CISCO_ASA: _cisco_asa,
    SourceFormat.SONICWALL: _sonicwall,
    SourceFormat.SOPHOS: _sophos,
}
