"""機器アラートの取込み: Suricata and FortiGate alerts become Detections as they are."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from otasuke.detect.detection import DetectionSource
from otasuke.detect.device import device_detections
from otasuke.ingest.event import Event
from otasuke.ingest.parsers import ParseContext
from otasuke.ingest.parsers.fortigate import FortiGateParser
from otasuke.ingest.parsers.suricata import SuricataEveParser

CTX = ParseContext(sensor="test")
FORTIGATE = FortiGateParser()
SURICATA = SuricataEveParser()
EVE_ALERT = (
    '{"timestamp":"2024-04-01T09:30:00.000000+0900","event_type":"alert","src_ip":"192.168.1.20",'
    '"src_port":50123,"dest_ip":"203.0.113.5","dest_port":443,"proto":"TCP",'
    '"alert":{"action":"blocked","gid":1,"signature_id":2027865,"rev":3,'
    '"signature":"ET MALWARE Cobalt Strike Beacon Observed","category":"A Network Trojan was'
    ' detected","severity":1,"metadata":{"mitre_technique_id":["T1071"]}}}'
)


def fortigate(line: str) -> Event:
    return FORTIGATE.parse(line, CTX)


def test_suricata_alert_passes_through() -> None:
    [found] = device_detections(SURICATA.parse(EVE_ALERT, CTX))
    assert found.source is DetectionSource.SURICATA
    assert found.rule_id == "2027865"
    assert found.title == "ET MALWARE Cobalt Strike Beacon Observed"
    assert found.level == "high"
    assert found.blocked is True
    assert found.matched["dest_ip"] == "203.0.113.5"
    assert found.matched["alert.category"] == "A Network Trojan was detected"
    assert found.tags == ("attack.t1071",)
    assert "blocked" in found.description


@pytest.mark.parametrize(("severity", "level"), [(1, "high"), (2, "medium"), (3, "low")])
def test_suricata_severity_maps_to_sigma_levels(severity: int, level: str) -> None:
    line = EVE_ALERT.replace('"severity":1', f'"severity":{severity}')
    line = line.replace('"action":"blocked"', '"action":"allowed"')
    [found] = device_detections(SURICATA.parse(line, CTX))
    assert (found.level, found.blocked) == (level, False)


def test_suricata_flow_is_not_an_alert() -> None:
    flow = '{"timestamp":"2024-04-01T09:30:00+0900","event_type":"flow","src_ip":"10.0.0.1"}'
    assert device_detections(SURICATA.parse(flow, CTX)) == []


IPS = (
    "date=2024-04-01 time=09:30:00 devname=FGT60F type=utm subtype=ips level=alert "
    "severity=critical srcip=192.168.1.20 srcport=50123 dstip=203.0.113.5 dstport=80 "
    'action=dropped attack="Apache.Log4j.Error.Log.Remote.Code.Execution" attackid=51006'
)


def test_fortigate_ips_passes_through() -> None:
    [found] = device_detections(fortigate(IPS))
    assert found.source is DetectionSource.FORTIGATE
    assert (found.rule_id, found.level, found.blocked) == ("51006", "critical", True)
    assert found.title == "Apache.Log4j.Error.Log.Remote.Code.Execution"
    assert found.matched["srcip"] == "192.168.1.20"


@pytest.mark.parametrize(
    ("severity", "level"),
    [
        ("critical", "critical"),
        ("high", "high"),
        ("medium", "medium"),
        ("low", "low"),
        ("info", "informational"),
    ],
)
def test_fortigate_severity_maps_to_sigma_levels(severity: str, level: str) -> None:
    [found] = device_detections(fortigate(IPS.replace("severity=critical", f"severity={severity}")))
    assert found.level == level


def test_fortigate_old_virus_type_and_crlevel() -> None:
    line = (
        "date=2014-01-01 time=00:00:00 devname=FG100D type=virus subtype=infected "
        "level=warning srcip=10.0.0.8 dstip=198.51.100.2 action=passthrough "
        'virus="W32/Emotet.A!tr" crlevel=high url="http://bad.example/invoice.doc"'
    )
    [found] = device_detections(fortigate(line))
    assert (found.rule_id, found.title, found.level) == (
        "W32/Emotet.A!tr",
        "W32/Emotet.A!tr",
        "high",
    )
    assert found.blocked is False


def test_fortigate_traffic_and_allowed_web_are_not_alerts() -> None:
    traffic = "date=2024-04-01 time=09:30:00 devname=f type=traffic subtype=forward action=deny"
    allowed = (
        "date=2024-04-01 time=09:30:00 devname=f type=utm subtype=webfilter "
        "eventtype=ftgd_allow level=notice action=passthrough hostname=example.com"
    )
    assert device_detections(fortigate(traffic)) == []
    assert device_detections(fortigate(allowed)) == []


@pytest.mark.corpus
def test_wazuh_fortigate_samples(corpus: Path) -> None:
    lines = (corpus / "syslog/wazuh/fortigate.log").read_text().splitlines()
    found = [d for line in lines if line.strip() for d in device_detections(fortigate(line))]
    kinds = Counter(d.description.split()[1] for d in found)
    assert kinds == {"ips": 2, "anomaly": 3, "app-ctrl": 1, "virus": 2, "webfilter": 3}
    assert sum(d.blocked for d in found) == 10  # all but the anomaly "detected"
    eicar = next(d for d in found if d.rule_id == "EICAR_TEST_FILE")
    assert eicar.matched["url"] == "http://172.16.200.55/virus/eicar.com"


@pytest.mark.corpus
def test_slips_suricata_alerts(corpus: Path) -> None:
    path = corpus / "suricata/slips/test6-malicious.suricata.json"
    found = [
        d
        for record in SURICATA.read_file(path)
        for d in device_detections(SURICATA.parse(record.raw, CTX))
    ]
    assert len(found) == 745
    assert Counter(d.level for d in found) == {"medium": 741, "high": 2, "low": 2}
    assert not any(d.blocked for d in found)
