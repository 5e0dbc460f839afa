"""A local endpoint speaking Resend's documented REST API (https://resend.com/docs/api-reference).

It checks what Resend checks that matters here (the bearer key, the request shapes, batch
limits and validation modes, idempotency keys) and answers with Resend's documented bodies
and headers, including 429 with ``ratelimit-*`` / ``retry-after`` and error names.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any

from tests.runtime.email.api_server import ApiHandler, ApiServer, ApiState, Recorded, Reply

API_KEY = "re_test_0123456789"
_TAG = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_EMAIL_KEYS = {
    "from",
    "to",
    "subject",
    "cc",
    "bcc",
    "reply_to",
    "html",
    "text",
    "headers",
    "attachments",
    "tags",
    "scheduled_at",
}


def error(status: int, name: str, message: str, **headers: str) -> Reply:
    return Reply(status, {"statusCode": status, "name": name, "message": message}, headers)


@dataclass
class ResendState(ApiState):
    sent: list[dict[str, Any]] = field(default_factory=list)
    domains: dict[str, dict[str, Any]] = field(default_factory=dict)
    suppressions: list[dict[str, Any]] = field(default_factory=list)
    invalid_recipients: set[str] = field(default_factory=set)
    """Emails to these addresses fail Resend's validation (batch modes, single sends)."""
    throttle: int = 0
    """Answer the next N requests 429 rate_limit_exceeded."""
    retry_after: str = "0"
    daily_quota_exceeded: bool = False
    server_errors: int = 0
    """Answer the next N sends 500 *after* accepting them (the idempotency-key case)."""
    unavailable: int = 0
    """Answer the next N sends 503 before looking at them."""
    idempotent: dict[str, tuple[int, Any]] = field(default_factory=dict)

    def verify(self, name: str) -> None:
        self.domains[name] = _domain(name, "verified")

    def batch_sizes(self) -> list[int]:
        """Emails per accepted send call, single sends included (as 1)."""
        sizes = []
        for request in self.requests:
            if request.method == "POST" and request.path == "/emails/batch":
                sizes.append(len(request.body))
            elif request.method == "POST" and request.path == "/emails":
                sizes.append(1)
        return sizes

    def reset(self) -> None:
        fresh = ResendState()
        with self.lock:
            for name, value in vars(fresh).items():
                if name != "lock":
                    setattr(self, name, value)


def _domain(name: str, status: str) -> dict[str, Any]:
    return {
        "object": "domain",
        "id": str(uuid.uuid4()),
        "name": name,
        "status": status,
        "created_at": "2024-01-01T00:00:00.000Z",
        "region": "us-east-1",
        "records": [
            {
                "record": "SPF",
                "name": "send",
                "type": "MX",
                "ttl": "Auto",
                "status": status,
                "value": "feedback-smtp.us-east-1.amazonses.com",
                "priority": 10,
            },
            {
                "record": "SPF",
                "name": "send",
                "value": '"v=spf1 include:amazonses.com ~all"',
                "type": "TXT",
                "ttl": "Auto",
                "status": status,
            },
            {
                "record": "DKIM",
                "name": "resend._domainkey",
                "value": "p=" + "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDsc4Lh8xilsngyKEgN2S84" * 3,
                "type": "TXT",
                "status": status,
                "ttl": "Auto",
            },
        ],
    }


class ResendHandler(ApiHandler[ResendState]):
    def route(self, request: Recorded) -> Reply:
        s = self.state
        auth = request.headers.get("authorization", "")
        if not auth:
            raise error(401, "missing_api_key", "Missing API key in the authorization header.")
        if auth != f"Bearer {API_KEY}":
            raise error(403, "invalid_api_key", "API key is invalid.")
        with s.lock:
            throttled = s.throttle > 0
            s.throttle -= 1 if throttled else 0
        if throttled:
            raise error(
                429,
                "rate_limit_exceeded",
                "Too many requests. You can only make 2 requests per second.",
                **{
                    "ratelimit-limit": "2",
                    "ratelimit-remaining": "0",
                    "ratelimit-reset": s.retry_after,
                    "retry-after": s.retry_after,
                },
            )
        path, method = request.path, request.method
        if path in ("/emails", "/emails/batch") and method == "POST":
            return self._send(request)
        if path == "/domains" and method == "GET":
            return Reply(200, {"object": "list", "has_more": False, "data": self._domains()})
        if path == "/domains" and method == "POST":
            name = (request.body or {}).get("name")
            if not isinstance(name, str) or not name:
                raise error(422, "validation_error", "The `name` field is required.")
            if name in s.domains:
                raise error(403, "validation_error", f"The domain {name} is already registered.")
            s.domains[name] = _domain(name, "not_started")
            return Reply(200, s.domains[name])
        if path.startswith("/domains/"):
            parts = path.split("/")
            found = next((d for d in s.domains.values() if d["id"] == parts[2]), None)
            if found is None:
                raise error(404, "not_found", "Domain not found")
            if len(parts) == 4 and parts[3] == "verify" and method == "POST":
                found["status"] = "pending"
                return Reply(200, {"object": "domain", "id": found["id"]})
            if len(parts) == 3 and method == "GET":
                return Reply(200, found)
        if path == "/suppressions" and method == "GET":
            return Reply(200, {"object": "list", "has_more": False, "data": s.suppressions})
        raise error(404, "not_found", "The requested endpoint does not exist.")

    def _domains(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in d.items() if k != "records"} for d in self.state.domains.values()]

    def _send(self, request: Recorded) -> Reply:
        s = self.state
        with s.lock:
            down = s.unavailable > 0
            s.unavailable -= 1 if down else 0
        if down:
            raise error(503, "internal_server_error", "Service unavailable.")
        key = request.headers.get("idempotency-key")
        if key is not None:
            if not 1 <= len(key) <= 256:
                raise error(400, "invalid_idempotency_key", "The key must be between 1-256 chars.")
            with s.lock:
                if key in s.idempotent:
                    status, body = s.idempotent[key]
                    return Reply(status, body)
        if s.daily_quota_exceeded:
            raise error(429, "daily_quota_exceeded", "You have reached your daily email quota.")
        batch = request.path == "/emails/batch"
        mode = request.headers.get("x-batch-validation", "strict")
        if batch:
            if mode not in ("strict", "permissive"):
                raise error(422, "validation_error", "Invalid x-batch-validation header.")
            if not isinstance(request.body, list) or not 1 <= len(request.body) <= 100:
                raise error(422, "validation_error", "A batch holds 1 to 100 emails.")
            emails = request.body
        else:
            emails = [request.body]
        for email in emails:
            sender = parseaddr(str((email or {}).get("from", "")))[1].lower()
            domain = s.domains.get(sender.rpartition("@")[2])
            if domain is None or domain["status"] != "verified":
                raise error(
                    403,
                    "validation_error",
                    f"The {sender.rpartition('@')[2]} domain is not verified. Please, add and "
                    "verify your domain on https://resend.com/domains",
                )
        problems = {i: self._problem(e, batch) for i, e in enumerate(emails)}
        problems = {i: p for i, p in problems.items() if p}
        if problems and (not batch or mode == "strict"):
            raise error(422, "validation_error", next(iter(problems.values())))
        data = []
        for index, email in enumerate(emails):
            if index in problems:
                continue
            email_id = str(uuid.uuid4())
            with s.lock:
                s.sent.append({**email, "id": email_id})
            data.append({"id": email_id})
        if batch:
            body: Any = {"data": data}
            if mode == "permissive":
                body["errors"] = [{"index": i, "message": m} for i, m in problems.items()]
        else:
            body = data[0]
        with s.lock:
            if key is not None:
                s.idempotent[key] = (200, body)
            failing = s.server_errors > 0
            s.server_errors -= 1 if failing else 0
        if failing:
            raise error(500, "application_error", "An unexpected error occurred.")
        return Reply(200, body)

    def _problem(self, email: Any, batch: bool) -> str | None:
        """Resend's validation of one email, as the message it would answer."""
        if not isinstance(email, dict):
            return "Invalid email object."
        unknown = set(email) - _EMAIL_KEYS
        if unknown:
            return f"Unknown field(s): {', '.join(sorted(unknown))}"
        for name in ("from", "to", "subject"):
            if not email.get(name):
                return f"The `{name}` field is missing."
        if not isinstance(email["to"], list) or len(email["to"]) > 50:
            return "The `to` field must be a list of at most 50 addresses."
        if not email.get("html") and not email.get("text"):
            return "The `html` or `text` field is missing."
        if batch and email.get("attachments"):
            return "Attachments are not supported in batch emails."
        for item in email.get("attachments") or []:
            try:
                base64.b64decode(item["content"], validate=True)
            except (KeyError, TypeError, binascii.Error):
                return "Attachment must have either a content or path."
            if not item.get("filename"):
                return "Attachment must have a filename."
        headers = email.get("headers") or {}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            return "Header names and values must be strings."
        for tag in email.get("tags") or []:
            if not (_TAG.match(tag.get("name", "")) and _TAG.match(tag.get("value", ""))):
                return "Tags only contain ASCII letters, numbers, underscores or dashes."
        everyone = [*email["to"], *(email.get("cc") or []), *(email.get("bcc") or [])]
        bad = [a for a in everyone if a.lower() in self.state.invalid_recipients]
        if bad:
            return f"Invalid `to` field. The email address needs to follow the format: {bad[0]}"
        return None


def resend_server() -> ApiServer[ResendState]:
    return ApiServer(ResendHandler, ResendState())
