"""Pusher's HTTP API through a real ASGI client: authentication, endpoints, refusals."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pusher
import pytest
from hypothesis import given
from hypothesis import strategies as st
from milequest.services import register_service
from milequest.services.websocket import create_websocket_service, protocol, signing
from milequest.services.websocket.mock import MockWebSocketService
from milequest.web import create_app

from .asgi import AsgiClient

APP_ID = "4242"
KEY = "api-key"
SECRET = "api-secret"


@pytest.fixture
def mock(monkeypatch: pytest.MonkeyPatch) -> MockWebSocketService:
    monkeypatch.setenv("WEBSOCKET_APP_ID", APP_ID)
    service = create_websocket_service("mock", websocket_app_key=KEY, websocket_app_secret=SECRET)
    assert isinstance(service, MockWebSocketService)
    register_service("websocket", service)
    return service


@pytest.fixture
def client(mock: MockWebSocketService) -> Iterator[AsgiClient]:
    with AsgiClient(create_app()) as asgi_client:
        yield asgi_client


def _signed(
    method: str,
    path: str,
    body: Any = None,
    params: dict[str, str] | None = None,
    *,
    secret: str = SECRET,
    key: str = KEY,
    now: float | None = None,
) -> tuple[str, bytes]:
    """The URL and body of a request signed as Pusher's SDKs sign it."""
    raw = json.dumps(body).encode() if body is not None else b""
    query = signing.sign_api_request(key, secret, method, path, params or {}, raw, now)
    return f"{path}?{urlencode(query)}", raw


def _call(client: AsgiClient, method: str, path: str, body: Any = None, **options: Any) -> Any:
    url, raw = _signed(method, path, body, **options)
    headers = {"content-type": "application/json"} if raw else {}
    return client.request(method, url, content=raw, headers=headers)


def test_the_signing_matches_the_official_sdk() -> None:
    # The SDK's own request, built offline: our verification accepts it as is.
    from pusher.http import Request

    sdk = pusher.Pusher(app_id=APP_ID, key=KEY, secret=SECRET)
    request = Request(
        sdk._pusher_client,
        "POST",
        f"/apps/{APP_ID}/events",
        {"name": "e", "channels": ["a"], "data": "{}"},
    )
    params = dict(request.query_params)
    assert (
        signing.api_request_problem(
            KEY, SECRET, "POST", [f"/apps/{APP_ID}/events"], params, request.body
        )
        is None
    )


def test_events_reach_subscribers_with_exclusion_and_info(
    client: AsgiClient, mock: MockWebSocketService
) -> None:
    sender = mock.add_subscriber("presence-room", "u1")
    other = mock.add_subscriber("presence-room", "u2")
    response = _call(
        client,
        "POST",
        f"/apps/{APP_ID}/events",
        {
            "name": "moved",
            "data": '{"km":1}',
            "channels": ["presence-room", "team-9"],
            "socket_id": mock.socket_id(sender),
            "info": "user_count,subscription_count",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "channels": {
            "presence-room": {"user_count": 2, "subscription_count": 2},
            "team-9": {"subscription_count": 0},
        }
    }
    events = [f for f in mock.received[other] if f["event"] == "moved"]
    assert events == [{"event": "moved", "channel": "presence-room", "data": '{"km":1}'}]
    assert not [f for f in mock.received[sender] if f["event"] == "moved"]
    single = _call(
        client, "POST", f"/apps/{APP_ID}/events", {"name": "one", "data": "x", "channel": "team-9"}
    )
    assert (single.status_code, single.json()) == (200, {})


def test_batch_events(client: AsgiClient, mock: MockWebSocketService) -> None:
    sub = mock.add_subscriber("team-1")
    batch = [{"channel": "team-1", "name": f"e{i}", "data": str(i)} for i in range(10)]
    response = _call(client, "POST", f"/apps/{APP_ID}/batch_events", {"batch": batch})
    assert (response.status_code, response.json()) == (200, {})
    assert [f["event"] for f in mock.received[sub]] == [f"e{i}" for i in range(10)]
    batch[0]["info"] = "subscription_count"
    answer = _call(client, "POST", f"/apps/{APP_ID}/batch_events", {"batch": batch}).json()
    assert answer["batch"][0] == {"subscription_count": 1}
    assert answer["batch"][1:] == [{}] * 9
    too_many = _call(client, "POST", f"/apps/{APP_ID}/batch_events", {"batch": batch + batch[:1]})
    assert too_many.status_code == 400


def test_channel_queries(client: AsgiClient, mock: MockWebSocketService) -> None:
    mock.add_subscriber("presence-room", "u1", {"name": "A"})
    mock.add_subscriber("presence-room", "u1")
    mock.add_subscriber("team-1")
    listed = _call(client, "GET", f"/apps/{APP_ID}/channels").json()
    assert listed == {"channels": {"presence-room": {}, "team-1": {}}}
    counted = _call(
        client,
        "GET",
        f"/apps/{APP_ID}/channels",
        params={"filter_by_prefix": "presence-", "info": "user_count"},
    ).json()
    assert counted == {"channels": {"presence-room": {"user_count": 1}}}
    one = _call(
        client,
        "GET",
        f"/apps/{APP_ID}/channels/presence-room",
        params={"info": "user_count,subscription_count"},
    ).json()
    assert one == {"occupied": True, "user_count": 1, "subscription_count": 2}
    assert _call(client, "GET", f"/apps/{APP_ID}/channels/team-2").json() == {"occupied": False}
    users = _call(client, "GET", f"/apps/{APP_ID}/channels/presence-room/users").json()
    assert users == {"users": [{"id": "u1"}]}
    for path, params in (
        (f"/apps/{APP_ID}/channels", {"info": "user_count"}),
        (f"/apps/{APP_ID}/channels", {"info": "subscription_count"}),
        (f"/apps/{APP_ID}/channels/team-1", {"info": "user_count"}),
        (f"/apps/{APP_ID}/channels/team-1/users", {}),
        (f"/apps/{APP_ID}/channels/bad%20name", {}),
    ):
        assert _call(client, "GET", path, params=params).status_code == 400, path


def test_users_get_events_and_can_be_terminated(
    client: AsgiClient, mock: MockWebSocketService
) -> None:
    connection = mock.add_connection()
    signed = mock.authenticate_user(mock.socket_id(connection), "walker-1")
    mock.signin(connection, signed["auth"], signed["user_data"])
    event = {"name": "badge", "data": "{}", "channels": ["#server-to-user-walker-1"]}
    assert _call(client, "POST", f"/apps/{APP_ID}/events", event).status_code == 200
    assert mock.received[connection][-1]["event"] == "badge"
    mixed = {**event, "channels": ["#server-to-user-walker-1", "team-1"]}
    assert _call(client, "POST", f"/apps/{APP_ID}/events", mixed).status_code == 400
    # The Python SDK posts without the /apps/{id} prefix; the documented path has it.
    for path in (
        "/users/walker-1/terminate_connections",
        f"/apps/{APP_ID}/users/x/terminate_connections",
    ):
        assert _call(client, "POST", path, {}).status_code == 200
    assert mock.closed == [connection]


def test_the_app_can_be_disabled(
    mock: MockWebSocketService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBSOCKET_APP_ENABLED", "false")
    event = {"name": "e", "data": "x", "channel": "a"}
    with AsgiClient(create_app()) as disabled:
        refused = _call(disabled, "POST", f"/apps/{APP_ID}/events", event)
    assert refused.status_code == 403
    assert mock.messages == []


# -- refusals: Pusher's status codes, nothing published --------------------------------------


def _tampered(problem: str) -> tuple[str, bytes, int]:
    path = f"/apps/{APP_ID}/events"
    body = {"name": "e", "data": "x", "channel": "team-1"}
    if problem == "wrong-secret":
        url, raw = _signed("POST", path, body, secret="not-the-secret")
        return url, raw, 401
    if problem == "wrong-key":
        url, raw = _signed("POST", path, body, key="other-key")
        return url, raw, 401
    if problem == "expired":
        url, raw = _signed("POST", path, body, now=time.time() - 601)
        return url, raw, 401
    if problem == "future":
        url, raw = _signed("POST", path, body, now=time.time() + 700)
        return url, raw, 401
    url, raw = _signed("POST", path, body)
    if problem == "body-changed":
        return url, raw.replace(b"team-1", b"team-2"), 401
    if problem == "unsigned":
        return path, raw, 401
    if problem == "no-signature":
        return url.replace("auth_signature=", "auth_signaturx="), raw, 401
    if problem == "version":
        return url.replace("auth_version=1.0", "auth_version=2.0"), raw, 401
    if problem == "duplicate-parameter":
        return url + "&auth_key=" + KEY, raw, 400
    if problem == "other-app":
        return url.replace(f"/apps/{APP_ID}/", "/apps/1/"), raw, 404
    if problem == "oversize-body":
        big = {**body, "data": "x" * (2 * 1024 * 1024)}
        url, raw = _signed("POST", path, big)
        return url, raw, 413
    if problem == "oversize-data":
        url, raw = _signed("POST", path, {**body, "data": "x" * (11 * 1024)})
        return url, raw, 413
    bodies = {
        "not-json": b"{nope",
        "not-object": b"[1]",
        "deep": b"[" * 1000 + b"]" * 1000,
        "data-not-string": json.dumps({**body, "data": {"x": 1}}).encode(),
        "no-channel": json.dumps({"name": "e", "data": "x"}).encode(),
        "too-many-channels": json.dumps(
            {"name": "e", "data": "x", "channels": [f"c{i}" for i in range(101)]}
        ).encode(),
        "bad-channel": json.dumps({**body, "channel": "team 1"}).encode(),
        "bad-socket": json.dumps({**body, "socket_id": "abc"}).encode(),
        "reserved-name": json.dumps({**body, "name": "pusher:x"}).encode(),
    }
    raw = bodies[problem]
    query = signing.sign_api_request(KEY, SECRET, "POST", path, {}, raw)
    return f"{path}?{urlencode(query)}", raw, 400


@pytest.mark.parametrize(
    "problem",
    [
        "wrong-secret",
        "wrong-key",
        "expired",
        "future",
        "body-changed",
        "unsigned",
        "no-signature",
        "version",
        "duplicate-parameter",
        "other-app",
        "oversize-body",
        "oversize-data",
        "not-json",
        "not-object",
        "deep",
        "data-not-string",
        "no-channel",
        "too-many-channels",
        "bad-channel",
        "bad-socket",
        "reserved-name",
    ],
)
def test_bad_requests_get_pushers_status_and_publish_nothing(
    client: AsgiClient, mock: MockWebSocketService, problem: str
) -> None:
    mock.add_subscriber("team-1")
    url, raw, status = _tampered(problem)
    response = client.post(url, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert "error" in response.json()
    assert mock.messages == []


@given(
    path=st.sampled_from(
        [
            f"/apps/{APP_ID}/events",
            f"/apps/{APP_ID}/batch_events",
            f"/apps/{APP_ID}/channels",
            f"/apps/{APP_ID}/channels/team-1",
            f"/apps/{APP_ID}/channels/presence-x/users",
            "/users/u/terminate_connections",
        ]
    ),
    body=st.binary(max_size=300) | st.text(max_size=300).map(str.encode),
    content_type=st.sampled_from(["application/json", "text/plain", "", "multipart/form-data"]),
    params=st.dictionaries(
        st.sampled_from(["info", "filter_by_prefix", "auth_key", "x"]),
        st.text(max_size=20),
        max_size=3,
    ),
)
def test_property_signed_garbage_never_gets_a_500(
    path: str, body: bytes, content_type: str, params: dict[str, str]
) -> None:
    service = create_websocket_service("mock", websocket_app_key=KEY, websocket_app_secret=SECRET)
    register_service("websocket", service)
    method = "GET" if "/channels" in path else "POST"
    with AsgiClient(create_app()) as client:
        try:
            query = signing.sign_api_request(KEY, SECRET, method, path, params, body)
        except UnicodeEncodeError:
            return
        response = client.request(
            method,
            f"{path}?{urlencode(query)}",
            content=body,
            headers={"content-type": content_type},
        )
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        assert isinstance(response.json()["error"], str)


def test_socket_ids_of_the_mock_are_pusher_format(mock: MockWebSocketService) -> None:
    assert protocol.SOCKET_ID_RE.match(mock.socket_id(mock.add_connection()))
    assert hashlib.md5(b"").hexdigest()  # (body_md5 of an empty body is never required)
