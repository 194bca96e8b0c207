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
"""

from __future__ import annotations

from collections.abc import Mapping
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
    return []


def is_blocked(event: Event) -> bool:
    """The device says it blocked, dropped or reset this traffic."""
    fields = event.fields
    if event.source_format is SourceFormat.SURICATA_EVE:
        return fields.get("event_type") == "drop" or fields.get("alert.action") == "blocked"
    if event.source_format is SourceFormat.FORTIGATE:
        return _fortigate_blocked(fields)
    return False


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
