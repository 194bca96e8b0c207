"""Syslog receivers (syslog 受信): UDP, TCP and TLS, one asyncio loop in a thread of its own.

Every line is written to the spool before the receiver goes on: a TCP connection
is not read further while its lines' append (and fsync) is pending, so a slow
disk slows the sender down instead of losing lines (backpressure). UDP cannot be
acknowledged or slowed: datagrams are counted as they arrive, and if the spool
falls ``udp_queue_lines`` behind, further datagrams are counted as shed.

The peer's address picks the sensor (``Sensor.syslog_source``; the table is
cached and refreshed every ``sensor_refresh_seconds``, and at once — at most every
few seconds — when an unknown peer shows up). Lines from a peer no sensor claims
are spooled too and end in the quarantine as "unknown syslog source <ip>".

Syslog over TLS (RFC 5425) is a third listener, started only when ``tls_port``,
``tls_certfile`` and ``tls_keyfile`` are all set: the same per-connection handler as
plain TCP (octet-counted framing as RFC 5425 asks, LF framing accepted too), with an
:class:`ssl.SSLContext` given to :func:`asyncio.start_server`. The sensor is still
picked by the peer's address; client certificates are not asked for.

:func:`start_syslog` starts the receivers and the drain (spool → store) and
returns a handle with ``stop()``.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select

from otasuke.db.engine import Database
from otasuke.db.models import Sensor
from otasuke.ingest.receivers.drain import Drain
from otasuke.ingest.receivers.framing import MAX_FRAME, FrameDecoder, FramingError
from otasuke.ingest.receivers.headers import decode, parse_syslog
from otasuke.ingest.spool import DEFAULT_SEGMENT_BYTES, RecoveryReport, Spool
from otasuke.settings import Settings

log = logging.getLogger(__name__)

FORMAT_BY_KIND: dict[str, str] = {
    "fortigate": "fortigate",
    "suricata": "suricata_eve",
    "paloalto": "paloalto",
    "cisco_asa": "cisco_asa",
    "sonicwall": "sonicwall",
    "sophos": "sophos",
    "pfsense": "filterlog",
    "iptables": "iptables",
}
"""Sensor kind → parser. Linux hosts (kind ``linux`` or ``syslog``) are routed per line:
sshd, kernel firewall lines, pf filterlog, else plain syslog text. Other kinds: a MSG
starting with ``{`` is ``jsonl``, any other text is kept as plain ``syslog``."""
WHOLE_LINE = frozenset(
    {"paloalto", "cisco_asa", "sonicwall", "sophos", "filterlog", "iptables", "sshd", "syslog"}
)
"""Parsers that read the syslog header themselves (time, host, program): they get the
whole line, not only the MSG, so their events keep the device's own time."""
SELF_DESCRIBING = frozenset({"fortigate", "suricata_eve"})
"""Formats whose record names its own device (``devname``, ``host``): the syslog
header's hostname (often a relay's) does not override it."""
READ_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class SyslogConfig:
    """Where the syslog receivers listen and how they spool (settings: see from_settings)."""

    spool_dir: Path
    tcp_host: str = "127.0.0.1"
    tcp_port: int | None = 5514
    """None: no TCP receiver; 0: any free port (tests)."""
    udp_host: str = "127.0.0.1"
    udp_port: int | None = 5514
    """None: no UDP receiver; 0: any free port (tests)."""
    fsync: bool = True
    """Off only to measure what durability costs: a crash of the machine may then lose lines."""
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    max_line_bytes: int = MAX_FRAME
    sensor_refresh_seconds: float = 30.0
    udp_queue_lines: int = 100_000
    drain: bool = True
    """Run the drain (spool → store) in this process."""
    drain_batch_records: int = 2000
    tls_host: str = "127.0.0.1"
    tls_port: int | None = None
    """None: no TLS receiver (the default); 0: any free port (tests). Needs both files below."""
    tls_certfile: Path | None = None
    """PEM server certificate (its chain may follow it in the same file)."""
    tls_keyfile: Path | None = None
    """PEM private key of ``tls_certfile``, unencrypted."""
    tls_handshake_timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> SyslogConfig:
        """From ``OTASUKE_SYSLOG_*`` settings where they exist, else the defaults."""

        given = {
            name: getattr(settings, setting)
            for name, setting in SETTING_NAMES.items()
            if hasattr(settings, setting)
        }
        for name in ("tls_certfile", "tls_keyfile"):
            if given.get(name) is not None:
                given[name] = Path(given[name])
        spool_dir = getattr(settings, "spool_dir", None) or settings.data_dir / "spool"
        return cls(spool_dir=Path(spool_dir), **given)


SETTING_NAMES = {
    "tcp_host": "syslog_tcp_host",
    "tcp_port": "syslog_tcp_port",
    "udp_host": "syslog_udp_host",
    "udp_port": "syslog_udp_port",
    "fsync": "spool_fsync",
    "segment_bytes": "spool_segment_bytes",
    "max_line_bytes": "syslog_max_line_bytes",
    "tls_host": "syslog_tls_host",
    "tls_port": "syslog_tls_port",
    "tls_certfile": "syslog_tls_certfile",
    "tls_keyfile": "syslog_tls_keyfile",
}
"""SyslogConfig field → the Settings field (OTASUKE_<NAME>) it is read from once it exists."""


class SyslogTlsError(ValueError):
    """The TLS receiver's settings are incomplete, or its certificate or key cannot be used."""


def tls_context(config: SyslogConfig) -> ssl.SSLContext:
    """The server context of the TLS receiver; SyslogTlsError names the setting at fault."""
    certfile, keyfile = config.tls_certfile, config.tls_keyfile
    for setting, path, marker in (
        ("syslog_tls_certfile", certfile, b"-----BEGIN CERTIFICATE-----"),
        ("syslog_tls_keyfile", keyfile, b"PRIVATE KEY-----"),
    ):
        if path is None:
            raise SyslogTlsError(
                f"syslog TLS: syslog_tls_port is set but {setting} is not "
                "(OTASUKE_" + setting.upper() + ")"
            )
        try:
            pem = path.read_bytes()
        except OSError as err:
            raise SyslogTlsError(f"syslog TLS: {setting} {path} cannot be read: {err}") from err
        if marker not in pem:
            raise SyslogTlsError(
                f"syslog TLS: {setting} {path} is not PEM (no {marker.decode().strip('-')!r})"
            )
    assert certfile is not None and keyfile is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError) as err:
        raise SyslogTlsError(
            f"syslog TLS: syslog_tls_certfile {certfile} and syslog_tls_keyfile {keyfile} "
            f"cannot be loaded together (encrypted key, or a key of another certificate?): {err}"
        ) from err
    return context


@dataclass(slots=True)
class ReceiverStats:
    """Counters since start (a seam for /metrics and ``otasuke status``)."""

    tcp_connections: int = 0
    tcp_lines: int = 0
    tls_connections: int = 0
    """Connections whose TLS handshake succeeded (they count in tcp_connections too)."""
    tls_lines: int = 0
    """Lines received over TLS (they count in tcp_lines too)."""
    udp_datagrams: int = 0
    udp_shed: int = 0
    """Datagrams dropped because the spool was too far behind (counted, never silent)."""
    acknowledged: int = 0
    """Lines appended to the spool and fsynced."""
    unknown_source: int = 0
    truncated: int = 0
    framing_errors: int = 0
    incomplete: int = 0
    """Connections that closed in the middle of a frame (never acknowledged)."""
    spool_errors: int = 0
    """TCP connections closed because the spool could not be written."""
    unknown_peers: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Route:
    sensor_id: int
    kind: str


def normalise_address(address: str) -> str:
    """``::ffff:192.0.2.1`` → ``192.0.2.1``; other addresses in their canonical form."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class SensorDirectory:
    """Peer address → sensor, from ``Sensor.syslog_source``, cached."""

    MIN_REFRESH_SECONDS = 2.0

    def __init__(self, db: Database) -> None:
        self.db = db
        self._routes: dict[str, Route] = {}
        self.loaded_at = 0.0

    def load(self) -> None:
        with self.db.sessions() as s:
            rows = s.execute(
                select(Sensor.id, Sensor.kind, Sensor.syslog_source).where(
                    Sensor.syslog_source.is_not(None)
                )
            ).all()
        self._routes = {normalise_address(str(src)): Route(sid, kind) for sid, kind, src in rows}
        self.loaded_at = time.monotonic()

    def lookup(self, address: str) -> Route | None:
        return self._routes.get(address)

    def stale(self, seconds: float) -> bool:
        return time.monotonic() - self.loaded_at >= seconds


def choose_format(kind: str, msg: str, app: str | None = None) -> str:
    """The parser for a line of a sensor of ``kind`` (see FORMAT_BY_KIND)."""
    fmt = FORMAT_BY_KIND.get(kind)
    if fmt is not None:
        return fmt
    if msg.lstrip().startswith("{"):
        return "jsonl"
    if kind in ("linux", "syslog"):
        if app == "sshd":
            return "sshd"
        if app == "filterlog":
            return "filterlog"
        if " SRC=" in msg and " DST=" in msg:
            return "iptables"
    return "syslog"


class SyslogReceiver:
    """The UDP, TCP and TLS servers of one process, writing to one spool."""

    def __init__(
        self,
        config: SyslogConfig,
        spool: Spool,
        directory: SensorDirectory,
        on_acknowledged: Callable[[int], None] | None = None,
    ) -> None:
        self.config = config
        self.spool = spool
        self.directory = directory
        self.on_acknowledged = on_acknowledged
        self.stats = ReceiverStats()
        self.tcp_port: int | None = None
        self.udp_port: int | None = None
        self.tls_port: int | None = None
        self._executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="spool-append")
        self._servers: list[asyncio.AbstractServer] = []
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_queue: list[bytes] = []
        self._udp_wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._refreshing = False

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        context = None
        if cfg.tls_port is not None:  # before any listener: a bad file stops the start
            context = tls_context(cfg)
        if cfg.tcp_port is not None:
            server = await asyncio.start_server(
                self._handle_tcp, cfg.tcp_host, cfg.tcp_port, limit=READ_CHUNK
            )
            self._servers.append(server)
            self.tcp_port = int(server.sockets[0].getsockname()[1])
        if cfg.tls_port is not None and context is not None:
            server = await asyncio.start_server(
                functools.partial(self._handle_tcp, transport="tls"),
                cfg.tls_host,
                cfg.tls_port,
                limit=READ_CHUNK,
                ssl=context,
                ssl_handshake_timeout=cfg.tls_handshake_timeout,
            )
            self._servers.append(server)
            self.tls_port = int(server.sockets[0].getsockname()[1])
        if cfg.udp_port is not None:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(cfg.udp_host, cfg.udp_port)
            )
            self._udp = transport
            self.udp_port = int(transport.get_extra_info("sockname")[1])
            self._spawn(self._flush_udp())
        self._spawn(self._refresh_periodically())

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        if self._udp is not None:
            self._udp.close()
        for writer in self._connections.values():
            writer.close()  # a pending append finishes first; its lines stay acknowledged
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=30)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._udp_queue:  # what arrived by UDP before the stop is still spooled
            await self.append(self._udp_queue)
            self._udp_queue = []
        for server in self._servers:
            await server.wait_closed()
        self._executor.shutdown(wait=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- lines → spool records -------------------------------------------------------

    def record(self, line: bytes, peer: str, route: Route | None, transport: str) -> bytes:
        """One received line as a spool record (the ingest envelope and its sensor)."""
        if route is None:
            self.stats.unknown_source += 1
            if peer not in self.stats.unknown_peers and len(self.stats.unknown_peers) < 1000:
                self.stats.unknown_peers.add(peer)
                log.warning("syslog from unknown source %s: kept in the quarantine", peer)
            text = decode(line).replace("\x00", "\\x00")
            return orjson.dumps(
                {"peer": peer, "sensor": None, "transport": transport, "line": text}
            )
        message = parse_syslog(line)
        msg = message.msg.replace("\x00", "\\x00")
        fmt = choose_format(route.kind, msg, message.app)
        host = None if fmt in SELF_DESCRIBING | WHOLE_LINE else message.hostname
        if fmt in WHOLE_LINE:
            msg = decode(line).replace("\x00", "\\x00")
        return orjson.dumps(
            {
                "peer": peer,
                "sensor": route.sensor_id,
                "transport": transport,
                "format": fmt,
                "raw": msg,
                "host": host,
            }
        )

    async def append(self, records: list[bytes]) -> None:
        """Append records to the spool (fsynced when configured) in the executor; count them."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.spool.append, records)
        self.stats.acknowledged += len(records)
        if self.on_acknowledged is not None:
            self.on_acknowledged(len(records))

    async def route(self, peer: str) -> Route | None:
        """The sensor claiming ``peer``; an unknown peer refreshes the table (rate-limited)."""
        route = self.directory.lookup(peer)
        if route is None and self.directory.stale(SensorDirectory.MIN_REFRESH_SECONDS):
            await self._refresh()
            route = self.directory.lookup(peer)
        return route

    async def _refresh(self) -> None:
        if self._refreshing:
            return
        self._refreshing = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self.directory.load)
        except Exception as err:  # the database may be down: keep the cached table
            log.warning("syslog: sensor table not refreshed: %s", err)
        finally:
            self._refreshing = False

    async def _refresh_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.sensor_refresh_seconds)
            await self._refresh()

    # --- TCP -----------------------------------------------------------------------

    async def _handle_tcp(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, transport: str = "tcp"
    ) -> None:
        """One TCP or TLS connection (for TLS, called once the handshake succeeded)."""
        self.stats.tcp_connections += 1
        tls = transport == "tls"
        if tls:
            self.stats.tls_connections += 1
        me = asyncio.current_task()
        if me is not None:
            self._connections[me] = writer
        peer = normalise_address(str(writer.get_extra_info("peername")[0]))
        route = await self.route(peer)
        decoder = FrameDecoder(self.config.max_line_bytes)
        try:
            while True:
                data = await reader.read(READ_CHUNK)
                frames = decoder.feed(data) if data else decoder.finish()
                if frames:
                    self.stats.tcp_lines += len(frames)
                    if tls:
                        self.stats.tls_lines += len(frames)
                    # Backpressure: the next read waits for this append and its fsync.
                    await self.append([self.record(f, peer, route, transport) for f in frames])
                if not data:
                    break
        except FramingError as err:
            self.stats.framing_errors += 1
            log.warning("syslog %s from %s: %s; connection closed", transport, peer, err)
        except (ConnectionError, ssl.SSLError):
            if decoder.pending().strip():
                self.stats.incomplete += 1
        except OSError as err:  # the spool's disk failed: these lines were not acknowledged
            self.stats.spool_errors += 1
            log.error(
                "syslog %s from %s: spool append failed, connection closed: %s",
                transport,
                peer,
                err,
            )
        finally:
            self.stats.truncated += decoder.truncated
            writer.close()
            if me is not None:
                self._connections.pop(me, None)

    # --- UDP -----------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.stats.udp_datagrams += 1
        if len(self._udp_queue) >= self.config.udp_queue_lines:
            self.stats.udp_shed += 1
            return
        peer = normalise_address(str(addr[0]))
        route = self.directory.lookup(peer)
        if route is None and self.directory.stale(SensorDirectory.MIN_REFRESH_SECONDS):
            self._spawn(self._refresh())
        line = data.rstrip(b"\r\n\x00")
        if len(line) > self.config.max_line_bytes:
            line = line[: self.config.max_line_bytes]
            self.stats.truncated += 1
        if line:
            self._udp_queue.append(self.record(line, peer, route, "udp"))
            self._udp_wake.set()

    async def _flush_udp(self) -> None:
        while True:
            await self._udp_wake.wait()
            self._udp_wake.clear()
            batch, self._udp_queue = self._udp_queue, []
            if not batch:
                continue
            try:
                await self.append(batch)
            except OSError as err:  # disk full or gone: the datagrams are counted as shed
                self.stats.udp_shed += len(batch)
                log.error("syslog udp: %d lines not spooled: %s", len(batch), err)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, receiver: SyslogReceiver) -> None:
        self.receiver = receiver

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.receiver.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.warning("syslog udp: %s", exc)


class SyslogHandle:
    """The running receivers and drain; ``stop()`` ends them (the spool keeps the rest)."""

    def __init__(
        self,
        config: SyslogConfig,
        db: Database,
        on_acknowledged: Callable[[int], None] | None = None,
    ) -> None:
        self.config = config
        self.spool = Spool(config.spool_dir, segment_bytes=config.segment_bytes, fsync=config.fsync)
        self.recovery: RecoveryReport = self.spool.report
        directory = SensorDirectory(db)
        directory.load()
        self.receiver = SyslogReceiver(config, self.spool, directory, on_acknowledged)
        self.drain = Drain(self.spool, db, batch_records=config.drain_batch_records)
        self._loop = asyncio.new_event_loop()
        self._stop_drain = threading.Event()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._loop_thread = threading.Thread(target=self._run_loop, name="syslog", daemon=True)
        self._drain_thread = threading.Thread(
            target=self.drain.run, args=(self._stop_drain,), name="syslog-drain", daemon=True
        )

    @property
    def stats(self) -> ReceiverStats:
        return self.receiver.stats

    @property
    def tcp_port(self) -> int | None:
        return self.receiver.tcp_port

    @property
    def udp_port(self) -> int | None:
        return self.receiver.udp_port

    @property
    def tls_port(self) -> int | None:
        return self.receiver.tls_port

    def run_in_loop(self, coro: Any, timeout: float = 30) -> Any:
        """Run ``coro`` in the receivers' event loop and return its result (another
        listener sharing this spool and sensor table starts and stops so: RELP)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> SyslogHandle:
        self._loop_thread.start()
        self._started.wait()
        if self._error is not None:
            self._loop_thread.join()
            self.spool.close()
            raise self._error
        if self.config.drain:
            self._drain_thread.start()
        log.info(
            "syslog receivers: tcp %s, udp %s, tls %s", self.tcp_port, self.udp_port, self.tls_port
        )
        return self

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.receiver.start())
        except BaseException as err:
            self._error = err
            self._started.set()
            self._loop.close()
            return
        self._started.set()
        self._loop.run_forever()
        self._loop.close()

    def stop(self) -> None:
        """Stop listening, spool what UDP already received, stop the drain, close the spool."""
        if self._loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(self.receiver.stop(), self._loop)
        future.result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=30)
        self._stop_drain.set()
        if self._drain_thread.is_alive():
            self._drain_thread.join(timeout=60)
        self.spool.close()


def start_syslog(
    settings: Settings,
    db: Database,
    config: SyslogConfig | None = None,
    *,
    on_acknowledged: Callable[[int], None] | None = None,
) -> SyslogHandle:
    """Start the syslog receivers and the drain; call ``.stop()`` on the handle to end them.

    ``on_acknowledged(n)`` is called (in the receivers' thread) each time ``n`` more
    lines are on disk: the seam for metrics, and what the fault tests count.
    """
    return SyslogHandle(config or SyslogConfig.from_settings(settings), db, on_acknowledged).start()
