"""A local endpoint speaking SendGrid's v3 Web API (mail/send, domain authentication,
verified senders, suppressions), with its documented limits, errors and rate-limit headers.

``POST /v3/mail/send`` answers 202 with an empty body and ``X-Message-Id``, as SendGrid
does: nothing per recipient.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.runtime.email.api_server import ApiHandler, ApiServer, ApiState, Recorded, Reply

API_KEY = "SG.test-key.0123456789"
_RESERVED = {"x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type", "from", "to",
             "cc", "bcc", "subject", "reply-to", "content-transfer-encoding", "date"}  # fmt: skip


def errors(status: int, *messages: str, **headers: str) -> Reply:
    return Reply(status, {"errors": [{"message": m, "field": None} for m in messages]}, headers)


@dataclass
class SendGridState(ApiState):
    mails: list[dict[str, Any]] = field(default_factory=list)
    """Accepted mail/send bodies, each with its X-Message-Id under ``_id``."""
    domains: list[dict[str, Any]] = field(default_factory=list)
    senders: list[dict[str, Any]] = field(default_factory=list)
    suppressions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    group_suppressions: list[dict[str, Any]] = field(default_factory=list)
    throttle: int = 0
    reset_in: int = 0
    server_errors: int = 0

    def verify(self, name: str) -> None:
        self.domains.append(_domain(len(self.domains) + 1, name, valid=True))

    def batch_sizes(self) -> list[int]:
        return [len(m["personalizations"]) for m in self.mails]

    def reset(self) -> None:
        fresh = SendGridState()
        with self.lock:
            for name, value in vars(fresh).items():
                if name != "lock":
                    setattr(self, name, value)


def _domain(number: int, name: str, *, valid: bool) -> dict[str, Any]:
    user = 1234567
    return {
        "id": number,
        "user_id": user,
        "subdomain": f"em{1000 + number}",
        "domain": name,
        "username": "milequest",
        "ips": [],
        "custom_spf": False,
        "default": False,
        "legacy": False,
        "automatic_security": True,
        "valid": valid,
        "dns": {
            "mail_cname": {
                "valid": valid,
                "type": "cname",
                "host": f"em{1000 + number}.{name}",
                "data": f"u{user}.wl.sendgrid.net",
            },
            "dkim1": {
                "valid": valid,
                "type": "cname",
                "host": f"s1._domainkey.{name}",
                "data": f"s1.domainkey.u{user}.wl.sendgrid.net",
            },
            "dkim2": {
                "valid": valid,
                "type": "cname",
                "host": f"s2._domainkey.{name}",
                "data": f"s2.domainkey.u{user}.wl.sendgrid.net",
            },
        },
    }


class SendGridHandler(ApiHandler[SendGridState]):
    def route(self, request: Recorded) -> Reply:
        s = self.state
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            raise errors(401, "The provided authorization grant is invalid, expired, or revoked")
        if not request.path.startswith("/v3/"):
            raise errors(404, "not found")
        with s.lock:
            throttled = s.throttle > 0
            s.throttle -= 1 if throttled else 0
        if throttled:
            raise errors(
                429,
                "too many requests",
                **{
                    "X-RateLimit-Limit": "600",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(int(time.time()) + s.reset_in),
                },
            )
        path, method = request.path[3:], request.method
        if path == "/mail/send" and method == "POST":
            return self._mail(request.body)
        if path == "/whitelabel/domains" and method == "GET":
            wanted = request.query.get("domain")
            return Reply(200, [d for d in s.domains if wanted in (None, d["domain"])])
        if path == "/whitelabel/domains" and method == "POST":
            name = (request.body or {}).get("domain")
            if any(d["domain"] == name for d in s.domains):
                raise errors(400, "A domain authentication for this domain already exists")
            s.domains.append(_domain(len(s.domains) + 1, str(name), valid=False))
            return Reply(201, s.domains[-1])
        if path.startswith("/whitelabel/domains/") and path.endswith("/validate"):
            number = int(path.split("/")[3])
            found = next((d for d in s.domains if d["id"] == number), None)
            if found is None:
                raise errors(404, "authenticated domain not found")
            return Reply(200, {"id": number, "valid": found["valid"], "validation_results": {}})
        if path == "/verified_senders" and method == "GET":
            return Reply(200, {"results": s.senders})
        if path in s.suppressions or path.startswith("/suppression/"):
            items = s.suppressions.get(path, [])
            offset, limit = (
                int(request.query.get("offset", 0)),
                int(request.query.get("limit", 500)),
            )
            return Reply(200, items[offset : offset + limit])
        if path == "/asm/suppressions" and method == "GET":
            return Reply(200, s.group_suppressions)
        raise errors(404, "not found")

    def _mail(self, body: Any) -> Reply:
        s = self.state
        problem = self._problem(body)
        if problem:
            raise errors(400, problem)
        sender = body["from"]["email"].lower()
        domain = sender.rpartition("@")[2]
        if not any(d["domain"] == domain and d["valid"] for d in s.domains) and not any(
            x["from_email"].lower() == sender and x["verified"] for x in s.senders
        ):
            raise errors(
                403,
                "The from address does not match a verified Sender Identity. Mail cannot be "
                "sent until this error is resolved.",
            )
        message_id = uuid.uuid4().hex[:22]
        with s.lock:
            s.mails.append({**body, "_id": message_id})
            failing = s.server_errors > 0
            s.server_errors -= 1 if failing else 0
        if failing:
            raise errors(500, "internal error")
        return Reply(202, None, {"X-Message-Id": message_id})

    def _problem(self, body: Any) -> str | None:
        """SendGrid's checks (its documented 400 messages) that matter here."""
        if not isinstance(body, dict):
            return "Bad Request"
        people = body.get("personalizations")
        if not isinstance(people, list) or not people:
            return "You must have at least one personalization."
        if len(people) > 1000:
            return (
                "The personalization block is limited to 1000 personalizations per API "
                f"request. You have provided {len(people)} personalizations."
            )
        seen: list[str] = []
        for item in people:
            if not item.get("to"):
                return "The to parameter is required for all personalization objects."
            for kind in ("to", "cc", "bcc"):
                for person in item.get(kind) or []:
                    if not isinstance(person, dict) or not person.get("email"):
                        return "Each to object must at least have an email address."
                    seen.append(person["email"].lower())
            for name, value in (item.get("headers") or {}).items():
                if name.lower() in _RESERVED or not isinstance(value, str):
                    return f"The header {name} is reserved or not a string."
            if not all(isinstance(v, str) for v in (item.get("custom_args") or {}).values()):
                return "custom_args values must be strings."
        if len(seen) > 1000:
            return "There is a limit of 1000 total recipients (to + cc + bcc) per request."
        if len(set(seen)) != len(seen):
            return (
                "Each unique email address in the personalizations array should only be "
                "included once."
            )
        if not (body.get("from") or {}).get("email"):
            return "The from object must be provided for every email send."
        if not body.get("subject") and not all(p.get("subject") for p in people):
            return "The subject is required."
        content = body.get("content") or []
        if not content or any(not c.get("value") for c in content):
            return "Unless a valid template_id is provided, the content parameter is required."
        types = [c.get("type") for c in content]
        if "text/plain" in types and types[0] != "text/plain":
            return "If present, text/plain must be first, followed by any other content."
        for name in body.get("headers") or {}:
            if name.lower() in _RESERVED:
                return f"The header {name} is reserved."
        for attachment in body.get("attachments") or []:
            try:
                base64.b64decode(attachment["content"], validate=True)
            except (KeyError, TypeError, binascii.Error):
                return "The attachment content must be base64 encoded."
            if not attachment.get("filename"):
                return "The attachment filename parameter is required."
        if len(body.get("categories") or []) > 10:
            return "You may not have more than 10 categories per request."
        return None


def sendgrid_server() -> ApiServer[SendGridState]:
    return ApiServer(SendGridHandler, SendGridState())
