"""``create_email_service``: pick and build the provider named by ``EMAIL_PROVIDER``."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import EmailError, EmailErrorCode

if TYPE_CHECKING:
    from .service import EmailService

# Provider modules are imported only when chosen, so an SES-only process never loads smtplib
# code paths it does not use (and the other way round).
_PROVIDERS: dict[str, str] = {
    "ses": "milequest.services.email.ses:SesEmailService",
    "smtp": "milequest.services.email.smtp:SmtpEmailService",
    "mock": "milequest.services.email.mock:MockEmailService",
    "resend": "milequest.services.email.resend:ResendEmailService",
    "sendgrid": "milequest.services.email.sendgrid:SendGridEmailService",
}
# Arguments that configure the instance rather than the settings, per provider.
_COMMON_ARGS = frozenset({"metrics", "suppression"})
_INSTANCE_ARGS: dict[str, frozenset[str]] = {
    "ses": _COMMON_ARGS | {"client"},
    "smtp": _COMMON_ARGS,
    "mock": _COMMON_ARGS | {"seed"},
    "resend": _COMMON_ARGS,
    "sendgrid": _COMMON_ARGS,
}


def create_email_service(provider: str | None = None, **overrides: Any) -> EmailService:
    """A new email service for ``provider`` (default: ``EMAIL_PROVIDER``, else ``ses``).

    Without ``provider``, in direct mode, when ``EMAIL_ROUTING_PROVIDERS`` or
    ``EMAIL_FAILOVER_PROVIDER`` names other providers, the service routes each message among
    them (:class:`~milequest.services.email.routing.RoutedEmailService`, one suppression
    list). With ``EMAIL_DELIVERY=queue`` sends are validated here and queued; the queue's
    consumer routes them.

    Settings are read from the environment now; keyword ``overrides`` (setting names such
    as ``default_from_email`` or ``smtp_host``) take precedence. ``metrics`` (a sink),
    ``suppression`` (a :class:`~.suppression.SuppressionStore` to share) and, for SES,
    ``client`` (a ``sesv2`` client) configure the instance itself. Invalid settings raise
    :class:`EmailError` ``CONFIGURATION`` naming the variable.
    """
    from milequest.services.config import load_settings

    from .settings import PROVIDERS, RESERVED_PROVIDERS, EmailSettings

    known = frozenset().union(*_INSTANCE_ARGS.values())
    instance_args = {k: overrides.pop(k) for k in list(overrides) if k in known}
    if provider is not None:
        overrides["email_provider"] = provider
    settings = load_settings(EmailSettings, EmailError, EmailErrorCode.CONFIGURATION, overrides)
    name = settings.provider
    if name in RESERVED_PROVIDERS:
        raise EmailError(
            EmailErrorCode.CONFIGURATION,
            f"EMAIL_PROVIDER={name} is reserved for a later provider and not yet available; "
            f"use one of: {', '.join(PROVIDERS)}",
        )
    if name not in _PROVIDERS:
        raise EmailError(
            EmailErrorCode.CONFIGURATION,
            f"EMAIL_PROVIDER={name!r} is not a provider; valid: {', '.join(PROVIDERS)}",
        )
    unused = sorted(set(instance_args) - _INSTANCE_ARGS[name])
    if unused:
        raise EmailError(
            EmailErrorCode.CONFIGURATION,
            f"the {name} provider takes no {', '.join(unused)} argument",
        )
    module_name, _, class_name = _PROVIDERS[name].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    service: EmailService = cls(settings, **instance_args)
    if provider is not None or settings.email_delivery == "queue" or not settings.routed_providers:
        return service
    from .routing import routed_email_service

    unknown = [n for n in settings.routed_providers if n not in _PROVIDERS]
    if unknown:
        raise EmailError(
            EmailErrorCode.CONFIGURATION,
            f"EMAIL_ROUTING_PROVIDERS / EMAIL_FAILOVER_PROVIDER: {', '.join(unknown)} "
            f"is not a provider; valid: {', '.join(PROVIDERS)}",
        )
    shared = {"metrics": instance_args.get("metrics"), "suppression": service.suppression}
    return routed_email_service(
        service, lambda other: create_email_service(other, **overrides, **shared)
    )
