"""The Elasticsearch ``_bulk`` subset: stock shippers (Winlogbeat, Fluent Bit, Vector, NXLog).

Real records from the OTRF Security-Datasets (MIT) in Winlogbeat's and NXLog's layouts,
Bearer and Basic auth, refused documents quarantined and reported per item, and one
end to end: a Sysmon process creation of mimikatz.exe → serious incident → mail.
"""

from __future__ import annotations

import base64
import gzip
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from otasuke.db.engine import Database
from otasuke.db.models import Incident, QuarantinedRecord, StoredEvent
from otasuke.demo.seed import seed_demo
from otasuke.settings import Settings
from otasuke.web.api.bulk import document_format, sensor_token
from otasuke.web.app import create_app
from tests.conftest import Inbox, wait_drained, wait_for

OTRF_ZIP = (
    "json-events/otrf-security-datasets/atomic/windows/credential_access/host/"
    "psh_lsass_memory_dump_comsvcs.zip"
)
WINDOWS_SENSOR = "tokai-parts/社内PC イベントログ"
NXLOG_SYSTEM_KEYS = {
    "EventID",
    "Channel",
    "Hostname",
    "SourceName",
    "ProviderGuid",
    "RecordNumber",
    "Task",
    "Level",
    "Keywords",
    "TimeCreated",
    "EventTime",
    "EventReceivedTime",
    "@timestamp",
    "Message",
    "ExecutionProcessID",
    "ThreadID",
    "Version",
    "OpcodeValue",
    "Opcode",
    "Severity",
    "SeverityValue",
    "EventType",
    "SourceModuleName",
    "SourceModuleType",
    "Category",
    "Domain",
    "AccountName",
    "UserID",
    "AccountType",
    "@version",
    "host",
    "port",
    "tags",
}


# --- helpers ----------------------------------------------------------------------


def basic(token: str, user: str = "winlogbeat") -> dict[str, str]:
    value = base64.b64encode(f"{user}:{token}".encode()).decode()
    return {"Authorization": f"Basic {value}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def bulk_body(*pairs: tuple[dict[str, Any], dict[str, Any] | bytes]) -> bytes:
    lines: list[bytes] = []
    for action, doc in pairs:
        lines.append(orjson.dumps(action))
        lines.append(doc if isinstance(doc, bytes) else orjson.dumps(doc))
    return b"\n".join(lines) + b"\n"


def otrf_sysmon_process_creation(corpus: Path) -> dict[str, Any]:
    """The first Sysmon event 1 of an OTRF dataset (an lsass dump with comsvcs.dll)."""
    with zipfile.ZipFile(corpus / OTRF_ZIP) as archive:
        for name in archive.namelist():
            for line in archive.read(name).decode("utf-8").splitlines():
                record: dict[str, Any] = orjson.loads(line)
                if record.get("EventID") == 1 and "Sysmon" in str(record.get("Channel")):
                    return record
    raise AssertionError("no Sysmon process creation in the dataset")


def as_winlogbeat(record: dict[str, Any]) -> dict[str, Any]:
    """An NXLog-layout record in Winlogbeat's layout (``winlog.*``, ``event.code``)."""
    event_data = {k: v for k, v in record.items() if k not in NXLOG_SYSTEM_KEYS}
    stamp = record.get("@timestamp") or record["UtcTime"].replace(" ", "T") + "Z"
    return {
        "@timestamp": stamp,
        "message": record.get("Message", ""),
        "event": {"code": str(record["EventID"]), "provider": record["SourceName"]},
        "host": {"name": record["Hostname"]},
        "winlog": {
            "event_id": record["EventID"],
            "channel": record["Channel"],
            "computer_name": record["Hostname"],
            "provider_name": record["SourceName"],
            "provider_guid": record.get("ProviderGuid"),
            "record_id": record.get("RecordNumber"),
            "task": record.get("Task"),
            "event_data": event_data,
        },
    }


def mimikatz_process_creation(when: datetime) -> dict[str, Any]:
    """A Sysmon event 1 of mimikatz.exe as Winlogbeat 8 ships it."""
    image = "C:\\Users\\tanaka\\Downloads\\mimikatz.exe"
    return {
        "@timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "message": "Process Create",
        "event": {"code": "1", "provider": "Microsoft-Windows-Sysmon", "kind": "event"},
        "host": {"name": "seizo-pc07"},
        "agent": {"type": "winlogbeat", "version": "8.17.0"},
        "winlog": {
            "event_id": "1",
            "channel": "Microsoft-Windows-Sysmon/Operational",
            "computer_name": "SEIZO-PC07.tokai.local",
            "provider_name": "Microsoft-Windows-Sysmon",
            "provider_guid": "{5770385f-c22a-43e0-bf4c-06f5698ffbd9}",
            "record_id": 48213,
            "process": {"pid": 3044, "thread": {"id": 4212}},
            "user": {"identifier": "S-1-5-18"},
            "event_data": {
                "RuleName": "-",
                "UtcTime": when.strftime("%Y-%m-%d %H:%M:%S.000"),
                "ProcessGuid": "{0b1f6e3a-1111-6543-2a01-000000000b00}",
                "ProcessId": "7312",
                "Image": image,
                "FileVersion": "2.2.0.0",
                "Description": "mimikatz for Windows",
                "Product": "mimikatz",
                "Company": "gentilkiwi (Benjamin DELPY)",
                "OriginalFileName": "mimikatz.exe",
                "CommandLine": f'"{image}" "privilege::debug" "sekurlsa::logonpasswords" exit',
                "CurrentDirectory": "C:\\Users\\tanaka\\Downloads\\",
                "User": "TOKAI\\tanaka",
                "IntegrityLevel": "High",
                "ParentImage": "C:\\Windows\\System32\\cmd.exe",
                "ParentCommandLine": '"C:\\Windows\\System32\\cmd.exe"',
            },
        },
    }


@pytest.fixture
def app_and_tokens(
    sqlite_db: Database, settings: Settings
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with sqlite_db.session() as s:
        _, tokens = seed_demo(s)
    with TestClient(create_app(settings, db=sqlite_db)) as client:
        yield client, tokens


# --- unit -------------------------------------------------------------------------


def test_sensor_token_from_bearer_and_basic() -> None:
    assert sensor_token("Bearer abc") == "abc"
    assert sensor_token(basic("tok")["Authorization"]) == "tok"
    assert sensor_token(basic("to:k", user="")["Authorization"]) == "to:k"
    assert sensor_token("Basic !!!") is None
    assert sensor_token("Basic " + base64.b64encode(b"user-only").decode()) is None
    assert sensor_token("Digest x") is None
    assert sensor_token("") is None


def test_document_format() -> None:
    assert document_format({"winlog": {"event_id": 1}}) == "winlogbeat"
    assert document_format({"EventID": 4624, "Channel": "Security"}) == "winlogbeat"
    assert document_format({"message": "hello", "log": {"level": "info"}}) == "jsonl"


# --- the API ----------------------------------------------------------------------


@pytest.mark.corpus
def test_winlogbeat_bulk_from_a_real_otrf_record(
    app_and_tokens: tuple[TestClient, dict[str, str]], corpus: Path, sqlite_db: Database
) -> None:
    client, tokens = app_and_tokens
    record = otrf_sysmon_process_creation(corpus)
    body = bulk_body(
        ({"create": {"_index": "winlogbeat-8.17.0"}}, as_winlogbeat(record)),
        ({"index": {"_index": "nxlog", "_id": "otrf-1"}}, record),
        (
            {"index": {}},
            {"message": "a generic JSON log", "@timestamp": "2020-10-18T23:50:05.910Z"},
        ),
    )
    r = client.post(
        "/api/v1/_bulk",
        content=body,
        headers={**basic(tokens[WINDOWS_SENSOR]), "Content-Type": "application/x-ndjson"},
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert set(answer) == {"took", "errors", "items"} and isinstance(answer["took"], int)
    assert answer["errors"] is False
    assert [next(iter(item)) for item in answer["items"]] == ["create", "index", "index"]
    assert [next(iter(item.values()))["status"] for item in answer["items"]] == [201] * 3
    assert answer["items"][1]["index"]["_id"] == "otrf-1"
    wait_drained(client)
    with sqlite_db.session() as s:
        rows = s.scalars(select(StoredEvent).order_by(StoredEvent.id)).all()
        assert [row.source_format for row in rows] == ["winlogbeat", "winlogbeat", "jsonl"]
        beat, nxlog = rows[0].fields, rows[1].fields
        assert beat["EventID"] == nxlog["EventID"] == 1
        assert beat["Channel"] == "Microsoft-Windows-Sysmon/Operational"
        assert beat["Image"] == nxlog["Image"] == record["Image"]
        assert beat["CommandLine"] == record["CommandLine"]
        assert rows[1].event_uid == "otrf-1"


def test_bearer_auth_index_in_path_and_gzip(
    app_and_tokens: tuple[TestClient, dict[str, str]], sqlite_db: Database
) -> None:
    client, tokens = app_and_tokens
    doc = mimikatz_process_creation(datetime.now(UTC))
    body = gzip.compress(bulk_body(({"index": {"_id": "gz-1"}}, doc)))
    headers = {**bearer(tokens[WINDOWS_SENSOR]), "Content-Encoding": "gzip"}
    r = client.post("/api/v1/winlogbeat-8.17.0/_bulk", content=body, headers=headers)
    assert r.status_code == 200, r.text
    [item] = r.json()["items"]
    assert item["index"]["status"] == 201 and item["index"]["_index"] == "winlogbeat-8.17.0"
    # re-sent (a shipper's retry): answered again, stored once
    r = client.post("/api/v1/winlogbeat-8.17.0/_bulk", content=body, headers=headers)
    assert r.status_code == 200 and not r.json()["errors"]
    wait_drained(client)
    with sqlite_db.session() as s:
        assert len(s.scalars(select(StoredEvent)).all()) == 1


def test_bad_or_missing_credentials_are_401(
    app_and_tokens: tuple[TestClient, dict[str, str]],
) -> None:
    client, _tokens = app_and_tokens
    body = bulk_body(({"index": {}}, {"message": "x"}))
    for headers in ({}, bearer("nope"), basic("nope"), {"Authorization": "Basic ???"}):
        r = client.post("/api/v1/_bulk", content=body, headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"]["field"] == "Authorization"
        assert "Basic" in r.headers["www-authenticate"]
    assert client.get("/api/v1/").status_code == 401
    assert client.get("/api/v1/_license", headers=bearer("nope")).status_code == 401


def test_malformed_document_is_item_400_and_quarantined(
    app_and_tokens: tuple[TestClient, dict[str, str]], sqlite_db: Database
) -> None:
    client, tokens = app_and_tokens
    good = mimikatz_process_creation(datetime.now(UTC))
    broken = {"winlog": {"event_id": 4624, "channel": "Security"}}  # no time at all
    body = bulk_body(
        ({"index": {}}, good),
        ({"index": {}}, b'{"message": "cut off'),
        ({"create": {}}, broken),
        ({"delete": {"_id": "x"}}, {}),
    )
    body = body.rsplit(b"\n", 2)[0] + b"\n"  # delete has no document line
    r = client.post("/api/v1/_bulk", content=body, headers=bearer(tokens[WINDOWS_SENSOR]))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["errors"] is True
    statuses = [next(iter(item.values()))["status"] for item in answer["items"]]
    # Only "is it a JSON object" is checked before the answer; the event without a time
    # is in the spool (201) and refused by the parser in the drain, into the quarantine.
    assert statuses == [201, 400, 201, 400]
    cut, delete = (next(iter(answer["items"][i].values()))["error"] for i in (1, 3))
    assert "not valid JSON" in cut["reason"] and cut["type"] == "document_parsing_exception"
    assert "not supported" in delete["reason"]
    wait_drained(client)
    with sqlite_db.session() as s:
        assert len(s.scalars(select(StoredEvent)).all()) == 1
        quarantined = s.scalars(select(QuarantinedRecord).order_by(QuarantinedRecord.id)).all()
        assert [q.source_format for q in quarantined] == ["jsonl", "winlogbeat"]
        # kept as the envelope accept_lines refused: the document as the shipper sent it
        assert orjson.loads(quarantined[0].raw)["raw"] == '{"message": "cut off'
        assert quarantined[1].field == "@timestamp"


def test_broken_action_line_or_oversize_refuses_the_request(
    app_and_tokens: tuple[TestClient, dict[str, str]], settings: Settings
) -> None:
    client, tokens = app_and_tokens
    auth = bearer(tokens[WINDOWS_SENSOR])
    r = client.post("/api/v1/_bulk", content=b"not json\n{}\n", headers=auth)
    assert r.status_code == 400 and r.json()["error"]["type"] == "illegal_argument_exception"
    r = client.post("/api/v1/_bulk", content=b'{"index": {}}\n', headers=auth)
    assert r.status_code == 400
    r = client.post("/api/v1/_bulk", content=b"", headers=auth)
    assert r.status_code == 400
    big = b"x" * (settings.ingest_max_batch_bytes + 1)
    assert client.post("/api/v1/_bulk", content=big, headers=auth).status_code == 413
    bomb = gzip.compress(big)
    headers = {**auth, "Content-Encoding": "gzip"}
    assert client.post("/api/v1/_bulk", content=bomb, headers=headers).status_code == 413


def test_cluster_info_and_license(app_and_tokens: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = app_and_tokens
    auth = basic(tokens[WINDOWS_SENSOR], user="elastic")
    for path in ("/api/v1/", "/api/v1"):
        r = client.get(path, headers=auth, follow_redirects=False)
        assert r.status_code == 200, path
        assert r.json()["version"]["number"].startswith("8.")
        assert r.headers["x-elastic-product"] == "Elasticsearch"
    assert client.head("/api/v1/", headers=auth).status_code == 200
    lic = client.get("/api/v1/_license", headers=auth).json()["license"]
    assert (lic["type"], lic["status"]) == ("basic", "active")
    xpack = client.get("/api/v1/_xpack", headers=auth).json()
    assert xpack["license"]["status"] == "active"


# --- end to end -------------------------------------------------------------------


def test_winlogbeat_mimikatz_to_customer_mail(
    live_app: tuple[TestClient, dict[str, str]],
    smtp_server: tuple[str, int, Inbox],
    sqlite_db: Database,
) -> None:
    client, tokens = live_app
    inbox = smtp_server[2]
    body = bulk_body(
        ({"create": {"_index": "winlogbeat-8.17.0"}}, mimikatz_process_creation(datetime.now(UTC)))
    )
    started = time.monotonic()
    r = client.post("/api/v1/_bulk", content=body, headers=basic(tokens[WINDOWS_SENSOR]))
    assert r.status_code == 200 and r.json()["errors"] is False, r.text
    [mail] = wait_for(lambda: list(inbox.messages), timeout=60)
    latency = time.monotonic() - started
    assert mail["Subject"].startswith("【重大】東海精密部品株式会社")
    assert mail["To"] == "suzuki@tokai-parts.example.jp"

    def incidents() -> list[Incident]:
        with sqlite_db.session() as s:
            return list(s.scalars(select(Incident)).all())

    assert incidents() and all(i.severity == "serious" for i in incidents())
    # The mail is recorded (notified_at) in the commit after the SMTP server's answer, so
    # the test may read the incident between the two.
    wait_for(lambda: all(i.notified_at is not None for i in incidents()), timeout=10)
    print(f"_bulk → mail received: {latency:.2f} s")


def test_overload_is_429_with_retry_after_and_nothing_stored(
    app_and_tokens: tuple[TestClient, dict[str, str]], sqlite_db: Database, settings: Settings
) -> None:
    """Issue 5 point 4 on the _bulk path too: a shipper is told to come back, nothing is lost."""
    client, tokens = app_and_tokens
    settings.ingest_max_pending = 3  # no worker here: accepted events stay pending
    now = datetime.now(UTC)

    def body(first: int) -> bytes:
        return bulk_body(
            *[
                (
                    {"index": {"_id": f"o-{n}"}},
                    mimikatz_process_creation(now - timedelta(seconds=n)),
                )
                for n in (first, first + 1)
            ]
        )

    auth = bearer(tokens[WINDOWS_SENSOR])
    assert client.post("/api/v1/_bulk", content=body(1), headers=auth).status_code == 200
    r = client.post("/api/v1/_bulk", content=body(3), headers=auth)
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
    assert r.json()["stored"] == 0
    wait_drained(client)
    with sqlite_db.session() as s:
        assert {e.event_uid for e in s.scalars(select(StoredEvent))} == {"o-1", "o-2"}
