"""Provider routing for migrations: one place, used by the factories of both services.

**WebSocket.** With ``WEBSOCKET_SECONDARY_PROVIDER`` set, the registry's ``websocket``
service is a :class:`RoutedWebSocketService` over the primary (``WEBSOCKET_PROVIDER``) and
the secondary provider. While the flag ``websocket_dual_publish`` is on, ``trigger``,
``trigger_batch``, ``send_to_user`` and ``terminate_user_connections`` reach both, so every
client gets the event whichever provider it is connected to; each side's outcome is in the
result, and a failure on one side never hides success on the other. Channel queries merge
both sides (presence counted per user across both). Everything else goes to the provider a
socket id belongs to, or to the primary. Which provider a user's browser connects to is
the flag ``websocket_provider`` (see ``GET /realtime/config``).

**Email** (in :mod:`milequest.services.email.routing`, named here too; apart, so that
neither service's processes import the other's modules). With ``EMAIL_ROUTING_PROVIDERS``
or ``EMAIL_FAILOVER_PROVIDER`` set, ``create_email_service()`` returns a
``RoutedEmailService`` over ``EMAIL_PROVIDER`` and those providers (one shared
suppression list). Each message goes to the provider the flag
``email_provider`` names for its first recipient (sticky: a stable hash of the address),
if that provider is configured and its sending domain verified; else to
``EMAIL_PROVIDER``. It fails over to ``EMAIL_FAILOVER_PROVIDER`` (or the flag
``email_failover_provider``) only when the chosen provider cannot have taken the message:
its circuit is open, it refused the connection, or it answered 429 or 503 to every
attempt. Never after a timeout or a dropped connection (the message may have been
accepted), never after a rejection, and never for a suppressed recipient: the suppression
list is checked before any provider. Results name the provider that sent; each provider
records its own metrics (the ``Provider`` dimension), failovers as ``Failovers``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import Field

from . import flags
from .config import ServiceSettings
from .errors import ServiceError
from .health import HealthState
from .metrics import MetricsSink
from .websocket.errors import WebSocketError
from .websocket.models import BatchEvent, ChannelInfo, ChannelUser, TriggerResult, WebhookEvent
from .websocket.service import ConnectionService, WebSocketService, merge_results

if TYPE_CHECKING:
    pass

logger = logging.getLogger("milequest.services")

T = TypeVar("T")
DUAL_PUBLISH_FLAG = "websocket_dual_publish"
WEBSOCKET_PROVIDER_FLAG = "websocket_provider"


class RoutingSettings(ServiceSettings):
    """The second provider of a migration."""

    websocket_secondary_provider: Literal["pusher", "apigateway", "mock"] | None = Field(
        default=None,
        description="A second WebSocket provider: publish to both while websocket_dual_publish "
        "is on",
    )


class RoutedTriggerResult(TriggerResult):
    """A trigger's result over both providers: the merged counts and each side's outcome."""

    providers: dict[str, TriggerResult] = Field(default_factory=dict)
    errors: dict[str, str] = Field(default_factory=dict)


def create_routed_websocket_service(metrics: MetricsSink | None = None) -> WebSocketService:
    """The ``websocket`` service: the configured provider, routed when a second is set."""
    from .websocket.factory import create_websocket_service
    from .websocket.settings import read_settings

    secondary = RoutingSettings().websocket_secondary_provider
    primary = create_websocket_service(metrics=metrics)
    if secondary is None or secondary == read_settings().websocket_provider:
        return primary
    return RoutedWebSocketService(primary, create_websocket_service(secondary, metrics=metrics))


class RoutedWebSocketService(WebSocketService):
    """The primary and secondary providers of a WebSocket migration, as one service."""

    provider_name: ClassVar[str] = "routed"

    def __init__(self, primary: WebSocketService, secondary: WebSocketService) -> None:
        super().__init__(
            app_key=primary.app_key,
            app_secret=primary._app_secret,
            max_payload_bytes=min(primary.max_payload_bytes, secondary.max_payload_bytes),
            encryption_master_key=primary._master_key,
            metrics=primary._metrics,
        )
        self.primary = primary
        self.secondary = secondary
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ws-route")

    @property
    def providers(self) -> tuple[WebSocketService, WebSocketService]:
        return self.primary, self.secondary

    def dual_publish(self) -> bool:
        """Whether server-side events go to both providers now (the flag)."""
        return bool(flags.evaluate(DUAL_PUBLISH_FLAG, None, False))

    def connection_service(self) -> ConnectionService | None:
        """The side that holds connections itself (for the Lambda handlers), if any."""
        for provider in self.providers:
            if isinstance(provider, ConnectionService):
                return provider
        return None

    def provider_for_user(self, user_id: str) -> WebSocketService:
        """The provider the flag ``websocket_provider`` assigns to ``user_id``."""
        name = flags.evaluate(WEBSOCKET_PROVIDER_FLAG, user_id, self.primary.provider_name)
        return self.secondary if name == self.secondary.provider_name else self.primary

    # -- fan out to both sides -------------------------------------------------------------

    def _both(
        self, operation: str, call: Callable[[WebSocketService], T]
    ) -> tuple[dict[str, T], dict[str, ServiceError]]:
        """Run ``call`` on both providers at once; results and errors by provider."""
        futures = {p.provider_name: self._pool.submit(call, p) for p in self.providers}
        results: dict[str, T] = {}
        errors: dict[str, ServiceError] = {}
        for name, future in futures.items():
            try:
                results[name] = future.result()
            except ServiceError as exc:
                errors[name] = exc
            except Exception as exc:  # a provider's bug: report it as that side's failure
                errors[name] = self._map_error(exc)
        for name, error in errors.items():
            self.record_metric("RoutedFailures", 1, Operation=operation, Target=name)
            logger.warning("%s on %s failed: %s", operation, name, error)
        if not results:  # both failed: the primary's error is the answer
            raise errors[self.primary.provider_name]
        return results, errors

    def _published(
        self, operation: str, call: Callable[[WebSocketService], TriggerResult]
    ) -> TriggerResult:
        if not self.dual_publish():
            return call(self.primary)
        results, errors = self._both(operation, call)
        merged = merge_results(list(results.values()))
        return RoutedTriggerResult(
            **merged.model_dump(),
            providers=results,
            errors={name: str(exc) for name, exc in errors.items()},
        )

    def _socket_for(self, provider: WebSocketService, socket_id: str | None) -> str | None:
        """``socket_id`` if it can belong to ``provider`` (else the sender is not there)."""
        if socket_id is None:
            return None
        try:
            provider._check_socket_id(socket_id)
        except WebSocketError:
            return None
        return socket_id

    def _owner(self, socket_id: str) -> WebSocketService:
        """The provider whose socket ids ``socket_id`` can be (the primary if both)."""
        return self.primary if self._socket_for(self.primary, socket_id) else self.secondary

    def trigger(
        self,
        channels: str | Sequence[str],
        event: str,
        data: Any,
        socket_id: str | None = None,
        *,
        encrypted: bool = False,
    ) -> TriggerResult:
        """Trigger on the primary, and on the secondary too while dual publish is on."""
        return self._published(
            "trigger",
            lambda p: p.trigger(
                channels, event, data, self._socket_for(p, socket_id), encrypted=encrypted
            ),
        )

    def trigger_batch(
        self, events: Iterable[BatchEvent | Mapping[str, Any]], *, encrypted: bool = False
    ) -> TriggerResult:
        """``trigger_batch`` on the primary, and on the secondary during dual publish."""
        batch = self._batch(events, encrypted)  # validated (and encrypted) once for both

        def send(provider: WebSocketService) -> TriggerResult:
            mine = [
                e.model_copy(update={"socket_id": self._socket_for(provider, e.socket_id)})
                for e in batch
            ]
            return provider.trigger_batch(mine, encrypted=True)

        return self._published("trigger_batch", send)

    def send_to_user(self, user_id: str, event: str, data: Any) -> TriggerResult:
        """Reach the user's connections on the primary (and secondary during dual publish)."""
        return self._published("send_to_user", lambda p: p.send_to_user(user_id, event, data))

    def terminate_user_connections(self, user_id: str) -> int | None:
        """Close the user's connections on both providers."""
        results, errors = self._both(
            "terminate_user_connections", lambda p: p.terminate_user_connections(user_id)
        )
        if errors:
            raise next(iter(errors.values()))
        counts = list(results.values())
        return None if any(c is None for c in counts) else sum(c or 0 for c in counts)

    # -- queries: both sides merged ---------------------------------------------------------

    def get_channel_info(
        self, channel: str, attributes: Sequence[str] = ("subscription_count", "user_count")
    ) -> ChannelInfo:
        """Occupied on either side; subscriptions summed; users counted once across both."""
        infos, _ = self._both("get_channel_info", lambda p: p.get_channel_info(channel, attributes))
        merged = list(infos.values())
        subscriptions = [i.subscription_count for i in merged]
        users = None
        if any(i.user_count is not None for i in merged):
            users = len({u.id for u in self.get_channel_users(channel)})
        return ChannelInfo(
            channel=channel,
            occupied=any(i.occupied for i in merged),
            subscription_count=None
            if any(s is None for s in subscriptions)
            else sum(s or 0 for s in subscriptions),
            user_count=users,
        )

    def get_channels(
        self, prefix: str | None = None, attributes: Sequence[str] = ()
    ) -> dict[str, ChannelInfo]:
        """The union of both sides' occupied channels."""
        found, _ = self._both("get_channels", lambda p: p.get_channels(prefix, attributes))
        names = sorted({name for listing in found.values() for name in listing})
        return {
            name: ChannelInfo(
                channel=name,
                occupied=True,
                user_count=len({u.id for u in self.get_channel_users(name)})
                if "user_count" in attributes
                else None,
            )
            for name in names
        }

    def get_channel_users(self, channel: str) -> list[ChannelUser]:
        """Presence members of both sides, each user once."""
        found, _ = self._both("get_channel_users", lambda p: p.get_channel_users(channel))
        users: dict[str, ChannelUser] = {}
        for listing in found.values():
            for user in listing:
                users.setdefault(user.id, user)
        return list(users.values())

    # -- per socket: the side the socket belongs to ----------------------------------------

    def authenticate_channel(
        self, socket_id: str, channel: str, user: str | Mapping[str, Any] | None = None
    ) -> dict[str, str]:
        """Signed by the provider the socket id belongs to (both share key and secret)."""
        return self._owner(socket_id).authenticate_channel(socket_id, channel, user)

    def authenticate_user(self, socket_id: str, user: str | Mapping[str, Any]) -> dict[str, str]:
        """Signed by the provider the socket id belongs to."""
        return self._owner(socket_id).authenticate_user(socket_id, user)

    def parse_webhook(self, headers: Mapping[str, str], body: str | bytes) -> list[WebhookEvent]:
        """Webhooks from either side (both sign with the shared secret)."""
        return self.primary.parse_webhook(headers, body)

    def verify_api_request(
        self, method: str, paths: Sequence[str], params: Mapping[str, str], body: bytes
    ) -> None:
        """Pusher HTTP API requests are signed with the shared key."""
        self.primary.verify_api_request(method, paths, params, body)

    # -- the provider hooks: unused (every public method above delegates), kept typed ------

    def _trigger(
        self, channels: list[str], event: str, data: str, socket_id: str | None
    ) -> TriggerResult:
        return self.primary._trigger(channels, event, data, socket_id)

    def _trigger_batch(self, events: list[BatchEvent]) -> TriggerResult:
        return self.primary._trigger_batch(events)

    def _channel_info(self, channel: str, attributes: tuple[str, ...]) -> ChannelInfo:
        return self.primary._channel_info(channel, attributes)

    def _channels(self, prefix: str, attributes: tuple[str, ...]) -> dict[str, ChannelInfo]:
        return self.primary._channels(prefix, attributes)

    def _channel_users(self, channel: str) -> list[ChannelUser]:
        return self.primary._channel_users(channel)

    def _terminate_user(self, user_id: str) -> int | None:
        return self.primary._terminate_user(user_id)

    def _probe(self) -> tuple[HealthState, dict[str, Any]]:
        statuses = [p.health_check() for p in self.providers]
        worst = HealthState.HEALTHY
        if any(s.status is HealthState.UNHEALTHY for s in statuses):
            worst = (
                HealthState.UNHEALTHY
                if all(s.status is HealthState.UNHEALTHY for s in statuses)
                else HealthState.DEGRADED
            )
        return worst, {
            "dual_publish": self.dual_publish(),
            "providers": {s.provider: s.status.value for s in statuses},
        }

    def close(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=False)


def __getattr__(name: str) -> Any:
    # The email part lives with the email package; named here as the one routing module.
    if name in ("RoutedEmailService", "routed_email_service", "EMAIL_PROVIDER_FLAG"):
        from .email import routing as email_routing

        return getattr(email_routing, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
