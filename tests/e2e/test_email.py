"""Email through the local stack: the SMTP sink, the embedded SES, templates, the shared
suppression list (every process on the stack sees it) and one-click unsubscribe."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from milequest.local import LocalStack
from milequest.services.email import EmailError, create_email_service
from milequest.services.registry import get_service

from .conftest import stack_config

pytestmark = pytest.mark.slow

SENDER = "noreply@milequest.example"


def _email_env(stack: LocalStack) -> dict[str, str]:
    """What processes need for the shared list and unsubscribe links (the stack's export,
    where it has it)."""
    res = stack.config.resources
    wanted = {
        "EMAIL_SUPPRESSION_TABLE": res.suppression_table,
        "EMAIL_UNSUBSCRIBE_URL": f"{stack.urls['http']}/email/unsubscribe",
        "EMAIL_UNSUBSCRIBE_SECRET": res.unsubscribe_secret,
    }
    return {name: stack.env.get(name, value) for name, value in wanted.items()}


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    from milequest.services.registry import reset_services

    with (
        LocalStack(stack_config(email_provider="smtp")) as running,
        pytest.MonkeyPatch.context() as patch,
    ):
        for name, value in _email_env(running).items():
            patch.setenv(name, value)
        reset_services()
        yield running


def _sink(stack: LocalStack, to: str) -> list:
    return [m for m in stack.smtp.messages if to in m.rcpt_tos]


def _ses(stack: LocalStack, to: str) -> list:
    def addresses(destinations: Any) -> list[str]:
        if isinstance(destinations, dict):
            return [a for values in destinations.values() for a in values]
        return list(destinations)

    return [m for m in stack.aws.sent_emails() if to in addresses(m["destinations"])]


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


@pytest.fixture(params=["smtp", "ses"])
def provider(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each email scenario through the SMTP sink and through the embedded SES."""
    monkeypatch.setenv("EMAIL_PROVIDER", request.param)
    return str(request.param)


def _captured(stack: LocalStack, provider: str, to: str) -> list[dict[str, Any]]:
    if provider == "smtp":
        return [m.describe() for m in _sink(stack, to)]
    return _ses(stack, to)


def test_a_templated_email_is_rendered_from_the_packaged_template(
    stack: LocalStack, provider: str
) -> None:
    to = f"grace-{provider}@runners.example"
    create_email_service().send_templated_email(
        "welcome", to, {"name": "Grace <Hopper>", "team": "Night Owls"}
    )
    (captured,) = _captured(stack, provider, to)
    assert captured["subject"] == "Welcome to Mile Quest, Grace <Hopper>!"
    assert "Welcome to Mile Quest, Grace &lt;Hopper&gt;!" in captured["html"]
    assert "<strong>Night Owls</strong>" in captured["html"]
    assert "You have joined Night Owls." in captured["text"]
    assert dict(captured["headers"])["From"] == SENDER


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
    assert plain["text"].strip() == "Just text."
    assert mime["subject"] == "With a file"
    headers = dict(mime["headers"])
    assert headers["From"] == SENDER
    assert headers["To"] == "linus@runners.example"
    assert mime["text"].strip() == "See the attachment."
    assert mime["html"].strip() == "<p>See the attachment.</p>"


@pytest.mark.parametrize("kind", ["bounce", "complaint"])
def test_simulated_feedback_suppresses_the_address_through_the_ses_event_handler(
    stack: LocalStack, provider: str, kind: str
) -> None:
    address = f"{kind}-{provider}@runners.example"
    other = f"still-{kind}-{provider}@runners.example"
    with httpx.Client(base_url=stack.urls["console"]) as console:
        response = console.post("api/simulate", json={"address": address, "kind": kind})
        assert response.status_code == 200, response.text
        state = console.get("api/state").json()
    listed = {entry.get("email"): entry.get("reason") for entry in state["suppressed"]}
    assert listed[address] == kind.upper()

    service = get_service("email")
    with pytest.raises(EmailError) as refused:
        service.send_email({"to": address, "subject": "Hi", "text": "Anyone there?"})
    assert refused.value.code.value == "SUPPRESSED"
    mixed = service.send_email({"to": [address, other], "subject": "Hi", "text": "Hello"})
    statuses = {r.address: r.status.value for r in mixed.recipients}
    assert statuses == {address: "suppressed", other: "sent"}
    assert _captured(stack, provider, address) == []
    assert len(_captured(stack, provider, other)) == 1


def test_the_embedded_ses_keeps_the_account_suppression_list(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMAIL_PROVIDER", "ses")
    create_email_service().suppress_email("listed@runners.example", "COMPLAINT")
    ses = boto3.client("sesv2")
    found = ses.get_suppressed_destination(EmailAddress="listed@runners.example")
    assert found["SuppressedDestination"]["Reason"] == "COMPLAINT"
    ses.delete_suppressed_destination(EmailAddress="listed@runners.example")
    with pytest.raises(ses.exceptions.NotFoundException):
        ses.get_suppressed_destination(EmailAddress="listed@runners.example")


def test_the_embedded_aws_is_provisioned_from_the_runtime_definitions(
    stack: LocalStack,
) -> None:
    from milequest.services.email.templates import load_template_sources
    from milequest.services.websocket.apigateway import TTL_ATTRIBUTE, table_definition

    table = stack.env["CONNECTIONS_TABLE"]
    ddb = boto3.client("dynamodb")
    described = ddb.describe_table(TableName=table)["Table"]
    definition = table_definition()
    assert described["KeySchema"] == definition["KeySchema"]
    assert [i["IndexName"] for i in described["GlobalSecondaryIndexes"]] == [
        i["IndexName"] for i in definition["GlobalSecondaryIndexes"]
    ]
    ttl = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", TTL_ATTRIBUTE)

    ses = boto3.client("sesv2")
    sources = load_template_sources()
    assert sources
    prefix = stack.env["SES_TEMPLATE_PREFIX"]
    assert prefix == "milequest-local-"  # named like the stages' templates
    for name, source in sources.items():
        content = ses.get_email_template(TemplateName=prefix + name)["TemplateContent"]
        assert (content["Subject"], content["Html"], content["Text"]) == (
            source.subject,
            source.html,
            source.text,
        )
    identity = ses.get_email_identity(EmailIdentity="milequest.example")
    assert identity["IdentityType"] == "DOMAIN"
    assert ses.get_configuration_set(ConfigurationSetName=stack.env["SES_CONFIGURATION_SET"])
    secret = boto3.client("secretsmanager").get_secret_value(
        SecretId=stack.provisioning.websocket_secret_arn
    )
    assert json.loads(secret["SecretString"]) == {
        "key": stack.env["WEBSOCKET_APP_KEY"],
        "secret": stack.env["WEBSOCKET_APP_SECRET"],
    }


def test_a_suppression_made_in_the_console_stops_another_process(stack: LocalStack) -> None:
    # Tried as a new user would: the default smtp provider, a bounce simulated in the
    # console, then an application process of its own sending to that address.
    address = "console-bounce@runners.example"
    with httpx.Client(base_url=stack.urls["console"]) as console:
        response = console.post("api/simulate", json={"address": address, "kind": "bounce"})
        assert response.status_code == 200, response.text
    message = {"to": address, "subject": "s", "text": "t"}
    app = (
        "from milequest.services.email import EmailError, create_email_service\n"
        "try:\n"
        f"    create_email_service().send_email({message!r})\n"
        "except EmailError as error:\n"
        "    print(error.code.value)\n"
        "else:\n"
        "    print('SENT')\n"
    )
    env = {**os.environ, **stack.env, **_email_env(stack)}
    done = subprocess.run(
        [sys.executable, "-c", app], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.stdout.strip() == "SUPPRESSED", done.stderr
    assert _sink(stack, address) == []


def test_the_suppression_table_is_provisioned_from_the_runtime_definition(
    stack: LocalStack,
) -> None:
    from milequest.services.email.suppression_dynamodb import table_definition

    described = boto3.client("dynamodb").describe_table(
        TableName=stack.config.resources.suppression_table
    )["Table"]
    assert described["KeySchema"] == table_definition()["KeySchema"]


def test_one_click_unsubscribe_through_the_stacks_http_app(stack: LocalStack) -> None:
    to = "weekly-walker@runners.example"
    data = {"name": "Walker", "total_miles": 3, "activities": []}
    service = create_email_service()
    service.send_templated_email("weekly-summary", to, data)
    (captured,) = _sink(stack, to)
    assert captured.header("List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    header = captured.header("List-Unsubscribe")
    assert header is not None
    link = re.search(r"<(http[^>]+)>", header)
    assert link is not None
    response = httpx.post(
        link.group(1),
        content=b"List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    with pytest.raises(EmailError) as refused:
        service.send_templated_email("weekly-summary", to, data)
    assert refused.value.code.value == "SUPPRESSED"
    assert service.send_templated_email("welcome", to, {"name": "Walker"}).accepted == [to]


def test_verify_domain_on_the_embedded_ses(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMAIL_PROVIDER", "ses")
    service = create_email_service()
    first = service.verify_domain("trails.example")
    return_path = [(r.type, r.name, r.purpose) for r in first.records if r.purpose != "dkim"]
    assert return_path == [
        ("MX", "mail.trails.example", "return_path"),
        ("TXT", "mail.trails.example", "spf"),
    ]
    identity = boto3.client("sesv2").get_email_identity(EmailIdentity="trails.example")
    assert identity["MailFromAttributes"]["MailFromDomain"] == "mail.trails.example"
    assert service.verify_domain("trails.example").records == first.records
