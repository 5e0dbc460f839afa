"""WebSocket service: real-time events to channels through Pusher, API Gateway or a mock.

```python
ws = create_websocket_service()
ws.trigger("team-123", "activity-update", {"activityId": "abc123", "distance": 5.2})
auth = ws.authenticate_channel(socket_id, "private-team-123", user_id)
```
"""

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
