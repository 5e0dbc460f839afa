"""Migration routing for WebSockets: sticky flags, dual publish, merged queries, client config."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from milequest.services import flags, get_service
from milequest.services.routing import RoutedTriggerResult, RoutedWebSocketService
from milequest.services.websocket import WebSocketError, protocol
from milequest.services.websocket.apigateway import ApiGatewayWebSocketService
from milequest.services.websocket.mock import MockWebSocketService
from milequest.web import create_app

from tests.runtime.web.asgi import AsgiClient

from .conftest import APP_KEY, APP_SECRET, new_connection_id
from .endpoints import ConnectionsState


def _percent_rule(flag: str, value: str, percent: int) -> dict[str, Any]:
    return {
        "boolean_type": False,
        "default": "",
        "rules": {
            f"{percent} % to {value}": {
                "when_match": value,
                "conditions": [
                    {
                        "action": "MODULO_RANGE",
                        "key": "bucket",
                        "value": {"BASE": 100, "START": 0, "END": percent - 1},
                    }
                ],
            }
        },
    }


@pytest.fixture
def flag_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "flags.json"
    monkeypatch.setenv("FEATURE_FLAGS_FILE", str(path))
    flags.reset_flags()
    yield path
    flags.reset_flags()


def _write(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document))
    stamp = path.stat().st_mtime + 1  # a new modification time, even within one clock tick
    os.utime(path, (stamp, stamp))


@pytest.mark.parametrize(
    ("flag", "subject"),
    [("websocket_provider", "user-{}"), ("email_provider", "walker{}@milequest.example")],
)
def test_ten_percent_is_ten_percent_and_sticky(flag_file: Path, flag: str, subject: str) -> None:
    _write(flag_file, {flag: _percent_rule(flag, "other", 10)})
    subjects = [subject.format(i) for i in range(10_000)]
    sides = [flags.evaluate(flag, s, "configured") for s in subjects]
    share = Counter(sides)["other"] / len(subjects)
    assert 0.085 <= share <= 0.115
    assert [flags.evaluate(flag, s, "configured") for s in subjects[:500]] == sides[:500]


def test_changing_the_file_moves_traffic_without_a_restart(flag_file: Path) -> None:
    _write(flag_file, {"websocket_provider": _percent_rule("websocket_provider", "other", 10)})
    users = [f"user-{i}" for i in range(2_000)]
    before = Counter(flags.evaluate("websocket_provider", u, "x") for u in users)["other"]
    _write(flag_file, {"websocket_provider": _percent_rule("websocket_provider", "other", 50)})
    after = Counter(flags.evaluate("websocket_provider", u, "x") for u in users)["other"]
    assert before < 300 < 800 < after
    # Users already moved stay moved as the share grows (the ranges nest).
    moved_before = {
        u for u in users[:300] if flags.evaluate("websocket_provider", u, "x") == "other"
    }
    assert moved_before


def test_no_store_and_a_broken_document_keep_the_default(
    flag_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flag_file.write_text("{not json")
    assert flags.evaluate("websocket_provider", "u", "pusher") == "pusher"
    monkeypatch.delenv("FEATURE_FLAGS_FILE")
    assert flags.evaluate("websocket_dual_publish", None, False) is False


def test_the_packaged_document_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    path = Path(flags.__file__).parents[1] / "flags.json"
    monkeypatch.setenv("FEATURE_FLAGS_FILE", str(path))
    flags.reset_flags()
    assert flags.default_document() == json.loads(path.read_text())
    assert flags.evaluate("websocket_provider", "u", "apigateway") == "apigateway"
    assert flags.evaluate("email_provider", "a@b.example", "ses") == "ses"
    assert flags.evaluate("websocket_dual_publish", None, True) is False
    flags.reset_flags()


# -- dual publish ------------------------------------------------------------------------------


@pytest.fixture
def routed(apigw: ApiGatewayWebSocketService, flag_file: Path) -> RoutedWebSocketService:
    mock = MockWebSocketService(app_key=APP_KEY, app_secret=APP_SECRET)
    _write(flag_file, {"websocket_dual_publish": {"default": True}})
    return RoutedWebSocketService(apigw, mock)


def _apigw_subscriber(
    apigw: ApiGatewayWebSocketService, channel: str, user: str | None = None
) -> str:
    cid = new_connection_id()
    apigw.connect(cid)
    auth = data = None
    if protocol.is_private(channel):
        signed = apigw.authenticate_channel(apigw.socket_id(cid), channel, user)
        auth, data = signed["auth"], signed.get("channel_data")
    apigw.subscribe(cid, channel, auth, data)
    return cid


def test_dual_publish_reaches_clients_on_both_sides(
    routed: RoutedWebSocketService, connections: ConnectionsState
) -> None:
    mock = routed.secondary
    assert isinstance(mock, MockWebSocketService)
    on_aws = _apigw_subscriber(routed.primary, "team-1")  # type: ignore[arg-type]
    on_other = mock.add_subscriber("team-1")
    result = routed.trigger("team-1", "moved", {"km": 1})
    assert isinstance(result, RoutedTriggerResult)
    assert set(result.providers) == {"apigateway", "mock"}
    assert result.delivered == 2
    assert [f["event"] for f in connections.frames(on_aws)][-1:] == ["moved"]
    assert [f["event"] for f in mock.received[on_other]] == ["moved"]
    # send_to_user and batches go to both as well.
    batch = routed.trigger_batch([{"channel": "team-1", "name": "b", "data": 1}])
    assert set(batch.providers) == {"apigateway", "mock"}  # type: ignore[attr-defined]


def test_a_failure_on_one_side_never_hides_success_on_the_other(
    routed: RoutedWebSocketService, connections: ConnectionsState
) -> None:
    mock = routed.secondary
    assert isinstance(mock, MockWebSocketService)
    on_aws = _apigw_subscriber(routed.primary, "team-2")  # type: ignore[arg-type]
    mock.fail_next(ConnectionError("down"))
    result = routed.trigger("team-2", "e", {})
    assert isinstance(result, RoutedTriggerResult)
    assert "mock" in result.errors
    assert result.providers["apigateway"].delivered == 1
    assert connections.frames(on_aws)
    mock.fail_next(ConnectionError("down"))
    connections.forbid = True  # and the primary refuses too: the call fails
    with pytest.raises(WebSocketError):
        routed.trigger("team-2", "e", {})


def test_without_dual_publish_only_the_primary_gets_events(
    routed: RoutedWebSocketService, flag_file: Path
) -> None:
    _write(flag_file, {"websocket_dual_publish": {"default": False}})
    mock = routed.secondary
    assert isinstance(mock, MockWebSocketService)
    mock.add_subscriber("team-3")
    result = routed.trigger("team-3", "e", {})
    assert not isinstance(result, RoutedTriggerResult)
    assert mock.messages == []


def test_queries_merge_both_sides_and_count_users_once(routed: RoutedWebSocketService) -> None:
    mock = routed.secondary
    assert isinstance(mock, MockWebSocketService)
    _apigw_subscriber(routed.primary, "presence-walk", "alice")  # type: ignore[arg-type]
    mock.add_subscriber("presence-walk", "alice")  # another tab, on the other provider
    mock.add_subscriber("presence-walk", "bob")
    info = routed.get_channel_info("presence-walk")
    assert (info.occupied, info.subscription_count, info.user_count) == (True, 3, 2)
    assert sorted(u.id for u in routed.get_channel_users("presence-walk")) == ["alice", "bob"]
    assert routed.get_channels("presence-", ["user_count"])["presence-walk"].user_count == 2


def test_socket_ids_are_signed_and_excluded_on_their_own_side(
    routed: RoutedWebSocketService, connections: ConnectionsState
) -> None:
    sender = _apigw_subscriber(routed.primary, "team-4")  # type: ignore[arg-type]
    socket_id = routed.primary.socket_id(sender)  # type: ignore[attr-defined]
    routed.trigger("team-4", "e", {}, socket_id=socket_id)
    assert connections.frames(sender) == []
    signed = routed.authenticate_channel("123.456", "private-x")  # a Pusher socket id
    assert signed["auth"].startswith(APP_KEY + ":")


def test_the_registry_routes_when_a_second_provider_is_configured(
    apigw: ApiGatewayWebSocketService,
    table: str,
    management_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "WEBSOCKET_PROVIDER": "apigateway",
        "CONNECTIONS_TABLE": table,
        "APIGW_MANAGEMENT_ENDPOINT": management_endpoint,
        "WEBSOCKET_APP_KEY": APP_KEY,
        "WEBSOCKET_APP_SECRET": APP_SECRET,
        "WEBSOCKET_SECONDARY_PROVIDER": "mock",
    }.items():
        monkeypatch.setenv(name, value)
    service = get_service("websocket")
    assert isinstance(service, RoutedWebSocketService)
    assert (service.primary.provider_name, service.secondary.provider_name) == (
        "apigateway",
        "mock",
    )


# -- GET /realtime/config ------------------------------------------------------------------


def test_client_config_follows_the_users_assignment(
    routed: RoutedWebSocketService, flag_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from milequest.services import register_service

    register_service("websocket", routed)
    _write(flag_file, {"websocket_provider": _percent_rule("websocket_provider", "mock", 50)})
    monkeypatch.setenv("REALTIME_WS_HOST", "ws.milequest.example")
    users = [f"user-{i}" for i in range(40)]
    with AsgiClient(create_app(authenticator=lambda request: request.headers["x-user"])) as client:
        answers = {u: client.get("/realtime/config", headers={"x-user": u}).json() for u in users}
        anonymous = AsgiClient(create_app(authenticator=lambda request: None))
        with anonymous:
            refused = anonymous.get("/realtime/config")
    providers = Counter(a["provider"] for a in answers.values())
    assert set(providers) == {"apigateway", "mock"}
    for user, answer in answers.items():
        assert answer["provider"] == routed.provider_for_user(user).provider_name
        assert answer["key"] == APP_KEY
        assert answer["options"]["channelAuthorization"]["endpoint"] == "http://web/realtime/auth"
        if answer["provider"] == "apigateway":
            assert answer["options"]["wsHost"] == "ws.milequest.example"
            assert answer["options"]["forceTLS"] is True
    assert refused.status_code == 403
