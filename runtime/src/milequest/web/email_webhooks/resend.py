"""Resend's webhooks: Svix signatures (checked with the maintained ``svix`` library) and
Resend's event payloads as :class:`~milequest.services.email.events.EmailEvent`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from milequest.services.email.events import EmailEvent, EmailEventType, MalformedEvent

from .errors import WebhookNotConfigured, WebhookRejected

_TYPES = {
    "email.sent": EmailEventType.SEND,
    "email.delivered": EmailEventType.DELIVERY,
    "email.delivery_delayed": EmailEventType.DELIVERY_DELAY,
    "email.bounced": EmailEventType.BOUNCE,
    "email.complained": EmailEventType.COMPLAINT,
    "email.opened": EmailEventType.OPEN,
    "email.clicked": EmailEventType.CLICK,
    "email.failed": EmailEventType.REJECT,
    "email.suppressed": EmailEventType.REJECT,
}


def verify_resend(secret: str, body: bytes, headers: Mapping[str, str]) -> None:
    """Check the ``svix-*`` headers against ``body``; :class:`WebhookRejected` if they fail.

    Svix also refuses a timestamp more than five minutes off, either way (replays).
    """
    from svix.webhooks import Webhook, WebhookVerificationError

    try:
        hook = Webhook(secret)
    except Exception as exc:  # not base64, empty: svix raises several kinds
        raise WebhookNotConfigured(f"RESEND_WEBHOOK_SECRET is not a Svix secret: {exc}") from None
    wanted = ("svix-id", "svix-timestamp", "svix-signature")
    try:
        hook.verify(body, {name: headers.get(name, "") for name in wanted})
    except WebhookVerificationError as exc:
        raise WebhookRejected(f"Svix signature: {exc}") from None
    except (ValueError, TypeError):  # a body that is not UTF-8, a malformed signature list
        raise WebhookRejected("Svix signature: malformed") from None


def resend_events(payload: object) -> list[EmailEvent]:
    """The events of one Resend webhook payload; event types that are not about a sent
    email (``contact.*``, ``domain.*``, ...) give none. ``MalformedEvent`` otherwise."""
    if not isinstance(payload, Mapping):
        raise MalformedEvent("a Resend event is a JSON object")
    kind = payload.get("type")
    data = payload.get("data")
    if not isinstance(kind, str) or not isinstance(data, Mapping):
        raise MalformedEvent("a Resend event has a type and a data object")
    event_type = _TYPES.get(kind)
    if event_type is None:
        return []
    recipients = data.get("to")
    recipients = [recipients] if isinstance(recipients, str) else recipients
    if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
        raise MalformedEvent(f"{kind} without a list of recipients")
    base: dict[str, Any] = {
        "type": event_type,
        "message_id": _text(data.get("email_id")) or "",
        "timestamp": _when(payload.get("created_at") or data.get("created_at")),
        "source": _text(data.get("from")),
        "provider": "resend",
    }
    bounce = data.get("bounce")
    if event_type is EmailEventType.BOUNCE:
        if not isinstance(bounce, Mapping):
            raise MalformedEvent("email.bounced without a bounce object")
        base.update(
            bounce_type=_text(bounce.get("type")),
            bounce_subtype=_text(bounce.get("subType")),
            diagnostic=_text(bounce.get("diagnosticCode") or bounce.get("message")),
        )
    elif kind == "email.failed":
        base["reason"] = _text((data.get("failed") or {}).get("reason"))
    elif kind == "email.suppressed":
        base["reason"] = _text((data.get("suppressed") or {}).get("message")) or "suppressed"
    try:
        return [EmailEvent(**base, recipient=recipient) for recipient in recipients]
    except ValueError as exc:  # pydantic's ValidationError
        raise MalformedEvent(f"{kind}: {exc}") from None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _when(value: object) -> datetime:
    if not isinstance(value, str):
        raise MalformedEvent("a Resend event without created_at")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedEvent(f"bad created_at {value[:40]!r}") from None
    if when.tzinfo is None:
        raise MalformedEvent("created_at without a time zone")
    return when
