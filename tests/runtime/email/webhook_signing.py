"""Signing webhook requests as SNS, Svix (Resend) and SendGrid do, with test keys.

SNS: a test RSA key and certificate, served by a local HTTP server (which also answers the
subscription confirmation GET). SendGrid: a test P-256 key. Svix: a test secret.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from tests.conftest import self_signed_certificate
from tests.runtime.email.api_server import ApiHandler, ApiServer, ApiState, Recorded, Reply

FIXTURES = Path(__file__).parent / "fixtures"
TOPIC = "arn:aws:sns:us-east-1:123456789012:milequest-dev-ses-bounce"
CERT_PATH = "/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem"
RESEND_SECRET = "whsec_" + base64.b64encode(b"milequest-test-webhook-secret-32b").decode()


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def stamp(when: float | None = None) -> str:
    moment = dt.datetime.fromtimestamp(time.time() if when is None else when, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- SNS ---------------------------------------------------------------------------------


@dataclass
class CertState(ApiState):
    pem: bytes = b""


class _CertHandler(ApiHandler[CertState]):
    def route(self, request: Recorded) -> Reply:
        if request.path == CERT_PATH:
            return Reply(200, self.state.pem)
        if request.query.get("Action") == "ConfirmSubscription":
            return Reply(200, b"<ConfirmSubscriptionResponse/>")
        return Reply(404, {"error": "not found"})


@dataclass
class SnsSigner:
    """A test signing key, its certificate, and the local server that serves it."""

    key: rsa.RSAPrivateKey
    server: ApiServer[CertState]
    cert_url: str = field(init=False)

    def __post_init__(self) -> None:
        self.cert_url = self.server.url + CERT_PATH

    def sign(self, message: dict[str, Any], version: str = "1") -> dict[str, Any]:
        """``message`` with SignatureVersion, Signature and SigningCertURL set."""
        signed = {**message, "SignatureVersion": version, "SigningCertURL": self.cert_url}
        keys = (
            ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
            if signed["Type"] == "Notification"
            else ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
        )
        text = "".join(f"{k}\n{signed[k]}\n" for k in keys if signed.get(k) is not None)
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(text.encode(), padding.PKCS1v15(), algorithm)
        signed["Signature"] = base64.b64encode(signature).decode()
        return signed

    def trusted(self, url: str, region: str) -> bool:
        """The test stand-in for ``sns_url``: this server, for the topic's region."""
        return url.startswith(self.server.url + "/") and region == "us-east-1"


def _certificate(key: rsa.RSAPrivateKey) -> bytes:
    pem: bytes = self_signed_certificate(key, "sns.amazonaws.com").public_bytes(
        serialization.Encoding.PEM
    )
    return pem


@contextmanager
def sns_signer() -> Iterator[SnsSigner]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server = ApiServer(_CertHandler, CertState(pem=_certificate(key))).start()
    try:
        yield SnsSigner(key, server)
    finally:
        server.stop()


def sns_notification(
    message: Any, *, topic: str = TOPIC, when: float | None = None
) -> dict[str, Any]:
    """AWS's documented HTTP notification (fixture), carrying ``message`` now."""
    note = copy.deepcopy(fixture("sns-http-notification.json"))
    note.update(
        Message=message if isinstance(message, str) else json.dumps(message),
        MessageId=str(uuid.uuid4()),
        TopicArn=topic,
        Timestamp=stamp(when),
    )
    return note


def sns_subscription(confirm_url: str, *, topic: str = TOPIC) -> dict[str, Any]:
    """AWS's documented subscription confirmation (fixture), for ``topic``, now."""
    note = copy.deepcopy(fixture("sns-http-subscription-confirmation.json"))
    note.update(
        TopicArn=topic,
        Timestamp=stamp(),
        SubscribeURL=f"{confirm_url}/?Action=ConfirmSubscription&TopicArn={topic}&Token=abc",
    )
    return note


# -- Svix (Resend) ---------------------------------------------------------------------------


def svix_headers(
    body: bytes, *, secret: str = RESEND_SECRET, when: float | None = None
) -> dict[str, str]:
    from svix.webhooks import Webhook

    moment = dt.datetime.fromtimestamp(time.time() if when is None else when, dt.UTC)
    msg_id = f"msg_{uuid.uuid4().hex}"
    signature = Webhook(secret).sign(msg_id, moment, body.decode())
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(int(moment.timestamp())),
        "svix-signature": signature,
        "content-type": "application/json",
    }


# -- SendGrid ---------------------------------------------------------------------------------


def sendgrid_key() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A P-256 key and its public half as SendGrid shows it (base64 DER)."""
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, base64.b64encode(der).decode()


def sendgrid_headers(
    key: ec.EllipticCurvePrivateKey, body: bytes, *, when: float | None = None
) -> dict[str, str]:
    timestamp = str(int(time.time() if when is None else when))
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        "content-type": "application/json",
    }
