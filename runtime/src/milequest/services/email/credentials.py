"""Keys the email providers, webhooks and unsubscribe links need, from settings or secrets.

A value set directly (``RESEND_API_KEY``) wins over the same value in a Secrets Manager
secret (``RESEND_SECRET_ARN``). A secret holds either the API key alone or a JSON object
(``{"api_key": ..., "webhook_secret": ...}``); secrets are fetched once per process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import EmailError, EmailErrorCode

if TYPE_CHECKING:
    from pydantic import SecretStr

    from .settings import EmailSettings


@dataclass(frozen=True)
class ProviderKeys:
    """A provider's API key and the key that checks its webhooks (either may be missing)."""

    api_key: str | None
    webhook_key: str | None


def _secret_fields(arn: str | None, variable: str) -> dict[str, Any]:
    if not arn:
        return {}
    from milequest.services.config import get_secret

    try:
        raw = get_secret(arn)
    except Exception as exc:
        raise EmailError(
            EmailErrorCode.CONFIGURATION,
            f"{variable}: could not read the secret: {type(exc).__name__}: {exc}",
            cause=exc,
        ) from None
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    return data if isinstance(data, dict) else {"api_key": raw, "secret": raw}


def _value(direct: SecretStr | str | None, secret: dict[str, Any], name: str) -> str | None:
    if direct is not None:
        text = direct if isinstance(direct, str) else direct.get_secret_value()
        return text.strip() or None
    found = secret.get(name)
    return (str(found).strip() or None) if found is not None else None


def resend_keys(settings: EmailSettings) -> ProviderKeys:
    """Resend's API key and webhook signing secret (``whsec_...``)."""
    secret = _secret_fields(settings.resend_secret_arn, "RESEND_SECRET_ARN")
    return ProviderKeys(
        _value(settings.resend_api_key, secret, "api_key"),
        _value(settings.resend_webhook_secret, secret, "webhook_secret"),
    )


def sendgrid_keys(settings: EmailSettings) -> ProviderKeys:
    """SendGrid's API key and Event Webhook verification key (base64 of a P-256 key)."""
    secret = _secret_fields(settings.sendgrid_secret_arn, "SENDGRID_SECRET_ARN")
    return ProviderKeys(
        _value(settings.sendgrid_api_key, secret, "api_key"),
        _value(settings.sendgrid_webhook_public_key, secret, "webhook_public_key"),
    )


def unsubscribe_secret(settings: EmailSettings) -> bytes | None:
    """The key signing unsubscribe links (``EMAIL_UNSUBSCRIBE_SECRET`` or its secret)."""
    secret = _secret_fields(settings.email_unsubscribe_secret_arn, "EMAIL_UNSUBSCRIBE_SECRET_ARN")
    value = _value(settings.email_unsubscribe_secret, secret, "secret")
    return value.encode("utf-8") if value else None
