"""The factory, the settings, the registry and lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys

import boto3
import pytest
from milequest.services import check_services_health, get_service
from milequest.services.errors import CommonErrorCode
from milequest.services.websocket import (
    WebSocketError,
    WebSocketErrorCode,
    create_websocket_service,
    protocol,
)
from milequest.services.websocket.apigateway import ApiGatewayWebSocketService
from milequest.services.websocket.mock import MockWebSocketService
from milequest.services.websocket.pusher import PusherWebSocketService
from moto import mock_aws


def test_error_codes_include_the_common_ones() -> None:
    for common in CommonErrorCode:
        assert WebSocketErrorCode(common.value).value == common.value
    for name in (
        "INVALID_CHANNEL",
        "INVALID_EVENT",
        "INVALID_SOCKET_ID",
        "PAYLOAD_TOO_LARGE",
        "UNAUTHORIZED",
        "FORBIDDEN",
        "CONNECTION_GONE",
        "RATE_LIMITED",
        "INVALID_WEBHOOK",
    ):
        assert WebSocketErrorCode[name].value == name


def test_provider_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBSOCKET_PROVIDER", "pusher")
    monkeypatch.setenv("PUSHER_APP_ID", "123")
    monkeypatch.setenv("NEXT_PUBLIC_PUSHER_KEY", "pub-key")
    monkeypatch.setenv("PUSHER_SECRET", "sec")
    monkeypatch.setenv("PUSHER_CLUSTER", "eu")
    service = create_websocket_service()
    assert isinstance(service, PusherWebSocketService)
    assert service.app_key == "pub-key"
    assert service.endpoint == "https://api-eu.pusher.com:443"
    assert service.max_payload_bytes == 10 * 1024

    monkeypatch.setenv("PUSHER_HOST", "127.0.0.1")
    monkeypatch.setenv("PUSHER_PORT", "6001")
    monkeypatch.setenv("PUSHER_USE_TLS", "false")
    monkeypatch.setenv("PUSHER_MAX_PAYLOAD_BYTES", "65536")
    service = create_websocket_service()
    assert isinstance(service, PusherWebSocketService)
    assert service.endpoint == "http://127.0.0.1:6001"
    assert service.max_payload_bytes == 65536

    monkeypatch.setenv("WEBSOCKET_PROVIDER", "apigateway")
    monkeypatch.setenv("CONNECTIONS_TABLE", "t")
    monkeypatch.setenv("APIGW_MANAGEMENT_ENDPOINT", "http://127.0.0.1:9/local/")
    monkeypatch.setenv("WEBSOCKET_FANOUT_CONCURRENCY", "8")
    api = create_websocket_service()
    assert isinstance(api, ApiGatewayWebSocketService)
    assert api.management_endpoint == "http://127.0.0.1:9/local"
    assert api.concurrency == 8
    # Without WEBSOCKET_APP_* the Pusher credentials sign, so auth works with either.
    assert api.app_key == "pub-key"

    assert isinstance(create_websocket_service("mock"), MockWebSocketService)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"WEBSOCKET_PROVIDER": "carrier-pigeon"}, "WEBSOCKET_PROVIDER"),
        ({"WEBSOCKET_PROVIDER": "pusher"}, "PUSHER_APP_ID"),
        (
            {
                "WEBSOCKET_PROVIDER": "pusher",
                "PUSHER_APP_ID": "abc",
                "PUSHER_KEY": "k",
                "PUSHER_SECRET": "s",
            },
            "PUSHER_APP_ID",
        ),
        (
            {
                "WEBSOCKET_PROVIDER": "pusher",
                "PUSHER_APP_ID": "1",
                "PUSHER_KEY": "k",
                "PUSHER_SECRET": "s",
                "PUSHER_PORT": "http",
            },
            "PUSHER_PORT",
        ),
        ({"WEBSOCKET_PROVIDER": "apigateway"}, "CONNECTIONS_TABLE"),
        (
            {
                "WEBSOCKET_PROVIDER": "apigateway",
                "CONNECTIONS_TABLE": "t",
                "APIGW_MANAGEMENT_ENDPOINT": "wss://x",
            },
            "APIGW_MANAGEMENT_ENDPOINT",
        ),
        ({"WEBSOCKET_FANOUT_CONCURRENCY": "0"}, "WEBSOCKET_FANOUT_CONCURRENCY"),
        (
            {"WEBSOCKET_PROVIDER": "mock", "WEBSOCKET_WEBHOOK_URL": "file:///etc/passwd"},
            "WEBSOCKET_WEBHOOK_URL",
        ),
    ],
)
def test_bad_configuration(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], needle: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(WebSocketError) as err:
        create_websocket_service()
    assert err.value.code is WebSocketErrorCode.CONFIGURATION
    assert needle in err.value.message


def test_unknown_provider_argument() -> None:
    with pytest.raises(WebSocketError) as err:
        create_websocket_service("smoke-signals")
    assert err.value.code is WebSocketErrorCode.CONFIGURATION


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBSOCKET_PROVIDER", "pusher")
    service = create_websocket_service(
        "mock", websocket_app_key="k2", websocket_app_secret="s2", pusher_max_payload_bytes=99
    )
    assert (service.app_key, service.max_payload_bytes) == ("k2", 99)
    with pytest.raises(WebSocketError) as err:
        create_websocket_service("mock", no_such_setting=1)
    assert err.value.code is WebSocketErrorCode.CONFIGURATION


@mock_aws
def test_credentials_from_secrets_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    sm = boto3.client("secretsmanager")
    pusher_arn = sm.create_secret(
        Name="pusher",
        SecretString=json.dumps({"app_id": "77", "key": "pk", "secret": "ps", "cluster": "ap1"}),
    )["ARN"]
    ws_arn = sm.create_secret(Name="ws", SecretString=json.dumps({"key": "wk", "secret": "ws"}))[
        "ARN"
    ]
    bad_arn = sm.create_secret(Name="bad", SecretString=json.dumps({"key": "only"}))["ARN"]

    service = create_websocket_service("pusher", pusher_secret_arn=pusher_arn)
    assert isinstance(service, PusherWebSocketService)
    assert (service.app_id, service.app_key) == ("77", "pk")
    assert service.endpoint == "https://api-ap1.pusher.com:443"

    api = create_websocket_service(
        "apigateway",
        connections_table="t",
        apigw_management_endpoint="https://abc.execute-api.us-east-1.amazonaws.com/prod",
        websocket_secret_arn=ws_arn,
    )
    assert api.app_key == "wk"
    signed = api.authenticate_channel(protocol.encode_socket_id("L0SM9cOFvHcCIhw="), "private-a")
    assert signed["auth"].startswith("wk:")

    for kwargs in ({"websocket_secret_arn": bad_arn}, {"websocket_secret_arn": "arn:nope"}):
        with pytest.raises(WebSocketError) as err:
            create_websocket_service(
                "apigateway",
                connections_table="t",
                apigw_management_endpoint="https://x/prod",
                **kwargs,
            )
        assert err.value.code is WebSocketErrorCode.CONFIGURATION


def test_registry_serves_the_service_and_its_health(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBSOCKET_PROVIDER", "mock")
    service = get_service("websocket")
    assert isinstance(service, MockWebSocketService)
    assert get_service("websocket") is service
    report = check_services_health(["websocket"])
    assert report.services["websocket"].provider == "mock"
    assert report.services["websocket"].healthy
    service.fail_next(ConnectionError("down"))
    report = check_services_health(["websocket"])
    assert not report.services["websocket"].healthy


def test_mock_failure_injection_maps_errors() -> None:
    service = create_websocket_service("mock")
    assert isinstance(service, MockWebSocketService)
    service.fail_next(TimeoutError("slow"), times=2)
    for _ in range(2):
        with pytest.raises(WebSocketError) as err:
            service.trigger("c", "ev", 1)
        assert err.value.code is WebSocketErrorCode.PROVIDER_UNAVAILABLE
    service.trigger("c", "ev", 1)
    assert [m.event for m in service.messages] == ["ev"]


def test_lazy_provider_imports() -> None:
    code = (
        "import sys\n"
        "from milequest.services.websocket import create_websocket_service\n"
        "create_websocket_service('apigateway', connections_table='t',"
        " apigw_management_endpoint='http://127.0.0.1:1/x')\n"
        "create_websocket_service('mock')\n"
        "print('pusher' in sys.modules, 'requests' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
