"""The SES v2 operations moto lacks, in front of moto's server (a WSGI middleware).

moto 5's ``sesv2`` sends simple and raw emails and manages identities and configuration
sets, but has no account details, templates, templated or bulk sends, account-level
suppression list or custom MAIL FROM domains. This middleware answers those REST calls
(paths under ``/v2/email/``, SigV4 scope ``ses``) so the ses provider works end to end
locally; everything else goes to moto. Templated sends are rendered with the runtime's own
renderer and recorded in moto's SES backend as raw MIME messages, next to the ones moto
records itself.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote

from moto.core.models import DEFAULT_ACCOUNT_ID

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

LOCAL_MAX_SEND_RATE = 500.0  # messages per second the local "account" allows

_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/ses/aws4_request")
_SUPPRESSED_ONE = re.compile(r"\A/v2/email/suppression/addresses/(?P<address>[^/]+)\Z")
_TEMPLATE_ONE = re.compile(r"\A/v2/email/templates/(?P<name>[^/]+)\Z")
_IDENTITY_ONE = re.compile(r"\A/v2/email/identities/(?P<name>[^/]+)\Z")
_MAIL_FROM = re.compile(r"\A/v2/email/identities/(?P<name>[^/]+)/mail-from\Z")


RECEIVED_AT_HEADER = "X-Local-Received-At"


class _ApiError(Exception):
    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


class SesV2Extensions:
    """Wraps moto's WSGI app; state lives here and is cleared by ``/moto-api/reset``."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app
        self._lock = threading.Lock()
        self.templates: dict[str, dict[str, str]] = {}
        self.suppressed: dict[str, dict[str, Any]] = {}
        self.mail_from: dict[str, str] = {}

    def reset(self) -> None:
        with self._lock:
            self.templates.clear()
            self.suppressed.clear()
            self.mail_from.clear()

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/moto-api/reset":
            self.reset()
            return self.app(environ, start_response)
        scope = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
        if scope is None or not path.startswith("/v2/email/"):
            return self.app(environ, start_response)
        body = _read_body(environ)
        method = environ.get("REQUEST_METHOD", "GET")
        identity = _IDENTITY_ONE.match(path)
        if identity and method == "GET":
            with self._lock:
                mail_from = self.mail_from.get(unquote(identity["name"]).lower())
            if mail_from is not None:
                environ["wsgi.input"] = io.BytesIO(body)
                return self._with_mail_from(environ, start_response, mail_from)
        try:
            answer = self._dispatch(method, path, body, scope.group(1))
        except _ApiError as exc:
            return _respond(
                start_response,
                exc.status,
                {"message": exc.message},
                {"x-amzn-ErrorType": exc.error_type},
            )
        if answer is None:  # not ours: moto handles it, with the body put back
            environ["wsgi.input"] = io.BytesIO(body)
            return self.app(environ, start_response)
        status, payload = answer
        return _respond(start_response, status, payload)

    # -- routing ---------------------------------------------------------------------------

    def _dispatch(
        self, method: str, path: str, body: bytes, region: str
    ) -> tuple[int, dict[str, Any]] | None:
        if path == "/v2/email/account" and method == "GET":
            return 200, self._account(region)
        if path == "/v2/email/templates" and method == "POST":
            return 200, self._create_template(_json(body))
        if match := _TEMPLATE_ONE.match(path):
            name = unquote(match["name"])
            if method == "GET":
                return 200, self._get_template(name)
            if method == "DELETE":
                return 200, self._delete_template(name)
        if path == "/v2/email/suppression/addresses":
            if method == "PUT":
                return 200, self._put_suppressed(_json(body))
            if method == "GET":
                return 200, self._list_suppressed()
        if match := _SUPPRESSED_ONE.match(path):
            address = unquote(match["address"]).lower()
            if method == "GET":
                return 200, self._get_suppressed(address)
            if method == "DELETE":
                return 200, self._delete_suppressed(address)
        if (match := _MAIL_FROM.match(path)) and method == "PUT":
            return 200, self._put_mail_from(unquote(match["name"]).lower(), _json(body))
        if path == "/v2/email/outbound-emails" and method == "POST":
            request = _json(body)
            if "Template" in (request.get("Content") or {}):
                return 200, self._send_templated(request, region)
            if "Simple" in (request.get("Content") or {}):
                # moto keeps only the HTML of a simple send; store the whole message.
                return 200, self._send_simple(request, region)
        if path == "/v2/email/outbound-bulk-emails" and method == "POST":
            return 200, self._send_bulk(_json(body), region)
        return None

    # -- account ---------------------------------------------------------------------------

    def _account(self, region: str) -> dict[str, Any]:
        from moto.ses.models import ses_backends

        sent = ses_backends[DEFAULT_ACCOUNT_ID][region].sent_message_count
        return {
            "DedicatedIpAutoWarmupEnabled": False,
            "EnforcementStatus": "HEALTHY",
            "ProductionAccessEnabled": True,
            "SendingEnabled": True,
            "SendQuota": {
                "Max24HourSend": 1_000_000.0,
                "MaxSendRate": LOCAL_MAX_SEND_RATE,
                "SentLast24Hours": float(sent),
            },
            "SuppressionAttributes": {"SuppressedReasons": ["BOUNCE", "COMPLAINT"]},
        }

    # -- templates -------------------------------------------------------------------------

    def _create_template(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request.get("TemplateName")
        content = request.get("TemplateContent") or {}
        if not isinstance(name, str) or not name or not isinstance(content, dict):
            raise _ApiError(400, "BadRequestException", "TemplateName and TemplateContent")
        with self._lock:
            if name in self.templates:
                raise _ApiError(400, "AlreadyExistsException", f"template {name} exists")
            self.templates[name] = {k: str(v) for k, v in content.items()}
        return {}

    def _template(self, name: str) -> dict[str, str]:
        with self._lock:
            found = self.templates.get(name)
        if found is None:
            raise _ApiError(404, "NotFoundException", f"template {name} does not exist")
        return found

    def _get_template(self, name: str) -> dict[str, Any]:
        return {"TemplateName": name, "TemplateContent": self._template(name)}

    def _delete_template(self, name: str) -> dict[str, Any]:
        self._template(name)
        with self._lock:
            self.templates.pop(name, None)
        return {}

    # -- suppression list ------------------------------------------------------------------

    def _put_suppressed(self, request: dict[str, Any]) -> dict[str, Any]:
        address, reason = request.get("EmailAddress"), request.get("Reason")
        if not isinstance(address, str) or reason not in ("BOUNCE", "COMPLAINT"):
            raise _ApiError(400, "BadRequestException", "EmailAddress and Reason required")
        with self._lock:
            self.suppressed[address.lower()] = {
                "EmailAddress": address.lower(),
                "Reason": reason,
                "LastUpdateTime": datetime.now(UTC).timestamp(),
            }
        return {}

    def _list_suppressed(self) -> dict[str, Any]:
        with self._lock:
            entries = [dict(entry) for entry in self.suppressed.values()]
        return {"SuppressedDestinationSummaries": entries}

    def _get_suppressed(self, address: str) -> dict[str, Any]:
        with self._lock:
            entry = self.suppressed.get(address)
        if entry is None:
            raise _ApiError(404, "NotFoundException", f"{address} is not on the list")
        return {"SuppressedDestination": dict(entry)}

    def _delete_suppressed(self, address: str) -> dict[str, Any]:
        with self._lock:
            if self.suppressed.pop(address, None) is None:
                raise _ApiError(404, "NotFoundException", f"{address} is not on the list")
        return {}

    # -- custom MAIL FROM domains ------------------------------------------------------------

    def _put_mail_from(self, identity: str, request: dict[str, Any]) -> dict[str, Any]:
        domain = request.get("MailFromDomain")
        if not isinstance(domain, str) or not domain.endswith("." + identity):
            raise _ApiError(400, "BadRequestException", "MailFromDomain: a subdomain of it")
        with self._lock:
            self.mail_from[identity] = domain
        return {}

    def _with_mail_from(
        self, environ: dict[str, Any], start_response: Callable[..., Any], domain: str
    ) -> Iterable[bytes]:
        """moto's GetEmailIdentity answer with the MAIL FROM attributes moto does not keep."""
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
            captured.update(status=status, headers=headers)
            return lambda data: None

        raw = b"".join(self.app(environ, capture))
        if not captured.get("status", "").startswith("200"):
            start_response(captured["status"], captured["headers"])
            return [raw]
        payload = json.loads(raw or b"{}")
        payload["MailFromAttributes"] = {
            "MailFromDomain": domain,
            "MailFromDomainStatus": "SUCCESS",
            "BehaviorOnMxFailure": "USE_DEFAULT_VALUE",
        }
        return _respond(start_response, 200, payload)

    # -- templated and bulk sends ----------------------------------------------------------

    def _render(self, template: dict[str, Any], data: str) -> tuple[str, str, str]:
        from milequest.services.email.templates import TemplateSource, render_source
        from milequest.services.errors import ServiceError

        if "TemplateContent" in template:
            content = template["TemplateContent"]
            name = "inline"
        else:
            name = str(template.get("TemplateName", ""))
            content = self._template(name)
        try:
            values = json.loads(data or "{}")
            rendered = render_source(
                TemplateSource(
                    name=name,
                    subject=str(content.get("Subject", "")),
                    html=str(content.get("Html", "")),
                    text=str(content.get("Text", "")),
                ),
                values if isinstance(values, dict) else {},
            )
        except (ValueError, ServiceError) as exc:
            # SES accepts the send and reports a RENDERING_FAILURE event later; locally the
            # send is refused at once so the problem is visible.
            raise _ApiError(400, "BadRequestException", f"rendering failed: {exc}") from None
        return rendered.subject, rendered.text, rendered.html

    def _record(
        self,
        region: str,
        source: str,
        destination: dict[str, list[str]],
        rendered: tuple[str, str, str],
        headers: list[dict[str, str]] | None = None,
    ) -> str:
        from moto.ses.models import ses_backends

        subject, text, html = rendered
        mime = EmailMessage()
        mime["From"] = source
        for field, key in (("To", "ToAddresses"), ("Cc", "CcAddresses")):
            if destination.get(key):
                mime[field] = ", ".join(destination[key])
        mime["Subject"] = subject
        mime["Date"] = formatdate(usegmt=True)
        # The console orders captured mail by arrival; a Date header only has seconds.
        mime[RECEIVED_AT_HEADER] = repr(time.time())
        for header in headers or []:
            mime[header["Name"]] = header["Value"]
        mime.set_content(text or "")
        if html:
            mime.add_alternative(html, subtype="html")
        # moto adds the To and Cc header addresses itself; Bcc only travels in the envelope.
        bcc = list(destination.get("BccAddresses", []))
        backend = ses_backends[DEFAULT_ACCOUNT_ID][region]
        try:
            message = backend.send_raw_email(
                source=source, destinations=bcc, raw_data=mime.as_string()
            )
        except Exception as exc:  # moto's MessageRejected for an unverified sender
            raise _ApiError(400, "MessageRejected", str(exc)) from None
        return str(message.id)

    def _send_templated(self, request: dict[str, Any], region: str) -> dict[str, Any]:
        template = request["Content"]["Template"]
        rendered = self._render(template, str(template.get("TemplateData", "{}")))
        message_id = self._record(
            region,
            str(request.get("FromEmailAddress", "")),
            request.get("Destination") or {},
            rendered,
            template.get("Headers"),
        )
        return {"MessageId": message_id}

    def _send_simple(self, request: dict[str, Any], region: str) -> dict[str, Any]:
        simple = request["Content"]["Simple"]
        body = simple.get("Body") or {}
        rendered = (
            str((simple.get("Subject") or {}).get("Data", "")),
            str((body.get("Text") or {}).get("Data", "")),
            str((body.get("Html") or {}).get("Data", "")),
        )
        message_id = self._record(
            region,
            str(request.get("FromEmailAddress", "")),
            request.get("Destination") or {},
            rendered,
            simple.get("Headers"),
        )
        return {"MessageId": message_id}

    def _send_bulk(self, request: dict[str, Any], region: str) -> dict[str, Any]:
        template = (request.get("DefaultContent") or {}).get("Template") or {}
        default_data = str(template.get("TemplateData", "{}"))
        results = []
        for entry in request.get("BulkEmailEntries") or []:
            replacement = (entry.get("ReplacementEmailContent") or {}).get(
                "ReplacementTemplate"
            ) or {}
            data = replacement.get("ReplacementTemplateData") or default_data
            try:
                rendered = self._render(template, str(data))
                message_id = self._record(
                    region,
                    str(request.get("FromEmailAddress", "")),
                    entry.get("Destination") or {},
                    rendered,
                    template.get("Headers"),
                )
            except _ApiError as exc:
                results.append({"Status": "FAILED", "Error": exc.message})
            else:
                results.append({"Status": "SUCCESS", "MessageId": message_id})
        return {"BulkEmailEntryResults": results}


def _read_body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ.get("wsgi.input")
    return stream.read(length) if stream is not None and length > 0 else b""


def _json(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body or b"{}")
    except ValueError:
        raise _ApiError(400, "BadRequestException", "the body is not JSON") from None
    if not isinstance(parsed, dict):
        raise _ApiError(400, "BadRequestException", "the body is not a JSON object")
    return parsed


def _respond(
    start_response: Callable[..., Any],
    status: int,
    payload: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> list[bytes]:
    data = json.dumps(payload).encode()
    reasons = {200: "OK", 400: "Bad Request", 404: "Not Found"}
    start_response(
        f"{status} {reasons.get(status, 'Error')}",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("x-amzn-RequestId", str(uuid.uuid4())),
            *(headers or {}).items(),
        ],
    )
    return [data]
