"""One view of "what was delivered", whatever the provider, for the contract suite."""

from __future__ import annotations

import base64
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage as MimeMessage
from email.utils import getaddresses
from typing import Any

from milequest.services.email import EmailService
from milequest.services.email.templates import TemplateSource, render_source


@dataclass
class Delivered:
    to: list[str]
    cc: list[str]
    bcc: list[str]
    subject: str | None
    html: str | None
    text: str | None
    attachments: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def recipients(self) -> list[str]:
        return [*self.to, *self.cc, *self.bcc]


def _addrs(values: list[str] | None) -> list[str]:
    return [a.lower() for _, a in getaddresses(values or [])]


def from_mime(raw: bytes, envelope: list[str] | None = None) -> Delivered:
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, MimeMessage)
    to = _addrs(msg.get_all("To"))
    cc = _addrs(msg.get_all("Cc"))
    bcc = [a.lower() for a in envelope or [] if a.lower() not in to + cc]
    html = msg.get_body(("html",))
    text = msg.get_body(("plain",))
    attachments = {
        str(part.get_filename()): part.get_payload(decode=True) for part in msg.iter_attachments()
    }
    skip = {"from", "to", "cc", "subject", "date", "message-id", "mime-version", "content-type"}
    return Delivered(
        to=to,
        cc=cc,
        bcc=bcc,
        subject=str(msg["Subject"]) if msg["Subject"] is not None else None,
        html=html.get_content() if html is not None else None,
        text=text.get_content() if text is not None else None,
        attachments=attachments,  # type: ignore[arg-type]
        headers={k: str(v) for k, v in msg.items() if k.lower() not in skip},
    )


class Harness(ABC):
    """A provider under test plus the means to see what it delivered."""

    name: str
    service: EmailService

    @abstractmethod
    def delivered(self) -> list[Delivered]: ...

    def bulk_calls(self) -> int | None:
        """Provider calls made for bulk sends, where the provider groups messages."""
        return None

    def network_calls(self) -> int:
        """Send calls that reached the provider (to prove validation happens before)."""
        return len(self.delivered())

    def last(self) -> Delivered:
        return self.delivered()[-1]


class MockHarness(Harness):
    name = "mock"

    def __init__(self, service: Any) -> None:
        self.service = service

    def delivered(self) -> list[Delivered]:
        return [
            Delivered(
                to=[a.lower() for a in m.to],
                cc=[a.lower() for a in m.cc],
                bcc=[a.lower() for a in m.bcc],
                subject=m.subject,
                html=m.html,
                text=m.text,
                attachments={name: data for name, _, data in m.attachments},
                headers=dict(m.headers),
            )
            for m in self.service.outbox
        ]

    def bulk_calls(self) -> int | None:
        return int(self.service.bulk_calls)

    def network_calls(self) -> int:
        return len(self.service.outbox) + int(self.service.bulk_calls)


class SesHarness(Harness):
    """Reads the local SES endpoint's log and renders templates the way SES would."""

    name = "ses"

    def __init__(self, service: EmailService, server: Any) -> None:
        self.service = service
        self.server = server

    def _render(self, template: dict[str, Any], data: str) -> tuple[str, str, str]:
        if "TemplateContent" in template:
            content = template["TemplateContent"]
            name = "inline"
        else:
            name = template["TemplateName"]
            content = self.server.state.templates[name]
        source = TemplateSource(
            name, content.get("Subject", ""), content.get("Html", ""), content.get("Text", "")
        )
        out = render_source(source, json.loads(data or "{}"))
        return out.subject, out.html, out.text

    def delivered(self) -> list[Delivered]:
        items = []
        for sent in list(self.server.state.sent):
            dest = sent["Destination"]
            to, cc, bcc = (
                _addrs(dest.get(k)) for k in ("ToAddresses", "CcAddresses", "BccAddresses")
            )
            if "Entry" in sent:  # a SendBulkEmail entry
                replacement = sent["Entry"].get("ReplacementEmailContent", {})
                data = replacement.get("ReplacementTemplate", {}).get(
                    "ReplacementTemplateData", sent["Template"].get("TemplateData")
                )
                subject, html, text = self._render(sent["Template"], data)
                headers = {h["Name"]: h["Value"] for h in sent["Template"].get("Headers", [])}
                items.append(
                    Delivered(to, cc, bcc, subject, html or None, text or None, {}, headers)
                )
                continue
            content = sent["Content"]
            if "Raw" in content:
                parsed = from_mime(content["Raw"]["Data"], [*to, *cc, *bcc])
                parsed.bcc = [a for a in bcc if a not in parsed.to + parsed.cc]
                items.append(parsed)
            elif "Template" in content:
                template = content["Template"]
                subject, html, text = self._render(template, template.get("TemplateData", "{}"))
                headers = {h["Name"]: h["Value"] for h in template.get("Headers", [])}
                files = {
                    a["FileName"]: base64.b64decode(a["RawContent"])
                    for a in template.get("Attachments", [])
                }
                items.append(
                    Delivered(to, cc, bcc, subject, html or None, text or None, files, headers)
                )
            else:
                simple = content["Simple"]
                body = simple["Body"]
                items.append(
                    Delivered(
                        to,
                        cc,
                        bcc,
                        simple["Subject"]["Data"],
                        body.get("Html", {}).get("Data"),
                        body.get("Text", {}).get("Data"),
                        {},
                        {h["Name"]: h["Value"] for h in simple.get("Headers", [])},
                    )
                )
        return items

    def bulk_calls(self) -> int | None:
        return self.server.state.count("POST", "/v2/email/outbound-bulk-emails")

    def network_calls(self) -> int:
        return self.server.state.count("POST", "/v2/email/outbound-emails") + (
            self.bulk_calls() or 0
        )


class SmtpHarness(Harness):
    name = "smtp"

    def __init__(self, service: EmailService, server: Any) -> None:
        self.service = service
        self.server = server

    def delivered(self) -> list[Delivered]:
        return [from_mime(r.raw, r.rcpt_tos) for r in list(self.server.handler.messages)]
