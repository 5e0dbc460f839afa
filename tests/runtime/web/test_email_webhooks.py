"""The signed email webhooks through a real ASGI client: SNS (SES), Resend (Svix), SendGrid.

Every request is verified before its body is read as events: a forged, tampered or stale
one gets 401 and nothing is recorded.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from milequest.services import register_service
from milequest.services.email import create_email_service
from milequest.services.email.mock import MockEmailService
from milequest.services.metrics import InMemorySink
from milequest.web.email_routes import email_routes
from milequest.web.email_webhooks import SnsVerifier, WebhookRejected, sns_url
from milequest.web.email_webhooks.resend import verify_resend
from milequest.web.email_webhooks.sendgrid import load_public_key, verify_sendgrid
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
    sns_subscription,
    svix_headers,
)

from .asgi import AsgiClient


@pytest.fixture(scope="module")
def signer() -> Iterator[SnsSigner]:
    with sns_signer() as running:
        yield running


@pytest.fixture(scope="module")
def sendgrid_signing() -> tuple[ec.EllipticCurvePrivateKey, str]:
    return sendgrid_key()


@pytest.fixture
def email(sendgrid_signing: tuple[ec.EllipticCurvePrivateKey, str]) -> MockEmailService:
    service = create_email_service(
        "mock",
        metrics=InMemorySink(),
        ses_events_topic_arns=f"{TOPIC},arn:aws:sns:us-east-1:123456789012:other",
        resend_webhook_secret=RESEND_SECRET,
        sendgrid_webhook_public_key=sendgrid_signing[1],
    )
    assert isinstance(service, MockEmailService)
    register_service("email", service)
    return service


@pytest.fixture
def client(signer: SnsSigner, email: MockEmailService) -> AsgiClient:
    verifier = SnsVerifier(trusted_url=signer.trusted)
    return AsgiClient(Starlette(routes=email_routes(sns_verifier=verifier)))


def _listed(service: MockEmailService) -> dict[str, tuple[str, str | None]]:
    return {e.address: (e.reason.value, e.category) for e in service.get_suppressed_emails()}


def _post(client: AsgiClient, path: str, payload: Any, headers: dict[str, str]) -> Any:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return client.post(path, content=body, headers=headers)


# -- POST /webhooks/ses (SNS over HTTPS) ------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_signed_ses_bounce_suppresses(
    client: AsgiClient, signer: SnsSigner, email: MockEmailService, version: str
) -> None:
    note = signer.sign(sns_notification(fixture("event-bounce.json")), version)
    response = _post(client, "/webhooks/ses", note, {})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "events": 1,
        "suppressed": 1,
        "skipped": 0,
        "unusable": 0,
        "failed_suppressions": 0,
    }
    assert _listed(email) == {"recipient@example.com": ("BOUNCE", None)}


def _refused(response: Any, service: MockEmailService, status: int = 401) -> None:
    assert response.status_code == status, response.text
    assert response.json()["code"] == ("INVALID_SIGNATURE" if status == 401 else "FORBIDDEN")
    assert service.get_suppressed_emails() == []


def test_a_tampered_ses_message_is_refused(
    client: AsgiClient, signer: SnsSigner, email: MockEmailService
) -> None:
    note = signer.sign(sns_notification(fixture("event-bounce.json")))
    note["Message"] = note["Message"].replace("recipient@example.com", "victim@example.com")
    _refused(_post(client, "/webhooks/ses", note, {}), email)


def test_a_message_signed_by_another_key_is_refused(
    client: AsgiClient, email: MockEmailService
) -> None:
    with sns_signer() as other:  # a valid certificate URL form, but not the signer's key
        note = other.sign(sns_notification(fixture("event-bounce.json")))
    _refused(_post(client, "/webhooks/ses", note, {}), email)


@pytest.mark.parametrize("offset", [-3700, 600], ids=["replay-an-hour-old", "future"])
def test_a_stale_or_future_ses_message_is_refused(
    client: AsgiClient, signer: SnsSigner, email: MockEmailService, offset: int
) -> None:
    note = signer.sign(sns_notification(fixture("event-bounce.json"), when=time.time() + offset))
    _refused(_post(client, "/webhooks/ses", note, {}), email)


def test_a_topic_not_allowed_is_forbidden(
    client: AsgiClient, signer: SnsSigner, email: MockEmailService
) -> None:
    stranger = "arn:aws:sns:us-east-1:999999999999:someone-elses-topic"
    note = signer.sign(sns_notification(fixture("event-bounce.json"), topic=stranger))
    _refused(_post(client, "/webhooks/ses", note, {}), email, 403)


def test_a_certificate_from_a_host_that_is_not_sns_is_never_fetched(
    signer: SnsSigner, email: MockEmailService
) -> None:
    production = AsgiClient(Starlette(routes=email_routes()))  # the real host rule
    fetched = signer.server.state.count(
        "GET", "/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem"
    )
    note = signer.sign(sns_notification(fixture("event-bounce.json")))
    _refused(_post(production, "/webhooks/ses", note, {}), email)
    after = signer.server.state.count(
        "GET", "/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem"
    )
    assert after == fetched


@pytest.mark.parametrize(
    ("url", "trusted"),
    [
        ("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-ab.pem", True),
        ("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-ab.pem", True),
        ("http://sns.us-east-1.amazonaws.com/SimpleNotificationService-ab.pem", False),
        ("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-ab.pem", False),
        ("https://sns.us-east-1.amazonaws.com.evil.example/x.pem", False),
        ("https://sns.us-east-1.amazonaws.com@evil.example/x.pem", False),
        ("https://sns.us-east-1.amazonaws.com:8443/x.pem", False),
        ("https://evil.example/sns.us-east-1.amazonaws.com/x.pem", False),
    ],
)
def test_the_certificate_host_rule(url: str, trusted: bool) -> None:
    region = "cn-north-1" if ".cn/" in url else "us-east-1"
    assert sns_url(url, region) is trusted


def test_the_certificate_is_fetched_once(
    client: AsgiClient, signer: SnsSigner, email: MockEmailService
) -> None:
    path = "/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem"
    before = signer.server.state.count("GET", path)
    for kind in ("event-bounce.json", "event-complaint.json"):
        note = signer.sign(sns_notification(fixture(kind)))
        assert _post(client, "/webhooks/ses", note, {}).status_code == 200
    assert signer.server.state.count("GET", path) - before == 1


def test_a_subscription_to_an_allowed_topic_is_confirmed(
    client: AsgiClient, signer: SnsSigner, email: MockEmailService
) -> None:
    confirm = signer.sign(sns_subscription(signer.server.url))
    response = _post(client, "/webhooks/ses", confirm, {})
    assert response.status_code == 200, response.text
    assert response.json() == {"confirmed": TOPIC}
    [get] = [r for r in signer.server.state.requests if r.query.get("Action")]
    assert get.query == {"Action": "ConfirmSubscription", "TopicArn": TOPIC, "Token": "abc"}


def test_a_subscription_to_another_topic_is_not_confirmed(
    client: AsgiClient, signer: SnsSigner, email: MockEmailService
) -> None:
    before = len(signer.server.state.requests)
    stranger = "arn:aws:sns:us-east-1:999999999999:someone-elses-topic"
    confirm = signer.sign(sns_subscription(signer.server.url, topic=stranger))
    assert _post(client, "/webhooks/ses", confirm, {}).status_code == 403
    assert not [r for r in signer.server.state.requests[before:] if r.query.get("Action")]


def test_a_signed_message_that_is_not_an_ses_event_is_skipped(
    client: AsgiClient, signer: SnsSigner, email: MockEmailService
) -> None:
    note = signer.sign(sns_notification("Hello world!"))  # AWS's documented sample message
    response = _post(client, "/webhooks/ses", note, {})
    assert response.status_code == 200
    assert response.json()["skipped"] == 1
    assert email.get_suppressed_emails() == []


def test_a_failed_store_write_asks_sns_to_retry(
    client: AsgiClient, signer: SnsSigner, email: MockEmailService, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(entry: Any) -> None:
        raise OSError("the table is unreachable")

    monkeypatch.setattr(email.suppression, "add", down)
    note = signer.sign(sns_notification(fixture("event-complaint.json")))
    response = _post(client, "/webhooks/ses", note, {})
    assert response.status_code == 503
    assert response.json()["failed_suppressions"] == 1


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[" * 5000 + b"]" * 5000, b'{"Type": "Notification"}', b"\xff\xfe"],
)
def test_hostile_sns_bodies_are_refused(
    client: AsgiClient, email: MockEmailService, body: bytes
) -> None:
    _refused(client.post("/webhooks/ses", content=body), email)


# -- POST /webhooks/resend (Svix) -------------------------------------------------------------


def test_a_signed_resend_bounce_suppresses(client: AsgiClient, email: MockEmailService) -> None:
    body = json.dumps(fixture("resend-email-bounced.json")).encode()
    response = client.post("/webhooks/resend", content=body, headers=svix_headers(body))
    assert response.status_code == 200, response.text
    assert response.json()["suppressed"] == 1
    assert _listed(email) == {"delivered@resend.dev": ("BOUNCE", None)}
    sink = email.metrics
    assert isinstance(sink, InMemorySink)
    assert sink.total("EmailEvents", EventSource="resend", EventType="bounce") == 1


@pytest.mark.parametrize("mutation", ["secret", "body", "stale", "headers"])
def test_a_bad_resend_signature_is_refused(
    client: AsgiClient, email: MockEmailService, mutation: str
) -> None:
    body = json.dumps(fixture("resend-email-bounced.json")).encode()
    headers = svix_headers(body)
    if mutation == "secret":
        headers = svix_headers(body, secret="whsec_" + "QUJD" * 8)
    elif mutation == "body":
        body = body.replace(b"delivered@resend.dev", b"victim@resend.dev")
    elif mutation == "stale":
        headers = svix_headers(body, when=time.time() - 600)
    else:
        headers = {"content-type": "application/json"}
    _refused(client.post("/webhooks/resend", content=body, headers=headers), email)


def test_resend_events_are_normalized(client: AsgiClient, email: MockEmailService) -> None:
    transient = fixture("resend-email-bounced.json")
    transient["data"]["bounce"]["type"] = "Transient"
    transient["data"]["to"] = ["full@example.com"]
    contact = {"type": "contact.created", "created_at": "2024-11-22T23:41:12Z", "data": {}}
    broken = {"type": "email.bounced", "created_at": "2024-11-22T23:41:12Z", "data": {"to": 5}}
    expected = [
        ("resend-email-complained.json", 1, 1, 0),
        ("resend-email-delivered.json", 1, 0, 0),
        (transient, 1, 0, 0),
        (contact, 0, 0, 0),
        (broken, 0, 0, 1),
    ]
    for payload, events, suppressed, skipped in expected:
        data = fixture(payload) if isinstance(payload, str) else payload
        body = json.dumps(data).encode()
        answer = client.post("/webhooks/resend", content=body, headers=svix_headers(body)).json()
        assert (answer["events"], answer["suppressed"], answer["skipped"]) == (
            events,
            suppressed,
            skipped,
        )
    assert _listed(email) == {"complained@resend.dev": ("COMPLAINT", None)}


def test_resend_without_a_secret_is_unavailable(signer: SnsSigner) -> None:
    register_service("email", create_email_service("mock"))
    client = AsgiClient(Starlette(routes=email_routes()))
    body = json.dumps(fixture("resend-email-bounced.json")).encode()
    response = client.post("/webhooks/resend", content=body, headers=svix_headers(body))
    assert response.status_code == 503
    assert response.json()["code"] == "CONFIGURATION"


def test_svix_documented_vector(monkeypatch: pytest.MonkeyPatch) -> None:
    # Svix's documented example, verified at the moment it was signed.
    import standardwebhooks.webhooks as std

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Frozen:
            return cls.fromtimestamp(1614265330, tz)

    monkeypatch.setattr(std, "datetime", Frozen)
    headers = {
        "svix-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "svix-timestamp": "1614265330",
        "svix-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    verify_resend(secret, b'{"test": 2432232314}', headers)
    with pytest.raises(WebhookRejected):
        verify_resend(secret, b'{"test": 2432232315}', headers)


# -- POST /webhooks/sendgrid (ECDSA) ----------------------------------------------------------

# SendGrid's documented verification example (sendgrid-python's event webhook test).
SG_PUBLIC_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3G"
    "Rqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
)
SG_SIGNATURE = (
    "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15Tl"
    "uLtEZtM="
)
SG_TIMESTAMP = "1600112502"
SG_PAYLOAD = (
    json.dumps(
        [
            {
                "email": "hello@world.com",
                "event": "dropped",
                "reason": "Bounced Address",
                "sg_event_id": "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
                "sg_message_id": "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18"
                "-5F5FC76C-9.0",
                "smtp-id": "<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>",
                "timestamp": 1600112492,
            }
        ],
        sort_keys=True,
        separators=(",", ":"),
    )
    + "\r\n"
).encode()


def test_sendgrid_documented_vector() -> None:
    key = load_public_key(SG_PUBLIC_KEY)
    headers = {
        "x-twilio-email-event-webhook-signature": SG_SIGNATURE,
        "x-twilio-email-event-webhook-timestamp": SG_TIMESTAMP,
    }
    verify_sendgrid(key, SG_PAYLOAD, headers, now=1600112502)
    with pytest.raises(WebhookRejected):
        verify_sendgrid(key, SG_PAYLOAD.replace(b"dropped", b"opened!"), headers, now=1600112502)
    with pytest.raises(WebhookRejected):  # the same request, replayed an hour later
        verify_sendgrid(key, SG_PAYLOAD, headers, now=1600112502 + 3600)
    wrong = {**headers, "x-twilio-email-event-webhook-timestamp": "1600112503"}
    with pytest.raises(WebhookRejected):
        verify_sendgrid(key, SG_PAYLOAD, wrong, now=1600112502)


def test_signed_sendgrid_events_are_normalized_and_suppress(
    client: AsgiClient,
    email: MockEmailService,
    sendgrid_signing: tuple[ec.EllipticCurvePrivateKey, str],
) -> None:
    events = fixture("sendgrid-events.json")
    events.insert(3, {"event": "bounce", "email": 5})  # malformed: skipped, not fatal
    body = json.dumps(events).encode()
    response = client.post(
        "/webhooks/sendgrid", content=body, headers=sendgrid_headers(sendgrid_signing[0], body)
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "events": 12,
        "suppressed": 4,
        "skipped": 1,
        "unusable": 0,
        "failed_suppressions": 0,
    }
    assert _listed(email) == {
        "bounced@test.com": ("BOUNCE", None),  # a blocked bounce is transient: not listed
        "spam@test.com": ("COMPLAINT", None),
        "left@test.com": ("UNSUBSCRIBE", "*"),
        "group@test.com": ("UNSUBSCRIBE", "sendgrid-group-10"),
    }


@pytest.mark.parametrize("mutation", ["key", "body", "stale", "headers", "garbage"])
def test_a_bad_sendgrid_signature_is_refused(
    client: AsgiClient,
    email: MockEmailService,
    sendgrid_signing: tuple[ec.EllipticCurvePrivateKey, str],
    mutation: str,
) -> None:
    body = json.dumps(fixture("sendgrid-events.json")).encode()
    headers = sendgrid_headers(sendgrid_signing[0], body)
    if mutation == "key":
        headers = sendgrid_headers(ec.generate_private_key(ec.SECP256R1()), body)
    elif mutation == "body":
        body = body.replace(b"spam@test.com", b"victim@test.com")
    elif mutation == "stale":
        headers = sendgrid_headers(sendgrid_signing[0], body, when=time.time() - 3600)
    elif mutation == "headers":
        headers = {"content-type": "application/json"}
    else:
        headers = {
            "X-Twilio-Email-Event-Webhook-Signature": "%%%",
            "X-Twilio-Email-Event-Webhook-Timestamp": "10" * 300,
        }
    _refused(client.post("/webhooks/sendgrid", content=body, headers=headers), email)


def test_a_sendgrid_key_that_is_not_p256_is_a_configuration_error() -> None:
    register_service(
        "email", create_email_service("mock", sendgrid_webhook_public_key="bm90IGEga2V5")
    )
    client = AsgiClient(Starlette(routes=email_routes()))
    key, _ = sendgrid_key()
    body = b"[]"
    response = client.post("/webhooks/sendgrid", content=body, headers=sendgrid_headers(key, body))
    assert response.status_code == 503
    assert "SENDGRID_WEBHOOK_PUBLIC_KEY" in response.json()["error"]


def test_a_signed_body_that_is_not_an_event_array_is_skipped(
    client: AsgiClient,
    email: MockEmailService,
    sendgrid_signing: tuple[ec.EllipticCurvePrivateKey, str],
) -> None:
    for body in (b'{"event": "bounce"}', b"[" * 3000 + b"]" * 3000, b"\xff"):
        headers = sendgrid_headers(sendgrid_signing[0], body)
        response = client.post("/webhooks/sendgrid", content=body, headers=headers)
        assert response.status_code == 200
        assert response.json()["skipped"] == 1
    assert email.get_suppressed_emails() == []


def test_every_route_refuses_other_methods(client: AsgiClient) -> None:
    for path in ("/webhooks/ses", "/webhooks/resend", "/webhooks/sendgrid"):
        assert client.get(path).status_code == 405
