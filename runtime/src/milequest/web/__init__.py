"""The runtime's HTTP app (ASGI): ``uvicorn milequest.web:app``.

``GET /livez`` (liveness: what load balancers poll), ``GET /healthz`` (the services' health
report; 503 when unhealthy), ``POST /realtime/auth`` and ``POST /realtime/user-auth``
(pusher-js's channel-authorization and user-authentication endpoints),
``POST /webhooks/pusher``, and Pusher's HTTP API (``/apps/{app_id}/...``). Build a
customised app with :func:`create_app`.
"""

from .app import create_app
from .auth import (
    Authenticator,
    ChannelPolicy,
    User,
    allow_all_channels,
    bearer_token,
    channel_policy_from_setting,
    connection_token_authenticator,
    deny_all_channels,
    user_id_of,
)
from .webhooks import ANY_EVENT, WebhookDispatcher, WebhookHandler

app = create_app()

__all__ = [
    "ANY_EVENT",
    "Authenticator",
    "ChannelPolicy",
    "User",
    "WebhookDispatcher",
    "WebhookHandler",
    "allow_all_channels",
    "app",
    "bearer_token",
    "channel_policy_from_setting",
    "connection_token_authenticator",
    "create_app",
    "deny_all_channels",
    "user_id_of",
]
