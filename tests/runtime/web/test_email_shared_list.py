"""One suppression list for every provider: a hard bounce received through any provider's
webhook makes every provider refuse the address, before any call to it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from milequest.services import register_service
from milequest.services.email import EmailError, EmailErrorCode
from milequest.services.email.suppression import MemorySuppressionStore
from milequest.web.email_routes import email_routes
from milequest.web.email_webhooks import SnsVerifier
from starlette.applications import Starlette

from tests.runtime.email.webhook_signing import (
    RESEND_SECRET,
    TOPIC,
    SnsSigner,
    fixture,
    sendgrid_headers,
    sendgrid_key,
    sns_notification,
    sns_signer,
    svix_headers,
)

from .asgi import AsgiClient
from .email_providers import (  # noqa: F401 - fixtures
    PROVIDERS,
    Build,
    _clean_email_env,
    _resend_endpoint,
    _sendgrid_endpoint,
    _smtp_plain,
    build_fixture,
    fast_retries,
    resend_api,
    sendgrid_api,
    ses_endpoint,
    ses_server,
    smtp_plain,
)


@pytest.fixture(scope="module")
def signer() -> Iterator[SnsSigner]:
    with sns_signer() as running:
        yield running


@pytest.fixture(scope="module")
def sendgrid_signing() -> tuple[ec.EllipticCurvePrivateKey, str]:
    return sendgrid_key()


def _bounce(
    hook: str, address: str, key: ec.EllipticCurvePrivateKey, signer: SnsSigner
) -> tuple[str, bytes, dict[str, str]]:
    """A signed hard bounce for ``address`` as ``hook`` delivers it: (path, body, headers)."""
    if hook == "ses":
        message = fixture("event-bounce.json")
        message["bounce"]["bouncedRecipients"][0]["emailAddress"] = address
        return "/webhooks/ses", json.dumps(signer.sign(sns_notification(message))).encode(), {}
    if hook == "resend":
        payload = fixture("resend-email-bounced.json")
        payload["data"]["to"] = [address]
        body = json.dumps(payload).encode()
        return "/webhooks/resend", body, svix_headers(body)
    events = [e for e in fixture("sendgrid-events.json") if e["event"] == "bounce"][:1]
    events[0]["email"] = address
    body = json.dumps(events).encode()
    return "/webhooks/sendgrid", body, sendgrid_headers(key, body)


@pytest.mark.parametrize("hook", ["ses", "resend", "sendgrid"])
def test_a_bounce_through_any_webhook_stops_every_provider(
    build: Build,
    signer: SnsSigner,
    sendgrid_signing: tuple[ec.EllipticCurvePrivateKey, str],
    hook: str,
) -> None:
    store = MemorySuppressionStore()
    keys = {
        "ses_events_topic_arns": TOPIC,
        "resend_webhook_secret": RESEND_SECRET,
        "sendgrid_webhook_public_key": sendgrid_signing[1],
    }
    harnesses = {name: build(name, store, **keys) for name in PROVIDERS}
    register_service("email", harnesses["mock"].service)  # the process's service
    app = Starlette(routes=email_routes(sns_verifier=SnsVerifier(trusted_url=signer.trusted)))
    address = f"gone-{hook}@example.com"
    path, body, headers = _bounce(hook, address, sendgrid_signing[0], signer)
    response = AsgiClient(app).post(path, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["suppressed"] == 1
    for name, harness in harnesses.items():
        with pytest.raises(EmailError) as info:
            harness.service.send_email({"to": address, "subject": "s", "text": "t"})
        assert info.value.code is EmailErrorCode.SUPPRESSED, name
        assert harness.network_calls() == 0, name
        [entry] = harness.service.get_suppressed_emails()
        assert (entry.address, entry.reason.value, entry.source) == (
            address,
            "BOUNCE",
            f"{hook}-events",
        )


def test_sendgrid_accepts_then_reports_through_events(
    build: Build, sendgrid_signing: tuple[ec.EllipticCurvePrivateKey, str]
) -> None:
    harness = build("sendgrid", sendgrid_webhook_public_key=sendgrid_signing[1])
    service = harness.service
    register_service("email", service)
    people = ["ann@example.com", "bo@example.com", "cy@example.com"]
    first = service.send_bulk_emails([{"to": p, "subject": "s", "text": "t"} for p in people])
    assert [r.ok for r in first.results] == [True, True, True]
    assert harness.bulk_sizes() == [3]  # one request, three personalizations, 202
    message_id = first.results[1].message_id
    events = [
        {"email": "ann@example.com", "event": "delivered", "timestamp": 1_700_000_000},
        {
            "email": "bo@example.com",
            "event": "bounce",
            "type": "bounce",
            "timestamp": 1_700_000_001,
            "sg_message_id": f"{message_id}.filter0001.1.0",
            "reason": "550 5.1.1 unknown user",
        },
    ]
    body = json.dumps(events).encode()
    client = AsgiClient(Starlette(routes=email_routes()))
    headers = sendgrid_headers(sendgrid_signing[0], body)
    answer = client.post("/webhooks/sendgrid", content=body, headers=headers).json()
    assert (answer["events"], answer["suppressed"]) == (2, 1)
    second = service.send_bulk_emails([{"to": p, "subject": "s", "text": "t"} for p in people])
    outcome = {r.recipients[0]: r.error.code if r.error else None for r in second.results}
    assert outcome == {
        "ann@example.com": None,
        "bo@example.com": EmailErrorCode.SUPPRESSED,
        "cy@example.com": None,
    }
    assert harness.bulk_sizes() == [3, 2]
