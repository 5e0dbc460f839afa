"""The dev console's JSON API: what it does with good and bad requests."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from milequest.local import LocalStack
from milequest.local import console as console_module
from milequest.local.gateway import Delivery
from milequest.services.websocket import protocol, verify_connection_token

from .conftest import Client, run, stack_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(stack_config()) as running:
        yield running


@pytest.fixture(scope="module")
def console(stack: LocalStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.urls["console"], timeout=30) as client:
        yield client


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("api/trigger", {"event": "e"}),
        ("api/trigger", {"channel": "bad channel!", "event": "e"}),
        ("api/trigger", ["not", "an", "object"]),
        ("api/email", {"subject": "no recipient"}),
        ("api/email", {"to": "not-an-address"}),
        ("api/email", {"to": "a@runners.example", "template": "no-such-template"}),
        ("api/email", {"to": "a@runners.example", "template": "welcome", "template_data": "{"}),
        ("api/simulate", {"address": "a@runners.example", "kind": "delivery"}),
    ],
)
def test_bad_requests_get_400_with_a_message(
    console: httpx.Client, path: str, body: object
) -> None:
    response = console.post(path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]


@pytest.mark.parametrize("path", ["api/trigger", "api/email", "api/simulate"])
def test_a_body_that_is_not_declared_json_is_refused_with_415(
    stack: LocalStack, console: httpx.Client, path: str
) -> None:
    # What a page on another origin can send without a CORS preflight.
    to = "x@runners.example"
    body = json.dumps({"channel": "c", "event": "e", "to": to, "address": to})
    before = len(stack.emails()), len(stack.gateway.deliveries)
    response = console.post(path, content=body, headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert response.json()["error"]
    assert (len(stack.emails()), len(stack.gateway.deliveries)) == before


def test_the_page_state_and_token_are_served(console: httpx.Client) -> None:
    page = console.get("")
    state = console.get("api/state").json()
    token = console.get("api/token", params={"user_id": "ada"}).json()
    assert page.status_code == 200
    assert "<title>Mile Quest" in page.text
    assert state["urls"]["websocket"] == token["url"]
    assert state["email_provider"] == "smtp"
    assert token["user_id"] == "ada"
    assert verify_connection_token(token["token"]) == "ada"


def test_a_trigger_without_subscribers_reports_no_deliveries(console: httpx.Client) -> None:
    response = console.post("api/trigger", json={"channel": "empty", "event": "e", "data": "{}"})
    assert response.status_code == 200
    assert response.json()["delivered"] == 0


@dataclass(frozen=True)
class _DeliveryDuringRead:
    """A delivery whose description lets the gateway record another one meanwhile."""

    deliveries: deque[Any]

    def describe(self) -> dict[str, Any]:
        self.deliveries.append(Delivery(0.0, "other", "frame sent meanwhile"))
        return {"at": "", "connection_id": "second", "data": ""}


def test_the_state_survives_deliveries_recorded_while_it_is_read(
    stack: LocalStack, console: httpx.Client
) -> None:
    deliveries = stack.gateway.deliveries
    deliveries.append(Delivery(0.0, "first", "an earlier frame"))
    deliveries.append(_DeliveryDuringRead(deliveries))  # type: ignore[arg-type]
    try:
        response = console.get("api/state")
    finally:
        deliveries.clear()
    assert response.status_code == 200
    assert response.json()["deliveries"][-1]["connection_id"] == "first"


def test_a_wrong_method_keeps_its_allow_header(console: httpx.Client) -> None:
    response = console.get("api/trigger")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


def test_the_state_lists_the_newest_connections_only(
    stack: LocalStack, console: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console_module, "MAX_LISTED_CONNECTIONS", 1)

    async def scenario() -> dict[str, Any]:
        first, second = await Client.open(stack), await Client.open(stack)
        state: dict[str, Any] = (await asyncio.to_thread(console.get, "api/state")).json()
        await first.close()
        await second.close()
        state["newest"] = protocol.decode_socket_id(second.socket_id)
        return state

    state = run(scenario)
    assert state["connections_total"] == 2
    assert [c["connection_id"] for c in state["connections"]] == [state["newest"]]


@pytest.mark.parametrize("address", ["nope", "user@localhost", "a b@example.com"])
def test_simulating_for_an_unusable_address_is_invalid_email(
    console: httpx.Client, address: str
) -> None:
    response = console.post("api/simulate", json={"address": address, "kind": "bounce"})
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_EMAIL"


def test_captured_emails_are_newest_first_with_times_and_paged(
    stack: LocalStack, console: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from milequest.services.email import create_email_service

    monkeypatch.setattr(console_module, "EMAILS_PER_PAGE", 2)
    smtp = create_email_service("smtp")
    ses = create_email_service("ses")
    message = {"text": "plain part", "html": "<p>html part</p>"}
    smtp.send_email({"to": "a@runners.example", "subject": "first (smtp)", **message})
    ses.send_email({"to": "b@runners.example", "subject": "second (ses)", **message})
    smtp.send_email({"to": "c@runners.example", "subject": "third (smtp)", **message})
    state = console.get("api/state").json()
    subjects = [m["subject"] for m in state["emails"]]
    assert subjects == ["third (smtp)", "second (ses)"]
    assert state["emails_total"] >= 3
    times = [m["received_at"] for m in state["emails"]]
    assert all(isinstance(t, float) for t in times)
    assert times == sorted(times, reverse=True)
    # A plain SES send keeps its text part as well as its HTML.
    assert state["emails"][1]["text"].strip() == "plain part"
    assert "html part" in state["emails"][1]["html"]
    older = console.get("api/emails", params={"offset": 2}).json()
    assert older["emails"][0]["subject"] == "first (smtp)"
    assert console.get("api/emails", params={"offset": "x"}).status_code == 400
