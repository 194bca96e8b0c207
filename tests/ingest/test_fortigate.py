"""FortiGate UTM ログ parser: every corpus sample line, hand-written lines, fuzzing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otasuke.errors import ParseError
from otasuke.ingest.event import Event, SourceFormat
from otasuke.ingest.parsers import ParseContext, get_parser, parser_for_file
from otasuke.ingest.parsers.fortigate import FortiGateParser

PARSER = FortiGateParser()
JST = ParseContext(sensor="test-utm")
IPS_LINE = (
    '<189>date=2024-04-01 time=09:30:00 devname="FGT60F-Yamada" devid="FGT60FTK0000001" '
    'logid="0419016384" type="utm" subtype="ips" eventtype="signature" level="alert" '
    'vd="root" severity="high" srcip=192.168.1.20 srcport=50123 dstip=203.0.113.5 '
    'dstport=443 action="dropped" attack="Backdoor.Cobalt.Strike.Beacon" attackid=49468 '
    'msg="backdoor: Backdoor.Cobalt.Strike.Beacon, \\"quoted\\" part"'
)


def parse(line: str, ctx: ParseContext = JST) -> Event:
    return PARSER.parse(line, ctx)


def test_host_is_the_pc_concerned() -> None:
    line = 'date=2026-11-24 time=10:00:00 devname="FG" type="traffic" srcip={s} dstip={d}{n}'
    assert parse(line.format(s="192.168.1.5", d="8.8.8.8", n=' srcname="PC-07"')).host == "PC-07"
    assert parse(line.format(s="203.0.113.9", d="192.168.1.2", n="")).host == "192.168.1.2"
    assert parse(line.format(s="203.0.113.9", d="198.51.100.1", n="")).host == "FG"
    vpn = 'date=2026-11-24 time=10:00:00 devname="FG" type="event" subtype="vpn" remip=1.2.3.4'
    assert parse(vpn).host == "FG"


def test_registered_under_its_format_name() -> None:
    assert isinstance(get_parser("fortigate"), FortiGateParser)


def test_utm_ips_line_keeps_fortigate_names() -> None:
    event = parse(IPS_LINE)
    assert event.source_format is SourceFormat.FORTIGATE
    assert event.host == "192.168.1.20"  # the office PC, not the UTM
    assert event.fields["devname"] == "FGT60F-Yamada"
    assert event.fields["srcip"] == "192.168.1.20"
    assert event.fields["attack"] == "Backdoor.Cobalt.Strike.Beacon"
    assert event.fields["msg"] == 'backdoor: Backdoor.Cobalt.Strike.Beacon, "quoted" part'
    assert event.observed_at == datetime(2024, 4, 1, 0, 30, tzinfo=UTC)  # JST by default


def test_device_tz_applies_without_offset() -> None:
    ctx = ParseContext(device_tz=ZoneInfo("UTC"))
    assert parse(IPS_LINE, ctx).observed_at == datetime(2024, 4, 1, 9, 30, tzinfo=UTC)


def test_tz_field_wins_over_device_tz() -> None:
    event = parse('date=2024-10-14 time=13:46:40 tz="-0700" devname=fgt type=event')
    assert event.observed_at == datetime(2024, 10, 14, 20, 46, 40, tzinfo=UTC)


@pytest.mark.parametrize(
    "eventtime",
    ["1711931400", "1711931400123", "1711931400123456", "1711931400123456789"],
)
def test_eventtime_in_any_unit_gives_the_precise_instant(eventtime: str) -> None:
    line = f"date=2024-04-01 time=09:30:00 devname=fgt type=traffic eventtime={eventtime}"
    assert parse(line).observed_at.replace(microsecond=0) == datetime(2024, 4, 1, 0, 30, tzinfo=UTC)


def test_eventtime_far_from_date_is_ignored() -> None:
    line = "date=2018-06-21 time=03:00:35 devname=x type=utm eventtime=111111111"
    assert parse(line).observed_at == datetime(2018, 6, 20, 18, 0, 35, tzinfo=UTC)


def test_syslog_header_and_truncated_quote() -> None:
    line = (
        'Mar 22 19:21:00 10.0.0.1 date=2016-03-22 time=19:20:46 devname=Text type=anomaly msg="cut'
    )
    event = parse(line)
    assert event.fields["msg"] == "cut"
    assert "Mar" not in event.fields


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("", "raw"),
        ("just some text", "raw"),
        ("devname=fgt type=traffic", "date"),
        ("date=2024-04-01 devname=fgt type=traffic", "time"),
        ("date=2024-13-45 time=09:30:00 devname=fgt", "date"),
        ("date=yesterday time=09:30:00 devname=fgt", "date"),
        ("date=2024-04-01 time=noon devname=fgt", "time"),
        ("CEF:0|Fortinet|Fortigate|v7|0419016384|utm:ips|5|src=1.2.3.4", "raw"),
    ],
)
def test_bad_lines_name_the_field(line: str, field: str) -> None:
    with pytest.raises(ParseError) as err:
        parse(line)
    assert err.value.field == field
    assert err.value.hint


def test_mapping_input_is_refused() -> None:
    with pytest.raises(ParseError, match="text lines"):
        PARSER.parse({"date": "2024-04-01"}, JST)


def _corpus_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


def _ini_lines(path: Path) -> list[str]:
    return [
        line.split(" pass = ", 1)[1]
        for line in path.read_text().splitlines()
        if line.startswith("log ") and " pass = " in line
    ]


@pytest.mark.corpus
def test_every_wazuh_fortigate_sample_parses(corpus: Path) -> None:
    log = _corpus_lines(corpus / "syslog/wazuh/fortigate.log")
    ini = _ini_lines(corpus / "syslog/wazuh/fortigate.ini")
    assert (len(log), len(ini)) == (46, 46)
    events = [parse(line) for line in log + ini]
    assert all(e.fields.get("type") for e in events)
    types = sorted({str(e.fields["type"]) for e in events})
    assert types == ["anomaly", "event", "traffic", "utm"]


@pytest.mark.corpus
def test_fortios3_split_time_is_read(corpus: Path) -> None:
    line = next(
        ln for ln in _corpus_lines(corpus / "syslog/wazuh/fortigate.log") if "time=10: 13:03" in ln
    )
    event = parse(line)
    assert event.observed_at == datetime(2011, 7, 24, 1, 13, 3, tzinfo=UTC)
    assert event.fields["status"] == "deny"


@pytest.mark.corpus
def test_crowdsec_ssl_vpn_brute_force_lines_parse(corpus: Path) -> None:
    lines = _corpus_lines(corpus / "syslog/crowdsec/fortinet-vpn-bf/fortinet-vpn-bf.log")
    events = [parse(line) for line in lines]
    assert len(events) == 9
    assert {e.fields["action"] for e in events} == {"ssl-login-fail"}
    assert events[0].observed_at == datetime(2024, 10, 14, 20, 46, 40, 841267, tzinfo=UTC)


@pytest.mark.corpus
def test_ssl_vpn_web_access_log_is_not_a_fortigate_line(corpus: Path) -> None:
    """The CVE-2018-13379 sample is the SSL-VPN portal's HTTP access log, not key=value."""
    [line] = _corpus_lines(
        corpus / "syslog/crowdsec/fortinet-cve-2018-13379/fortinet-cve-2018-13379.log"
    )
    with pytest.raises(ParseError):
        parse(line)


@pytest.mark.corpus
def test_sniff_recognises_the_sample_file(corpus: Path) -> None:
    assert parser_for_file(corpus / "syslog/wazuh/fortigate.log").name == "fortigate"
    head = (corpus / "suricata/crowdsec/suricata-eve-detect/suricata-eve-detect.log").read_bytes()
    assert not PARSER.sniff(Path("eve.json"), head[:4096])


@given(line=st.text(max_size=400))
def test_parser_is_total_on_text(line: str) -> None:
    try:
        parse(line)
    except ParseError as err:
        assert err.field is not None


_VALUE = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters=' "'), max_size=20),
    st.text(max_size=20).map(lambda s: '"' + s.replace('"', '\\"') + '"'),
)


@given(
    pairs=st.lists(st.tuples(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), _VALUE), max_size=8),
    date=st.text(max_size=12),
    time=st.text(max_size=10),
    epoch=st.text(alphabet="0123456789", max_size=22),
)
def test_parser_is_total_on_key_values(
    pairs: list[tuple[str, str]], date: str, time: str, epoch: str
) -> None:
    body = " ".join(f"{k}={v}" for k, v in pairs)
    line = f"date={date} time={time} eventtime={epoch} devname=fgt type=utm {body}"
    try:
        event = parse(line)
    except ParseError as err:
        assert err.field is not None
    else:
        assert event.observed_at.tzinfo is UTC
