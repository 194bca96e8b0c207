"""REQ-MON-NET: network and Linux Sigma rules on Zeek, Suricata and auditd events."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from otasuke.detect.sigma import RuleSet, default_cache_dir, default_rule_paths
from otasuke.ingest.event import Event
from otasuke.ingest.parsers import FileParser, ParseContext
from otasuke.ingest.parsers.auditd import AuditdParser
from otasuke.ingest.parsers.suricata import SuricataEveParser
from otasuke.ingest.parsers.zeek import ZeekParser

BUNDLED = default_rule_paths()[0]
COBALT = BUNDLED / "network" / "dns" / "net_dns_mal_cobaltstrike.yml"
TOR = BUNDLED / "network" / "zeek" / "zeek_dns_torproxy.yml"
EXE_IN_TMP = BUNDLED / "linux" / "auditd" / "syscall" / "lnx_auditd_susp_exe_folders.yml"
CTX = ParseContext()

ZEEK_DNS = {
    "ts": 1601998366.786397,
    "uid": "CYwXsR3yfDq6hooIU2",
    "id.orig_h": "192.168.1.20",
    "id.orig_p": 53879,
    "id.resp_h": "192.168.1.1",
    "id.resp_p": 53,
    "proto": "udp",
    "query": "aaa.stage.8317.example.com",
    "qtype_name": "TXT",
}
SURICATA_DNS = {
    "timestamp": "2021-06-06T15:59:46.457984+0200",
    "event_type": "dns",
    "src_ip": "192.168.1.20",
    "dest_ip": "192.168.1.1",
    "dns": {"type": "query", "id": 1, "rrname": "aaa.stage.8317.example.com", "rrtype": "TXT"},
}


@pytest.fixture(scope="module")
def bundled() -> RuleSet:
    return RuleSet.load(default_rule_paths(), cache_dir=default_cache_dir())


def rule_ids(rules: RuleSet, event: Event) -> set[str]:
    return {rule.info.path for rule in rules.event_matches(event)[0]}


def zeek(record: dict[str, object]) -> Event:
    return ZeekParser().parse(orjson.dumps(record).decode(), CTX)


def test_dns_category_rule_fires_on_zeek_dns_log_and_suricata_dns() -> None:
    rules = RuleSet.load([COBALT])
    assert rule_ids(rules, zeek(ZEEK_DNS)) == {str(COBALT)}
    suricata = SuricataEveParser().parse(orjson.dumps(SURICATA_DNS).decode(), CTX)
    assert rule_ids(rules, suricata) == {str(COBALT)}
    [found] = rules.detections(suricata)
    assert found.matched["query"] == "aaa.stage.8317.example.com" and found.author


def test_zeek_product_rule_fires_only_on_its_service() -> None:
    rules = RuleSet.load([TOR])
    onion = {**ZEEK_DNS, "query": "abc.onion.city"}
    assert rule_ids(rules, zeek(onion)) == {str(TOR)}
    suricata = {**SURICATA_DNS, "dns": {"type": "query", "rrname": "abc.onion.city"}}
    assert not rule_ids(rules, SuricataEveParser().parse(orjson.dumps(suricata).decode(), CTX))
    as_http = {k: v for k, v in onion.items() if k != "qtype_name"} | {"_path": "http"}
    assert not rule_ids(rules, zeek(as_http))


def test_zeek_tsv_dns_line_fires(tmp_path: Path) -> None:
    log = tmp_path / "dns.log"
    log.write_text(
        "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n"
        "#path\tdns\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tquery\n"
        "#types\ttime\tstring\taddr\tport\taddr\tport\tstring\n"
        "1601998366.786397\tC1\t10.0.0.5\t5353\t10.0.0.1\t53\tpost.1234.example.net\n"
    )
    parser = ZeekParser()
    [record] = list(parser.read_file(log))
    assert rule_ids(RuleSet.load([COBALT]), parser.parse(record.raw, CTX)) == {str(COBALT)}


def test_auditd_rule_fires_on_a_real_crowdsec_line(corpus: Path) -> None:
    rules = RuleSet.load([EXE_IN_TMP])
    lines = (corpus / "auditd" / "crowdsec").rglob("*.log")
    events = [AuditdParser().parse(r.raw, CTX) for f in lines for r in AuditdParser().read_file(f)]
    fired = [e for e in events if rule_ids(rules, e)]
    assert fired and all(e.fields["exe"].startswith("/tmp/") for e in fired)


def test_windows_rules_never_fire_on_zeek_or_auditd_events(bundled: RuleSet, corpus: Path) -> None:
    parsers: list[FileParser] = [ZeekParser(), AuditdParser()]
    files = [p for p in (corpus / "zeek").rglob("*") if p.is_file()]
    files += list((corpus / "auditd").rglob("*.log"))
    matched: list[str] = []
    events = 0
    for path in files:
        head = path.read_bytes()[:4096]
        for parser in parsers:
            if not parser.sniff(path, head):
                continue
            for record in parser.read_file(path):
                try:
                    event = parser.parse(record.raw, CTX)
                except ValueError:
                    continue
                events += 1
                matched += [rule.info.path for rule in bundled.event_matches(event)[0]]
            break
    assert events > 10_000
    assert matched  # the set does fire on this corpus (Zeek DCE-RPC, auditd /tmp exec)
    windows = str(BUNDLED / "windows")
    assert not [p for p in matched if p.startswith(windows)]


def test_windows_rule_is_not_evaluated_on_a_zeek_event_carrying_its_fields(
    bundled: RuleSet,
) -> None:
    event = zeek(
        {**ZEEK_DNS, "_path": "dns", "Image": "C:\\Windows\\System32\\whoami.exe", "EventID": 1}
    )
    assert all(not p.startswith(str(BUNDLED / "windows")) for p in rule_ids(bundled, event))
