"""機器アラートの取込み: CEF, PAN-OS, Cisco ASA, SonicWall and Sophos alerts; blocked flags."""

from __future__ import annotations

import pytest

from otasuke.detect.detection import DetectionSource
from otasuke.detect.device import device_detections, is_blocked
from otasuke.ingest.event import Event
from otasuke.ingest.parsers import ParseContext, get_parser

CTX = ParseContext(sensor="test")


def parse(fmt: str, line: str) -> Event:
    return get_parser(fmt).parse(line, CTX)


def test_cef_fortigate_ips_is_an_alert_and_blocked() -> None:
    line = (
        "CEF:0|Fortinet|Fortigate|v7|16384|utm:ips signature|5|src=192.168.1.20 dst=203.0.113.5 "
        "act=dropped FTNTFGTattack=Backdoor.Cobalt.Strike.Beacon"
    )
    [found] = device_detections(parse("cef", line))
    assert found.source is DetectionSource.DEVICE
    assert (found.title, found.level, found.blocked) == (
        "Backdoor.Cobalt.Strike.Beacon",
        "medium",
        True,
    )


def test_cef_fortigate_traffic_is_not_an_alert() -> None:
    line = "CEF:0|Fortinet|Fortigate|v7|00013|traffic:forward close|3|src=192.168.1.20 act=close"
    assert device_detections(parse("cef", line)) == []


@pytest.mark.parametrize(
    ("severity", "level"),
    [("3", None), ("5", "medium"), ("8", "high"), ("10", "critical"), ("Very-High", "critical")],
)
def test_cef_severity_decides(severity: str, level: str | None) -> None:
    line = (
        f"CEF:0|Trend Micro|Apex Central|2019|AV:Clean|Eicar|{severity}|dhost=PC-07 act=Quarantine"
    )
    found = device_detections(parse("cef", line))
    assert [d.level for d in found] == ([level] if level else [])


def test_paloalto_threat_is_an_alert() -> None:
    line = (
        "1,2024/04/01 09:30:05,0001,THREAT,vulnerability,2049,2024/04/01 09:30:00,203.0.113.7,"
        "192.168.1.20,,,r,,,web-browsing,vsys1,untrust,trust,e1,e2,f,2024/04/01 09:30:00,1,1,5,80,"
        '0,0,0x0,tcp,reset-both,"/x",Log4j RCE(91991),any,critical,client-to-server'
    )
    [found] = device_detections(parse("paloalto", line))
    assert (found.title, found.level, found.blocked) == ("Log4j RCE(91991)", "critical", True)


def test_paloalto_traffic_deny_is_blocked_not_an_alert() -> None:
    line = "1,2024/04/01 09:30:05,0001,TRAFFIC,drop,0,2024/04/01 09:30:00,203.0.113.7,192.168.1.20,,,deny-all,,,not-applicable,vsys1,u,t,e1,,f,2024/04/01 09:30:00,0,1,5,445,0,0,0x0,tcp,deny"
    event = parse("paloalto", line)
    assert device_detections(event) == []
    assert is_blocked(event)


def test_cisco_asa_threat_detection_and_denies() -> None:
    rate = "%ASA-4-733100: [ Scanning] drop rate-1 exceeded. Current burst rate is 10 per second, max configured rate is 10; Current average rate is 5 per second, max configured rate is 5; Cumulative total count is 3000"
    [found] = device_detections(parse("cisco_asa", rate))
    assert (found.rule_id, found.level) == ("733100", "medium")
    deny = parse(
        "cisco_asa",
        '%ASA-4-106023: Deny tcp src outside:1.2.3.4/1 dst inside:10.0.0.1/445 by access-group "a"',
    )
    assert device_detections(deny) == [] and is_blocked(deny)


def test_sonicwall_ips_prevention_alert() -> None:
    line = 'id=firewall sn=1 time="2024-04-01 00:30:00 UTC" m=608 msg="IPS Prevention Alert: WORM Klez" ipscat="WORM Klez" ipspri=1 src=203.0.113.9:1:X1 dst=192.168.1.5:25:X0'
    [found] = device_detections(parse("sonicwall", line))
    assert (found.title, found.level, found.blocked) == ("WORM Klez", "high", True)


def test_sophos_xg_idp_and_utm_ips() -> None:
    xg = 'device="SFW" date=2024-04-01 time=09:30:00 device_name="XG" log_id=020804602001 log_type="IDP" log_subtype="Drop" status="Drop" message="Exploit" src_ip=1.2.3.4 dst_ip=192.168.1.5'
    [found] = device_detections(parse("sophos", xg))
    assert (found.title, found.blocked) == ("Exploit", True)
    utm = '<30>2024:04:01-09:30:00 utm snort[1]: id="2101" severity="warn" sys="SecureNet" sub="ips" name="Intrusion protection alert" action="drop" srcip="1.2.3.4" dstip="192.168.1.5"'
    [found] = device_detections(parse("sophos", utm))
    assert (found.title, found.level, found.blocked) == (
        "Intrusion protection alert",
        "medium",
        True,
    )
    traffic = xg.replace('log_type="IDP"', 'log_type="Firewall"')
    assert device_detections(parse("sophos", traffic)) == []


def test_packet_filters_say_blocked() -> None:
    assert is_blocked(
        parse("iptables", "kernel: [UFW BLOCK] IN=e OUT= SRC=1.2.3.4 DST=10.0.0.1 PROTO=TCP")
    )
    assert is_blocked(
        parse(
            "filterlog",
            "filterlog: 5,,,1,em0,match,block,in,4,0x0,,128,1,0,none,17,udp,186,1.2.3.4,10.9.0.255,1,2,166",
        )
    )
    assert not is_blocked(
        parse(
            "filterlog",
            "filterlog: 5,,,1,em0,match,pass,in,4,0x0,,128,1,0,none,17,udp,186,1.2.3.4,10.9.0.255,1,2,166",
        )
    )
    assert (
        device_detections(parse("sshd", "Apr  1 09:30:00 h sshd[1]: Invalid user x from 1.2.3.4"))
        == []
    )
