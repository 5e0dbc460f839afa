"""Local HTTP servers speaking the providers' wire protocols, for the tests."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import ssl
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

_CONNECTIONS_PATH = re.compile(r"\A/(?P<stage>[^/]+)/@connections/(?P<id>[^/?]+)\Z")
_AUTHORIZATION = re.compile(
    r"\AAWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
    r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})\Z"
)


@dataclass
class ConnectionsState:
    """What the local ``@connections`` endpoint knows and saw."""

    posts: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    gone: set[str] = field(default_factory=set)
    bare_gone: set[str] = field(default_factory=set)
    throttle: dict[str, int] = field(default_factory=dict)
    not_yet: dict[str, int] = field(default_factory=dict)
    """Connections answering 410 to their next N calls (``$connect`` not yet returned)."""
    deleted: list[str] = field(default_factory=list)
    forbid: bool = False
    fail: dict[str, int] = field(default_factory=dict)
    """Connections answering 500 to their next N calls."""
    latency: float = 0.0
    """Seconds each request waits before it is answered."""
    keys: dict[str, str] = field(default_factory=dict)
    """Access key -> secret: when set, every request must carry a valid SigV4 signature."""
    signatures: list[tuple[str, str]] = field(default_factory=list)
    """(access key, signature) of every signed request, in arrival order."""
    tries: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """Requests per connection id, whatever they were answered."""
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.posts.clear()
            self.gone.clear()
            self.bare_gone.clear()
            self.throttle.clear()
            self.not_yet.clear()
            self.deleted.clear()
            self.forbid = False
            self.fail.clear()
            self.latency = 0.0
            self.keys.clear()
            self.signatures.clear()
            self.tries.clear()
            self.requests = 0

    def frames(self, connection_id: str) -> list[dict[str, Any]]:
        """What the connection was sent, ``data`` decoded from its JSON string."""
        with self.lock:
            raw = [json.loads(b) for b in self.posts.get(connection_id, [])]
        for frame in raw:
            if isinstance(frame.get("data"), str):
                with contextlib.suppress(ValueError):
                    frame["data"] = json.loads(frame["data"])
        return raw


class _ConnectionsHandler(BaseHTTPRequestHandler):
    """API Gateway's management API: POST/GET/DELETE /{stage}/@connections/{id}.

    Answers 410 ``GoneException`` for closed connections and 429
    ``LimitExceededException`` (as AWS does, with ``x-amzn-ErrorType``) while throttled,
    500 while failing, and 403 to a request whose SigV4 signature does not verify against
    ``state.keys`` (when set).
    """

    protocol_version = "HTTP/1.1"
    server: _ConnectionsServer

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _answer(self, status: int, body: dict[str, Any] | None = None, error: str = "") -> None:
        raw = json.dumps(body or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        if error:
            self.send_header("x-amzn-ErrorType", error)
        self.end_headers()
        self.wfile.write(raw)

    def _route(self, body: bytes = b"") -> str | None:
        match = _CONNECTIONS_PATH.match(urlsplit(self.path).path)
        if match is None:
            self._answer(404, {"message": "Not Found"})
            return None
        state = self.server.state
        connection_id = unquote(match.group("id"))
        with state.lock:
            state.requests += 1
            state.tries[connection_id] += 1
        if state.latency:
            time.sleep(state.latency)
        problem = self._signature_problem(body) if state.keys else None
        with state.lock:
            if state.forbid or problem:
                self._answer(403, {"message": problem or "Forbidden"}, "ForbiddenException")
                return None
            if state.fail.get(connection_id, 0) > 0:
                state.fail[connection_id] -= 1
                self._answer(500, {"message": "Internal server error"})
                return None
            if state.throttle.get(connection_id, 0) > 0:
                state.throttle[connection_id] -= 1
                self._answer(429, {"message": "Rate exceeded"}, "LimitExceededException")
                return None
            if state.not_yet.get(connection_id, 0) > 0:
                state.not_yet[connection_id] -= 1
                self._answer(410, {"message": "Gone"}, "GoneException")
                return None
            if connection_id in state.gone:
                self._answer(410, {"message": "Gone"}, "GoneException")
                return None
            if connection_id in state.bare_gone:  # a 410 without an error type
                self._answer(410, {"message": "Gone"})
                return None
        return connection_id

    def _signature_problem(self, body: bytes) -> str | None:
        """Why the request's SigV4 signature is not valid for ``state.keys``, or None.

        The signature is computed again over what arrived (method, path, signed headers,
        body) with the secret of the access key it names.
        """
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        found = _AUTHORIZATION.match(self.headers.get("Authorization", ""))
        if found is None:
            return "Missing Authentication Token"
        key, day, region, service, names, signature = found.groups()
        secret = self.server.state.keys.get(key)
        if secret is None:
            return f"The security token included in the request is invalid ({key})"
        headers = {name: self.headers.get(name, "") for name in names.split(";")}
        claimed = self.headers.get("X-Amz-Content-SHA256")
        if claimed is not None and claimed != hashlib.sha256(body).hexdigest():
            return "The provided x-amz-content-sha256 header does not match what was computed"
        request = AWSRequest(
            self.command, f"http://{self.headers['Host']}{self.path}", data=body, headers=headers
        )
        timestamp = self.headers.get("X-Amz-Date", "")
        request.context["timestamp"] = timestamp
        signer = SigV4Auth(Credentials(key, secret), service, region)
        expected = signer.signature(
            signer.string_to_sign(request, signer.canonical_request(request)), request
        )
        with self.server.state.lock:
            self.server.state.signatures.append((key, signature))
        if not timestamp.startswith(day) or not hmac.compare_digest(expected, signature):
            return "The request signature we calculated does not match the signature you provided"
        return None

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(length)
        connection_id = self._route(data)
        if connection_id is None:
            return
        with self.server.state.lock:
            self.server.state.posts[connection_id].append(data)
        self._answer(200)

    def do_GET(self) -> None:
        connection_id = self._route()
        if connection_id is not None:
            self._answer(200, {"connectedAt": "2024-01-01T00:00:00Z", "identity": {}})

    def do_DELETE(self) -> None:
        connection_id = self._route()
        if connection_id is not None:
            with self.server.state.lock:
                self.server.state.gone.add(connection_id)
                self.server.state.deleted.append(connection_id)
            self._answer(204)


class _ConnectionsServer(ThreadingHTTPServer):
    daemon_threads = True
    state: ConnectionsState

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client closing its pooled keep-alive connections is not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LocalServer:
    """A threaded HTTP server on a free loopback port, stopped by :meth:`stop`."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.server = server
        self.thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_connections_endpoint(
    tls: ssl.SSLContext | None = None,
) -> tuple[LocalServer, ConnectionsState]:
    server = _ConnectionsServer(("127.0.0.1", 0), _ConnectionsHandler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.state = ConnectionsState()
    return LocalServer(server), server.state


# -- Pusher REST API ---------------------------------------------------------------------------


@dataclass
class PusherState:
    """A Pusher app as the local server models it: subscribers and what they received."""

    app_id: str
    key: str
    secret: str
    max_payload: int = 10 * 1024
    # channel -> socket_id -> user_id (presence) or None
    channels: dict[str, dict[str, str | None]] = field(default_factory=dict)
    received: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    requests: list[tuple[str, str]] = field(default_factory=list)
    rejected_signatures: int = 0
    fail_status: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.channels.clear()
            self.received.clear()
            self.requests.clear()
            self.rejected_signatures = 0
            self.fail_status = None

    def count(self, path_suffix: str) -> int:
        with self.lock:
            return sum(1 for _, p in self.requests if p.endswith(path_suffix))


class _PusherHandler(BaseHTTPRequestHandler):
    """The REST endpoints the provider uses, with Pusher's request-signature check."""

    protocol_version = "HTTP/1.1"
    server: _PusherServer

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _answer(self, status: int, body: Any) -> None:
        raw = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _verified(self, body: bytes) -> tuple[str, dict[str, str]] | None:
        state = self.server.state
        parts = urlsplit(self.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        signature = params.pop("auth_signature", "")
        to_sign = "\n".join(
            [self.command, parts.path, "&".join(f"{k}={v}" for k, v in sorted(params.items()))]
        )
        expected = hmac.new(state.secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
        fresh = abs(time.time() - float(params.get("auth_timestamp", "0"))) < 600
        md5_ok = (
            params.get("body_md5", hashlib.md5(b"").hexdigest()) == hashlib.md5(body).hexdigest()
        )
        if not (
            params.get("auth_key") == state.key
            and params.get("auth_version") == "1.0"
            and fresh
            and md5_ok
            and hmac.compare_digest(signature, expected)
        ):
            with state.lock:
                state.rejected_signatures += 1
            self._answer(401, "Invalid signature: you should have sent HmacSHA256Hex(...)")
            return None
        with state.lock:
            state.requests.append((self.command, parts.path))
        return parts.path, params

    def _deliver(self, channel: str, name: str, data: str, socket_id: str | None) -> None:
        state = self.server.state
        try:
            value = json.loads(data)
        except ValueError:
            value = data
        for sid in state.channels.get(channel, {}):
            if sid != socket_id:
                state.received[sid].append({"event": name, "channel": channel, "data": value})

    def _check_event(self, name: str, data: str) -> str | None:
        if len(name) > 200:
            return "event name too long"
        if len(data.encode()) > self.server.state.max_payload:
            return "413"
        return None

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        verified = self._verified(body)
        if verified is None:
            return
        path, _ = verified
        state = self.server.state
        if state.fail_status:
            self._answer(state.fail_status, "injected failure")
            return
        payload = json.loads(body)
        prefix = f"/apps/{state.app_id}"
        if path == f"{prefix}/events":
            if len(payload["channels"]) > 100:
                self._answer(400, "too many channels")
                return
            problem = self._check_event(payload["name"], payload["data"])
            if problem:
                self._answer(413 if problem == "413" else 400, problem)
                return
            with state.lock:
                for channel in payload["channels"]:
                    self._deliver(
                        channel, payload["name"], payload["data"], payload.get("socket_id")
                    )
            self._answer(200, {})
        elif path == f"{prefix}/batch_events":
            if len(payload["batch"]) > 10:
                self._answer(400, "batch too large")
                return
            for event in payload["batch"]:
                problem = self._check_event(event["name"], event["data"])
                if problem:
                    self._answer(413 if problem == "413" else 400, problem)
                    return
            with state.lock:
                for event in payload["batch"]:
                    self._deliver(
                        event["channel"], event["name"], event["data"], event.get("socket_id")
                    )
            self._answer(200, {"batch": [{} for _ in payload["batch"]]})
        elif path.startswith(f"{prefix}/users/") and path.endswith("/terminate_connections"):
            user_id = path[len(f"{prefix}/users/") : -len("/terminate_connections")]
            with state.lock:
                state.channels.pop(f"#server-to-user-{user_id}", None)
            self._answer(200, {})
        else:
            self._answer(404, "not found")

    def do_GET(self) -> None:
        verified = self._verified(b"")
        if verified is None:
            return
        path, params = verified
        state = self.server.state
        if state.fail_status:
            self._answer(state.fail_status, "injected failure")
            return
        prefix = f"/apps/{state.app_id}/channels"
        info = set(filter(None, params.get("info", "").split(",")))
        with state.lock:
            if path == prefix:
                wanted = params.get("filter_by_prefix", "")
                if "user_count" in info and wanted != "presence-":
                    self._answer(400, "user_count needs filter_by_prefix=presence-")
                    return
                occupied = {
                    c: {"user_count": len({u for u in subs.values() if u})}
                    if "user_count" in info
                    else {}
                    for c, subs in state.channels.items()
                    if subs and c.startswith(wanted) and not c.startswith("#")
                }
                self._answer(200, {"channels": occupied})
                return
            rest = path[len(prefix) + 1 :] if path.startswith(prefix + "/") else ""
            channel, _, tail = rest.partition("/")
            subs = state.channels.get(channel, {})
            presence = channel.startswith("presence-")
            if tail == "users":
                if not presence:
                    self._answer(400, "users only for presence channels")
                    return
                users = sorted({u for u in subs.values() if u})
                self._answer(200, {"users": [{"id": u} for u in users]})
                return
            if not channel or tail:
                self._answer(404, "not found")
                return
            if "user_count" in info and not presence:
                self._answer(400, "user_count only for presence channels")
                return
            answer: dict[str, Any] = {"occupied": bool(subs)}
            if "subscription_count" in info:
                answer["subscription_count"] = len(subs)
            if "user_count" in info:
                answer["user_count"] = len({u for u in subs.values() if u})
            self._answer(200, answer)


class _PusherServer(ThreadingHTTPServer):
    daemon_threads = True
    state: PusherState


def start_pusher_server(app_id: str, key: str, secret: str) -> tuple[LocalServer, PusherState]:
    server = _PusherServer(("127.0.0.1", 0), _PusherHandler)
    server.state = PusherState(app_id=app_id, key=key, secret=secret)
    return LocalServer(server), server.state
