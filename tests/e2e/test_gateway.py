"""The API Gateway emulator on its own, driving a small recording handler set."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
import httpx
import pytest
import uvicorn
from milequest.local.gateway import GatewayConfig, WebSocketGateway
from milequest.local.lambda_runtime import WebSocketHandlers
from milequest.local.management import create_management_app
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .conftest import run

# The emulator serves /app/{key}, like the custom domain's API mapping in AWS.
KEY = "app-key"


@dataclass
class Recorder:
    """Handlers that record their events; the token decides the authorizer's answer."""

    events: list[dict[str, Any]] = field(default_factory=list)
    disconnected: threading.Event = field(default_factory=threading.Event)
    disconnected_at: float = 0.0
    announced: list[dict[str, Any]] = field(default_factory=list)

    def authorize(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.events.append(event)
        token = (event.get("queryStringParameters") or {}).get("token")
        if token is None:
            raise Exception("Unauthorized")
        effect = "Allow" if token == "good" else "Deny"
        return {
            "principalId": "user-1",
            "policyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": "*"}],
            },
            "context": {"userId": "user-1", "plan": "gold"},
        }

    def on_connect(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.events.append(event)
        return {"statusCode": 200}

    def on_disconnect(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.events.append(event)
        self.disconnected_at = time.monotonic()
        self.disconnected.set()
        return {"statusCode": 200}

    def announce(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.announced.append(event)
        return {"announced": True, "remaining": context.get_remaining_time_in_millis() > 0}

    def on_message(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.events.append(event)
        if event["body"] == '{"event": "explode"}':
            raise RuntimeError("handler bug")
        reply = {"route": event["requestContext"]["routeKey"], "remaining": None}
        reply["remaining"] = context.get_remaining_time_in_millis() > 0
        return {"statusCode": 200, "body": json.dumps(reply)}

    def handlers(self) -> WebSocketHandlers:
        return WebSocketHandlers(
            self.authorize, self.on_connect, self.on_disconnect, self.on_message, self.announce
        )

    def of(self, route: str) -> list[dict[str, Any]]:
        """Route events (authorizer events, which have a ``type``, left out)."""
        return [
            e
            for e in self.events
            if e.get("requestContext", {}).get("routeKey") == route and "type" not in e
        ]


def _listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    return sock


@dataclass
class Running:
    gateway: WebSocketGateway
    recorder: Recorder
    management: str


@asynccontextmanager
async def gateway(**options: Any) -> AsyncIterator[Running]:
    recorder = Recorder()
    options = {"app_key": KEY, "authorizer": True, **options}
    gw = WebSocketGateway(recorder.handlers(), GatewayConfig(**options))
    await gw.start(_listening())
    sock = _listening()
    server = uvicorn.Server(
        uvicorn.Config(create_management_app(gw), log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield Running(gw, recorder, f"http://127.0.0.1:{sock.getsockname()[1]}")
    finally:
        await gw.stop()
        server.should_exit = True
        await task


def test_events_carry_api_gateway_shapes_and_routes() -> None:
    async def scenario() -> tuple[Recorder, list[dict[str, Any]]]:
        async with gateway() as running:
            async with connect(running.gateway.url + "?token=good&protocol=7") as ws:
                replies = []
                for name in ("pusher:subscribe", "client-x", "pusher:ping"):
                    await ws.send(json.dumps({"event": name, "data": {}}))
                    replies.append(json.loads(await ws.recv()))
                await ws.send("not json")
                replies.append(json.loads(await ws.recv()))
            await asyncio.to_thread(running.recorder.disconnected.wait, 10)
            return running.recorder, replies

    recorder, replies = run(scenario)
    assert replies == [
        {"route": "pusher:subscribe", "remaining": True},
        {"route": "$default", "remaining": True},
        # pusher:ping is answered by the gateway itself, as the MOCK integration does.
        {"event": "pusher:pong", "data": "{}"},
        {"route": "$default", "remaining": True},
    ]
    assert len(recorder.of("$default")) + len(recorder.of("pusher:subscribe")) == 3
    auth = recorder.events[0]
    assert auth["type"] == "REQUEST"
    assert auth["methodArn"].endswith("/local/$connect")
    assert auth["queryStringParameters"] == {"token": "good", "protocol": "7"}
    (connect_event,) = recorder.of("$connect")
    ctx = connect_event["requestContext"]
    assert ctx["eventType"] == "CONNECT"
    assert ctx["authorizer"] == {"principalId": "user-1", "userId": "user-1", "plan": "gold"}
    message = recorder.of("$default")[0]
    assert message["requestContext"]["eventType"] == "MESSAGE"
    assert message["requestContext"]["connectionId"] == ctx["connectionId"]
    assert message["requestContext"]["authorizer"]["userId"] == "user-1"
    assert {"domainName", "stage", "requestId", "connectedAt", "identity"} <= set(ctx)
    (disconnect,) = recorder.of("$disconnect")
    assert disconnect["requestContext"]["eventType"] == "DISCONNECT"
    assert disconnect["requestContext"]["disconnectStatusCode"] == 1000


def test_without_an_authorizer_connections_are_anonymous() -> None:
    async def scenario() -> dict[str, Any]:
        async with gateway(authorizer=False) as running:
            async with connect(running.gateway.url + "?protocol=7"):
                pass
            await asyncio.to_thread(running.recorder.disconnected.wait, 10)
            (event,) = running.recorder.of("$connect")
            assert not [e for e in running.recorder.events if e.get("type") == "REQUEST"]
            return dict(event["requestContext"])

    assert "authorizer" not in run(scenario)


def test_an_unknown_app_key_is_refused_with_4001() -> None:
    async def scenario() -> tuple[dict[str, Any], int | None, int]:
        async with gateway(authorizer=False) as running:
            url = running.gateway.url.replace(f"/app/{KEY}", "/app/someone-else")
            async with connect(url) as ws:
                first = json.loads(await ws.recv())
                await asyncio.wait_for(ws.wait_closed(), 10)
            return first, ws.close_code, len(running.recorder.events)

    first, code, handled = run(scenario)
    assert first["event"] == "pusher:error"
    assert first["data"]["code"] == 4001
    assert code == 4001
    assert handled == 0  # refused before $connect, as no API mapping exists for the key


def test_the_authorizer_decides_401_or_403() -> None:
    async def scenario() -> list[int]:
        statuses = []
        async with gateway() as running:
            for query in ("", "?token=bad"):
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(running.gateway.url + query):
                        pass
                statuses.append(refused.value.response.status_code)
            assert running.recorder.of("$connect") == []  # on_connect never ran
        return statuses

    assert run(scenario) == [401, 403]


def test_a_path_other_than_app_key_is_forbidden_before_the_authorizer() -> None:
    async def scenario() -> list[int]:
        statuses = []
        async with gateway() as running:
            base = running.gateway.url.removesuffix(f"/app/{KEY}")
            for path in ("/local", "/app", f"/app/{KEY}/extra", "/"):
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(base + path + "?token=good"):
                        pass
                statuses.append(refused.value.response.status_code)
            assert running.recorder.events == []
        return statuses

    assert run(scenario) == [403, 403, 403, 403]


def test_a_failing_route_handler_answers_like_api_gateway() -> None:
    async def scenario() -> dict[str, Any]:
        async with gateway() as running, connect(running.gateway.url + "?token=good") as ws:
            await ws.send(json.dumps({"event": "explode"}))
            reply: dict[str, Any] = json.loads(await ws.recv())
            return reply

    reply = run(scenario)
    assert reply["message"] == "Internal server error"
    assert reply["connectionId"]


def test_the_management_api_posts_gets_deletes_and_answers_410() -> None:
    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with gateway() as running, connect(running.gateway.url + "?token=good") as ws:
            await ws.send(json.dumps({"event": "pusher:ping"}))
            await ws.recv()  # the connection is established once it answers
            (connection_id,) = running.gateway.connections
            api = boto3.client(
                "apigatewaymanagementapi", endpoint_url=f"{running.management}/local"
            )
            await asyncio.to_thread(api.post_to_connection, ConnectionId=connection_id, Data=b"hi")
            out["received"] = await ws.recv()
            info = await asyncio.to_thread(api.get_connection, ConnectionId=connection_id)
            out["identity"] = info["Identity"]
            with pytest.raises(api.exceptions.PayloadTooLargeException):
                await asyncio.to_thread(
                    api.post_to_connection,
                    ConnectionId=connection_id,
                    Data=b"x" * (128 * 1024 + 1),
                )
            async with httpx.AsyncClient() as http:
                unsigned = await http.post(
                    f"{running.management}/local/@connections/{connection_id}"
                )
            out["unsigned"] = unsigned.status_code
            await asyncio.to_thread(api.delete_connection, ConnectionId=connection_id)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            out["close_code"] = ws.close_code
            with pytest.raises(api.exceptions.GoneException):
                await asyncio.to_thread(
                    api.post_to_connection, ConnectionId=connection_id, Data=b"late"
                )
            with pytest.raises(api.exceptions.GoneException):
                await asyncio.to_thread(api.get_connection, ConnectionId="bm9uZXhpc3RlbnQ=")
            await asyncio.to_thread(running.recorder.disconnected.wait, 10)
            out["disconnects"] = len(running.recorder.of("$disconnect"))
        return out

    out = run(scenario)
    assert out["received"] == "hi"
    assert out["identity"]["SourceIp"] == "127.0.0.1"
    assert out["unsigned"] == 403
    assert out["close_code"] == 1000
    assert out["disconnects"] == 1


def test_idle_connections_are_closed_and_disconnected() -> None:
    async def scenario() -> tuple[int | None, int]:
        async with gateway(idle_timeout=0.3) as running:
            async with connect(running.gateway.url + "?token=good") as ws:
                await asyncio.wait_for(ws.wait_closed(), 10)
                code = ws.close_code
            await asyncio.to_thread(running.recorder.disconnected.wait, 10)
            return code, len(running.recorder.of("$disconnect"))

    assert run(scenario) == (1001, 1)


def test_a_vanished_client_gets_its_disconnect_after_the_configured_delay() -> None:
    async def scenario(delay: float | None) -> float | None:
        async with gateway(lost_disconnect_delay=delay) as running:
            ws = await connect(running.gateway.url + "?token=good")
            (conn,) = running.gateway.connections.values()
            ws.transport.abort()
            # When the gateway noticed the abort: its connection entry goes at that moment.
            while running.gateway.connections:
                await asyncio.sleep(0.005)
            noticed = time.monotonic()
            if not await asyncio.to_thread(running.recorder.disconnected.wait, 3):
                return None
            assert (
                conn.connection_id
                == running.recorder.of("$disconnect")[0]["requestContext"]["connectionId"]
            )
            return running.recorder.disconnected_at - noticed

    waited = run(lambda: scenario(0.6))
    assert waited is not None
    assert 0.5 <= waited < 3
    assert run(lambda: scenario(None)) is None  # never, when so configured


def test_lambda_invoke_runs_the_named_function() -> None:
    async def scenario() -> tuple[Recorder, Any, int, int]:
        async with gateway() as running:
            client = boto3.client("lambda", endpoint_url=running.management)
            name = running.gateway.ANNOUNCE_FUNCTION
            answer = await asyncio.to_thread(
                client.invoke, FunctionName=name, Payload=b'{"connectionId": "x"}'
            )
            event = await asyncio.to_thread(
                client.invoke,
                FunctionName=f"arn:aws:lambda:us-east-1:123456789012:function:{name}",
                InvocationType="Event",
                Payload=b'{"connectionId": "y"}',
            )
            while len(running.recorder.announced) < 2:
                await asyncio.sleep(0.01)
            with pytest.raises(client.exceptions.ResourceNotFoundException):
                await asyncio.to_thread(client.invoke, FunctionName="other", Payload=b"{}")
            return (
                running.recorder,
                json.loads(answer["Payload"].read()),
                answer["StatusCode"],
                event["StatusCode"],
            )

    recorder, payload, sync_status, async_status = run(scenario)
    assert payload == {"announced": True, "remaining": True}
    assert (sync_status, async_status) == (200, 202)
    assert recorder.announced == [{"connectionId": "x"}, {"connectionId": "y"}]


def test_a_plain_http_request_gets_426_without_running_the_handlers() -> None:
    async def scenario() -> tuple[int, int]:
        async with gateway() as running, httpx.AsyncClient() as http:
            url = running.gateway.url.replace("ws://", "http://") + "?token=good"
            response = await http.get(url)
            return response.status_code, len(running.recorder.events)

    assert run(scenario) == (426, 0)


def test_stopping_keeps_the_event_loop_free_for_a_disconnect_still_running() -> None:
    """A delayed ``$disconnect`` still running at stop can reach the loop (its API) in time."""

    async def scenario() -> bool:
        loop = asyncio.get_running_loop()
        started, reached = threading.Event(), threading.Event()

        async def on_loop() -> None:
            reached.set()

        def slow_disconnect(event: dict[str, Any], context: Any) -> dict[str, Any]:
            started.set()
            time.sleep(0.3)  # a slow call, still running when the gateway stops
            # As a handler posting to the management API would: it needs the loop to answer.
            with contextlib.suppress(TimeoutError):
                asyncio.run_coroutine_threadsafe(on_loop(), loop).result(timeout=5)
            return {"statusCode": 200}

        recorder = Recorder()
        handlers = WebSocketHandlers(
            recorder.authorize,
            recorder.on_connect,
            slow_disconnect,
            recorder.on_message,
            recorder.announce,
        )
        gw = WebSocketGateway(handlers, GatewayConfig(lost_disconnect_delay=0.05, app_key=KEY))
        await gw.start(_listening())
        ws = await connect(gw.url + "?token=good")
        ws.transport.abort()
        assert await asyncio.to_thread(started.wait, 10)
        await gw.stop()
        return reached.is_set()

    assert run(scenario) is True


def test_stopping_waits_for_queued_disconnects_only_for_the_grace_period() -> None:
    """A backlog of ``$disconnect`` calls cannot hold a stop past its grace period."""

    async def scenario() -> tuple[float, int]:
        ran: list[str] = []

        def slow_disconnect(event: dict[str, Any], context: Any) -> dict[str, Any]:
            time.sleep(0.5)  # a slow handler; one worker makes the others queue
            ran.append(event["requestContext"]["connectionId"])
            return {"statusCode": 200}

        recorder = Recorder()
        handlers = WebSocketHandlers(
            recorder.authorize,
            recorder.on_connect,
            slow_disconnect,
            recorder.on_message,
            recorder.announce,
        )
        gw = WebSocketGateway(handlers, GatewayConfig(handler_workers=1, app_key=KEY))
        await gw.start(_listening())
        clients = [await connect(gw.url + "?token=good") for _ in range(10)]
        for ws in clients:
            await ws.close()
        started = time.monotonic()
        await gw.stop(grace=0.5)
        return time.monotonic() - started, len(ran)

    elapsed, ran = run(scenario)
    assert elapsed < 3
    assert ran < 10
