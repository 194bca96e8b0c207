"""Notification channels: one module per channel, registered by name (STYLE §4).

The reference channel, ``maildir``, writes the message to a Maildir in the
data folder (used when no SMTP server is configured, and shown in the console).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import ClassVar, Protocol

from otasuke.errors import OtasukeError


class DeliveryError(OtasukeError):
    """A channel could not deliver a notice; the notification is recorded as failed."""


@dataclass(frozen=True, slots=True)
class Receipt:
    channel: str
    sent_at: datetime
    message_id: str


class Channel(Protocol):
    """通知チャネル: delivers one message or raises DeliveryError."""

    name: ClassVar[str]

    def send(self, message: EmailMessage) -> Receipt: ...
