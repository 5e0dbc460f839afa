"""WebSocket service (filled in by the WebSocket work)."""
