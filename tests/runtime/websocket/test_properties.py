"""Hostile input against every public method of every offline provider.

The contract: only ``WebSocketError`` escapes; a refusal for bad input (an ``INVALID_*``
code) happens before any network call; ``validate_webhook`` answers a bool and never raises.
"""

from __future__ import annotations

import datetime
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from milequest.services.websocket import ConnectionService, WebSocketError, protocol
from milequest.services.websocket.mock import MockWebSocketService

from .conftest import APP_KEY, APP_SECRET, ENCRYPTION_KEY, new_connection_id
from .harness import ApiGatewayHarness, Harness, MockHarness, PusherHarness


def _deep(levels: int) -> Any:
    value: Any = []
    for _ in range(levels):
        value = [value]
    return value


def _deep_dict(levels: int) -> Any:
    value: Any = {}
    for _ in range(levels):
        value = {"a": value}
    return value


HAZARDS: list[tuple[str, Any]] = [
    ("deep-list", _deep(5000)),
    ("deep-dict", _deep_dict(5000)),
    ("surrogate", "\ud800"),
    ("nul", "team\x001"),
    ("megabyte", "x" * 1_000_000),
    ("object", object()),
    ("datetime", datetime.datetime(2024, 1, 1)),
    ("bytes", b"bytes"),
    ("set", {1, 2}),
    ("huge-int", 10**400),
    ("nan", float("nan")),
    ("none", None),
    ("int", 5),
    ("empty-list", []),
    ("nested-list", [["user_count"]]),
    ("dict-with-object", {"user_id": "u", "user_info": {"when": object()}}),
    (
        "dict-with-datetime",
        {"user_id": "u", "user_info": {"joined": datetime.datetime(2024, 1, 1)}},
    ),
    ("dict-with-surrogate-key", {"\ud800": 1}),
]

_VALIDATION = {
    "INVALID_CHANNEL",
    "INVALID_EVENT",
    "INVALID_SOCKET_ID",
    "INVALID_USER",
    "INVALID_MESSAGE",
    "PAYLOAD_TOO_LARGE",
    "INVALID_WEBHOOK",
}


@pytest.fixture(params=["mock", "pusher", "apigateway"])
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
    else:
        apigw = request.getfixturevalue("apigw")
        counting = _CountingHarness(apigw, request.getfixturevalue("connections"))
        yield counting


class _CountingHarness(ApiGatewayHarness):
    """Counts DynamoDB calls as well as management-API posts."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.dynamodb_calls = 0
        ddb, _ = self.service._clients()

        def count(**kwargs: Any) -> None:
            self.dynamodb_calls += 1

        ddb.meta.events.register("before-call.dynamodb", count)

    def network_calls(self) -> int:
        return super().network_calls() + self.dynamodb_calls


def _methods(harness: Harness) -> dict[str, tuple[Callable[..., Any], list[Any]]]:
    """Each public method with valid arguments (each is replaced by a hazard in turn)."""
    service = harness.service
    sid = harness.new_socket_id()
    methods: dict[str, tuple[Callable[..., Any], list[Any]]] = {
        "trigger": (service.trigger, ["team-1", "ev", {"a": 1}, sid]),
        "trigger_batch": (service.trigger_batch, [[{"channel": "a", "name": "e", "data": 1}]]),
        "send_to_user": (service.send_to_user, ["u-1", "ev", {"a": 1}]),
        "terminate_user_connections": (service.terminate_user_connections, ["u-1"]),
        "authenticate_channel": (service.authenticate_channel, [sid, "presence-a", "u"]),
        "authenticate_user": (service.authenticate_user, [sid, "u-1"]),
        "get_channel_info": (service.get_channel_info, ["presence-a", ["user_count"]]),
        "get_channels": (service.get_channels, ["presence-", ["user_count"]]),
        "get_channel_users": (service.get_channel_users, ["presence-a"]),
        "parse_webhook": (service.parse_webhook, [{"X-Pusher-Key": APP_KEY}, "{}"]),
        "verify_api_request": (
            service.verify_api_request,
            ["POST", ["/apps/1/events"], {"auth_key": APP_KEY}, b"{}"],
        ),
    }
    if isinstance(service, ConnectionService):
        cid = new_connection_id()
        methods |= {
            "connect": (service.connect, [cid, "u"]),
            "disconnect": (service.disconnect, [cid]),
            "subscribe": (service.subscribe, [cid, "private-a", "key:sig", None]),
            "unsubscribe": (service.unsubscribe, [cid, "team-1"]),
            "signin": (service.signin, [cid, "key:sig", '{"id":"u"}']),
            "send_client_event": (service.send_client_event, [cid, "private-a", "client-x", {}]),
            "announce": (service.announce, [cid, protocol.pong()]),
            "socket_id": (service.socket_id, [cid]),
        }
    return methods


def _check(harness: Harness, call: Callable[..., Any], args: list[Any]) -> None:
    before = harness.network_calls()
    refused: WebSocketError | None = None
    try:
        call(*args)
    except WebSocketError as exc:
        refused = exc
    if refused is not None:
        if refused.code.value in _VALIDATION:
            assert harness.network_calls() == before, f"{refused.code}: reached the network"
        assert len(str(refused)) < 2000  # long input is shortened in messages


@pytest.mark.parametrize(("name", "hazard"), HAZARDS, ids=[name for name, _ in HAZARDS])
def test_hazards_in_every_argument_meet_the_contract(
    harness: Harness, name: str, hazard: Any
) -> None:
    for method, (call, valid) in _methods(harness).items():
        for position in range(len(valid)):
            args = list(valid)
            args[position] = hazard
            try:
                _check(harness, call, args)
            except AssertionError as exc:
                raise AssertionError(f"{method} argument {position}: {exc}") from None
    assert harness.service.validate_webhook({"X-Pusher-Key": hazard}, hazard) is False  # type: ignore[arg-type]


_ANY = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
    | st.binary(max_size=10)
    | st.sampled_from(["team-1", "presence-a", "private-a", "#server-to-user-u", "1.2", "u-1"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(values=st.lists(_ANY, min_size=5, max_size=5))
def test_property_arbitrary_arguments_only_raise_the_typed_error(values: list[Any]) -> None:
    harness = MockHarness(
        MockWebSocketService(
            app_key=APP_KEY, app_secret=APP_SECRET, encryption_master_key=ENCRYPTION_KEY
        )
    )
    for call, valid in _methods(harness).values():
        _check(harness, call, values[: len(valid)])
    assert isinstance(harness.service.validate_webhook(values[0], values[1]), bool)


def test_every_public_method_is_covered() -> None:
    harness = MockHarness(MockWebSocketService())
    public = {
        name
        for name, member in inspect.getmembers(MockWebSocketService)
        if not name.startswith("_") and inspect.isfunction(member)
    }
    test_helpers = {"add_connection", "add_subscriber", "fail_next", "reset"}
    covered = {*_methods(harness), "validate_webhook", "health_check", "record_metric"}
    assert public - test_helpers - covered == set()
