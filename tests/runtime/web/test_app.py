"""The HTTP app through a real ASGI client: channel auth, webhooks, health."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

import pytest
from milequest.services import BaseService, HealthState, override_service, register_service
from milequest.services.websocket import (
    WebhookEvent,
    WebSocketError,
    WebSocketErrorCode,
    create_websocket_service,
    issue_connection_token,
)
from milequest.web import create_app
from starlette.requests import Request

from .asgi import AsgiClient

# Pusher's documented channel-auth vector.
KEY = "278d425bdf160c739803"
SECRET = "7ad3773142a6692b25b8"
SOCKET_ID = "1234.1234"
CHANNEL = "private-foobar"
SIGNATURE = "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"


def _fixed_user(request: Request) -> str:
    return "user-1"


@pytest.fixture(autouse=True)
def _allow_all_channels(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the endpoints; the channel policy has its own tests below."""
    monkeypatch.setenv("REALTIME_CHANNEL_POLICY", "allow-all")


@pytest.fixture(params=["pusher", "mock"])
def websocket_service(request: pytest.FixtureRequest) -> None:
    if request.param == "pusher":
        service = create_websocket_service(
            "pusher", pusher_app_id="1", pusher_key=KEY, pusher_secret=SECRET
        )
    else:
        service = create_websocket_service(
            "mock", websocket_app_key=KEY, websocket_app_secret=SECRET
        )
    register_service("websocket", service)
    return


@pytest.fixture
def client(websocket_service: None) -> Iterator[AsgiClient]:
    with AsgiClient(create_app(authenticator=_fixed_user)) as asgi_client:
        yield asgi_client


# -- POST /realtime/auth --------------------------------------------------------------------


def test_auth_matches_the_documented_pusher_vector_for_a_form_post(client: AsgiClient) -> None:
    response = client.post("/realtime/auth", data={"socket_id": SOCKET_ID, "channel_name": CHANNEL})
    assert response.status_code == 200
    assert response.json() == {"auth": f"{KEY}:{SIGNATURE}"}


def test_auth_accepts_a_json_body(client: AsgiClient) -> None:
    response = client.post("/realtime/auth", json={"socket_id": SOCKET_ID, "channel_name": CHANNEL})
    assert response.status_code == 200
    assert response.json()["auth"] == f"{KEY}:{SIGNATURE}"


def test_presence_auth_signs_the_returned_channel_data(websocket_service: None) -> None:
    def member(request: Request) -> dict[str, Any]:
        return {"user_id": "u-7", "user_info": {"name": "Ada"}}

    with AsgiClient(create_app(authenticator=member)) as client:
        response = client.post(
            "/realtime/auth", data={"socket_id": SOCKET_ID, "channel_name": "presence-team"}
        )
    assert response.status_code == 200
    body = response.json()
    channel_data = body["channel_data"]
    assert json.loads(channel_data) == {"user_id": "u-7", "user_info": {"name": "Ada"}}
    expected = hmac.new(
        SECRET.encode(), f"{SOCKET_ID}:presence-team:{channel_data}".encode(), hashlib.sha256
    ).hexdigest()
    assert body["auth"] == f"{KEY}:{expected}"


def test_auth_without_a_user_is_forbidden(websocket_service: None) -> None:
    with AsgiClient(create_app(authenticator=lambda request: None)) as client:
        response = client.post(
            "/realtime/auth", data={"socket_id": SOCKET_ID, "channel_name": CHANNEL}
        )
    assert response.status_code == 403


def test_an_async_authenticator_is_awaited(websocket_service: None) -> None:
    async def resolve(request: Request) -> str | None:
        return "u-1" if request.headers.get("x-user") else None

    with AsgiClient(create_app(authenticator=resolve)) as client:
        fields = {"socket_id": SOCKET_ID, "channel_name": CHANNEL}
        assert client.post("/realtime/auth", data=fields).status_code == 403
        allowed = client.post("/realtime/auth", data=fields, headers={"x-user": "1"})
    assert allowed.status_code == 200


def test_the_channel_policy_can_refuse_a_channel(websocket_service: None) -> None:
    app = create_app(
        authenticator=_fixed_user, channel_policy=lambda user, channel: channel.endswith("-own")
    )
    with AsgiClient(app) as client:
        refused = client.post(
            "/realtime/auth", data={"socket_id": SOCKET_ID, "channel_name": CHANNEL}
        )
        allowed = client.post(
            "/realtime/auth", data={"socket_id": SOCKET_ID, "channel_name": "private-own"}
        )
    assert refused.status_code == 403
    assert allowed.status_code == 200


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"socket_id": SOCKET_ID}, 400),
        ({"channel_name": CHANNEL}, 400),
        ({"socket_id": SOCKET_ID, "channel_name": "private-bad name!"}, 400),
        ({"socket_id": "not a socket!", "channel_name": CHANNEL}, 400),
        ({"socket_id": SOCKET_ID, "channel_name": "public-channel"}, 400),
    ],
)
def test_bad_auth_requests_get_400(client: AsgiClient, fields: dict[str, str], status: int) -> None:
    response = client.post("/realtime/auth", data=fields)
    assert response.status_code == status
    assert "error" in response.json()


def test_auth_rejects_other_content_types_and_bad_json(client: AsgiClient) -> None:
    plain = client.post(
        "/realtime/auth", content=b"socket_id=1", headers={"content-type": "text/plain"}
    )
    broken = client.post(
        "/realtime/auth", content=b"{not json", headers={"content-type": "application/json"}
    )
    listed = client.post("/realtime/auth", json=[SOCKET_ID, CHANNEL])
    assert (plain.status_code, broken.status_code, listed.status_code) == (415, 400, 400)


def test_default_authenticator_takes_a_bearer_connection_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEBSOCKET_APP_KEY", KEY)
    monkeypatch.setenv("WEBSOCKET_APP_SECRET", SECRET)
    register_service("websocket", create_websocket_service("mock"))
    token = issue_connection_token("user-42")
    fields = {"socket_id": SOCKET_ID, "channel_name": CHANNEL}
    with AsgiClient(create_app()) as client:
        missing = client.post("/realtime/auth", data=fields)
        forged = client.post(
            "/realtime/auth", data=fields, headers={"Authorization": f"Bearer {token}x"}
        )
        good = client.post(
            "/realtime/auth", data=fields, headers={"Authorization": f"Bearer {token}"}
        )
    assert missing.status_code == 403
    assert forged.status_code == 403
    assert good.status_code == 200
    assert good.json() == {"auth": f"{KEY}:{SIGNATURE}"}


# -- the channel policy, user auth, CORS, hostile bodies ------------------------------------


def test_private_channels_are_denied_until_a_policy_allows_them(
    websocket_service: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REALTIME_CHANNEL_POLICY")
    fields = {"socket_id": SOCKET_ID, "channel_name": CHANNEL}
    with AsgiClient(create_app(authenticator=_fixed_user)) as client:
        refused = client.post("/realtime/auth", data=fields)
    assert refused.status_code == 403
    monkeypatch.setenv("REALTIME_CHANNEL_POLICY", f"{__name__}:team_members_only")
    with AsgiClient(create_app(authenticator=_fixed_user)) as client:
        own = client.post(
            "/realtime/auth", data={"socket_id": SOCKET_ID, "channel_name": "private-team-1"}
        )
        other = client.post(
            "/realtime/auth", data={"socket_id": SOCKET_ID, "channel_name": "private-team-2"}
        )
    assert (own.status_code, other.status_code) == (200, 403)


def team_members_only(user: object, channel: str) -> bool:
    """An application's rule: user-1 is a member of team 1 only."""
    return user == "user-1" and channel.endswith("-team-1")


@pytest.mark.parametrize("value", ["maybe", "no.such.module:rule", f"{__name__}:missing", "x:"])
def test_a_bad_channel_policy_setting_fails_at_start(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REALTIME_CHANNEL_POLICY", value)
    with pytest.raises(ValueError, match="REALTIME_CHANNEL_POLICY"):
        create_app()


def test_user_auth_is_what_pusher_js_signin_needs(websocket_service: None) -> None:
    def member(request: Request) -> dict[str, Any]:
        return {"user_id": "u-7", "user_info": {"name": "Ada"}}

    with AsgiClient(create_app(authenticator=member)) as client:
        response = client.post("/realtime/user-auth", data={"socket_id": SOCKET_ID})
        anonymous = AsgiClient(create_app(authenticator=lambda request: None))
        with anonymous:
            refused = anonymous.post("/realtime/user-auth", data={"socket_id": SOCKET_ID})
        missing = client.post("/realtime/user-auth", data={"user": "u-7"})
    assert response.status_code == 200
    body = response.json()
    assert json.loads(body["user_data"]) == {"id": "u-7", "user_info": {"name": "Ada"}}
    expected = hmac.new(
        SECRET.encode(), f"{SOCKET_ID}::user::{body['user_data']}".encode(), hashlib.sha256
    ).hexdigest()
    assert body["auth"] == f"{KEY}:{expected}"
    assert (refused.status_code, missing.status_code) == (403, 400)


def test_encrypted_channel_auth_carries_the_shared_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    key = base64.b64encode(bytes(32)).decode()
    register_service(
        "websocket",
        create_websocket_service(
            "mock",
            websocket_app_key=KEY,
            websocket_app_secret=SECRET,
            websocket_encryption_master_key=key,
        ),
    )
    with AsgiClient(create_app(authenticator=_fixed_user)) as client:
        response = client.post(
            "/realtime/auth",
            data={"socket_id": SOCKET_ID, "channel_name": "private-encrypted-team"},
        )
    secret = hashlib.sha256(b"private-encrypted-team" + bytes(32)).digest()
    assert response.json()["shared_secret"] == base64.b64encode(secret).decode()


def test_cors_allows_only_the_listed_origins(
    websocket_service: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEB_CORS_ORIGINS", "https://app.milequest.example, https://x.example")
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    with AsgiClient(create_app(authenticator=_fixed_user)) as client:
        allowed = client.options(
            "/realtime/auth", headers={"Origin": "https://app.milequest.example", **preflight}
        )
        refused = client.options(
            "/realtime/auth", headers={"Origin": "https://evil.example", **preflight}
        )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.milequest.example"
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"[" * 1000 + b"]" * 1000, "application/json"),
        (b'{"socket_id": "\\ud800", "channel_name": "private-a"}', "application/json"),
        (b'{"socket_id": 1e999, "channel_name": "private-a"}', "application/json"),
        (b"--x\r\nbroken", "multipart/form-data; boundary=x"),
        (b"socket_id=%FF%FE&channel_name=private-a", "application/x-www-form-urlencoded"),
    ],
)
def test_hostile_auth_bodies_get_4xx_never_500(
    client: AsgiClient, content: bytes, content_type: str
) -> None:
    for path in ("/realtime/auth", "/realtime/user-auth"):
        response = client.post(path, content=content, headers={"content-type": content_type})
        assert 400 <= response.status_code < 500, (path, response.text)
        assert "error" in response.json()


# -- POST /webhooks/pusher ------------------------------------------------------------------


def _webhook(events: list[dict[str, Any]], *, secret: str = SECRET, age_s: float = 0) -> tuple:
    body = json.dumps({"time_ms": int((time.time() - age_s) * 1000), "events": events}).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-Pusher-Key": KEY,
        "X-Pusher-Signature": signature,
    }
    return headers, body


def test_a_signed_webhook_is_dispatched_to_the_handlers_of_its_events(
    websocket_service: None,
) -> None:
    seen: list[tuple[str, WebhookEvent]] = []
    app = create_app(
        webhook_handlers={"member_added": [lambda event: seen.append(("added", event))]}
    )

    @app.state.webhooks.on("*")
    async def every(event: WebhookEvent) -> None:
        seen.append(("any", event))

    headers, body = _webhook(
        [
            {"name": "member_added", "channel": "presence-team", "user_id": "u-1"},
            {"name": "channel_vacated", "channel": "presence-team"},
        ]
    )
    with AsgiClient(app) as client:
        response = client.post("/webhooks/pusher", content=body, headers=headers)
    assert response.status_code == 200
    assert response.json() == {"events": 2, "handled": 3}
    assert [(tag, e.name) for tag, e in seen] == [
        ("added", "member_added"),
        ("any", "member_added"),
        ("any", "channel_vacated"),
    ]
    assert seen[0][1].user_id == "u-1"


@pytest.mark.parametrize("problem", ["signature", "secret", "missing", "stale"])
def test_a_webhook_that_is_not_valid_is_rejected_with_401(client: AsgiClient, problem: str) -> None:
    events = [{"name": "channel_occupied", "channel": "private-a"}]
    headers, body = _webhook(
        events, secret="wrong" if problem == "secret" else SECRET, age_s=900 * (problem == "stale")
    )
    if problem == "signature":
        body = body.replace(b"private-a", b"private-b")
    if problem == "missing":
        del headers["X-Pusher-Signature"]
    response = client.post("/webhooks/pusher", content=body, headers=headers)
    assert response.status_code == 401


def test_a_failing_webhook_handler_answers_500_so_the_sender_retries(
    websocket_service: None,
) -> None:
    def broken(event: WebhookEvent) -> None:
        raise RuntimeError("database down")

    headers, body = _webhook([{"name": "channel_occupied", "channel": "private-a"}])
    with AsgiClient(create_app(webhook_handlers={"channel_occupied": [broken]})) as client:
        response = client.post("/webhooks/pusher", content=body, headers=headers)
    assert response.status_code == 500
    assert "database down" not in response.text


# -- GET /healthz ---------------------------------------------------------------------------


class _Probed(BaseService):
    service_name: ClassVar[str] = "websocket"
    provider_name: ClassVar[str] = "probe"
    error_type: ClassVar[type[WebSocketError]] = WebSocketError
    error_codes: ClassVar[type[WebSocketErrorCode]] = WebSocketErrorCode

    def __init__(self, state: HealthState | Exception) -> None:
        super().__init__()
        self.state = state

    def _probe(self) -> tuple[HealthState, dict[str, Any]]:
        if isinstance(self.state, Exception):
            raise self.state
        return self.state, {"probe": "ran"}


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (HealthState.HEALTHY, 200),
        (HealthState.DEGRADED, 200),
        (HealthState.UNHEALTHY, 503),
        (ConnectionError("table unreachable"), 503),
    ],
)
def test_health_reports_the_registry_and_answers_503_when_unhealthy(
    state: HealthState | Exception, status: int
) -> None:
    with override_service("websocket", _Probed(state)), AsgiClient(create_app()) as client:
        response = client.get("/healthz")
    assert response.status_code == status
    report = response.json()
    assert report["services"]["websocket"]["provider"] == "probe"
    expected = state.value if isinstance(state, HealthState) else "unhealthy"
    assert report["status"] == expected


def test_health_is_503_when_the_websocket_service_is_not_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEBSOCKET_PROVIDER", "apigateway")  # without its table and endpoint
    with AsgiClient(create_app()) as client:
        response = client.get("/healthz")
    assert response.status_code == 503
    assert "CONNECTIONS_TABLE" in response.json()["services"]["websocket"]["details"]["error"]


def test_the_module_level_app_serves_health() -> None:
    from milequest.web import app

    with override_service("websocket", _Probed(HealthState.HEALTHY)), AsgiClient(app) as client:
        assert client.get("/healthz").status_code == 200


# -- request body limits ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/realtime/auth", "/webhooks/pusher"])
def test_a_body_over_the_limit_is_413_even_without_a_content_length(
    client: AsgiClient, path: str
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"socket_id=1234.1234&channel_name=private-foobar&pad="
        for _ in range(300):
            yield b"x" * 4096  # 1.2 MB in all, sent chunked

    response = client.post(
        path,
        content=chunks(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413


def test_a_wrong_method_is_405_with_allow_and_a_json_error(client: AsgiClient) -> None:
    response = client.get("/realtime/auth")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"]


def test_liveness_answers_without_probing_the_providers() -> None:
    probed = _Probed(ConnectionError("table unreachable"))
    calls: list[int] = []
    original = probed._probe

    def counting_probe() -> tuple[HealthState, dict[str, Any]]:
        calls.append(1)
        return original()

    probed._probe = counting_probe  # type: ignore[method-assign]
    with override_service("websocket", probed), AsgiClient(create_app()) as client:
        assert client.get("/livez").status_code == 200
        assert calls == []
        assert client.get("/healthz").status_code == 503
        assert calls == [1]
