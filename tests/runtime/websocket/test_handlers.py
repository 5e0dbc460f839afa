"""The Lambda handlers, driven with API Gateway's WebSocket event shapes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from milequest.handlers import websocket as handlers
from milequest.services.websocket import issue_connection_token, signing

from . import events
from .conftest import APP_KEY, APP_SECRET, new_connection_id
from .endpoints import ConnectionsState


@pytest.fixture
def env(
    table: str,
    management_endpoint: str,
    connections: ConnectionsState,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ConnectionsState]:
    """The configuration a deployed function gets, read by the registry at call time."""
    monkeypatch.setenv("WEBSOCKET_PROVIDER", "apigateway")
    monkeypatch.setenv("CONNECTIONS_TABLE", table)
    monkeypatch.setenv("APIGW_MANAGEMENT_ENDPOINT", management_endpoint)
    monkeypatch.setenv("WEBSOCKET_APP_KEY", APP_KEY)
    monkeypatch.setenv("WEBSOCKET_APP_SECRET", APP_SECRET)
    yield connections
    handlers.set_token_verifier(None)


def _send(connection_id: str, body: Any = None, raw: str | None = None) -> dict[str, Any]:
    reply = handlers.on_message(events.message_event(connection_id, body, raw=raw), None)
    assert reply["statusCode"] == 200
    frame: dict[str, Any] = json.loads(reply["body"])
    return frame


def _connect(user_id: str) -> str:
    cid = new_connection_id()
    assert handlers.on_connect(events.connect_event(cid, user_id), None) == {"statusCode": 200}
    return cid


def _auth(cid: str, channel: str, channel_data: str | None = None) -> str:
    return signing.channel_auth(APP_KEY, APP_SECRET, cid, channel, channel_data)


# -- authorizer -------------------------------------------------------------------------------


@pytest.mark.usefixtures("env")
def test_authorizer_allows_a_valid_token_from_query_or_header() -> None:
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


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize(
    "event",
    [
        events.authorizer_event(),
        events.authorizer_event(token="mq1.forged.0000"),
        events.authorizer_event(token=signing.mint_token("wrong-secret", "alice", 60)),
        events.authorizer_event(token=signing.mint_token(APP_SECRET, "alice", -5)),
        events.authorizer_event(header="Bearer "),
    ],
    ids=["missing", "garbage", "wrong-secret", "expired", "empty-bearer"],
)
def test_authorizer_refuses_bad_tokens(event: dict[str, Any]) -> None:
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        handlers.authorize(event, None)


@pytest.mark.usefixtures("env")
def test_authorizer_verifier_is_pluggable(monkeypatch: pytest.MonkeyPatch) -> None:
    def jwt_like(token: str) -> str:
        if token != "header.payload.signature":
            raise ValueError("bad jwt")
        return "cognito-sub-1"

    handlers.set_token_verifier(jwt_like)
    decision = handlers.authorize(events.authorizer_event(token="header.payload.signature"), None)
    assert decision["context"] == {"userId": "cognito-sub-1"}
    with pytest.raises(Exception, match="Unauthorized"):
        handlers.authorize(events.authorizer_event(token=issue_connection_token("a")), None)

    handlers.set_token_verifier(None)
    monkeypatch.setenv("WEBSOCKET_TOKEN_VERIFIER", f"{__name__}:uppercase_verifier")
    decision = handlers.authorize(events.authorizer_event(token="bob"), None)
    assert decision["principalId"] == "BOB"


def uppercase_verifier(token: str) -> str:
    """A verifier named by WEBSOCKET_TOKEN_VERIFIER in the test above."""
    return token.upper()


# -- messages ---------------------------------------------------------------------------------


def test_session_with_public_private_and_presence_channels(env: ConnectionsState) -> None:
    alice, bob = _connect("alice"), _connect("bob")
    assert _send(alice, {"action": "whoami"}) == {
        "event": "connection_established",
        "data": {"socket_id": alice},
    }
    assert _send(alice, {"action": "ping"}) == {"event": "pong"}
    assert _send(alice, {"action": "subscribe", "channel": "team-1"}) == {
        "event": "subscription_succeeded",
        "channel": "team-1",
        "data": {},
    }
    private = {"action": "subscribe", "channel": "private-team-1"}
    assert _send(alice, {**private, "auth": _auth(alice, "private-team-1")})["event"] == (
        "subscription_succeeded"
    )
    data_b = signing.presence_channel_data("bob", {"name": "Bob"})
    data_a = signing.presence_channel_data("alice")
    sub_b = {"action": "subscribe", "channel": "presence-team-1", "channel_data": data_b}
    _send(bob, {**sub_b, "auth": _auth(bob, "presence-team-1", data_b)})
    sub_a = {"action": "subscribe", "channel": "presence-team-1", "channel_data": data_a}
    frame = _send(alice, {**sub_a, "auth": _auth(alice, "presence-team-1", data_a)})
    assert frame == {
        "event": "subscription_succeeded",
        "channel": "presence-team-1",
        "data": {
            "presence": {
                "count": 2,
                "ids": ["alice", "bob"],
                "hash": {"alice": None, "bob": {"name": "Bob"}},
            }
        },
    }
    # bob heard alice arrive
    assert env.frames(bob)[-1] == {
        "event": "member_added",
        "channel": "presence-team-1",
        "data": {"user_id": "alice", "user_info": None},
    }
    # a client event on the presence channel reaches bob, not alice
    reply = _send(
        alice,
        {"action": "client-event", "channel": "presence-team-1", "event": "client-hi", "data": 1},
    )
    assert reply["event"] == "client_event_sent"
    assert reply["data"] == {"event": "client-hi", "delivered": 1}
    assert env.frames(bob)[-1] == {"event": "client-hi", "channel": "presence-team-1", "data": 1}
    # unsubscribing and disconnecting
    assert _send(alice, {"action": "unsubscribe", "channel": "team-1"}) == {
        "event": "unsubscribed",
        "channel": "team-1",
    }
    assert handlers.on_disconnect(events.disconnect_event(alice), None) == {"statusCode": 200}
    assert env.frames(bob)[-1] == {
        "event": "member_removed",
        "channel": "presence-team-1",
        "data": {"user_id": "alice"},
    }


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"action": "subscribe", "channel": "private-x"}, "UNAUTHORIZED"),
        (
            {"action": "subscribe", "channel": "private-x", "auth": f"{APP_KEY}:{'a' * 64}"},
            "UNAUTHORIZED",
        ),
        ({"action": "subscribe", "channel": "bad channel!"}, "INVALID_CHANNEL"),
        ({"action": "subscribe"}, "INVALID_MESSAGE"),
        ({"action": "subscribe", "channel": "presence-x", "auth": 5}, "INVALID_MESSAGE"),
    ],
)
def test_subscription_errors(message: dict[str, Any], code: str) -> None:
    cid = _connect("mallory")
    frame = _send(cid, message)
    assert frame["event"] == "subscription_error"
    assert frame["channel"] == message.get("channel")
    assert frame["data"]["code"] == code
    assert frame["data"]["message"]


def test_forged_private_subscription_gets_no_events(env: ConnectionsState) -> None:
    cid = _connect("mallory")
    forged = signing.channel_auth(APP_KEY, "guessed-secret", cid, "private-team-9")
    frame = _send(cid, {"action": "subscribe", "channel": "private-team-9", "auth": forged})
    assert frame["event"] == "subscription_error"
    from milequest.services import get_service

    get_service("websocket").trigger("private-team-9", "secret-plans", {"x": 1})
    assert env.frames(cid) == []


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize(
    ("body", "raw", "code"),
    [
        (None, "{not json", "INVALID_MESSAGE"),
        ([1, 2], None, "INVALID_MESSAGE"),
        ({"action": "dance"}, None, "INVALID_MESSAGE"),
        ({"no": "action"}, None, "INVALID_MESSAGE"),
        ({"action": "client-event", "channel": "team-1", "event": "client-x"}, None, "FORBIDDEN"),
        (
            {"action": "client-event", "channel": "private-y", "event": "client-x"},
            None,
            "FORBIDDEN",
        ),
        (
            {"action": "client-event", "channel": "private-y", "event": "plain"},
            None,
            "INVALID_EVENT",
        ),
        ({"action": "client-event", "channel": "private-y"}, None, "INVALID_MESSAGE"),
        ({"action": "unsubscribe", "channel": "bad name"}, None, "INVALID_CHANNEL"),
    ],
)
def test_bad_messages_get_error_frames(body: Any, raw: str | None, code: str) -> None:
    cid = _connect("u")
    frame = _send(cid, body, raw=raw)
    assert frame["event"] == "error"
    assert frame["data"]["code"] == code


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize("body", [{"action": "ping"}, 42, ""])
def test_a_body_that_is_not_text_gets_an_error_frame(body: Any) -> None:
    event = events.message_event(_connect("u"), None)
    event["body"] = body
    frame = json.loads(handlers.on_message(event, None)["body"])
    assert frame["event"] == "error"
    assert frame["data"]["code"] == "INVALID_MESSAGE"


@pytest.mark.usefixtures("env")
def test_client_event_needs_membership() -> None:
    member, outsider = _connect("a"), _connect("b")
    _send(
        member, {"action": "subscribe", "channel": "private-z", "auth": _auth(member, "private-z")}
    )
    frame = _send(
        outsider,
        {"action": "client-event", "channel": "private-z", "event": "client-x", "data": {}},
    )
    assert (frame["event"], frame["channel"], frame["data"]["code"]) == (
        "error",
        "private-z",
        "FORBIDDEN",
    )


def test_nothing_raises_out_of_the_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    # No configuration at all: the service cannot even be created.
    monkeypatch.setenv("WEBSOCKET_PROVIDER", "apigateway")
    cid = new_connection_id()
    frame = _send(cid, {"action": "subscribe", "channel": "team"})
    assert frame["event"] == "subscription_error"
    assert frame["data"]["code"] == "CONFIGURATION"
    assert _send(cid, {"action": "ping"}) == {"event": "pong"}
    assert handlers.on_connect(events.connect_event(cid, "u"), None)["statusCode"] == 500
    assert handlers.on_disconnect(events.disconnect_event(cid), None) == {"statusCode": 200}
    broken = handlers.on_message({"requestContext": {}, "body": '{"action": "whoami"}'}, None)
    assert json.loads(broken["body"])["event"] == "error"


def test_handlers_refuse_a_provider_without_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBSOCKET_PROVIDER", "pusher")
    monkeypatch.setenv("PUSHER_APP_ID", "1")
    monkeypatch.setenv("PUSHER_KEY", "k")
    monkeypatch.setenv("PUSHER_SECRET", "s")
    frame = _send(new_connection_id(), {"action": "unsubscribe", "channel": "team"})
    assert frame["data"]["code"] == "CONFIGURATION"


def test_handler_module_imports_no_service_code() -> None:
    import subprocess
    import sys

    code = (
        "import sys, milequest.handlers.websocket\n"
        "heavy = ('boto3', 'botocore.client', 'pusher', 'requests', 'milequest.services')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
