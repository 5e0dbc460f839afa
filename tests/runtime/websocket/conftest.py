"""Fixtures: moto (server mode), a local @connections endpoint, a local Pusher server."""

from __future__ import annotations

import itertools
import json
import logging
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from milequest.local.aws import EmbeddedMotoServer
from milequest.services.websocket.apigateway import (
    TTL_ATTRIBUTE,
    ApiGatewayWebSocketService,
    table_definition,
)
from milequest.services.websocket.pusher import PusherWebSocketService

from tests.conftest import free_port

from .endpoints import (
    ConnectionsState,
    LocalServer,
    PusherState,
    start_connections_endpoint,
    start_pusher_server,
)

APP_KEY = "app-key-123"
APP_SECRET = "app-secret-456"
PUSHER_APP_ID = "4242"
ENCRYPTION_KEY = bytes(range(32))
STAGE = "local"
_tables = itertools.count(1)
logging.getLogger("werkzeug").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto in server mode, as the local stack runs it (DynamoDB updates atomic per item)."""
    server = EmbeddedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def _connections_server() -> Iterator[tuple[LocalServer, ConnectionsState]]:
    server, state = start_connections_endpoint()
    yield server, state
    server.stop()


@pytest.fixture
def connections(_connections_server: tuple[LocalServer, ConnectionsState]) -> ConnectionsState:
    """The local @connections endpoint's state, fresh for each test."""
    _connections_server[1].reset()
    return _connections_server[1]


@pytest.fixture
def management_endpoint(_connections_server: tuple[LocalServer, ConnectionsState]) -> str:
    return f"http://127.0.0.1:{_connections_server[0].port}/{STAGE}"


@pytest.fixture
def table(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new connections table built from ``table_definition()``, with TTL on."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", moto_endpoint)
    name = f"connections-{next(_tables)}"
    ddb = boto3.client("dynamodb", endpoint_url=moto_endpoint)
    ddb.create_table(TableName=name, **table_definition())
    ddb.update_time_to_live(
        TableName=name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
    )
    return name


@pytest.fixture
def webhook_sink() -> Iterator[WebhookSink]:
    sink = WebhookSink()
    yield sink
    sink.stop()


class WebhookSink:
    """An HTTP endpoint recording the webhooks it receives (headers, body)."""

    def __init__(self) -> None:
        received: list[tuple[dict[str, str], bytes]] = []
        self.received = received
        self.event = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append((dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = LocalServer(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
        self.url = f"http://127.0.0.1:{self._server.port}/hooks"

    def events(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for _, body in self.received:
            out.extend(json.loads(body)["events"])
        return out

    def stop(self) -> None:
        self._server.stop()


def new_connection_id() -> str:
    """An id shaped like API Gateway's (``L0SM9cOFvHcCIhw=``)."""
    return secrets.token_urlsafe(11)[:15] + "="


@pytest.fixture
def apigw(
    table: str, management_endpoint: str, connections: ConnectionsState
) -> Iterator[ApiGatewayWebSocketService]:
    service = ApiGatewayWebSocketService(
        table_name=table,
        management_endpoint=management_endpoint,
        app_key=APP_KEY,
        app_secret=APP_SECRET,
        encryption_master_key=ENCRYPTION_KEY,
        concurrency=16,
        max_attempts=3,
    )
    yield service
    service.close()


@pytest.fixture(scope="session")
def _pusher_server() -> Iterator[tuple[LocalServer, PusherState]]:
    server, state = start_pusher_server(PUSHER_APP_ID, APP_KEY, APP_SECRET)
    yield server, state
    server.stop()


@pytest.fixture
def pusher_state(_pusher_server: tuple[LocalServer, PusherState]) -> PusherState:
    _pusher_server[1].reset()
    return _pusher_server[1]


@pytest.fixture
def pusher_port(_pusher_server: tuple[LocalServer, PusherState]) -> int:
    return _pusher_server[0].port


@pytest.fixture
def pusher_service(pusher_state: PusherState, pusher_port: int) -> PusherWebSocketService:
    return PusherWebSocketService(
        app_id=PUSHER_APP_ID,
        key=APP_KEY,
        secret=APP_SECRET,
        host="127.0.0.1",
        port=pusher_port,
        use_tls=False,
        encryption_master_key=ENCRYPTION_KEY,
    )


class AsgiServer:
    """An ASGI app served by uvicorn on a free loopback port, counting its requests."""

    def __init__(self, app: Any) -> None:
        import asyncio

        import uvicorn

        self.requests = 0

        async def counted(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                self.requests += 1
            await app(scope, receive, send)

        self.port = free_port()
        config = uvicorn.Config(
            counted, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve()), daemon=True
        )
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the ASGI server did not start")
            threading.Event().wait(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture(scope="session")
def pusher_api_server() -> Iterator[AsgiServer]:
    """Our own Pusher HTTP API (the HTTP app), serving whatever ``websocket`` service the
    registry holds when a request arrives."""
    from milequest.web import create_app

    with pytest.MonkeyPatch.context() as env:
        env.setenv("WEBSOCKET_APP_ID", PUSHER_APP_ID)  # the app id is read when it is built
        server = AsgiServer(create_app(health_services=None))
    yield server
    server.stop()


@pytest.fixture
def pusher_over_our_api(
    pusher_api_server: AsgiServer,
    apigw: ApiGatewayWebSocketService,
    monkeypatch: pytest.MonkeyPatch,
) -> PusherWebSocketService:
    """The pusher provider pointed at our HTTP API, which publishes through ``apigw``."""
    from milequest.services import register_service

    monkeypatch.setenv("WEBSOCKET_APP_ID", PUSHER_APP_ID)
    register_service("websocket", apigw)
    return PusherWebSocketService(
        app_id=PUSHER_APP_ID,
        key=APP_KEY,
        secret=APP_SECRET,
        host="127.0.0.1",
        port=pusher_api_server.port,
        use_tls=False,
        encryption_master_key=ENCRYPTION_KEY,
    )
