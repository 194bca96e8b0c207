"""RELP receiver (RELP 受信): syslog with an acknowledgement per message (issue 5).

Plain TCP syslog has no application acknowledgement: what a sender wrote into the
socket and we had not read yet when we crashed is gone. RELP (Reliable Event Logging
Protocol, rsyslog's ``omrelp``/``imrelp``, also spoken by some UTMs and relays) answers
every message with ``rsp``; the sender keeps what was not answered and sends it again
after a reconnect. Here a message is answered ``200 OK`` only once its spool append
returned (fsynced): acknowledged means on disk (REQ-MON-NET). Several messages read
together are appended in one go and answered together (group commit), and the
connection is not read further while an append is pending (backpressure, as TCP).

The wire format (librelp's specification)::

    FRAME   = TXNR SP COMMAND SP DATALEN [SP DATA] TRAILER
    TXNR    = 1*9DIGIT          ; the sender's transaction number, echoed in the rsp
    COMMAND = 1*32ALPHA         ; open, syslog, close (rsp and serverclose go back)
    DATALEN = 1*9DIGIT          ; bytes of DATA; 0: no DATA
    TRAILER = LF

``open`` is answered with our offers (``relp_version=0``, ``commands=syslog``),
``syslog`` with ``200 OK`` after the append, ``close`` with ``200 OK`` followed by the
``serverclose`` hint, any other command with ``500``. A frame that breaks the format
(not digits where digits belong, a trailer that is not LF, DATA longer than
``relp_max_data_bytes``) closes the session with a logged reason, counted
(``otasuke_receiver_sessions_malformed_total{transport="relp"}``); the sender resends
the unanswered messages on its next session, so nothing it sent is acknowledged and lost.

The listener runs in the syslog receivers' event loop and writes into their spool
with their record format: the peer's address picks the sensor (unknown peers end in
the quarantine), the record's ``transport`` is ``relp``. RELP has no message id:
a message spooled whose ``rsp`` was lost in a crash arrives again (counted by the
fault test, not removed).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
from dataclasses import dataclass
from typing import Any, NamedTuple

from otasuke import __version__, metrics
from otasuke.errors import OtasukeError
from otasuke.ingest.receivers.syslog import (
    READ_CHUNK,
    SyslogConfig,
    SyslogHandle,
    SyslogReceiver,
    tls_context,
)
from otasuke.ingest.receivers.syslog import normalise_address as _normalise
from otasuke.settings import Settings

log = logging.getLogger(__name__)

MAX_TXNR_DIGITS = 9
MAX_COMMAND = 32
MAX_DATALEN_DIGITS = 9
DEFAULT_MAX_DATA = 64 * 1024
OFFERS = f"relp_version=0\nrelp_software=otasuke,{__version__}\ncommands=syslog"


class RelpFramingError(OtasukeError):
    """The byte stream is not RELP framing; the session is closed."""


class RelpFrame(NamedTuple):
    txnr: int
    command: str
    data: bytes


def _is_digits(b: bytes | bytearray) -> bool:
    return all(0x30 <= c <= 0x39 for c in b)


def _is_alpha(b: bytes | bytearray) -> bool:
    return all(0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A for c in b)


class RelpDecoder:
    """Split one session's byte stream into RELP frames; refuse anything else at once."""

    def __init__(self, max_data: int = DEFAULT_MAX_DATA) -> None:
        self.max_data = max_data
        self._buffer = bytearray()

    def pending(self) -> bytes:
        """Bytes of a frame not complete yet."""
        return bytes(self._buffer)

    def feed(self, data: bytes) -> list[RelpFrame]:
        """The frames ``data`` completes; RelpFramingError on a malformed one (the frames
        before it in the same call are lost to the caller, who closes the session: none
        of them was acknowledged)."""
        self._buffer += data
        frames: list[RelpFrame] = []
        pos = 0
        while True:
            parsed = self._one(pos)
            if parsed is None:
                break
            frame, pos = parsed
            frames.append(frame)
        del self._buffer[:pos]
        return frames

    def _field(self, pos: int, width: int, what: str, check: Any, ends: bytes) -> int | None:
        """Index of the byte ending the field at ``pos`` (one of ``ends``), None if not
        there yet; RelpFramingError if the field is empty, too long or of bad bytes."""
        buf = self._buffer
        end = -1
        for i in range(pos, min(len(buf), pos + width + 1)):
            if buf[i] in ends:
                end = i
                break
        field = buf[pos:end] if end >= 0 else buf[pos : pos + width + 1]
        if not check(field[:width]):
            raise RelpFramingError(
                f"RELP {what} expected, got {bytes(field[:40])!r}",
                hint="the sender does not speak RELP (librelp frame: "
                "TXNR SP COMMAND SP DATALEN [SP DATA] LF)",
            )
        if end < 0:
            if len(buf) - pos > width:
                raise RelpFramingError(
                    f"RELP {what} longer than {width} characters: {bytes(field[:40])!r}",
                    hint="the sender does not speak RELP",
                )
            return None
        if end == pos:
            raise RelpFramingError(f"RELP {what} is empty", hint="the sender does not speak RELP")
        return end

    def _one(self, pos: int) -> tuple[RelpFrame, int] | None:
        buf = self._buffer
        if pos >= len(buf):
            return None
        sp1 = self._field(pos, MAX_TXNR_DIGITS, "transaction number", _is_digits, b" ")
        if sp1 is None:
            return None
        sp2 = self._field(sp1 + 1, MAX_COMMAND, "command", _is_alpha, b" ")
        if sp2 is None:
            return None
        end = self._field(sp2 + 1, MAX_DATALEN_DIGITS, "data length", _is_digits, b" \n")
        if end is None:
            return None
        txnr = int(buf[pos:sp1])
        command = buf[sp1 + 1 : sp2].decode("ascii")
        datalen = int(buf[sp2 + 1 : end])
        if buf[end] == 0x0A:  # no DATA, the trailer at once
            if datalen:
                raise RelpFramingError(
                    f"RELP frame {txnr} {command}: data length {datalen} but no data",
                    hint="the sender does not speak RELP",
                )
            return RelpFrame(txnr, command, b""), end + 1
        if datalen > self.max_data:
            raise RelpFramingError(
                f"RELP frame {txnr} {command}: {datalen} bytes of data, more than "
                f"relp_max_data_bytes ({self.max_data})",
                hint="raise OTASUKE_RELP_MAX_DATA_BYTES or lower the sender's message size "
                "(rsyslog: global(maxMessageSize=…))",
            )
        trailer = end + 1 + datalen
        if trailer >= len(buf):
            return None
        if buf[trailer] != 0x0A:
            raise RelpFramingError(
                f"RELP frame {txnr} {command}: no LF after its {datalen} bytes of data "
                f"(got {bytes(buf[trailer : trailer + 1])!r})",
                hint="the data length does not match the data",
            )
        return RelpFrame(txnr, command, bytes(buf[end + 1 : trailer])), trailer + 1


def response(txnr: int, code: int, text: str, offers: str = "") -> bytes:
    """An ``rsp`` frame: ``TXNR rsp DATALEN CODE SP TEXT [LF offers] LF``."""
    data = f"{code} {text}" + (f"\n{offers}" if offers else "")
    body = data.encode("utf-8")
    return b"%d rsp %d %s\n" % (txnr, len(body), body)


SERVERCLOSE = b"0 serverclose 0\n"


@dataclass(slots=True)
class RelpStats:
    """Counters since start (what the tests and ``/metrics`` read)."""

    sessions: int = 0
    messages: int = 0
    """syslog frames received."""
    acknowledged: int = 0
    """syslog frames appended to the spool and answered 200."""
    malformed: int = 0
    """Sessions closed because of a malformed frame or a command out of order."""
    incomplete: int = 0
    """Sessions that ended in the middle of a frame (never acknowledged)."""
    spool_errors: int = 0
    """Sessions closed because the spool could not be written (nothing acknowledged)."""


@dataclass(frozen=True, slots=True)
class RelpConfig:
    host: str = "127.0.0.1"
    port: int | None = None
    """None: no RELP receiver (the default); 0: any free port (tests)."""
    max_data_bytes: int = DEFAULT_MAX_DATA
    tls_port: int | None = None
    """None: no RELP over TLS (the default); 0: any free port (tests). Uses the syslog
    TLS receiver's certificate and key (``syslog_tls_certfile``, ``syslog_tls_keyfile``)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> RelpConfig:
        return cls(
            settings.relp_host,
            settings.relp_port,
            settings.relp_max_data_bytes,
            settings.relp_tls_port,
        )

    @property
    def enabled(self) -> bool:
        return self.port is not None or self.tls_port is not None


def relp_tls_context(syslog: SyslogConfig) -> ssl.SSLContext:
    """The server context of RELP over TLS: the syslog TLS certificate and key."""
    for setting, path in (
        ("syslog_tls_certfile", syslog.tls_certfile),
        ("syslog_tls_keyfile", syslog.tls_keyfile),
    ):
        if path is None:
            raise OtasukeError(
                f"relp_tls_port is set but {setting} is not",
                field="relp_tls_port",
                hint=f"RELP over TLS uses the syslog TLS certificate and key: set "
                f"OTASUKE_{setting.upper()}, or unset OTASUKE_RELP_TLS_PORT",
            )
    return tls_context(syslog)


class RelpServer:
    """RELP sessions writing through a running :class:`SyslogReceiver` (its loop, spool,
    sensor table and record format)."""

    def __init__(self, config: RelpConfig, receiver: SyslogReceiver) -> None:
        self.config = config
        self.receiver = receiver
        self.stats = RelpStats()
        self.port: int | None = None
        self.tls_port: int | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._sessions: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    async def start(self) -> None:
        cfg = self.config
        context = None
        if cfg.tls_port is not None:  # before any listener: a bad file stops the start
            context = relp_tls_context(self.receiver.config)
        if cfg.port is not None:
            server = await asyncio.start_server(self._session, cfg.host, cfg.port, limit=READ_CHUNK)
            self._servers.append(server)
            self.port = int(server.sockets[0].getsockname()[1])
        if cfg.tls_port is not None:
            server = await asyncio.start_server(
                functools.partial(self._session, transport="relp-tls"),
                cfg.host,
                cfg.tls_port,
                limit=READ_CHUNK,
                ssl=context,
                ssl_handshake_timeout=self.receiver.config.tls_handshake_timeout,
            )
            self._servers.append(server)
            self.tls_port = int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening; tell open sessions (``serverclose``) and close them. An append
        in progress finishes first and is answered if the socket still takes it."""
        for server in self._servers:
            server.close()
        for writer in self._sessions.values():
            if not writer.is_closing():
                with contextlib.suppress(ConnectionError, RuntimeError):
                    writer.write(SERVERCLOSE)
            writer.close()
        if self._sessions:
            await asyncio.wait(list(self._sessions), timeout=30)
        for server in self._servers:
            await server.wait_closed()

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, transport: str = "relp"
    ) -> None:
        """One RELP session (over TLS: called once the handshake succeeded)."""
        self.stats.sessions += 1
        me = asyncio.current_task()
        if me is not None:
            self._sessions[me] = writer
        peer = _normalise(str(writer.get_extra_info("peername")[0]))
        route = await self.receiver.route(peer)
        decoder = RelpDecoder(self.config.max_data_bytes)
        opened = False
        try:
            while True:
                data = await reader.read(READ_CHUNK)
                if not data:
                    if decoder.pending().strip():
                        self.stats.incomplete += 1
                    break
                records: list[bytes] = []
                answers: list[int] = []
                for frame in decoder.feed(data):
                    if frame.command == "syslog" and opened:
                        answers.append(frame.txnr)
                        if frame.data:
                            records.append(self.receiver.record(frame.data, peer, route, transport))
                        continue
                    # Anything else: what came before is appended and answered first.
                    await self._commit(records, answers, writer, transport)
                    records, answers = [], []
                    if frame.command == "open" and not opened:
                        opened = True
                        writer.write(response(frame.txnr, 200, "OK", OFFERS))
                    elif frame.command == "close":
                        writer.write(response(frame.txnr, 200, "OK") + SERVERCLOSE)
                        await writer.drain()
                        return
                    elif not opened:
                        raise RelpFramingError(
                            f"RELP {frame.command} before open", hint="the session starts with open"
                        )
                    else:
                        writer.write(
                            response(frame.txnr, 500, f"command {frame.command!r} not supported")
                        )
                # Backpressure: the next read waits for this append and its fsync.
                await self._commit(records, answers, writer, transport)
        except RelpFramingError as err:
            self.stats.malformed += 1
            metrics.count_malformed(transport)
            log.warning("%s from %s: %s; session closed", transport, peer, err)
        except (ConnectionError, ssl.SSLError):
            if decoder.pending().strip():
                self.stats.incomplete += 1
        except OSError as err:  # the spool's disk failed: nothing of this batch was answered
            self.stats.spool_errors += 1
            log.error("%s from %s: spool append failed, session closed: %s", transport, peer, err)
        finally:
            writer.close()
            if me is not None:
                self._sessions.pop(me, None)

    async def _commit(
        self,
        records: list[bytes],
        answers: list[int],
        writer: asyncio.StreamWriter,
        transport: str,
    ) -> None:
        """Append ``records`` (one fsync), then answer each of ``answers`` 200 OK."""
        if not answers:
            return
        self.stats.messages += len(answers)
        metrics.count_received(transport, len(answers))
        if records:
            await self.receiver.append(records)
        self.stats.acknowledged += len(answers)
        writer.write(b"".join(response(txnr, 200, "OK") for txnr in answers))
        await writer.drain()


class RelpHandle:
    """A running RELP listener in a syslog handle's loop; ``stop()`` before the handle's."""

    def __init__(self, server: RelpServer, syslog: SyslogHandle) -> None:
        self.server = server
        self.syslog = syslog

    @property
    def port(self) -> int | None:
        return self.server.port

    @property
    def tls_port(self) -> int | None:
        return self.server.tls_port

    @property
    def stats(self) -> RelpStats:
        return self.server.stats

    def stop(self) -> None:
        self.syslog.run_in_loop(self.server.stop(), timeout=60)


def start_relp(
    settings: Settings, syslog: SyslogHandle, config: RelpConfig | None = None
) -> RelpHandle | None:
    """Start the RELP listener beside the running syslog receivers (None when
    ``relp_port`` and ``relp_tls_port`` are unset)."""
    config = config or RelpConfig.from_settings(settings)
    if not config.enabled:
        return None
    server = RelpServer(config, syslog.receiver)
    try:
        syslog.run_in_loop(server.start())
    except OSError as err:
        raise OtasukeError(
            f"the RELP receiver cannot listen on {config.host} port {config.port} "
            f"(TLS: {config.tls_port}): {err}",
            field="relp_port",
            hint="another process uses the port, or the address is not this machine's: "
            "change OTASUKE_RELP_PORT / OTASUKE_RELP_TLS_PORT / OTASUKE_RELP_HOST",
        ) from err
    log.info("relp receiver: %s port %s, tls %s", config.host, server.port, server.tls_port)
    return RelpHandle(server, syslog)
