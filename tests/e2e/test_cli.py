"""The ``otasuke`` command as a newcomer uses it: demo, customers, sensors, import, incidents."""

from __future__ import annotations

import email
import mailbox
import os
import subprocess
import sys
from email import policy
from pathlib import Path

import orjson
import pytest

from otasuke.db.engine import Database

OTASUKE = [sys.executable, "-m", "otasuke.cli"]


def run(
    data_dir: Path, *args: str, check: bool = True, database_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OTASUKE_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    env.pop("OTASUKE_DATABASE_URL", None)
    if database_url is not None:
        env["OTASUKE_DATABASE_URL"] = database_url
    env.pop("OTASUKE_SMTP_HOST", None)
    proc = subprocess.run([*OTASUKE, *args], capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"otasuke {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("demo") / "data"
    first = run(data, "demo", "--no-serve")
    assert "admin@provider.example.jp" in first.stdout
    second = run(data, "demo", "--no-serve")  # idempotent
    assert "admin@provider.example.jp" in second.stdout
    return data


def test_help_lists_the_commands(tmp_path: Path) -> None:
    out = run(tmp_path, "--help").stdout
    for command in ("demo", "serve", "import", "detect", "customers", "sensors", "incidents"):
        assert command in out


def test_demo_creates_three_customers_with_contracts_and_sensors(demo_dir: Path) -> None:
    customers = orjson.loads(run(demo_dir, "customers", "--format", "json").stdout)
    assert {c["slug"] for c in customers} == {"tokai-parts", "sakura-clinic", "yamada-office"}
    tokai = next(c for c in customers if c["slug"] == "tokai-parts")
    assert tokai["contracts"][0]["device"] == "Fortinet FortiGate 60F"
    assert {s["state"] for s in tokai["sensors"]} <= {"ok", "silent", "never"}
    assert any(s["events"] > 0 for s in tokai["sensors"])


def test_demo_raised_serious_incident_and_sent_mail(demo_dir: Path) -> None:
    incidents = orjson.loads(
        run(demo_dir, "incidents", "--customer", "tokai-parts", "--format", "json").stdout
    )
    serious = [i for i in incidents if i["severity"] == "serious"]
    assert serious, incidents
    assert all(i["notify_deadline"] and i["notified_at"] for i in serious)
    assert all(i["customer"] == "tokai-parts" for i in incidents)
    box = mailbox.Maildir(
        demo_dir / "maildir",
        create=False,
        factory=lambda f: email.message_from_binary_file(f, policy=policy.default),
    )
    subjects = [str(m["Subject"]) for m in box]
    assert any(s.startswith("【重大】東海精密部品株式会社") for s in subjects), subjects
    # a second demo run notified nobody twice
    assert len(subjects) == len(set((str(m["X-Otasuke-Incident"])) for m in box))


def test_sensors_add_prints_token_once(demo_dir: Path) -> None:
    out = run(
        demo_dir,
        "sensors",
        "add",
        "--customer",
        "yamada-office",
        "--kind",
        "fortigate",
        "--name",
        "新UTM",
    ).stdout
    token = out.strip().splitlines()[-1]
    assert token.startswith("osk_") and len(token) > 30
    customers = orjson.loads(run(demo_dir, "customers", "--format", "json").stdout)
    yamada = next(c for c in customers if c["slug"] == "yamada-office")
    assert token not in orjson.dumps(customers).decode()  # stored hashed, never shown again
    assert any(
        s["name"] == "新UTM" and token.startswith(s["token_prefix"]) for s in yamada["sensors"]
    )
    bad = run(
        demo_dir,
        "sensors",
        "add",
        "--customer",
        "nobody",
        "--kind",
        "fortigate",
        "--name",
        "x",
        check=False,
    )
    assert bad.returncode == 2 and "customer" in bad.stderr


def test_import_reports_counts_and_rejections(demo_dir: Path, tmp_path: Path) -> None:
    f = tmp_path / "fg.log"
    f.write_text(
        'date=2026-11-24 time=09:00:00 devname="FG" type="utm" subtype="ips" level="alert" '
        'srcip=203.0.113.9 dstip=192.168.1.5 action="dropped" attack="Test.Attack" '
        'severity="high" attackid=1\n'
        'date=2026-11-24 time=09:00:01 devname="FG" type="utm" subtype="ips" level="alert" '
        'srcip=203.0.113.9 dstip=192.168.1.5 action="dropped" attack="Test.Attack" '
        'severity="high" attackid=1\n',
        encoding="utf-8",
    )
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01 not a log")
    out = run(demo_dir, "import", "--customer", "yamada-office", str(f), str(junk)).stdout
    assert "events accepted" in out and "2" in out
    assert "rejected" in out and "junk.bin" in out


@pytest.mark.postgres
def test_demo_on_postgresql(pg_db: Database, tmp_path: Path) -> None:
    """OTASUKE_DATABASE_URL switches the same commands to PostgreSQL."""
    run(tmp_path, "demo", "--no-serve", database_url=pg_db.url)
    incidents = orjson.loads(
        run(tmp_path, "incidents", "--format", "json", database_url=pg_db.url).stdout
    )
    assert {i["customer"] for i in incidents} == {"tokai-parts", "sakura-clinic", "yamada-office"}
    assert any(i["severity"] == "serious" and i["notified_at"] for i in incidents)
    assert not (tmp_path / "otasuke.db").exists()  # nothing went to SQLite


def test_every_command_answers_help_and_detect_starts_without_the_database(
    tmp_path: Path,
) -> None:
    """Commands are imported when used: each one's help works, and ``otasuke detect``
    (an analyst's tool without a database) starts without the database and web layers."""
    from otasuke.cli import COMMANDS

    listing = run(tmp_path, "--help").stdout
    for name in COMMANDS:
        assert name in listing
        assert f"otasuke.cli {name} [OPTIONS]" in run(tmp_path, name, "--help").stdout
    probe = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from otasuke.cli import app\n"
        "result = CliRunner().invoke(app, ['detect', '--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(sorted(m for m in ('sqlalchemy', 'alembic', 'starlette', 'nats') if m in sys.modules))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert loaded.stdout.strip() == "[]", loaded.stdout
