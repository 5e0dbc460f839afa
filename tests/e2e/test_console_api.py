"""The dev console's JSON API: what it does with good and bad requests."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from milequest.local import LocalStack
from milequest.services.websocket import verify_connection_token

from .conftest import stack_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def console() -> Iterator[httpx.Client]:
    with (
        LocalStack(stack_config()) as stack,
        httpx.Client(base_url=stack.urls["console"], timeout=30) as client,
    ):
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
        ("api/simulate", {"address": "a@runners.example", "kind": "delivery"}),
    ],
)
def test_bad_requests_get_400_with_a_message(
    console: httpx.Client, path: str, body: object
) -> None:
    response = console.post(path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]


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
