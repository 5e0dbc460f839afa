"""The email service interface: validation, suppression, templates and bulk fan-out.

Providers implement the private hooks (``_deliver``, ``_send_batch``, the identity calls);
everything a caller sees goes through the public methods here, which validate first and then
run inside :meth:`BaseService._run` (metrics, error mapping). The shared suppression list
(:mod:`.suppression`) is checked here, in one place, before any provider sees a message.

Every provider call goes through :meth:`EmailService._call_provider`: paced (SES's
``MaxSendRate``; a queue consumer's share of any provider's rate), behind the provider's
circuit breaker (:mod:`.breaker`), its attempts tracked so that a failure says whether the
provider can have taken the message (:mod:`.acceptance`). With ``EMAIL_DELIVERY=queue`` a
validated message goes on the email queue (:mod:`.queue`) instead of to the provider.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
from abc import abstractmethod
from collections import defaultdict, deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from milequest.services.base import BaseService
from milequest.services.errors import ServiceError
from milequest.services.jsonsafe import shorten

from . import acceptance
from .addresses import AddressError, address_key, bare_address, has_line_break, normalize_address
from .breaker import BreakerOpen, BreakerState, CircuitBreaker
from .errors import CircuitOpenError, EmailError, EmailErrorCode
from .limits import MAX_MESSAGE_BYTES
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
from .suppression import (
    ALL_CATEGORIES,
    BLOCK_SCOPE,
    SuppressionStore,
    create_suppression_store,
    scope_of,
    valid_category,
)

if TYPE_CHECKING:
    from milequest.services.health import HealthState
    from milequest.services.metrics import MetricsSink

    from .models import EmailMessage
    from .queue import EmailQueue
    from .ratelimit import Pacer, RateLimiter
    from .settings import EmailSettings
    from .templates import RenderedEmail

logger = logging.getLogger("milequest.services.email")
T = TypeVar("T")

# Pending messages waiting for their group to fill before partial groups are flushed: keeps
# bulk memory flat whatever the input size.
BULK_WINDOW = 2_000
# In queue mode any messages share a batch: each goes on the queue as its own message.
_QUEUE_BATCH = "queue"


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


def _answered(items: list[BulkItemResult]) -> bool:
    """Whether a batch reached the provider: not when each of its messages failed as
    unavailable (the default batch sends one by one and reports failures per message)."""
    unavailable = EmailErrorCode.PROVIDER_UNAVAILABLE
    return not items or any(i.error is None or i.error.code is not unavailable for i in items)


def bulk_group_key(message: EmailMessage, *, by_template: bool) -> Hashable | None:
    """The key of the messages one SES ``SendBulkEmail`` call can carry; None: send alone.

    A call shares sender, reply-to, configuration set, tags, headers and content: a template
    name, or literal content (without ``{{``, which SES would render as a template). The
    one-click unsubscribe headers differ per recipient and travel per entry.
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
        tuple(shared_headers(message).items()),
        content,
    )


UNSUBSCRIBE_HEADERS = frozenset({"list-unsubscribe", "list-unsubscribe-post"})


def shared_headers(message: EmailMessage) -> dict[str, str]:
    """The custom headers of ``message`` but the per-recipient unsubscribe headers."""
    return {k: v for k, v in message.headers.items() if k.lower() not in UNSUBSCRIBE_HEADERS}


def recipient_headers(message: EmailMessage) -> dict[str, str]:
    """The per-recipient unsubscribe headers of ``message`` (empty for transactional mail)."""
    return {k: v for k, v in message.headers.items() if k.lower() in UNSUBSCRIBE_HEADERS}


class EmailService(BaseService):
    """Transactional email, whatever the provider (``ses``, ``smtp``, ``resend``, ...)."""

    service_name: ClassVar[str] = "email"
    error_type: ClassVar[type[ServiceError]] = EmailError
    error_codes: ClassVar[type[EmailErrorCode]] = EmailErrorCode

    bulk_batch_size: ClassVar[int] = 50
    """Messages per provider call in bulk sends (SES ``SendBulkEmail`` takes 50 entries)."""
    max_message_bytes: ClassVar[int] = MAX_MESSAGE_BYTES
    """The provider's limit on one encoded message, attachments included."""
    recipient_status: ClassVar[RecipientStatus] = RecipientStatus.SENT
    """What a send reports per recipient: ``ACCEPTED`` where the provider says nothing more."""
    renders_locally: bool = True
    """Whether templated messages are rendered here (False: the provider renders them)."""
    supports_domain_verification: ClassVar[bool] = True
    paces_direct_sends: ClassVar[bool] = False
    """Whether direct sends keep to the provider's rate in each process (SES's
    ``MaxSendRate``); queue consumers always keep to their share of it."""

    def __init__(
        self,
        settings: EmailSettings,
        *,
        metrics: MetricsSink | None = None,
        suppression: SuppressionStore | None = None,
    ) -> None:
        super().__init__(metrics=metrics)
        self.settings = settings
        try:
            self.default_from = normalize_address(settings.default_from_email)
        except AddressError as exc:
            raise self._config_error(f"DEFAULT_FROM_EMAIL: {exc}") from None
        from .unsubscribe import parse_bulk_templates

        try:
            self.bulk_templates = parse_bulk_templates(settings.email_bulk_templates)
        except ValueError as exc:
            raise self._config_error(f"EMAIL_BULK_TEMPLATES: {exc}") from None
        self.suppression: SuppressionStore = (
            suppression if suppression is not None else create_suppression_store(settings)
        )
        self.breaker = CircuitBreaker(
            settings.email_breaker_failures,
            settings.email_breaker_reset,
            on_change=self._breaker_changed,
        )
        self.rate_share: float | None = None
        """This process's share of the provider's rate (None: a direct sender)."""
        self._limiter: RateLimiter | Pacer | None = None
        self._limiter_lock = threading.Lock()
        self.queue: EmailQueue | None = None
        """The email queue sends go to (``EMAIL_DELIVERY=queue``), else None."""
        if settings.email_delivery == "queue":
            from .queue import EmailQueue

            try:
                self.queue = EmailQueue(settings)
            except ValueError as exc:
                raise self._config_error(str(exc)) from None

    def _config_error(self, message: str) -> EmailError:
        return EmailError(EmailErrorCode.CONFIGURATION, message, provider=self.provider_name)

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
        return self._run(
            "send_templated_email", self._send_templated, template_name, to, data, options
        )

    def send_bulk_emails(
        self, messages: Iterable[EmailMessage | Mapping[str, Any]]
    ) -> BulkSendResult:
        """Send many messages; one result per input message, in input order.

        Messages the provider can carry together share provider calls of at most
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
        return self._guarded(self._bulk_results(self._bulk_source(messages)))

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
        """The shared suppression list: address, reason, category and when it was added."""
        return self._run("get_suppressed_emails", self._list_suppressed)

    def suppress_email(
        self,
        address: str,
        reason: SuppressionReason | str = SuppressionReason.BOUNCE,
        category: str | None = None,
        *,
        source: str | None = None,
        last_update: datetime | None = None,
    ) -> None:
        """Put ``address`` on the shared list: ``BOUNCE`` or ``COMPLAINT`` stop all mail,
        ``UNSUBSCRIBE`` stops bulk mail of ``category`` (default: every category).

        ``source`` names where the entry came from; ``last_update`` (default: now) keeps
        the date of an imported entry. Bounces and complaints also go to the provider's
        own list where it has one (SES).
        """
        self._run(
            "suppress_email",
            self._suppress_checked,
            address,
            reason,
            category,
            source,
            last_update,
        )

    def remove_suppressed_email(self, address: str, category: str | None = None) -> bool:
        """Take ``address``'s bounce or complaint off the list (or, with ``category``, its
        unsubscribe from that category, ``"*"`` for all); False when there was none."""
        return self._run("remove_suppressed_email", self._unsuppress_checked, address, category)

    def import_provider_suppressions(self) -> int:
        """Copy the provider's own suppression list into the shared one; returns the count.

        Raises ``NOT_SUPPORTED`` for providers without such a list (mock, smtp, resend).
        """
        return self._run("import_provider_suppressions", self._import_provider_suppressions)

    # == shared implementation ================================================================

    def pace(self, share: float) -> None:
        """Send at ``share`` (0 to 1] of the provider's rate: a queue consumer's part of the
        fleet's, when ``1 / share`` consumers run at once."""
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        with self._limiter_lock:
            self.rate_share = share
            self._limiter = None

    def _send_email(self, raw: object) -> SendResult:
        out = self._prepare(self._coerce(raw))
        if self.queue is not None:
            return self.queue.enqueue(out, self.provider_name)
        delivery = self._call_provider(self._rate_units([out]), self._deliver, out)
        return self._send_result(out, delivery)

    # -- every provider call: pace, circuit breaker, acceptance ----------------------------

    def _call_provider(
        self,
        units: float,
        call: Callable[..., T],
        *args: Any,
        answered: Callable[[T], bool] | None = None,
    ) -> T:
        """``call(*args)`` at the provider: paced, behind the circuit breaker, its failure
        mapped to this service's error with ``not_accepted`` set when that is certain.

        ``answered(result)`` tells whether a call that returned reached the provider (a
        batch whose every message failed as unavailable did not); default: it did.
        """
        try:
            probe = self.breaker.before_call()
        except BreakerOpen as exc:
            raise CircuitOpenError(self.provider_name, exc.retry_in) from None
        outcome: bool | None = None
        try:
            self._throttle(units)
            with acceptance.tracking() as attempts:
                try:
                    result = call(*args)
                except Exception as exc:
                    error = exc if isinstance(exc, ServiceError) else self._map_error(exc)
                    outcome = error.code.value != EmailErrorCode.PROVIDER_UNAVAILABLE
                    if isinstance(error, EmailError) and not error.not_accepted:
                        error.not_accepted = (
                            not attempts.maybe_accepted
                            and acceptance.refused_before_acceptance(exc)
                        )
                    if error is exc:
                        raise
                    raise error from exc
            outcome = True if answered is None else answered(result)
            return result
        finally:
            self.breaker.record(probe, outcome)

    def _breaker_changed(self, state: BreakerState) -> None:
        self.record_metric("CircuitOpen", 0 if state is BreakerState.CLOSED else 1)

    def _throttle(self, units: float) -> None:
        limiter = self._rate_limiter()
        if limiter is not None:
            waited = limiter.acquire(units)
            if waited:
                self.record_metric("RateLimitWait", waited * 1000, "Milliseconds")

    def _rate_limiter(self) -> RateLimiter | Pacer | None:
        """The limiter of this process's sends, made again when the rate changes."""
        from .ratelimit import Pacer, RateLimiter, fleet_pace

        share = self.rate_share
        if share is None and not self.paces_direct_sends:
            return None
        rate = self._send_rate()
        if rate is None:
            return None
        kind: type[RateLimiter | Pacer] = RateLimiter
        if share is not None:
            kind, rate = Pacer, fleet_pace(rate, share)
        with self._limiter_lock:
            limiter = self._limiter
            if limiter is None or type(limiter) is not kind or limiter.rate != rate:
                limiter = self._limiter = kind(rate)
            return limiter

    def _send_rate(self) -> float | None:
        """Provider hook: the provider's send rate in units per second (None: no limit)."""
        return None

    def _rate_units(self, outs: list[Outgoing]) -> float:
        """Provider hook: what one provider call carrying ``outs`` counts against the rate
        (default: one request)."""
        return 1.0

    def _send_templated(
        self, template_name: object, to: object, data: object, options: dict[str, Any]
    ) -> SendResult:
        message = {**options, "to": to, "template": template_name, "template_data": data or {}}
        return self._send_email(message)

    def _coerce(self, raw: object) -> EmailMessage:
        from .models import coerce_message

        try:
            return coerce_message(raw)
        except EmailError as exc:
            raise self._error(exc.code.name, exc.message) from None

    def _prepare(self, message: EmailMessage, *, check_suppression: bool = True) -> Outgoing:
        """Checks and changes that need no provider call; bulk sends check suppression per
        batch instead (``check_suppression=False``)."""
        updates: dict[str, Any] = {}
        if message.from_email is None:
            updates["from_email"] = self.default_from
        rendered = None
        if message.template is not None:
            rendered = self._render(message)
            # Checked whoever renders: a provider rendering remotely gets the same data.
            if rendered is not None and has_line_break(rendered.subject):
                raise self._error(
                    "INVALID_MESSAGE", "the rendered subject has a line break (header injection)"
                )
            if rendered is not None and self.renders_locally:
                updates.update(subject=rendered.subject, html=rendered.html, text=rendered.text)
        category = message.category
        if category is None and message.template is not None:
            category = self.bulk_templates.get(message.template)
        if category is not None:
            if len(message.recipients()) != 1:
                raise self._error(
                    "INVALID_MESSAGE",
                    f"bulk mail (category {category}) goes to one recipient per message, so "
                    "that each gets their own unsubscribe link; use send_bulk_emails",
                )
            updates["category"] = category
            updates["headers"] = {
                **shared_headers(message),
                **self._unsubscribe_headers(message.recipients()[0], category),
            }
        message = message.model_copy(update=updates) if updates else message
        size = message.estimated_size()
        if size > self.max_message_bytes:
            raise self._error(
                "MESSAGE_TOO_LARGE",
                f"about {size} bytes encoded; {self.provider_name} takes at most "
                f"{self.max_message_bytes}",
            )
        out = Outgoing(message, rendered=rendered)
        if not check_suppression:
            return out
        [checked] = self._without_suppressed([out])
        if isinstance(checked, EmailError):
            raise checked
        self._check_before_send(checked.message)
        return checked

    def _render(self, message: EmailMessage) -> RenderedEmail | None:
        from .templates import render_template

        assert message.template is not None
        try:
            return render_template(message.template, message.template_data)
        except EmailError as exc:
            raise self._error(exc.code.name, exc.message) from None

    def _unsubscribe_headers(self, recipient: str, category: str) -> dict[str, str]:
        from .unsubscribe import unsubscribe_headers

        url = self.settings.email_unsubscribe_url
        secret = self._unsubscribe_secret
        if not url or secret is None:
            raise self._error(
                "CONFIGURATION",
                f"bulk mail (category {category}) needs a one-click unsubscribe link: set "
                "EMAIL_UNSUBSCRIBE_URL and EMAIL_UNSUBSCRIBE_SECRET (or _SECRET_ARN)",
            )
        return unsubscribe_headers(
            url, secret, bare_address(recipient), category, self.settings.email_unsubscribe_mailto
        )

    @functools.cached_property
    def _unsubscribe_secret(self) -> bytes | None:
        # Resolved on first bulk send: a secret ARN costs a call that most processes skip.
        from .credentials import unsubscribe_secret

        return unsubscribe_secret(self.settings)

    def _without_suppressed(self, outs: list[Outgoing]) -> list[Outgoing | EmailError]:
        """Each message without its suppressed recipients (one store lookup per category),
        or ``SUPPRESSED`` when none is left."""
        by_category: dict[str | None, set[str]] = defaultdict(set)
        for out in outs:
            by_category[out.message.category].update(out.message.recipients())
        suppressed = {
            category: self.suppression.suppressed(addresses, category)
            for category, addresses in by_category.items()
        }
        checked: list[Outgoing | EmailError] = []
        for out in outs:
            message = out.message
            gone = suppressed[message.category]
            hit = {address_key(a) for a in message.recipients()} & gone
            if not hit:
                checked.append(out)
                continue
            kept = {
                name: [a for a in getattr(message, name) if address_key(a) not in gone]
                for name in ("to", "cc", "bcc")
            }
            if not any(kept.values()):
                checked.append(
                    EmailError(
                        EmailErrorCode.SUPPRESSED,
                        "every recipient is on the suppression list: " + ", ".join(sorted(hit)),
                        provider=self.provider_name,
                    )
                )
                continue
            kept_message = message.model_copy(update=kept)
            checked.append(Outgoing(kept_message, tuple(sorted(hit)), out.rendered, out.index))
        return checked

    def _send_result(self, out: Outgoing, delivery: Delivery) -> SendResult:
        recipients: list[RecipientResult] = []
        for address in out.message.recipients():
            reason = delivery.rejected.get(address_key(address))
            status = RecipientStatus.REJECTED if reason else self.recipient_status
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

    def _guarded(self, results: Iterator[BulkItemResult]) -> Iterator[BulkItemResult]:
        """``results``, with any failure while iterating raised as this service's error."""
        try:
            yield from results
        except ServiceError:
            raise
        except Exception as exc:
            raise self._map_error(exc) from exc

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

    def _next_message(self, iterator: Iterator[object]) -> tuple[bool, object]:
        try:
            return True, next(iterator)
        except StopIteration:
            return False, None
        except Exception as exc:
            raise self._error(
                "INVALID_MESSAGE", f"iterating the messages failed: {type(exc).__name__}: {exc}"
            ) from exc

    def _bulk_results(self, source: Iterable[object]) -> Iterator[BulkItemResult]:
        workers = self._bulk_workers()
        groups: dict[Hashable, list[Outgoing]] = {}
        pending = 0
        ready: dict[int, BulkItemResult] = {}
        inflight: deque[Future[list[BulkItemResult]]] = deque()
        next_index = 0
        iterator = iter(source)

        def take(items: list[BulkItemResult]) -> None:
            for item in items:
                if item.provider is None:
                    item = replace(item, provider=self.provider_name)
                ready[item.index] = item

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="email-bulk") as pool:

            def submit(batch: list[Outgoing]) -> None:
                inflight.append(pool.submit(self._send_batch_safe, batch))
                while len(inflight) >= workers * 2:
                    take(inflight.popleft().result())

            for index in itertools.count():
                more, raw = self._next_message(iterator)
                if not more:
                    break
                try:
                    out = self._prepare(self._coerce(raw), check_suppression=False)
                except Exception as exc:
                    take([self._failed_item(index, (), exc)])
                else:
                    out.index = index
                    key = _QUEUE_BATCH if self.queue else self._batch_key(out.message)
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
            return self._run("send_bulk_batch", self._send_checked_batch, batch)
        except Exception as exc:
            return [self._failed_item(out.index, out.message.recipients(), exc) for out in batch]

    def _send_checked_batch(self, batch: list[Outgoing]) -> list[BulkItemResult]:
        """The suppression check and provider rules for a whole batch, then the send."""
        results: list[BulkItemResult] = []
        ready: list[Outgoing] = []
        for out, checked in zip(batch, self._without_suppressed(batch), strict=True):
            try:
                if isinstance(checked, EmailError):
                    raise checked
                self._check_before_send(checked.message)
            except EmailError as exc:
                item = self._failed_item(out.index, out.message.recipients(), exc)
                if exc.code is EmailErrorCode.SUPPRESSED:
                    item = BulkItemResult(
                        item.index, False, None, item.recipients, item.error, item.recipients
                    )
                results.append(item)
            else:
                ready.append(checked)
        if ready and self.queue is not None:
            results.extend(
                self.queue.enqueue_batch(
                    ready,
                    self.provider_name,
                    lambda out, exc: self._failed_item(out.index, out.message.recipients(), exc),
                )
            )
        elif ready:
            try:
                sent: list[BulkItemResult] = self._call_provider(
                    self._rate_units(ready), self._send_batch, ready, answered=_answered
                )
                results.extend(sent)
            except Exception as exc:  # the call failed as a whole: so did each message in it
                results.extend(
                    self._failed_item(o.index, o.message.recipients(), exc) for o in ready
                )
        return results

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

    # -- validation and suppression ------------------------------------------------------------

    def _validate_email(self, address: object) -> EmailValidation:
        text = address if isinstance(address, str) else shorten(address)
        try:
            normalized = normalize_address(address)
        except AddressError as exc:
            return EmailValidation(text, False, ValidationReason.INVALID_SYNTAX, None, str(exc))
        bare = bare_address(normalized)
        if self.suppression.suppressed([bare]):
            return EmailValidation(
                text, False, ValidationReason.SUPPRESSED, bare, "on the suppression list"
            )
        return EmailValidation(text, True, ValidationReason.OK, bare)

    def _checked_address(self, address: object) -> str:
        try:
            return bare_address(normalize_address(address))
        except AddressError as exc:
            raise self._error("INVALID_EMAIL", str(exc)) from None

    def _checked_category(self, category: object) -> str:
        if category == ALL_CATEGORIES or valid_category(category):
            return str(category)
        raise self._error(
            "INVALID_MESSAGE",
            "category must be '*' or letters, digits and _.- (at most 64), not "
            + shorten(category),
        )

    def _suppress_checked(
        self,
        address: object,
        reason: object,
        category: object,
        source: object,
        last_update: object = None,
    ) -> None:
        bare = self._checked_address(address)
        try:
            if not isinstance(reason, str):
                raise ValueError
            why = SuppressionReason(reason.upper())
        except ValueError:
            raise self._error(
                "INVALID_MESSAGE",
                "suppression reason must be BOUNCE, COMPLAINT or UNSUBSCRIBE, not "
                + shorten(reason),
            ) from None
        if why is SuppressionReason.UNSUBSCRIBE:
            category = self._checked_category(ALL_CATEGORIES if category is None else category)
        elif category is not None:
            raise self._error("INVALID_MESSAGE", "a category goes with UNSUBSCRIBE only")
        if source is not None and not valid_category(source):
            raise self._error("INVALID_MESSAGE", "source must be a short name: " + shorten(source))
        if last_update is None:
            last_update = datetime.now(UTC)
        elif not isinstance(last_update, datetime) or last_update.tzinfo is None:
            raise self._error("INVALID_MESSAGE", "last_update must be a datetime with a time zone")
        entry = SuppressedEmail(
            address_key(bare),
            why,
            last_update,
            category if isinstance(category, str) else None,
            source if isinstance(source, str) else None,
        )
        self.suppression.add(entry)
        if why is not SuppressionReason.UNSUBSCRIBE:
            self._sync_provider("add", self._mirror_suppress, bare, why)

    def _unsuppress_checked(self, address: object, category: object) -> bool:
        bare = self._checked_address(address)
        if category is None:
            removed = self.suppression.remove(bare, BLOCK_SCOPE)
            self._sync_provider("remove", self._mirror_unsuppress, bare)
            return removed
        name = self._checked_category(category)
        return self.suppression.remove(bare, scope_of(SuppressionReason.UNSUBSCRIBE, name))

    def _sync_provider(self, what: str, call: Any, *args: Any) -> None:
        # The shared store is what sends check; a provider list that misses one change is
        # logged and counted rather than failing the write that did happen.
        try:
            call(*args)
        except Exception:
            logger.warning("could not %s %s on the %s list", what, args[0], self.provider_name)
            self.record_metric("SuppressionSyncFailures", 1)

    def _list_suppressed(self) -> list[SuppressedEmail]:
        return sorted(self.suppression.entries(), key=lambda e: (e.address, e.category or ""))

    def _import_provider_suppressions(self) -> int:
        count = 0
        for entry in self._provider_suppressions():
            self.suppression.add(entry)
            count += 1
        self.record_metric("SuppressionsImported", count)
        return count

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

    def _map_error(self, exc: Exception) -> ServiceError:
        from .deadline import DeadlineExceeded

        if not isinstance(exc, DeadlineExceeded):
            return super()._map_error(exc)
        note = (
            f"no answer within the {exc.seconds:g} s call deadline (EMAIL_CALL_TIMEOUT) "
            f"after {exc.attempts} attempt(s)"
        )
        if isinstance(exc.last, Exception):
            last = self._map_error(exc.last)
            return self._error(
                last.code.name, f"{last.message}; {note}", retryable=last.retryable, cause=exc
            )
        return self._error("PROVIDER_UNAVAILABLE", note, retryable=True, cause=exc)

    # -- health ----------------------------------------------------------------------------

    def _probe(self) -> tuple[HealthState, dict[str, Any]]:
        """The provider's probe, then: is the sending domain (or address) verified?"""
        from milequest.services.health import HealthState

        state, details = self._probe_provider()
        sender = address_key(self.default_from)
        domain = sender.rpartition("@")[2]
        verified = domain in self._verified_domains() or sender in self._verified_emails()
        details["sender_verified"] = verified
        if not verified:
            details["error"] = f"the sending domain {domain} is not verified"
            return HealthState.UNHEALTHY, details
        return state, details

    # == provider hooks =========================================================================

    def _check_before_send(self, message: EmailMessage) -> None:
        """Provider hook for checks before any send call (sandbox, sender identity)."""

    def _mirror_suppress(self, address: str, reason: SuppressionReason) -> None:
        """Provider hook: also put a bounce or complaint on the provider's own list."""

    def _mirror_unsuppress(self, address: str) -> None:
        """Provider hook: also take the address off the provider's own list."""

    def _provider_suppressions(self) -> Iterator[SuppressedEmail]:
        """Provider hook: the provider's own suppression list, as shared-list entries."""
        raise self._error(
            "NOT_SUPPORTED", f"the {self.provider_name} provider keeps no suppression list"
        )

    @abstractmethod
    def _deliver(self, out: Outgoing) -> Delivery:
        """Send one prepared message."""

    @abstractmethod
    def _verify_domain(self, domain: str) -> DomainVerification: ...

    @abstractmethod
    def _verified_domains(self) -> list[str]: ...

    @abstractmethod
    def _verified_emails(self) -> list[str]: ...

    @abstractmethod
    def _probe_provider(self) -> tuple[HealthState, dict[str, Any]]:
        """A cheap call proving the provider works; raise or return a state and details."""
