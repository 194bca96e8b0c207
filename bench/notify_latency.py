"""End to end: a serious event accepted → customer mail received, under load (issue 5; not a test).

    .venv/bin/python bench/notify_latency.py                 # 60 s of load, ~2 minutes in all
    .venv/bin/python bench/notify_latency.py --seconds 20 --rate 500 --no-readme

* A fresh tmp data dir seeded with ``otasuke demo --no-serve`` (subprocess,
  ``OTASUKE_DATA_DIR``); FortiGate sensors with known tokens are added with
  ``otasuke.tenancy.admin.add_sensor`` to the demo customers that watch a UTM
  (tokai-parts, sakura-clinic) plus one background sensor.
* An aiosmtpd server on a free 127.0.0.1 port records each mail's arrival time
  (``time.monotonic()`` in its handler, same process as the sender, so comparable).
* ``otasuke serve`` in a subprocess (uvicorn + in-process worker + syslog receivers on
  free ports), SMTP pointed at the loopback server. A first serious probe must come
  back as a mail before measuring: the detector is loaded and the worker runs.
* Background: benign FortiGate traffic over ``POST /api/v1/ingest``, ``--rate`` events/s
  (default 1,000) as batches of 100 every 100 ms, unique event ids; a 429 is counted
  and the batch is dropped (it is background only).
* Every ``--interval`` s (default 2) one serious line (traffic to the Emotet C2
  66.210.228.178, bundled IOC list) with its own ``srcname`` so each makes its own
  incident and mail, for the next customer in turn. Latency = mail received minus the
  moment just before the first POST of that line (a 429 is retried after 0.2 s, the
  wait counts). A mail not received within 60 s of its send is lost.

Client, server and SMTP sink share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx2
import orjson

ROOT = Path(__file__).resolve().parents[1]
README = Path(__file__).resolve().parent / "README.md"
SECTION = "## `notify_latency.py`: serious event → customer mail under load (issue 5)"
EMOTET_C2 = "66.210.228.178"  # in the bundled maltrail emotet list
CUSTOMERS = ("tokai-parts", "sakura-clinic")
LOST_AFTER = 60.0
BATCH = 100
HOST_RE = re.compile(r"BENCH-[A-Z0-9]+")
JST = ZoneInfo("Asia/Tokyo")


def fortigate_line(dst: str, srcip: str, srcname: str, seq: int) -> str:
    t = datetime.now(JST)
    return (
        f'date={t:%Y-%m-%d} time={t:%H:%M:%S} devname="FG60F-BENCH" type="traffic" '
        f'subtype="forward" level="notice" srcip={srcip} srcport={1024 + seq % 60000} '
        f'dstip={dst} dstport=443 action="accept" service="HTTPS" srcname="{srcname}"'
    )


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the loopback SMTP server ------------------------------------------------------------


class Inbox:
    """First arrival time per bench host name found in the subject."""

    def __init__(self) -> None:
        self.received: dict[str, float] = {}
        self.other = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.monotonic()
        msg = message_from_bytes(envelope.content, policy=policy.default)
        m = HOST_RE.search(str(msg.get("Subject", "")))
        with self.lock:
            if m is None:
                self.other += 1
            else:
                self.received.setdefault(m.group(0), now)
        return "250 OK"

    def wait(self, host: str, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if host in self.received:
                    return self.received[host]
            time.sleep(0.05)
        return None


# --- setup -------------------------------------------------------------------------------


def otasuke_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "otasuke"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "otasuke"]


def prepare(data_dir: Path) -> tuple[dict[str, str], str]:
    """Seed the demo, add bench sensors; return {customer: token} and the background token."""
    env = {**os.environ, "OTASUKE_DATA_DIR": str(data_dir)}
    subprocess.run(
        [*otasuke_cmd(), "demo", "--no-serve"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=600,
        stdout=subprocess.DEVNULL,
    )
    from sqlalchemy import select

    from otasuke.db.engine import Database
    from otasuke.db.models import Organization
    from otasuke.tenancy import admin
    from otasuke.tenancy.scope import Viewer

    db = Database(f"sqlite:///{data_dir / 'otasuke.db'}")
    tokens: dict[str, str] = {}
    with db.session() as s:
        for slug in CUSTOMERS:
            org = s.scalars(select(Organization).where(Organization.slug == slug)).one()
            _, tokens[slug] = admin.add_sensor(
                s, Viewer.system(), org, kind="fortigate", name="bench FortiGate (serious)"
            )
        org = s.scalars(select(Organization).where(Organization.slug == CUSTOMERS[0])).one()
        _, background = admin.add_sensor(
            s, Viewer.system(), org, kind="fortigate", name="bench FortiGate (background)"
        )
    db.dispose()
    return tokens, background


# --- load --------------------------------------------------------------------------------


class Run:
    def __init__(self) -> None:
        self.bg_accepted = 0
        self.bg_429 = 0
        self.bg_errors = 0
        self.bg_skipped = 0  # ticks skipped because too many requests were in flight
        self.serious_429 = 0
        self.sent: dict[str, float] = {}  # host → monotonic time just before the first POST
        self.customer: dict[str, str] = {}
        self.loads: list[float] = []


def envelope(raw: str, event_id: str) -> bytes:
    return orjson.dumps({"format": "fortigate", "raw": raw, "event_id": event_id})


def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}


async def post_serious(
    c: httpx2.AsyncClient, run: Run, token: str, host: str, seq: int, deadline: float
) -> None:
    raw = fortigate_line(EMOTET_C2, f"192.168.20.{seq % 250 + 1}", host, seq)
    body = envelope(raw, f"bench-serious-{host}")
    run.sent[host] = time.monotonic()
    while time.monotonic() < deadline:
        r = await c.post("/api/v1/ingest", content=body, headers=headers(token))
        if r.status_code == 202:
            return
        if r.status_code == 429:
            run.serious_429 += 1
            await asyncio.sleep(0.2)
            continue
        raise RuntimeError(f"serious line refused: {r.status_code} {r.text[:200]}")


async def load(
    url: str, tokens: dict[str, str], background: str, args: argparse.Namespace, run: Run
) -> float:
    per_tick = max(1, round(args.rate * 0.1))
    limits = httpx2.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx2.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
        inflight: set[asyncio.Task[Any]] = set()
        seq = 0

        async def post_background(body: bytes) -> None:
            try:
                r = await c.post("/api/v1/ingest", content=body, headers=headers(background))
            except httpx2.HTTPError:
                run.bg_errors += 1
                return
            if r.status_code == 202:
                run.bg_accepted += int(r.json()["accepted"])
            elif r.status_code == 429:
                run.bg_429 += 1
            else:
                run.bg_errors += 1

        started = time.monotonic()
        end = started + args.seconds
        tick = 0
        next_serious = started + 1.0
        n_serious = 0
        serious_tasks: list[asyncio.Task[Any]] = []
        while True:
            at = started + tick * 0.1
            if at >= end:
                break
            delay = at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if tick % 10 == 0:
                run.loads.append(float(Path("/proc/loadavg").read_text().split()[0]))
            if len(inflight) >= 32:
                run.bg_skipped += 1
            else:
                body = b"\n".join(
                    envelope(
                        fortigate_line(
                            "203.0.113.9",
                            f"192.168.10.{(seq + i) % 250 + 1}",
                            f"PC{(seq + i) % 40:02d}",
                            seq + i,
                        ),
                        f"bench-bg-{seq + i}",
                    )
                    for i in range(per_tick)
                )
                seq += per_tick
                t = asyncio.create_task(post_background(body))
                inflight.add(t)
                t.add_done_callback(inflight.discard)
            if time.monotonic() >= next_serious:
                slug = CUSTOMERS[n_serious % len(CUSTOMERS)]
                host = f"BENCH-{n_serious:04d}"
                run.customer[host] = slug
                serious_tasks.append(
                    asyncio.create_task(
                        post_serious(c, run, tokens[slug], host, n_serious, end + LOST_AFTER)
                    )
                )
                n_serious += 1
                next_serious += args.interval
            tick += 1
        elapsed = time.monotonic() - started
        await asyncio.gather(*inflight, *serious_tasks, return_exceptions=True)
    return elapsed


# --- main --------------------------------------------------------------------------------


def machine() -> tuple[int, str]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return os.cpu_count() or 0, cpu


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"otasuke serve exited with {proc.returncode}")
        try:
            httpx2.get(url + "/metrics", timeout=1)
            return
        except httpx2.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("otasuke serve did not answer")


def pct(values: list[float], p: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="load duration")
    parser.add_argument("--rate", type=float, default=1000.0, help="background events/s")
    parser.add_argument("--interval", type=float, default=2.0, help="s between serious lines")
    parser.add_argument("--no-readme", action="store_true", help="do not append to README.md")
    args = parser.parse_args()
    from aiosmtpd.controller import Controller

    command = "python bench/notify_latency.py " + shlex.join(sys.argv[1:])
    started_at = datetime.now(UTC)
    load_before = loadavg()
    run = Run()
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    with tempfile.TemporaryDirectory(prefix="otasuke-bench-", dir=os.environ.get("TMPDIR")) as d:
        data_dir = Path(d)
        t0 = time.monotonic()
        tokens, background = prepare(data_dir)
        print(f"seeded in {time.monotonic() - t0:.1f} s", flush=True)
        port = free_port()
        env = {
            **os.environ,
            "OTASUKE_DATA_DIR": str(data_dir),
            "OTASUKE_HOST": "127.0.0.1",
            "OTASUKE_PORT": str(port),
            "OTASUKE_SMTP_HOST": "127.0.0.1",
            "OTASUKE_SMTP_PORT": str(smtp.port),
            "OTASUKE_SYSLOG_TCP_PORT": str(free_port()),
            "OTASUKE_SYSLOG_UDP_PORT": str(free_port(socket.SOCK_DGRAM)),
        }
        log = (data_dir / "serve.log").open("wb")
        proc = subprocess.Popen(
            [*otasuke_cmd(), "serve"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(url, proc, 120)
            t0 = time.monotonic()
            asyncio.run(probe(url, tokens[CUSTOMERS[0]], run))
            if inbox.wait("BENCH-PROBE", 180) is None:
                raise RuntimeError("the probe mail did not arrive within 180 s")
            print(f"server up, probe mail after {time.monotonic() - t0:.1f} s", flush=True)
            elapsed = asyncio.run(load(url, tokens, background, args, run))
            last = max(run.sent.values(), default=time.monotonic())
            for host, sent in run.sent.items():
                inbox.wait(host, max(0.0, sent + LOST_AFTER - time.monotonic()))
                if time.monotonic() > last + LOST_AFTER:
                    break
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            log.close()
            smtp.stop()
    report(args, run, inbox, elapsed, started_at, load_before, command)


async def probe(url: str, token: str, run: Run) -> None:
    async with httpx2.AsyncClient(base_url=url, timeout=60) as c:
        await post_serious(c, run, token, "BENCH-PROBE", 0, time.monotonic() + 60)
    del run.sent["BENCH-PROBE"]


def report(
    args: argparse.Namespace,
    run: Run,
    inbox: Inbox,
    elapsed: float,
    started_at: datetime,
    load_before: str,
    command: str,
) -> None:
    latencies: list[float] = []
    lost: list[str] = []
    for host, sent in run.sent.items():
        got = inbox.received.get(host)
        if got is None or got - sent > LOST_AFTER:
            lost.append(host)
        else:
            latencies.append(got - sent)
    latencies.sort()
    cores, cpu = machine()
    load_during = f"{min(run.loads):.2f}–{max(run.loads):.2f}" if run.loads else "?"
    rows = [
        ("serious events sent", f"{len(run.sent)}"),
        ("mails received (≤ 60 s)", f"{len(latencies)}"),
        (
            "mails lost (none within 60 s)",
            f"{len(lost)}" + (f" ({', '.join(lost)})" if lost else ""),
        ),
    ]
    if latencies:
        rows += [
            ("latency p50", f"{pct(latencies, 50):.2f} s"),
            ("latency p95", f"{pct(latencies, 95):.2f} s"),
            ("latency p99", f"{pct(latencies, 99):.2f} s"),
            ("latency max", f"{latencies[-1]:.2f} s"),
        ]
    rows += [
        (
            "background accepted",
            f"{run.bg_accepted:,} events in {elapsed:.1f} s = "
            f"{run.bg_accepted / elapsed:,.0f} events/s (target {args.rate:,.0f})",
        ),
        ("429s seen (background / serious)", f"{run.bg_429} / {run.serious_429}"),
        ("background errors / skipped ticks", f"{run.bg_errors} / {run.bg_skipped}"),
        ("load average 1 min (during load)", load_during),
    ]
    p99 = pct(latencies, 99) if latencies else float("inf")
    verdict = "met" if p99 <= 10 and not lost else "NOT met"
    head = (
        f"{started_at:%Y-%m-%d %H:%M} UTC, {cores} CPUs ({cpu}), Python "
        f"{platform.python_version()}; load average {load_before} → {loadavg()}"
    )
    table = ["| measure | value |", "|---|---:|", *(f"| {k} | {v} |" for k, v in rows)]
    print(head)
    print("\n".join(table))
    print(f"target p99 ≤ 10 s: {verdict}")
    if args.no_readme:
        return
    text = README.read_text(encoding="utf-8")
    add = []
    if SECTION not in text:
        add.append(f"\n{SECTION}\n\n" + USAGE)
    add.append(
        f"\nRun {started_at:%Y-%m-%d %H:%M} UTC, `{command}`; machine: {cores} CPUs "
        f"({cpu}), Python {platform.python_version()}; load average (1/5/15 min) "
        f"{load_before} → {loadavg()}, 1 min during the load {load_during}.\n\n"
        + "\n".join(table)
        + f"\n\nTarget p99 ≤ 10 s: **{verdict}**.\n"
    )
    README.write_text(text.rstrip("\n") + "\n" + "".join(add), encoding="utf-8")


USAGE = """\
End to end under load: a serious line accepted by `POST /api/v1/ingest` → the customer's
mail received by a loopback SMTP server (aiosmtpd), with `otasuke serve` (uvicorn,
in-process worker, SQLite) in a subprocess on a fresh `otasuke demo --no-serve` data dir.
Background: benign FortiGate traffic at 1,000 events/s (100 every 100 ms, unique event
ids, a 429 is counted and the batch dropped). Every 2 s one serious line (traffic to
the Emotet C2 66.210.228.178) with its own `srcname`, alternately for tokai-parts and
sakura-clinic; latency from just before its first POST to the mail's arrival. Lost =
not received within 60 s. Target (issue 5): p99 ≤ 10 s (the standard allows 60 min).
Client, server and SMTP sink share the machine's cores.

    .venv/bin/python bench/notify_latency.py            # --seconds 60, ~2 minutes in all
"""


if __name__ == "__main__":
    main()
