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
    wire: list[tuple[str, str]] = field(default_factory=list)
    """Header-bound fields as sent (subject, addresses, custom headers...)."""

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
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    return Delivered(
        to=to,
        cc=cc,
        bcc=bcc,
        subject=str(msg["Subject"]) if msg["Subject"] is not None else None,
        html=html.get_content() if html is not None else None,
        text=text.get_content() if text is not None else None,
        attachments=attachments,  # type: ignore[arg-type]
        headers={k: str(v) for k, v in msg.items() if k.lower() not in skip},
        wire=_raw_headers(head),
    )


def _raw_headers(head: str) -> list[tuple[str, str]]:
    """The raw header lines as name/value pairs, folded lines unfolded (RFC 5322 2.2.3).

    A line break that is not folding stays in the value, and a header injected through a
    line break shows up under its own name.
    """
    pairs: list[tuple[str, str]] = []
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t") and pairs:
            pairs[-1] = (pairs[-1][0], pairs[-1][1] + line)
        else:
            name, _, value = line.partition(":")
            pairs.append((name, value))
    return pairs


def _pairs(items: dict[str, Any] | list[dict[str, str]] | None) -> list[tuple[str, str]]:
    if isinstance(items, dict):
        return [(str(k), str(v)) for k, v in items.items()]
    return [(h["Name"], h["Value"]) for h in items or []]


class Harness(ABC):
    """A provider under test plus the means to see what it delivered."""

    name: str
    service: EmailService

    @abstractmethod
    def delivered(self) -> list[Delivered]: ...

    @abstractmethod
    def bulk_sizes(self) -> list[int]:
        """Messages per provider call (or SMTP connection) made by sends, single ones as 1."""

    @abstractmethod
    def network_calls(self) -> int:
        """Send calls that reached the provider (to prove validation happens before)."""

    def all_calls(self) -> int:
        """Every request that reached the provider, sends or not."""
        return self.network_calls()

    def wire_headers(self) -> list[tuple[str, str]]:
        """Every header name and value as they went over the wire, from every send."""
        return [(k, v) for d in self.delivered() for k, v in d.wire]

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
                wire=[
                    ("Subject", m.subject or ""),
                    *((k, v) for k, v in m.headers.items()),
                    *(("To", a) for a in m.to + m.cc + m.bcc + m.reply_to),
                ],
            )
            for m in self.service.outbox
        ]

    def bulk_sizes(self) -> list[int]:
        return list(self.service.bulk_sizes)

    def network_calls(self) -> int:
        return len(self.service.outbox)


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
            addresses = [
                (k, a)
                for k in ("ToAddresses", "CcAddresses", "BccAddresses")
                for a in dest.get(k, [])
            ]
            wire = [("From", sent["FromEmailAddress"]), *addresses]
            wire += [("Reply-To", a) for a in sent.get("ReplyToAddresses", [])]
            if "Entry" in sent:  # a SendBulkEmail entry
                replacement = sent["Entry"].get("ReplacementEmailContent", {})
                data = replacement.get("ReplacementTemplate", {}).get(
                    "ReplacementTemplateData", sent["Template"].get("TemplateData")
                )
                subject, html, text = self._render(sent["Template"], data)
                pairs = _pairs(sent["Template"].get("Headers"))
                pairs += _pairs(sent["Entry"].get("ReplacementHeaders"))
                items.append(
                    Delivered(
                        to,
                        cc,
                        bcc,
                        subject,
                        html or None,
                        text or None,
                        {},
                        dict(pairs),
                        [*wire, ("Subject", subject), *pairs],
                    )
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
                pairs = _pairs(template.get("Headers"))
                files = {
                    a["FileName"]: base64.b64decode(a["RawContent"])
                    for a in template.get("Attachments", [])
                }
                items.append(
                    Delivered(
                        to,
                        cc,
                        bcc,
                        subject,
                        html or None,
                        text or None,
                        files,
                        dict(pairs),
                        [*wire, ("Subject", subject), *pairs],
                    )
                )
            else:
                simple = content["Simple"]
                body = simple["Body"]
                pairs = _pairs(simple.get("Headers"))
                items.append(
                    Delivered(
                        to,
                        cc,
                        bcc,
                        simple["Subject"]["Data"],
                        body.get("Html", {}).get("Data"),
                        body.get("Text", {}).get("Data"),
                        {},
                        dict(pairs),
                        [*wire, ("Subject", simple["Subject"]["Data"]), *pairs],
                    )
                )
        return items

    def bulk_sizes(self) -> list[int]:
        singles = self.server.state.count("POST", "/v2/email/outbound-emails")
        return list(self.server.state.bulk_sizes) + [1] * singles

    def network_calls(self) -> int:
        state = self.server.state
        return state.count("POST", "/v2/email/outbound-emails") + state.count(
            "POST", "/v2/email/outbound-bulk-emails"
        )

    def all_calls(self) -> int:
        return len(self.server.state.requests)


class ResendHarness(Harness):
    """Reads what the local Resend API accepted (subject and bodies are rendered here)."""

    name = "resend"

    def __init__(self, service: EmailService, server: Any) -> None:
        self.service = service
        self.server = server

    def delivered(self) -> list[Delivered]:
        items = []
        for sent in list(self.server.state.sent):
            headers = dict(sent.get("headers") or {})
            people = [
                ("Recipient", a) for k in ("to", "cc", "bcc", "reply_to") for a in sent.get(k) or []
            ]
            items.append(
                Delivered(
                    to=_addrs(sent.get("to")),
                    cc=_addrs(sent.get("cc")),
                    bcc=_addrs(sent.get("bcc")),
                    subject=sent.get("subject"),
                    html=sent.get("html"),
                    text=sent.get("text"),
                    attachments={
                        a["filename"]: base64.b64decode(a["content"])
                        for a in sent.get("attachments") or []
                    },
                    headers=headers,
                    wire=[
                        ("From", sent["from"]),
                        ("Subject", sent.get("subject") or ""),
                        *people,
                        *headers.items(),
                        *((t["name"], t["value"]) for t in sent.get("tags") or []),
                    ],
                )
            )
        return items

    def bulk_sizes(self) -> list[int]:
        return list(self.server.state.batch_sizes())

    def network_calls(self) -> int:
        state = self.server.state
        return state.count("POST", "/emails") + state.count("POST", "/emails/batch")

    def all_calls(self) -> int:
        return len(self.server.state.requests)


class SendGridHarness(Harness):
    """Reads mail/send bodies the local SendGrid API accepted, one message per personalization."""

    name = "sendgrid"

    def __init__(self, service: EmailService, server: Any) -> None:
        self.service = service
        self.server = server

    def delivered(self) -> list[Delivered]:
        items = []
        for mail in list(self.server.state.mails):
            content = {c["type"]: c["value"] for c in mail.get("content", [])}
            files = {
                a["filename"]: base64.b64decode(a["content"]) for a in mail.get("attachments") or []
            }
            for person in mail["personalizations"]:
                headers = {**(mail.get("headers") or {}), **(person.get("headers") or {})}
                subject = person.get("subject", mail.get("subject"))
                emails = {k: [p["email"] for p in person.get(k) or []] for k in ("to", "cc", "bcc")}
                names = [
                    ("Recipient", p.get("name", ""))
                    for k in ("to", "cc", "bcc")
                    for p in person.get(k) or []
                ]
                replies = [(r["email"], r.get("name", "")) for r in mail.get("reply_to_list") or []]
                items.append(
                    Delivered(
                        to=_addrs(emails["to"]),
                        cc=_addrs(emails["cc"]),
                        bcc=_addrs(emails["bcc"]),
                        subject=subject,
                        html=content.get("text/html"),
                        text=content.get("text/plain"),
                        attachments=files,
                        headers=headers,
                        wire=[
                            ("From", mail["from"]["email"]),
                            ("From", mail["from"].get("name", "")),
                            ("Subject", subject or ""),
                            *(("Recipient", e) for values in emails.values() for e in values),
                            *names,
                            *(("Reply-To", r) for pair in replies for r in pair),
                            *headers.items(),
                            *(person.get("custom_args") or {}).items(),
                        ],
                    )
                )
        return items

    def bulk_sizes(self) -> list[int]:
        return list(self.server.state.batch_sizes())

    def network_calls(self) -> int:
        return self.server.state.count("POST", "/v3/mail/send")

    def all_calls(self) -> int:
        return len(self.server.state.requests)


class SmtpHarness(Harness):
    name = "smtp"

    def __init__(self, service: EmailService, server: Any) -> None:
        self.service = service
        self.server = server

    def delivered(self) -> list[Delivered]:
        return [from_mime(r.raw, r.rcpt_tos) for r in list(self.server.handler.messages)]

    def bulk_sizes(self) -> list[int]:
        sessions: dict[int, int] = {}
        for received in list(self.server.handler.messages):
            sessions[received.session] = sessions.get(received.session, 0) + 1
        return list(sessions.values())

    def network_calls(self) -> int:
        return len(self.server.handler.messages)
