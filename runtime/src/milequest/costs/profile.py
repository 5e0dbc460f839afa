"""The model's inputs: a usage profile (what clients do) and the stack's design options."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import cost_error
from .prices import one_line

DAYS_PER_MONTH = 30
MINUTES_PER_MONTH = DAYS_PER_MONTH * 24 * 60
# API Gateway closes a WebSocket connection after 2 hours and refuses messages over 128 KB.
MAX_SESSION_MINUTES = 120
MAX_PAYLOAD_BYTES = 128 * 1024

# Bounds that no real deployment reaches: anything above is a typo, refused as absurd.
MAX_CONNECTIONS = 1e8
MAX_PER_MONTH = 1e12
MAX_FANOUT = 1e6


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class UsageProfile(_Model):
    """A month (30 days) of use; every figure is a monthly total or an average."""

    peak_connections: float = Field(default=0, ge=0, le=MAX_CONNECTIONS)
    # Connection-minutes a month; when absent, peak_connections x average_share all month.
    connection_minutes: float | None = Field(default=None, ge=0)
    average_share: float = Field(default=0.5, gt=0, le=1)
    # How long a connection lasts; idle ones reach API Gateway's 2 h limit and reconnect.
    session_minutes: float = Field(default=MAX_SESSION_MINUTES, gt=0, le=MAX_SESSION_MINUTES)
    subscriptions_per_connection: float = Field(default=2, ge=0, le=1000)
    events_per_month: float = Field(default=0, ge=0, le=MAX_PER_MONTH)
    subscribers_per_event: float = Field(default=5, ge=0, le=MAX_FANOUT)
    client_events_per_month: float = Field(default=0, ge=0, le=MAX_PER_MONTH)
    presence_joins_per_month: float = Field(default=0, ge=0, le=MAX_PER_MONTH)
    # Members of a presence channel when someone joins; default: subscribers_per_event.
    presence_members: float | None = Field(default=None, ge=0, le=MAX_FANOUT)
    # Bytes of one event frame as a client receives it.
    payload_bytes: int = Field(default=1024, ge=1, le=MAX_PAYLOAD_BYTES)
    emails_per_month: float = Field(default=0, ge=0, le=MAX_PER_MONTH)
    ses_dedicated_ips: int = Field(default=0, ge=0, le=100)

    @model_validator(mode="after")
    def _possible(self) -> UsageProfile:
        if (
            self.connection_minutes is not None
            and self.connection_minutes > self.peak_connections * MINUTES_PER_MONTH * (1 + 1e-9)
        ):
            raise ValueError(
                "connection_minutes is more than peak_connections connected all month "
                f"({MINUTES_PER_MONTH:,} minutes each)"
            )
        return self

    @property
    def monthly_connection_minutes(self) -> float:
        if self.connection_minutes is not None:
            return self.connection_minutes
        return self.peak_connections * self.average_share * MINUTES_PER_MONTH

    @property
    def members(self) -> float:
        """Members of a presence channel when someone joins."""
        if self.presence_members is None:
            return self.subscribers_per_event
        return self.presence_members

    def scaled_realtime(self, factor: float) -> UsageProfile:
        """This profile with every realtime volume times ``factor`` (fan-out unchanged)."""
        minutes = self.connection_minutes
        return self.model_copy(
            update={
                "peak_connections": self.peak_connections * factor,
                "connection_minutes": None if minutes is None else minutes * factor,
                "events_per_month": self.events_per_month * factor,
                "client_events_per_month": self.client_events_per_month * factor,
                "presence_joins_per_month": self.presence_joins_per_month * factor,
            }
        )

    def scaled_email(self, factor: float) -> UsageProfile:
        """This profile with the email volume times ``factor``."""
        return self.model_copy(update={"emails_per_month": self.emails_per_month * factor})


class HandlerTimes(_Model):
    """Billed milliseconds per call of each handler (assumptions; see docs/costs.md)."""

    authorize: float = Field(default=20, ge=0, le=60_000)
    connect: float = Field(default=25, ge=0, le=60_000)
    announce: float = Field(default=20, ge=0, le=60_000)
    disconnect: float = Field(default=40, ge=0, le=60_000)
    disconnect_per_subscription: float = Field(default=10, ge=0, le=60_000)
    subscribe: float = Field(default=30, ge=0, le=60_000)
    client_event: float = Field(default=30, ge=0, le=60_000)
    publish: float = Field(default=30, ge=0, le=60_000)
    fanout_shard: float = Field(default=30, ge=0, le=60_000)
    # One post_to_connection, rounded up: scripts/bench_websocket.py measures the provider's
    # fan-out at 0.6 to 0.75 CPU ms per delivery on 2 shared vCPUs.
    per_delivery: float = Field(default=1.0, ge=0, le=60_000)


class StackOptions(_Model):
    """How our API Gateway stack is built and configured."""

    architecture: Literal["arm64", "x86_64"] = "arm64"
    lambda_memory_mb: int = Field(default=512, ge=128, le=10240)
    # A Lambda authorizer on $connect (one more invocation per connection).
    authorizer: bool = False
    # Triggers arrive through our Pusher-compatible HTTP API on Lambda (a Pusher server
    # SDK pointed at us), rather than from the application's own process.
    publish_via_lambda: bool = True
    # Channels with more than shard_threshold subscribers go to SQS in shards of shard_size
    # connections, delivered by fan-out workers.
    sharded_fanout: bool = False
    shard_size: int = Field(default=500, ge=1, le=100_000)
    shard_threshold: float = Field(default=1000, ge=0, le=MAX_FANOUT)
    # pusher-js pings after this many silent seconds (WEBSOCKET_ACTIVITY_TIMEOUT).
    activity_timeout_seconds: float = Field(default=120, ge=1, le=600)
    times: HandlerTimes = HandlerTimes()


_M = TypeVar("_M", bound=_Model)


def usage_profile(data: UsageProfile | Mapping[str, Any]) -> UsageProfile:
    """Validate ``data`` as a :class:`UsageProfile`; ``CostError(INVALID_PROFILE)`` if it fails."""
    return _validated(UsageProfile, data)


def stack_options(data: StackOptions | Mapping[str, Any] | None) -> StackOptions:
    """Validate ``data`` as :class:`StackOptions` (``None``: the defaults)."""
    return _validated(StackOptions, {} if data is None else data)


def _validated(model: type[_M], data: _M | Mapping[str, Any]) -> _M:
    if isinstance(data, model):
        return data
    try:
        if not isinstance(data, Mapping):
            raise TypeError(f"expected a mapping of {model.__name__} fields")
        return model.model_validate(dict(data))
    except (ValidationError, TypeError) as exc:
        raise cost_error("INVALID_PROFILE", one_line(exc), cause=exc) from exc
