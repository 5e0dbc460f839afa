"""Resend provider, through Resend's documented REST API (https://resend.com/docs/api-reference).

Why the REST API rather than the ``resend`` SDK: the SDK keeps its API key, base URL and
HTTP client in module globals (``resend.api_key``, ``resend.api_url``,
``resend.default_http_client``), so two services in one process cannot differ and a key set
by one component is silently used by another; it also folds every transport failure into
one ``ResendError`` with code 500 and has no deadline across attempts. The few endpoints
used here are plain JSON over HTTPS; they are called with urllib3 (installed with botocore):
a thread-safe connection pool and a timeout per request.

- Sends carry an ``Idempotency-Key`` (the message's ``idempotency_key``, else a new one),
  so a retry after a timeout or a 5xx cannot send twice.
- Bulk sends go through ``POST /emails/batch`` in chunks of 100, without attachments
  (Resend refuses them in batches: such messages are sent alone). Validation mode
  ``RESEND_BATCH_VALIDATION``: ``permissive`` (default) sends the valid emails of a chunk
  and reports the others; ``strict`` fails the chunk whole. Either way each message gets
  its own result.
- Throttling (429 ``rate_limit_exceeded``) is retried after ``retry-after`` /
  ``ratelimit-reset``; quota errors are not.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Hashable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, urlsplit

from .addresses import bare_address
from .credentials import resend_keys
from .errors import EmailError, EmailErrorCode
from .http_api import ApiError, ApiResponse, backoff, call, lower_headers
from .results import (
    BulkItemResult,
    DnsRecord,
    DomainVerification,
    ErrorInfo,
    SuppressedEmail,
    SuppressionReason,
    VerificationStatus,
)
from .service import Delivery, EmailService, Outgoing

if TYPE_CHECKING:
    import urllib3

    from milequest.services.errors import ServiceError
    from milequest.services.health import HealthState
    from milequest.services.metrics import MetricsSink

    from .models import EmailMessage
    from .settings import EmailSettings
    from .suppression import SuppressionStore

BATCH_SIZE = 100

_STATUS = {
    "verified": VerificationStatus.VERIFIED,
    "pending": VerificationStatus.PENDING,
    "not_started": VerificationStatus.NOT_STARTED,
    "failed": VerificationStatus.FAILED,
    "temporary_failure": VerificationStatus.TEMPORARY_FAILURE,
}
# error name -> (code, retryable); by status below when the name is unknown.
_ERRORS: dict[str, tuple[str, bool]] = {
    "missing_api_key": ("CONFIGURATION", False),
    "invalid_api_key": ("CONFIGURATION", False),
    "restricted_api_key": ("CONFIGURATION", False),
    "invalid_from_address": ("NOT_VERIFIED", False),
    "invalid_to_address": ("NOT_VERIFIED", False),
    "missing_required_field": ("INVALID_MESSAGE", False),
    "invalid_attachment": ("INVALID_MESSAGE", False),
    "invalid_parameter": ("INVALID_MESSAGE", False),
    "invalid_idempotency_key": ("PROVIDER_ERROR", False),
    "invalid_idempotent_request": ("PROVIDER_ERROR", False),
    "concurrent_idempotent_requests": ("PROVIDER_UNAVAILABLE", True),
    "not_found": ("NOT_FOUND", False),
    "rate_limit_exceeded": ("RATE_LIMITED", True),
    "daily_quota_exceeded": ("QUOTA_EXCEEDED", False),
    "monthly_quota_exceeded": ("QUOTA_EXCEEDED", False),
    "security_error": ("MESSAGE_REJECTED", False),
    "application_error": ("PROVIDER_UNAVAILABLE", True),
    "internal_server_error": ("PROVIDER_UNAVAILABLE", True),
}


class ResendEmailService(EmailService):
    """Sends through Resend: ``POST /emails``, ``POST /emails/batch``, domains, suppressions."""

    provider_name: ClassVar[str] = "resend"
    bulk_batch_size: ClassVar[int] = BATCH_SIZE

    def __init__(
        self,
        settings: EmailSettings,
        *,
        metrics: MetricsSink | None = None,
        suppression: SuppressionStore | None = None,
    ) -> None:
        super().__init__(settings, metrics=metrics, suppression=suppression)
        key = resend_keys(settings).api_key
        if not key:
            raise self._config_error("RESEND_API_KEY (or RESEND_SECRET_ARN) is required")
        url = settings.resend_api_url.rstrip("/")
        if urlsplit(url).scheme not in ("https", "http") or not urlsplit(url).netloc:
            raise self._config_error(f"RESEND_API_URL is not an HTTP(S) URL: {url!r}")
        import urllib3

        self.base_url = url
        self._headers = {
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "milequest-email",
        }
        self._pool: urllib3.PoolManager = urllib3.PoolManager(maxsize=10, retries=False)

    # -- the API ---------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        idempotent: bool = True,
    ) -> Any:
        """One API call (retried within the deadline); the JSON answer."""
        import urllib3

        from milequest.services.jsonsafe import dumps

        data = dumps(body).encode() if body is not None else None
        sent = {**self._headers, **(headers or {})}

        def attempt(timeout: float) -> ApiResponse:
            response = self._pool.request(
                method,
                self.base_url + path,
                body=data,
                headers=sent,
                timeout=urllib3.Timeout(connect=min(3.0, timeout), read=timeout),
                redirect=False,
            )
            return ApiResponse(response.status, lower_headers(response.headers), response.data)

        answer = call(
            attempt,
            seconds=self.settings.email_call_timeout,
            max_attempts=self.settings.email_api_max_attempts,
            wait_before_retry=_wait_before_retry,
            error=_api_error,
            transport_errors=(urllib3.exceptions.HTTPError, OSError),
            retry_transport=idempotent,
        )
        return answer.json()

    # -- sending ---------------------------------------------------------------------------

    def _payload(self, message: EmailMessage) -> dict[str, Any]:
        assert message.from_email is not None
        payload: dict[str, Any] = {
            "from": message.from_email,
            "to": list(message.to),
            "subject": message.subject or "",
        }
        for name in ("cc", "bcc", "reply_to"):
            if getattr(message, name):
                payload[name] = list(getattr(message, name))
        if message.html:
            payload["html"] = message.html
        if message.text:
            payload["text"] = message.text
        if message.headers:
            payload["headers"] = dict(message.headers)
        if message.tags:
            payload["tags"] = [{"name": k, "value": v} for k, v in message.tags.items()]
        if message.attachments:
            payload["attachments"] = [
                {
                    "filename": a.filename,
                    "content": base64.b64encode(a.content).decode("ascii"),
                    "content_type": a.mime_type,
                    **({"content_id": a.content_id.strip("<>")} if a.content_id else {}),
                }
                for a in message.attachments
            ]
        return payload

    def _deliver(self, out: Outgoing) -> Delivery:
        # The caller's key, when given, makes Resend itself drop a repeat within 24 hours.
        key = out.message.idempotency_key or str(uuid.uuid4())
        answer = self._request(
            "POST", "/emails", self._payload(out.message), headers={"Idempotency-Key": key}
        )
        return Delivery(str(_field(answer, "id")))

    def _send_rate(self) -> float | None:
        return self.settings.resend_send_rate

    def _batch_key(self, message: EmailMessage) -> Hashable | None:
        # A batch carries any emails, but none with attachments.
        return None if message.attachments else "batch"

    def _send_batch(self, batch: list[Outgoing]) -> list[BulkItemResult]:
        if len(batch) == 1:
            return super()._send_batch(batch)
        mode = self.settings.resend_batch_validation
        answer = self._request(
            "POST",
            "/emails/batch",
            [self._payload(out.message) for out in batch],
            headers={"Idempotency-Key": str(uuid.uuid4()), "x-batch-validation": mode},
        )
        errors = answer.get("errors") if isinstance(answer, dict) else None
        refused = {
            e["index"]: str(e.get("message") or "refused")
            for e in errors or []
            if isinstance(e, dict) and isinstance(e.get("index"), int)
        }
        # ``data`` lists the created emails in request order; ``errors`` the others by index.
        ids = iter(_field(answer, "data"))
        results = []
        for position, out in enumerate(batch):
            created = None if position in refused else next(ids, None)
            if isinstance(created, dict) and created.get("id"):
                results.append(self._ok_item(out, Delivery(str(created["id"]))))
                continue
            info = ErrorInfo(
                EmailErrorCode.MESSAGE_REJECTED,
                refused.get(position, "Resend returned no id for this email"),
            )
            recipients = tuple(bare_address(a) for a in out.message.recipients())
            results.append(BulkItemResult(out.index, False, None, recipients, info))
        return results

    # -- domains and suppressions ----------------------------------------------------------

    def _domains(self) -> Iterator[dict[str, Any]]:
        after = None
        while True:
            query = "?limit=100" + (f"&after={quote(after)}" if after else "")
            page = self._request("GET", "/domains" + query)
            items = _field(page, "data")
            yield from (d for d in items if isinstance(d, dict))
            if not page.get("has_more") or not items:
                return
            after = str(items[-1].get("id", ""))

    def _verify_domain(self, domain: str) -> DomainVerification:
        found = next((d for d in self._domains() if d.get("name") == domain), None)
        if found is None:
            found = self._request("POST", "/domains", {"name": domain})
        else:
            found = self._request("GET", f"/domains/{quote(str(found['id']))}")
        status = str(found.get("status", "not_started"))
        if status in ("not_started", "failed"):
            self._request("POST", f"/domains/{quote(str(found['id']))}/verify", {})
            status = "pending"
        records = tuple(
            _record(domain, r) for r in found.get("records") or [] if isinstance(r, dict)
        )
        return DomainVerification(domain, _STATUS.get(status, VerificationStatus.PENDING), records)

    def _verified_domains(self) -> list[str]:
        return sorted(str(d["name"]) for d in self._domains() if d.get("status") == "verified")

    def _verified_emails(self) -> list[str]:
        return []  # Resend verifies domains, not single addresses

    def _provider_suppressions(self) -> Iterator[SuppressedEmail]:
        after = None
        while True:
            query = "?limit=100" + (f"&after={quote(after)}" if after else "")
            page = self._request("GET", "/suppressions" + query)
            items = [i for i in _field(page, "data") if isinstance(i, dict)]
            for item in items:
                reason = (
                    SuppressionReason.COMPLAINT
                    if item.get("origin") == "complaint"
                    else SuppressionReason.BOUNCE
                )
                yield SuppressedEmail(
                    str(item["email"]).lower(),
                    reason,
                    _when(item.get("created_at")),
                    None,
                    "resend",
                )
            if not page.get("has_more") or not items:
                return
            after = str(items[-1].get("id", ""))

    # -- errors and health -----------------------------------------------------------------

    def _translate_error(self, exc: Exception) -> ServiceError | None:
        import urllib3

        if isinstance(exc, ApiError):
            code, retryable = _ERRORS.get(exc.name, _by_status(exc.status))
            if exc.name == "validation_error" and exc.status == 403:
                code = "NOT_VERIFIED"  # an unverified domain or the testing sender
            return self._error(code, str(exc), retryable=retryable, cause=exc)
        if isinstance(exc, urllib3.exceptions.HTTPError):
            return self._error(
                "PROVIDER_UNAVAILABLE", f"{type(exc).__name__}: {exc}", retryable=True, cause=exc
            )
        return None

    def _probe_provider(self) -> tuple[HealthState, dict[str, Any]]:
        from milequest.services.health import HealthState

        # The key is proven by the domain listing the sender check makes next.
        return HealthState.HEALTHY, {"api": self.base_url}


def _wait_before_retry(response: ApiResponse, attempt: int) -> float | None:
    name = _error_name(response)
    if response.status == 429 and name in ("rate_limit_exceeded", ""):
        for header in ("retry-after", "ratelimit-reset"):
            value = response.header(header)
            if value is not None:
                try:
                    return max(0.0, float(value))
                except ValueError:
                    continue
        return backoff(attempt)
    if response.status >= 500 or name == "concurrent_idempotent_requests":
        return backoff(attempt)  # safe: the request carries an idempotency key
    return None


def _error_name(response: ApiResponse) -> str:
    data = response.json()
    return str(data.get("name") or "") if isinstance(data, dict) else ""


def _api_error(response: ApiResponse) -> ApiError:
    data = response.json()
    message = str(data.get("message", "")) if isinstance(data, dict) else ""
    return ApiError(
        response, _error_name(response), message or response.body[:200].decode(errors="replace")
    )


def _by_status(status: int) -> tuple[str, bool]:
    if status == 429:
        return "RATE_LIMITED", True
    if status in (401, 403):
        return "CONFIGURATION", False
    if status in (400, 422):
        return "INVALID_MESSAGE", False
    if status == 404:
        return "NOT_FOUND", False
    if status >= 500:
        return "PROVIDER_UNAVAILABLE", True
    return "PROVIDER_ERROR", False


def _field(data: Any, name: str) -> Any:
    if not isinstance(data, dict) or name not in data:
        raise EmailError(EmailErrorCode.PROVIDER_ERROR, f"unexpected Resend answer: no {name!r}")
    return data[name]


def _record(domain: str, raw: dict[str, Any]) -> DnsRecord:
    """A Resend record (names relative to the domain) as a full DNS record."""
    name = str(raw.get("name", ""))
    full = domain if name in ("", "@") else name if name.endswith(domain) else f"{name}.{domain}"
    kind = str(raw.get("record", "")).upper()
    rtype = str(raw.get("type", "")).upper()
    purpose = {"DKIM": "dkim", "SPF": "return_path" if rtype == "MX" else "spf"}.get(
        kind, kind.lower() or "verification"
    )
    priority = raw.get("priority")
    return DnsRecord(
        rtype, full, str(raw.get("value", "")), purpose, int(priority) if priority else None
    )


def _when(value: Any) -> datetime:
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)
    return when if when.tzinfo else when.replace(tzinfo=UTC)
