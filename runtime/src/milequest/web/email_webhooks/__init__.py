"""Signed email webhooks: each request is verified before anything in it is read as events.

- :mod:`.sns`: Amazon SNS over HTTPS (SES events), signature versions 1 and 2.
- :mod:`.resend`: Resend, signed by Svix.
- :mod:`.sendgrid`: SendGrid's signed Event Webhook (ECDSA P-256).

The routes that use them are in :mod:`milequest.web.email_routes`.
"""

from .errors import WebhookNotConfigured, WebhookRejected
from .sns import SnsMessage, SnsVerifier, sns_url

__all__ = ["SnsMessage", "SnsVerifier", "WebhookNotConfigured", "WebhookRejected", "sns_url"]
