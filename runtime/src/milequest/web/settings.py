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
    web_cors_origins: str = Field(
        default="",
        description="Comma-separated origins allowed to call the app from a browser "
        "(empty: same origin only)",
    )
