"""Email through the local stack: the SMTP sink, the embedded SES, templates, suppression."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest
from milequest.local import LocalStack
from milequest.services.email import EmailError, create_email_service
from milequest.services.registry import get_service

from .conftest import stack_config

pytestmark = pytest.mark.slow

SENDER = "noreply@milequest.example"


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(stack_config(email_provider="smtp")) as running:
        yield running


def _sink(stack: LocalStack, to: str) -> list:
    return [m for m in stack.smtp.messages if to in m.rcpt_tos]


def _ses(stack: LocalStack, to: str) -> list:
    return [m for m in stack.aws.sent_emails() if to in str(m["destinations"])]


def test_smtp_provider_delivers_to_the_sink_with_headers_and_both_bodies(
    stack: LocalStack,
) -> None:
    result = create_email_service().send_email(
        {
            "to": ["ada@runners.example"],
            "cc": ["coach@runners.example"],
            "reply_to": ["team@milequest.example"],
            "subject": "Your weekly miles",
            "text": "You walked 42 miles.",
            "html": "<p>You walked <b>42</b> miles.</p>",
            "headers": {"X-Campaign": "weekly"},
        }
    )
    (captured,) = _sink(stack, "ada@runners.example")
    assert result.provider == "smtp"
    assert [r.address for r in result.recipients] == [
        "ada@runners.example",
        "coach@runners.example",
    ]
    assert captured.mail_from == SENDER
    assert sorted(captured.rcpt_tos) == ["ada@runners.example", "coach@runners.example"]
    assert captured.subject == "Your weekly miles"
    assert captured.header("From") == SENDER
    assert captured.header("To") == "ada@runners.example"
    assert captured.header("Cc") == "coach@runners.example"
    assert captured.header("Reply-To") == "team@milequest.example"
    assert captured.header("X-Campaign") == "weekly"
    assert captured.text is not None
    assert captured.text.strip() == "You walked 42 miles."
    assert captured.html is not None
    assert "<b>42</b>" in captured.html


def test_a_templated_email_is_rendered_from_the_packaged_template(stack: LocalStack) -> None:
    create_email_service().send_templated_email(
        "welcome", "grace@runners.example", {"name": "Grace <Hopper>", "team": "Night Owls"}
    )
    (captured,) = _sink(stack, "grace@runners.example")
    assert captured.subject == "Welcome to Mile Quest, Grace <Hopper>!"
    assert captured.html is not None
    assert "Welcome to Mile Quest, Grace &lt;Hopper&gt;!" in captured.html
    assert "<strong>Night Owls</strong>" in captured.html
    assert captured.text is not None
    assert "You have joined Night Owls." in captured.text


def test_ses_provider_sends_to_the_embedded_ses(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMAIL_PROVIDER", "ses")
    service = create_email_service()
    simple = service.send_email(
        {"to": "linus@runners.example", "subject": "Plain", "text": "Just text."}
    )
    raw = service.send_email(
        {
            "to": "linus@runners.example",
            "subject": "With a file",
            "text": "See the attachment.",
            "html": "<p>See the attachment.</p>",
            "attachments": [
                {
                    "filename": "route.gpx",
                    "content": base64.b64encode(b"<gpx/>").decode(),
                    "content_type": "application/gpx+xml",
                }
            ],
        }
    )
    sent = {m["message_id"]: m for m in _ses(stack, "linus@runners.example")}
    assert simple.provider == "ses"
    plain, mime = sent[simple.message_id], sent[raw.message_id]
    assert plain["source"] == SENDER
    assert plain["subject"] == "Plain"
    assert plain["text"] == "Just text."
    assert mime["subject"] == "With a file"
    headers = dict(mime["headers"])
    assert headers["From"] == SENDER
    assert headers["To"] == "linus@runners.example"
    assert mime["text"].strip() == "See the attachment."
    assert mime["html"].strip() == "<p>See the attachment.</p>"


def test_a_simulated_bounce_suppresses_the_address_through_the_ses_event_handler(
    stack: LocalStack,
) -> None:
    address = "gone@runners.example"
    with httpx.Client(base_url=stack.urls["console"]) as console:
        response = console.post("api/simulate", json={"address": address, "kind": "bounce"})
        assert response.status_code == 200, response.text
        state = console.get("api/state").json()
    assert address in [entry.get("email") for entry in state["suppressed"]]

    service = get_service("email")
    with pytest.raises(EmailError) as refused:
        service.send_email({"to": address, "subject": "Hi", "text": "Anyone there?"})
    assert refused.value.code.value == "SUPPRESSED"
    mixed = service.send_email(
        {"to": [address, "still@runners.example"], "subject": "Hi", "text": "Hello"}
    )
    statuses = {r.address: r.status.value for r in mixed.recipients}
    assert statuses == {address: "suppressed", "still@runners.example": "sent"}
    assert _sink(stack, address) == []
