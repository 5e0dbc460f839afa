"""The email service interface: validation, suppression, templates and bulk fan-out.

Providers implement the private hooks (``_deliver``, ``_send_batch``, the suppression and
identity calls); everything a caller sees goes through the public methods here, which
validate first and then run inside :meth:`BaseService._run` (metrics, error mapping).
"""

from __future__ import annotations

import itertools
from abc import abstractmethod
from collections import deque
from collections.abc import Hashable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from milequest.services.base import BaseService
from milequest.services.errors import ServiceError

from .addresses import AddressError, address_key, bare_address, has_line_break, normalize_address
from .errors import EmailError, EmailErrorCode
from .results import (
    BulkItemResult,
    BulkSendResult,
    DomainVerification,
    EmailValidation,
    ErrorInfo,
    RecipientResult,
    RecipientStatus,
    SendResult,
    SuppressedEmail,
    SuppressionReason,
    ValidationReason,
)

if TYPE_CHECKING:
    from milequest.services.metrics import MetricsSink

    from .models import EmailMessage
    from .settings import EmailSettings
    from .templates import RenderedEmail

# Pending messages waiting for their group to fill before partial groups are flushed: keeps
# bulk memory flat whatever the input size.
BULK_WINDOW = 2_000


@dataclass(slots=True)
class Outgoing:
    """A validated message ready for the provider: sender set, suppressed recipients removed."""

    message: EmailMessage
    suppressed: tuple[str, ...] = ()
    rendered: RenderedEmail | None = None
    index: int = 0


@dataclass(slots=True)
class Delivery:
    """What a provider reports for one delivered message."""

    message_id: str
    rejected: dict[str, str] = field(default_factory=dict)


def bulk_group_key(message: EmailMessage, *, by_template: bool) -> Hashable | None:
    """The key of the messages one SES ``SendBulkEmail`` call can carry; None: send alone.

    A call shares sender, reply-to, configuration set, tags, headers and content: a template
    name, or literal content (without ``{{``, which SES would render as a template).
    """
    if message.attachments:
        return None
    if by_template:
        content: tuple[Any, ...] = ("template", message.template)
    else:
        parts = (message.subject or "", message.html or "", message.text or "")
        if any("{{" in p for p in parts):
            return None
        content = ("content", *parts)
    return (
        message.from_email,
        tuple(message.reply_to),
        message.configuration_set,
        tuple(sorted(message.tags.items())),
        tuple(message.headers.items()),
        content,
    )


class EmailService(BaseService):
    """Transactional email, whatever the provider (``ses``, ``smtp``, ``mock``)."""

    service_name: ClassVar[str] = "email"
    error_type: ClassVar[type[ServiceError]] = EmailError
    error_codes: ClassVar[type[EmailErrorCode]] = EmailErrorCode

    bulk_batch_size: ClassVar[int] = 50
    """Messages per provider call in bulk sends (SES ``SendBulkEmail`` takes 50 entries)."""
    renders_locally: bool = True
    """Whether templated messages are rendered here (False: the provider renders them)."""
    supports_domain_verification: ClassVar[bool] = True

    def __init__(self, settings: EmailSettings, *, metrics: MetricsSink | None = None) -> None:
        super().__init__(metrics=metrics)
        self.settings = settings
        try:
            self.default_from = normalize_address(settings.default_from_email)
        except AddressError as exc:
            raise EmailError(
                EmailErrorCode.CONFIGURATION,
                f"DEFAULT_FROM_EMAIL: {exc}",
                provider=self.provider_name,
            ) from None

    # == public API ==========================================================================

    def send_email(self, message: EmailMessage | Mapping[str, Any]) -> SendResult:
        """Send one message (an :class:`EmailMessage` or an equivalent dict)."""
        return self._run("send_email", self._send_email, message)

    def send_templated_email(
        self,
        template_name: str,
        to: str | list[str],
        data: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> SendResult:
        """Send template ``template_name`` rendered with ``data``; ``options`` are message
        fields (``cc``, ``bcc``, ``from``, ``reply_to``, ``headers``, ``tags``, ...)."""
        message = {**options, "to": to, "template": template_name, "template_data": data or {}}
        return self._run("send_templated_email", self._send_email, message)

    def send_bulk_emails(
        self, messages: Iterable[EmailMessage | Mapping[str, Any]]
    ) -> BulkSendResult:
        """Send many messages; one result per input message, in input order.

        Messages with the same content (or template) share provider calls of at most
        :attr:`bulk_batch_size`. Failures are reported per message; an error is raised only
        when every message failed. For very large inputs prefer :meth:`iter_bulk_emails`,
        which streams results instead of holding them all.
        """
        source = self._bulk_source(messages)
        return self._run("send_bulk_emails", self._collect_bulk, source)

    def iter_bulk_emails(
        self, messages: Iterable[EmailMessage | Mapping[str, Any]]
    ) -> Iterator[BulkItemResult]:
        """Like :meth:`send_bulk_emails`, yielding results in input order as they complete.

        Memory stays flat for any number of messages: input is consumed lazily and at most
        a bounded window of messages is pending at any time.
        """
        return self._bulk_results(self._bulk_source(messages))

    def validate_email(self, address: str) -> EmailValidation:
        """Whether ``address`` can be mailed: syntax (email-validator), then suppression."""
        return self._run("validate_email", self._validate_email, address)

    def verify_domain(self, domain: str) -> DomainVerification:
        """Start (or look up) verification of ``domain``; returns the DNS records to publish."""
        return self._run("verify_domain", self._verify_domain_checked, domain)

    def get_verified_domains(self) -> list[str]:
        """Domains the provider may send from."""
        return self._run("get_verified_domains", self._verified_domains)

    def get_verified_emails(self) -> list[str]:
        """Addresses verified as senders (or, in the SES sandbox, as recipients)."""
        return self._run("get_verified_emails", self._verified_emails)

    def get_suppressed_emails(self) -> list[SuppressedEmail]:
        """The suppression list: address, reason and when it was added."""
        return self._run("get_suppressed_emails", self._list_suppressed)

    def suppress_email(
        self, address: str, reason: SuppressionReason | str = SuppressionReason.BOUNCE
    ) -> None:
        """Put ``address`` on the suppression list (``BOUNCE`` or ``COMPLAINT``)."""
        self._run("suppress_email", self._suppress_checked, address, reason)

    def remove_suppressed_email(self, address: str) -> bool:
        """Take ``address`` off the suppression list; False when it was not on it."""
        return self._run("remove_suppressed_email", self._unsuppress_checked, address)

    # == shared implementation ================================================================

    def _send_email(self, raw: object) -> SendResult:
        out = self._prepare(self._coerce(raw))
        delivery = self._deliver(out)
        return self._send_result(out, delivery)

    def _coerce(self, raw: object) -> EmailMessage:
        from .models import coerce_message

        try:
            return coerce_message(raw)
        except EmailError as exc:
            raise self._error(exc.code.name, exc.message) from None

    def _prepare(self, message: EmailMessage) -> Outgoing:
        """Checks and changes that need no network (or only cached lookups)."""
        updates: dict[str, Any] = {}
        if message.from_email is None:
            updates["from_email"] = self.default_from
        rendered = None
        if message.template is not None:
            rendered = self._render(message)
            if rendered is not None and self.renders_locally:
                if has_line_break(rendered.subject):
                    raise self._error("INVALID_MESSAGE", "rendered subject has a line break")
                updates.update(subject=rendered.subject, html=rendered.html, text=rendered.text)
        suppressed = self._suppressed_among(message.recipients())
        if suppressed:
            kept = {
                name: [a for a in getattr(message, name) if address_key(a) not in suppressed]
                for name in ("to", "cc", "bcc")
            }
            if not any(kept.values()):
                raise self._error(
                    "SUPPRESSED",
                    "every recipient is on the suppression list: " + ", ".join(sorted(suppressed)),
                )
            updates.update(kept)
        message = message.model_copy(update=updates) if updates else message
        self._check_before_send(message)
        return Outgoing(message, tuple(sorted(suppressed)), rendered)

    def _render(self, message: EmailMessage) -> RenderedEmail | None:
        from .templates import render_template

        assert message.template is not None
        try:
            return render_template(message.template, message.template_data)
        except EmailError as exc:
            raise self._error(exc.code.name, exc.message) from None

    def _send_result(self, out: Outgoing, delivery: Delivery) -> SendResult:
        recipients: list[RecipientResult] = []
        for address in out.message.recipients():
            reason = delivery.rejected.get(address_key(address))
            status = RecipientStatus.REJECTED if reason else RecipientStatus.SENT
            recipients.append(RecipientResult(bare_address(address), status, reason))
        recipients.extend(
            RecipientResult(a, RecipientStatus.SUPPRESSED, "on the suppression list")
            for a in out.suppressed
        )
        return SendResult(delivery.message_id, self.provider_name, tuple(recipients))

    # -- bulk ------------------------------------------------------------------------------

    def _bulk_source(self, messages: object) -> Iterable[object]:
        if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Iterable):
            raise self._error(
                "INVALID_MESSAGE",
                f"messages must be an iterable of messages, not {type(messages).__name__}",
            )
        from .models import EmailMessage

        if isinstance(messages, EmailMessage):
            raise self._error("INVALID_MESSAGE", "pass a list of messages, not one message")
        return messages

    def _collect_bulk(self, source: Iterable[object]) -> BulkSendResult:
        result = BulkSendResult(self.provider_name, list(self._bulk_results(source)))
        if not result.results:
            raise self._error("INVALID_MESSAGE", "no messages to send")
        self.record_metric("BulkMessages", result.total)
        self.record_metric("BulkFailures", result.failed)
        if result.succeeded == 0:
            first = result.results[0].error
            assert first is not None
            raise self._error(
                first.code.name,
                f"all {result.total} messages failed; first: {first.message}",
                retryable=first.retryable,
            )
        return result

    def _bulk_workers(self) -> int:
        return 4

    def _bulk_results(self, source: Iterable[object]) -> Iterator[BulkItemResult]:
        workers = self._bulk_workers()
        groups: dict[Hashable, list[Outgoing]] = {}
        pending = 0
        ready: dict[int, BulkItemResult] = {}
        inflight: deque[Future[list[BulkItemResult]]] = deque()
        next_index = 0

        def take(items: list[BulkItemResult]) -> None:
            for item in items:
                ready[item.index] = item

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="email-bulk") as pool:

            def submit(batch: list[Outgoing]) -> None:
                inflight.append(pool.submit(self._send_batch_safe, batch))
                while len(inflight) >= workers * 2:
                    take(inflight.popleft().result())

            for index, raw in enumerate(source):
                try:
                    out = self._prepare(self._coerce(raw))
                except Exception as exc:
                    take([self._failed_item(index, (), exc)])
                else:
                    out.index = index
                    key = self._batch_key(out.message)
                    if key is None:
                        submit([out])
                    else:
                        group = groups.setdefault(key, [])
                        group.append(out)
                        pending += 1
                        if len(group) >= self.bulk_batch_size:
                            pending -= len(group)
                            submit(groups.pop(key))
                if pending >= BULK_WINDOW:
                    for group in groups.values():
                        submit(group)
                    groups.clear()
                    pending = 0
                while inflight and inflight[0].done():
                    take(inflight.popleft().result())
                while next_index in ready:
                    yield ready.pop(next_index)
                    next_index += 1
            for group in groups.values():
                submit(group)
            while inflight:
                take(inflight.popleft().result())
        for index in itertools.count(next_index):
            if index not in ready:
                break
            yield ready.pop(index)

    def _send_batch_safe(self, batch: list[Outgoing]) -> list[BulkItemResult]:
        try:
            return self._run("send_bulk_batch", self._send_batch, batch)
        except Exception as exc:
            return [self._failed_item(out.index, out.message.recipients(), exc) for out in batch]

    def _failed_item(
        self, index: int, recipients: Iterable[str], exc: BaseException
    ) -> BulkItemResult:
        error = exc if isinstance(exc, EmailError) else None
        if error is None:
            mapped = self._map_error(exc) if isinstance(exc, Exception) else None
            error = mapped if isinstance(mapped, EmailError) else None
        info = (
            ErrorInfo.of(error)
            if error is not None
            else ErrorInfo(EmailErrorCode.PROVIDER_ERROR, f"{type(exc).__name__}: {exc}")
        )
        return BulkItemResult(index, False, None, tuple(bare_address(a) for a in recipients), info)

    def _ok_item(self, out: Outgoing, delivery: Delivery) -> BulkItemResult:
        accepted = tuple(
            bare_address(a)
            for a in out.message.recipients()
            if address_key(a) not in delivery.rejected
        )
        return BulkItemResult(out.index, True, delivery.message_id, accepted, None, out.suppressed)

    def _batch_key(self, message: EmailMessage) -> Hashable | None:
        """Messages with equal keys may share one provider call; None sends alone."""
        return None

    def _send_batch(self, batch: list[Outgoing]) -> list[BulkItemResult]:
        """Send a group of messages; the default sends them one by one."""
        results = []
        for out in batch:
            try:
                results.append(self._ok_item(out, self._deliver(out)))
            except Exception as exc:
                results.append(self._failed_item(out.index, out.message.recipients(), exc))
        return results

    # -- validation, suppression, identities ------------------------------------------------

    def _validate_email(self, address: object) -> EmailValidation:
        text = address if isinstance(address, str) else repr(address)
        try:
            normalized = normalize_address(address)
        except AddressError as exc:
            return EmailValidation(text, False, ValidationReason.INVALID_SYNTAX, None, str(exc))
        bare = bare_address(normalized)
        if self._is_suppressed(bare):
            return EmailValidation(
                text, False, ValidationReason.SUPPRESSED, bare, "on the suppression list"
            )
        return EmailValidation(text, True, ValidationReason.OK, bare)

    def _checked_address(self, address: object) -> str:
        try:
            return bare_address(normalize_address(address))
        except AddressError as exc:
            raise self._error("INVALID_EMAIL", str(exc)) from None

    def _suppress_checked(self, address: object, reason: object) -> None:
        bare = self._checked_address(address)
        try:
            why = SuppressionReason(str(reason).upper())
        except ValueError:
            raise self._error(
                "INVALID_MESSAGE", f"suppression reason must be BOUNCE or COMPLAINT, not {reason!r}"
            ) from None
        self._suppress(bare, why)

    def _unsuppress_checked(self, address: object) -> bool:
        return self._unsuppress(self._checked_address(address))

    def _verify_domain_checked(self, domain: object) -> DomainVerification:
        from .addresses import normalize_domain

        try:
            name = normalize_domain(domain)
        except AddressError as exc:
            raise self._error("INVALID_DOMAIN", str(exc)) from None
        if not self.supports_domain_verification:
            raise self._error(
                "NOT_SUPPORTED", f"the {self.provider_name} provider cannot verify domains"
            )
        return self._verify_domain(name)

    def _is_suppressed(self, address: str) -> bool:
        return bool(self._suppressed_among([address]))

    def _check_before_send(self, message: EmailMessage) -> None:
        """Provider hook for checks before any send call (sandbox, sender identity)."""

    # == provider hooks =========================================================================

    @abstractmethod
    def _deliver(self, out: Outgoing) -> Delivery:
        """Send one prepared message."""

    @abstractmethod
    def _suppressed_among(self, addresses: list[str]) -> set[str]:
        """The lower-cased bare addresses of ``addresses`` that are suppressed."""

    @abstractmethod
    def _suppress(self, address: str, reason: SuppressionReason) -> None: ...

    @abstractmethod
    def _unsuppress(self, address: str) -> bool: ...

    @abstractmethod
    def _list_suppressed(self) -> list[SuppressedEmail]: ...

    @abstractmethod
    def _verify_domain(self, domain: str) -> DomainVerification: ...

    @abstractmethod
    def _verified_domains(self) -> list[str]: ...

    @abstractmethod
    def _verified_emails(self) -> list[str]: ...
