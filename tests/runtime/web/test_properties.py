"""Every route of the HTTP app with arbitrary bodies, content types and headers: no 500s."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from milequest.services import register_service
from milequest.services.websocket import create_websocket_service
from milequest.web import create_app

from .asgi import AsgiClient

ROUTES = [
    ("GET", "/livez"),
    ("GET", "/healthz"),
    ("POST", "/realtime/auth"),
    ("POST", "/realtime/user-auth"),
    ("POST", "/webhooks/pusher"),
    ("POST", "/apps/1/events"),
    ("POST", "/apps/1/batch_events"),
    ("GET", "/apps/1/channels"),
    ("GET", "/apps/1/channels/presence-a/users"),
    ("POST", "/users/u/terminate_connections"),
]

_HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


@pytest.fixture(autouse=True)
def _policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REALTIME_CHANNEL_POLICY", "allow-all")


@given(
    route=st.sampled_from(ROUTES),
    body=st.binary(max_size=400)
    | st.text(max_size=400).map(lambda t: t.encode("utf-8", "surrogatepass"))
    | st.just(b"[" * 3000 + b"]" * 3000)
    | st.just(b'{"socket_id": "1.1", "channel_name": "private-a"}'),
    content_type=st.sampled_from(
        [
            "application/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "multipart/form-data",
            "text/plain",
            "",
        ]
    )
    | _HEADER_TEXT,
    authorization=st.none() | _HEADER_TEXT.map(lambda t: f"Bearer {t}"),
    query=st.none() | _HEADER_TEXT,
)
def test_property_no_route_answers_500(
    route: tuple[str, str],
    body: bytes,
    content_type: str,
    authorization: str | None,
    query: str | None,
) -> None:
    register_service(
        "websocket",
        create_websocket_service("mock", websocket_app_key="k", websocket_app_secret="s"),
    )
    method, path = route
    headers = {"content-type": content_type}
    if authorization is not None:
        headers["authorization"] = authorization
    url = f"{path}?{query}" if query else path
    with AsgiClient(create_app(health_services=("websocket",))) as client:
        response = client.request(method, url, content=body, headers=headers)
    assert response.status_code < 500 or (path == "/healthz" and response.status_code == 503)
    if response.status_code >= 400:
        assert isinstance(response.json()["error"], str)
