"""The mock provider's test helpers: recorded messages, presence, webhooks, latency."""

from __future__ import annotations

import json
import threading
import time

import pusher
import pytest
from milequest.services.websocket import create_websocket_service, webhooks
from milequest.services.websocket.mock import MockMessage, MockWebSocketService

from .conftest import WebhookSink


def _mock(**kwargs: object) -> MockWebSocketService:
    service = create_websocket_service(
        "mock", websocket_app_key="mk", websocket_app_secret="ms", **kwargs
    )
    assert isinstance(service, MockWebSocketService)
    return service


def test_messages_record_every_trigger() -> None:
    ws = _mock()
    sender = ws.add_subscriber("team-123")
    socket_id = ws.socket_id(sender)
    ws.trigger("team-123", "activity-update", {"activityId": "abc123"}, socket_id=socket_id)
    ws.trigger_batch([{"channel": "team-9", "name": "x", "data": None}])
    # Data as subscribers get it: a JSON string.
    assert ws.messages == [
        MockMessage("team-123", "activity-update", '{"activityId":"abc123"}', socket_id),
        MockMessage("team-9", "x", "null", None),
    ]
    assert ws.received.get(sender, []) == []
    # Any Pusher-format socket id signs (the mock stands in for Pusher in app tests).
    assert ws.authenticate_channel("1234.1234", "private-a")["auth"].startswith("mk:")


def test_presence_and_webhooks_like_the_real_providers(webhook_sink: WebhookSink) -> None:
    ws = _mock(websocket_webhook_url=webhook_sink.url)
    watcher = ws.add_subscriber("presence-r", "w")
    first = ws.add_subscriber("presence-r", "u", {"n": 1})
    second = ws.add_subscriber("presence-r", "u", {"n": 1})
    ws.disconnect(first)
    ws.unsubscribe(second, "presence-r")
    assert [(m["event"], json.loads(m["data"])["user_id"]) for m in ws.received[watcher]] == [
        ("pusher_internal:member_added", "u"),
        ("pusher_internal:member_removed", "u"),
    ]
    names = [e["name"] for e in webhook_sink.events()]
    assert names == ["channel_occupied", "member_added", "member_added", "member_removed"]
    assert len(ws.webhooks) == len(webhook_sink.received)
    # The official library accepts the mock's webhooks too.
    client = pusher.Pusher(app_id="1", key="mk", secret="ms")
    for headers, body in ws.webhooks:
        assert client.validate_webhook(
            headers["X-Pusher-Key"], headers["X-Pusher-Signature"], body.decode()
        )
        assert ws.validate_webhook(headers, body)


def test_webhooks_are_sent_without_holding_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    # A webhook receiver may call back into the service (the local stack runs both in one
    # process); sending while holding the mock's lock would stall that call.
    ws = _mock(websocket_webhook_url="http://127.0.0.1:9/hooks")
    answered: list[bool] = []

    def send(url: str, key: str, secret: str, events: object) -> bool:
        worker = threading.Thread(target=ws.get_channel_info, args=("presence-r",))
        worker.start()
        worker.join(timeout=2)
        answered.append(not worker.is_alive())
        return True

    monkeypatch.setattr(webhooks, "send_webhook", send)
    first = ws.add_subscriber("presence-r", "u")
    second = ws.add_subscriber("presence-r", "v")
    ws.unsubscribe(first, "presence-r")
    ws.disconnect(second)
    assert answered == [True] * 4


def test_latency_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    ws = _mock(websocket_mock_latency_ms=30)
    ws.trigger("c", "e", 1)
    ws.get_channel_info("c")
    assert slept == [0.03, 0.03]
    ws.reset()
    assert ws.messages == []


def test_pusher_only_webhook_events_parse() -> None:
    from milequest.services.websocket import webhooks

    ws = _mock()
    headers, body = webhooks.signed_webhook(
        "mk",
        "ms",
        [
            {"name": "subscription_count", "channel": "c", "subscription_count": 3},
            {"name": "cache_miss", "channel": "cache-c"},
        ],
    )
    events = ws.parse_webhook(headers, body)
    assert [(e.name, e.subscription_count) for e in events] == [
        ("subscription_count", 3),
        ("cache_miss", None),
    ]
