"""The Lambda handlers, driven with API Gateway's WebSocket event shapes and Pusher frames.

The apigateway provider runs against moto (DynamoDB) and the local @connections endpoint;
``$connect``'s asynchronous invocation of ``announce`` goes to a local endpoint that speaks
Lambda's ``Invoke`` API.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pusher
import pytest
from hypothesis import given
from hypothesis import strategies as st
from milequest.handlers import websocket as handlers
from milequest.services.websocket import apigateway as apigateway_module
from milequest.services.websocket import issue_connection_token, protocol, signing

from . import events
from .conftest import APP_KEY, APP_SECRET, ENCRYPTION_KEY, new_connection_id
from .endpoints import ConnectionsState, LocalServer

ANNOUNCE_FUNCTION = "milequest-test-announce"


class LambdaInvokeEndpoint:
    """Lambda's ``Invoke`` API (``POST /2015-03-31/functions/{name}/invocations``): records
    each call's function, invocation type and payload, and answers as Lambda does."""

    def __init__(self) -> None:
        calls: list[tuple[str, str, dict[str, Any]]] = []
        self.calls = calls
        self.lock = threading.Lock()
        lock = self.lock

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                name = self.path.split("/")[3]
                kind = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
                with lock:
                    calls.append((name, kind, json.loads(body)))
                self.send_response(202 if kind == "Event" else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = LocalServer(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
        self.url = f"http://127.0.0.1:{self._server.port}"

    def payloads(self) -> list[dict[str, Any]]:
        with self.lock:
            return [payload for _, _, payload in self.calls]

    def stop(self) -> None:
        self._server.stop()


@pytest.fixture(scope="module")
def lambda_endpoint() -> Iterator[LambdaInvokeEndpoint]:
    endpoint = LambdaInvokeEndpoint()
    yield endpoint
    endpoint.stop()


@pytest.fixture
def env(
    table: str,
    management_endpoint: str,
    connections: ConnectionsState,
    lambda_endpoint: LambdaInvokeEndpoint,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ConnectionsState]:
    """The configuration a deployed function gets, read by the registry at call time."""
    monkeypatch.setenv("WEBSOCKET_PROVIDER", "apigateway")
    monkeypatch.setenv("CONNECTIONS_TABLE", table)
    monkeypatch.setenv("APIGW_MANAGEMENT_ENDPOINT", management_endpoint)
    monkeypatch.setenv("WEBSOCKET_APP_KEY", APP_KEY)
    monkeypatch.setenv("WEBSOCKET_APP_SECRET", APP_SECRET)
    monkeypatch.setenv("WEBSOCKET_ENCRYPTION_MASTER_KEY", base64.b64encode(ENCRYPTION_KEY).decode())
    monkeypatch.setenv("WEBSOCKET_CLIENT_EVENT_RATE", "5")
    monkeypatch.setenv("WEBSOCKET_ANNOUNCE_FUNCTION", ANNOUNCE_FUNCTION)
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", lambda_endpoint.url)
    monkeypatch.setattr(handlers, "_lambda", None)
    with lambda_endpoint.lock:
        lambda_endpoint.calls.clear()
    yield connections
    handlers.set_token_verifier(None)
    monkeypatch.setattr(handlers, "_lambda", None)


def _reply(connection_id: str, body: Any = None, raw: str | None = None) -> str | None:
    reply = handlers.on_message(events.message_event(connection_id, body, raw=raw), None)
    assert reply["statusCode"] == 200
    return reply.get("body")


def _send(connection_id: str, body: Any = None, raw: str | None = None) -> dict[str, Any]:
    """The reply frame, ``data`` decoded when it is a JSON string."""
    text = _reply(connection_id, body, raw)
    assert text is not None, "expected a reply frame"
    frame: dict[str, Any] = json.loads(text)
    if isinstance(frame.get("data"), str):
        frame["data"] = json.loads(frame["data"])
    return frame


def _socket(cid: str) -> str:
    return protocol.encode_socket_id(cid)


def _connect(lambda_endpoint: LambdaInvokeEndpoint, query: dict[str, str] | None = None) -> str:
    """$connect with pusher-js's query, then the announce invocation it requested."""
    cid = new_connection_id()
    event = events.connect_event(cid, None)
    event["queryStringParameters"] = query if query is not None else events.PUSHER_JS_QUERY
    assert handlers.on_connect(event, None) == {"statusCode": 200}
    payload = lambda_endpoint.payloads()[-1]
    assert payload["connectionId"] == cid
    handlers.announce(payload, None)
    return cid


def _subscribe(cid: str, channel: str, user: Any = None) -> dict[str, Any]:
    data: dict[str, Any] = {"channel": channel}
    if protocol.is_private(channel):
        presence_user = {"user_id": user} if isinstance(user, str) else user
        data["auth"] = signing.channel_auth(
            APP_KEY,
            APP_SECRET,
            _socket(cid),
            channel,
            signing.presence_channel_data(presence_user["user_id"])
            if protocol.is_presence(channel)
            else None,
        )
        if protocol.is_presence(channel):
            data["channel_data"] = signing.presence_channel_data(presence_user["user_id"])
    return _send(cid, {"event": "pusher:subscribe", "data": data})


# -- $connect and announce -------------------------------------------------------------------


def test_connect_announces_a_pusher_socket_id(
    env: ConnectionsState, lambda_endpoint: LambdaInvokeEndpoint
) -> None:
    cid = _connect(lambda_endpoint)
    name, kind, payload = lambda_endpoint.calls[-1]
    assert (name, kind, payload) == (
        ANNOUNCE_FUNCTION,
        "Event",
        {"connectionId": cid, "refusal": None},
    )
    [frame] = env.frames(cid)
    assert frame == {
        "event": "pusher:connection_established",
        "data": {"socket_id": _socket(cid), "activity_timeout": 120},
    }
    assert protocol.SOCKET_ID_RE.match(frame["data"]["socket_id"])
    assert protocol.decode_socket_id(frame["data"]["socket_id"]) == cid


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({}, 4008),
        ({"protocol": "seven"}, 4006),
        ({"protocol": "6"}, 4007),
        ({"protocol": "8"}, 4007),
    ],
)
def test_unsupported_protocols_are_refused_in_the_first_frame(
    env: ConnectionsState,
    lambda_endpoint: LambdaInvokeEndpoint,
    query: dict[str, str],
    code: int,
) -> None:
    cid = _connect(lambda_endpoint, query)
    [frame] = env.frames(cid)
    assert frame["event"] == "pusher:error"
    assert frame["data"]["code"] == code
    assert env.deleted == [cid]  # then closed, since $connect cannot send a close code
    assert _send(cid, {"event": "pusher:subscribe", "data": {"channel": "x"}})["data"] == {
        "type": "ServerError",
        "error": "subscription failed",
        "status": 503,
    }


def test_connect_without_the_announce_function_fails_in_aws(
    env: ConnectionsState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WEBSOCKET_ANNOUNCE_FUNCTION")
    event = events.connect_event(new_connection_id(), None)
    event["queryStringParameters"] = events.PUSHER_JS_QUERY
    assert handlers.on_connect(event, None)["statusCode"] == 500


def test_announce_ignores_a_malformed_invocation(env: ConnectionsState) -> None:
    for event in ({}, {"connectionId": 5}, {"connectionId": "a b"}):
        assert handlers.announce(event, None) == {"announced": False}


# -- ping, subscribe, unsubscribe ------------------------------------------------------------


def test_ping_and_pong(env: ConnectionsState, lambda_endpoint: LambdaInvokeEndpoint) -> None:
    cid = _connect(lambda_endpoint)
    assert _send(cid, {"event": "pusher:ping", "data": {}}) == {
        "event": "pusher:pong",
        "data": {},
    }
    assert _reply(cid, {"event": "pusher:pong", "data": {}}) is None  # answers a server ping


def test_subscriptions_to_every_kind_of_channel(
    env: ConnectionsState, lambda_endpoint: LambdaInvokeEndpoint
) -> None:
    alice, bob = _connect(lambda_endpoint), _connect(lambda_endpoint)
    for channel in ("team-1", "private-team-1", "private-encrypted-team-1"):
        frame = _subscribe(alice, channel, "alice")
        assert frame == {
            "event": "pusher_internal:subscription_succeeded",
            "channel": channel,
            "data": {},
        }
    frame = _subscribe(alice, "presence-team-1", "alice")
    assert frame["data"] == {"presence": {"ids": ["alice"], "hash": {"alice": None}, "count": 1}}
    frame = _subscribe(bob, "presence-team-1", "bob")
    assert frame["data"]["presence"]["count"] == 2
    assert sorted(frame["data"]["presence"]["ids"]) == ["alice", "bob"]
    added = env.frames(alice)[-1]
    assert added == {
        "event": "pusher_internal:member_added",
        "channel": "presence-team-1",
        "data": {"user_id": "bob", "user_info": None},
    }
    assert (
        _reply(bob, {"event": "pusher:unsubscribe", "data": {"channel": "presence-team-1"}}) is None
    )
    assert env.frames(alice)[-1] == {
        "event": "pusher_internal:member_removed",
        "channel": "presence-team-1",
        "data": {"user_id": "bob"},
    }


def test_the_pusher_sdks_own_signatures_are_accepted(
    env: ConnectionsState, lambda_endpoint: LambdaInvokeEndpoint
) -> None:
    sdk = pusher.Pusher(
        app_id="1",
        key=APP_KEY,
        secret=APP_SECRET,
        encryption_master_key_base64=base64.b64encode(ENCRYPTION_KEY).decode(),
    )
    cid = _connect(lambda_endpoint)
    socket_id = _socket(cid)
    for channel in ("private-team-9", "private-encrypted-team-9"):
        signed = sdk.authenticate(channel=channel, socket_id=socket_id)
        frame = _send(
            cid, {"event": "pusher:subscribe", "data": {"channel": channel, "auth": signed["auth"]}}
        )
        assert frame["event"] == "pusher_internal:subscription_succeeded"
    presence = sdk.authenticate(
        channel="presence-team-9",
        socket_id=socket_id,
        custom_data={"user_id": "u-9", "user_info": {"name": "Nine"}},
    )
    frame = _send(
        cid, {"event": "pusher:subscribe", "data": {"channel": "presence-team-9", **presence}}
    )
    assert frame["data"]["presence"]["hash"] == {"u-9": {"name": "Nine"}}
    user = sdk.authenticate_user(socket_id, {"id": "u-9", "user_info": {"name": "Nine"}})
    frame = _send(cid, {"event": "pusher:signin", "data": user})
    assert frame == {"event": "pusher:signin_success", "data": {"user_data": user["user_data"]}}


def _subscribe_error(cid: str, data: dict[str, Any]) -> dict[str, Any]:
    frame = _send(cid, {"event": "pusher:subscribe", "data": data})
    assert frame["event"] == "pusher:subscription_error"
    assert frame["channel"] == data["channel"]
    return dict(frame["data"])


def test_refused_subscriptions_name_their_channel(
    env: ConnectionsState, lambda_endpoint: LambdaInvokeEndpoint
) -> None:
    cid, other = _connect(lambda_endpoint), _connect(lambda_endpoint)
    good = signing.channel_auth(APP_KEY, APP_SECRET, _socket(other), "private-a")
    channel_data = signing.presence_channel_data("alice")
    presence_auth = signing.channel_auth(
        APP_KEY, APP_SECRET, _socket(cid), "presence-a", channel_data
    )
    auth_errors = [
        {"channel": "private-a"},  # no signature
        {"channel": "private-a", "auth": f"{APP_KEY}:{'0' * 64}"},  # wrong signature
        {"channel": "private-a", "auth": good},  # another socket's signature, replayed
        {"channel": "private-a", "auth": "other-key:" + good.split(":")[1]},
        {"channel": "presence-a", "auth": presence_auth, "channel_data": '{"user_id":"admin"}'},
        {"channel": "presence-a", "auth": presence_auth},  # no channel_data
    ]
    for data in auth_errors:
        error = _subscribe_error(cid, data)
        assert (error["type"], error["status"]) == ("AuthError", 401), data
    bad_name = _subscribe_error(cid, {"channel": "team 1"})
    assert (bad_name["type"], bad_name["status"]) == ("InvalidChannel", 400)
    user_channel = _subscribe_error(cid, {"channel": "#server-to-user-alice"})
    assert user_channel["type"] == "AuthError"
    assert not env.frames(other)[1:]  # nothing leaked to anyone


def test_subscribing_twice_and_unsubscribing_a_stranger_are_errors(
    env: ConnectionsState, lambda_endpoint: LambdaInvokeEndpoint
) -> None:
    cid = _connect(lambda_endpoint)
    _subscribe(cid, "team-1")
    again = _send(cid, {"event": "pusher:subscribe", "data": {"channel": "team-1"}})
    assert again == {
        "event": "pusher:error",
        "channel": "team-1",
        "data": {"code": None, "message": "Existing subscription to channel team-1"},
    }
    never = _send(cid, {"event": "pusher:unsubscribe", "data": {"channel": "team-2"}})
    assert never["data"] == {"code": None, "message": "Not subscribed to channel team-2"}


# -- pusher:signin and users ----------------------------------------------------------------


def test_signin_then_send_to_user(
    env: ConnectionsState, lambda_endpoint: LambdaInvokeEndpoint
) -> None:
    from milequest.services import get_service

    cid, stranger = _connect(lambda_endpoint), _connect(lambda_endpoint)
    user_data = json.dumps({"id": "walker-1"})
    auth = signing.user_auth(APP_KEY, APP_SECRET, _socket(cid), user_data)
    frame = _send(cid, {"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}})
    assert frame == {"event": "pusher:signin_success", "data": {"user_data": user_data}}
    # pusher-js then subscribes to its server-to-user channel.
    joined = _send(
        cid, {"event": "pusher:subscribe", "data": {"channel": "#server-to-user-walker-1"}}
    )
    assert joined["event"] == "pusher_internal:subscription_succeeded"
    get_service("websocket").send_to_user("walker-1", "badge", {"miles": 100})
    assert env.frames(cid)[-1] == {
        "event": "badge",
        "channel": "#server-to-user-walker-1",
        "data": {"miles": 100},
    }
    assert len(env.frames(stranger)) == 1  # connection_established only


@pytest.mark.parametrize(
    "data",
    [
        {"auth": f"{APP_KEY}:{'0' * 64}", "user_data": '{"id":"walker-1"}'},
        {"user_data": '{"id":"walker-1"}'},
        {"auth": "x"},
        {"auth": "SIGNED", "user_data": '{"name":"no id"}'},
        {"auth": "SIGNED", "user_data": '{"id":""}'},
        {"auth": "SIGNED", "user_data": "not json"},
    ],
)
def test_refused_signins_get_4009(
    env: ConnectionsState, lambda_endpoint: LambdaInvokeEndpoint, data: dict[str, Any]
) -> None:
    cid = _connect(lambda_endpoint)
    if data.get("auth") == "SIGNED":
        data = {
            **data,
            "auth": signing.user_auth(APP_KEY, APP_SECRET, _socket(cid), data["user_data"]),
        }
    frame = _send(cid, {"event": "pusher:signin", "data": data})
    assert frame["event"] == "pusher:error"
    expected = 4009 if "user_data" in data else None  # no user_data: a malformed frame
    assert frame["data"]["code"] == expected


# -- client events ---------------------------------------------------------------------------


def test_client_events(
    env: ConnectionsState, lambda_endpoint: LambdaInvokeEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, outsider = (_connect(lambda_endpoint) for _ in range(3))
    _subscribe(a, "presence-chat", "a")
    _subscribe(b, "presence-chat", "b")
    _subscribe(outsider, "team-chat")
    _subscribe(a, "private-encrypted-x", "a")
    assert (
        _reply(a, {"event": "client-typing", "channel": "presence-chat", "data": {"on": True}})
        is None
    )
    assert env.frames(b)[-1] == {
        "event": "client-typing",
        "channel": "presence-chat",
        "data": {"on": True},
        "user_id": "a",
    }
    assert all(f["event"] != "client-typing" for f in env.frames(a))  # never echoed
    refused = [
        (outsider, {"event": "client-x", "channel": "team-chat", "data": {}}),
        (outsider, {"event": "client-x", "channel": "presence-chat", "data": {}}),
        (a, {"event": "client-x", "channel": "private-encrypted-x", "data": {}}),
        (a, {"event": "client-x", "data": {}}),
    ]
    for cid, message in refused:
        frame = _send(cid, message)
        assert frame["event"] == "pusher:error", message
        assert frame["data"]["code"] is None
    # The limit is 5 per second here: the sixth within the second is refused with 4301. The
    # rate limiter's clock stands still, so that a slow machine cannot spread the burst over
    # two seconds.
    frozen = SimpleNamespace(time=lambda: 1_800_000_000.5)
    monkeypatch.setattr(apigateway_module, "time", frozen)
    codes = []
    for _ in range(7):
        reply = _reply(a, {"event": "client-spam", "channel": "presence-chat", "data": {}})
        codes.append(json.loads(reply)["data"]["code"] if reply else "sent")
    assert codes == ["sent"] * 5 + [4301, 4301]


# -- malformed frames ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "{not json",
        "[1, 2]",
        '"text"',
        "{}",
        '{"event": 5}',
        '{"event": ""}',
        '{"event": "pusher:subscribe"}',
        '{"event": "pusher:subscribe", "data": {"channel": 5}}',
        '{"event": "pusher:subscribe", "data": "text"}',
        '{"event": "pusher:unknown"}',
        '{"event": "whatever"}',
        '{"event": "client-x", "channel": 5}',
        "[" * 5000 + "]" * 5000,
        '{"event": "pusher:ping", "data": {"x": ' + "[" * 200 + "]" * 200 + "}}",
        '{"event": "\\ud800"}',
        "NaN",
    ],
)
def test_malformed_frames_get_pusher_errors(
    env: ConnectionsState, lambda_endpoint: LambdaInvokeEndpoint, raw: str
) -> None:
    cid = _connect(lambda_endpoint)
    frame = _send(cid, raw=raw)
    assert frame["event"] == "pusher:error"
    assert frame["data"]["code"] is None
    assert isinstance(frame["data"]["message"], str)


def test_binary_and_empty_bodies(
    env: ConnectionsState, lambda_endpoint: LambdaInvokeEndpoint
) -> None:
    cid = _connect(lambda_endpoint)
    ping = base64.b64encode(b'{"event":"pusher:ping","data":{}}').decode()
    event = events.message_event(cid, None, raw=ping)
    event["isBase64Encoded"] = True
    assert json.loads(handlers.on_message(event, None)["body"])["event"] == "pusher:pong"
    for body in (None, "", 42, "!!not base64"):
        event = events.message_event(cid, None, raw="x")
        event["body"] = body
        event["isBase64Encoded"] = body == "!!not base64"
        assert json.loads(handlers.on_message(event, None)["body"])["event"] == "pusher:error"


# -- nothing ever raises ---------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
_FRAMES = st.fixed_dictionaries(
    {
        "event": st.sampled_from(
            [
                "pusher:subscribe",
                "pusher:unsubscribe",
                "pusher:signin",
                "pusher:ping",
                "client-x",
                "other",
            ]
        )
        | st.text(max_size=30)
    },
    optional={"channel": st.text(max_size=30) | _JSON, "data": _JSON},
)


@given(frame=_FRAMES)
def test_property_any_frame_gets_a_frame_or_nothing(frame: dict[str, Any]) -> None:
    # The mock provider (no configuration): the handlers' own parsing and error shaping.
    cid = "AAAAAAAAAAAAAAA="
    reply = handlers.on_message(events.message_event(cid, frame), None)
    assert reply["statusCode"] == 200
    if "body" in reply:
        parsed = json.loads(reply["body"])
        assert isinstance(parsed["event"], str)
        assert parsed["event"].startswith(("pusher:", "pusher_internal:"))


@given(
    event=_JSON,
    body=st.text(max_size=200) | st.binary(max_size=50).map(lambda b: b.decode("latin-1")),
)
def test_property_any_event_shape_is_survived(event: Any, body: str) -> None:
    for handler in (handlers.on_message, handlers.on_connect, handlers.on_disconnect):
        result = handler(event, None)
        assert isinstance(result, dict)
        assert isinstance(result["statusCode"], int)
        shaped = {"requestContext": {"connectionId": "AAAAAAAAAAAAAAA="}, "body": body}
        assert handler(shaped, None)["statusCode"] in (200, 500)
    assert handlers.announce(event if isinstance(event, dict) else {"x": event}, None)[
        "announced"
    ] in (True, False)


@pytest.fixture(autouse=True)
def _mock_provider(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Tests without the ``env`` fixture run the handlers over the mock provider."""
    if "env" not in request.fixturenames:
        monkeypatch.setenv("WEBSOCKET_PROVIDER", "mock")


def test_a_provider_failure_is_a_frame_not_a_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    # apigateway without its table or endpoint: the service cannot even be created.
    monkeypatch.setenv("WEBSOCKET_PROVIDER", "apigateway")
    cid = new_connection_id()
    frame = _send(cid, {"event": "pusher:subscribe", "data": {"channel": "team"}})
    assert frame["event"] == "pusher:subscription_error"
    assert frame["data"]["type"] == "ServerError"
    assert _send(cid, {"event": "pusher:ping"})["event"] == "pusher:pong"
    connect = events.connect_event(cid, None)
    connect["queryStringParameters"] = events.PUSHER_JS_QUERY
    assert handlers.on_connect(connect, None)["statusCode"] == 500
    assert handlers.on_disconnect(events.disconnect_event(cid), None) == {"statusCode": 200}
    broken = handlers.on_message({"requestContext": {}, "body": '{"event": "pusher:ping"}'}, None)
    assert json.loads(broken["body"])["event"] == "pusher:error"


def test_handlers_refuse_a_provider_without_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBSOCKET_PROVIDER", "pusher")
    monkeypatch.setenv("PUSHER_APP_ID", "1")
    monkeypatch.setenv("PUSHER_KEY", "k")
    monkeypatch.setenv("PUSHER_SECRET", "s")
    frame = _send(new_connection_id(), {"event": "pusher:unsubscribe", "data": {"channel": "team"}})
    assert frame["event"] == "pusher:error"


def test_handler_module_imports_no_service_code() -> None:
    import subprocess
    import sys

    code = (
        "import sys, milequest.handlers.websocket\n"
        "heavy = ('boto3', 'botocore.client', 'pusher', 'requests', 'pydantic',\n"
        "         'milequest.services.websocket.service')\n"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# -- the optional token authorizer ------------------------------------------------------------


def test_authorizer_allows_a_valid_token_from_query_or_header(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEBSOCKET_APP_KEY", APP_KEY)
    monkeypatch.setenv("WEBSOCKET_APP_SECRET", APP_SECRET)
    token = issue_connection_token("alice", ttl_seconds=60)
    for event in (
        events.authorizer_event(token=token),
        events.authorizer_event(header=f"Bearer {token}"),
        events.authorizer_event(header=token),
    ):
        decision = handlers.authorize(event, None)
        assert decision["principalId"] == "alice"
        assert decision["context"] == {"userId": "alice"}
        [statement] = decision["policyDocument"]["Statement"]
        assert statement == {
            "Action": "execute-api:Invoke",
            "Effect": "Allow",
            "Resource": events.METHOD_ARN,
        }


@pytest.mark.parametrize(
    "event",
    [
        events.authorizer_event(),
        events.authorizer_event(token="mq1.forged.0000"),
        events.authorizer_event(token=signing.mint_token("wrong-secret", "alice", 60)),
        events.authorizer_event(token=signing.mint_token(APP_SECRET, "alice", -1)),
        events.authorizer_event(header="Basic dXNlcjpwYXNz"),
    ],
)
def test_authorizer_refuses_bad_tokens(
    event: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBSOCKET_APP_KEY", APP_KEY)
    monkeypatch.setenv("WEBSOCKET_APP_SECRET", APP_SECRET)
    with pytest.raises(Exception, match=r"\AUnauthorized\Z"):
        handlers.authorize(event, None)


def test_authorizer_verifier_is_pluggable() -> None:
    def verifier(token: str) -> str:
        if token != "let-me-in":
            raise ValueError("no")
        return "bob"

    handlers.set_token_verifier(verifier)
    try:
        assert (
            handlers.authorize(events.authorizer_event(token="let-me-in"), None)["principalId"]
            == "bob"
        )
        with pytest.raises(Exception, match="Unauthorized"):
            handlers.authorize(events.authorizer_event(token="nope"), None)
    finally:
        handlers.set_token_verifier(None)
