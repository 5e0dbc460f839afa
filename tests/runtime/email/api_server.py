"""A local HTTP server for the ESP APIs the tests speak to (one thread per request).

Each provider's server subclasses :class:`ApiHandler` with its routes and keeps its state
in a dataclass; every request is recorded (method, path, headers, JSON body, time).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs, unquote, urlparse


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    at: float


@dataclass
class ApiState:
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def calls(self, method: str, path: str) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.method == method and r.path == path]

    def count(self, method: str, path: str) -> int:
        return len(self.calls(method, path))


class Reply(Exception):
    """Raised by a route to answer with ``status``, a JSON ``body`` and ``headers``."""

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


S = TypeVar("S", bound=ApiState)


class ApiHandler(BaseHTTPRequestHandler, Generic[S]):
    state: S
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def route(self, request: Recorded) -> Reply:
        raise NotImplementedError

    def _dispatch(self, method: str) -> None:
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        request = Recorded(
            method,
            unquote(url.path),
            {k: v[0] for k, v in parse_qs(url.query).items()},
            {k.lower(): v for k, v in self.headers.items()},
            body,
            time.monotonic(),
        )
        with self.state.lock:
            self.state.requests.append(request)
        try:
            reply = self.route(request)
        except Reply as answer:
            reply = answer
        if isinstance(reply.body, bytes):
            data, kind = reply.body, "application/octet-stream"
        else:
            data = b"" if reply.body is None else json.dumps(reply.body).encode()
            kind = "application/json"
        self.send_response(reply.status)
        if data:
            self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")


class ApiServer(Generic[S]):
    """``handler`` serving ``state`` on a free loopback port: ``url``, ``start``, ``stop``."""

    def __init__(self, handler: type[ApiHandler[S]], state: S) -> None:
        self.state = state
        bound = type("Bound", (handler,), {"state": state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), bound)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> ApiServer[S]:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
