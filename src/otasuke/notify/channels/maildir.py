"""Maildir channel: the reference channel; mail lands in <data_dir>/maildir."""

from __future__ import annotations

import mailbox
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import ClassVar

from otasuke.notify.channels import Receipt


class MaildirChannel:
    name: ClassVar[str] = "maildir"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.box = mailbox.Maildir(path, create=True)

    def send(self, message: EmailMessage) -> Receipt:
        self.box.add(message)
        return Receipt(
            channel=self.name, sent_at=datetime.now(UTC), message_id=str(message["Message-ID"])
        )
