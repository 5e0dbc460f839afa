"""Pusher's own server SDKs (Python and Node) publish through the local stack's HTTP API to
pusher-js clients connected through the local gateway."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pusher
import pytest
from milequest.local import LocalStack

from .conftest import stack_config
from .pusherjs import PusherJs, node_binary, pusher_js_clients

pytestmark = pytest.mark.slow

NODE_SDK = Path(__file__).with_name("pusher_server_sdk.cjs")


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(stack_config()) as running:
        yield running


def _sdk(stack: LocalStack) -> pusher.Pusher:
    return pusher.Pusher(**stack.pusher_sdk_settings())


def _connected(stack: LocalStack, client: PusherJs, user: str) -> str:
    options = stack.pusher_js_options()
    headers = {"Authorization": f"Bearer {stack.connection_token(user)}"}
    options["channelAuthorization"]["headers"] = headers
    options["userAuthentication"]["headers"] = headers
    return client.connect(stack.config.resources.websocket_app_key, options)


def test_the_python_sdk_triggers_with_exclusion_and_batches(stack: LocalStack) -> None:
    sdk = _sdk(stack)
    with pusher_js_clients(2) as [alice, bob]:
        sender = _connected(stack, alice, "alice")
        _connected(stack, bob, "bob")
        for client in (alice, bob):
            assert client.subscribe("private-team-7")["type"] == "subscribed"
        assert sdk.trigger("private-team-7", "moved", {"km": 3}, socket_id=sender) == {}
        assert bob.wait_type("event", event="moved")["data"] == {"km": 3}
        batch = [{"channel": "private-team-7", "name": f"b{i}", "data": {"i": i}} for i in range(3)]
        assert sdk.trigger_batch(batch) == {}
        for client in (alice, bob):
            got = [client.wait_type("event", event=f"b{i}")["data"] for i in range(3)]
            assert got == [{"i": 0}, {"i": 1}, {"i": 2}]
        alice.settle(0.3)
        assert not [e for e in alice.of_type("event") if e["event"] == "moved"]


def test_the_python_sdk_queries_channels_and_users(stack: LocalStack) -> None:
    sdk = _sdk(stack)
    with pusher_js_clients(2) as [alice, bob]:
        _connected(stack, alice, "alice")
        _connected(stack, bob, "bob")
        for client in (alice, bob):
            client.subscribe("presence-walk-9")
        alice.subscribe("team-9")
        listed = sdk.channels_info(prefix_filter="presence-walk-9", attributes=[])
        assert listed == {"channels": {"presence-walk-9": {}}}
        counted = sdk.channels_info(prefix_filter="presence-", attributes=["user_count"])
        assert counted["channels"]["presence-walk-9"] == {"user_count": 2}
        info = sdk.channel_info("presence-walk-9", ["user_count", "subscription_count"])
        assert info == {"occupied": True, "user_count": 2, "subscription_count": 2}
        assert sdk.channel_info("team-9", ["subscription_count"]) == {
            "occupied": True,
            "subscription_count": 1,
        }
        users = sdk.users_info("presence-walk-9")
        assert sorted(u["id"] for u in users["users"]) == ["alice", "bob"]


def test_the_python_sdk_sends_to_a_user_and_terminates_them(stack: LocalStack) -> None:
    sdk = _sdk(stack)
    with pusher_js_clients(2) as [walker, other]:
        first = _connected(stack, walker, "walker-9")
        _connected(stack, other, "walker-8")
        for client in (walker, other):
            client.send("signin")
            client.wait_type("signed_in")
        walker.wait_for(lambda e: e.get("channel") == "#server-to-user-walker-9")
        assert sdk.send_to_user("walker-9", "badge", {"miles": 500}) == {}
        assert walker.wait_type("user_event", event="badge")["data"] == {"miles": 500}
        other.settle(0.3)
        assert other.of_type("user_event") == []
        assert sdk.terminate_user_connections("walker-9") == {}
        # The terminated client hears why (4009), is closed, and (API Gateway cannot send a
        # close code) reconnects anonymously.
        walker.wait_for(lambda e: e.get("type") == "error")
        walker.wait_for(lambda e: e.get("type") == "connected" and e["socket_id"] != first, 20)
        other.settle(0.3)
        assert [e["type"] for e in other.of_type("connected")] == ["connected"]


def _node_sdk(
    stack: LocalStack, call: str, *args: Any, override: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Call Pusher's Node SDK, configured with the stack's settings (and ``override``)."""
    settings = stack.pusher_sdk_settings()
    node_settings = {
        "appId": settings["app_id"],
        "key": settings["key"],
        "secret": settings["secret"],
        "host": settings["host"],
        "port": str(settings["port"]),
        "useTLS": False,
        **(override or {}),
    }
    command = json.dumps({"settings": node_settings, "call": call, "args": args})
    done = subprocess.run(
        [node_binary(), str(NODE_SDK), command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def test_the_node_sdk_triggers_and_reads_channel_info(stack: LocalStack) -> None:
    with pusher_js_clients(1) as [client]:
        _connected(stack, client, "alice")
        client.subscribe("presence-node")
        triggered = _node_sdk(stack, "trigger", "presence-node", "from-node", {"ok": True})
        assert triggered == {"status": 200, "body": {}}
        assert client.wait_type("event", event="from-node")["data"] == {"ok": True}
        info = _node_sdk(
            stack, "get", {"path": "/channels/presence-node", "params": {"info": "user_count"}}
        )
        assert info == {"status": 200, "body": {"occupied": True, "user_count": 1}}
        refused = _node_sdk(
            stack, "trigger", "presence-node", "forged", {}, override={"secret": "not-it"}
        )
        assert refused["status"] == 401
        client.settle(0.3)
        assert [e["event"] for e in client.of_type("event")] == ["from-node"]
