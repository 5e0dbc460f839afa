"""WebSocket settings, read from the environment when the factory is called."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field

from milequest.services.config import ServiceSettings, get_secret_json, load_settings

from .errors import WebSocketError, WebSocketErrorCode

ProviderName = Literal["pusher", "apigateway", "mock"]

PUSHER_DEFAULT_MAX_PAYLOAD = 10 * 1024
APIGATEWAY_MAX_PAYLOAD = 128 * 1024


class WebSocketSettings(ServiceSettings):
    """Every setting of every provider (each variable is named after the field)."""

    websocket_provider: ProviderName = Field(
        default="apigateway", description="pusher | apigateway | mock"
    )

    # pusher
    pusher_app_id: str | None = Field(
        default=None, pattern=r"^\d+$", description="Pusher app id (numeric)"
    )
    pusher_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("NEXT_PUBLIC_PUSHER_KEY", "PUSHER_KEY"),
        description="Pusher app key",
    )
    pusher_secret: str | None = Field(default=None, description="Pusher app secret")
    pusher_cluster: str | None = Field(default=None, description="Pusher cluster, e.g. eu")
    pusher_host: str | None = Field(
        default=None, description="Host of a Pusher-compatible server (instead of the cluster)"
    )
    pusher_port: int | None = Field(default=None, gt=0, lt=65536, description="Port of that server")
    pusher_use_tls: bool = Field(default=True, description="HTTPS to the Pusher API")
    pusher_timeout: float = Field(default=5.0, gt=0, description="Pusher API timeout (s)")
    pusher_secret_arn: str | None = Field(
        default=None, description="Secret with JSON app_id / key / secret / cluster"
    )
    pusher_max_payload_bytes: int = Field(
        default=PUSHER_DEFAULT_MAX_PAYLOAD,
        gt=0,
        description="Event payload limit in UTF-8 bytes (raise for dedicated clusters)",
    )

    # apigateway
    connections_table: str | None = Field(
        default=None, description="DynamoDB table of connections and subscriptions"
    )
    apigw_management_endpoint: str | None = Field(
        default=None, description="The stage's callback URL (https://{api}.execute-api.../{stage})"
    )
    websocket_app_key: str | None = Field(
        default=None, description="Key that signs channel auth, webhooks and tokens"
    )
    websocket_app_secret: str | None = Field(default=None, description="Secret of that key")
    websocket_secret_arn: str | None = Field(
        default=None, description="Secret with JSON key / secret (instead of the two above)"
    )
    websocket_app_id: str = Field(
        default="1",
        pattern=r"^\d{1,20}$",
        description="Numeric app id of our Pusher-compatible HTTP API (/apps/{id}/...)",
    )
    websocket_app_enabled: bool = Field(
        default=True,
        description="false refuses new connections (4003) and HTTP API calls (403): a kill switch",
    )
    websocket_encryption_master_key: str | None = Field(
        default=None,
        description="Base64 of 32 bytes: derives the keys of private-encrypted- channels "
        "(or 'encryption_master_key' in a *_SECRET_ARN secret)",
    )
    websocket_activity_timeout: int = Field(
        default=120,
        ge=1,
        le=540,
        description="Seconds of silence before pusher-js pings (below API Gateway's 10-minute "
        "idle timeout)",
    )
    websocket_client_event_rate: int = Field(
        default=10, ge=1, le=1000, description="Client events a connection may send per second"
    )
    websocket_announce_function: str | None = Field(
        default=None,
        description="Function $connect invokes asynchronously to push "
        "pusher:connection_established (apigateway)",
    )
    websocket_webhook_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="Where the handlers POST Pusher-format webhooks",
    )
    websocket_fanout_concurrency: int = Field(
        default=256,
        ge=1,
        le=1000,
        description="Deliveries in flight at once per process (HTTP requests to @connections)",
    )
    websocket_fanout_queue_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="SQS queue of fan-out shards (unset: every channel is delivered inline)",
    )
    websocket_fanout_threshold: int = Field(
        default=2000,
        ge=1,
        description="Channels with more subscribers than this go to the fan-out workers",
    )
    websocket_fanout_shard_size: int = Field(
        default=500, ge=1, le=10_000, description="Connections per fan-out shard"
    )
    websocket_fanout_shard_retries: int = Field(
        default=3,
        ge=0,
        le=20,
        description="Times a shard's undelivered remainder is queued again before it counts as "
        "failed",
    )
    websocket_post_timeout: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="Connect and read timeout of each @connections request (s)",
    )
    websocket_connection_ttl_seconds: int = Field(
        default=2 * 3600 + 600, ge=60, description="TTL of connection records"
    )
    websocket_max_attempts: int = Field(
        default=5,
        ge=1,
        le=20,
        description="Attempts per management-API call, the first included (429, 5xx)",
    )
    websocket_retry_mode: Literal["standard", "adaptive"] = Field(
        default="standard", description="botocore retry mode (deliveries follow it too)"
    )

    # mock
    websocket_mock_latency_ms: float = Field(
        default=0.0, ge=0, description="Mock provider: added latency per call"
    )


def read_settings(overrides: dict[str, object] | None = None) -> WebSocketSettings:
    """The settings now, with ``overrides`` (field names) on top."""
    return load_settings(
        WebSocketSettings, WebSocketError, WebSocketErrorCode.CONFIGURATION, overrides
    )


def app_credentials(settings: WebSocketSettings) -> tuple[str, str] | None:
    """The app key and secret that sign channel auth, webhooks and connection tokens.

    ``WEBSOCKET_APP_KEY`` / ``WEBSOCKET_APP_SECRET`` first, then ``WEBSOCKET_SECRET_ARN``
    (JSON ``{"key", "secret"}``), then the Pusher credentials, so that one signature works
    with whichever provider is configured when both share the credentials.
    """
    if settings.websocket_app_key and settings.websocket_app_secret:
        return settings.websocket_app_key, settings.websocket_app_secret
    if settings.websocket_secret_arn:
        data = _secret(settings.websocket_secret_arn, "WEBSOCKET_SECRET_ARN")
        key, secret = data.get("key"), data.get("secret")
        if not isinstance(key, str) or not isinstance(secret, str) or not key or not secret:
            raise WebSocketError(
                WebSocketErrorCode.CONFIGURATION,
                "WEBSOCKET_SECRET_ARN must hold a JSON object with string 'key' and 'secret'",
            )
        return key, secret
    pusher = pusher_credentials(settings)
    if pusher is not None:
        return pusher["key"], pusher["secret"]
    return None


def pusher_credentials(settings: WebSocketSettings) -> dict[str, str] | None:
    """``app_id``, ``key``, ``secret`` (and ``cluster`` when known) of the Pusher app."""
    if settings.pusher_app_id and settings.pusher_key and settings.pusher_secret:
        creds = {
            "app_id": settings.pusher_app_id,
            "key": settings.pusher_key,
            "secret": settings.pusher_secret,
        }
        if settings.pusher_cluster:
            creds["cluster"] = settings.pusher_cluster
        return creds
    if settings.pusher_secret_arn:
        data = _secret(settings.pusher_secret_arn, "PUSHER_SECRET_ARN")
        creds = {k: str(v) for k, v in data.items() if k in {"app_id", "key", "secret", "cluster"}}
        if not all(creds.get(k) for k in ("app_id", "key", "secret")):
            raise WebSocketError(
                WebSocketErrorCode.CONFIGURATION,
                "PUSHER_SECRET_ARN must hold a JSON object with app_id, key and secret",
            )
        if settings.pusher_cluster:
            creds.setdefault("cluster", settings.pusher_cluster)
        return creds
    return None


def encryption_master_key(settings: WebSocketSettings) -> bytes | None:
    """The master key of encrypted channels, if configured.

    ``WEBSOCKET_ENCRYPTION_MASTER_KEY`` first, then ``encryption_master_key`` in the secret
    of ``WEBSOCKET_SECRET_ARN`` or ``PUSHER_SECRET_ARN`` (base64 of 32 bytes each).
    """
    from .encryption import parse_master_key

    value: object = settings.websocket_encryption_master_key
    variable = "WEBSOCKET_ENCRYPTION_MASTER_KEY"
    for arn, name in (
        (settings.websocket_secret_arn, "WEBSOCKET_SECRET_ARN"),
        (settings.pusher_secret_arn, "PUSHER_SECRET_ARN"),
    ):
        if value is None and arn:
            value = _secret(arn, name).get("encryption_master_key")
            variable = f"encryption_master_key in {name}"
    if value is None:
        return None
    if not isinstance(value, str):
        raise WebSocketError(WebSocketErrorCode.CONFIGURATION, f"{variable} must be a string")
    try:
        return parse_master_key(value)
    except ValueError as exc:
        raise WebSocketError(WebSocketErrorCode.CONFIGURATION, f"{variable}: {exc}") from None


def _secret(arn: str, variable: str) -> dict[str, object]:
    try:
        return get_secret_json(arn)
    except Exception as exc:
        raise WebSocketError(
            WebSocketErrorCode.CONFIGURATION,
            f"{variable}: could not read secret {arn!r}: {type(exc).__name__}: {exc}",
            cause=exc,
        ) from None


def require_app_credentials(settings: WebSocketSettings) -> tuple[str, str]:
    """:func:`app_credentials`, or a CONFIGURATION error naming what to set."""
    creds = app_credentials(settings)
    if creds is None:
        raise WebSocketError(
            WebSocketErrorCode.CONFIGURATION,
            "no app credentials: set WEBSOCKET_APP_KEY and WEBSOCKET_APP_SECRET, "
            "WEBSOCKET_SECRET_ARN, or the Pusher credentials",
        )
    return creds
