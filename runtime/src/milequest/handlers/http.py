"""Lambda entry point of the HTTP app (``milequest.web``) behind an API Gateway HTTP API.

Mangum, a maintained ASGI adapter, turns the HTTP API's events (payload format 2.0) into
ASGI requests, so Pusher's HTTP API, the auth endpoints and the webhooks run unchanged.
Serve the API on its ``$default`` stage: Pusher's SDKs sign the path ``/apps/...`` exactly
as they send it.
"""

from __future__ import annotations

from mangum import Mangum

from milequest.web import app

handler = Mangum(app, lifespan="off", api_gateway_base_path="/")
