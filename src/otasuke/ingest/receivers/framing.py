"""TCP syslog framing (RFC 6587): newline-terminated or octet-counted, per connection.

The first frame decides: a connection whose data starts with digits and a space
(``123 <34>1 2026-…``) is octet-counted, any other is newline-terminated (LF;
a CR before it is removed). rsyslog's ``TCP_Framing="octet-counted"`` and
``logger --octet-count`` send the first, FortiGate and ``logger --tcp`` the second.

A frame longer than ``max_frame`` is cut there and counted in ``truncated``
(its first ``max_frame`` bytes are kept, as syslog relays do); an octet count
that is not a number below ``max_frame`` cannot be resynchronised and raises
:class:`FramingError` (the receiver closes the connection and counts it).
"""

from __future__ import annotations

from otasuke.errors import OtasukeError

MAX_FRAME = 64 * 1024


class FramingError(OtasukeError):
    """The byte stream is not RFC 6587 framing we can follow."""


class FrameDecoder:
    """Split one connection's byte stream into syslog frames."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self.octet_counted: bool | None = None
        """None until the first bytes arrive."""
        self.truncated = 0
        self._buffer = bytearray()
        self._skip_to_lf = False
        self._discard = 0
        """Bytes of an over-long octet-counted frame still to be skipped."""

    def feed(self, data: bytes) -> list[bytes]:
        """Frames completed by ``data``."""
        self._buffer += data
        if self.octet_counted is None:
            if not self._buffer:
                return []
            head = bytes(self._buffer[:12])
            digits = len(head) - len(head.lstrip(b"0123456789"))
            if digits == len(head) and len(head) < 12:
                return []  # only digits so far: wait for the space or more
            self.octet_counted = 0 < digits < 12 and head[digits : digits + 1] == b" "
        return self._counted() if self.octet_counted else self._lines()

    def pending(self) -> bytes:
        """Bytes of an unfinished frame (delivered at end of stream by :meth:`finish`)."""
        return bytes(self._buffer)

    def finish(self) -> list[bytes]:
        """The last frame of a stream that closed without its terminator."""
        rest = bytes(self._buffer).rstrip(b"\r\n")
        self._buffer.clear()
        if self._skip_to_lf or not rest.strip():
            return []
        if self.octet_counted:
            space = rest.find(b" ")
            if space > 0 and rest[:space].isdigit():
                rest = rest[space + 1 :]
        return [rest[: self.max_frame]]

    def _lines(self) -> list[bytes]:
        frames: list[bytes] = []
        buf = self._buffer
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            if self._skip_to_lf:
                self._skip_to_lf = False
            else:
                line = bytes(buf[start:nl])
                if line.endswith(b"\r"):
                    line = line[:-1]
                if len(line) > self.max_frame:
                    line = line[: self.max_frame]
                    self.truncated += 1
                if line:
                    frames.append(line)
            start = nl + 1
        del buf[:start]
        if len(buf) > self.max_frame and not self._skip_to_lf:
            frames.append(bytes(buf[: self.max_frame]))
            self.truncated += 1
            self._skip_to_lf = True
        if self._skip_to_lf:
            buf.clear()
        return frames

    def _counted(self) -> list[bytes]:
        frames: list[bytes] = []
        buf = self._buffer
        pos = 0
        while True:
            if self._discard:
                skip = min(self._discard, len(buf) - pos)
                pos += skip
                self._discard -= skip
                if self._discard:
                    break
            while pos < len(buf) and buf[pos] in b"\r\n":
                pos += 1  # some senders add LF after a counted frame
            space = buf.find(b" ", pos, pos + 12)
            if space < 0:
                if len(buf) - pos >= 12:
                    raise FramingError(
                        f"octet count expected, got {bytes(buf[pos : pos + 12])!r}",
                        hint="a connection that starts with an octet count must use it for "
                        "every frame (RFC 6587 3.4.1)",
                    )
                break
            count_text = bytes(buf[pos:space])
            if not count_text.isdigit():
                raise FramingError(
                    f"bad octet count {count_text!r}",
                    hint="a connection that starts with an octet count must use it for "
                    "every frame (RFC 6587 3.4.1)",
                )
            count = int(count_text)
            keep = min(count, self.max_frame)
            if space + 1 + keep > len(buf):
                break
            frame = bytes(buf[space + 1 : space + 1 + keep])
            if frame:
                frames.append(frame)
            pos = space + 1 + keep
            if count > keep:
                self.truncated += 1
                self._discard = count - keep
        del buf[:pos]
        return frames
