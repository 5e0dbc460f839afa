"""Typed values the WebSocket service takes and returns."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BatchEvent(_Model):
    """One event of :meth:`WebSocketService.trigger_batch`."""

    channel: str
    name: str
    data: Any = None
    socket_id: str | None = None


class TriggerResult(_Model):
    """What a trigger did.

    ``delivered`` / ``gone`` / ``failed`` count connections when the provider fans out
    itself (API Gateway, mock); Pusher fans out on its side and reports ``None``. They
    count what was delivered inline: channels above the fan-out threshold are handed to
    workers instead, ``queued`` connections in ``shards`` jobs (the workers report their
    deliveries as metrics).
    """

    channels: list[str]
    events: int = 1
    delivered: int | None = None
    gone: int = 0
    failed: int = 0
    excluded: int = 0
    shards: int = 0
    queued: int = 0


class ShardReport(_Model):
    """What a fan-out worker did with one shard.

    ``delivered`` and ``failed`` count messages (``failed``: given up after the last
    attempt); ``gone`` connections were cleaned up; ``requeued`` connections were queued
    again for what they missed.
    """

    channel: str
    connections: int
    delivered: int = 0
    gone: int = 0
    requeued: int = 0
    failed: int = 0


class ChannelInfo(_Model):
    """A channel's state (``user_count`` only for presence channels)."""

    channel: str
    occupied: bool
    subscription_count: int | None = None
    user_count: int | None = None


class ChannelUser(_Model):
    """A member of a presence channel."""

    id: str
    user_info: dict[str, Any] | None = None


class PresenceUser(_Model):
    """The user a presence subscription is signed for."""

    user_id: str = Field(min_length=1, max_length=200)
    user_info: dict[str, Any] | None = None


class SubscriptionResult(_Model):
    """A connection's subscription, with the presence members when it is a presence channel."""

    channel: str
    members: dict[str, dict[str, Any] | None] | None = None
    already_subscribed: bool = False


WebhookEventName = Literal[
    "channel_occupied",
    "channel_vacated",
    "member_added",
    "member_removed",
    "client_event",
    # Also sent by Pusher when enabled for the app:
    "subscription_count",
    "cache_miss",
]


class WebhookEvent(_Model):
    """One event of a Pusher-format webhook."""

    model_config = ConfigDict(frozen=True, extra="allow")

    name: WebhookEventName
    channel: str
    user_id: str | None = None
    event: str | None = None
    data: str | None = None
    socket_id: str | None = None
    subscription_count: int | None = None


class Webhook(_Model):
    """A whole webhook body: when it was sent and its events."""

    time_ms: int
    events: list[WebhookEvent]
