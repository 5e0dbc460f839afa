"""Amazon SES (v2 API) provider.

The client is botocore's ``sesv2`` client (what ``boto3.client("sesv2")`` returns), created
from a botocore session directly: boto3's own import costs cold-start time for nothing
here. It honours the standard endpoint variables (``AWS_ENDPOINT_URL_SESV2``), and retries
throttling with botocore's ``standard`` / ``adaptive`` retry modes, within the call deadline
(``EMAIL_CALL_TIMEOUT``) that three botocore event hooks enforce.

Templates deployed to SES are rendered here too before a send (the packaged files, or the
deployed template fetched once), so that missing data and a line break rendered into the
subject are refused before SES renders them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, cast

from . import acceptance
from .addresses import address_key, bare_address, domain_of
from .deadline import Deadline, DeadlineExceeded
from .errors import EmailError
from .results import (
    BulkItemResult,
    DomainVerification,
    ErrorInfo,
    SuppressedEmail,
    SuppressionReason,
    VerificationStatus,
    ses_domain_records,
)
from .service import (
    Delivery,
    EmailService,
    Outgoing,
    bulk_group_key,
    recipient_headers,
    shared_headers,
)

if TYPE_CHECKING:
    from mypy_boto3_sesv2 import SESV2Client

    from milequest.services.errors import ServiceError
    from milequest.services.health import HealthState
    from milequest.services.metrics import MetricsSink

    from .models import EmailMessage
    from .settings import EmailSettings
    from .suppression import SuppressionStore
    from .templates import RenderedEmail, TemplateSource

logger = logging.getLogger("milequest.services.email")

# SES's mailbox simulator: accepted in the sandbox without verification.
SIMULATOR_DOMAIN = "simulator.amazonses.com"
_ACCOUNT_TTL = 600.0
_IDENTITY_TTL = 300.0
_TEMPLATE_TTL = 300.0
_ENTRY_RETRIES = 2

# BulkEmailEntryResult.Status -> (error code, retryable)
_ENTRY_STATUS: dict[str, tuple[str, bool]] = {
    "MESSAGE_REJECTED": ("MESSAGE_REJECTED", False),
    "MAIL_FROM_DOMAIN_NOT_VERIFIED": ("NOT_VERIFIED", False),
    "CONFIGURATION_SET_NOT_FOUND": ("CONFIGURATION", False),
    "TEMPLATE_NOT_FOUND": ("TEMPLATE_NOT_FOUND", False),
    "ACCOUNT_SUSPENDED": ("SENDING_PAUSED", False),
    "ACCOUNT_THROTTLED": ("RATE_LIMITED", True),
    "ACCOUNT_DAILY_QUOTA_EXCEEDED": ("QUOTA_EXCEEDED", False),
    "INVALID_SENDING_POOL_NAME": ("CONFIGURATION", False),
    "ACCOUNT_SENDING_PAUSED": ("SENDING_PAUSED", False),
    "CONFIGURATION_SET_SENDING_PAUSED": ("SENDING_PAUSED", False),
    "INVALID_PARAMETER": ("INVALID_MESSAGE", False),
    "TRANSIENT_FAILURE": ("PROVIDER_UNAVAILABLE", True),
    "FAILED": ("PROVIDER_ERROR", False),
}
_RETRY_ENTRY = frozenset({"ACCOUNT_THROTTLED", "TRANSIENT_FAILURE"})

_VERIFICATION = {
    "SUCCESS": VerificationStatus.VERIFIED,
    "PENDING": VerificationStatus.PENDING,
    "FAILED": VerificationStatus.FAILED,
    "TEMPORARY_FAILURE": VerificationStatus.TEMPORARY_FAILURE,
    "NOT_STARTED": VerificationStatus.NOT_STARTED,
}


def attempt_timeouts(deadline: float) -> tuple[float, float]:
    """Connect and read timeouts of one attempt within a call deadline of ``deadline`` s.

    Small enough that a quick failure (a 429, a 5xx) leaves room for retries, large enough
    for SES, which answers in well under a second.
    """
    return min(3.0, deadline / 4), min(10.0, deadline / 2)


def create_sesv2_client(settings: EmailSettings) -> SESV2Client:
    """A ``sesv2`` client with retries and the connection pool configured from settings."""
    import botocore.session
    from botocore.config import Config

    connect, read = attempt_timeouts(settings.email_call_timeout)
    config = Config(
        retries={
            "mode": settings.ses_retry_mode,
            "total_max_attempts": settings.ses_max_attempts,  # the first call included
        },
        max_pool_connections=settings.ses_max_connections,
        connect_timeout=connect,
        read_timeout=read,
    )
    region = (
        settings.aws_ses_region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
    )
    session = botocore.session.get_session()
    client = session.create_client("sesv2", region_name=region, config=config)
    return cast("SESV2Client", client)


@dataclass
class _CallState:
    deadline: Deadline
    attempts: int = 0
    last: BaseException | None = None


# The SES API call running in this thread (botocore runs a call's attempts in one thread).
_CALL: ContextVar[_CallState | None] = ContextVar("milequest_ses_call", default=None)


def install_deadline(client: Any, seconds: float) -> None:
    """Give every call of ``client`` a total deadline of ``seconds``, retries included.

    botocore has per-attempt timeouts only. ``before-call`` starts the clock,
    ``needs-retry`` remembers each failed attempt, and ``before-send`` refuses to start a
    retry that could not end in time (an attempt takes at most its connect and read
    timeouts), raising :class:`DeadlineExceeded` with the last failure.
    """
    budget = sum(attempt_timeouts(seconds))

    def start(**_: Any) -> None:
        _CALL.set(_CallState(Deadline(seconds)))

    def before_send(**_: Any) -> None:
        state = _CALL.get()
        if state is None:
            return
        state.attempts += 1
        if state.attempts > 1 and not state.deadline.allows(budget):
            raise DeadlineExceeded(seconds, state.attempts - 1, state.last)

    def needs_retry(
        response: Any = None, caught_exception: Any = None, operation: Any = None, **_: Any
    ) -> None:
        state = _CALL.get()
        failure = caught_exception or _client_error(response, operation)
        if state is not None:
            state.last = failure
        if caught_exception is not None:
            acceptance.note_failed_attempt(caught_exception)
        elif failure is not None:
            acceptance.note_failed_attempt(status=_status(response))

    events = client.meta.events
    events.register("before-call.sesv2", start)
    events.register_first("before-send.sesv2", before_send)
    events.register_first("needs-retry.sesv2", needs_retry)


def _status(response: Any) -> int | None:
    http = response[0] if isinstance(response, tuple) and response else None
    status = getattr(http, "status_code", None)
    return status if isinstance(status, int) else None


def _client_error(response: Any, operation: Any) -> BaseException | None:
    from botocore.exceptions import ClientError

    if not isinstance(response, tuple) or len(response) != 2:
        return None
    parsed = response[1]
    if not isinstance(parsed, dict) or "Error" not in parsed:
        return None
    return ClientError(parsed, getattr(operation, "name", "SES"))  # type: ignore[arg-type]


class _Cached:
    """A value loaded on demand and kept for ``ttl`` seconds (thread-safe).

    Only the first load blocks. Once a value exists, an expired one is still served while a
    single background thread reloads it, so a slow listing (SES pages its non-sending calls
    at about one request per second) never stalls the sends that consult it.
    """

    def __init__(self, ttl: float, load: Callable[[], Any]) -> None:
        self.ttl = ttl
        self._load = load
        self._value: Any = None
        self._stamp = float("-inf")
        self._lock = threading.Lock()
        self._refreshing = False

    def get(self) -> Any:
        with self._lock:
            expired = time.monotonic() - self._stamp >= self.ttl
            if expired and self._stamp == float("-inf"):
                self._value = self._load()
                self._stamp = time.monotonic()
            elif expired and not self._refreshing:
                self._refreshing = True
                threading.Thread(target=self._refresh, name="ses-cache", daemon=True).start()
            return self._value

    def _refresh(self) -> None:
        try:
            value = self._load()
        except Exception:
            logger.warning("could not refresh a cached SES listing", exc_info=True)
            value = None
        with self._lock:
            if value is not None:
                self._value = value
            self._stamp = time.monotonic()
            self._refreshing = False


class SesEmailService(EmailService):
    """Sends through Amazon SES v2: ``SendEmail``, ``SendBulkEmail``, templates, suppression."""

    provider_name: ClassVar[str] = "ses"
    paces_direct_sends: ClassVar[bool] = True

    def __init__(
        self,
        settings: EmailSettings,
        *,
        metrics: MetricsSink | None = None,
        suppression: SuppressionStore | None = None,
        client: SESV2Client | None = None,
    ) -> None:
        super().__init__(settings, metrics=metrics, suppression=suppression)
        self.renders_locally = settings.ses_template_mode == "local"
        self.client: SESV2Client = client or create_sesv2_client(settings)
        install_deadline(self.client, settings.email_call_timeout)
        self._account_rate: float | None = None
        self._account_stamp = float("-inf")
        self._account_lock = threading.Lock()
        self._identities = _Cached(_IDENTITY_TTL, self._load_identities)
        self._deployed: dict[str, tuple[float, TemplateSource]] = {}
        self._deployed_lock = threading.Lock()

    # -- sending -----------------------------------------------------------------------------

    def _render(self, message: EmailMessage) -> RenderedEmail | None:
        # Rendered here whatever the mode, so that missing data fails now instead of as a
        # later RENDERING_FAILURE event, and the service can check the rendered subject for
        # line breaks before SES renders it. In "local" mode the result is what gets sent.
        from .templates import render_source, template_names

        if self.renders_locally or message.template in template_names():
            return super()._render(message)
        assert message.template is not None
        source = self._deployed_template(message.template)
        try:
            return render_source(source, message.template_data)
        except EmailError as exc:
            raise self._error(exc.code.name, exc.message) from None

    def _deployed_template(self, name: str) -> TemplateSource:
        """A template deployed to SES but not packaged here, fetched and kept a while."""
        from .templates import TemplateSource

        with self._deployed_lock:
            cached = self._deployed.get(name)
        if cached is not None and time.monotonic() - cached[0] < _TEMPLATE_TTL:
            return cached[1]
        response: Any = self.client.get_email_template(
            TemplateName=self.settings.ses_template_prefix + name
        )
        content = response.get("TemplateContent") or {}
        source = TemplateSource(
            name,
            str(content.get("Subject", "")),
            str(content.get("Html", "")),
            str(content.get("Text", "")),
        )
        with self._deployed_lock:
            self._deployed[name] = (time.monotonic(), source)
        return source

    def _by_template(self, message: EmailMessage) -> bool:
        """Whether SES renders this message from a deployed template (else: literal content)."""
        return message.template is not None and not self.renders_locally

    def _check_before_send(self, message: EmailMessage) -> None:
        if not self.settings.ses_sandbox:
            return
        unverified = [a for a in message.recipients() if not self._recipient_allowed(a)]
        if unverified:
            raise self._error(
                "NOT_VERIFIED",
                "SES sandbox: recipients must be verified identities: "
                + ", ".join(bare_address(a) for a in unverified),
            )

    def _recipient_allowed(self, address: str) -> bool:
        domain = domain_of(address)
        if domain == SIMULATOR_DOMAIN:
            return True
        emails, domains = self._identities.get()
        return address_key(address) in emails or domain in domains

    def _common_args(self, message: EmailMessage) -> dict[str, Any]:
        assert message.from_email is not None
        args: dict[str, Any] = {"FromEmailAddress": message.from_email}
        if message.reply_to:
            args["ReplyToAddresses"] = list(message.reply_to)
        config_set = message.configuration_set or self.settings.ses_configuration_set
        if config_set:
            args["ConfigurationSetName"] = config_set
        return args

    def _deliver(self, out: Outgoing) -> Delivery:
        message = out.message
        args = self._common_args(message)
        args["Destination"] = _destination(message)
        if message.tags:
            args["EmailTags"] = [{"Name": k, "Value": v} for k, v in message.tags.items()]
        headers = [{"Name": k, "Value": v} for k, v in message.headers.items()]
        if self._by_template(message):
            assert message.template is not None
            template: dict[str, Any] = {
                "TemplateName": self.settings.ses_template_prefix + message.template,
                "TemplateData": json.dumps(message.template_data),
            }
            if headers:
                template["Headers"] = headers
            if message.attachments:
                template["Attachments"] = [
                    {
                        "RawContent": a.content,
                        "FileName": a.filename,
                        "ContentType": a.mime_type,
                        "ContentDisposition": "INLINE" if a.content_id else "ATTACHMENT",
                        **({"ContentId": a.content_id} if a.content_id else {}),
                    }
                    for a in message.attachments
                ]
            args["Content"] = {"Template": template}
        elif message.attachments:
            from .mime import build_mime

            args["Content"] = {"Raw": {"Data": build_mime(message).as_bytes()}}
        else:
            body = {
                part: {"Data": value, "Charset": "UTF-8"}
                for part, value in (("Html", message.html), ("Text", message.text))
                if value
            }
            simple: dict[str, Any] = {
                "Subject": {"Data": message.subject or "", "Charset": "UTF-8"},
                "Body": body,
            }
            if headers:
                simple["Headers"] = headers
            args["Content"] = {"Simple": simple}
        response = self.client.send_email(**args)
        return Delivery(response["MessageId"])

    # -- bulk ------------------------------------------------------------------------------------

    def _bulk_workers(self) -> int:
        return self.settings.ses_max_connections

    def _batch_key(self, message: EmailMessage) -> Hashable | None:
        return bulk_group_key(message, by_template=self._by_template(message))

    def _send_batch(self, batch: list[Outgoing]) -> list[BulkItemResult]:
        if len(batch) == 1 and self._batch_key(batch[0].message) is None:
            return super()._send_batch(batch)
        first = batch[0].message
        args = self._common_args(first)
        if first.tags:
            args["DefaultEmailTags"] = [{"Name": k, "Value": v} for k, v in first.tags.items()]
        template: dict[str, Any] = {"TemplateData": "{}"}
        if self._by_template(first):
            template["TemplateName"] = self.settings.ses_template_prefix + str(first.template)
        else:
            content = {"Subject": first.subject or ""}
            if first.html:
                content["Html"] = first.html
            if first.text:
                content["Text"] = first.text
            template["TemplateContent"] = content
        if shared_headers(first):
            template["Headers"] = [
                {"Name": k, "Value": v} for k, v in shared_headers(first).items()
            ]
        args["DefaultContent"] = {"Template": template}

        results: dict[int, BulkItemResult] = {}
        todo = list(batch)
        deadline = Deadline(self.settings.email_call_timeout)
        budget = sum(attempt_timeouts(self.settings.email_call_timeout))
        for attempt in range(_ENTRY_RETRIES + 1):
            if attempt:
                pause = 0.2 * 2 ** (attempt - 1)
                if not deadline.allows(pause + budget):
                    break  # the entries left keep their throttled status, reported below
                time.sleep(pause)  # SES drops throttled entries: resend them later
            entries: Any = [self._entry(out) for out in todo]
            try:
                if attempt:  # the first call was paced before it started
                    self._throttle(self._rate_units(todo))
                response = self.client.send_bulk_email(BulkEmailEntries=entries, **args)
                outcomes = list(zip(todo, response["BulkEmailEntryResults"], strict=True))
            except Exception as exc:
                if not attempt:
                    raise
                # Entries of earlier calls were sent: only the resent ones failed.
                for out in todo:
                    results[out.index] = self._failed_item(out.index, out.message.recipients(), exc)
                break
            retry: list[Outgoing] = []
            for out, entry in outcomes:
                status = entry.get("Status", "FAILED")
                if status == "SUCCESS":
                    results[out.index] = self._ok_item(out, Delivery(entry.get("MessageId", "")))
                    continue
                # Recorded even when retried: it stands if the deadline stops the retries.
                code, retryable = _ENTRY_STATUS.get(status, ("PROVIDER_ERROR", False))
                info = ErrorInfo(
                    self.error_codes[code],
                    f"{status}: {entry.get('Error', '')}".rstrip(": "),
                    retryable,
                )
                results[out.index] = BulkItemResult(
                    out.index,
                    False,
                    None,
                    tuple(bare_address(a) for a in out.message.recipients()),
                    info,
                )
                if status in _RETRY_ENTRY and attempt < _ENTRY_RETRIES:
                    retry.append(out)
            if not retry:
                break
            todo = retry
        return [results[out.index] for out in batch]

    def _entry(self, out: Outgoing) -> dict[str, Any]:
        message = out.message
        entry: dict[str, Any] = {"Destination": _destination(message)}
        if recipient_headers(message):
            entry["ReplacementHeaders"] = [
                {"Name": k, "Value": v} for k, v in recipient_headers(message).items()
            ]
        if self._by_template(message):
            entry["ReplacementEmailContent"] = {
                "ReplacementTemplate": {
                    "ReplacementTemplateData": json.dumps(message.template_data)
                }
            }
        return entry

    # -- rate limiting ---------------------------------------------------------------------------

    def _rate_units(self, outs: list[Outgoing]) -> float:
        return float(sum(len(out.message.recipients()) for out in outs))  # SES counts each

    def _send_rate(self) -> float | None:
        """``SES_MAX_SEND_RATE``, else the account's ``MaxSendRate`` (``GetAccount``, kept
        ten minutes)."""
        if self.settings.ses_max_send_rate is not None:
            return self.settings.ses_max_send_rate
        with self._account_lock:
            if time.monotonic() - self._account_stamp < _ACCOUNT_TTL:
                return self._account_rate
            self._account_stamp = time.monotonic()
            try:
                quota = self.client.get_account().get("SendQuota", {})
            except Exception as exc:  # no quota known: let SES and retries pace us
                logger.warning("SES GetAccount failed; sending without a client-side rate: %s", exc)
                self._account_rate = None
                return None
            rate = float(quota.get("MaxSendRate") or 0)
            self._account_rate = rate if rate > 0 else None
            return self._account_rate

    # -- the account-level suppression list, kept in sync with the shared one -------------------

    def _mirror_suppress(self, address: str, reason: SuppressionReason) -> None:
        if not self.settings.ses_sandbox:  # the sandbox has no suppression-list API
            self.client.put_suppressed_destination(
                EmailAddress=address,
                Reason="COMPLAINT" if reason is SuppressionReason.COMPLAINT else "BOUNCE",
            )

    def _mirror_unsuppress(self, address: str) -> None:
        from botocore.exceptions import ClientError

        if self.settings.ses_sandbox:
            return
        try:
            self.client.delete_suppressed_destination(EmailAddress=address)
        except ClientError as exc:
            if _code(exc) != "NotFoundException":
                raise

    def _provider_suppressions(self) -> Iterator[SuppressedEmail]:
        if self.settings.ses_sandbox:
            raise self._error("NOT_SUPPORTED", "the SES sandbox has no account suppression list")
        for item in _pages(
            self.client.list_suppressed_destinations, "SuppressedDestinationSummaries"
        ):
            yield SuppressedEmail(
                str(item["EmailAddress"]).lower(),
                SuppressionReason(item["Reason"]),
                item.get("LastUpdateTime") or datetime.now(UTC),
                source="ses",
            )

    # -- identities ------------------------------------------------------------------------------

    def _load_identities(self) -> tuple[set[str], set[str]]:
        emails: set[str] = set()
        domains: set[str] = set()
        for item in _pages(self.client.list_email_identities, "EmailIdentities"):
            if item.get("VerificationStatus") != "SUCCESS" and not item.get("SendingEnabled"):
                continue
            name = item.get("IdentityName", "").lower()
            if item.get("IdentityType") == "EMAIL_ADDRESS":
                emails.add(name)
            elif item.get("IdentityType") == "DOMAIN":
                domains.add(name)
        return emails, domains

    def _verify_domain(self, domain: str) -> DomainVerification:
        from botocore.exceptions import ClientError

        try:
            response: Any = self.client.create_email_identity(EmailIdentity=domain)
        except ClientError as exc:
            if _code(exc) != "AlreadyExistsException":
                raise
            response = self.client.get_email_identity(EmailIdentity=domain)
        dkim = response.get("DkimAttributes") or {}
        tokens = dkim.get("Tokens") or []
        if response.get("VerifiedForSendingStatus"):
            status = VerificationStatus.VERIFIED
        else:
            raw = response.get("VerificationStatus") or dkim.get("Status") or "PENDING"
            status = _VERIFICATION.get(raw, VerificationStatus.PENDING)
        # A custom MAIL FROM domain is SES's return path: with it SPF aligns for DMARC.
        mail_from = (response.get("MailFromAttributes") or {}).get("MailFromDomain")
        if not mail_from:
            mail_from = f"{self.settings.ses_mail_from_subdomain}.{domain}"
            self.client.put_email_identity_mail_from_attributes(
                EmailIdentity=domain,
                MailFromDomain=mail_from,
                BehaviorOnMxFailure="USE_DEFAULT_VALUE",
            )
        region = self.client.meta.region_name or "us-east-1"
        return DomainVerification(
            domain, status, ses_domain_records(domain, tokens, mail_from, region)
        )

    def _verified_domains(self) -> list[str]:
        _emails, domains = self._load_identities()
        return sorted(domains)

    def _verified_emails(self) -> list[str]:
        emails, _domains = self._load_identities()
        return sorted(emails)

    # -- errors and health -----------------------------------------------------------------------

    def _translate_error(self, exc: Exception) -> ServiceError | None:
        from botocore.exceptions import ClientError

        if not isinstance(exc, ClientError):
            return None
        code = _code(exc)
        message = str(exc.response.get("Error", {}).get("Message", ""))
        lowered = message.lower()
        text = f"{code}: {message}"
        if "daily" in lowered and "quota" in lowered:
            return self._error("QUOTA_EXCEEDED", text, cause=exc)
        if code in ("MessageRejected", "MailFromDomainNotVerifiedException"):
            name = "NOT_VERIFIED" if "not verified" in lowered else "MESSAGE_REJECTED"
            if code == "MailFromDomainNotVerifiedException":
                name = "NOT_VERIFIED"
            return self._error(name, text, cause=exc)
        if code in ("AccountSuspendedException", "SendingPausedException"):
            return self._error("SENDING_PAUSED", text, cause=exc)
        if code == "LimitExceededException":
            return self._error("QUOTA_EXCEEDED", text, cause=exc)
        if "configuration set" in lowered and code in ("NotFoundException", "BadRequestException"):
            return self._error("CONFIGURATION", f"SES_CONFIGURATION_SET: {text}", cause=exc)
        if "template" in lowered and (code == "NotFoundException" or "not exist" in lowered):
            return self._error("TEMPLATE_NOT_FOUND", text, cause=exc)
        if code == "NotFoundException":
            return self._error("NOT_FOUND", text, cause=exc)
        if code == "BadRequestException":
            return self._error("INVALID_MESSAGE", text, cause=exc)
        return None

    def _probe_provider(self) -> tuple[HealthState, dict[str, Any]]:
        from milequest.services.health import HealthState

        account: Any = self.client.get_account()
        quota = account.get("SendQuota", {})
        details = {
            "sending_enabled": account.get("SendingEnabled"),
            "production_access": account.get("ProductionAccessEnabled"),
            "enforcement_status": account.get("EnforcementStatus"),
            "max_send_rate": quota.get("MaxSendRate"),
            "sent_last_24h": quota.get("SentLast24Hours"),
            "max_24h_send": quota.get("Max24HourSend"),
        }
        if not account.get("SendingEnabled", True):
            return HealthState.UNHEALTHY, details
        if account.get("EnforcementStatus", "HEALTHY") != "HEALTHY":
            return HealthState.DEGRADED, details
        return HealthState.HEALTHY, details


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _destination(message: EmailMessage) -> dict[str, list[str]]:
    fields = (
        ("ToAddresses", message.to),
        ("CcAddresses", message.cc),
        ("BccAddresses", message.bcc),
    )
    return {key: list(values) for key, values in fields if values}


def _pages(call: Callable[..., Any], key: str) -> Iterator[Any]:
    """The items under ``key`` of every page of a ``NextToken``-paged SES list call."""
    kwargs: dict[str, Any] = {"PageSize": 1000}
    while True:
        page = call(**kwargs)
        yield from page.get(key, [])
        token = page.get("NextToken")
        if not token:
            return
        kwargs["NextToken"] = token
