"""Lambda entry point of the HTTP app (``milequest.web``) behind an API Gateway HTTP API.

Mangum, a maintained ASGI adapter, turns the HTTP API's events (payload format 2.0) into
ASGI requests, so Pusher's HTTP API, the auth endpoints and the webhooks run unchanged.
Serve the API on its ``$default`` stage: Pusher's SDKs sign the path ``/apps/...`` exactly
as they send it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mangum import Mangum

from milequest.web import app

_adapter = Mangum(app, lifespan="off", api_gateway_base_path="/")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Answer one HTTP API event."""
    # Mangum runs each request on the thread's current event loop; make sure there is one
    # (an earlier ``asyncio.run`` in the same process leaves none behind).
    try:
        asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
    response: dict[str, Any] = _adapter(event, context)
    return response
