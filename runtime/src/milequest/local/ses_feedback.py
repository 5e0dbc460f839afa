"""SNS-delivered SES notifications, as a configuration set's event destination publishes them.

The dev console feeds these to the real SES event handler to simulate a bounce or a
complaint. The shapes follow SES's documented event-publishing format (``eventType``,
``bounce``/``complaint``, ``mail``) inside SNS's Lambda event (``Records[].Sns``).
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

FeedbackKind = Literal["bounce", "complaint"]

ACCOUNT_ID = "123456789012"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ses_notification(
    kind: FeedbackKind,
    address: str,
    *,
    source: str,
    region: str = "us-east-1",
    configuration_set: str | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """The SES event for a permanent bounce of, or a complaint from, ``address``."""
    stamp = _now()
    mail_id = message_id or f"0100{uuid.uuid4().hex}-{uuid.uuid4()}-000000"
    domain = source.rpartition("@")[2]
    mail: dict[str, Any] = {
        "timestamp": stamp,
        "source": source,
        "sourceArn": f"arn:aws:ses:{region}:{ACCOUNT_ID}:identity/{domain}",
        "sendingAccountId": ACCOUNT_ID,
        "messageId": mail_id,
        "destination": [address],
        "headersTruncated": False,
        "headers": [
            {"name": "From", "value": source},
            {"name": "To", "value": address},
            {"name": "Subject", "value": "Simulated message"},
        ],
        "commonHeaders": {
            "from": [source],
            "to": [address],
            "messageId": mail_id,
            "subject": "Simulated message",
        },
        "tags": {"ses:configuration-set": [configuration_set]} if configuration_set else {},
    }
    feedback_id = f"0100{uuid.uuid4().hex}-{uuid.uuid4()}-000000"
    if kind == "bounce":
        return {
            "eventType": "Bounce",
            "bounce": {
                "feedbackId": feedback_id,
                "bounceType": "Permanent",
                "bounceSubType": "General",
                "bouncedRecipients": [
                    {
                        "emailAddress": address,
                        "action": "failed",
                        "status": "5.1.1",
                        "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                    }
                ],
                "timestamp": stamp,
                "reportingMTA": "dns; local.milequest.example",
            },
            "mail": mail,
        }
    return {
        "eventType": "Complaint",
        "complaint": {
            "feedbackId": feedback_id,
            "complainedRecipients": [{"emailAddress": address}],
            "timestamp": stamp,
            "userAgent": "Mile Quest local console",
            "complaintFeedbackType": "abuse",
            "arrivalDate": stamp,
        },
        "mail": mail,
    }


def sns_event(
    message: dict[str, Any], *, topic_name: str = "milequest-local-ses-events", region: str
) -> dict[str, Any]:
    """The Lambda event SNS delivers for one notification carrying ``message``."""
    topic_arn = f"arn:aws:sns:{region}:{ACCOUNT_ID}:{topic_name}"
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
                    "Timestamp": _now(),
                    "SignatureVersion": "1",
                    # SNS -> Lambda deliveries are authenticated by IAM; nobody checks this.
                    "Signature": base64.b64encode(os.urandom(64)).decode(),
                    "SigningCertUrl": (
                        f"https://sns.{region}.amazonaws.com/"
                        "SimpleNotificationService-0000000000000000000000.pem"
                    ),
                    "UnsubscribeUrl": (
                        f"https://sns.{region}.amazonaws.com/"
                        f"?Action=Unsubscribe&SubscriptionArn={topic_arn}:{uuid.uuid4()}"
                    ),
                    "MessageAttributes": {},
                },
            }
        ]
    }
