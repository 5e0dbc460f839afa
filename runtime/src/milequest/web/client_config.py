"""What a pusher-js front end passes to ``new Pusher(key, options)`` for a given user."""

from __future__ import annotations

from typing import Any

from milequest.services.websocket import WebSocketService

from .settings import WebSettings


def client_config(
    service: WebSocketService, user_id: str, base_url: str, settings: WebSettings
) -> dict[str, Any] | None:
    """``{"provider", "key", "options"}`` for ``user_id``; None when the host is unknown.

    During a migration the flag ``websocket_provider`` picks the side (sticky per user);
    otherwise it is the configured provider. Pusher gets its cluster; our API Gateway stage
    gets ``REALTIME_WS_HOST``/``PORT``/``TLS``. Both use this app's auth endpoints.
    """
    from milequest.services.routing import RoutedWebSocketService

    provider = service
    if isinstance(service, RoutedWebSocketService):
        provider = service.provider_for_user(user_id)
    auth = {
        "channelAuthorization": {"endpoint": f"{base_url}/realtime/auth", "transport": "ajax"},
        "userAuthentication": {"endpoint": f"{base_url}/realtime/user-auth", "transport": "ajax"},
    }
    if provider.provider_name == "pusher":
        cluster = getattr(provider, "cluster", None) or "mt1"
        options: dict[str, Any] = {"cluster": cluster, "forceTLS": True, **auth}
    else:
        if not settings.realtime_ws_host:
            return None
        transports = ["ws", "wss"] if settings.realtime_ws_tls else ["ws"]
        options = {
            "cluster": "mt1",  # required by pusher-js 8, unused with wsHost
            "wsHost": settings.realtime_ws_host,
            "wsPort": settings.realtime_ws_port,
            "wssPort": settings.realtime_ws_port,
            "forceTLS": settings.realtime_ws_tls,
            "enabledTransports": transports,
            **auth,
        }
    return {"provider": provider.provider_name, "key": provider.app_key, "options": options}
