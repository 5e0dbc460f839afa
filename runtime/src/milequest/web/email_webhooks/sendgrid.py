"""SendGrid's signed Event Webhook: ECDSA (P-256, SHA-256) over timestamp + raw body,
checked with ``cryptography``, and SendGrid's events as
:class:`~milequest.services.email.events.EmailEvent`.

The check is written here (a few lines) rather than taken from the ``sendgrid`` package,
whose helper works on decoded text, not on the raw body SendGrid signed, and would make the
HTTP app depend on the whole SDK.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from milequest.services.email.events import EmailEvent, EmailEventType, MalformedEvent
from milequest.services.email.sendgrid import group_category

from .errors import WebhookRejected

SIGNATURE_HEADER = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER = "x-twilio-email-event-webhook-timestamp"
TOLERANCE_SECONDS = 600.0
"""How far the signed timestamp may be from now, either way (SendGrid documents none)."""

_TYPES = {
    "processed": EmailEventType.SEND,
    "dropped": EmailEventType.REJECT,
    "delivered": EmailEventType.DELIVERY,
    "deferred": EmailEventType.DELIVERY_DELAY,
    "bounce": EmailEventType.BOUNCE,
    "blocked": EmailEventType.BOUNCE,
    "open": EmailEventType.OPEN,
    "click": EmailEventType.CLICK,
    "spamreport": EmailEventType.COMPLAINT,
    "unsubscribe": EmailEventType.UNSUBSCRIBE,
    "group_unsubscribe": EmailEventType.UNSUBSCRIBE,
    "group_resubscribe": EmailEventType.SUBSCRIPTION,
}


def load_public_key(key: str) -> Any:
    """The verification key SendGrid shows (base64 DER, or PEM); ``ValueError`` if not P-256."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import (
        load_der_public_key,
        load_pem_public_key,
    )

    text = key.strip()
    loaded = (
        load_pem_public_key(text.encode())
        if text.startswith("-----")
        else load_der_public_key(base64.b64decode(text, validate=True))
    )
    if not isinstance(loaded, ec.EllipticCurvePublicKey) or loaded.curve.name != "secp256r1":
        raise ValueError("the SendGrid verification key is not a P-256 (secp256r1) key")
    return loaded


def verify_sendgrid(
    public_key: Any, body: bytes, headers: Mapping[str, str], *, now: float | None = None
) -> None:
    """Check SendGrid's signature of ``body``; :class:`WebhookRejected` if it fails."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    signature, stamp = headers.get(SIGNATURE_HEADER), headers.get(TIMESTAMP_HEADER)
    if not signature or not stamp:
        raise WebhookRejected("missing the SendGrid signature headers")
    if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
        raise WebhookRejected("malformed SendGrid timestamp")
    try:
        raw = base64.b64decode(signature, validate=True)
    except (ValueError, binascii.Error):
        raise WebhookRejected("malformed SendGrid signature") from None
    age = (time.time() if now is None else now) - int(stamp)
    if abs(age) > TOLERANCE_SECONDS:
        raise WebhookRejected("SendGrid timestamp too far from now (a replay?)")
    try:
        public_key.verify(raw, stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise WebhookRejected("SendGrid signature does not match") from None


def sendgrid_event(item: object) -> list[EmailEvent]:
    """The events of one element of SendGrid's event array (``MalformedEvent`` if broken)."""
    if not isinstance(item, Mapping):
        raise MalformedEvent("a SendGrid event is a JSON object")
    kind = item.get("event")
    email = item.get("email")
    stamp = item.get("timestamp")
    if not isinstance(kind, str) or not isinstance(email, str):
        raise MalformedEvent("a SendGrid event has an event name and an email")
    event_type = _TYPES.get(kind)
    if event_type is None:
        return []
    if not isinstance(stamp, int) or isinstance(stamp, bool):
        raise MalformedEvent(f"{kind} without an integer timestamp")
    try:
        when = datetime.fromtimestamp(stamp, UTC)
    except (OverflowError, OSError, ValueError):
        raise MalformedEvent(f"{kind}: timestamp out of range") from None
    extra: dict[str, Any] = {}
    if event_type is EmailEventType.BOUNCE:
        blocked = kind == "blocked" or item.get("type") == "blocked"
        extra = {
            "bounce_type": "Transient" if blocked else "Permanent",
            "bounce_subtype": _text(item.get("bounce_classification")),
            "diagnostic": _text(item.get("reason")) or _text(item.get("status")),
        }
    elif kind == "group_unsubscribe":
        group = item.get("asm_group_id")
        if not isinstance(group, int) or isinstance(group, bool):
            raise MalformedEvent("group_unsubscribe without an asm_group_id")
        extra = {"category": group_category(group)}
    elif event_type in (EmailEventType.REJECT, EmailEventType.DELIVERY_DELAY):
        extra = {"reason": _text(item.get("reason")) or _text(item.get("response"))}
    message_id = _text(item.get("sg_message_id")) or _text(item.get("smtp-id")) or ""
    try:
        return [
            EmailEvent(
                type=event_type,
                recipient=email,
                message_id=message_id,
                timestamp=when,
                provider="sendgrid",
                **extra,
            )
        ]
    except ValueError as exc:  # pydantic's ValidationError
        raise MalformedEvent(f"{kind}: {exc}") from None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
