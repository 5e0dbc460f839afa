"""The runtime's HTTP app (ASGI): ``uvicorn milequest.web:app``.

``GET /livez`` (liveness: what load balancers poll), ``GET /healthz`` (the services' health
report; 503 when unhealthy), ``POST /realtime/auth`` (channel auth for pusher-js style
clients) and ``POST /webhooks/pusher``. Build a customised app with :func:`create_app`.
"""

from .app import create_app
from .auth import (
    Authenticator,
    ChannelPolicy,
    User,
    allow_all_channels,
    bearer_token,
    connection_token_authenticator,
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
    "connection_token_authenticator",
    "create_app",
]
