"""SMTP channel: plain, STARTTLS or implicit TLS, with optional login."""

from __future__ import annotations

import smtplib
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import ClassVar

from otasuke.notify.channels import DeliveryError, Receipt
from otasuke.settings import Settings


class SmtpChannel:
    name: ClassVar[str] = "smtp"

    def __init__(self, settings: Settings) -> None:
        if not settings.smtp_host:
            raise DeliveryError("no SMTP server configured", field="OTASUKE_SMTP_HOST")
        self.host = settings.smtp_host
        self.port = settings.smtp_port
        self.tls = settings.smtp_tls
        self.username = settings.smtp_username
        self.password = settings.smtp_password

    def send(self, message: EmailMessage) -> Receipt:
        try:
            if self.tls == "implicit":
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=30, context=ssl.create_default_context()
                )
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=30)
            with client:
                if self.tls == "starttls":
                    client.starttls(context=ssl.create_default_context())
                if self.username:
                    client.login(self.username, self.password or "")
                refused = client.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            # The password is never part of the message.
            raise DeliveryError(
                f"SMTP {self.host}:{self.port}: {exc.__class__.__name__}: {exc}",
                field="smtp",
                hint="check OTASUKE_SMTP_* settings",
            ) from None
        if refused:
            raise DeliveryError(f"recipients refused: {', '.join(refused)}", field="recipients")
        return Receipt(
            channel=self.name, sent_at=datetime.now(UTC), message_id=str(message["Message-ID"])
        )
