"""Demo replay: which samples go to which customer's sensor, and UTM lines stamped now.

The FortiGate lines are sent as ingest envelopes through
:func:`otasuke.ingest.store.accept_lines`, the function behind
``POST /api/v1/ingest``; they carry fixed event ids so a second run stores
nothing twice. They are stamped a few minutes before the replay (in JST, as a
Japanese UTM logs), so the console shows a live SLA countdown.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson

DATA = Path(__file__).parent / "data"

DEMO_FILES: tuple[tuple[str, str, tuple[Path, ...]], ...] = (
    ("tokai-parts", "windows", (DATA / "evtx" / "tokai-mimikatz-lsass-dump.evtx",)),
    ("tokai-parts", "suricata", (DATA / "suricata" / "tokai-ids-eve.json",)),
    ("sakura-clinic", "windows", (DATA / "evtx" / "sakura-defender-threat-detected.evtx",)),
    ("yamada-office", "windows", (DATA / "evtx" / "yamada-failed-logons.evtx",)),
)
"""(customer slug, sensor kind, files)."""

UTM_LINES: tuple[tuple[str, str, int, str], ...] = (
    # (customer slug, event id, minutes before now, FortiGate line without date/time)
    (
        "tokai-parts",
        "demo-tokai-utm-1",
        12,
        'devname="FG60F-TOKAI" devid="FGT60FTK00000001" logid="0000000013" type="traffic" '
        'subtype="forward" level="notice" vd="root" srcip=192.168.10.23 srcport=51544 '
        'srcintf="internal" srcintfrole="lan" dstip=66.210.228.178 dstport=443 dstintf="wan1" '
        'dstintfrole="wan" sessionid=88123 proto=6 action="accept" policyid=1 service="HTTPS" '
        'srcname="SEIZO-PC07" sentbyte=4821 rcvdbyte=1632',
    ),
    (
        "tokai-parts",
        "demo-tokai-utm-2",
        30,
        'devname="FG60F-TOKAI" devid="FGT60FTK00000001" logid="0419016384" type="utm" '
        'subtype="ips" eventtype="signature" level="alert" vd="root" severity="high" '
        'srcip=203.0.113.45 dstip=192.168.10.2 srcintf="wan1" dstintf="internal" sessionid=87001 '
        'action="dropped" proto=6 service="RDP" attack="MS.RDP.Connection.Brute.Force" '
        'srcport=49822 dstport=3389 direction="incoming" attackid=43181 '
        'msg="applications3: MS.RDP.Connection.Brute.Force," crlevel="high"',
    ),
    (
        "sakura-clinic",
        "demo-sakura-utm-1",
        45,
        'devname="FG40F-SAKURA" devid="FGT40FSK00000001" logid="0211008192" type="utm" '
        'subtype="virus" eventtype="infected" level="warning" vd="root" srcip=198.51.100.77 '
        'dstip=192.168.1.15 srcintf="wan1" dstintf="lan" sessionid=5511 proto=6 action="blocked" '
        'service="SMTP" virus="W32/Emotet.A!tr" dtype="Virus" filename="請求書_1124.doc" '
        'direction="incoming" msg="File is infected." crlevel="critical"',
    ),
)


def utm_envelopes(customer: str, now: datetime) -> list[bytes]:
    """The demo FortiGate lines for one customer as NDJSON ingest envelopes."""
    jst = ZoneInfo("Asia/Tokyo")
    out = []
    for slug, event_id, minutes, body in UTM_LINES:
        if slug != customer:
            continue
        t = (now - timedelta(minutes=minutes)).astimezone(jst)
        line = f"date={t:%Y-%m-%d} time={t:%H:%M:%S} {body}"
        out.append(orjson.dumps({"format": "fortigate", "raw": line, "event_id": event_id}))
    return out
