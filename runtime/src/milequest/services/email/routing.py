"""Email routing for migrations: per-message provider by flag, and safe failover.

See :mod:`milequest.services.routing` for the rules. ``create_email_service()`` builds a
:class:`RoutedEmailService` when ``EMAIL_ROUTING_PROVIDERS`` or ``EMAIL_FAILOVER_PROVIDER``
names another provider.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from milequest.services import flags
from milequest.services.errors import ServiceError
from milequest.services.health import HealthState

from .errors import EmailError
from .results import (
    BulkItemResult,
    DomainVerification,
    SendResult,
    SuppressedEmail,
    SuppressionReason,
)
from .service import BULK_WINDOW, Delivery, EmailService, Outgoing

if TYPE_CHECKING:
    from .models import EmailMessage

logger = logging.getLogger("milequest.services.email")
T = TypeVar("T")

EMAIL_PROVIDER_FLAG = "email_provider"
EMAIL_FAILOVER_FLAG = "email_failover_provider"
VERIFIED_TTL = 300.0
"""Seconds a provider's verified identities are trusted before they are listed again."""
_UNKNOWN_TTL = 30.0


def routed_email_service(
    primary: EmailService, make: Callable[[str], EmailService]
) -> EmailService:
    """``primary``, or a :class:`RoutedEmailService` over it and the providers its settings
    name (``EMAIL_ROUTING_PROVIDERS``, ``EMAIL_FAILOVER_PROVIDER``), each made by ``make``."""
    names = primary.settings.routed_providers
    if not names:
        return primary
    failover = primary.settings.email_failover_provider
    return RoutedEmailService(
        primary,
        {name: make(name) for name in names},
        failover=failover.strip().lower() if failover else None,
    )


def _recipient(message: object) -> str | None:
    """The address a message is routed by: its first recipient (never raises)."""
    from email.utils import parseaddr

    if isinstance(message, Mapping):
        values: list[object] = []
        for name in ("to", "cc", "bcc"):
            value = message.get(name)
            values.extend(value if isinstance(value, list | tuple) else [value])
    else:
        recipients = getattr(message, "recipients", None)
        values = list(recipients()) if callable(recipients) else []
    for value in values:
        if isinstance(value, str) and value.strip():
            return parseaddr(value)[1] or value
    return None


def _sender_domain(message: object, default: str) -> str:
    from email.utils import parseaddr

    sender: object = None
    if isinstance(message, Mapping):
        sender = message.get("from", message.get("from_email"))
    else:
        sender = getattr(message, "from_email", None)
    address = parseaddr(sender)[1] if isinstance(sender, str) else ""
    return (address or default).rpartition("@")[2].lower()


class RoutedEmailService(EmailService):
    """Several email providers as one service: per-message routing by flag, and failover."""

    provider_name: ClassVar[str] = "routed"

    def __init__(
        self,
        primary: EmailService,
        others: Mapping[str, EmailService],
        *,
        failover: str | None = None,
    ) -> None:
        super().__init__(
            primary.settings, metrics=primary._metrics, suppression=primary.suppression
        )
        self.primary = primary
        self.providers: dict[str, EmailService] = {primary.provider_name: primary, **others}
        self.failover = failover
        self._identities: dict[str, tuple[float, frozenset[str], frozenset[str]]] = {}
        self._identities_lock = threading.Lock()

    # -- choosing ------------------------------------------------------------------------

    def provider_for(self, message: object) -> EmailService:
        """The provider that sends ``message``: the flag's choice for its first recipient
        when it is configured and verified, else the primary."""
        name = flags.evaluate(EMAIL_PROVIDER_FLAG, _recipient(message), self.primary.provider_name)
        return self._usable(name, message) or self.primary

    def failover_for(self, chosen: EmailService, message: object) -> EmailService | None:
        """Where ``message`` goes when ``chosen`` cannot have taken it (None: nowhere).

        The failover provider; for messages the flag sent to that provider, the primary.
        """
        name = flags.evaluate(EMAIL_FAILOVER_FLAG, _recipient(message), self.failover or "")
        if name == chosen.provider_name:
            name = self.primary.provider_name
        if not name or name == chosen.provider_name:
            return None
        return self._usable(name, message)

    def _usable(self, name: object, message: object) -> EmailService | None:
        provider = self.providers.get(str(name))
        if provider is None:
            if name != self.primary.provider_name:
                self.primary.record_metric("RoutingRefused", 1, Target=str(name)[:64])
            return None
        if provider is self.primary:
            return provider
        domain = _sender_domain(message, self.primary.default_from)
        if self._verified(provider, domain):
            return provider
        self.primary.record_metric("RoutingRefused", 1, Target=provider.provider_name)
        return None

    def _verified(self, provider: EmailService, domain: str) -> bool:
        """Whether ``provider`` may send from ``domain`` (its listing kept five minutes)."""
        now = time.monotonic()
        with self._identities_lock:
            cached = self._identities.get(provider.provider_name)
        if cached is None or cached[0] <= now:
            try:
                domains = frozenset(d.lower() for d in provider.get_verified_domains())
                emails = frozenset(e.lower() for e in provider.get_verified_emails())
                cached = (now + VERIFIED_TTL, domains, emails)
            except ServiceError as exc:
                logger.warning("%s identities unknown: %s", provider.provider_name, exc)
                cached = (now + _UNKNOWN_TTL, frozenset(), frozenset())
            with self._identities_lock:
                self._identities[provider.provider_name] = cached
        _, domains, emails = cached
        return domain in domains or any(e.rpartition("@")[2] == domain for e in emails)

    # -- sending -------------------------------------------------------------------------

    def _routed(self, message: object, send: Callable[[EmailService], T]) -> T:
        chosen = self.provider_for(message)
        try:
            return send(chosen)
        except EmailError as exc:
            backup = self.failover_for(chosen, message) if exc.not_accepted else None
            if backup is None:
                raise
            logger.warning(
                "failing over from %s to %s: %s", chosen.provider_name, backup.provider_name, exc
            )
            chosen.record_metric("Failovers", 1, Target=backup.provider_name)
            return send(backup)

    def send_email(self, message: EmailMessage | Mapping[str, Any]) -> SendResult:
        """Send through the provider routing chooses (failing over where that is safe)."""
        return self._routed(message, lambda provider: provider.send_email(message))

    def send_templated_email(
        self,
        template_name: str,
        to: str | list[str],
        data: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> SendResult:
        """Render and send through the provider routing chooses for ``to``."""
        return self._routed(
            {"to": to, **{k: v for k, v in options.items() if k in ("from", "from_email")}},
            lambda provider: provider.send_templated_email(template_name, to, data, **options),
        )

    def _bulk_results(self, source: Iterable[object]) -> Iterator[BulkItemResult]:
        """Each message through its provider, in input order, a window at a time."""
        iterator = iter(source)
        offset = 0
        while True:
            window: list[object] = []
            while len(window) < BULK_WINDOW:
                more, raw = self._next_message(iterator)
                if not more:
                    break
                window.append(raw)
            if not window:
                return
            yield from self._route_window(window, offset)
            offset += len(window)

    def _route_window(self, window: list[object], offset: int) -> list[BulkItemResult]:
        results: dict[int, BulkItemResult] = {}
        chosen: dict[int, EmailService] = {}
        for position, message in enumerate(window):
            chosen[position] = self.provider_for(message)
        self._send_groups(window, chosen, list(range(len(window))), results)
        retry: dict[int, EmailService] = {}
        for position, item in results.items():
            if not item.ok and item.error is not None and item.error.not_accepted:
                backup = self.failover_for(chosen[position], window[position])
                if backup is not None:
                    retry[position] = backup
                    chosen[position].record_metric("Failovers", 1, Target=backup.provider_name)
        if retry:
            self._send_groups(window, retry, list(retry), results)
        return [replace(results[p], index=offset + p) for p in range(len(window))]

    @staticmethod
    def _send_groups(
        window: list[object],
        chosen: Mapping[int, EmailService],
        positions: list[int],
        results: dict[int, BulkItemResult],
    ) -> None:
        groups: dict[str, list[int]] = {}
        for position in positions:
            groups.setdefault(chosen[position].provider_name, []).append(position)
        for group in groups.values():
            provider = chosen[group[0]]
            messages: list[Any] = [window[p] for p in group]  # each validated by the provider
            for item in provider.iter_bulk_emails(messages):
                results[group[item.index]] = item

    def pace(self, share: float) -> None:
        """Every provider sends at ``share`` of its own rate."""
        super().pace(share)
        for provider in self.providers.values():
            provider.pace(share)

    # -- the rest: the primary (identities), every provider (health, the provider lists) --

    def _deliver(self, out: Outgoing) -> Delivery:
        return self.primary._deliver(out)

    def _verify_domain(self, domain: str) -> DomainVerification:
        return self.primary._verify_domain(domain)

    def _verified_domains(self) -> list[str]:
        return self.primary._verified_domains()

    def _verified_emails(self) -> list[str]:
        return self.primary._verified_emails()

    def _mirror_suppress(self, address: str, reason: SuppressionReason) -> None:
        for provider in self.providers.values():
            provider._sync_provider("add", provider._mirror_suppress, address, reason)

    def _mirror_unsuppress(self, address: str) -> None:
        for provider in self.providers.values():
            provider._sync_provider("remove", provider._mirror_unsuppress, address)

    def _provider_suppressions(self) -> Iterator[SuppressedEmail]:
        return self.primary._provider_suppressions()

    def _probe(self) -> tuple[HealthState, dict[str, Any]]:
        statuses = [p.health_check() for p in self.providers.values()]
        primary = statuses[0].status
        worst = primary
        if primary is HealthState.HEALTHY and any(s.status is not primary for s in statuses):
            worst = HealthState.DEGRADED
        return worst, {"providers": {s.provider: s.status.value for s in statuses}}

    def _probe_provider(self) -> tuple[HealthState, dict[str, Any]]:
        return self._probe()
