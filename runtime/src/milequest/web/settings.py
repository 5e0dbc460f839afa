"""Settings of the HTTP app, read from the environment when the app is built."""

from __future__ import annotations

from pydantic import Field

from milequest.services.config import ServiceSettings


class WebSettings(ServiceSettings):
    """Who may join which channel, and which browser origins may call the app."""

    realtime_channel_policy: str = Field(
        default="deny",
        description="Who may join private/presence channels: deny | allow-all | "
        "module:function (user, channel) -> bool",
    )
    realtime_ws_host: str | None = Field(
        default=None,
        description="Host pusher-js connects to for the apigateway provider (GET /realtime/config)",
    )
    realtime_ws_port: int = Field(default=443, gt=0, lt=65536, description="Its port")
    realtime_ws_tls: bool = Field(default=True, description="Whether that host speaks wss://")
    web_cors_origins: str = Field(
        default="",
        description="Comma-separated origins allowed to call the app from a browser "
        "(empty: same origin only)",
    )
