"""A local HTTP endpoint speaking the SES v2 REST/JSON wire protocol.

It answers the operations moto does not implement (SendBulkEmail, templates, the
suppression list, GetAccount) plus SendEmail and identities, so the real botocore client,
with its real serializers, parsers and retry logic, runs unmodified against it through
``AWS_ENDPOINT_URL_SESV2`` or ``endpoint_url``.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

SEND_PATHS = {"/v2/email/outbound-emails", "/v2/email/outbound-bulk-emails"}


class SesError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class SesState:
    identities: dict[str, dict[str, Any]] = field(default_factory=dict)
    suppressed: dict[str, tuple[str, float]] = field(default_factory=dict)
    templates: dict[str, dict[str, str]] = field(default_factory=dict)
    sent: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    max_send_rate: float = 10_000.0
    sending_enabled: bool = True
    throttle_sends: int = 0
    """Answer the next N send calls with 429 TooManyRequestsException (-1: always)."""
    entry_statuses: dict[str, list[str]] = field(default_factory=dict)
    """Per recipient, statuses to report for its next bulk entries (then SUCCESS)."""
    record_sends: bool = True
    bulk_sizes: list[int] = field(default_factory=list)
    """Entries per accepted SendBulkEmail call."""
    delay: float = 0.0
    """Seconds to wait before answering each request (the deadline tests)."""
    unavailable_sends: int = 0
    """Answer the next N send calls with 503 ServiceUnavailable (-1: always)."""
    rejected: set[str] = field(default_factory=set)
    """Recipients whose messages are refused with 400 MessageRejected."""
    hold: threading.Event | None = None
    """When set, an accepted send is recorded, then its answer waits for this event."""
    rate_limit: float | None = None
    """Recipients per second ``SendEmail`` takes in any one-second window; over it: 429."""
    window: deque[float] = field(default_factory=deque)
    accepted_at: list[float] = field(default_factory=list)
    """When each accepted send arrived (time.monotonic(), one entry per recipient)."""
    throttled: int = 0
    """Sends answered 429 because of ``rate_limit``."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sends(self) -> int:
        """Send calls that reached the endpoint (accepted or not)."""
        return sum(self.count("POST", path) for path in SEND_PATHS)

    def peak_rate(self) -> int:
        """The most recipients accepted within any one-second window."""
        with self.lock:
            times = sorted(self.accepted_at)
        peak, start = 0, 0
        for end, moment in enumerate(times):
            while moment - times[start] >= 1.0:
                start += 1
            peak = max(peak, end - start + 1)
        return peak

    def count(self, method: str, path: str) -> int:
        with self.lock:
            return sum(1 for m, p in self.requests if m == method and p == path)

    def verify(self, identity: str) -> None:
        self.identities[identity.lower()] = {"verified": True, "tokens": _tokens()}


def _tokens() -> list[str]:
    return [uuid.uuid4().hex for _ in range(3)]


def _identity_type(name: str) -> str:
    return "EMAIL_ADDRESS" if "@" in name else "DOMAIN"


def _addr(value: str) -> str:
    from email.utils import parseaddr

    return parseaddr(value)[1].lower()


class _Handler(BaseHTTPRequestHandler):
    state: SesState
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _dispatch(self, method: str) -> None:
        url = urlparse(self.path)
        path = unquote(url.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else {}
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        state = self.state
        with state.lock:
            state.requests.append((method, path))
        if state.delay:
            time.sleep(state.delay)
        try:
            if path in SEND_PATHS and method == "POST":
                self._refuse_send(body)
            status, payload = self._route(method, path, body, query)
        except SesError as err:
            self._reply(err.status, {"message": err.message}, err.code)
            return
        if path in SEND_PATHS and method == "POST" and state.hold is not None:
            state.hold.wait(60)
        self._reply(status, payload)

    def _refuse_send(self, body: dict[str, Any]) -> None:
        """The injected refusals of a send call, in the order SES would check them."""
        state = self.state
        with state.lock:
            throttle, unavailable = state.throttle_sends, state.unavailable_sends
            if throttle > 0:
                state.throttle_sends -= 1
            elif unavailable > 0:
                state.unavailable_sends -= 1
        if throttle:
            raise SesError(429, "TooManyRequestsException", "Maximum sending rate exceeded.")
        if unavailable:
            raise SesError(503, "ServiceUnavailable", "Service is unavailable. Try again.")
        destination = body.get("Destination") or {}
        addresses = [
            _addr(a)
            for key in ("ToAddresses", "CcAddresses", "BccAddresses")
            for a in destination.get(key, [])
        ]
        refused = [a for a in addresses if a in state.rejected]
        if refused:
            raise SesError(400, "MessageRejected", f"Email address rejected: {refused[0]}")
        if state.rate_limit is None:
            return
        now = time.monotonic()
        with state.lock:
            while state.window and now - state.window[0] >= 1.0:
                state.window.popleft()
            if len(state.window) + len(addresses) > state.rate_limit:
                state.throttled += 1
                raise SesError(429, "TooManyRequestsException", "Maximum sending rate exceeded.")
            state.window.extend([now] * len(addresses))
            state.accepted_at.extend([now] * len(addresses))

    def _reply(self, status: int, payload: Any, error: str | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        if error:
            self.send_header("x-amzn-ErrorType", f"{error}:http://internal.amazon.com/")
        self.end_headers()
        self.wfile.write(data)

    do_GET = lambda self: self._dispatch("GET")  # noqa: E731
    do_POST = lambda self: self._dispatch("POST")  # noqa: E731
    do_PUT = lambda self: self._dispatch("PUT")  # noqa: E731
    do_DELETE = lambda self: self._dispatch("DELETE")  # noqa: E731

    # -- operations ------------------------------------------------------------------------

    def _route(
        self, method: str, path: str, body: dict[str, Any], query: dict[str, str]
    ) -> tuple[int, Any]:
        s = self.state
        if path == "/v2/email/account" and method == "GET":
            return 200, {
                "SendQuota": {
                    "Max24HourSend": 50000.0,
                    "MaxSendRate": s.max_send_rate,
                    "SentLast24Hours": float(len(s.sent)),
                },
                "SendingEnabled": s.sending_enabled,
                "ProductionAccessEnabled": True,
                "EnforcementStatus": "HEALTHY",
            }
        if path == "/v2/email/outbound-emails" and method == "POST":
            return 200, self._send(body)
        if path == "/v2/email/outbound-bulk-emails" and method == "POST":
            return 200, self._send_bulk(body)
        if path == "/v2/email/suppression/addresses":
            if method == "PUT":
                if body.get("Reason") not in ("BOUNCE", "COMPLAINT"):
                    raise SesError(400, "BadRequestException", "Reason must be BOUNCE|COMPLAINT")
                with s.lock:
                    s.suppressed[body["EmailAddress"].lower()] = (body["Reason"], time.time())
                return 200, {}
            if method == "GET":
                return 200, self._list_suppressed(query)
        if path.startswith("/v2/email/suppression/addresses/"):
            address = path.rsplit("/", 1)[1].lower()
            with s.lock:
                entry = s.suppressed.get(address)
                if entry is None:
                    raise SesError(404, "NotFoundException", f"{address} is not suppressed")
                if method == "DELETE":
                    del s.suppressed[address]
                    return 200, {}
            return 200, {
                "SuppressedDestination": {
                    "EmailAddress": address,
                    "Reason": entry[0],
                    "LastUpdateTime": entry[1],
                }
            }
        if path == "/v2/email/identities" and method == "POST":
            name = body["EmailIdentity"].lower()
            with s.lock:
                if name in s.identities:
                    raise SesError(400, "AlreadyExistsException", f"{name} already exists")
                s.identities[name] = {"verified": False, "tokens": _tokens()}
            return 200, self._identity(name, full=False)
        if path == "/v2/email/list-identities" and method == "POST":
            with s.lock:
                names = sorted(s.identities)
            return 200, {
                "EmailIdentities": [
                    {
                        "IdentityType": _identity_type(n),
                        "IdentityName": n,
                        "SendingEnabled": s.identities[n]["verified"],
                        "VerificationStatus": "SUCCESS"
                        if s.identities[n]["verified"]
                        else "PENDING",
                    }
                    for n in names
                ]
            }
        if path.startswith("/v2/email/identities/") and path.endswith("/mail-from"):
            name = path.split("/")[4].lower()
            if name not in s.identities or method != "PUT":
                raise SesError(404, "NotFoundException", f"{name} does not exist")
            s.identities[name]["mail_from"] = body["MailFromDomain"]
            return 200, {}
        if path.startswith("/v2/email/identities/") and method == "GET":
            name = path.rsplit("/", 1)[1].lower()
            if name not in s.identities:
                raise SesError(404, "NotFoundException", f"{name} does not exist")
            return 200, self._identity(name, full=True)
        if path == "/v2/email/templates" and method == "POST":
            s.templates[body["TemplateName"]] = body["TemplateContent"]
            return 200, {}
        if path.startswith("/v2/email/templates/") and method == "GET":
            name = path.rsplit("/", 1)[1]
            if name not in s.templates:
                raise SesError(404, "NotFoundException", f"Template {name} does not exist")
            return 200, {"TemplateName": name, "TemplateContent": s.templates[name]}
        raise SesError(404, "NotFoundException", f"no route {method} {path}")

    def _identity(self, name: str, *, full: bool) -> dict[str, Any]:
        ident = self.state.identities[name]
        status = "SUCCESS" if ident["verified"] else "PENDING"
        out: dict[str, Any] = {
            "IdentityType": _identity_type(name),
            "VerifiedForSendingStatus": ident["verified"],
            "DkimAttributes": {
                "SigningEnabled": True,
                "Status": status,
                "Tokens": ident["tokens"],
                "SigningAttributesOrigin": "AWS_SES",
            },
        }
        if full:
            out["VerificationStatus"] = status
            if ident.get("mail_from"):
                out["MailFromAttributes"] = {
                    "MailFromDomain": ident["mail_from"],
                    "MailFromDomainStatus": "PENDING",
                    "BehaviorOnMxFailure": "USE_DEFAULT_VALUE",
                }
        return out

    def _check_sender(self, sender: str) -> None:
        address = _addr(sender)
        domain = address.rpartition("@")[2]
        ok = any(self.state.identities.get(n, {}).get("verified") for n in (address, domain))
        if not ok:
            raise SesError(
                400,
                "MessageRejected",
                "Email address is not verified. The following identities failed the check "
                f"in region US-EAST-1: {address}",
            )

    def _send(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_sender(body["FromEmailAddress"])
        content = body["Content"]
        if "Template" in content:
            name = content["Template"].get("TemplateName")
            if name not in self.state.templates:
                raise SesError(404, "NotFoundException", f"Template {name} does not exist")
        if "Raw" in content:
            content = {"Raw": {"Data": base64.b64decode(content["Raw"]["Data"])}}
        message_id = f"0100{uuid.uuid4().hex}-000000"
        if self.state.record_sends:
            with self.state.lock:
                self.state.sent.append({**body, "Content": content, "MessageId": message_id})
        return {"MessageId": message_id}

    def _send_bulk(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_sender(body["FromEmailAddress"])
        entries = body["BulkEmailEntries"]
        if not 1 <= len(entries) <= 50:
            raise SesError(400, "BadRequestException", "1 to 50 BulkEmailEntries")
        with self.state.lock:
            self.state.bulk_sizes.append(len(entries))
        template = body["DefaultContent"]["Template"]
        name = template.get("TemplateName")
        if name is not None and name not in self.state.templates:
            raise SesError(404, "NotFoundException", f"Template {name} does not exist")
        results = []
        for entry in entries:
            dest = entry["Destination"]
            first = _addr(
                (dest.get("ToAddresses") or dest.get("CcAddresses") or dest["BccAddresses"])[0]
            )
            with self.state.lock:
                queue = self.state.entry_statuses.get(first)
                status = queue.pop(0) if queue else "SUCCESS"
            if status == "SUCCESS":
                message_id = f"0100{uuid.uuid4().hex}-000000"
                results.append({"Status": "SUCCESS", "MessageId": message_id})
                if self.state.record_sends:
                    with self.state.lock:
                        self.state.sent.append(
                            {
                                "FromEmailAddress": body["FromEmailAddress"],
                                "Destination": dest,
                                "Template": template,
                                "Entry": entry,
                                "ConfigurationSetName": body.get("ConfigurationSetName"),
                                "MessageId": message_id,
                            }
                        )
            else:
                results.append({"Status": status, "Error": f"simulated {status}"})
        return {"BulkEmailEntryResults": results}

    def _list_suppressed(self, query: dict[str, str]) -> dict[str, Any]:
        size = int(query.get("PageSize", "1000"))
        start = int(query.get("NextToken", "0"))
        with self.state.lock:
            items = sorted(self.state.suppressed.items())
        page = items[start : start + size]
        out: dict[str, Any] = {
            "SuppressedDestinationSummaries": [
                {"EmailAddress": a, "Reason": r, "LastUpdateTime": t} for a, (r, t) in page
            ]
        }
        if start + size < len(items):
            out["NextToken"] = str(start + size)
        return out


class SesServer:
    """The endpoint on a free loopback port: ``url``, ``state``; use as a context manager."""

    def __init__(self) -> None:
        self.state = SesState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> SesServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        fresh = SesState()
        for name in (
            "identities",
            "suppressed",
            "templates",
            "sent",
            "requests",
            "entry_statuses",
            "bulk_sizes",
            "rejected",
            "accepted_at",
            "window",
        ):
            getattr(self.state, name).clear()
        self.state.max_send_rate = fresh.max_send_rate
        self.state.sending_enabled = True
        self.state.throttle_sends = 0
        self.state.record_sends = True
        self.state.delay = 0.0
        self.state.unavailable_sends = 0
        self.state.hold = None
        self.state.rate_limit = None
        self.state.throttled = 0


@contextmanager
def running_ses_server() -> Iterator[SesServer]:
    server = SesServer().start()
    try:
        yield server
    finally:
        server.stop()
