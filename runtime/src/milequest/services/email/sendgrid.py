"""SendGrid provider, through Twilio SendGrid's official SDK (PyPI ``sendgrid``, v3 Web API).

Why the SDK: ``SendGridAPIClient`` is per instance (its own key and host), takes a timeout
per request, and raises typed errors that keep the status, body and headers, so the rate
limit headers can drive retries. It sends over urllib, one connection per call: bulk mail
goes 1,000 recipients per call, so that cost is spread thin.

- ``POST /v3/mail/send`` answers 202 with no per-recipient result: recipients are reported
  ``accepted``, and what becomes of them arrives through the Event Webhook.
- Bulk sends share one request between messages of the same content (each message is one
  *personalization*, with its own recipients, subject, unsubscribe headers and tags as
  ``custom_args``): at most 1,000 personalizations and 1,000 recipients per request, no
  address twice in one request (SendGrid's rules).
- 429 is retried after ``X-RateLimit-Reset``. A send answered 5xx is not retried (SendGrid
  takes no idempotency key, so it might have been accepted): the error is retryable.
- Messages over 30 MB are refused before the call (SendGrid's limit; SES's is 40 MB).
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Hashable, Iterator
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from .credentials import sendgrid_keys
from .http_api import ApiError, ApiResponse, backoff, call, lower_headers
from .results import (
    BulkItemResult,
    DnsRecord,
    DomainVerification,
    RecipientStatus,
    SuppressedEmail,
    SuppressionReason,
    VerificationStatus,
)
from .service import Delivery, EmailService, Outgoing, recipient_headers, shared_headers
from .suppression import ALL_CATEGORIES

if TYPE_CHECKING:
    from milequest.services.errors import ServiceError
    from milequest.services.health import HealthState
    from milequest.services.metrics import MetricsSink

    from .models import EmailMessage
    from .settings import EmailSettings
    from .suppression import SuppressionStore

MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS_PER_REQUEST = 1000
MAX_MESSAGE_BYTES = 30 * 1024 * 1024
_PAGE = 500
_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")

# The suppression lists SendGrid keeps, and what each is on ours.
_LISTS = (
    ("/suppression/bounces", SuppressionReason.BOUNCE),
    ("/suppression/blocks", SuppressionReason.BOUNCE),
    ("/suppression/invalid_emails", SuppressionReason.BOUNCE),
    ("/suppression/spam_reports", SuppressionReason.COMPLAINT),
    ("/suppression/unsubscribes", SuppressionReason.UNSUBSCRIBE),
)


def _person(address: str) -> dict[str, str]:
    name, email = parseaddr(address)
    return {"email": email, **({"name": name} if name else {})}


class SendGridEmailService(EmailService):
    """Sends through SendGrid's v3 API: mail/send, domain authentication, suppressions."""

    provider_name: ClassVar[str] = "sendgrid"
    bulk_batch_size: ClassVar[int] = MAX_PERSONALIZATIONS
    max_message_bytes: ClassVar[int] = MAX_MESSAGE_BYTES
    recipient_status: ClassVar[RecipientStatus] = RecipientStatus.ACCEPTED

    def __init__(
        self,
        settings: EmailSettings,
        *,
        metrics: MetricsSink | None = None,
        suppression: SuppressionStore | None = None,
    ) -> None:
        super().__init__(settings, metrics=metrics, suppression=suppression)
        key = sendgrid_keys(settings).api_key
        if not key:
            raise self._config_error("SENDGRID_API_KEY (or SENDGRID_SECRET_ARN) is required")
        url = settings.sendgrid_api_url.rstrip("/")
        if urlsplit(url).scheme not in ("https", "http") or not urlsplit(url).netloc:
            raise self._config_error(f"SENDGRID_API_URL is not an HTTP(S) URL: {url!r}")
        from sendgrid import SendGridAPIClient  # type: ignore[import-untyped]

        self.base_url = url
        self.sdk = SendGridAPIClient(api_key=key, host=url)

    # -- the API ---------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, Any] | None = None,
        retry_server_errors: bool = True,
    ) -> ApiResponse:
        """One API call through the SDK (retried within the deadline)."""
        import http.client

        from python_http_client.exceptions import HTTPError  # type: ignore[import-untyped]

        endpoint: Any = self.sdk.client
        for segment in path.strip("/").split("/"):
            endpoint = endpoint._(segment)
        send = getattr(endpoint, method.lower())

        def attempt(timeout: float) -> ApiResponse:
            try:
                response = send(request_body=body, query_params=query, timeout=timeout)
            except HTTPError as exc:
                return ApiResponse(exc.status_code, lower_headers(exc.headers), exc.body or b"")
            return ApiResponse(
                response.status_code, lower_headers(response.headers), response.body or b""
            )

        def wait_before_retry(response: ApiResponse, attempt_number: int) -> float | None:
            if response.status == 429:
                reset = response.header("x-ratelimit-reset")
                try:
                    return max(0.0, float(reset or "") - time.time())
                except ValueError:
                    return backoff(attempt_number)
            if response.status >= 500 and retry_server_errors:
                return backoff(attempt_number)
            return None

        return call(
            attempt,
            seconds=self.settings.email_call_timeout,
            max_attempts=self.settings.email_api_max_attempts,
            wait_before_retry=wait_before_retry,
            error=_api_error,
            transport_errors=(OSError, http.client.HTTPException),
            retry_transport=retry_server_errors,
        )

    def _json(self, method: str, path: str, body: Any = None, **options: Any) -> Any:
        return self._request(method, path, body, **options).json()

    # -- sending ---------------------------------------------------------------------------

    def _personalization(self, message: EmailMessage, subject: str | None) -> dict[str, Any]:
        item: dict[str, Any] = {"to": [_person(a) for a in message.to]}
        for name in ("cc", "bcc"):
            if getattr(message, name):
                item[name] = [_person(a) for a in getattr(message, name)]
        if message.subject != subject:
            item["subject"] = message.subject or ""
        if recipient_headers(message):
            item["headers"] = recipient_headers(message)
        if message.tags:
            item["custom_args"] = dict(message.tags)
        return item

    def _mail(self, batch: list[Outgoing]) -> dict[str, Any]:
        """The ``mail/send`` body for messages sharing sender, content and headers."""
        first = batch[0].message
        assert first.from_email is not None
        body: dict[str, Any] = {
            "personalizations": [self._personalization(o.message, first.subject) for o in batch],
            "from": _person(first.from_email),
            "subject": first.subject or "",
            "content": [
                {"type": kind, "value": value}
                for kind, value in (("text/plain", first.text), ("text/html", first.html))
                if value  # SendGrid wants text/plain first
            ],
        }
        if first.reply_to:
            body["reply_to_list"] = [_person(a) for a in first.reply_to]
        if shared_headers(first):
            body["headers"] = shared_headers(first)
        if first.category:
            body["categories"] = [first.category]
            # Our own List-Unsubscribe goes out; SendGrid must not add its link as well.
            body["tracking_settings"] = {"subscription_tracking": {"enable": False}}
        if first.attachments:
            body["attachments"] = [
                {
                    "content": base64.b64encode(a.content).decode("ascii"),
                    "filename": a.filename,
                    "type": a.mime_type,
                    "disposition": "inline" if a.content_id else "attachment",
                    **({"content_id": a.content_id.strip("<>")} if a.content_id else {}),
                }
                for a in first.attachments
            ]
        return body

    def _post_mail(self, batch: list[Outgoing]) -> str:
        response = self._request("POST", "/mail/send", self._mail(batch), retry_server_errors=False)
        return response.header("x-message-id") or ""

    def _deliver(self, out: Outgoing) -> Delivery:
        return Delivery(self._post_mail([out]))

    def _send_rate(self) -> float | None:
        return self.settings.sendgrid_send_rate

    def _rate_units(self, outs: list[Outgoing]) -> float:
        return float(sum(1 for _ in _requests(outs)))  # mail/send requests

    def _batch_key(self, message: EmailMessage) -> Hashable | None:
        # Recipients, subject, unsubscribe headers and tags go per personalization.
        if message.attachments:
            return None
        return (
            message.from_email,
            tuple(message.reply_to),
            message.html,
            message.text,
            tuple(shared_headers(message).items()),
            message.category,
        )

    def _send_batch(self, batch: list[Outgoing]) -> list[BulkItemResult]:
        results: list[BulkItemResult] = []
        for request in _requests(batch):
            try:
                message_id = self._post_mail(request)
            except Exception as exc:
                results.extend(
                    self._failed_item(o.index, o.message.recipients(), exc) for o in request
                )
            else:
                results.extend(self._ok_item(o, Delivery(message_id)) for o in request)
        return results

    # -- domains, senders, suppressions ----------------------------------------------------

    def _verify_domain(self, domain: str) -> DomainVerification:
        existing = self._json("GET", "/whitelabel/domains", query={"domain": domain})
        found = next(
            (d for d in existing or [] if isinstance(d, dict) and d.get("domain") == domain),
            None,
        )
        if found is None:
            found = self._json(
                "POST",
                "/whitelabel/domains",
                {"domain": domain, "automatic_security": True},
                retry_server_errors=False,
            )
        if not isinstance(found, dict) or "id" not in found:
            raise self._error("PROVIDER_ERROR", "unexpected SendGrid answer: no domain id")
        if not found.get("valid"):
            self._json("POST", f"/whitelabel/domains/{int(found['id'])}/validate")
        records = []
        dns = found.get("dns") or {}
        for name, purpose in (("mail_cname", "return_path"), ("dkim1", "dkim"), ("dkim2", "dkim")):
            record = dns.get(name) if isinstance(dns, dict) else None
            if isinstance(record, dict):
                records.append(
                    DnsRecord(
                        str(record.get("type", "cname")).upper(),
                        str(record.get("host", "")),
                        str(record.get("data", "")),
                        purpose,
                    )
                )
        status = VerificationStatus.VERIFIED if found.get("valid") else VerificationStatus.PENDING
        return DomainVerification(domain, status, tuple(records))

    def _verified_domains(self) -> list[str]:
        domains = self._json("GET", "/whitelabel/domains") or []
        return sorted(
            str(d["domain"]).lower()
            for d in domains
            if isinstance(d, dict) and d.get("valid") and d.get("domain")
        )

    def _verified_emails(self) -> list[str]:
        answer = self._json("GET", "/verified_senders") or {}
        senders = answer.get("results", []) if isinstance(answer, dict) else []
        return sorted(
            str(s["from_email"]).lower()
            for s in senders
            if isinstance(s, dict) and s.get("verified") and s.get("from_email")
        )

    def _provider_suppressions(self) -> Iterator[SuppressedEmail]:
        for path, reason in _LISTS:
            offset = 0
            while True:
                page = self._json("GET", path, query={"limit": _PAGE, "offset": offset}) or []
                category = ALL_CATEGORIES if reason is SuppressionReason.UNSUBSCRIBE else None
                for item in page:
                    if isinstance(item, dict) and item.get("email"):
                        when = _when(item.get("created"))
                        address = str(item["email"]).lower()
                        yield SuppressedEmail(address, reason, when, category, "sendgrid")
                if len(page) < _PAGE:
                    break
                offset += _PAGE
        # Unsubscribes from suppression groups: one category per group.
        for item in self._json("GET", "/asm/suppressions") or []:
            if isinstance(item, dict) and item.get("email"):
                yield SuppressedEmail(
                    str(item["email"]).lower(),
                    SuppressionReason.UNSUBSCRIBE,
                    _when(item.get("created_at")),
                    group_category(item.get("group_id")),
                    "sendgrid",
                )

    # -- errors and health -----------------------------------------------------------------

    def _translate_error(self, exc: Exception) -> ServiceError | None:
        import http.client

        if isinstance(exc, ApiError):
            code, retryable = _by_status(exc.status, exc.message)
            return self._error(code, str(exc), retryable=retryable, cause=exc)
        if isinstance(exc, http.client.HTTPException):
            return self._error(
                "PROVIDER_UNAVAILABLE", f"{type(exc).__name__}: {exc}", retryable=True, cause=exc
            )
        return None

    def _probe_provider(self) -> tuple[HealthState, dict[str, Any]]:
        from milequest.services.health import HealthState

        # The key is proven by the domain listing the sender check makes next.
        return HealthState.HEALTHY, {"api": self.base_url}


def group_category(group_id: Any) -> str:
    """Our category for SendGrid suppression group ``group_id`` (events carry only the id)."""
    return f"sendgrid-group-{_SLUG.sub('-', str(group_id))[:48]}"


def _requests(batch: list[Outgoing]) -> Iterator[list[Outgoing]]:
    """``batch`` cut into mail/send requests SendGrid accepts: at most 1,000 personalizations
    and 1,000 recipients, and no address twice in one request."""
    current: list[Outgoing] = []
    seen: set[str] = set()
    count = 0
    for out in batch:
        recipients = out.message.recipients()
        addresses = {parseaddr(a)[1].lower() for a in recipients}
        if current and (
            addresses & seen
            or len(current) >= MAX_PERSONALIZATIONS
            or count + len(recipients) > MAX_RECIPIENTS_PER_REQUEST
        ):
            yield current
            current, seen, count = [], set(), 0
        current.append(out)
        seen |= addresses
        count += len(recipients)
    if current:
        yield current


def _api_error(response: ApiResponse) -> ApiError:
    data = response.json()
    messages = []
    if isinstance(data, dict):
        for item in data.get("errors") or []:
            if isinstance(item, dict) and item.get("message"):
                messages.append(str(item["message"]))
    text = "; ".join(messages) or response.body[:200].decode(errors="replace")
    return ApiError(response, f"HTTP {response.status}", text)


def _by_status(status: int, message: str) -> tuple[str, bool]:
    lowered = message.lower()
    if status == 429:
        return "RATE_LIMITED", True
    if status == 401:
        return "CONFIGURATION", False
    if status == 403:
        if "sender identity" in lowered or "verified" in lowered:
            return "NOT_VERIFIED", False
        return "CONFIGURATION", False
    if status == 413:
        return "MESSAGE_TOO_LARGE", False
    if status == 400:
        return "INVALID_MESSAGE", False
    if status == 404:
        return "NOT_FOUND", False
    if status >= 500:
        return "PROVIDER_UNAVAILABLE", True
    return "PROVIDER_ERROR", False


def _when(value: Any) -> datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return datetime.now(UTC)
    return datetime.now(UTC)
