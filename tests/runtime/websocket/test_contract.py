"""The same behaviour from every provider: mock, pusher (local server) and apigateway."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from milequest.services.websocket import (
    BatchEvent,
    ChannelUser,
    ConnectionService,
    WebhookEvent,
    WebSocketError,
    WebSocketErrorCode,
    signing,
    webhooks,
)
from milequest.services.websocket.mock import MockWebSocketService

from .conftest import APP_KEY, APP_SECRET, ENCRYPTION_KEY, new_connection_id
from .harness import ApiGatewayHarness, Harness, MockHarness, PusherApiHarness, PusherHarness


@pytest.fixture(params=["mock", "pusher", "apigateway", "pusher-over-our-api"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "mock":
        yield MockHarness(
            MockWebSocketService(
                app_key=APP_KEY, app_secret=APP_SECRET, encryption_master_key=ENCRYPTION_KEY
            )
        )
    elif request.param == "pusher":
        yield PusherHarness(
            request.getfixturevalue("pusher_service"), request.getfixturevalue("pusher_state")
        )
    elif request.param == "apigateway":
        yield ApiGatewayHarness(
            request.getfixturevalue("apigw"), request.getfixturevalue("connections")
        )
    else:
        yield PusherApiHarness(
            request.getfixturevalue("pusher_over_our_api"),
            request.getfixturevalue("apigw"),
            request.getfixturevalue("connections"),
            request.getfixturevalue("pusher_api_server"),
        )


def _code(exc: pytest.ExceptionInfo[WebSocketError]) -> WebSocketErrorCode:
    code = exc.value.code
    assert isinstance(code, WebSocketErrorCode)
    return code


# -- trigger ------------------------------------------------------------------------------------


def test_trigger_reaches_every_subscriber(harness: Harness) -> None:
    a = harness.add_subscriber("team-123")
    b = harness.add_subscriber("team-123")
    other = harness.add_subscriber("team-999")
    data = {"activityId": "abc123", "distance": 5.2}
    result = harness.service.trigger("team-123", "activity-update", data)
    expected = [{"event": "activity-update", "channel": "team-123", "data": data}]
    assert harness.received(a) == expected
    assert harness.received(b) == expected
    assert harness.received(other) == []
    assert result.channels == ["team-123"]
    # Pusher fans out on its side and cannot count; the others count every delivery.
    expected_count = None if harness.service.provider_name == "pusher" else 2
    assert result.delivered == expected_count


def test_socket_id_excludes_the_sender(harness: Harness) -> None:
    sender = harness.add_subscriber("private-team-1", "u1")
    receiver = harness.add_subscriber("private-team-1", "u2")
    harness.service.trigger(["private-team-1"], "moved", {"km": 1}, socket_id=sender)
    assert harness.received(sender) == []
    assert [m["event"] for m in harness.received(receiver)] == ["moved"]


def test_trigger_on_many_channels(harness: Harness) -> None:
    first = harness.add_subscriber("chan-0")
    last = harness.add_subscriber("chan-149")
    channels = [f"chan-{i}" for i in range(150)]
    result = harness.service.trigger(channels, "hello", "text data")
    assert harness.received(first) == [{"event": "hello", "channel": "chan-0", "data": "text data"}]
    assert harness.received(last) == [
        {"event": "hello", "channel": "chan-149", "data": "text data"}
    ]
    assert result.channels == channels


def test_trigger_batch_accepts_models_and_dicts(harness: Harness) -> None:
    sub = harness.add_subscriber("batch")
    excluded = harness.add_subscriber("batch")
    events: list[BatchEvent | dict[str, Any]] = [
        {"channel": "batch", "name": f"e{i}", "data": {"i": i}} for i in range(11)
    ]
    events.append(BatchEvent(channel="batch", name="e11", data={"i": 11}, socket_id=excluded))
    result = harness.service.trigger_batch(events)
    assert [m["event"] for m in harness.received(sub)] == [f"e{i}" for i in range(12)]
    assert [m["event"] for m in harness.received(excluded)] == [f"e{i}" for i in range(11)]
    assert result.events == 12


# -- channel auth -------------------------------------------------------------------------------


def test_private_channel_auth(harness: Harness) -> None:
    sid = harness.new_socket_id()
    auth = harness.service.authenticate_channel(sid, "private-team-123", "user-1")
    key, _, sig = auth["auth"].partition(":")
    assert key == APP_KEY
    assert sig == signing.sign(APP_SECRET, f"{sid}:private-team-123")
    assert set(auth) == {"auth"}


def test_presence_channel_auth_signs_the_returned_channel_data(harness: Harness) -> None:
    sid = harness.new_socket_id()
    user = {"user_id": "u-7", "user_info": {"name": "Zoë"}}
    auth = harness.service.authenticate_channel(sid, "presence-team-1", user)
    assert json.loads(auth["channel_data"]) == user
    assert auth["auth"] == signing.channel_auth(
        APP_KEY, APP_SECRET, sid, "presence-team-1", auth["channel_data"]
    )
    by_id = harness.service.authenticate_channel(sid, "presence-team-1", "u-7")
    assert json.loads(by_id["channel_data"]) == {"user_id": "u-7"}


def test_channel_auth_refuses_public_and_userless_presence(harness: Harness) -> None:
    sid = harness.new_socket_id()
    with pytest.raises(WebSocketError) as err:
        harness.service.authenticate_channel(sid, "team-1", "u")
    assert _code(err) is WebSocketErrorCode.INVALID_CHANNEL
    with pytest.raises(WebSocketError) as err:
        harness.service.authenticate_channel(sid, "presence-team-1")
    assert _code(err) is WebSocketErrorCode.INVALID_USER
    with pytest.raises(WebSocketError) as err:
        harness.service.authenticate_channel(sid, "presence-team-1", {"user_info": {}})
    assert _code(err) is WebSocketErrorCode.INVALID_USER


# -- channel state ------------------------------------------------------------------------------


def test_channel_info_counts_subscriptions_and_users(harness: Harness) -> None:
    harness.add_subscriber("presence-room", "alice")
    harness.add_subscriber("presence-room", "alice")
    harness.add_subscriber("presence-room", "bob")
    info = harness.service.get_channel_info("presence-room")
    assert (info.occupied, info.subscription_count, info.user_count) == (True, 3, 2)
    empty = harness.service.get_channel_info("nobody-here")
    assert (empty.occupied, empty.subscription_count, empty.user_count) == (False, 0, None)


def test_channel_users_of_a_presence_channel(harness: Harness) -> None:
    harness.add_subscriber("presence-room", "alice", {"name": "A"})
    harness.add_subscriber("presence-room", "bob")
    harness.add_subscriber("presence-room", "bob")
    users = harness.service.get_channel_users("presence-room")
    assert sorted(u.id for u in users) == ["alice", "bob"]
    assert all(isinstance(u, ChannelUser) for u in users)
    with pytest.raises(WebSocketError) as err:
        harness.service.get_channel_users("private-room")
    assert _code(err) is WebSocketErrorCode.INVALID_CHANNEL


# -- webhooks -----------------------------------------------------------------------------------


def _hook(events: list[dict[str, Any]], **kwargs: Any) -> tuple[dict[str, str], bytes]:
    return webhooks.signed_webhook(APP_KEY, APP_SECRET, events, **kwargs)


def test_webhooks_validate_and_parse(harness: Harness) -> None:
    headers, body = _hook(
        [
            {"name": "channel_occupied", "channel": "team-1"},
            {"name": "member_added", "channel": "presence-x", "user_id": "u1"},
            {
                "name": "client_event",
                "channel": "private-x",
                "event": "client-typing",
                "data": "{}",
                "socket_id": "1.2",
            },
        ]
    )
    lowered = {k.lower(): v for k, v in headers.items()}
    assert harness.service.validate_webhook(lowered, body.decode())
    events = harness.service.parse_webhook(headers, body)
    assert [e.name for e in events] == ["channel_occupied", "member_added", "client_event"]
    assert events[1] == WebhookEvent(name="member_added", channel="presence-x", user_id="u1")
    assert events[2].event == "client-typing"


@pytest.mark.parametrize(
    "problem",
    [
        "tampered",
        "wrong-key",
        "stale",
        "future",
        "huge-time",
        "surrogate-key",
        "surrogate-body",
        "unsigned",
        "garbage",
        "no-headers",
        "no-body",
    ],
)
def test_bad_webhooks_are_refused(harness: Harness, problem: str) -> None:
    headers: Any
    body: Any
    headers, body = _hook([{"name": "channel_vacated", "channel": "team-1"}])
    if problem == "tampered":
        body = body.replace(b"team-1", b"team-2")
    elif problem == "wrong-key":
        headers["X-Pusher-Key"] = "someone-else"
    elif problem == "stale":
        headers, body = _hook(
            [{"name": "channel_vacated", "channel": "team-1"}],
            time_ms=int((time.time() - 301) * 1000),
        )
    elif problem == "future":  # a captured body stamped ahead would stay replayable
        headers, body = _hook(
            [{"name": "channel_vacated", "channel": "team-1"}],
            time_ms=int((time.time() + 301) * 1000),
        )
    elif problem == "huge-time":
        headers, body = _hook([{"name": "channel_vacated", "channel": "team-1"}], time_ms=10**400)
    elif problem == "surrogate-key":
        headers["X-Pusher-Key"] = "\ud800"
    elif problem == "surrogate-body":
        body = body.decode().replace("team-1", "team-\ud800")
    elif problem == "unsigned":
        del headers["X-Pusher-Signature"]
    elif problem == "no-headers":
        headers = None
    elif problem == "no-body":
        body = None
    else:
        body = b"not json"
        headers["X-Pusher-Signature"] = signing.sign(APP_SECRET, body)
    assert harness.service.validate_webhook(headers, body) is False
    with pytest.raises(WebSocketError) as err:
        harness.service.parse_webhook(headers, body)
    assert _code(err) is WebSocketErrorCode.INVALID_WEBHOOK


# -- bad input: typed errors before any network call -------------------------------------------

_BAD_TRIGGERS: list[tuple[str, dict[str, Any], WebSocketErrorCode]] = [
    ("space", {"channels": "team 1"}, WebSocketErrorCode.INVALID_CHANNEL),
    ("too-long", {"channels": "c" * 201}, WebSocketErrorCode.INVALID_CHANNEL),
    ("empty-list", {"channels": []}, WebSocketErrorCode.INVALID_CHANNEL),
    ("not-a-name", {"channels": 42}, WebSocketErrorCode.INVALID_CHANNEL),
    ("event-too-long", {"event": "e" * 201}, WebSocketErrorCode.INVALID_EVENT),
    ("event-empty", {"event": ""}, WebSocketErrorCode.INVALID_EVENT),
    ("event-reserved", {"event": "pusher:subscribe"}, WebSocketErrorCode.INVALID_EVENT),
    ("socket-id", {"socket_id": "not a socket!"}, WebSocketErrorCode.INVALID_SOCKET_ID),
    ("unserializable", {"data": {"when": object()}}, WebSocketErrorCode.INVALID_MESSAGE),
]


@pytest.mark.parametrize(("case", "args", "code"), _BAD_TRIGGERS, ids=[c[0] for c in _BAD_TRIGGERS])
def test_bad_trigger_input(
    harness: Harness, case: str, args: dict[str, Any], code: WebSocketErrorCode
) -> None:
    call: dict[str, Any] = {"channels": "team-1", "event": "ev", "data": {}, **args}
    before = harness.network_calls()
    with pytest.raises(WebSocketError) as err:
        harness.service.trigger(**call)
    assert _code(err) is code
    assert harness.network_calls() == before


def test_payload_limit_counts_utf8_bytes(harness: Harness) -> None:
    limit = harness.service.max_payload_bytes
    # Fewer characters than the limit, more bytes than the limit ("é" is 2 bytes).
    text = "é" * (limit // 2 + 10)
    assert len(text) < limit
    before = harness.network_calls()
    with pytest.raises(WebSocketError) as err:
        harness.service.trigger("team-1", "ev", text)
    assert _code(err) is WebSocketErrorCode.PAYLOAD_TOO_LARGE
    assert harness.network_calls() == before
    sub = harness.add_subscriber("team-1")
    harness.service.trigger("team-1", "ev", "a" * (limit - 200))
    assert len(harness.received(sub)) == 1


def test_bad_batches(harness: Harness) -> None:
    before = harness.network_calls()
    cases: list[tuple[Any, WebSocketErrorCode]] = [
        ([], WebSocketErrorCode.INVALID_EVENT),
        ([{"channel": "a", "data": 1}], WebSocketErrorCode.INVALID_EVENT),
        ([{"channel": "bad channel", "name": "e"}], WebSocketErrorCode.INVALID_CHANNEL),
        ([{"channel": "a", "name": "e", "unknown": 1}], WebSocketErrorCode.INVALID_EVENT),
        (
            [{"channel": "a", "name": "e", "data": {"x": {1, 2}}}],
            WebSocketErrorCode.INVALID_MESSAGE,
        ),
        ("not a list", WebSocketErrorCode.INVALID_EVENT),
    ]
    for events, code in cases:
        with pytest.raises(WebSocketError) as err:
            harness.service.trigger_batch(events)
        assert _code(err) is code, events
    assert harness.network_calls() == before


def test_bad_auth_input(harness: Harness) -> None:
    with pytest.raises(WebSocketError) as err:
        harness.service.authenticate_channel("bad id!", "private-a", "u")
    assert _code(err) is WebSocketErrorCode.INVALID_SOCKET_ID
    with pytest.raises(WebSocketError) as err:
        harness.service.authenticate_channel(harness.new_socket_id(), "private-a b", "u")
    assert _code(err) is WebSocketErrorCode.INVALID_CHANNEL
    with pytest.raises(WebSocketError) as err:
        harness.service.get_channel_info("a", attributes=["bogus"])
    assert _code(err) is WebSocketErrorCode.INVALID_CHANNEL
    with pytest.raises(WebSocketError) as err:
        harness.service.get_channel_info("a", attributes=None)  # type: ignore[arg-type]
    assert _code(err) is WebSocketErrorCode.INVALID_CHANNEL


# Only the providers that hold connections (Pusher keeps them in its own service).
@pytest.mark.parametrize("harness", ["mock", "apigateway"], indirect=True)
def test_connections_need_a_valid_user_id(harness: Harness) -> None:
    service = harness.service
    assert isinstance(service, ConnectionService)
    for user_id in (5, "", "u" * 201, "has space"):
        with pytest.raises(WebSocketError) as err:
            service.connect(new_connection_id(), user_id)  # type: ignore[arg-type]
        assert _code(err) is WebSocketErrorCode.INVALID_USER


def test_health_check(harness: Harness) -> None:
    status = harness.service.health_check()
    assert status.healthy
    assert (status.service, status.provider) == ("websocket", harness.service.provider_name)


# -- users (pusher:signin), encrypted channels, channel lists ---------------------------------


def test_user_auth_is_what_the_pusher_sdk_signs(harness: Harness) -> None:
    import pusher

    sid = harness.new_socket_id()
    ours = harness.service.authenticate_user(sid, {"id": "u-1", "user_info": {"name": "A"}})
    official = pusher.Pusher(app_id="1", key=APP_KEY, secret=APP_SECRET).authenticate_user(
        sid, {"id": "u-1", "user_info": {"name": "A"}}
    )
    assert json.loads(ours["user_data"]) == json.loads(official["user_data"])
    assert ours["auth"] == signing.user_auth(APP_KEY, APP_SECRET, sid, ours["user_data"])
    by_id = harness.service.authenticate_user(sid, "u-2")
    assert json.loads(by_id["user_data"]) == {"id": "u-2"}


def test_send_to_user_reaches_only_that_users_connections(harness: Harness) -> None:
    first = harness.add_user_connection("walker-1")
    second = harness.add_user_connection("walker-1")
    other = harness.add_user_connection("walker-2")
    harness.service.send_to_user("walker-1", "badge", {"miles": 100})
    expected = [{"event": "badge", "channel": "#server-to-user-walker-1", "data": {"miles": 100}}]
    assert harness.received(first) == expected
    assert harness.received(second) == expected
    assert harness.received(other) == []


def test_terminate_user_connections(harness: Harness) -> None:
    doomed = harness.add_user_connection("walker-1")
    kept = harness.add_user_connection("walker-2")
    count = harness.service.terminate_user_connections("walker-1")
    assert count == (None if harness.service.provider_name == "pusher" else 1)
    harness.service.send_to_user("walker-1", "after", {})
    harness.service.send_to_user("walker-2", "after", {})
    assert harness.received(doomed) == []
    assert [f["event"] for f in harness.received(kept)] == ["after"]


def test_encrypted_channels(harness: Harness) -> None:
    from milequest.services.websocket import encryption

    sid = harness.new_socket_id()
    auth = harness.service.authenticate_channel(sid, "private-encrypted-team-1", "u")
    secret = encryption.shared_secret("private-encrypted-team-1", ENCRYPTION_KEY)
    assert auth["shared_secret"] == base64.b64encode(secret).decode()
    sub = harness.add_subscriber("private-encrypted-team-1", "u")
    harness.service.trigger("private-encrypted-team-1", "secret", {"km": 5})
    [frame] = harness.received(sub)
    assert set(frame["data"]) == {"nonce", "ciphertext"}  # the server never sees plain text
    plain = encryption.decrypt(
        "private-encrypted-team-1", json.dumps(frame["data"]), ENCRYPTION_KEY
    )
    assert json.loads(plain) == {"km": 5}
    with pytest.raises(WebSocketError) as err:
        harness.service.trigger(["private-encrypted-a", "team-1"], "e", {})
    assert _code(err) is WebSocketErrorCode.INVALID_CHANNEL


def test_channel_list(harness: Harness) -> None:
    harness.add_subscriber("presence-room", "alice")
    harness.add_subscriber("presence-room", "bob")
    harness.add_subscriber("team-1")
    channels = harness.service.get_channels()
    assert set(channels) == {"presence-room", "team-1"}
    presence = harness.service.get_channels("presence-", ["user_count"])
    assert list(presence) == ["presence-room"]
    assert presence["presence-room"].user_count == 2
    for prefix, attributes in ((None, ["user_count"]), ("team-", ["user_count"]), (None, ["x"])):
        with pytest.raises(WebSocketError) as err:
            harness.service.get_channels(prefix, attributes)
        assert _code(err) is WebSocketErrorCode.INVALID_CHANNEL
