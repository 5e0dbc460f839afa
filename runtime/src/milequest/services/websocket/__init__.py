"""WebSocket service: real-time events to channels through Pusher, API Gateway or a mock.

```python
ws = create_websocket_service()
ws.trigger("team-123", "activity-update", {"activityId": "abc123", "distance": 5.2})
auth = ws.authenticate_channel(socket_id, "private-team-123", user_id)
```

Names are resolved on first use (PEP 562), so the Lambda handlers can import the pure
:mod:`~milequest.services.websocket.protocol` module without pydantic or boto3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from milequest.services.lazy import lazy_attribute

if TYPE_CHECKING:
    from .errors import WebSocketError, WebSocketErrorCode
    from .factory import create_websocket_service
    from .models import (
        BatchEvent,
        ChannelInfo,
        ChannelUser,
        PresenceUser,
        SubscriptionResult,
        TriggerResult,
        Webhook,
        WebhookEvent,
    )
    from .service import ConnectionService, WebSocketService
    from .tokens import issue_connection_token, verify_connection_token

_LAZY = {
    "BatchEvent": "models",
    "ChannelInfo": "models",
    "ChannelUser": "models",
    "ConnectionService": "service",
    "PresenceUser": "models",
    "SubscriptionResult": "models",
    "TriggerResult": "models",
    "WebSocketError": "errors",
    "WebSocketErrorCode": "errors",
    "WebSocketService": "service",
    "Webhook": "models",
    "WebhookEvent": "models",
    "create_websocket_service": "factory",
    "issue_connection_token": "tokens",
    "verify_connection_token": "tokens",
}

__all__ = [
    "BatchEvent",
    "ChannelInfo",
    "ChannelUser",
    "ConnectionService",
    "PresenceUser",
    "SubscriptionResult",
    "TriggerResult",
    "WebSocketError",
    "WebSocketErrorCode",
    "WebSocketService",
    "Webhook",
    "WebhookEvent",
    "create_websocket_service",
    "issue_connection_token",
    "verify_connection_token",
]


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, globals(), name)


def __dir__() -> list[str]:
    return sorted(__all__)
