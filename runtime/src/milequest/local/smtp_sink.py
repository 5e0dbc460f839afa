"""An SMTP sink (aiosmtpd) that keeps every message it receives, parsed."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True)
class CapturedEmail:
    """One message as the sink received it: envelope, headers, text and HTML bodies."""

    id: str
    received_at: float
    mail_from: str
    rcpt_tos: list[str]
    subject: str
    headers: list[tuple[str, str]]
    text: str | None
    html: str | None
    raw: bytes = field(repr=False)

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (case-insensitive), or None."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "via": "smtp",
            "received_at": self.received_at,
            "source": self.mail_from,
            "destinations": self.rcpt_tos,
            "subject": self.subject,
            "headers": [list(h) for h in self.headers],
            "text": self.text,
            "html": self.html,
        }


def describe_mime(raw: bytes | str) -> dict[str, Any]:
    """Subject, headers and the text and HTML bodies of a MIME message."""
    parsed = (
        email.message_from_bytes(raw, policy=email.policy.default)
        if isinstance(raw, bytes)
        else email.message_from_string(raw, policy=email.policy.default)
    )
    text_part = parsed.get_body(preferencelist=("plain",))
    html_part = parsed.get_body(preferencelist=("html",))
    return {
        "subject": str(parsed.get("Subject", "")),
        "headers": [(name, str(value)) for name, value in parsed.items()],
        "text": text_part.get_content() if text_part is not None else None,
        "html": html_part.get_content() if html_part is not None else None,
    }


def parse_message(mail_from: str, rcpt_tos: list[str], raw: bytes) -> CapturedEmail:
    """Parse a received message with the standard library's modern email policy."""
    return CapturedEmail(
        id=uuid.uuid4().hex,
        received_at=time.time(),
        mail_from=mail_from,
        rcpt_tos=list(rcpt_tos),
        raw=raw,
        **describe_mime(raw),
    )


class SmtpSink:
    """The aiosmtpd handler: accepts every message and keeps the last ``limit`` of them."""

    def __init__(self, limit: int = 500) -> None:
        self._messages: deque[CapturedEmail] = deque(maxlen=limit)
        self._lock = threading.Lock()
        self._server: asyncio.Server | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode("utf-8")
        captured = parse_message(str(envelope.mail_from), list(envelope.rcpt_tos), raw)
        with self._lock:
            self._messages.append(captured)
        return "250 Message accepted for delivery"

    @property
    def messages(self) -> list[CapturedEmail]:
        """The messages kept, oldest first."""
        with self._lock:
            return list(self._messages)

    def clear(self) -> None:
        """Forget every message."""
        with self._lock:
            self._messages.clear()

    async def start(self, sock: socket.socket) -> None:
        """Serve SMTP on the bound, listening ``sock`` in the running loop.

        aiosmtpd's ``Controller`` binds its own socket in a thread of its own; the local
        stack binds every port up front (so a busy port fails before anything starts), so it
        serves aiosmtpd's ``SMTP`` protocol on that socket instead.
        """
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self, hostname="localhost", enable_SMTPUTF8=True, decode_data=False),
            sock=sock,
        )

    async def stop(self) -> None:
        """Stop listening for new SMTP sessions."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
