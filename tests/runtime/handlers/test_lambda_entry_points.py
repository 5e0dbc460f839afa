"""The HTTP app's Lambda entry point (Mangum) and the SnapStart runtime hooks."""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import pytest
import snapshot_restore_py
from milequest.handlers import http, snapstart
from milequest.handlers import websocket as websocket_handlers
from milequest.services import config as service_config
from milequest.services import get_service


def _http_api_event(method: str, path: str, body: str = "", **headers: str) -> dict[str, Any]:
    """An API Gateway HTTP API event (payload format 2.0) on the ``$default`` stage."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"host": "api.milequest.example", **headers},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abcdef1234",
            "domainName": "api.milequest.example",
            "domainPrefix": "api",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "192.0.2.1",
                "userAgent": "test",
            },
            "requestId": "id",
            "routeKey": "$default",
            "stage": "$default",
            "time": "29/Nov/2026:09:00:00 +0000",
            "timeEpoch": 1795942800000,
        },
        "body": base64.b64encode(body.encode()).decode(),
        "isBase64Encoded": True,
    }


class _Context:
    function_name = "milequest-http"
    aws_request_id = "req"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def test_the_http_app_answers_lambda_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBSOCKET_PROVIDER", "mock")
    live = http.handler(_http_api_event("GET", "/livez"), _Context())
    assert live["statusCode"] == 200
    assert json.loads(live["body"]) == {"status": "alive"}
    denied = http.handler(
        _http_api_event(
            "POST",
            "/realtime/auth",
            "socket_id=1.2&channel_name=private-a",
            **{"content-type": "application/x-www-form-urlencoded"},
        ),
        _Context(),
    )
    assert denied["statusCode"] == 403  # no bearer token: not authenticated


def test_the_hooks_are_registered_with_the_runtime() -> None:
    # What the Lambda runtime calls around a snapshot (entries are (function, args, kwargs)).
    assert (snapstart.warm, (), {}) in snapshot_restore_py.get_before_snapshot()
    assert (snapstart.refresh, (), {}) in snapshot_restore_py.get_after_restore()


def test_warm_makes_the_configured_services_and_skips_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEBSOCKET_PROVIDER", "mock")
    monkeypatch.setenv("EMAIL_PROVIDER", "nonsense")  # a function without email settings
    assert snapstart.warm() == ["websocket"]


def test_refresh_drops_what_the_snapshot_froze(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBSOCKET_PROVIDER", "mock")
    snapstart.warm()
    before = get_service("websocket")
    service_config._secret_cache["arn:frozen"] = "stale"
    websocket_handlers._lambda = ("http://old", object())
    random.seed(1)
    frozen = random.random()
    called: list[bool] = []
    snapstart.after_restore(lambda: called.append(True))
    try:
        snapstart.refresh()
        assert random.random() != frozen  # not the sequence every restored copy would share
        random.seed(1)
        assert random.random() == frozen  # (the comparison above is meaningful)
        assert "arn:frozen" not in service_config._secret_cache
        assert get_service("websocket") is not before  # new clients, new credentials
        assert websocket_handlers._lambda is None
        assert called == [True]
    finally:
        snapstart._after_restore.pop()
