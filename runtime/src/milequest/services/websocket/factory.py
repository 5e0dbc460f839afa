"""``create_websocket_service``: the provider named by the settings, imported lazily."""

from __future__ import annotations

from typing import Any

from milequest.services.metrics import MetricsSink

from .errors import WebSocketError, WebSocketErrorCode
from .service import WebSocketService
from .settings import (
    APIGATEWAY_MAX_PAYLOAD,
    WebSocketSettings,
    app_credentials,
    encryption_master_key,
    pusher_credentials,
    read_settings,
)

PROVIDERS = ("pusher", "apigateway", "mock")


def create_websocket_service(
    provider: str | None = None,
    *,
    metrics: MetricsSink | None = None,
    **overrides: Any,
) -> WebSocketService:
    """A WebSocket service for ``provider`` (default: ``WEBSOCKET_PROVIDER``).

    Settings are read from the environment now; ``overrides`` use the settings' field
    names (``pusher_app_id=...``, ``connections_table=...``). Only the chosen provider's
    module is imported.
    """
    if provider is not None:
        if provider not in PROVIDERS:
            raise _config(f"unknown WebSocket provider {provider!r}; known: {', '.join(PROVIDERS)}")
        overrides["websocket_provider"] = provider
    settings = read_settings(overrides)
    name = settings.websocket_provider
    if name == "pusher":
        return _pusher(settings, metrics)
    if name == "apigateway":
        return _apigateway(settings, metrics)
    return _mock(settings, metrics)


def _config(message: str) -> WebSocketError:
    return WebSocketError(WebSocketErrorCode.CONFIGURATION, message)


def _pusher(settings: WebSocketSettings, metrics: MetricsSink | None) -> WebSocketService:
    creds = pusher_credentials(settings)
    if creds is None:
        raise _config(
            "the pusher provider needs PUSHER_APP_ID, NEXT_PUBLIC_PUSHER_KEY (or PUSHER_KEY) "
            "and PUSHER_SECRET, or PUSHER_SECRET_ARN"
        )
    if not creds["app_id"].isdigit():
        raise _config(f"PUSHER_APP_ID must be numeric (got {creds['app_id']!r})")
    try:
        from .pusher import PusherWebSocketService
    except ImportError as exc:  # the optional extra is not installed
        raise _config(f"the pusher provider needs the 'pusher' package: {exc}") from None
    return PusherWebSocketService(
        app_id=creds["app_id"],
        key=creds["key"],
        secret=creds["secret"],
        cluster=creds.get("cluster"),
        host=settings.pusher_host,
        port=settings.pusher_port,
        use_tls=settings.pusher_use_tls,
        timeout=settings.pusher_timeout,
        max_payload_bytes=settings.pusher_max_payload_bytes,
        encryption_master_key=encryption_master_key(settings),
        metrics=metrics,
    )


def _apigateway(settings: WebSocketSettings, metrics: MetricsSink | None) -> WebSocketService:
    missing = [
        name
        for name, value in (
            ("CONNECTIONS_TABLE", settings.connections_table),
            ("APIGW_MANAGEMENT_ENDPOINT", settings.apigw_management_endpoint),
        )
        if not value
    ]
    if missing:
        raise _config(f"the apigateway provider needs {' and '.join(missing)}")
    endpoint = str(settings.apigw_management_endpoint)
    if not endpoint.startswith(("https://", "http://")):
        raise _config(f"APIGW_MANAGEMENT_ENDPOINT must be an http(s) URL (got {endpoint!r})")
    from .apigateway import ApiGatewayWebSocketService

    creds = app_credentials(settings)
    return ApiGatewayWebSocketService(
        table_name=str(settings.connections_table),
        management_endpoint=endpoint.rstrip("/"),
        app_key=creds[0] if creds else None,
        app_secret=creds[1] if creds else None,
        max_payload_bytes=APIGATEWAY_MAX_PAYLOAD,
        encryption_master_key=encryption_master_key(settings),
        concurrency=settings.websocket_fanout_concurrency,
        post_timeout=settings.websocket_post_timeout,
        fanout_queue_url=settings.websocket_fanout_queue_url,
        fanout_threshold=settings.websocket_fanout_threshold,
        fanout_shard_size=settings.websocket_fanout_shard_size,
        fanout_shard_retries=settings.websocket_fanout_shard_retries,
        client_event_rate=settings.websocket_client_event_rate,
        connection_ttl_seconds=settings.websocket_connection_ttl_seconds,
        webhook_url=settings.websocket_webhook_url,
        max_attempts=settings.websocket_max_attempts,
        retry_mode=settings.websocket_retry_mode,
        metrics=metrics,
    )


def _mock(settings: WebSocketSettings, metrics: MetricsSink | None) -> WebSocketService:
    from .mock import MockWebSocketService

    creds = app_credentials(settings) or ("mock-key", "mock-secret")
    return MockWebSocketService(
        app_key=creds[0],
        app_secret=creds[1],
        max_payload_bytes=settings.pusher_max_payload_bytes,
        encryption_master_key=encryption_master_key(settings),
        client_event_rate=settings.websocket_client_event_rate,
        latency_ms=settings.websocket_mock_latency_ms,
        webhook_url=settings.websocket_webhook_url,
        metrics=metrics,
    )
