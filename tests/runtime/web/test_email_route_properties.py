"""Property-based tests of the email routes: any body and headers, signed or not, get a
deliberate answer (never a 500), and nothing unsigned is recorded."""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st
from milequest.services import register_service
from milequest.services.email import create_email_service
from milequest.services.email.mock import MockEmailService
from milequest.web.email_routes import email_routes
from milequest.web.email_webhooks import SnsVerifier
from starlette.applications import Starlette

from tests.runtime.email import hostile
from tests.runtime.email.webhook_signing import (
    RESEND_SECRET,
    TOPIC,
    SnsSigner,
    sendgrid_headers,
    sendgrid_key,
    sns_notification,
    sns_signer,
    svix_headers,
)

from .asgi import AsgiClient

ROUTES = ["/webhooks/ses", "/webhooks/resend", "/webhooks/sendgrid", "/email/unsubscribe"]
DELIBERATE = {200, 400, 401, 403, 405, 413, 503}
SUMMARY_KEYS = {"events", "suppressed", "skipped", "unusable", "failed_suppressions"}

header_text = st.text(alphabet=string.printable.strip() + " ", max_size=40)
headers = st.dictionaries(
    st.sampled_from(
        [
            "svix-id",
            "svix-timestamp",
            "svix-signature",
            "x-twilio-email-event-webhook-signature",
            "x-twilio-email-event-webhook-timestamp",
            "content-type",
            "x-amz-sns-message-type",
        ]
    ),
    header_text,
    max_size=4,
)


def _json_text(value: Any) -> str:
    """``value`` as JSON text, whatever it holds (an integer past the digit limit as digits)."""
    try:
        return json.dumps(value, default=str)
    except ValueError:
        return '{"n": ' + "9" * 5000 + "}"


json_texts = hostile.values.map(_json_text)
bodies = (
    st.binary(max_size=200)
    | json_texts.map(lambda text: text.encode(errors="surrogatepass"))
    | st.sampled_from([b"[" * 5000 + b"]" * 5000, b'{"n": ' + b"9" * 5000 + b"}", b"\xff\xfe"])
)


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
        ses_events_topic_arns=TOPIC,
        resend_webhook_secret=RESEND_SECRET,
        sendgrid_webhook_public_key=sendgrid_signing[1],
        email_unsubscribe_url="https://api.milequest.example/email/unsubscribe",
        email_unsubscribe_secret="s3cret",
    )
    assert isinstance(service, MockEmailService)
    return service


@pytest.fixture
def client(signer: SnsSigner, email: MockEmailService) -> AsgiClient:
    verifier = SnsVerifier(trusted_url=signer.trusted)
    return AsgiClient(Starlette(routes=email_routes(sns_verifier=verifier)))


@pytest.mark.parametrize("path", ROUTES)
@given(body=bodies, extra=headers, query=st.none() | header_text)
def test_unsigned_requests_get_a_deliberate_answer_and_record_nothing(
    client: AsgiClient, email: MockEmailService, path: str, body: bytes, extra: Any, query: Any
) -> None:
    register_service("email", email)
    url = path if query is None else f"{path}?token={query}"
    response = client.post(url, content=body, headers=extra)
    assert response.status_code in DELIBERATE, response.text
    assert response.status_code != 200 or path != "/email/unsubscribe"
    assert email.get_suppressed_emails() == []


def _summary(response: Any) -> None:
    assert response.status_code == 200, response.text
    assert set(response.json()) == SUMMARY_KEYS


@given(text=st.text(max_size=200) | json_texts)
def test_signed_resend_bodies_are_read_safely(
    client: AsgiClient, email: MockEmailService, text: str
) -> None:
    register_service("email", email)
    body = text.encode("utf-8", errors="surrogatepass")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return  # Svix signs text; such a body cannot be signed
    _summary(client.post("/webhooks/resend", content=body, headers=svix_headers(body)))


@given(body=bodies)
def test_signed_sendgrid_bodies_are_read_safely(
    client: AsgiClient,
    email: MockEmailService,
    sendgrid_signing: tuple[ec.EllipticCurvePrivateKey, str],
    body: bytes,
) -> None:
    register_service("email", email)
    headers = sendgrid_headers(sendgrid_signing[0], body)
    _summary(client.post("/webhooks/sendgrid", content=body, headers=headers))


@given(message=st.text(max_size=200) | json_texts)
def test_signed_sns_messages_are_read_safely(
    client: AsgiClient, email: MockEmailService, signer: SnsSigner, message: str
) -> None:
    register_service("email", email)
    note = signer.sign(sns_notification(message))
    body = json.dumps(note).encode("utf-8", errors="surrogatepass")
    response = client.post("/webhooks/ses", content=body)
    if any(0xD800 <= ord(c) <= 0xDFFF for c in message):
        assert response.status_code == 401  # not valid Unicode: refused before the check
    else:
        _summary(response)
