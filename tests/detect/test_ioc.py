"""IOC 照合: bundled maltrail lists and abuse.ch CSV against real-format events."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otasuke.detect.detection import DetectionSource
from otasuke.detect.ioc import IocSet, default_ioc_paths
from otasuke.errors import ConfigError
from otasuke.ingest.event import Event, SourceFormat
from otasuke.ingest.parsers import ParseContext
from otasuke.ingest.parsers.fortigate import FortiGateParser
from otasuke.ingest.parsers.suricata import SuricataEveParser

CTX = ParseContext(sensor="test")
FGT_HEAD = "date=2024-04-01 time=09:30:00 devname=FGT60F devid=FGT60FTK0000001 level=notice"


@pytest.fixture(scope="module")
def bundled() -> IocSet:
    return IocSet.load(default_ioc_paths())


def suricata(record: dict[str, Any]) -> Event:
    base = {"timestamp": "2024-04-01T09:30:00+0900", "src_ip": "192.168.1.20", "src_port": 50000}
    return SuricataEveParser().parse({**base, **record}, CTX)


def fortigate(body: str) -> Event:
    return FortiGateParser().parse(f"{FGT_HEAD} {body}", CTX)


def sysmon(fields: dict[str, Any]) -> Event:
    return Event(
        event_id="sysmon-1",
        observed_at=datetime(2024, 4, 1, tzinfo=UTC),
        source_format=SourceFormat.EVTX,
        fields={"Channel": "Microsoft-Windows-Sysmon/Operational", **fields},
        host="PC-01",
    )


def dns_query(name: str) -> Event:
    return suricata(
        {"event_type": "dns", "dest_ip": "8.8.8.8", "dest_port": 53, "dns": {"rrname": name}}
    )


def test_bundled_lists_load(bundled: IocSet) -> None:
    counts = bundled.counts()
    assert len(bundled) == sum(counts.values()) > 100_000
    assert all(count > 0 for count in counts.values())
    assert len(bundled.lists) == 30
    assert "LICENSE-MIT" not in bundled.lists
    assert (default_ioc_paths()[0] / "LICENSE-MIT.txt").is_file()


def test_suricata_dns_query_to_listed_domain(bundled: IocSet) -> None:
    [found] = bundled.detections(dns_query("dvr.petcp.com"))
    assert found.source is DetectionSource.IOC
    assert found.rule_id == "ioc:emotet"
    assert found.title == "Contact with a known emotet server"
    assert found.level == "high"
    assert found.blocked is False
    assert found.matched == {"dns.rrname": "dvr.petcp.com", "indicator": "dvr.petcp.com"}
    assert found.references == ("https://twitter.com/_lockhum/status/1221245124707078144",)


def test_subdomain_of_listed_domain_matches(bundled: IocSet) -> None:
    [found] = bundled.detections(dns_query("Cdn.1C26.dyndns.org."))
    assert found.matched["indicator"] == "1c26.dyndns.org"
    assert bundled.detections(dns_query("dyndns.org")) == []


def test_unlisted_values_do_not_match(bundled: IocSet) -> None:
    assert bundled.detections(dns_query("www.example.co.jp")) == []
    assert bundled.detections(fortigate("type=traffic srcip=192.168.1.2 dstip=203.0.113.77")) == []


def test_fortigate_traffic_to_listed_ip(bundled: IocSet) -> None:
    event = fortigate(
        "type=traffic subtype=forward srcip=192.168.1.20 srcport=51515 dstip=92.118.36.204 "
        "dstport=443 action=accept"
    )
    [found] = bundled.detections(event)
    assert (found.rule_id, found.blocked) == ("ioc:8base", False)
    assert found.matched == {"dstip": "92.118.36.204", "indicator": "92.118.36.204"}


def test_ip_port_indicator_needs_its_port(bundled: IocSet) -> None:
    line = "type=traffic srcip=192.168.1.20 dstip=190.211.252.82 dstport={port} action=deny"
    [found] = bundled.detections(fortigate(line.format(port=37654)))
    assert found.rule_id == "ioc:akira"
    assert found.matched["indicator"] == "190.211.252.82:37654"
    assert bundled.detections(fortigate(line.format(port=443))) == []


def test_blocked_traffic_carries_blocked(bundled: IocSet) -> None:
    event = fortigate("type=traffic srcip=192.168.1.20 dstip=92.118.36.204 action=deny")
    [found] = bundled.detections(event)
    assert found.blocked is True
    alert = suricata(
        {
            "event_type": "alert",
            "dest_ip": "92.118.36.204",
            "dest_port": 80,
            "alert": {"action": "blocked", "signature_id": 1, "signature": "x", "severity": 1},
        }
    )
    assert [d.blocked for d in bundled.detections(alert)] == [True]


def test_url_indicator_in_fortigate_and_suricata(bundled: IocSet) -> None:
    web = fortigate(
        "type=utm subtype=webfilter srcip=192.168.1.20 dstip=203.0.113.9 "
        'hostname="etvidanueva.com" url="/photos/images/WebPanel/login.php?id=1" action=blocked'
    )
    [found] = bundled.detections(web)  # one per list: the most specific indicator
    assert found.matched == {
        "url": "/photos/images/WebPanel/login.php?id=1",
        "indicator": "etvidanueva.com/photos/images/webpanel/login.php",
    }
    assert found.blocked is True
    http = suricata(
        {
            "event_type": "http",
            "dest_ip": "203.0.113.9",
            "dest_port": 80,
            "http": {"hostname": "etvidanueva.com", "url": "/photos/images/WebPanel/login.php"},
        }
    )
    [found] = bundled.detections(http)
    assert found.rule_id == "ioc:agenttesla"


def test_sysmon_network_and_dns_events(bundled: IocSet) -> None:
    connect = sysmon({"EventID": 3, "DestinationIp": "92.118.36.204", "DestinationPort": 443})
    assert [d.rule_id for d in bundled.detections(connect)] == ["ioc:8base"]
    query = sysmon({"EventID": 22, "QueryName": "dvr.petcp.com"})
    assert [d.rule_id for d in bundled.detections(query)] == ["ioc:emotet"]


def test_hand_written_list_with_urls_and_references() -> None:
    iocs = IocSet()
    text = (
        "# Reference: https://example.org/a\n# Reference: https://example.org/b\n\n"
        "bad.example/panel/\nhttp://198.51.100.7:8080/gate.php\n/generic/path.php\n"
        "# Reference: https://example.org/c\n\nevil.example\n"
    )
    assert iocs.add_list("sample", text) == 3
    assert iocs.skipped == 1
    event = fortigate('type=utm subtype=webfilter hostname=bad.example url="/panel/x/y.php"')
    [found] = iocs.detections(event)
    assert found.matched["indicator"] == "bad.example/panel/"
    assert found.references == ("https://example.org/a", "https://example.org/b")
    absolute = fortigate('type=utm subtype=virus url="http://198.51.100.7:8080/gate.php?x=1"')
    assert [d.matched["indicator"] for d in iocs.detections(absolute)] == ["198.51.100.7/gate.php"]
    [found] = iocs.detections(dns_query("a.evil.example"))
    assert found.references == ("https://example.org/c",)


@pytest.mark.corpus
def test_abusech_feodo_and_urlhaus_formats(corpus: Path) -> None:
    iocs = IocSet.load(corpus / "ioc/abusech-format-samples")
    assert iocs.counts() == {"ip": 1, "ip_port": 0, "domain": 0, "url": 2}
    [found] = iocs.detections(fortigate("type=traffic srcip=10.0.0.2 dstip=110.93.230.101"))
    assert found.title == "Contact with a known Heodo server"
    assert found.rule_id == "ioc:feodotracker-ipblocklist-csv-2019-03-05"
    web = fortigate('hostname=cbd-planet.ch url="/sec.myacc.send.com/"')
    assert len(iocs.detections(web)) == 1


def test_missing_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        IocSet.load(tmp_path / "nope")
    assert err.value.field == "ioc_paths"


_FIELD_VALUES = st.one_of(
    st.none(), st.integers(), st.text(max_size=30), st.lists(st.text(max_size=30), max_size=3)
)


@given(
    text=st.text(max_size=300),
    fields=st.dictionaries(
        st.sampled_from(["dstip", "dstport", "hostname", "url", "dns.rrname", "QueryName"]),
        _FIELD_VALUES,
    ),
)
def test_lists_and_lookups_never_crash(text: str, fields: dict[str, Any]) -> None:
    iocs = IocSet()
    iocs.add_list("fuzz", text + "\nbad.example\n198.51.100.7:80\n")
    event = sysmon(fields)
    for found in iocs.detections(event):
        assert found.rule_id == "ioc:fuzz"
