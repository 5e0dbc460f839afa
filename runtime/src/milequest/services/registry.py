"""Process-wide registry: one instance per service, health aggregation, test overrides."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal, overload

from .base import BaseService
from .health import HealthReport, HealthState, HealthStatus

if TYPE_CHECKING:
    from .email import EmailService
    from .websocket import WebSocketService

ServiceName = Literal["email", "websocket"]

# Factories are named, not imported, so that an email-only process never imports the
# websocket providers (and the other way round).
_FACTORIES: dict[str, str] = {
    "email": "milequest.services.email:create_email_service",
    # The configured provider, or both sides of a migration (routing.py).
    "websocket": "milequest.services.routing:create_routed_websocket_service",
}

_instances: dict[str, BaseService] = {}
_lock = threading.RLock()


def _create(name: str) -> BaseService:
    try:
        target = _FACTORIES[name]
    except KeyError:
        raise KeyError(
            f"unknown service {name!r}; known: {', '.join(sorted(_FACTORIES))}"
        ) from None
    module_name, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    service: BaseService = factory()
    return service


@overload
def get_service(name: Literal["email"]) -> EmailService: ...
@overload
def get_service(name: Literal["websocket"]) -> WebSocketService: ...
@overload
def get_service(name: str) -> BaseService: ...
def get_service(name: str) -> Any:
    """The process's instance of a service, created from the environment on first use."""
    with _lock:
        if name not in _instances:
            _instances[name] = _create(name)
        return _instances[name]


def initialize_services(names: Iterable[str] | None = None) -> dict[str, BaseService]:
    """Create the named services (all by default) now, so configuration errors surface early."""
    return {name: get_service(name) for name in (_FACTORIES if names is None else names)}


def register_service(name: str, service: BaseService) -> None:
    """Use ``service`` for ``name`` from now on (for example a mock in tests)."""
    with _lock:
        _instances[name] = service


@contextmanager
def override_service(name: str, service: BaseService) -> Iterator[BaseService]:
    """Temporarily serve ``service`` as ``name``; the previous instance comes back afterwards."""
    with _lock:
        previous = _instances.get(name)
        _instances[name] = service
    try:
        yield service
    finally:
        with _lock:
            if previous is None:
                _instances.pop(name, None)
            else:
                _instances[name] = previous


def reset_services() -> None:
    """Forget every instance; the next ``get_service`` re-reads the environment."""
    with _lock:
        _instances.clear()


def check_services_health(names: Iterable[str] | None = None) -> HealthReport:
    """Health of the initialized services (or of ``names``), aggregated: the worst state wins.

    A service that cannot even be created is reported as unhealthy, not raised.
    """
    with _lock:
        selected = list(names) if names is not None else list(_instances)
    statuses: dict[str, HealthStatus] = {}
    for name in selected:
        try:
            statuses[name] = get_service(name).health_check()
        except Exception as exc:
            statuses[name] = HealthStatus(
                status=HealthState.UNHEALTHY,
                service=name,
                provider="unknown",
                latency_ms=0.0,
                details={"error": str(exc)},
            )
    overall = max((s.status for s in statuses.values()), key=lambda s: s.rank, default=None)
    return HealthReport(status=overall or HealthState.HEALTHY, services=statuses)
