"""REQ-MON-NET: network and Linux Sigma rules on Zeek, Suricata and auditd events."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from otasuke.detect.sigma import RuleSet, default_cache_dir, default_rule_paths
from otasuke.ingest.event import Event
from otasuke.ingest.parsers import FileParser, ParseContext, get_parser
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


# --- firewall and Linux syslog sources (mappings.py) --------------------------------------

CLEARTEXT = BUNDLED / "network" / "firewall" / "net_firewall_cleartext_protocols.yml"
SSHD_SUSP = BUNDLED / "linux" / "builtin" / "sshd" / "lnx_sshd_susp_ssh.yml"
CRONTAB = BUNDLED / "linux" / "builtin" / "cron" / "lnx_cron_crontab_file_modification.yml"

FIREWALL_LINES = {
    # a permitted telnet (23) connection, one line per firewall format
    "paloalto": "<14>Nov 24 10:00:00 PA-220 1,2026/11/24 10:00:00,012801000000,TRAFFIC,end,"
    "2561,2026/11/24 10:00:00,192.168.1.20,203.0.113.7,0.0.0.0,0.0.0.0,allow-out,,,telnet,"
    "vsys1,trust,untrust,ethernet1/2,ethernet1/1,fwd,2026/11/24 10:00:00,33164,1,51234,23,"
    "0,0,0x400000,tcp,allow,5000,3000,2000,20,2026/11/24 09:59:50,9,any,0,1234,0x0,"
    "192.168.0.0-192.168.255.255,Japan,0,11,9,tcp-fin",
    "cisco_asa": "<166>Nov 24 2026 10:00:00 ASA-5506 : %ASA-6-302013: Built outbound TCP "
    "connection 4211 for outside:203.0.113.7/23 (203.0.113.7/23) to inside:192.168.1.20/51234 "
    "(198.51.100.2/51234)",
    "filterlog": "<134>Nov 24 10:00:00 pfSense filterlog[123]: 5,,,1000000103,igb1,match,pass,"
    "out,4,0x0,,64,0,0,DF,6,tcp,60,192.168.1.20,203.0.113.7,51234,23,0,S,1,,64240,,mss",
    "iptables": "<4>Nov 24 10:00:00 gw kernel: [12345.678] ACCEPT IN=eth1 OUT=eth0 "
    "SRC=192.168.1.20 DST=203.0.113.7 LEN=60 TOS=0x00 PREC=0x00 TTL=63 ID=1 DF PROTO=TCP "
    "SPT=51234 DPT=23 WINDOW=64240 RES=0x00 SYN URGP=0",
}


@pytest.mark.parametrize("fmt", sorted(FIREWALL_LINES))
def test_firewall_category_rule_fires_on_each_firewall_format(fmt: str) -> None:
    """REQ-MON-NET: a `category: firewall` rule sees every UTM/firewall parser's traffic."""
    rules = RuleSet.load([CLEARTEXT])
    event = get_parser(fmt).parse(FIREWALL_LINES[fmt], CTX)
    assert rule_ids(rules, event) == {str(CLEARTEXT)}, event.fields
    on_443 = FIREWALL_LINES[fmt].replace("/23 ", "/443 ").replace("/23)", "/443)")
    on_443 = on_443.replace("DPT=23 ", "DPT=443 ").replace(",51234,23,", ",51234,443,")
    assert rule_ids(rules, get_parser(fmt).parse(on_443, CTX)) == set()


def test_sshd_keyword_rule_fires_on_sshd_lines_only() -> None:
    rules = RuleSet.load([SSHD_SUSP])
    line = "<38>Nov 24 10:00:00 web01 sshd[811]: fatal: buffer_get_string: bad string length 1"
    assert rule_ids(rules, get_parser("sshd").parse(line, CTX)) == {str(SSHD_SUSP)}
    calm = "<38>Nov 24 10:00:00 web01 sshd[811]: Accepted publickey for deploy from 10.0.0.5"
    assert rule_ids(rules, get_parser("sshd").parse(calm, CTX)) == set()
    # the same words from a UTM's own format are not an sshd log
    utm = 'date=2026-11-24 time=10:00:00 type=event msg="fatal: buffer_get_string: bad string"'
    assert rule_ids(rules, get_parser("fortigate").parse(utm, CTX)) == set()


def test_program_service_rule_fires_on_that_program_only() -> None:
    rules = RuleSet.load([CRONTAB])
    cron = "<78>Nov 24 10:00:00 web01 crontab[2211]: (root) REPLACE (root)"
    assert rule_ids(rules, get_parser("syslog").parse(cron, CTX)) == {str(CRONTAB)}
    other = "<14>Nov 24 10:00:00 web01 myapp[7]: REPLACE (root)"
    assert rule_ids(rules, get_parser("syslog").parse(other, CTX)) == set()
