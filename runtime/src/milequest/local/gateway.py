"""A local stand-in for an API Gateway WebSocket API, built on the ``websockets`` server.

It serves pusher-js at ``/app/{key}`` (what a custom domain's API mapping gives in AWS) and
runs the real Lambda handlers in-process with API Gateway's event shapes: ``$connect``
during the opening handshake (and the REQUEST authorizer, when one is configured), route
selection on ``$request.body.event`` for every frame (the handler's returned ``body`` goes
back to the client, as a two-way route does; ``pusher:ping`` is answered by the gateway
itself, as the API's MOCK integration does) and ``$disconnect`` on close. The management
API (``@connections``) and the Lambda ``Invoke`` call ``$connect`` makes for ``announce``
are served over HTTP by :mod:`milequest.local.management`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http
import json
import logging
import os
import socket
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from milequest.services.websocket import protocol

from .lambda_runtime import LambdaHandler, LocalLambdaContext, WebSocketHandlers

logger = logging.getLogger("milequest.local.gateway")

MAX_MESSAGE_BYTES = 128 * 1024  # API Gateway's WebSocket message payload limit
DEFAULT_IDLE_TIMEOUT = 600.0  # API Gateway closes connections idle for 10 minutes
DEFAULT_MAX_LIFETIME = 7200.0  # ... and any connection after 2 hours
HANDSHAKE_TIMEOUT = 30.0
STOP_GRACE = 10.0  # how long a stop waits for $disconnect handlers


class ConnectionGoneError(Exception):
    """The connection id is unknown, not yet established, or closed (HTTP 410)."""


class PayloadTooLargeError(Exception):
    """A management-API post larger than the message limit (HTTP 413)."""


@dataclass
class GatewayConfig:
    """How the emulated API behaves. Ports are not here: the gateway serves a bound socket."""

    stage: str = "local"
    app_key: str | None = None
    """The key served at ``/app/{key}``; another key is refused with 4001 (None: any)."""
    authorizer: bool = False
    """Run the REQUEST authorizer on ``$connect`` (off: Pusher connections are anonymous)."""
    api_id: str = "localapi01"
    region: str = "us-east-1"
    account_id: str = "123456789012"
    route_selection_key: str = "event"
    routes: tuple[str, ...] = ("pusher:subscribe", "pusher:unsubscribe", "pusher:signin")
    """Route keys besides ``$default`` (matched against the body's ``event``)."""
    mock_routes: dict[str, str] = field(default_factory=lambda: {"pusher:ping": protocol.pong()})
    """Routes answered without a Lambda (a MOCK integration): route key -> reply frame."""
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_lifetime: float = DEFAULT_MAX_LIFETIME
    max_message_bytes: int = MAX_MESSAGE_BYTES
    lost_disconnect_delay: float | None = 5.0
    """After a client vanishes without a close frame, ``$disconnect`` runs this many seconds
    later (``None``: never). API Gateway's ``$disconnect`` is best effort, and until it runs
    a trigger meets the dead connection on the 410 path."""
    handler_workers: int = 32


@dataclass
class GatewayConnection:
    """One established client connection as the gateway sees it."""

    connection_id: str
    websocket: ServerConnection
    connected_at: float
    source_ip: str
    user_agent: str
    headers: dict[str, str]
    query: dict[str, str]
    authorizer: dict[str, Any]
    last_active: float = field(default_factory=time.time)
    messages_in: int = 0
    messages_out: int = 0
    closed_by_gateway: bool = False

    @property
    def identity(self) -> dict[str, str]:
        return {"sourceIp": self.source_ip, "userAgent": self.user_agent}

    def touch(self) -> None:
        self.last_active = time.time()

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary (the dev console shows it)."""
        return {
            "connection_id": self.connection_id,
            "principal_id": self.authorizer.get("principalId"),
            "connected_at": _iso(self.connected_at),
            "last_active_at": _iso(self.last_active),
            "source_ip": self.source_ip,
            "user_agent": self.user_agent,
            "messages_in": self.messages_in,
            "messages_out": self.messages_out,
        }


@dataclass
class _Pending:
    connection_id: str
    connected_at: float
    source_ip: str
    user_agent: str
    headers: dict[str, str]
    query: dict[str, str]
    authorizer: dict[str, Any]
    refusal: tuple[int, str] | None = None
    """Refused after the upgrade: send ``pusher:error`` and close with this code."""


@dataclass(frozen=True)
class Delivery:
    """One frame the gateway pushed to a client through the management API."""

    at: float
    connection_id: str
    data: str

    def describe(self) -> dict[str, Any]:
        """JSON-ready form (the dev console shows it)."""
        return {"at": _iso(self.at), "connection_id": self.connection_id, "data": self.data}


def new_connection_id() -> str:
    """An id shaped like API Gateway's (base64 of 11 random bytes, e.g. ``L0SM9cOFvHcCIhw=``)."""
    while True:
        candidate = base64.b64encode(os.urandom(11)).decode("ascii")
        # API Gateway's ids are path-safe; keep ours free of '/' and '+' as well.
        if "/" not in candidate and "+" not in candidate:
            return candidate


class WebSocketGateway:
    """The emulated WebSocket API: connections, handler invocation and the management calls."""

    def __init__(
        self,
        handlers: WebSocketHandlers | Callable[[], WebSocketHandlers],
        config: GatewayConfig | None = None,
    ) -> None:
        self.config = config or GatewayConfig()
        self._handlers_source = handlers
        self._handlers: WebSocketHandlers | None = None
        self.connections: dict[str, GatewayConnection] = {}
        self.deliveries: deque[Delivery] = deque(maxlen=200)
        # Handshakes $connect accepted; one whose client vanishes before the upgrade never
        # reaches _serve_connection, and its entry goes with the connection object.
        self._pending: weakref.WeakKeyDictionary[ServerConnection, _Pending] = (
            weakref.WeakKeyDictionary()
        )
        self._server: Server | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._serving: set[asyncio.Task[Any]] = set()  # the _serve_connection tasks
        self._host = "127.0.0.1"
        self._port = 0

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def handlers(self) -> WebSocketHandlers:
        """The Lambda handlers, resolved (imported) on first use."""
        if self._handlers is None:
            source = self._handlers_source
            self._handlers = source if isinstance(source, WebSocketHandlers) else source()
        return self._handlers

    @property
    def domain_name(self) -> str:
        """``host:port`` the gateway serves (``requestContext.domainName``)."""
        return f"{self._host}:{self._port}"

    @property
    def url(self) -> str:
        """The ``ws://`` URL pusher-js connects to (``wss://<custom domain>/app/{key}``)."""
        return f"ws://{self.domain_name}/app/{self.config.app_key or '<key>'}"

    async def start(self, sock: socket.socket) -> None:
        """Serve WebSocket clients on the bound, listening ``sock``."""
        _ = self.handlers  # import the handlers now so a broken module fails the start
        self._host, self._port = sock.getsockname()[:2]
        self._executor = ThreadPoolExecutor(
            max_workers=self.config.handler_workers, thread_name_prefix="apigw-lambda"
        )
        self._server = await serve(
            self._serve_connection,
            sock=sock,
            process_request=self._process_request,
            max_size=self.config.max_message_bytes,
            # API Gateway sends no pings of its own; clients keep connections alive.
            ping_interval=None,
            close_timeout=2,
            # The authorizer and $connect run inside the handshake; API Gateway gives
            # integrations 29 s, so the handshake may take that long under load.
            open_timeout=HANDSHAKE_TIMEOUT,
            server_header="local-apigateway",
            compression=None,  # API Gateway negotiates no permessage-deflate
        )
        self._sweeper = asyncio.create_task(self._sweep())

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Close every connection and stop serving.

        ``$disconnect`` runs for every closed connection for up to ``grace`` seconds; calls
        still queued then are dropped (the embedded AWS state goes away with the stack).
        """
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._server is not None:
            for conn in list(self.connections.values()):
                conn.closed_by_gateway = True  # closing: $disconnect now, not the lost path
            self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), grace)
            except TimeoutError:
                logger.warning(
                    "stopping without the %d queued $disconnect call(s)", len(self._serving)
                )
                # Cancelling a task cancels its queued handler call; running calls finish.
                for task in list(self._serving):
                    task.cancel()
                await self._server.wait_closed()
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._executor is not None:
            # Off the loop: a handler still running may need it (the management API).
            await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

    # -- Lambda functions invoked by name (the Invoke API) -----------------------------------

    ANNOUNCE_FUNCTION = "local-websocket-announce"

    def function(self, name: str) -> LambdaHandler | None:
        """The handler behind a function name or ARN that ``Invoke`` may call."""
        functions = {self.ANNOUNCE_FUNCTION: self.handlers.announce}
        return functions.get(name.rsplit(":", 1)[-1] if name.startswith("arn:") else name)

    async def invoke(self, name: str, payload: dict[str, Any]) -> Any:
        """Run a function now (``RequestResponse``)."""
        handler = self.function(name)
        if handler is None:
            raise KeyError(name)
        return await self._invoke(handler, payload, name)

    def invoke_later(self, name: str, payload: dict[str, Any]) -> None:
        """Run a function in the background (``Event``), retried twice on failure as Lambda
        retries asynchronous invocations (after seconds here rather than minutes)."""

        async def run() -> None:
            for attempt in range(3):
                try:
                    await self.invoke(name, payload)
                    return
                except Exception:
                    logger.warning("%s failed (attempt %d of 3)", name, attempt + 1, exc_info=True)
                await asyncio.sleep(0.5 * (attempt + 1))

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- management API operations ---------------------------------------------------------

    def _live(self, connection_id: str) -> GatewayConnection:
        conn = self.connections.get(connection_id)
        if conn is None or conn.websocket.close_code is not None or conn.closed_by_gateway:
            raise ConnectionGoneError(connection_id)
        return conn

    async def post_to_connection(self, connection_id: str, data: bytes) -> None:
        """Send ``data`` to the client (a text frame when it is UTF-8)."""
        if len(data) > self.config.max_message_bytes:
            raise PayloadTooLargeError(
                f"{len(data)} bytes exceeds the {self.config.max_message_bytes}-byte limit"
            )
        conn = self._live(connection_id)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        try:
            await conn.websocket.send(text if text is not None else data)
        except ConnectionClosed:
            raise ConnectionGoneError(connection_id) from None
        conn.messages_out += 1
        conn.touch()
        self.deliveries.append(
            Delivery(time.time(), connection_id, text if text is not None else repr(data))
        )

    def get_connection(self, connection_id: str) -> dict[str, Any]:
        """``GetConnection``'s answer for a live connection."""
        conn = self._live(connection_id)
        return {
            "connectedAt": _iso(conn.connected_at),
            "identity": conn.identity,
            "lastActiveAt": _iso(conn.last_active),
        }

    async def delete_connection(self, connection_id: str) -> None:
        """Disconnect a client, as ``DeleteConnection`` does (``$disconnect`` follows)."""
        conn = self._live(connection_id)
        conn.closed_by_gateway = True
        await conn.websocket.close(1000, "Connection deleted")

    def snapshot(self) -> list[dict[str, Any]]:
        """Every live connection, described."""
        return [conn.describe() for conn in list(self.connections.values())]

    # -- handshake: authorizer and $connect ------------------------------------------------

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            # Not a WebSocket handshake: answer before the authorizer and $connect run.
            return connection.respond(http.HTTPStatus.UPGRADE_REQUIRED, "Upgrade Required\n")
        parts = urlsplit(request.path)
        segments = parts.path.strip("/").split("/")
        if len(segments) != 2 or segments[0] != "app" or not segments[1]:
            # Only the API mapping's path leads to the stage.
            return connection.respond(http.HTTPStatus.FORBIDDEN, "Forbidden\n")
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        headers = dict(request.headers.raw_items())
        connection_id = new_connection_id()
        now = time.time()
        remote = connection.remote_address
        source_ip = str(remote[0]) if remote else "127.0.0.1"
        user_agent = request.headers.get("User-Agent", "")
        if self.config.app_key is not None and segments[1] != self.config.app_key:
            # In AWS no API mapping exists for an unknown key (HTTP 403). Here the gateway
            # can send close codes, so it answers as Pusher does: 4001 after the upgrade.
            self._pending[connection] = _Pending(
                connection_id,
                now,
                source_ip,
                user_agent,
                headers,
                query,
                {},
                refusal=(
                    protocol.ErrorCode.APP_NOT_FOUND,
                    f"App key {segments[1]} not in this app",
                ),
            )
            return None
        context = self._request_context(
            connection_id,
            "$connect",
            "CONNECT",
            connected_at=now,
            identity={"sourceIp": source_ip, "userAgent": user_agent},
        )
        multi_query = dict(parse_qs(parts.query, keep_blank_values=True).items())
        multi_headers = {k: request.headers.get_all(k) for k in headers}
        authorizer: dict[str, Any] = {}
        if self.config.authorizer:
            auth_event: dict[str, Any] = {
                "type": "REQUEST",
                "methodArn": (
                    f"arn:aws:execute-api:{self.config.region}:{self.config.account_id}:"
                    f"{self.config.api_id}/{self.config.stage}/$connect"
                ),
                "headers": headers,
                "multiValueHeaders": multi_headers,
                "queryStringParameters": query,
                "multiValueQueryStringParameters": multi_query,
                "stageVariables": {},
                "requestContext": context,
            }
            try:
                decision = await self._invoke(self.handlers.authorize, auth_event, "authorizer")
            except Exception as exc:
                # A Lambda authorizer signals "no credentials / bad token" by raising
                # "Unauthorized"; API Gateway answers 401. Any other failure is a 500.
                if str(exc) == "Unauthorized":
                    return connection.respond(http.HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
                logger.exception("authorizer failed")
                return connection.respond(http.HTTPStatus.INTERNAL_SERVER_ERROR, "Internal error\n")
            allowed = _authorizer_context(decision)
            if allowed is None:
                return connection.respond(http.HTTPStatus.FORBIDDEN, "Forbidden\n")
            authorizer = allowed

        connect_context = {**context, "authorizer": authorizer} if authorizer else context
        connect_event = {
            "headers": headers,
            "multiValueHeaders": multi_headers,
            "queryStringParameters": query or None,
            "multiValueQueryStringParameters": multi_query or None,
            "requestContext": connect_context,
            "isBase64Encoded": False,
        }
        try:
            result = await self._invoke(self.handlers.on_connect, connect_event, "connect")
        except Exception:
            logger.exception("$connect handler failed")
            return connection.respond(http.HTTPStatus.INTERNAL_SERVER_ERROR, "Internal error\n")
        status = _status_code(result)
        if status >= 300:
            return connection.respond(status, _body_text(result) or f"{status}\n")
        self._pending[connection] = _Pending(
            connection_id, now, source_ip, user_agent, headers, query, authorizer
        )
        return None

    # -- messages and $disconnect ----------------------------------------------------------

    async def _serve_connection(self, websocket: ServerConnection) -> None:
        pending = self._pending.pop(websocket, None)
        if pending is None:  # handshake state lost: never happens with process_request above
            await websocket.close(1011, "Internal error")
            return
        if pending.refusal is not None:
            code, reason = pending.refusal
            with contextlib.suppress(ConnectionClosed):
                await websocket.send(protocol.error(reason, code))
                await websocket.close(code, reason[:120])
            return
        conn = GatewayConnection(
            connection_id=pending.connection_id,
            websocket=websocket,
            connected_at=pending.connected_at,
            source_ip=pending.source_ip,
            user_agent=pending.user_agent,
            headers=pending.headers,
            query=pending.query,
            authorizer=pending.authorizer,
        )
        self.connections[conn.connection_id] = conn
        task = asyncio.current_task()
        if task is not None:
            self._serving.add(task)
        try:
            async for message in websocket:
                conn.touch()
                conn.messages_in += 1
                await self._route(conn, message)
        except ConnectionClosed:
            pass
        finally:
            self.connections.pop(conn.connection_id, None)
            try:
                await self._after_close(conn)
            finally:
                self._serving.discard(task)

    async def _route(self, conn: GatewayConnection, message: str | bytes) -> None:
        is_binary = isinstance(message, bytes)
        body = base64.b64encode(message).decode() if isinstance(message, bytes) else message
        route_key = "$default"
        if not is_binary:
            with contextlib.suppress(ValueError, RecursionError):
                parsed = json.loads(body)
                if isinstance(parsed, dict):
                    selected = parsed.get(self.config.route_selection_key)
                    known = (*self.config.routes, *self.config.mock_routes)
                    if isinstance(selected, str) and selected in known:
                        route_key = selected
        mocked = self.config.mock_routes.get(route_key)
        if mocked is not None:
            with contextlib.suppress(ConnectionClosed):
                await conn.websocket.send(mocked)
                conn.messages_out += 1
            return
        context = self._request_context(
            conn.connection_id,
            route_key,
            "MESSAGE",
            connected_at=conn.connected_at,
            identity=conn.identity,
            authorizer=conn.authorizer,
        )
        context["messageId"] = base64.b64encode(os.urandom(9)).decode()
        event = {"requestContext": context, "body": body, "isBase64Encoded": is_binary}
        reply: str | None
        try:
            result = await self._invoke(self.handlers.on_message, event, "default")
        except Exception:
            logger.exception("route %s failed for %s", route_key, conn.connection_id)
            reply = json.dumps(
                {
                    "message": "Internal server error",
                    "connectionId": conn.connection_id,
                    "requestId": context["requestId"],
                }
            )
        else:
            reply = _body_text(result)
        if reply:
            with contextlib.suppress(ConnectionClosed):
                await conn.websocket.send(reply)
                conn.messages_out += 1

    async def _after_close(self, conn: GatewayConnection) -> None:
        websocket = conn.websocket
        received = websocket.protocol.close_rcvd
        lost = received is None and not conn.closed_by_gateway
        code = received.code if received is not None else (websocket.close_code or 1006)
        reason = received.reason if received is not None else websocket.close_reason or ""
        if lost:
            delay = self.config.lost_disconnect_delay
            if delay is None:
                logger.info("%s vanished; $disconnect skipped", conn.connection_id)
                return
            task = asyncio.create_task(self._disconnect_later(conn, 1006, "Going away", delay))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return
        await self._disconnect(conn, code, reason)

    async def _disconnect_later(
        self, conn: GatewayConnection, code: int, reason: str, delay: float
    ) -> None:
        await asyncio.sleep(delay)
        await self._disconnect(conn, code, reason)

    async def _disconnect(self, conn: GatewayConnection, code: int, reason: str) -> None:
        context = self._request_context(
            conn.connection_id,
            "$disconnect",
            "DISCONNECT",
            connected_at=conn.connected_at,
            identity=conn.identity,
            authorizer=conn.authorizer,
        )
        context["disconnectStatusCode"] = code
        context["disconnectReason"] = reason
        event = {"headers": conn.headers, "requestContext": context, "isBase64Encoded": False}
        try:
            await self._invoke(self.handlers.on_disconnect, event, "disconnect")
        except Exception:
            logger.exception("$disconnect handler failed for %s", conn.connection_id)

    # -- idle timeout and maximum lifetime -------------------------------------------------

    async def _sweep(self) -> None:
        interval = max(0.05, min(self.config.idle_timeout / 4, self.config.max_lifetime / 4, 5.0))
        while True:
            await asyncio.sleep(interval)
            now = time.time()
            for conn in list(self.connections.values()):
                idle = now - conn.last_active > self.config.idle_timeout
                expired = now - conn.connected_at > self.config.max_lifetime
                if (idle or expired) and not conn.closed_by_gateway:
                    conn.closed_by_gateway = True
                    task = asyncio.create_task(conn.websocket.close(1001, "Going away"))
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)

    # -- helpers ---------------------------------------------------------------------------

    async def _invoke(self, handler: LambdaHandler, event: dict[str, Any], name: str) -> Any:
        context = LocalLambdaContext(
            function_name=f"local-websocket-{name}",
            region=self.config.region,
            account_id=self.config.account_id,
        )
        loop = asyncio.get_running_loop()
        # Handlers are synchronous boto3 code: run them off the event loop.
        return await loop.run_in_executor(self._executor, handler, event, context)

    def _request_context(
        self,
        connection_id: str,
        route_key: str,
        event_type: str,
        *,
        connected_at: float,
        identity: dict[str, str],
        authorizer: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """API Gateway's ``requestContext``; ``authorizer`` is absent from the authorizer's own."""
        now = time.time()
        context: dict[str, Any] = {
            "routeKey": route_key,
            "eventType": event_type,
            "extendedRequestId": base64.b64encode(os.urandom(9)).decode(),
            "requestTime": datetime.fromtimestamp(now, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "messageDirection": "IN",
            "stage": self.config.stage,
            "connectedAt": int(connected_at * 1000),
            "requestTimeEpoch": int(now * 1000),
            "identity": identity,
            "requestId": str(uuid.uuid4()),
            "domainName": self.domain_name,
            "connectionId": connection_id,
            "apiId": self.config.api_id,
        }
        if authorizer is not None:
            context["authorizer"] = authorizer
        return context


def _authorizer_context(decision: Any) -> dict[str, Any] | None:
    """The ``requestContext.authorizer`` an allowing decision yields, or None on deny.

    Accepts the IAM-policy response WebSocket authorizers return (any ``Deny`` statement
    or no ``Allow`` denies) and, leniently, the simple ``isAuthorized`` form.
    """
    if not isinstance(decision, Mapping):
        return None
    context = decision.get("context") or {}
    if not isinstance(context, Mapping):
        context = {}
    if "isAuthorized" in decision:
        return dict(context) if decision.get("isAuthorized") is True else None
    statements = (decision.get("policyDocument") or {}).get("Statement") or []
    if isinstance(statements, Mapping):
        statements = [statements]
    effects = {str(s.get("Effect", "")).lower() for s in statements if isinstance(s, Mapping)}
    if "deny" in effects or "allow" not in effects:
        return None
    return {"principalId": decision.get("principalId"), **context}


def _status_code(result: Any) -> int:
    if isinstance(result, Mapping):
        with contextlib.suppress(TypeError, ValueError):
            return int(result.get("statusCode", 200))
    return 200


def _body_text(result: Any) -> str | None:
    if isinstance(result, Mapping):
        body = result.get("body")
        if body is None:
            return None
        return body if isinstance(body, str) else json.dumps(body)
    return None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
