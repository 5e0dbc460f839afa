"""The pusher provider against a local server implementing Pusher's REST API and signing."""

from __future__ import annotations

import pytest
from milequest.services.websocket import WebSocketError, WebSocketErrorCode
from milequest.services.websocket.pusher import PusherWebSocketService

from tests.conftest import free_port

from .conftest import APP_KEY, PUSHER_APP_ID
from .endpoints import PusherState


def test_requests_are_signed_as_pusher_verifies(
    pusher_service: PusherWebSocketService, pusher_state: PusherState, pusher_port: int
) -> None:
    pusher_service.trigger("team-1", "ev", {"a": 1})
    pusher_service.get_channel_info("presence-x")
    pusher_service.get_channel_users("presence-x")
    assert pusher_state.rejected_signatures == 0
    assert len(pusher_state.requests) == 3
    forger = PusherWebSocketService(
        app_id=PUSHER_APP_ID,
        key=APP_KEY,
        secret="not-the-secret",
        host="127.0.0.1",
        port=pusher_port,
        use_tls=False,
    )
    with pytest.raises(WebSocketError) as err:
        forger.trigger("team-1", "ev", {})
    assert err.value.code is WebSocketErrorCode.UNAUTHORIZED
    assert pusher_state.rejected_signatures == 1


def test_channels_are_chunked_by_100(
    pusher_service: PusherWebSocketService, pusher_state: PusherState
) -> None:
    result = pusher_service.trigger([f"c-{i}" for i in range(250)], "ev", 1)
    assert pusher_state.count("/events") == 3
    assert len(result.channels) == 250
    assert result.delivered is None


def test_batches_are_chunked_by_10(
    pusher_service: PusherWebSocketService, pusher_state: PusherState
) -> None:
    result = pusher_service.trigger_batch(
        [{"channel": "c", "name": f"e{i}", "data": i} for i in range(25)]
    )
    assert pusher_state.count("/batch_events") == 3
    assert result.events == 25


def test_string_data_is_sent_as_is(
    pusher_service: PusherWebSocketService, pusher_state: PusherState
) -> None:
    pusher_state.channels["c"] = {"1.1": None}
    pusher_service.trigger("c", "ev", "plain text")
    assert pusher_state.received["1.1"] == [{"event": "ev", "channel": "c", "data": "plain text"}]


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (401, WebSocketErrorCode.UNAUTHORIZED, False),
        (403, WebSocketErrorCode.UNAUTHORIZED, False),
        (413, WebSocketErrorCode.PAYLOAD_TOO_LARGE, False),
        (429, WebSocketErrorCode.RATE_LIMITED, True),
        (500, WebSocketErrorCode.PROVIDER_UNAVAILABLE, True),
        (503, WebSocketErrorCode.PROVIDER_UNAVAILABLE, True),
        (400, WebSocketErrorCode.PROVIDER_ERROR, False),
        (404, WebSocketErrorCode.PROVIDER_ERROR, False),
    ],
)
def test_http_errors_map_to_codes(
    pusher_service: PusherWebSocketService,
    pusher_state: PusherState,
    status: int,
    code: WebSocketErrorCode,
    retryable: bool,
) -> None:
    pusher_state.fail_status = status
    for call in (
        lambda: pusher_service.trigger("c", "ev", 1),
        lambda: pusher_service.get_channel_info("c"),
    ):
        with pytest.raises(WebSocketError) as err:
            call()
        assert err.value.code is code
        assert err.value.retryable is retryable
        assert err.value.provider == "pusher"
    assert not pusher_service.health_check().healthy


def test_unreachable_server_is_provider_unavailable() -> None:
    service = PusherWebSocketService(
        app_id=PUSHER_APP_ID,
        key=APP_KEY,
        secret="s",
        host="127.0.0.1",
        port=free_port(),
        use_tls=False,
        timeout=2,
    )
    with pytest.raises(WebSocketError) as err:
        service.trigger("c", "ev", 1)
    assert err.value.code is WebSocketErrorCode.PROVIDER_UNAVAILABLE
    assert err.value.retryable


def test_dedicated_cluster_payload_limit(pusher_state: PusherState, pusher_port: int) -> None:
    pusher_state.max_payload = 64 * 1024
    pusher_state.channels["big"] = {"9.9": None}
    service = PusherWebSocketService(
        app_id=PUSHER_APP_ID,
        key=APP_KEY,
        secret=pusher_state.secret,
        host="127.0.0.1",
        port=pusher_port,
        use_tls=False,
        max_payload_bytes=64 * 1024,
    )
    # 40 KB: over the shared-cluster limit, within the dedicated one (the library's own
    # sys.getsizeof check would refuse it).
    service.trigger("big", "ev", "x" * 40_000)
    service.trigger_batch([{"channel": "big", "name": "ev", "data": "y" * 40_000}])
    assert [len(m["data"]) for m in pusher_state.received["9.9"]] == [40_000, 40_000]
    with pytest.raises(WebSocketError) as err:
        service.trigger("big", "ev", "x" * (64 * 1024 + 1))
    assert err.value.code is WebSocketErrorCode.PAYLOAD_TOO_LARGE


def test_pusher_socket_ids(pusher_service: PusherWebSocketService) -> None:
    with pytest.raises(WebSocketError) as err:
        pusher_service.trigger("c", "ev", 1, socket_id="L0SM9cOFvHcCIhw=")
    assert err.value.code is WebSocketErrorCode.INVALID_SOCKET_ID
    with pytest.raises(WebSocketError) as err:
        pusher_service.authenticate_channel("1234", "private-c")
    assert err.value.code is WebSocketErrorCode.INVALID_SOCKET_ID
