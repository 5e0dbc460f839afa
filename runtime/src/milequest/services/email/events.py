"""Email sending events, whatever the provider: one typed model, and acting on it.

Every provider's events become one :class:`EmailEvent` per recipient: SES's through SNS
(parsed here; both its formats, configuration-set *event publishing* with ``eventType`` and
identity *notifications* with ``notificationType``), Resend's and SendGrid's through their
signed webhooks (``milequest.web.email_webhooks``). :func:`record_events` counts them and
puts permanent bounces, complaints and unsubscribes on the shared suppression list;
transient bounces change nothing.

Failures are classified: a record that is not an event, or names an address that cannot
be suppressed, is *permanent*: skipped, logged and counted, never retried. A suppression
that failed on our side (the store unreachable) is *transient*: the SES handler raises
for it, so that Lambda retries the event and then dead-letters it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from milequest.services import jsonsafe

from .errors import EmailError
from .results import SuppressionReason
from .suppression import ALL_CATEGORIES

if TYPE_CHECKING:
    from .service import EmailService

logger = logging.getLogger("milequest.services.email.events")


class EmailEventType(StrEnum):
    """The normalized type of an email event, whichever provider and format it came in."""

    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    DELIVERY = "delivery"
    SEND = "send"
    REJECT = "reject"
    RENDERING_FAILURE = "rendering_failure"
    DELIVERY_DELAY = "delivery_delay"
    OPEN = "open"
    CLICK = "click"
    SUBSCRIPTION = "subscription"
    UNSUBSCRIBE = "unsubscribe"


_TYPES = {
    "bounce": EmailEventType.BOUNCE,
    "complaint": EmailEventType.COMPLAINT,
    "delivery": EmailEventType.DELIVERY,
    "send": EmailEventType.SEND,
    "reject": EmailEventType.REJECT,
    "rendering failure": EmailEventType.RENDERING_FAILURE,
    "renderingfailure": EmailEventType.RENDERING_FAILURE,
    "deliverydelay": EmailEventType.DELIVERY_DELAY,
    "delivery delay": EmailEventType.DELIVERY_DELAY,
    "open": EmailEventType.OPEN,
    "click": EmailEventType.CLICK,
    "subscription": EmailEventType.SUBSCRIPTION,
}


class EmailEvent(BaseModel):
    """One email event about one recipient, whatever provider and format it came in.

    ``category`` names the bulk category an unsubscribe is from (None: every category).
    ``milequest_id`` is our id of a queued message (its ``milequest_id`` tag), which the
    result of the ``send_email`` that queued it carries as ``message_id``.
    """

    model_config = ConfigDict(frozen=True)

    type: EmailEventType
    recipient: str | None
    message_id: str
    timestamp: datetime
    source: str | None = None
    bounce_type: str | None = None
    bounce_subtype: str | None = None
    diagnostic: str | None = None
    complaint_type: str | None = None
    reason: str | None = None
    template: str | None = None
    configuration_set: str | None = None
    provider: str = "ses"
    category: str | None = None
    milequest_id: str | None = None

    @property
    def suppression(self) -> tuple[SuppressionReason, str | None] | None:
        """The reason (and category) to put the recipient on the list with, if any."""
        if self.recipient is None:
            return None
        if self.type is EmailEventType.COMPLAINT:
            return SuppressionReason.COMPLAINT, None
        if self.type is EmailEventType.BOUNCE and self.bounce_type == "Permanent":
            return SuppressionReason.BOUNCE, None
        if self.type is EmailEventType.UNSUBSCRIBE:
            return SuppressionReason.UNSUBSCRIBE, self.category or ALL_CATEGORIES
        return None

    @property
    def suppresses(self) -> bool:
        """Whether this event should put the recipient on the suppression list."""
        return self.suppression is not None


SesEventType = EmailEventType
SesEvent = EmailEvent
"""The names these had when SES was the only source of events."""


# -- the documented SES payloads (only what is used; the rest is ignored) -----------------------


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _Mail(_Loose):
    message_id: str = Field(alias="messageId")
    timestamp: datetime
    source: str | None = None
    destination: list[str] = Field(default_factory=list)
    tags: dict[str, list[str]] = Field(default_factory=dict)


class _Recipient(_Loose):
    email_address: str = Field(alias="emailAddress")
    status: str | None = None
    diagnostic_code: str | None = Field(None, alias="diagnosticCode")


class _Bounce(_Loose):
    bounce_type: str = Field(alias="bounceType")
    bounce_subtype: str | None = Field(None, alias="bounceSubType")
    bounced_recipients: list[_Recipient] = Field(alias="bouncedRecipients")
    timestamp: datetime | None = None


class _Complaint(_Loose):
    complained_recipients: list[_Recipient] = Field(alias="complainedRecipients")
    complaint_feedback_type: str | None = Field(None, alias="complaintFeedbackType")
    timestamp: datetime | None = None


class _Delivery(_Loose):
    recipients: list[str]
    smtp_response: str | None = Field(None, alias="smtpResponse")
    timestamp: datetime | None = None


class _DeliveryDelay(_Loose):
    delay_type: str | None = Field(None, alias="delayType")
    delayed_recipients: list[_Recipient] = Field(alias="delayedRecipients")
    timestamp: datetime | None = None


class _Notification(_Loose):
    event_type: str | None = Field(None, alias="eventType")
    notification_type: str | None = Field(None, alias="notificationType")
    mail: _Mail
    bounce: _Bounce | None = None
    complaint: _Complaint | None = None
    delivery: _Delivery | None = None
    delivery_delay: _DeliveryDelay | None = Field(None, alias="deliveryDelay")
    reject: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None


_P = TypeVar("_P", bound=BaseModel)


class MalformedEvent(ValueError):
    """A record that is not an SES event this module understands."""


def parse_ses_message(message: str | Mapping[str, Any]) -> list[EmailEvent]:
    """The normalized events of one SES notification (the SNS ``Message``).

    Raises :class:`MalformedEvent` for anything else, hostile input included (deep
    nesting, lone surrogates, values of the wrong type).
    """
    try:
        if isinstance(message, str | bytes):
            data = jsonsafe.loads(message)
        elif isinstance(message, Mapping):
            data = dict(message)
            jsonsafe.check(data)
        else:
            raise TypeError(f"a message is JSON text or an object, not {type(message).__name__}")
        note = _Notification.model_validate(data)
    except (ValueError, TypeError, ValidationError) as exc:
        raise MalformedEvent(f"not an SES notification: {_short(exc)}") from None
    raw_type = (note.event_type or note.notification_type or "").strip().lower()
    kind = _TYPES.get(raw_type)
    if kind is None:
        raise MalformedEvent(f"unknown SES event type {raw_type!r}")
    mail = note.mail
    config_sets = mail.tags.get("ses:configuration-set") or []
    config_set = config_sets[0] if config_sets else None
    base: dict[str, Any] = {
        "type": kind,
        "message_id": mail.message_id,
        "source": mail.source,
        "configuration_set": config_set,
        "milequest_id": milequest_id(mail.tags),
    }

    def event(recipient: str | None, timestamp: datetime | None = None, **extra: Any) -> EmailEvent:
        return EmailEvent(
            **{**base, "timestamp": timestamp or mail.timestamp, **extra, "recipient": recipient}
        )

    destination: list[str | None] = [*mail.destination] or [None]
    if kind is EmailEventType.BOUNCE:
        bounce = _part(note.bounce, "bounce")
        return [
            event(
                r.email_address,
                bounce.timestamp,
                bounce_type=bounce.bounce_type,
                bounce_subtype=bounce.bounce_subtype,
                diagnostic=r.diagnostic_code or r.status,
            )
            for r in bounce.bounced_recipients
        ]
    if kind is EmailEventType.COMPLAINT:
        complaint = _part(note.complaint, "complaint")
        return [
            event(
                r.email_address,
                complaint.timestamp,
                complaint_type=complaint.complaint_feedback_type,
            )
            for r in complaint.complained_recipients
        ]
    if kind is EmailEventType.DELIVERY:
        delivery = _part(note.delivery, "delivery")
        return [event(r, diagnostic=delivery.smtp_response) for r in delivery.recipients]
    if kind is EmailEventType.DELIVERY_DELAY:
        delay = _part(note.delivery_delay, "deliveryDelay")
        return [
            event(
                r.email_address,
                reason=delay.delay_type,
                diagnostic=r.diagnostic_code or r.status,
            )
            for r in delay.delayed_recipients
        ]
    if kind is EmailEventType.REJECT:
        reason = str((note.reject or {}).get("reason", "")) or None
        return [event(r, reason=reason) for r in destination]
    if kind is EmailEventType.RENDERING_FAILURE:
        failure = note.failure or {}
        return [
            event(r, reason=failure.get("errorMessage"), template=failure.get("templateName"))
            for r in destination
        ]
    return [event(r) for r in destination]


def milequest_id(tags: object) -> str | None:
    """Our id of a queued message from the tags its provider's event carries: SES's
    ``mail.tags`` (name to a list of values), SendGrid's event (custom args are top-level
    keys), Resend's ``data.tags`` (a name-to-value object, or a list of name/value pairs)."""
    from .queue import ID_TAG

    value: object = None
    if isinstance(tags, Mapping):
        value = tags.get(ID_TAG)
    elif isinstance(tags, list):
        value = next(
            (t.get("value") for t in tags if isinstance(t, Mapping) and t.get("name") == ID_TAG),
            None,
        )
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) and value else None


def _part(value: _P | None, name: str) -> _P:
    """The event-type object of a notification (``bounce``, ...), which must be present."""
    if value is None:
        raise MalformedEvent(f"{name} event without a {name} object")
    return value


@dataclass
class EventReport:
    """What a batch of events (or of SNS records) produced.

    ``skipped``: records or events that were not usable events. ``unusable``: recipients
    whose entry the list refused (not an address): permanent. ``failed_suppressions``:
    suppressions that failed on our side: transient, worth a retry.
    """

    events: list[EmailEvent] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)
    skipped: int = 0
    unusable: list[str] = field(default_factory=list)
    failed_suppressions: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Counts for logs and the handler's reply."""
        return {
            "events": len(self.events),
            "suppressed": len(self.suppressed),
            "skipped": self.skipped,
            "unusable": len(self.unusable),
            "failed_suppressions": len(self.failed_suppressions),
        }


# What the record itself got wrong; any other failure is ours (and may pass on a retry).
_PERMANENT = frozenset({"INVALID_EMAIL", "INVALID_MESSAGE"})


def record_events(
    events: Iterable[EmailEvent], service: EmailService, report: EventReport | None = None
) -> EventReport:
    """Count ``events`` into the metrics and put whom they name on the shared list.

    SES's events are counted as ``SesEvents``, other providers' as ``EmailEvents`` with a
    ``Provider`` dimension. Never raises: failures are sorted into ``report``.
    """
    report = report or EventReport()
    for item in events:
        report.events.append(item)
        dims = {"EventType": item.type.value}
        if item.bounce_type:
            dims["BounceType"] = item.bounce_type
        if item.provider == "ses":
            service.record_metric("SesEvents", 1, "Count", **dims)
        else:
            service.record_metric("EmailEvents", 1, "Count", EventSource=item.provider, **dims)
        wanted = item.suppression
        if wanted is None or item.recipient is None:
            continue
        reason, category = wanted
        try:
            service.suppress_email(
                item.recipient, reason, category, source=f"{item.provider}-events"
            )
        except EmailError as exc:
            if exc.code.value in _PERMANENT:
                logger.warning("not suppressing unusable recipient %r: %s", item.recipient, exc)
                report.unusable.append(item.recipient)
                service.record_metric("EmailEventsUnusable", 1)
            else:
                logger.error("could not suppress %s: %s", item.recipient, exc)
                report.failed_suppressions.append(item.recipient)
        else:
            report.suppressed.append(item.recipient)
    return report


def _sns_message(record: object) -> Any:
    """The ``Sns.Message`` of a record SNS delivered to Lambda; ``MalformedEvent`` if none."""
    from aws_lambda_powertools.utilities.parser.models import SnsRecordModel

    if not isinstance(record, Mapping) or not isinstance(record.get("Sns"), Mapping):
        raise MalformedEvent("not an SNS record (no Sns object)")
    try:
        jsonsafe.check(dict(record))
        return SnsRecordModel.model_validate(record).Sns.Message
    except (ValueError, TypeError, ValidationError) as exc:
        raise MalformedEvent(f"not an SNS record: {_short(exc)}") from None


def process_sns_event(event: object, service: EmailService | None = None) -> EventReport:
    """Parse every SNS record of a Lambda event, record metrics, and suppress where due.

    One bad record never stops the others: it is logged, counted (``SesEventsSkipped``)
    and skipped. ``service`` defaults to the process's email service
    (``get_service("email")``), whose creation may raise its ``CONFIGURATION`` error.
    """
    if service is None:
        from milequest.services.registry import get_service

        service = get_service("email")
    report = EventReport()
    records = event.get("Records") if isinstance(event, Mapping) else None
    if not isinstance(records, list):
        logger.error("not an SNS event: no Records list")
        report.skipped += 1
        return report
    for position, record in enumerate(records):
        try:
            events = parse_ses_message(_sns_message(record))
        except MalformedEvent as exc:
            logger.warning("skipping malformed SNS record %d: %s", position, exc)
            report.skipped += 1
            service.record_metric("SesEventsSkipped", 1)
            continue
        record_events(events, service, report)
    return report


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- building realistic events (local stack, tests) -----------------------------------------


def _stamp(when: datetime | None = None) -> str:
    moment = when or datetime.now(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sample_ses_message(
    kind: str,
    recipient: str,
    *,
    source: str = "noreply@milequest.app",
    message_id: str | None = None,
    bounce_type: str = "Permanent",
    bounce_subtype: str = "General",
    configuration_set: str | None = None,
    notification: bool = False,
) -> dict[str, Any]:
    """An SES event as SES documents it: ``kind`` is bounce, complaint, delivery, reject,
    delivery_delay or rendering_failure. ``notification=True`` gives the identity-notification
    format (``notificationType``; bounce, complaint and delivery only)."""
    stamp = _stamp()
    mail_id = message_id or f"0100{uuid.uuid4().hex[:12]}-{uuid.uuid4()}-000000"
    mail: dict[str, Any] = {
        "timestamp": stamp,
        "source": source,
        "sourceArn": f"arn:aws:ses:us-east-1:123456789012:identity/{source.rpartition('@')[2]}",
        "sendingAccountId": "123456789012",
        "messageId": mail_id,
        "destination": [recipient],
        "headersTruncated": False,
        "commonHeaders": {"from": [source], "to": [recipient], "messageId": mail_id},
        "tags": {"ses:configuration-set": [configuration_set]} if configuration_set else {},
    }
    feedback = f"0100{uuid.uuid4().hex[:12]}-{uuid.uuid4()}-000000"
    bodies: dict[str, tuple[str, str, dict[str, Any]]] = {
        "bounce": (
            "Bounce",
            "bounce",
            {
                "bounceType": bounce_type,
                "bounceSubType": bounce_subtype,
                "bouncedRecipients": [
                    {
                        "emailAddress": recipient,
                        "action": "failed",
                        "status": "5.1.1" if bounce_type == "Permanent" else "4.4.7",
                        "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                    }
                ],
                "timestamp": stamp,
                "feedbackId": feedback,
                "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com",
            },
        ),
        "complaint": (
            "Complaint",
            "complaint",
            {
                "complainedRecipients": [{"emailAddress": recipient}],
                "timestamp": stamp,
                "feedbackId": feedback,
                "userAgent": "ExampleCorp Feedback Loop (V0.01)",
                "complaintFeedbackType": "abuse",
                "arrivalDate": stamp,
            },
        ),
        "delivery": (
            "Delivery",
            "delivery",
            {
                "timestamp": stamp,
                "processingTimeMillis": 546,
                "recipients": [recipient],
                "smtpResponse": "250 ok:  Message 64111812 accepted",
                "reportingMTA": "a8-70.smtp-out.amazonses.com",
            },
        ),
        "reject": ("Reject", "reject", {"reason": "Bad content"}),
        "delivery_delay": (
            "DeliveryDelay",
            "deliveryDelay",
            {
                "timestamp": stamp,
                "delayType": "TransientCommunicationFailure",
                "expirationTime": stamp,
                "delayedRecipients": [
                    {
                        "emailAddress": recipient,
                        "status": "4.4.1",
                        "diagnosticCode": "smtp; 421 4.4.1 Unable to connect to remote host",
                    }
                ],
            },
        ),
        "rendering_failure": (
            "Rendering Failure",
            "failure",
            {
                "errorMessage": "Attribute 'name' is not present in the rendering data.",
                "templateName": "welcome",
            },
        ),
    }
    if kind not in bodies:
        raise ValueError(f"unknown event kind {kind!r}; known: {', '.join(bodies)}")
    type_name, key, body = bodies[kind]
    type_key = "notificationType" if notification else "eventType"
    return {type_key: type_name, key: body, "mail": mail}


def sample_sns_event(
    kind: str,
    recipient: str,
    *,
    topic_arn: str = "arn:aws:sns:us-east-1:123456789012:milequest-ses-events",
    **options: Any,
) -> dict[str, Any]:
    """A Lambda event from SNS carrying one SES event (see :func:`sample_ses_message`),
    exactly as the SES event handler receives it: simulate a bounce or complaint with it."""
    message = sample_ses_message(kind, recipient, **options)
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": f"{topic_arn}:{uuid.uuid4()}",
                "Sns": {
                    "Type": "Notification",
                    "MessageId": str(uuid.uuid4()),
                    "TopicArn": topic_arn,
                    "Subject": None,
                    "Message": json.dumps(message),
                    "Timestamp": _stamp(),
                    "SignatureVersion": "1",
                    "Signature": "EXAMPLE",
                    "SigningCertUrl": "https://sns.us-east-1.amazonaws.com/"
                    "SimpleNotificationService-0000000000000000000000000000000.pem",
                    "UnsubscribeUrl": "https://sns.us-east-1.amazonaws.com/"
                    f"?Action=Unsubscribe&SubscriptionArn={topic_arn}:0",
                    "MessageAttributes": {},
                },
            }
        ]
    }
