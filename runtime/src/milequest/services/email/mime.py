"""Building real MIME messages with the standard library's ``email`` package."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage as MimeMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING

from .addresses import domain_of

if TYPE_CHECKING:
    from .models import EmailMessage


def new_message_id(sender: str) -> str:
    """An RFC 5322 Message-ID in the sender's domain."""
    return make_msgid(domain=domain_of(sender) or None)


def build_mime(message: EmailMessage, *, message_id: str | None = None) -> MimeMessage:
    """``message`` as MIME: multipart/alternative (text + html), attachments, custom headers.

    Bcc recipients are deliberately not written as a header; pass them as envelope
    recipients. Non-ASCII subjects and names are encoded by the ``email`` package.
    """
    if message.from_email is None:
        raise ValueError("message has no sender")
    mime = MimeMessage(policy=policy.SMTP)
    mime["From"] = message.from_email
    if message.to:
        mime["To"] = ", ".join(message.to)
    if message.cc:
        mime["Cc"] = ", ".join(message.cc)
    if message.reply_to:
        mime["Reply-To"] = ", ".join(message.reply_to)
    mime["Subject"] = message.subject or ""
    mime["Date"] = formatdate(usegmt=True)
    mime["Message-ID"] = message_id or new_message_id(message.from_email)
    for name, value in message.headers.items():
        mime[name] = value
    if message.text and message.html:
        mime.set_content(message.text)
        mime.add_alternative(message.html, subtype="html")
    elif message.html:
        mime.set_content(message.html, subtype="html")
    else:
        mime.set_content(message.text or "")
    for attachment in message.attachments:
        maintype, _, subtype = attachment.mime_type.partition("/")
        mime.add_attachment(
            attachment.content,
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=attachment.filename,
            disposition="inline" if attachment.content_id else "attachment",
            cid=f"<{attachment.content_id.strip('<>')}>" if attachment.content_id else None,
        )
    return mime
